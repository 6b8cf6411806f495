//! The records the store keeps and hands out, as typed structs.  Times are
//! milliseconds since the epoch inside; they are shown as RFC 3339 when a
//! record is serialised for the API or the CLI.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::time::rfc3339_millis;

/// A delivery's state: one per (event, route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first attempt or its next retry.
    Pending,
    /// An attempt is running (made pending again at start: a crash mid-way
    /// means the attempt is made again).
    InFlight,
    /// The transform finished: delivered.
    Delivered,
    /// Dead letter: given up, with the reason.
    Failed,
}

impl DeliveryState {
    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// The inverse of [`as_str`](Self::as_str) (`in-flight` accepted too).
    pub fn parse(s: &str) -> Option<DeliveryState> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "in_flight" | "in-flight" => DeliveryState::InFlight,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accepted webhook, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The host's identifier of this webhook (unique per receipt).
    pub receipt_id: String,
    /// Receive time, milliseconds since the epoch.
    pub received_ms: i64,
    /// Superna's event ID, when recognisable.
    pub event_id: Option<String>,
    /// What orders deliveries: the event ID, or the receipt ID without one.
    pub order_key: String,
    /// Normalised severity (filters, lists).
    pub severity: String,
    /// The alert's state as received (lists).
    pub state: Option<String>,
    /// SHA-256 of the body (duplicate detection).
    pub body_hash: String,
    /// The JSON text as received (after inflating).
    pub body: Arc<str>,
    /// The request headers worth keeping (never credentials).
    pub headers: Vec<(String, String)>,
    /// Routes whose filter took the event: one delivery each.
    pub routes: Vec<String>,
    /// Give up retrying after this time (ms since the epoch).
    pub deadline_ms: i64,
}

/// What admitting an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Stored and committed.
    Stored,
    /// The same body was received within the duplicate window: not stored.
    Duplicate {
        /// The receipt that was stored.
        receipt_id: String,
        /// When it was received (ms since the epoch).
        received_ms: i64,
    },
}

/// Names one delivery: an event (by its sequence number) and a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    /// The event's sequence number in the store.
    pub event_seq: i64,
    /// The route's name.
    pub route: String,
}

/// A delivery taken for an attempt.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Which delivery.
    pub key: DeliveryKey,
    /// The webhook's receipt ID (logs, the transform's event record).
    pub receipt_id: String,
    /// When it was received (the transform sees it).
    pub received_ms: i64,
    /// Superna's event ID (logs).
    pub event_id: Option<String>,
    /// The body as received: the transform's input.
    pub body: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// Give up retrying after this (ms since the epoch).
    pub deadline_ms: i64,
}

/// Which routes a claim may take from, and how many deliveries of each:
/// the scheduler's bulkheads (a route's share of the sandbox slots) and
/// the routes it holds (not configured, destination breaker open).
#[derive(Debug, Clone, Default)]
pub struct ClaimScope {
    /// Routes not claimed from at all.
    pub skip: Vec<String>,
    /// At most this many deliveries of a route in this claim (the free
    /// room of its bulkhead); a route not listed is bounded by `max` alone.
    pub room: BTreeMap<String, usize>,
}

impl ClaimScope {
    /// A scope that only skips `skip`.
    pub fn skipping(skip: &[String]) -> ClaimScope {
        ClaimScope {
            skip: skip.to_vec(),
            room: BTreeMap::new(),
        }
    }

    /// Whether `route` may take no delivery at all.
    pub fn skips(&self, route: &str) -> bool {
        self.skip.iter().any(|s| s == route) || self.room.get(route) == Some(&0)
    }

    /// Whether `route` may take another delivery, `taken` being already
    /// taken from it in this claim.
    pub fn allows(&self, route: &str, taken: usize) -> bool {
        !self.skip.iter().any(|s| s == route) && self.room.get(route).is_none_or(|r| taken < *r)
    }
}

/// Counts the deliveries a claim took per route, against a [`ClaimScope`].
#[derive(Debug, Default)]
pub struct ClaimTally {
    /// Taken so far, by route.
    taken: BTreeMap<String, usize>,
}

impl ClaimTally {
    /// Whether `route` may take one more under `scope`.
    pub fn allows(&self, scope: &ClaimScope, route: &str) -> bool {
        scope.allows(route, self.taken.get(route).copied().unwrap_or(0))
    }

    /// One more taken from `route`.
    pub fn take(&mut self, route: &str) {
        *self.taken.entry(route.to_string()).or_default() += 1;
    }
}

/// What a claim returned.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Deliveries now in flight for this node.
    pub claims: Vec<Claim>,
    /// The shortest rate-limit wait met: a route had due deliveries but no
    /// token; try again after this.
    pub rate_wait: Option<Duration>,
}

