//! The work queue in memory: on a single node the database is the journal
//! and this index is the queue, so a claim costs no query and no commit
//! wait (the in-flight mark is written behind it, in the writer's next
//! batch).
//!
//! The index is either *complete* (it holds every open delivery of the
//! database, with its body) or *off*; then claims run the SQL query as
//! before, and the index is rebuilt from the database once the backlog is
//! small again.  It goes off when it would pass [`MAX_ENTRIES`] or
//! [`MAX_BODY_BYTES`] (memory stays bounded whatever the backlog: the rest
//! waits on disk), when a commit fails, and when the database changed
//! behind the writer (another process's `events retry`, seen through
//! `PRAGMA data_version`) or under it (`retry_failed`, `recover`).
//!
//! What is running is known in both modes ([`Inner::busy`]): one (route,
//! order key) never has two attempts at once, whichever path claimed them.
//! All changes to the index are made on the writer thread after the
//! commit that made them true, except claims, which only take what is
//! committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::rate::RateLimiters;
use crate::store::{Claim, ClaimBatch, ClaimScope, ClaimTally, DeliveryKey, Next};

/// Most open deliveries the index holds (about 1 KB each besides the body).
pub(super) const MAX_ENTRIES: usize = 10_000;
/// Most body bytes the index holds.
pub(super) const MAX_BODY_BYTES: usize = 32 << 20;

/// (route, order key): deliveries of one alert to one route, which go one
/// at a time and in order.
type Chain = (Arc<str>, Arc<str>);

/// One open delivery, with what its claim hands out.
#[derive(Debug, Clone)]
pub(super) struct Open {
    /// The event's sequence number.
    pub(super) seq: i64,
    /// The route.
    pub(super) route: Arc<str>,
    /// The alert's order key.
    pub(super) order_key: Arc<str>,
    /// Attempts made so far.
    pub(super) attempts: u32,
    /// When it is due (ms since the epoch).
    pub(super) next_at_ms: i64,
    /// Give up retrying after this.
    pub(super) deadline_ms: i64,
    /// The webhook's receipt ID.
    pub(super) receipt_id: Arc<str>,
    /// When it was received.
    pub(super) received_ms: i64,
    /// Superna's event ID.
    pub(super) event_id: Option<Arc<str>>,
    /// The body as received, shared by the event's deliveries.
    pub(super) body: Arc<str>,
}

/// Where a chain's head waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Not placed: not the head, or its chain is busy.
    Nowhere,
    /// In `timers` under its due time.
    Timer(i64),
    /// In `ready`.
    Ready,
}

/// An indexed delivery.
#[derive(Debug)]
struct Entry {
    /// The delivery.
    open: Open,
    /// Where it waits, if it is its chain's claimable head.
    place: Place,
}

/// The queue, shared by the writer thread and the callers of `claim`.
pub(super) struct Queue {
    /// Everything, under one lock (held for microseconds).
    inner: Mutex<Inner>,
    /// Most deliveries indexed ([`MAX_ENTRIES`]; smaller in tests).
    max_entries: usize,
    /// Most body bytes indexed ([`MAX_BODY_BYTES`]).
    max_body_bytes: usize,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::with_caps(MAX_ENTRIES, MAX_BODY_BYTES)
    }
}

#[derive(Default)]
struct Inner {
    /// Whether the index holds every open delivery of the database.
    complete: bool,
    /// The indexed deliveries by (seq, route).
    entries: HashMap<(i64, Arc<str>), Entry>,
    /// Open deliveries per chain, by seq: the first is the head.
    chains: HashMap<Chain, BTreeSet<i64>>,
    /// Heads that are due, by route, by seq (oldest first).
    ready: BTreeMap<Arc<str>, BTreeSet<i64>>,
    /// Heads waiting for their time: (due, seq, route).
    timers: BTreeSet<(i64, i64, Arc<str>)>,
    /// Body bytes held (bounded by [`MAX_BODY_BYTES`]).
    body_bytes: usize,
    /// Chains with an attempt running -> its seq (kept in both modes,
    /// cleared once the attempt's record or release is committed).
    busy: HashMap<Chain, i64>,
    /// When the SQL path last counted the backlog for a rebuild (ms).
    checked_ms: i64,
}

impl Queue {
    /// A queue that holds at most `max_entries` deliveries and
    /// `max_body_bytes` of bodies.
    pub(super) fn with_caps(max_entries: usize, max_body_bytes: usize) -> Queue {
        Queue {
            inner: Mutex::default(),
            max_entries,
            max_body_bytes,
        }
    }

