//! Timestamps: milliseconds since the epoch inside, RFC 3339 (UTC,
//! milliseconds) outside.  Parsing and formatting through the `time`
//! crate, which checks the calendar (`2025-02-31` is refused).
//!
//! May import: nothing of the crate.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2025-06-11T10:15:03.250Z` for a millisecond timestamp (the number
/// itself when it is beyond the calendar the `time` crate knows).
pub fn rfc3339_millis(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The current time in RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339_millis(now_millis())
}

/// Milliseconds since the epoch of `YYYY-MM-DD` (midnight UTC) or an RFC
/// 3339 time (`2025-06-11T10:15:03Z`; fractions and `+hh:mm` offsets
/// allowed; a space for the `T` too; no zone means UTC).  `None` if it is neither, or names a
/// day or time that does not exist.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let s = s.trim();
    let t = if s.len() == 10 {
        Date::parse(s, format_description!("[year]-[month]-[day]"))
            .ok()?
            .midnight()
            .assume_offset(UtcOffset::UTC)
    } else {
        // RFC 3339 allows a space for the `T` (section 5.6, note).
        let spaced = s.as_bytes().get(10) == Some(&b' ');
        let text = if spaced {
            format!("{}T{}", &s[..10], &s[11..])
        } else {
            s.to_string()
        };
        // Without a zone, UTC.
        OffsetDateTime::parse(&text, &Rfc3339)
            .or_else(|_| OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339))
            .ok()?
    };
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints() {
        for ms in [
            0i64,
            1_749_636_903_250,
            951_782_400_000, /* 2000-02-29 */
            -86_400_000,
        ] {
            assert_eq!(parse_rfc3339_millis(&rfc3339_millis(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            rfc3339_millis(1_749_636_903_250),
            "2025-06-11T10:15:03.250Z"
        );
        assert_eq!(parse_rfc3339_millis("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_rfc3339_millis("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_millis("1970-01-01 00:00:01.5Z"), Some(1_500));
        assert_eq!(parse_rfc3339_millis("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:01:00"), Some(60_000));
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-31",
            "2025-02-29",
            "2025-01-01T25:00:00Z",
            "2025-06-11T99:99:99Z",
            "2025-01-01T10:00:00+0100",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }
}
