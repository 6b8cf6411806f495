//! Cluster-wide rate limits: the routes' limits are this node's
//! configuration; their state, GCRA's theoretical arrival time per rate
//! key, is a row taken by `rate_take()` inside the claim transaction (the
//! row stays locked until it commits, so nodes take turns).  With 60/min
//! and a burst of 6, any 60 s window holds at most 66 claims, whichever
//! nodes make them.  A token is spent at claim: a node dying after its
//! claim wastes it (errs on the safe side).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio_postgres::Transaction;

use super::pg_error;
use crate::store::{RateLimit, StoreError};

/// Route -> its limit, replaced whole by `set`.
#[derive(Default)]
pub(super) struct Limits {
    /// The limits of the routes that have one.
    by_route: RwLock<HashMap<String, RateLimit>>,
}

impl Limits {
    pub(super) fn set(&self, limits: Vec<(String, RateLimit)>) {
        *self.by_route.write().unwrap_or_else(|p| p.into_inner()) = limits
            .into_iter()
            .filter(|(_, l)| l.per_minute > 0 && l.burst > 0)
            .collect();
    }

    /// `route`'s limit, if it has one.
    pub(super) fn get(&self, route: &str) -> Option<RateLimit> {
        self.by_route
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .cloned()
    }

    /// The limit of rate key `key`.
    pub(super) fn by_key(&self, key: &str) -> Option<RateLimit> {
        self.by_route
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|l| l.key == key)
            .cloned()
    }
}

/// Takes up to `n` tokens of `limit`'s key: how many were granted and,
/// when fewer, how long until the next.
pub(super) async fn take(
    tx: &Transaction<'_>,
    limit: &RateLimit,
    n: i32,
) -> Result<(i32, Duration), StoreError> {
    let interval_ms = (60_000 / i64::from(limit.per_minute.max(1))).max(1);
    let burst = limit.burst.min(i32::MAX as u32) as i32;
    let row = tx
        .query_one(
            "SELECT granted, extract(epoch FROM retry_after)::float8
               FROM rate_take($1, $2, $3::bigint * interval '1 ms', $4)",
            &[&limit.key, &n, &interval_ms, &burst],
        )
        .await
        .map_err(pg_error("take rate-limit tokens"))?;
    let granted: i32 = row.try_get(0)?;
    let wait: f64 = row.try_get(1)?;
    Ok((
        granted.max(0),
        Duration::from_secs_f64(wait.clamp(0.0, 86_400.0)),
    ))
}