    /// The backlog at or under which an index that is off is rebuilt.
    pub(super) fn rebuild_at(&self) -> usize {
        self.max_entries / 2
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether claims are served from memory.
    #[cfg(test)]
    pub(super) fn is_complete(&self) -> bool {
        self.lock().complete
    }

    /// Turns the index off (the SQL path serves claims until a rebuild).
    pub(super) fn turn_off(&self) {
        self.lock().clear();
    }

    /// Replaces the index with `open` (every open delivery, read on the
    /// writer thread), unless it is too large.  Returns whether it is on.
    pub(super) fn rebuild(&self, open: Vec<Open>) -> bool {
        let mut q = self.lock();
        q.clear();
        let bytes: usize = open.iter().map(|o| o.body.len()).sum();
        if open.len() > self.max_entries || bytes > self.max_body_bytes {
            return false;
        }
        for o in open {
            q.insert(o);
        }
        let heads: Vec<Chain> = q.chains.keys().cloned().collect();
        for chain in heads {
            q.place_head(&chain);
        }
        q.complete = true;
        true
    }

    /// Committed admissions: indexed if the index is on and has room,
    /// else it goes off.
    pub(super) fn admitted(&self, open: Vec<Open>) {
        let mut q = self.lock();
        if !q.complete {
            return;
        }
        let bytes: usize = open.iter().map(|o| o.body.len()).sum();
        if q.entries.len() + open.len() > self.max_entries
            || q.body_bytes + bytes > self.max_body_bytes
        {
            q.clear();
            return;
        }
        for o in open {
            let chain: Chain = (o.route.clone(), o.order_key.clone());
            q.insert(o);
            q.place_head(&chain);
        }
    }

    /// Takes due heads from memory; `None` when the index is off.
    pub(super) fn claim(
        &self,
        now_ms: i64,
        max: usize,
        scope: &ClaimScope,
        rates: &RateLimiters,
    ) -> Option<ClaimBatch> {
        let mut q = self.lock();
        if !q.complete {
            return None;
        }
        let mut batch = ClaimBatch::default();
        // Retries whose time has come.
        while let Some(first) = q.timers.first().cloned() {
            if first.0 > now_ms {
                break;
            }
            q.timers.pop_first();
            let (_, seq, route) = first;
            q.ready.entry(route.clone()).or_default().insert(seq);
            if let Some(e) = q.entries.get_mut(&(seq, route)) {
                e.place = Place::Ready;
            }
        }
        let mut limited: Vec<Arc<str>> = Vec::new();
        let mut tally = ClaimTally::default();
        while batch.claims.len() < max {
            // The oldest due head among the routes still open to claims
            // (not rate-limited, not skipped, not at their bulkhead's cap).
            let pick = q
                .ready
                .iter()
                .filter(|(r, _)| !limited.contains(r) && tally.allows(scope, r))
                .filter_map(|(r, seqs)| seqs.first().map(|s| (*s, r.clone())))
                .min_by_key(|(s, _)| *s);
            let Some((seq, route)) = pick else { break };
            if let Err(wait) = rates.admit(&route) {
                batch.rate_wait = Some(batch.rate_wait.map_or(wait, |w: Duration| w.min(wait)));
                limited.push(route);
                continue;
            }
            q.unplace(seq, &route);
            let Some(e) = q.entries.get(&(seq, route.clone())) else {
                continue;
            };
            let o = &e.open;
            let chain = (route.clone(), o.order_key.clone());
            let claim = Claim {
                key: DeliveryKey {
                    event_seq: seq,
                    route: route.to_string(),
                },
                receipt_id: o.receipt_id.to_string(),
                received_ms: o.received_ms,
                event_id: o.event_id.as_deref().map(str::to_string),
                body: o.body.to_string(),
                attempt: o.attempts.saturating_add(1),
                deadline_ms: o.deadline_ms,
            };
            q.busy.insert(chain, seq);
            tally.take(&route);
            batch.claims.push(claim);
        }
        Some(batch)
    }

    /// Whether the SQL path should count the backlog for a rebuild now
    /// (at most once a second).
    pub(super) fn rebuild_check_due(&self, now_ms: i64) -> bool {
        let mut q = self.lock();
        if now_ms.saturating_sub(q.checked_ms) < 1000 && now_ms >= q.checked_ms {
            return false;
        }
        q.checked_ms = now_ms;
        true
    }

    /// Whether the chain has an attempt running (the SQL path asks).
    pub(super) fn is_busy(&self, route: &str, order_key: &str) -> bool {
        let chain: Chain = (Arc::from(route), Arc::from(order_key));
        self.lock().busy.contains_key(&chain)
    }

    /// A claim of the SQL path: its chain is busy until it is recorded.
    pub(super) fn take(&self, seq: i64, route: &str, order_key: &str) {
        let chain: Chain = (Arc::from(route), Arc::from(order_key));
        self.lock().busy.insert(chain, seq);
    }

    /// The earliest retry after `now_ms`; `None` (outer) when the index is
    /// off.
    pub(super) fn next_retry_ms(&self, now_ms: i64) -> Option<Option<i64>> {
        let q = self.lock();
        if !q.complete {
            return None;
        }
        Some(
            q.timers
                .iter()
                .map(|(at, _, _)| *at)
                .find(|at| *at > now_ms),
        )
    }

    /// A committed attempt record: the chain is free, and the delivery
    /// leaves the index or waits for its retry.
    pub(super) fn finished(&self, key: &DeliveryKey, next: &Next) {
        let mut q = self.lock();
        let route: Arc<str> = Arc::from(key.route.as_str());
        q.free(key.event_seq, &route);
        let Some(e) = q.entries.get_mut(&(key.event_seq, route.clone())) else {
            return;
        };
        let chain = (route.clone(), e.open.order_key.clone());
        match next {
            Next::Retry { at_ms } => {
                e.open.attempts = e.open.attempts.saturating_add(1);
                e.open.next_at_ms = *at_ms;
            }
            Next::Delivered | Next::Failed { .. } => q.remove(key.event_seq, &route),
        }
        q.place_head(&chain);
    }

    /// Committed releases: the chains are free, nothing counted.
    pub(super) fn released(&self, keys: &[DeliveryKey]) {
        let mut q = self.lock();
        for key in keys {
            let route: Arc<str> = Arc::from(key.route.as_str());
            q.free(key.event_seq, &route);
            if let Some(e) = q.entries.get(&(key.event_seq, route.clone())) {
                let chain = (route, e.open.order_key.clone());
                q.place_head(&chain);
            }
        }
    }
}

impl Inner {
    fn clear(&mut self) {
        self.complete = false;
        self.entries.clear();
        self.chains.clear();
        self.ready.clear();
        self.timers.clear();
        self.body_bytes = 0;
    }

