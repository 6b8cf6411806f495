//! Housekeeping, every few seconds: re-count the backlog (the CLI may
//! re-queue behind the service's back), check the data directory's free
//! space, and purge delivered events past their retention (hourly).

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
        self.check_disk().await;
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

    /// Refuses webhooks while the data directory is short of space.
    async fn check_disk(&self) {
        let Some(dir) = self.disk_dir.clone() else {
            return;
        };
        let min_free = self.policy.min_free_disk_mb.saturating_mul(1 << 20);
        let free = tokio::task::spawn_blocking(move || {
            rustix::fs::statvfs(&dir)
                .ok()
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        })
        .await
        .ok()
        .flatten();
        let Some(free) = free else {
            return;
        };
        let ok = free >= min_free;
        if self.room.set_disk_ok(ok) {
            if ok {
                tracing::info!(
                    free_mb = free >> 20,
                    "free disk space is back: accepting webhooks"
                );
            } else {
                tracing::error!(
                    free_mb = free >> 20,
                    min_free_mb = min_free >> 20,
                    "data directory is short of disk space: webhooks are refused with 503 (delivery.min_free_disk_mb)"
                );
            }
        }
    }
}
