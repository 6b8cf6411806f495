//! Delivery: admits accepted webhooks into the durable [`Store`] and runs
//! each route's deliveries from it, with retries.
//!
//! * [`Dispatcher::admit`] stores an event and one delivery per route whose
//!   filter takes it; it returns only once that is committed (fsync), so a
//!   2xx always means the event survives a crash.  A body seen within the
//!   duplicate window is recognised instead of stored twice.
//! * The scheduler (one task) claims due deliveries from the store, as many
//!   as there are sandbox slots, never two of one (route, Superna event ID)
//!   at once and never one before its predecessor for that pair is settled:
//!   one alert's updates go in arrival order per route, different alerts
//!   concurrently.  Each route delivers independently.
//! * An attempt runs the route's transform flow from the start in a fresh
//!   sandbox.  Retryable failures (network, 5xx, 429) wait with exponential
//!   back-off and jitter, honouring Retry-After, until the retry horizon;
//!   anything else is a dead letter (`failed`) with its reason at once.
//! * Back-pressure: past `max_pending` open deliveries or under
//!   `min_free_disk_mb` free in the data directory, `/webhook` answers 503.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::bindings::types;
use crate::engine::Engine;
use crate::flow::{self, Outcome};
use crate::intake::Accepted;
use crate::metrics::Metrics;
use crate::outbound::HttpTransport;
use crate::rate::RateLimits;
use crate::route::Route;
use crate::state::StateStore;
use crate::store::{Admission, AttemptRow, Claim, NewEvent, Next, Store, StoreError};
use crate::time::{now_millis, rfc3339_millis};

/// How deliveries are retried, bounded and kept (`[delivery]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryPolicy {
    /// Most attempts per route and event, the first included; 0: no limit
    /// but the retry horizon.
    pub max_attempts: u32,
    /// Keep retrying a delivery for this long after it was accepted (or
    /// re-queued by `events retry`), then give up.  Default: 24 hours.
    pub retry_horizon_secs: u64,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff_ms: u64,
    /// Upper bound of one delay (Retry-After included).
    pub max_backoff_ms: u64,
    /// Open (pending or in-flight) deliveries; past it `/webhook` answers
    /// 503 with Retry-After instead of accepting what it cannot keep.
    pub max_pending: usize,
    /// Free space the data directory must keep; below it `/webhook`
    /// answers 503.
    pub min_free_disk_mb: u64,
    /// The same body received again within this many seconds is
    /// recognised and delivered once (0: off).
    pub dedupe_window_secs: u64,
    /// Delivered events are kept this long, then purged (failed ones are
    /// kept until purged or retried).
    pub retain_delivered_hours: u64,
    /// On shutdown, how long running attempts may take to finish; what
    /// does not finish is attempted again at the next start.
    pub drain_timeout_ms: u64,
}

impl Default for DeliveryPolicy {
    fn default() -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: 0,
            retry_horizon_secs: 86_400,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            max_pending: 10_000,
            min_free_disk_mb: 256,
            dedupe_window_secs: 600,
            retain_delivered_hours: 168,
            drain_timeout_ms: 10_000,
        }
    }
}

impl DeliveryPolicy {
    /// Delay before attempt `next` (2, 3...): Retry-After when given, else
    /// exponential back-off; plus up to 20% jitter; capped.
    pub fn delay(&self, next: u32, retry_after_seconds: Option<u32>, salt: u64) -> Duration {
        // Back-off, capped, then up to 20% jitter (so retries of many
        // deliveries do not fire in step); a longer Retry-After wins (the
        // retry horizon still bounds it).
        let backoff = self
            .initial_backoff_ms
            .saturating_mul(1u64 << (next.saturating_sub(2)).min(20))
            .min(self.max_backoff_ms);
        let jittered = backoff.saturating_add(if backoff == 0 {
            0
        } else {
            jitter(salt) % (backoff / 5 + 1)
        });
        let retry_after = retry_after_seconds.map_or(0, |s| u64::from(s).saturating_mul(1000));
        Duration::from_millis(jittered.max(retry_after))
    }