    fn insert(&mut self, o: Open) {
        let key = (o.seq, o.route.clone());
        if self.entries.contains_key(&key) {
            return;
        }
        self.chains
            .entry((o.route.clone(), o.order_key.clone()))
            .or_default()
            .insert(o.seq);
        self.body_bytes += o.body.len();
        self.entries.insert(
            key,
            Entry {
                open: o,
                place: Place::Nowhere,
            },
        );
    }

    fn remove(&mut self, seq: i64, route: &Arc<str>) {
        self.unplace(seq, route);
        let Some(e) = self.entries.remove(&(seq, route.clone())) else {
            return;
        };
        self.body_bytes = self.body_bytes.saturating_sub(e.open.body.len());
        let chain = (route.clone(), e.open.order_key.clone());
        if let Some(seqs) = self.chains.get_mut(&chain) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.chains.remove(&chain);
            }
        }
    }

    /// Takes a delivery out of `ready` or `timers`.
    fn unplace(&mut self, seq: i64, route: &Arc<str>) {
        let Some(e) = self.entries.get_mut(&(seq, route.clone())) else {
            return;
        };
        match std::mem::replace(&mut e.place, Place::Nowhere) {
            Place::Nowhere => {}
            Place::Timer(at) => {
                self.timers.remove(&(at, seq, route.clone()));
            }
            Place::Ready => {
                if let Some(seqs) = self.ready.get_mut(route) {
                    seqs.remove(&seq);
                    if seqs.is_empty() {
                        self.ready.remove(route);
                    }
                }
            }
        }
    }

    /// Clears the chain's busy mark if `seq` holds it.
    fn free(&mut self, seq: i64, route: &Arc<str>) {
        let order_key = self
            .entries
            .get(&(seq, route.clone()))
            .map(|e| e.open.order_key.clone());
        match order_key {
            Some(k) => {
                let chain = (route.clone(), k);
                if self.busy.get(&chain) == Some(&seq) {
                    self.busy.remove(&chain);
                }
            }
            // Not indexed (claimed by the SQL path): find it by seq.
            None => self.busy.retain(|(r, _), s| !(*s == seq && r == route)),
        }
    }

    /// Puts the chain's head where claims find it, unless the chain is
    /// busy.
    fn place_head(&mut self, chain: &Chain) {
        if self.busy.contains_key(chain) {
            return;
        }
        let Some(seq) = self.chains.get(chain).and_then(|s| s.first().copied()) else {
            return;
        };
        let route = chain.0.clone();
        let Some(e) = self.entries.get_mut(&(seq, route.clone())) else {
            return;
        };
        if e.place != Place::Nowhere {
            return;
        }
        let at = e.open.next_at_ms;
        e.place = Place::Timer(at);
        self.timers.insert((at, seq, route));
    }
}
