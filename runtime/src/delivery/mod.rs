//! Delivery: admits accepted webhooks into the [`Store`] and runs each
//! route's deliveries from it, with retries.
//!
//! * [`Dispatcher::admit`] stores an event and one delivery per route whose
//!   filter takes it; it returns only once that is durable, so a 2xx always
//!   means the event survives a crash.
//! * The [`scheduler`] claims due deliveries from the store, as many as
//!   there are sandbox slots, in per-alert order, within rate limits and
//!   each route's [`bulkhead`] (its share of the slots).
//! * An [`attempt`] runs the route's flow from the start in a fresh
//!   sandbox and records it; the [`retry`] policy decides what is next.
//!   Its requests ask their destination's circuit [`breaker`] first: to a
//!   destination that keeps failing, the delivery is held, not attempted.
//! * [`housekeeping`] re-counts the backlog, checks free disk space and
//!   purges old deliveries; [`room`] is the back-pressure it feeds.
//!
//! May import: `flow`, `store`, `sandbox`, `egress`, `ops`, `config`,
//! `time`, `text`.

mod attempt;
mod breaker;
pub(crate) mod bulkhead;
mod housekeeping;
pub(crate) mod rate;
mod retry;
mod room;
mod routes;
mod scheduler;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};

pub(crate) use room::Full;
pub(crate) use routes::RouteSet;

use crate::config::DeliveryPolicy;
use crate::egress::HttpTransport;
use crate::ops::Metrics;
use crate::sandbox::Engine;
use crate::store::{Admission, EventRecord, NewEvent, Store, StoreError, TransformState};
use crate::time::now_millis;

/// An accepted webhook, as intake hands it over.
pub(crate) struct Accepted<'a> {
    /// The host's identifier of this webhook.
    pub receipt_id: String,
    /// When it was received (ms since the epoch).
    pub received_ms: i64,
    /// The event, read tolerantly.
    pub(crate) event: &'a zt_event::Event,
    /// The JSON text as received (after inflating).
    pub body: Arc<str>,
    /// The request headers worth keeping.
    pub headers: Vec<(String, String)>,
}

/// What became of a webhook handed to [`Dispatcher::admit`].
#[derive(Debug, Clone)]
pub(crate) enum Admitted {
    /// Stored durably; these routes will deliver it.
    Stored { routes: Vec<String> },
    /// The same body was accepted earlier (within the duplicate window).
    Duplicate {
        /// The receipt that was stored.
        receipt_id: String,
        /// When it was received (ms since the epoch).
        received_ms: i64,
    },
}

/// Runs routes' deliveries from the store.
pub struct Dispatcher {
    /// Where events, deliveries and attempts live.
    store: Arc<dyn Store>,
    /// The routes that run now (swapped on reload).
    routes: routes::RouteTable,
    /// Retries, bounds and retention (`[delivery]`).
    policy: DeliveryPolicy,
    /// What an attempt needs: the engine, transform state, the HTTP client
    /// and the metrics it reports to.
    runner: attempt::Runner,
    /// Whether another webhook may be accepted (back-pressure).
    room: room::Room,
    /// Bounds attempts running at once to the engine's instance slots.
    slots: Arc<Semaphore>,
    /// How many slots there are (the drain takes them all).
    slot_count: u32,
    /// What each route runs now, against its `max_in_flight`: one route
    /// never holds more than its share of the slots.
    bulkheads: Arc<bulkhead::Bulkheads>,
    /// One circuit breaker per destination, and the routes they hold.
    breakers: breaker::Breakers,
    /// Wakes the scheduler: a new event, a finished attempt, shutdown.
    wake: Notify,
    /// Set once `start` has resumed the store and started the scheduler.
    running: AtomicBool,
    /// Set on shutdown: nothing more is claimed.
    stopping: AtomicBool,
    /// When the scheduler last went round its loop (ms since the epoch):
    /// it wakes at least every second, so an old value means it is stuck.
    heartbeat: AtomicI64,
    /// The last commit probe of [`Dispatcher::health`] and when it ended:
    /// reused for [`PING_CACHE`], so a probe storm costs one write a
    /// second, not one per request.
    last_ping: std::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    /// Routes paused by an operator (read from the store at start, kept
    /// here as they change): the scheduler skips their deliveries.
    paused: std::sync::Mutex<Vec<String>>,
}

/// How long a commit probe's outcome stands for `/readyz`.
const PING_CACHE: Duration = Duration::from_secs(1);

