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

/// CPU time spent per stage of an event's path, for the end-to-end
/// bench's budget (`ztbridge_stage_cpu_seconds_total` in `/metrics`).
/// Off unless `ZTBRIDGE_STAGE_CPU=1` is set when the process starts: each
/// measurement reads the thread's CPU clock (a system call), which is
/// not free.  Only work polled or run on one thread is measured here
/// (wasm steps, SQLite jobs, inflating); what hyper and reqwest do on
/// their own tasks is not, and the bench measures it beside the service.
pub mod stage_cpu {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A stage of the event path.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Stage {
        /// Inflating a gzip body.
        Decompress,
        /// Intake checks and the JSON scan (content type, depth, event).
        Parse,
        /// Admitting: hashing, building the row, the store's insert and
        /// its share of the commit.
        StoreAdmit,
        /// Claiming: taking deliveries and marking them in flight.
        StoreClaim,
        /// The transform: sandbox instantiation, its steps, its drop.
        Transform,
        /// Recording an attempt: the store's update and its share of the
        /// commit.
        StoreFinish,
    }

    /// Every stage, in the order of the path.
    pub const STAGES: [Stage; 6] = [
        Stage::Decompress,
        Stage::Parse,
        Stage::StoreAdmit,
        Stage::StoreClaim,
        Stage::Transform,
        Stage::StoreFinish,
    ];

    impl Stage {
        /// The label in `/metrics`.
        pub fn name(self) -> &'static str {
            match self {
                Stage::Decompress => "decompress",
                Stage::Parse => "parse",
                Stage::StoreAdmit => "store_admit",
                Stage::StoreClaim => "store_claim",
                Stage::Transform => "transform",
                Stage::StoreFinish => "store_finish",
            }
        }
    }

    /// Nanoseconds of CPU per stage, in [`STAGES`] order.
    static NANOS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

    /// Whether measuring is on (read once from the environment).
    pub fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var("ZTBRIDGE_STAGE_CPU").is_ok_and(|v| v == "1"))
    }

    /// The calling thread's CPU time, in nanoseconds.
    pub fn thread_cpu_ns() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64)
    }

    /// Adds `ns` to `stage`.
    pub fn add(stage: Stage, ns: u64) {
        NANOS[stage as usize].fetch_add(ns, Ordering::Relaxed);
    }

    /// A measurement under way on this thread (`None` when measuring is
    /// off: then nothing is read).
    pub struct Timer(Option<u64>);

    impl Timer {
        /// Starts measuring the calling thread.
        pub fn start() -> Timer {
            Timer(enabled().then(thread_cpu_ns))
        }

        /// The CPU the thread used since `start`, added to `stage`.
        pub fn stop(self, stage: Stage) {
            if let Some(t0) = self.0 {
                add(stage, thread_cpu_ns().saturating_sub(t0));
            }
        }
    }

    /// Runs `future`, adding the CPU each of its polls uses to `stage`: a
    /// future may move between threads at each await, a poll never does.
    pub async fn measure<F: std::future::Future>(stage: Stage, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            let timer = Timer::start();
            let polled = future.as_mut().poll(cx);
            timer.stop(stage);
            polled
        })
        .await
    }

    /// Seconds of CPU per stage so far, in [`STAGES`] order.
    pub fn totals() -> Vec<(Stage, f64)> {
        STAGES
            .iter()
            .map(|s| (*s, NANOS[*s as usize].load(Ordering::Relaxed) as f64 / 1e9))
            .collect()
    }
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
