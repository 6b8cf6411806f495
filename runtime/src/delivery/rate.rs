//! Per-destination delivery rate limits, so a burst of alerts stays under
//! a destination's limit (PagerDuty: about 120 events a minute per routing
//! key) instead of collecting 429s.
//!
//! This module turns the routes' settings into [`RateLimit`]s; the state
//! (how many tokens are left) lives in the store, so that on a shared
//! database the limit holds for the whole cluster.  A delivery (one flow,
//! whatever number of requests it makes) takes one token when claimed.

use crate::config::RouteConfig;
use crate::store::RateLimit;

/// (route, limit) of every route in `routes` that sets `rate_per_minute`.
/// The burst defaults to a tenth of the rate (at least 1); the key to the
/// route's name.
pub(crate) fn limits<'a>(
    routes: impl IntoIterator<Item = &'a RouteConfig>,
) -> Vec<(String, RateLimit)> {
    routes
        .into_iter()
        .filter_map(|r| {
            let per_minute = r.rate_per_minute.filter(|n| *n > 0)?;
            let burst = r
                .rate_burst
                .filter(|n| *n > 0)
                .unwrap_or((per_minute / 10).max(1));
            Some((
                r.name.clone(),
                RateLimit {
                    key: r.rate_key.clone().unwrap_or_else(|| r.name.clone()),
                    per_minute,
                    burst,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_shared_keys() {
        let route = |text: &str| -> RouteConfig { toml::from_str(text).unwrap() };
        let routes = [
            route(
                "name = 'a'\ntransform = 'builtin:pagerduty'\nrate_per_minute = 100\nrate_key = 'k'",
            ),
            route(
                "name = 'b'\ntransform = 'builtin:pagerduty'\nrate_per_minute = 5\nrate_burst = 3",
            ),
            route("name = 'free'\ntransform = 'builtin:pagerduty'"),
        ];
        let got = limits(&routes);
        assert_eq!(
            got,
            vec![
                (
                    "a".into(),
                    RateLimit {
                        key: "k".into(),
                        per_minute: 100,
                        burst: 10
                    }
                ),
                (
                    "b".into(),
                    RateLimit {
                        key: "b".into(),
                        per_minute: 5,
                        burst: 3
                    }
                ),
            ]
        );
    }
}
