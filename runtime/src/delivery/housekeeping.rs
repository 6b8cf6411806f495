//! Housekeeping, every few seconds: re-count the backlog (the CLI may
//! re-queue behind the service's back), and purge delivered events past their retention (hourly).

use std::sync::Arc;
use std::time::Duration;

use super::Dispatcher;
use crate::text::error_chain;
use crate::time::now_millis;

/// Passes between two retention purges (5 s each: hourly).
const PURGE_EVERY: u64 = 720;

impl Dispatcher {
    pub(super) async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if self.stopping() {
                return;
            }
            n += 1;
            // Retention: 5 s after start, then hourly.
            self.housekeeping_pass(n % PURGE_EVERY == 1).await;
        }
    }

    pub(super) async fn housekeeping_pass(&self, purge: bool) {
        match self.store.backlog().await {
            Ok(b) => self.room.recount(b.open),
            Err(e) => tracing::error!("cannot count open deliveries: {}", error_chain(&e)),
        }
        if purge && self.policy.retain_delivered_hours > 0 {
            let keep_ms = self.policy.retain_delivered_hours.saturating_mul(3_600_000);
            let before = now_millis() - keep_ms.min(i64::MAX as u64) as i64;
            match self.store.purge_delivered_before(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "delivered events past retention purged"),
                Err(e) => tracing::error!("retention purge failed: {}", error_chain(&e)),
            }
        }
    }
}
