//! Hands accepted events to the routes that want them and runs each
//! route's delivery, with retries.
//!
//! This is the seam between accepting and delivering: [`Dispatcher::submit`]
//! takes an accepted event and returns at once; each matching route
//! delivers on its own task, so one route failing never blocks or delays
//! another.  Retries here are in memory (bounded attempts, exponential
//! back-off with jitter, honouring Retry-After); the durable queue replaces
//! this module's bookkeeping without changing its callers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::bindings::types;
use crate::engine::Engine;
use crate::flow::{self, Outcome};
use crate::intake::Accepted;
use crate::outbound::HttpTransport;
use crate::route::Route;
use crate::state::StateStore;

/// Retries of failed deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts per route and event, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff_ms: u64,
    /// Upper bound of one delay (Retry-After included).
    pub max_backoff_ms: u64,
    /// Deliveries waiting or running at once; past it `/webhook` answers
    /// 503 with Retry-After instead of accepting what it cannot keep.
    pub max_pending: usize,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            max_pending: 10_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `next` (2, 3...): Retry-After when given, else
    /// exponential back-off; plus up to 20% jitter; capped.
    pub fn delay(&self, next: u32, retry_after_seconds: Option<u32>, salt: u64) -> Duration {
        let base = match retry_after_seconds {
            Some(s) => u64::from(s) * 1000,
            None => self
                .initial_backoff_ms
                .saturating_mul(1u64 << (next.saturating_sub(2)).min(20)),
        }
        .min(self.max_backoff_ms);
        let jitter = if base == 0 {
            0
        } else {
            jitter(salt) % (base / 5 + 1)
        };
        Duration::from_millis(
            base.saturating_add(jitter)
                .min(self.max_backoff_ms.max(base)),
        )
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

/// Where a route's delivery of one event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    InFlight,
    Retrying,
    Delivered,
    Failed,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub at: String,
    pub outcome: Outcome,
    /// Status of the last response received, if any.
    pub last_status: Option<u16>,
    pub steps: usize,
    pub fuel_used: u64,
    pub duration_ms: f64,
    pub transform_digest: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub route: String,
    pub state: DeliveryState,
    pub attempts: Vec<Attempt>,
}

/// What the service knows of one accepted webhook.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub receipt_id: String,
    pub received_at: String,
    pub event_id: Option<String>,
    pub severity: String,
    pub state: Option<String>,
    pub deliveries: Vec<Delivery>,
}

/// Recent events and their deliveries (bounded; the durable store keeps
/// everything).
#[derive(Default)]
struct Journal {
    records: HashMap<String, EventRecord>,
    order: VecDeque<String>,
}

const JOURNAL_CAPACITY: usize = 10_000;

/// Runs routes for accepted events.
pub struct Dispatcher {
    engine: Arc<Engine>,
    /// Routes in configuration order.
    routes: Vec<Arc<Route>>,
    state: Arc<dyn StateStore>,
    transport: HttpTransport,
    retry: RetryPolicy,
    /// Bounds flows running at once to the engine's instance slots.
    permits: Arc<Semaphore>,
    journal: Mutex<Journal>,
    /// Per (route, Superna event ID): the completion signal of the latest
    /// delivery, which the next one waits for.  Updates of one alert are
    /// delivered in arrival order (a resolve never overtakes its trigger,
    /// a comment never its ticket); different alerts run concurrently.
    order: Mutex<HashMap<(Arc<str>, String), watch::Receiver<bool>>>,
    /// Deliveries accepted and not finished (waiting, running, retrying).
    pending: AtomicUsize,
}

impl Dispatcher {
    pub fn new(
        engine: Arc<Engine>,
        routes: Vec<Arc<Route>>,
        state: Arc<dyn StateStore>,
        transport: HttpTransport,
        retry: RetryPolicy,
    ) -> Arc<Dispatcher> {
        let slots = engine.limits.max_instances.max(1) as usize;
        Arc::new(Dispatcher {
            engine,
            routes,
            state,
            transport,
            retry,
            permits: Arc::new(Semaphore::new(slots)),
            journal: Mutex::new(Journal::default()),
            order: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
        })
    }

    /// Whether another event may be accepted (see `max_pending`).
    pub fn has_room(&self) -> bool {
        self.pending.load(Ordering::Relaxed) < self.retry.max_pending
    }

    /// Starts delivery of `event` on every route whose filter takes it;
    /// returns those routes' names.
    pub fn submit(self: &Arc<Self>, event: Accepted) -> Vec<String> {
        let event = Arc::new(event);
        let matched: Vec<Arc<Route>> = self
            .routes
            .iter()
            .filter(|r| r.filter.accepts(&event.event))
            .cloned()
            .collect();
        let names: Vec<String> = matched.iter().map(|r| r.name.to_string()).collect();
        self.journal_insert(&event, &names);
        if matched.is_empty() {
            let event_id = display_id(event.event.id().as_deref());
            tracing::info!(receipt_id = %event.receipt_id, %event_id, "no route takes this event (filters)");
        }
        let order_key = event.event.id().unwrap_or_else(|| event.receipt_id.clone());
        for route in matched {
            let span = tracing::info_span!(
                "event",
                event_id = %display_id(event.event.id().as_deref()),
                receipt_id = %event.receipt_id,
                route = %route.name,
            );
            let key = (route.name.clone(), order_key.clone());
            let (done_tx, done_rx) = watch::channel(false);
            let previous = self.order().insert(key.clone(), done_rx.clone());
            self.pending.fetch_add(1, Ordering::Relaxed);
            let this = self.clone();
            let ev = event.clone();
            tokio::spawn(
                async move {
                    if let Some(mut previous) = previous {
                        // Err: the earlier delivery's task is gone; go on.
                        let _ = previous.wait_for(|done| *done).await;
                    }
                    this.clone().deliver(route, ev).await;
                    let _ = done_tx.send(true);
                    let mut order = this.order();
                    if order.get(&key).is_some_and(|rx| rx.same_channel(&done_rx)) {
                        order.remove(&key);
                    }
                    drop(order);
                    this.pending.fetch_sub(1, Ordering::Relaxed);
                }
                .instrument(span),
            );
        }
        names
    }

