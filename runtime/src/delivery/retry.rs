//! The retry policy, as one pure function: given how an attempt ended,
//! when (if ever) the delivery is attempted again.  No clock, no
//! randomness: the caller passes `now` and a salt, so the same inputs give
//! the same answer and the table test below covers every case.

use std::time::{Duration, SystemTime};

use crate::config::DeliveryPolicy;
use crate::egress::TransportFailure;

/// The last thing the destination (or the network) answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// An HTTP response.
    Status {
        code: u16,
        /// The raw `Retry-After` header, when the response had one.
        retry_after: Option<String>,
    },
    /// No response: why the request did not get one.
    Transport(TransportFailure),
}

/// How the attempt's flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending<'a> {
    /// The transform finished: delivered.
    Done,
    /// The flow failed.  `retryable` is the transform's (or the host's)
    /// verdict when it gave one; `None` leaves it to the last answer.
    Failed {
        retryable: Option<bool>,
        /// The transform's own Retry-After, in seconds.
        retry_after_seconds: Option<u32>,
        message: &'a str,
    },
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub(super) struct Attempt<'a> {
    /// This attempt's number (1 for the first).
    pub(crate) number: u32,
    /// How the flow ended.
    pub(crate) ending: Ending<'a>,
    /// The last response or transport failure, if a request was made.
    pub(crate) last: Option<Answer>,
    /// Give up after this (ms since the epoch).
    pub(crate) deadline_ms: i64,
    /// When the attempt ended (ms since the epoch).
    pub(crate) now_ms: i64,
    /// Spreads retries of different deliveries apart (jitter), the same
    /// for one delivery every time.
    pub(crate) salt: u64,
}

/// What happens to the delivery next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Delivered: nothing more to do.
    Done,
    /// Attempt again at this time (ms since the epoch).
    RetryAt(i64),
    /// Give up: a dead letter, with the reason.
    DeadLetter(String),
}

/// Whether an answer is worth retrying when the transform did not say.
/// 408, 425, 429 and 5xx are; other 4xx are not; 1xx-3xx reaching here
/// (a flow that failed on them) are not.  Network failures are, except the
/// host's own refusals (egress, too large), which retrying cannot change.
pub(super) fn retryable(answer: &Answer) -> bool {
    match answer {
        Answer::Status { code, .. } => matches!(code, 408 | 425 | 429 | 500..=599),
        Answer::Transport(t) => !matches!(
            t,
            TransportFailure::EgressDenied | TransportFailure::TooLarge
        ),
    }
}

/// `Retry-After` as a delay from `now_ms`: delta-seconds or an HTTP-date
/// (RFC 9110 §10.2.3).  A date in the past is no delay; garbage is none.
pub(super) fn retry_after_ms(header: &str, now_ms: i64) -> Option<u64> {
    let h = header.trim();
    if let Ok(secs) = h.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(h).ok()?;
    let at_ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_millis()
        .min(i64::MAX as u128) as i64;
    Some(at_ms.saturating_sub(now_ms).max(0) as u64)
}

/// Exponential back-off before attempt `next` (2, 3...), capped at
/// `max_backoff_ms`, plus up to 20% jitter derived from `salt`.
pub(super) fn backoff(policy: &DeliveryPolicy, next: u32, salt: u64) -> Duration {
    let base = policy
        .initial_backoff_ms
        .saturating_mul(1u64 << next.saturating_sub(2).min(20))
        .min(policy.max_backoff_ms);
    let jitter = if base == 0 {
        0
    } else {
        mix(salt ^ u64::from(next)) % (base / 5 + 1)
    };
    Duration::from_millis(base.saturating_add(jitter))
}

