//! The scheduler: one task that claims due deliveries from the store, as
//! many as there are free sandbox slots, and starts an attempt for each.
//! It wakes on a new event, a finished attempt, a due retry, the end of a
//! rate-limit wait, or every second.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Dispatcher;
use crate::store::Claim;
use crate::time::now_millis;

/// Routes with open deliveries that are not configured (re-read after a
/// reload and every 30 s): their deliveries wait, and are not claimed.
struct Stranded {
    /// Their names.
    routes: Vec<String>,
    /// When they were last read.
    checked: tokio::time::Instant,
}

impl Stranded {
    /// Re-reads the list when it is stale or the routes changed; warns
    /// about each newly stranded route.
    async fn refresh(&mut self, d: &Dispatcher, force: bool) {
        if !force && self.checked.elapsed() < Duration::from_secs(30) {
            return;
        }
        self.checked = tokio::time::Instant::now();
        let routes = d.routes();
        // When the store cannot tell, keep the previous list.
        let Ok(open) = d.store.open_by_route().await else {
            return;
        };
        let fresh: Vec<String> = open
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| routes.get(r).is_none())
            .collect();
        if fresh != self.routes {
            for route in fresh.iter().filter(|r| !self.routes.contains(r)) {
                tracing::warn!(%route, "deliveries wait for a route that is not configured (or not enabled); they resume when it is back (see `ztbridge events list --route`)");
            }
        }
        self.routes = fresh;
    }
}

impl Dispatcher {
    pub(super) async fn schedule(self: Arc<Self>) {
        let mut stranded = Stranded {
            routes: vec![],
            checked: tokio::time::Instant::now(),
        };
        loop {
            self.heartbeat.store(now_millis(), Ordering::Relaxed);
            if self.stopping() {
                return;
            }
            stranded.refresh(&self, self.routes.take_changed()).await;
            let mut wait = Duration::from_secs(1);
            let free = self.slots.available_permits();
            if free > 0 {
                let mut skip = stranded.routes.clone();
                skip.extend(self.paused());
                match self.store.claim(now_millis(), free, &skip).await {
                    Ok(batch) => {
                        let full = batch.claims.len() == free;
                        for claim in batch.claims {
                            self.launch(claim).await;
                        }
                        if full {
                            continue;
                        }
                        if let Some(w) = batch.rate_wait {
                            wait = wait.min(w.max(Duration::from_millis(5)));
                        }
                    }
                    Err(e) => tracing::error!(
                        "cannot read due deliveries: {}",
                        crate::text::error_chain(&e)
                    ),
                }
            }
            let now = now_millis();
            if let Ok(Some(next)) = self.store.next_retry_ms(now).await {
                wait = wait.min(Duration::from_millis((next - now).max(1) as u64));
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts an attempt for `claim` in a sandbox slot, or gives the claim
    /// back when stopping (the drain took the slots).
    async fn launch(self: &Arc<Self>, claim: Claim) {
        let permit = if self.stopping() {
            None
        } else {
            self.slots.clone().try_acquire_owned().ok()
        };
        match permit {
            Some(permit) => {
                tokio::spawn(self.clone().attempt(claim, permit));
            }
            None => self.release(&claim).await,
        }
    }

    /// Gives a claim back to pending (the attempt did not start).
    pub(super) async fn release(&self, claim: &Claim) {
        if let Err(e) = self.store.release(vec![claim.key.clone()]).await {
            tracing::error!(
                receipt_id = %claim.receipt_id,
                route = %claim.key.route,
                "cannot give a claimed delivery back (it resumes at the next start): {}",
                crate::text::error_chain(&e)
            );
        }
    }
}