    async fn deliver(self: Arc<Self>, route: Arc<Route>, event: Arc<Accepted>) {
        let salt = event
            .receipt_id
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        for attempt in 1..=self.retry.max_attempts.max(1) {
            let input = types::Event {
                body: event.body.to_string(),
                receipt_id: event.receipt_id.clone(),
                received_at: event.received_at.clone(),
                attempt,
            };
            let report = {
                let _permit = self.permits.acquire().await;
                self.set_state(&event.receipt_id, &route.name, DeliveryState::InFlight);
                flow::run(&self.engine, &route, &self.state, input, &self.transport).await
            };
            let last_status = report
                .steps
                .last()
                .and_then(|s| s.responses.last())
                .map(|r| r.status);
            let record = Attempt {
                attempt,
                at: crate::time::now_rfc3339(),
                outcome: report.outcome.clone(),
                last_status,
                steps: report.steps.len(),
                fuel_used: report.fuel_used,
                duration_ms: report.duration_ms,
                transform_digest: report.transform_digest.clone(),
            };
            let (retryable, retry_after) = match &report.outcome {
                Outcome::Done { message } => {
                    tracing::info!(attempt, fuel = report.fuel_used, ms = report.duration_ms, transform_digest = %report.transform_digest, "delivered: {message}");
                    self.finish(
                        &event.receipt_id,
                        &route.name,
                        record,
                        DeliveryState::Delivered,
                    );
                    return;
                }
                Outcome::Failed {
                    retryable,
                    message,
                    retry_after_seconds,
                    kind,
                } => {
                    tracing::warn!(attempt, ?kind, retryable, transform_digest = %report.transform_digest, "delivery failed: {message}");
                    (*retryable, *retry_after_seconds)
                }
                Outcome::Incomplete { message } => {
                    tracing::error!(attempt, "delivery incomplete: {message}");
                    (false, None)
                }
            };
            if !retryable || attempt == self.retry.max_attempts {
                if retryable {
                    tracing::error!(
                        attempts = attempt,
                        "giving up: retry attempts exhausted (delivery.max_attempts)"
                    );
                }
                self.finish(
                    &event.receipt_id,
                    &route.name,
                    record,
                    DeliveryState::Failed,
                );
                return;
            }
            self.finish(
                &event.receipt_id,
                &route.name,
                record,
                DeliveryState::Retrying,
            );
            let delay = self.retry.delay(attempt + 1, retry_after, salt);
            tracing::info!(
                next_attempt = attempt + 1,
                delay_ms = delay.as_millis() as u64,
                "will retry"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn order(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(Arc<str>, String), watch::Receiver<bool>>> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn journal_insert(&self, event: &Accepted, routes: &[String]) {
        let record = EventRecord {
            receipt_id: event.receipt_id.clone(),
            received_at: event.received_at.clone(),
            event_id: event.event.id().map(|id| display_id(Some(&id))),
            severity: event.event.severity().name(),
            state: event.event.state(),
            deliveries: routes
                .iter()
                .map(|r| Delivery {
                    route: r.clone(),
                    state: DeliveryState::Pending,
                    attempts: vec![],
                })
                .collect(),
        };
        let mut j = self.journal();
        if j.order.len() >= JOURNAL_CAPACITY {
            if let Some(old) = j.order.pop_front() {
                j.records.remove(&old);
            }
        }
        j.order.push_back(event.receipt_id.clone());
        j.records.insert(event.receipt_id.clone(), record);
    }

    fn with_delivery(&self, receipt: &str, route: &str, f: impl FnOnce(&mut Delivery)) {
        let mut j = self.journal();
        if let Some(d) = j
            .records
            .get_mut(receipt)
            .and_then(|r| r.deliveries.iter_mut().find(|d| d.route == route))
        {
            f(d);
        }
    }

    fn set_state(&self, receipt: &str, route: &str, state: DeliveryState) {
        self.with_delivery(receipt, route, |d| d.state = state);
    }

    fn finish(&self, receipt: &str, route: &str, attempt: Attempt, state: DeliveryState) {
        self.with_delivery(receipt, route, |d| {
            d.state = state;
            d.attempts.push(attempt);
        });
    }

    /// What is known of a recent event.
    pub fn event(&self, receipt_id: &str) -> Option<EventRecord> {
        self.journal().records.get(receipt_id).cloned()
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
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
            max_pending: 10,
        };
        let d2 = p.delay(2, None, 1).as_millis();
        let d4 = p.delay(4, None, 1).as_millis();
        assert!((100..=120).contains(&d2), "{d2}");
        assert!((400..=480).contains(&d4), "{d4}");
        let ra = p.delay(2, Some(3), 1).as_millis();
        assert!((3000..=3600).contains(&ra), "{ra}");
        assert!(p.delay(30, None, 1).as_millis() <= 10_000);
    }
}