impl Dispatcher {
    /// `disk_dir`: the directory whose free space guards intake (the
    /// SQLite data directory; `None` when the store is remote).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        engine: Arc<Engine>,
        routes: RouteSet,
        transport: HttpTransport,
        policy: DeliveryPolicy,
        store: Arc<dyn Store>,
        disk_dir: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Arc<Dispatcher> {
        let slot_count = engine.limits.max_instances.max(1);
        store.set_rate_limits(routes.limits());
        let state: Arc<dyn TransformState> = store.transform_state();
        Arc::new(Dispatcher {
            bulkheads: Arc::new(bulkhead::Bulkheads::new(metrics.clone())),
            breakers: breaker::Breakers::new(&policy, metrics.clone()),
            room: room::Room::new(
                policy.max_pending as u64,
                disk_dir.map(|d| (d, policy.min_free_disk_mb.saturating_mul(1 << 20))),
            ),
            routes: routes::RouteTable::new(routes),
            runner: attempt::Runner {
                engine,
                state,
                transport,
                metrics,
            },
            policy,
            store,
            slots: Arc::new(Semaphore::new(slot_count as usize)),
            slot_count,
            wake: Notify::new(),
            running: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            heartbeat: AtomicI64::new(now_millis()),
            last_ping: std::sync::Mutex::new(None),
            paused: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The store deliveries are run from.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The routes that run now.
    pub fn routes(&self) -> Arc<RouteSet> {
        self.routes.current()
    }

    /// Replaces the routes (reload).  New events and attempts use the new
    /// set; attempts running now finish on the routes they started with.
    pub(crate) fn replace_routes(&self, routes: RouteSet) {
        self.store.set_rate_limits(routes.limits());
        self.routes.replace(routes);
        self.wake.notify_one();
    }

    /// Whether another webhook may be accepted now: the one admission
    /// decision, asked by `/webhook` and `/readyz` alike.
    pub(crate) fn room(&self) -> Result<(), Full> {
        if self.store.lost().is_some() {
            return Err(Full::StoreLost);
        }
        self.room.check()
    }

    /// Stores `event` with one delivery per route whose filter takes it;
    /// returns once durable.
    pub(crate) async fn admit(&self, event: Accepted<'_>) -> Result<Admitted, StoreError> {
        let routes = self.routes().taking(event.event);
        let event_id = event.event.id().map(std::borrow::Cow::into_owned);
        let new = NewEvent {
            order_key: event_id.clone().unwrap_or_else(|| event.receipt_id.clone()),
            receipt_id: event.receipt_id.clone(),
            received_ms: event.received_ms,
            event_id,
            severity: event.event.severity().name(),
            state: event.event.state().map(std::borrow::Cow::into_owned),
            body_hash: hex::encode(Sha256::digest(event.body.as_bytes())),
            body: event.body,
            headers: event.headers,
            routes: routes.clone(),
            deadline_ms: event.received_ms.saturating_add(self.policy.horizon_ms()),
        };
        let dedupe_ms = self.policy.dedupe_window_secs.saturating_mul(1000) as i64;
        match self.store.admit(new, dedupe_ms).await? {
            Admission::Stored => {
                if routes.is_empty() {
                    tracing::info!(receipt_id = %event.receipt_id, "no route takes this event (filters)");
                } else {
                    self.room.opened(routes.len() as u64);
                    self.wake.notify_one();
                }
                Ok(Admitted::Stored { routes })
            }
            Admission::Duplicate {
                receipt_id,
                received_ms,
            } => Ok(Admitted::Duplicate {
                receipt_id,
                received_ms,
            }),
        }
    }

    /// Resumes what was not delivered and starts the scheduler and the
    /// housekeeping task.  Call once, inside the runtime.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        let resumed = self.store.start().await?;
        if resumed > 0 {
            tracing::warn!(
                resumed,
                "attempts interrupted by the last stop will be made again"
            );
        }
        let paused = self.store.paused_routes().await?;
        if !paused.is_empty() {
            tracing::warn!(routes = %paused.join(", "), "paused routes: their deliveries wait until resumed");
        }
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = paused;
        // No purge here: a large one must not delay readiness.
        self.housekeeping_pass(false).await;
        let backlog = self.room.open();
        if backlog > 0 {
            tracing::info!(open = backlog, "resuming undelivered events");
        }
        tokio::spawn(self.clone().schedule());
        tokio::spawn(self.clone().housekeeping());
        // A shared store says when other processes made work due.
        if let Some(wakeups) = self.store.wakeups() {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    wakeups.notified().await;
                    match me.upgrade() {
                        Some(d) if !d.stopping() => d.wake.notify_one(),
                        _ => return,
                    }
                }
            });
        }
        self.running.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Started and not stopping: notifications to systemd make sense.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed) && !self.stopping()
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Stops claiming, then waits up to `drain_timeout_ms` for running
    /// attempts.  What does not finish is attempted again at the next start.
    pub(crate) async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let timeout = Duration::from_millis(self.policy.drain_timeout_ms);
        match tokio::time::timeout(timeout, self.slots.acquire_many(self.slot_count)).await {
            Ok(_) => tracing::info!("deliveries drained"),
            Err(_) => tracing::warn!(
                timeout_ms = self.policy.drain_timeout_ms,
                "attempts still running at shutdown; they will be made again at the next start"
            ),
        }
        // A shared store gives back what this node still holds.
        if let Err(e) = self.store.stop().await {
            tracing::warn!(
                "cannot give claims back (other nodes take them when their lease runs out): {}",
                crate::text::error_chain(&e)
            );
        }
    }

    /// Healthy: not stopping, the scheduler went round its loop in the last
    /// 30 seconds, and the store commits a write within `timeout`.
    pub(crate) async fn health(&self, timeout: Duration) -> Result<(), String> {
        if self.stopping() {
            return Err("shutting down".into());
        }
        let age = now_millis() - self.heartbeat.load(Ordering::Relaxed);
        if age > 30_000 {
            return Err(format!("the delivery scheduler has not run for {age} ms"));
        }
        if let Some((at, outcome)) = &*self.last_ping.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < PING_CACHE
        {
            return outcome.clone();
        }
        let outcome = self.commit_probe(timeout).await;
        *self.last_ping.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), outcome.clone()));
        outcome
    }

    /// One small write through the store's commit path, within `timeout`.
    async fn commit_probe(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "the event store is not writable: {}",
                crate::text::error_chain(&e)
            )),
            Err(_) => Err(format!(
                "the event store did not commit within {} ms",
                timeout.as_millis()
            )),
        }
    }

    /// Names of the routes that run, in configuration order.
    pub(crate) fn route_names(&self) -> Vec<String> {
        self.routes().iter().map(|r| r.name.to_string()).collect()
    }

    /// Open deliveries (pending or in flight), as last counted.
    pub(crate) fn open_deliveries(&self) -> u64 {
        self.room.open()
    }

    /// Stores a test event (`body`, JSON) with one delivery, for `route`
    /// alone, whatever its filter says (the console's "send a test
    /// event").  Returns its receipt ID once durable.
    pub async fn admit_test(
        &self,
        route: &str,
        body: String,
        event: &zt_event::Event,
    ) -> Result<String, StoreError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = now_millis();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let receipt_id = format!("rtest-{now:x}-{seq:06x}");
        let event_id = event.id().map(std::borrow::Cow::into_owned);
        let new = NewEvent {
            order_key: event_id.clone().unwrap_or_else(|| receipt_id.clone()),
            receipt_id: receipt_id.clone(),
            received_ms: now,
            event_id,
            severity: event.severity().name(),
            state: event.state().map(std::borrow::Cow::into_owned),
            body_hash: hex::encode(Sha256::digest(body.as_bytes())),
            body: body.into(),
            headers: vec![("x-ztbridge-test".into(), "console".into())],
            routes: vec![route.to_string()],
            deadline_ms: now.saturating_add(self.policy.horizon_ms()),
        };
        self.store.admit(new, 0).await?;
        self.room.opened(1);
        self.wake.notify_one();
        Ok(receipt_id)
    }

    /// Runs `route`'s current transform on an event as received, offline:
    /// no request leaves (the first gets no answer), transform state
    /// starts empty and is not kept.  `None`: no such route.  Takes a
    /// sandbox slot like an attempt.
    pub async fn dry_run(
        &self,
        route: &str,
        body: &str,
        receipt_id: &str,
        received_ms: i64,
    ) -> Option<crate::flow::FlowReport> {
        let route = self.routes().get(route)?.clone();
        let _slot = self.slots.acquire().await.ok()?;
        let event = crate::flow::record(&crate::flow::FlowInput {
            body,
            receipt_id,
            received_ms,
            attempt: 1,
        });
        let state: Arc<dyn TransformState> = Arc::new(crate::store::MemoryState::default());
        let transport = crate::egress::CannedTransport::new(vec![]);
        Some(crate::flow::run(&self.runner.engine, &route, &state, event, &transport).await)
    }

    /// The routes paused now.
    pub fn paused(&self) -> Vec<String> {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pauses or resumes `route`, in the store (it outlives a restart)
    /// and for this node's scheduler at once.
    pub async fn set_paused(&self, route: &str, paused: bool) -> Result<(), StoreError> {
        self.store.set_paused(route, paused).await?;
        {
            let mut list = self.paused.lock().unwrap_or_else(|p| p.into_inner());
            list.retain(|r| r != route);
            if paused {
                list.push(route.to_string());
                list.sort();
            }
        }
        tracing::info!(%route, paused, "route {}", if paused { "paused" } else { "resumed" });
        self.wake.notify_one();
        Ok(())
    }

    /// Looks for due work now (an operator re-queued deliveries).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The retry horizon given to deliveries an operator re-queues.
    pub fn retry_horizon_ms(&self) -> i64 {
        self.policy.horizon_ms()
    }

    /// What is known of one webhook (`GET /api/events/{receipt}`).
    pub(crate) async fn record(&self, receipt_id: &str) -> Result<Option<EventRecord>, StoreError> {
        self.store.record(receipt_id, false).await
    }
}
