//! RFC 3339 timestamps (UTC, milliseconds) without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2025-06-11T10:15:03.250Z` for a millisecond timestamp.
pub fn rfc3339_millis(ms: i64) -> String {
    // zt-event reads values >= 1e11 as milliseconds: true of any time after 1973.
    zt_event::epoch_to_rfc3339(ms).unwrap_or_else(|| ms.to_string())
}

/// The current time in RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339_millis(now_millis())
}