/// splitmix64: a well-spread 64-bit mix of the salt.
fn mix(salt: u64) -> u64 {
    let mut z = salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The retry decision.
pub(super) fn decide(policy: &DeliveryPolicy, a: &Attempt<'_>) -> Decision {
    let (verdict, guest_retry_after, message) = match &a.ending {
        Ending::Done => return Decision::Done,
        Ending::Failed {
            retryable,
            retry_after_seconds,
            message,
        } => (*retryable, *retry_after_seconds, *message),
    };
    let last = match &a.last {
        Some(Answer::Status { code, .. }) => format!("last status {code}: "),
        Some(Answer::Transport(t)) => format!("{t:?} failure: ").to_lowercase(),
        None => String::new(),
    };
    let retry = verdict.unwrap_or_else(|| a.last.as_ref().is_some_and(retryable));
    if !retry {
        return Decision::DeadLetter(format!("not retryable: {last}{message}"));
    }
    if policy.max_attempts > 0 && a.number >= policy.max_attempts {
        return Decision::DeadLetter(format!(
            "gave up after {} attempts (delivery.max_attempts); {last}{message}",
            a.number
        ));
    }
    // The longest of back-off, the destination's Retry-After (even beyond
    // the back-off cap) and the transform's own.
    let header = match &a.last {
        Some(Answer::Status {
            retry_after: Some(h),
            ..
        }) => retry_after_ms(h, a.now_ms).unwrap_or(0),
        _ => 0,
    };
    let guest = guest_retry_after.map_or(0, |s| u64::from(s) * 1000);
    let wait = (backoff(policy, a.number.saturating_add(1), a.salt).as_millis() as u64)
        .max(header)
        .max(guest);
    let at = a.now_ms.saturating_add(wait.min(i64::MAX as u64) as i64);
    if at > a.deadline_ms {
        return Decision::DeadLetter(format!(
            "gave up after {} attempts: the retry horizon (delivery.retry_horizon_secs) is over; {last}{message}",
            a.number
        ));
    }
    Decision::RetryAt(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000_000;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            ..DeliveryPolicy::default()
        }
    }

    fn status(code: u16, retry_after: Option<&str>) -> Option<Answer> {
        Some(Answer::Status {
            code,
            retry_after: retry_after.map(str::to_string),
        })
    }

    fn failed(last: Option<Answer>) -> Attempt<'static> {
        Attempt {
            number: 1,
            ending: Ending::Failed {
                retryable: None,
                retry_after_seconds: None,
                message: "m",
            },
            last,
            deadline_ms: NOW + 86_400_000,
            now_ms: NOW,
            salt: 7,
        }
    }

    /// What a decision looks like in the table: "done", "dead", or the
    /// delay range in ms.
    #[derive(Debug)]
    enum Want {
        Done,
        Dead(&'static str),
        RetryWithin(i64, i64),
    }

    #[test]
    fn the_retry_table() {
        let http_date = httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + Duration::from_millis((NOW + 120_000) as u64),
        );
        let past_date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let transport = |t| Some(Answer::Transport(t));
        let done = Attempt {
            ending: Ending::Done,
            ..failed(status(202, None))
        };
        let mut late = failed(status(503, None));
        late.now_ms = late.deadline_ms;
        let mut last_allowed = failed(status(500, None));
        last_allowed.number = 5;
        let mut guest_says_retry = failed(status(401, None));
        guest_says_retry.ending = Ending::Failed {
            retryable: Some(true),
            retry_after_seconds: Some(30),
            message: "m",
        };
        let mut guest_says_stop = failed(status(503, None));
        guest_says_stop.ending = Ending::Failed {
            retryable: Some(false),
            retry_after_seconds: None,
            message: "m",
        };
        // Back-off before attempt 2: 1 s plus up to 20 % jitter.
        let first = (1_000, 1_200);
        let rows: Vec<(&str, Attempt<'static>, Want)> = vec![
            ("2xx done", done, Want::Done),
            (
                "400",
                failed(status(400, None)),
                Want::Dead("last status 400"),
            ),
            (
                "401",
                failed(status(401, None)),
                Want::Dead("last status 401"),
            ),
            (
                "403",
                failed(status(403, None)),
                Want::Dead("last status 403"),
            ),
            (
                "404",
                failed(status(404, None)),
                Want::Dead("last status 404"),
            ),
            (
                "408",
                failed(status(408, None)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "409",
                failed(status(409, None)),
                Want::Dead("last status 409"),
            ),
            (
                "413",
                failed(status(413, None)),
                Want::Dead("last status 413"),
            ),
            (
                "429",
                failed(status(429, None)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "429 + Retry-After: 7",
                failed(status(429, Some("7"))),
                Want::RetryWithin(7_000, 7_000),
            ),
            // Beyond the back-off cap (60 s): Retry-After still wins.
            (
                "429 + Retry-After: 3600",
                failed(status(429, Some("3600"))),
                Want::RetryWithin(3_600_000, 3_600_000),
            ),
            (
                "429 + Retry-After: HTTP-date",
                failed(status(429, Some(&http_date))),
                Want::RetryWithin(120_000, 120_000),
            ),
            (
                "429 + Retry-After: past date",
                failed(status(429, Some(past_date))),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "429 + Retry-After: garbage",
                failed(status(429, Some("soon"))),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "500",
                failed(status(500, None)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "502",
                failed(status(502, None)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "503 + Retry-After: 2",
                failed(status(503, Some("2"))),
                Want::RetryWithin(2_000, 2_000),
            ),
            (
                "timeout",
                failed(transport(TransportFailure::Timeout)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "connection refused",
                failed(transport(TransportFailure::Connect)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "DNS failure",
                failed(transport(TransportFailure::Dns)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "TLS failure",
                failed(transport(TransportFailure::Tls)),
                Want::RetryWithin(first.0, first.1),
            ),
            (
                "egress denied",
                failed(transport(TransportFailure::EgressDenied)),
                Want::Dead("egressdenied failure"),
            ),
            (
                "response too large",
                failed(transport(TransportFailure::TooLarge)),
                Want::Dead("toolarge failure"),
            ),
            (
                "no request made, no verdict",
                failed(None),
                Want::Dead("not retryable"),
            ),
            ("deadline passed", late, Want::Dead("retry horizon")),
            (
                "max_attempts reached",
                last_allowed,
                Want::Dead("max_attempts"),
            ),
            (
                "the transform's verdict wins (retry)",
                guest_says_retry,
                Want::RetryWithin(30_000, 30_000),
            ),
            (
                "the transform's verdict wins (stop)",
                guest_says_stop,
                Want::Dead("last status 503"),
            ),
        ];
        let mut p = policy();
        for (name, attempt, want) in rows {
            p.max_attempts = if name == "max_attempts reached" { 5 } else { 0 };
            let got = decide(&p, &attempt);
            let ok = match (&want, &got) {
                (Want::Done, Decision::Done) => true,
                (Want::Dead(why), Decision::DeadLetter(reason)) => reason.contains(why),
                (Want::RetryWithin(lo, hi), Decision::RetryAt(at)) => {
                    (lo..=hi).contains(&&(at - attempt.now_ms))
                }
                _ => false,
            };
            assert!(ok, "{name}: wanted {want:?}, got {got:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_is_deterministic() {
        let p = policy();
        let ms = |n| backoff(&p, n, 42).as_millis() as u64;
        assert!((1_000..=1_200).contains(&ms(2)));
        assert!((4_000..=4_800).contains(&ms(4)));
        assert!((60_000..=72_000).contains(&ms(30)));
        assert_eq!(ms(3), ms(3));
        // Different deliveries spread apart.
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|salt| backoff(&p, 5, salt).as_millis() as u64)
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }

    #[test]
    fn a_retry_that_would_land_past_the_deadline_is_a_dead_letter() {
        let mut a = failed(status(503, Some("600")));
        a.deadline_ms = NOW + 60_000;
        assert!(matches!(decide(&policy(), &a), Decision::DeadLetter(r) if r.contains("horizon")));
    }
}
