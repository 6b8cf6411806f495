//! The scheduler: one task that claims due deliveries from the store, as
//! many as there are free sandbox slots, and starts an attempt for each.
//! It wakes on a new event, a finished attempt, a due retry, the end of a
//! rate-limit wait, a due breaker probe, or every second.
//!
//! Each claim is scoped ([`ClaimScope`]): a route takes at most the free
//! room of its bulkhead (`max_in_flight` less what it runs), a route held
//! by an open breaker takes nothing (one delivery when its probe is due),
//! and the routes not configured take nothing.  A route at its cap is
//! passed over inside the claim, so the slots it cannot use go to the
//! others' work; when every route with work is at its cap, the scheduler
//! sleeps until an attempt ends (no busy loop).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Dispatcher;
use super::breaker::RouteHold;
use crate::store::{Claim, ClaimScope};
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
            let (scope, probe_at) = self.scope(&stranded.routes, now_millis());
            if let Some(at) = probe_at {
                let ms = (at - now_millis()).max(1) as u64;
                wait = wait.min(Duration::from_millis(ms));
            }
            if free > 0 {
                match self.store.claim_within(now_millis(), free, &scope).await {
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

    /// What the next claim may take: `stranded` routes nothing, each
    /// configured route the free room of its bulkhead, a route held by an
    /// open breaker nothing until its probe is due, then one delivery.
    /// With it, the earliest time a held route's probe is due.
    fn scope(&self, stranded: &[String], now_ms: i64) -> (ClaimScope, Option<i64>) {
        let routes = self.routes();
        let mut scope = ClaimScope::skipping(stranded);
        // Routes an operator paused (the console) are not claimed from.
        scope.skip.extend(self.paused());
        let mut probe_at: Option<i64> = None;
        for route in routes.iter() {
            let name = route.name.as_ref();
            let running = self.bulkheads.running(name);
            let mut room = routes
                .max_in_flight(name)
                .map_or(usize::MAX, |cap| cap.saturating_sub(running));
            match self.breakers.route_hold(name, now_ms) {
                RouteHold::Free => {}
                // One probe at a time per route.
                RouteHold::Probe => room = room.min(usize::from(running == 0)),
                RouteHold::Until(at) => {
                    room = 0;
                    probe_at = Some(probe_at.map_or(at, |p| p.min(at)));
                }
            }
            if room != usize::MAX {
                scope.room.insert(name.to_string(), room);
            }
        }
        (scope, probe_at)
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
                let seat = self.bulkheads.enter(&claim.key.route);
                tokio::spawn(self.clone().attempt(claim, permit, seat));
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