    /// `retry_horizon_secs` in milliseconds (deadlines are stored in ms).
    pub fn horizon_ms(&self) -> i64 {
        (self.retry_horizon_secs.saturating_mul(1000)).min(i64::MAX as u64) as i64
    }
}

fn jitter(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    // splitmix64
    let mut z = nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What became of a webhook handed to [`Dispatcher::admit`].
#[derive(Debug, Clone)]
pub enum Admitted {
    /// Stored durably; these routes will deliver it.
    Stored { routes: Vec<String> },
    /// The same body was accepted earlier (within the duplicate window).
    Duplicate {
        receipt_id: String,
        received_at: String,
    },
}

/// Why no more webhooks can be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_pending` open deliveries.
    Backlog,
    /// Less than `min_free_disk_mb` free in the data directory.
    Disk,
}

/// The routes that run now, replaced whole on reload.  An attempt holds
/// its `Arc<Route>`, so it finishes on the version it started with.
pub struct RouteSet {
    /// By name, for attempts.
    by_name: BTreeMap<String, Arc<Route>>,
    /// In configuration order (filters are tried in it).
    order: Vec<Arc<Route>>,
    /// Their rate limits.
    rates: Arc<RateLimits>,
}

impl RouteSet {
    pub fn new(routes: Vec<Arc<Route>>, rates: RateLimits) -> RouteSet {
        RouteSet {
            by_name: routes
                .iter()
                .map(|r| (r.name.to_string(), r.clone()))
                .collect(),
            order: routes,
            rates: Arc::new(rates),
        }
    }

    /// The routes, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.order.iter()
    }
}

/// Runs routes' deliveries from the store.
pub struct Dispatcher {
    engine: Arc<Engine>,
    /// The routes that run now (swapped by `replace_routes`).
    routes: std::sync::RwLock<Arc<RouteSet>>,
    /// Set by `replace_routes`: the scheduler re-reads which stored
    /// deliveries belong to no configured route.
    routes_changed: AtomicBool,
    state: Arc<dyn StateStore>,
    transport: HttpTransport,
    policy: DeliveryPolicy,
    /// Where events and deliveries live.
    store: Arc<Store>,
    /// Attempt outcomes, flow durations and fuel, destination latency.
    metrics: Arc<Metrics>,
    /// Bounds attempts running at once to the engine's instance slots.
    permits: Arc<Semaphore>,
    /// Wakes the scheduler: a new event, a finished attempt, shutdown.
    wake: Notify,
    /// Open deliveries (pending or in flight): counted on admit and
    /// settle, re-read from the store every few seconds (the CLI may
    /// re-queue behind the service's back).
    open: AtomicU64,
    /// Whether the data directory has `min_free_disk_mb` free.
    disk_ok: AtomicBool,
    /// Set on shutdown: nothing more is claimed.
    stopping: AtomicBool,
    /// The data directory's lock (`serve.lock`), held while serving.
    lock: std::sync::Mutex<Option<std::fs::File>>,
    /// Set once `start` has resumed the store and started the scheduler.
    running: AtomicBool,
    /// When the scheduler last went round its loop (ms since the epoch):
    /// it wakes at least every second, so an old value means it is stuck.
    heartbeat: AtomicI64,
}

