//! The store: every accepted webhook, its deliveries (one per route) and
//! their attempts, and the state that must outlive a process: the
//! transforms' key/value state and the rate limits.  One interface,
//! [`Store`], with a backend per database: `sqlite/` is the embedded one,
//! `postgres/` the one several nodes share.
//!
//! May import: `config`, `time`, `text`.  Knows nothing of HTTP, wasm or
//! routes beyond their names.

// The suite every backend runs (the root crate's tests run it against
// PostgreSQL).  Always compiled, not a cargo feature: a test-only feature
// would give `cargo test` and `cargo build` different units of this crate.
#[doc(hidden)]
#[macro_use]
pub mod conformance;
pub mod copy;
mod error;
mod model;
pub mod postgres;
pub mod sqlite;
mod state;

use std::sync::Arc;

pub use error::StoreError;
pub use model::{
    Admission, AttemptPoint, AttemptRecord, Backlog, Claim, ClaimBatch, ClaimScope, ClaimTally,
    ClusterView, DeliveryKey, DeliveryRecord, DeliveryState, EventRecord, ListFilter, ListRow,
    NewEvent, Next, RateLimit, RetrySelection, RouteCount,
};
pub use state::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use state::{MemoryState, StateError, TransformState};

/// What every backend provides.  All methods are async; a backend whose
/// database calls block runs them off the async workers itself.
///
/// A delivery moves `pending` -> `in_flight` (claimed) -> `delivered` or
/// `failed`, or back to `pending` for a retry.  The store guarantees the
/// per-alert order: it never hands out two deliveries of one (route, order
/// key) at once, nor one before an open predecessor.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Where the data lives, for messages (`sqlite:/var/lib/...`).
    fn describe(&self) -> String;

    // -- intake --

    /// Stores an event and one pending delivery per route, unless the same
    /// body arrived within `dedupe_window_ms` while its alert's latest (0:
    /// never a duplicate).  Returns once durable (committed and fsync'd).
    async fn admit(&self, event: NewEvent, dedupe_window_ms: i64) -> Result<Admission, StoreError>;

    // -- the scheduler --

    /// Called once when the service starts delivering: takes whatever the
    /// backend needs to own the work (the SQLite data directory lock), and
    /// makes attempts that were in flight when the last process stopped
    /// pending again (counting them).  Returns how many.
    async fn start(&self) -> Result<usize, StoreError>;

    /// Installs the rate limits, by route (start and reload).  Routes not
    /// listed are unlimited.  The limit state lives in the store.
    fn set_rate_limits(&self, limits: Vec<(String, RateLimit)>);

    /// Takes up to `max` due deliveries (next attempt at or before
    /// `now_ms`), oldest first, in per-alert order, skipping the routes in
    /// `skip`, each taking a token from its route's rate limit.
    async fn claim(
        &self,
        now_ms: i64,
        max: usize,
        skip: &[String],
    ) -> Result<ClaimBatch, StoreError> {
        self.claim_within(now_ms, max, &ClaimScope::skipping(skip))
            .await
    }

    /// [`Store::claim`] within `scope`: no route takes more than its room
    /// (the scheduler's bulkheads), and a route at its cap is passed over
    /// for the next due delivery of another, never claimed and given back.
    async fn claim_within(
        &self,
        now_ms: i64,
        max: usize,
        scope: &ClaimScope,
    ) -> Result<ClaimBatch, StoreError>;

    /// Gives claimed deliveries back unattempted (pending, no attempt
    /// counted): a stop, or a route that went away.
    async fn release(&self, keys: Vec<DeliveryKey>) -> Result<(), StoreError>;

    /// Gives a claimed delivery back unattempted (pending, due, no attempt
    /// counted) with the reason it waits, shown by `events list`: its
    /// destination's circuit breaker refused to send its request.
    async fn hold(&self, key: DeliveryKey, reason: String) -> Result<(), StoreError>;

    /// Records an attempt and where its delivery goes next.
    async fn finish(
        &self,
        key: DeliveryKey,
        attempt: AttemptRecord,
        next: Next,
    ) -> Result<(), StoreError>;

    /// The earliest retry time after `now_ms`, if a delivery waits for one.
    async fn next_retry_ms(&self, now_ms: i64) -> Result<Option<i64>, StoreError>;

    /// A committed write: the store can take webhooks now.
    async fn ping(&self) -> Result<(), StoreError>;

    // -- views --

    /// Open deliveries and the oldest one's receive time.
    async fn backlog(&self) -> Result<Backlog, StoreError>;

    /// Open deliveries per route.
    async fn open_by_route(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Everything known of one webhook, by receipt ID; `with_body` adds the
    /// event as received and its headers.
    async fn record(
        &self,
        receipt_id: &str,
        with_body: bool,
    ) -> Result<Option<EventRecord>, StoreError>;

    /// Receipt IDs of the webhooks that carried a Superna event ID, oldest
    /// first.
    async fn receipts_for_event_id(&self, event_id: &str) -> Result<Vec<String>, StoreError>;

    /// Deliveries, newest first (`offset` skipped, at most `limit`).
    async fn list(&self, filter: ListFilter) -> Result<Vec<ListRow>, StoreError>;

    /// How many deliveries `list` would return without a limit or offset.
    async fn count(&self, filter: ListFilter) -> Result<u64, StoreError>;

    /// Deliveries per route and state, with each group's oldest receive
    /// time (the console's overview).
    async fn route_counts(&self) -> Result<Vec<RouteCount>, StoreError>;

    /// Attempts that ended at or after `since_ms`, oldest first, at most
    /// `limit` (the newest kept): the overview's rates and latencies.
    async fn attempts_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttemptPoint>, StoreError>;

    // -- operators' commands --

    /// Failed deliveries back to pending, their retry horizon restarting
    /// now (`horizon_ms` long).  Returns (receipt ID, route) of each.
    async fn retry_failed(
        &self,
        selection: RetrySelection,
        horizon_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Deletes webhooks received before `before_ms` whose every delivery
    /// was delivered before then (or that no route took).  Failed and open
    /// deliveries are never purged.  Returns how many webhooks.
    async fn purge_delivered_before(&self, before_ms: i64) -> Result<usize, StoreError>;

    /// Makes one webhook's deliveries (one route's, with `route`) due now
    /// whatever their state (pending, failed, or delivered: run again from
    /// scratch), their retry horizon restarting now (`horizon_ms` long).
    /// In-flight deliveries are left alone.  Returns the routes re-queued.
    async fn requeue(
        &self,
        receipt_id: &str,
        route: Option<&str>,
        horizon_ms: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// Closes one pending or failed delivery without delivering it: it
    /// counts as done (`delivered`) with `reason` recorded.  Returns
    /// whether a delivery changed.
    async fn skip(&self, receipt_id: &str, route: &str, reason: &str) -> Result<bool, StoreError>;

    /// Pauses or resumes a route: a paused route's deliveries wait, none is
    /// dropped, and the pause is stored (it outlives a restart and, on a
    /// shared store, holds for every node).
    async fn set_paused(&self, route: &str, paused: bool) -> Result<(), StoreError>;

    /// The paused routes, by name.
    async fn paused_routes(&self) -> Result<Vec<String>, StoreError>;

    // -- transform state --

    /// The transforms' durable key/value state.
    fn transform_state(&self) -> Arc<dyn TransformState>;

    /// Why the store can no longer keep what it commits (its files were
    /// deleted or replaced under it), once that has been seen; `None`
    /// while it is sound.  Webhooks are refused and `/readyz` is 503 from
    /// then on.
    fn lost(&self) -> Option<String> {
        None
    }

    // -- several nodes (defaults: a store one process owns) --

    /// Called once when the service stops, after the running attempts
    /// ended or the drain timed out: gives back what this node claimed
    /// and did not finish, so other nodes take it at once.
    async fn stop(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Notified when work may have become due through another process (a
    /// shared store: another node's admit, claims taken over): the
    /// scheduler looks at once instead of at its next tick.
    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Cluster-wide gauges, when the store is shared (`None`: one process
    /// owns it, and its own metrics say everything).
    async fn cluster(&self) -> Result<Option<ClusterView>, StoreError> {
        Ok(None)
    }
}