/// A per-destination rate limit: `per_minute` deliveries, `burst` at once.
/// Routes with the same `key` share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Shared by routes that deliver to the same destination account.
    pub key: String,
    /// Deliveries per minute.
    pub per_minute: u32,
    /// Deliveries allowed at once before the rate applies.
    pub burst: u32,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it ended.
    #[serde(rename = "at", serialize_with = "time")]
    pub at_ms: i64,
    /// The flow's outcome, as the flow reported it (JSON).
    pub outcome: serde_json::Value,
    /// Status of the last response received, if any.
    pub last_status: Option<u16>,
    /// What went wrong, with its causes, if anything did (an excerpt).
    pub error: Option<String>,
    /// Steps (start + resumes) the flow ran.
    pub steps: u32,
    /// Wasm fuel the flow used.
    pub fuel_used: u64,
    /// Wall-clock time of the flow.
    pub duration_ms: f64,
    /// `sha256:...` of the transform that ran: exactly what decided.
    pub transform_digest: String,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Done.
    Delivered,
    /// Attempt again at this time (ms since the epoch).
    Retry { at_ms: i64 },
    /// Dead letter, with the reason.
    Failed { reason: String },
}

/// Which deliveries `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this route.
    pub route: Option<String>,
    /// At most this many rows.
    pub limit: usize,
    /// Only this normalised severity (the console's filter).
    pub severity: Option<String>,
    /// Only events received at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only events received before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only events whose receipt ID, event ID or body contains this text
    /// (the console's search on event ID, user and path).
    pub text: Option<String>,
    /// Rows to skip first (paging).
    pub offset: usize,
}

/// Deliveries of one route in one state: the overview's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCount {
    /// The route.
    pub route: String,
    /// The state counted.
    pub state: DeliveryState,
    /// How many deliveries.
    pub count: u64,
    /// Receive time of the oldest event among them (the backlog's age).
    #[serde(rename = "oldest_received_at", serialize_with = "opt_time")]
    pub oldest_received_ms: Option<i64>,
}

/// One recorded attempt, reduced to what the overview charts: when, how
/// long, and whether it ended well.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptPoint {
    /// The route.
    pub route: String,
    /// When it ended.
    #[serde(rename = "at", serialize_with = "time")]
    pub at_ms: i64,
    /// No error: the destination took it.
    pub ok: bool,
    /// Wall-clock time of the flow.
    pub duration_ms: f64,
}

/// A row of `events list`: one delivery with its event's summary.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    /// The webhook's receipt ID.
    pub receipt_id: String,
    /// When it was received.
    #[serde(rename = "received_at", serialize_with = "time")]
    pub received_ms: i64,
    /// Superna's event ID, if it had one.
    pub event_id: Option<String>,
    /// Normalised severity.
    pub severity: String,
    /// The alert's state as received.
    pub state: Option<String>,
    /// The route.
    pub route: String,
    /// Where the delivery stands.
    pub delivery: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Status of the last response, if any.
    pub last_status: Option<u16>,
    /// Why it failed or is being retried.
    pub reason: Option<String>,
    /// When a pending delivery is next attempted.
    #[serde(rename = "next_attempt_at", serialize_with = "opt_time")]
    pub next_attempt_ms: Option<i64>,
}

/// Counts for back-pressure and monitoring.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Backlog {
    /// Deliveries pending or in flight.
    pub open: u64,
    /// Receive time of the oldest event with an open delivery.
    pub oldest_open_ms: Option<i64>,
}

/// Gauges of a shared store, read from it: the same on every node.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ClusterView {
    /// Nodes whose heartbeat is younger than a lease.
    pub live_nodes: u64,
    /// Deliveries given up (dead letters), all routes.
    pub dead_letters: u64,
}

/// Everything known of one webhook: `GET /api/events/{receipt}` and
/// `events show`.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// The webhook's receipt ID.
    pub receipt_id: String,
    /// When it was received.
    #[serde(rename = "received_at", serialize_with = "time")]
    pub received_ms: i64,
    /// Superna's event ID, fit for display (bounded length).
    pub event_id: Option<String>,
    /// Normalised severity.
    pub severity: String,
    /// The alert's state as received.
    pub state: Option<String>,
    /// One per route that took the event.
    pub deliveries: Vec<DeliveryRecord>,
    /// The request headers kept (with the body only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_json::Value>,
    /// The event as received (with the body only): JSON, or the text when
    /// it is not (it always is: intake checked it).
    #[serde(rename = "event", skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// One route's delivery of an event, with every attempt.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// The route.
    pub route: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts counted (interrupted ones included).
    pub attempts_made: u32,
    /// Status of the last response, if any.
    pub last_status: Option<u16>,
    /// Every recorded attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Why it failed or is being retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Pending: the next attempt.
    #[serde(
        rename = "next_attempt_at",
        serialize_with = "opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt_ms: Option<i64>,
    /// Pending: when retrying stops.
    #[serde(
        rename = "gives_up_at",
        serialize_with = "opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub gives_up_ms: Option<i64>,
    /// Delivered: when.
    #[serde(
        rename = "delivered_at",
        serialize_with = "opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub delivered_ms: Option<i64>,
    /// Failed: when.
    #[serde(
        rename = "failed_at",
        serialize_with = "opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub failed_ms: Option<i64>,
}

/// Which failed deliveries `retry_failed` re-queues.
#[derive(Debug, Clone, Default)]
pub struct RetrySelection {
    /// Only this webhook's.
    pub receipt_id: Option<String>,
    /// Only this route's.
    pub route: Option<String>,
}

fn time<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(*ms))
}

fn opt_time<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339_millis(*ms)),
        None => s.serialize_none(),
    }
}