impl Dispatcher {
    pub fn new(
        engine: Arc<Engine>,
        routes: Vec<Arc<Route>>,
        state: Arc<dyn StateStore>,
        transport: HttpTransport,
        policy: DeliveryPolicy,
        store: Arc<Store>,
        rates: RateLimits,
        metrics: Arc<Metrics>,
    ) -> Arc<Dispatcher> {
        let slots = engine.limits.max_instances.max(1) as usize;
        Arc::new(Dispatcher {
            engine,
            routes: std::sync::RwLock::new(Arc::new(RouteSet::new(routes, rates))),
            routes_changed: AtomicBool::new(false),
            state,
            transport,
            policy,
            store,
            metrics,
            permits: Arc::new(Semaphore::new(slots)),
            wake: Notify::new(),
            open: AtomicU64::new(0),
            disk_ok: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            heartbeat: AtomicI64::new(now_millis()),
            lock: std::sync::Mutex::new(None),
            running: AtomicBool::new(false),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The routes that run now.
    pub fn routes(&self) -> Arc<RouteSet> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the routes (reload).  New events and attempts use the new
    /// set; attempts running now finish on the routes they started with.
    pub fn replace_routes(&self, routes: RouteSet) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
        self.routes_changed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether another webhook may be accepted now.
    pub fn room(&self) -> Result<(), Full> {
        if !self.disk_ok.load(Ordering::Relaxed) {
            return Err(Full::Disk);
        }
        if self.open.load(Ordering::Relaxed) >= self.policy.max_pending as u64 {
            return Err(Full::Backlog);
        }
        Ok(())
    }

    /// Stores `event` with one delivery per route whose filter takes it;
    /// returns once committed.
    pub async fn admit(
        &self,
        event: Accepted,
        headers: Vec<(String, String)>,
    ) -> Result<Admitted, StoreError> {
        let routes: Vec<String> = self
            .routes()
            .order
            .iter()
            .filter(|r| r.filter.accepts(&event.event))
            .map(|r| r.name.to_string())
            .collect();
        let event_id = event.event.id().map(std::borrow::Cow::into_owned);
        let new = NewEvent {
            order_key: event_id.clone().unwrap_or_else(|| event.receipt_id.clone()),
            receipt_id: event.receipt_id.clone(),
            received_ms: event.received_ms,
            event_id,
            severity: event.event.severity().name(),
            state: event.event.state().map(std::borrow::Cow::into_owned),
            body_hash: hex::encode(Sha256::digest(event.body.as_bytes())),
            body: event.body.clone(),
            headers,
            routes: routes.clone(),
            deadline_ms: event.received_ms.saturating_add(self.policy.horizon_ms()),
        };
        let dedupe_ms = (self.policy.dedupe_window_secs.saturating_mul(1000)) as i64;
        match self.store.insert(new, dedupe_ms).await? {
            Admission::Stored => {
                if routes.is_empty() {
                    tracing::info!(receipt_id = %event.receipt_id, "no route takes this event (filters)");
                } else {
                    self.open.fetch_add(routes.len() as u64, Ordering::Relaxed);
                    self.wake.notify_one();
                }
                Ok(Admitted::Stored { routes })
            }
            Admission::Duplicate {
                receipt_id,
                received_at,
            } => Ok(Admitted::Duplicate {
                receipt_id,
                received_at,
            }),
        }
    }

    /// Resumes what was not delivered and starts the scheduler and the
    /// housekeeping task.  Call once, inside the runtime.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        let lock = self.store.lock_exclusive()?;
        *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(lock);
        let resumed = self.store.recover().await?;
        if resumed > 0 {
            tracing::warn!(
                resumed,
                "attempts interrupted by the last stop will be made again"
            );
        }
        // No purge here: a large one must not delay readiness.
        self.housekeeping_pass(false).await;
        let backlog = self.open.load(Ordering::Relaxed);
        if backlog > 0 {
            tracing::info!(open = backlog, "resuming undelivered events");
        }
        let this = self.clone();
        tokio::spawn(async move { this.schedule().await });
        let this = self.clone();
        tokio::spawn(async move { this.housekeeping().await });
        self.running.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Started and not stopping: notifications to systemd make sense.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed) && !self.stopping.load(Ordering::Relaxed)
    }

    /// Stops claiming, then waits up to `drain_timeout_ms` for running
    /// attempts.  What does not finish is attempted again at the next start.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let slots = self.engine.limits.max_instances.max(1);
        let timeout = Duration::from_millis(self.policy.drain_timeout_ms);
        match tokio::time::timeout(timeout, self.permits.acquire_many(slots)).await {
            Ok(_) => tracing::info!("deliveries drained"),
            Err(_) => tracing::warn!(
                timeout_ms = self.policy.drain_timeout_ms,
                "attempts still running at shutdown; they will be made again at the next start"
            ),
        }
    }

