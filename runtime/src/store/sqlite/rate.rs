//! Rate-limit state for a single node: a GCRA limiter from the `governor`
//! crate per rate key, in memory (one process owns an SQLite store, so
//! the limit is whole in it).  Routes with the same key share a limiter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::store::RateLimit;

/// The limiters of the routes that have one.
#[derive(Default)]
pub(super) struct RateLimiters {
    /// Route name -> its (possibly shared) limiter; replaced whole by
    /// `set`, keeping the state of keys whose quota did not change.
    by_route: RwLock<HashMap<String, Arc<Keyed>>>,
    /// Tells the limiter's time (for how long to wait).
    clock: DefaultClock,
}

/// One key's limiter and the quota it was made with.
struct Keyed {
    /// The limit as configured.
    limit: RateLimit,
    /// Its GCRA state.
    limiter: DefaultDirectRateLimiter,
}

impl RateLimiters {
    /// Installs `limits` (route -> limit).  A key whose quota is unchanged
    /// keeps its state, so a reload does not hand out a fresh burst.
    pub(super) fn set(&self, limits: Vec<(String, RateLimit)>) {
        let mut map = self.by_route.write().unwrap_or_else(|p| p.into_inner());
        let old: HashMap<String, Arc<Keyed>> = map
            .values()
            .map(|k| (k.limit.key.clone(), k.clone()))
            .collect();
        let mut by_key: HashMap<String, Arc<Keyed>> = HashMap::new();
        let mut by_route = HashMap::new();
        for (route, limit) in limits {
            let (Some(per_minute), Some(burst)) = (
                NonZeroU32::new(limit.per_minute),
                NonZeroU32::new(limit.burst),
            ) else {
                continue;
            };
            let keyed = by_key
                .entry(limit.key.clone())
                .or_insert_with(|| match old.get(&limit.key) {
                    Some(k) if k.limit == limit => k.clone(),
                    _ => Arc::new(Keyed {
                        limiter: RateLimiter::direct(
                            Quota::per_minute(per_minute).allow_burst(burst),
                        ),
                        limit: limit.clone(),
                    }),
                })
                .clone();
            by_route.insert(route, keyed);
        }
        *map = by_route;
    }

    /// Takes a token for `route`, or says how long until one is free.
    pub(super) fn admit(&self, route: &str) -> Result<(), Duration> {
        let map = self.by_route.read().unwrap_or_else(|p| p.into_inner());
        match map.get(route) {
            None => Ok(()),
            Some(k) => k
                .limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(key: &str, per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            key: key.into(),
            per_minute,
            burst,
        }
    }

    #[test]
    fn burst_then_wait_and_shared_keys() {
        let limits = RateLimiters::default();
        limits.set(vec![
            ("a".into(), limit("k", 60, 2)),
            ("b".into(), limit("k", 60, 2)),
        ]);
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
        // The same quota again (a reload) keeps the state: still empty.
        limits.set(vec![("a".into(), limit("k", 60, 2))]);
        assert!(limits.admit("a").is_err());
        // A new quota starts afresh.
        limits.set(vec![("a".into(), limit("k", 120, 2))]);
        assert!(limits.admit("a").is_ok());
    }
}
