//! Per-destination delivery rate limits, so a burst of alerts stays under
//! a destination's limit (PagerDuty: about 120 events a minute per routing
//! key) instead of collecting 429s.
//!
//! A GCRA limiter from the `governor` crate per rate key; routes with the
//! same `rate_key` share one.  A delivery (one flow, whatever number of
//! requests it makes) takes one token when it is claimed.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::RouteConfig;

/// The limiters of every configured route that has one.
#[derive(Default)]
pub struct RateLimits {
    /// Route name -> its (possibly shared) limiter.
    by_route: HashMap<String, Arc<DefaultDirectRateLimiter>>,
    /// Tells the limiter's time (for how long to wait).
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a RouteConfig>) -> RateLimits {
        let mut by_key: HashMap<String, Arc<DefaultDirectRateLimiter>> = HashMap::new();
        let mut by_route = HashMap::new();
        for r in routes {
            let Some(per_minute) = r.rate_per_minute.and_then(NonZeroU32::new) else {
                continue;
            };
            let burst = r.rate_burst.and_then(NonZeroU32::new).unwrap_or_else(|| {
                NonZeroU32::new((per_minute.get() / 10).max(1)).unwrap_or(NonZeroU32::MIN)
            });
            let key = r.rate_key.clone().unwrap_or_else(|| r.name.clone());
            let limiter = by_key
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(RateLimiter::direct(
                        Quota::per_minute(per_minute).allow_burst(burst),
                    ))
                })
                .clone();
            by_route.insert(r.name.clone(), limiter);
        }
        RateLimits {
            by_route,
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token for `route`, or says how long until one is free.
    pub fn admit(&self, route: &str) -> Result<(), Duration> {
        match self.by_route.get(route) {
            None => Ok(()),
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, rate: Option<u32>, burst: Option<u32>, key: Option<&str>) -> RouteConfig {
        let mut r: RouteConfig = toml::from_str(&format!(
            "name = {name:?}\ntransform = \"builtin:pagerduty\""
        ))
        .unwrap();
        r.rate_per_minute = rate;
        r.rate_burst = burst;
        r.rate_key = key.map(str::to_string);
        r
    }

    #[test]
    fn burst_then_wait_and_shared_keys() {
        let routes = [
            route("a", Some(60), Some(2), Some("k")),
            route("b", Some(60), Some(2), Some("k")),
            route("free", None, None, None),
        ];
        let limits = RateLimits::new(&routes);
        assert!(limits.admit("a").is_ok());
        // b shares a's key: one token left between them.
        assert!(limits.admit("b").is_ok());
        let wait = limits.admit("a").unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        for _ in 0..100 {
            assert!(limits.admit("free").is_ok());
        }
    }
}