    async fn schedule(self: Arc<Self>) {
        // `None` when the store cannot tell: keep the previous list then.
        let unknown = |this: &Dispatcher| -> Option<Vec<String>> {
            let routes = this.routes();
            let open = this.store.open_by_route().ok()?;
            Some(
                open.into_iter()
                    .map(|(r, _)| r)
                    .filter(|r| !routes.by_name.contains_key(r))
                    .collect(),
            )
        };
        let warn = |skip: &[String]| {
            for route in skip {
                tracing::warn!(%route, "deliveries wait for a route that is not configured (or not enabled); they resume when it is back (see `ztbridge events list --route`)");
            }
        };
        let mut skip = unknown(&self).unwrap_or_default();
        warn(&skip);
        let mut skip_checked = tokio::time::Instant::now();
        loop {
            self.heartbeat.store(now_millis(), Ordering::Relaxed);
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            if skip_checked.elapsed() > Duration::from_secs(30)
                || self.routes_changed.swap(false, Ordering::Relaxed)
            {
                if let Some(fresh) = unknown(&self) {
                    if fresh != skip {
                        warn(&fresh);
                    }
                    skip = fresh;
                }
                skip_checked = tokio::time::Instant::now();
            }
            let mut wait = Duration::from_secs(1);
            let free = self.permits.available_permits();
            if free > 0 {
                let rates = self.routes().rates.clone();
                let now = now_millis();
                match self
                    .store
                    .claim(now, free, skip.clone(), move |route| rates.admit(route))
                    .await
                {
                    Ok((claims, rate_wait)) => {
                        let full = claims.len() == free;
                        for claim in claims {
                            let permit = if self.stopping.load(Ordering::Relaxed) {
                                None
                            } else {
                                self.permits.clone().try_acquire_owned().ok()
                            };
                            match permit {
                                Some(permit) => {
                                    let this = self.clone();
                                    tokio::spawn(async move { this.attempt(claim, permit).await });
                                }
                                // Stopping (drain took the slots): give the
                                // claim back rather than leave it in flight.
                                None => self.release(&claim).await,
                            }
                        }
                        if full {
                            continue;
                        }
                        if let Some(w) = rate_wait {
                            wait = wait.min(w.max(Duration::from_millis(5)));
                        }
                    }
                    Err(e) => tracing::error!("cannot read due deliveries: {e}"),
                }
            }
            let now = now_millis();
            let store = self.store.clone();
            if let Ok(Ok(Some(next))) =
                tokio::task::spawn_blocking(move || store.next_retry_ms(now)).await
            {
                wait = wait.min(Duration::from_millis((next - now).max(1) as u64));
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Every few seconds: re-count the backlog, check free disk space,
    /// purge delivered events past their retention (hourly).
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            n += 1;
            // Retention: 5 s after start, then hourly.
            self.housekeeping_pass(n % 720 == 1).await;
        }
    }

    async fn housekeeping_pass(&self, purge: bool) {
        let store = self.store.clone();
        let min_free = self.policy.min_free_disk_mb.saturating_mul(1 << 20);
        let checked = tokio::task::spawn_blocking(move || {
            let backlog = store.backlog();
            let dir = store.path().parent().map(|p| p.to_path_buf());
            let free = dir
                .and_then(|d| rustix::fs::statvfs(&d).ok())
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
            (backlog, free)
        })
        .await;
        if let Ok((backlog, free)) = checked {
            match backlog {
                Ok(b) => self.open.store(b.open, Ordering::Relaxed),
                Err(e) => tracing::error!("cannot count open deliveries: {e}"),
            }
            if let Some(free) = free {
                let ok = free >= min_free;
                if self.disk_ok.swap(ok, Ordering::Relaxed) != ok {
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
        if purge && self.policy.retain_delivered_hours > 0 {
            let before = now_millis()
                - (self.policy.retain_delivered_hours.saturating_mul(3_600_000))
                    .min(i64::MAX as u64) as i64;
            match self.store.purge_delivered_before_async(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "delivered events past retention purged"),
                Err(e) => tracing::error!("retention purge failed: {e}"),
            }
        }
    }

    async fn attempt(self: Arc<Self>, claim: Claim, permit: OwnedSemaphorePermit) {
        let span = tracing::info_span!(
            "event",
            event_id = %display_id(claim.event_id.as_deref()),
            receipt_id = %claim.receipt_id,
            route = %claim.route,
        );
        async move {
            let Some(route) = self.routes().by_name.get(&claim.route).cloned() else {
                // Removed by a reload between claim and start: give it back
                // (it waits for the route, like any stranded delivery).
                self.release(&claim).await;
                drop(permit);
                self.wake.notify_one();
                return;
            };
            let input = types::Event {
                body: claim.body.clone(),
                receipt_id: claim.receipt_id.clone(),
                received_at: rfc3339_millis(claim.received_ms),
                attempt: claim.attempt,
            };
            let report = flow::run(&self.engine, &route, &self.state, input, &self.transport).await;
            let now = now_millis();
            let last_status = report
                .steps
                .last()
                .and_then(|s| s.responses.last())
                .map(|r| r.status);
            let error = match &report.outcome {
                Outcome::Done { .. } => None,
                Outcome::Failed { message, .. } | Outcome::Incomplete { message } => {
                    Some(flow::excerpt(message, 500))
                }
            };
            let row = AttemptRow {
                attempt: claim.attempt,
                at_ms: now,
                outcome: serde_json::to_value(&report.outcome).unwrap_or(json!(null)),
                last_status,
                error: error.clone(),
                steps: report.steps.len() as u32,
                fuel_used: report.fuel_used,
                duration_ms: report.duration_ms,
                transform_digest: report.transform_digest.clone(),
            };
            let next = self.next(&claim, &report, now);
            match &next {
                Next::Delivered => {
                    let message = match &report.outcome {
                        Outcome::Done { message } => message.as_str(),
                        _ => "",
                    };
                    tracing::info!(attempt = claim.attempt, fuel = report.fuel_used, ms = report.duration_ms, transform_digest = %report.transform_digest, "delivered: {message}");
                }
                Next::Retry { at_ms } => tracing::warn!(
                    attempt = claim.attempt,
                    ?last_status,
                    transform_digest = %report.transform_digest,
                    next_attempt_at = %rfc3339_millis(*at_ms),
                    "delivery failed, will retry: {}",
                    error.as_deref().unwrap_or("")
                ),
                Next::Failed { reason } => tracing::error!(
                    attempt = claim.attempt,
                    ?last_status,
                    transform_digest = %report.transform_digest,
                    "delivery failed (dead letter): {reason}"
                ),
            }
            let outcome = match &next {
                Next::Delivered => "delivered",
                Next::Retry { .. } => "retry",
                Next::Failed { .. } => "failed",
            };
            self.metrics.attempt(&claim.route, outcome, &report);
            let settled = !matches!(next, Next::Retry { .. });
            // The record must land: a delivery left in flight would only
            // resume at the next start.  Keep trying while the store fails.
            let mut backoff = Duration::from_millis(100);
            loop {
                match self
                    .store
                    .finish(claim.event_seq, claim.route.clone(), row.clone(), next.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!("cannot record the attempt (retrying): {e}");
                        if self.stopping.load(Ordering::Relaxed) {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            if settled {
                let _ = self
                    .open
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
            }
            drop(permit);
            self.wake.notify_one();
        }
        .instrument(span)
        .await
    }

    /// Gives a claim back to pending (the attempt did not start).
    async fn release(&self, claim: &Claim) {
        if let Err(e) = self
            .store
            .release(claim.event_seq, claim.route.clone())
            .await
        {
            tracing::error!(receipt_id = %claim.receipt_id, route = %claim.route, "cannot give a claimed delivery back (it resumes at the next start): {e}");
        }
    }

    /// Where a delivery goes after an attempt.
    fn next(&self, claim: &Claim, report: &flow::FlowReport, now: i64) -> Next {
        let (message, retry_after) = match &report.outcome {
            Outcome::Done { .. } => return Next::Delivered,
            Outcome::Failed {
                retryable: false,
                message,
                kind,
                ..
            } => {
                return Next::Failed {
                    reason: format!(
                        "{kind:?} error, not retryable: {}",
                        flow::excerpt(message, 500)
                    ),
                };
            }
            Outcome::Incomplete { message } => {
                return Next::Failed {
                    reason: format!("incomplete flow: {}", flow::excerpt(message, 500)),
                };
            }
            Outcome::Failed {
                message,
                retry_after_seconds,
                ..
            } => (message, *retry_after_seconds),
        };
        if self.policy.max_attempts > 0 && claim.attempt >= self.policy.max_attempts {
            return Next::Failed {
                reason: format!(
                    "gave up after {} attempts (delivery.max_attempts); last: {}",
                    claim.attempt,
                    flow::excerpt(message, 400)
                ),
            };
        }
        let salt = claim
            .receipt_id
            .bytes()
            .chain(claim.route.bytes())
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let at_ms = now.saturating_add(
            self.policy
                .delay(claim.attempt + 1, retry_after, salt)
                .as_millis() as i64,
        );
        if at_ms > claim.deadline_ms {
            return Next::Failed {
                reason: format!(
                    "gave up after {} attempts: the retry horizon ({} s, delivery.retry_horizon_secs) is over; last: {}",
                    claim.attempt,
                    self.policy.retry_horizon_secs,
                    flow::excerpt(message, 400)
                ),
            };
        }
        Next::Retry { at_ms }
    }

    /// Healthy: not stopping, the scheduler went round its loop in the last
    /// 30 seconds, and the store commits a write within `timeout`.
    pub async fn health(&self, timeout: Duration) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        let age = now_millis() - self.heartbeat.load(Ordering::Relaxed);
        if age > 30_000 {
            return Err(format!("the delivery scheduler has not run for {age} ms"));
        }
        match tokio::time::timeout(timeout, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the event store is not writable: {e}")),
            Err(_) => Err(format!(
                "the event store did not commit within {} ms",
                timeout.as_millis()
            )),
        }
    }

    /// Names of the routes that run, in configuration order.
    pub fn route_names(&self) -> Vec<String> {
        self.routes()
            .order
            .iter()
            .map(|r| r.name.to_string())
            .collect()
    }

    /// Open deliveries (pending or in flight), as last counted.
    pub fn open_deliveries(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// What is known of one webhook (`GET /api/events/{receipt}`).
    pub fn record(&self, receipt_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.store.record(receipt_id, false)
    }
}

/// An event ID fit for logs and answers: at most 128 characters.
pub fn display_id(id: Option<&str>) -> String {
    match id {
        None => "-".into(),
        Some(id) if id.chars().count() <= 128 => id.to_string(),
        Some(id) => format!("{}…", id.chars().take(127).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = DeliveryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
            ..DeliveryPolicy::default()
        };
        let d2 = p.delay(2, None, 1).as_millis();
        let d4 = p.delay(4, None, 1).as_millis();
        assert!((100..=120).contains(&d2), "{d2}");
        assert!((400..=480).contains(&d4), "{d4}");
        let ra = p.delay(2, Some(3), 1).as_millis();
        assert!((3000..=3600).contains(&ra), "{ra}");
        // A long Retry-After wins over the back-off cap.
        assert_eq!(p.delay(2, Some(3600), 1).as_millis(), 3_600_000);
        assert!(p.delay(30, None, 1).as_millis() <= 12_000);
    }
}
