//! Circuit breakers, one per destination (`scheme://host:port`, shared by
//! every route that sends there).
//!
//! Where it applies: at the request.  The transform decides each request's
//! URL, so a delivery learns its destination only when its flow asks to
//! send; the attempt hands the flow a [`Guarded`] transport that asks the
//! breaker first.  A request to an open destination is not sent: it fails
//! at once with [`TransportFailure::BreakerOpen`], and the attempt, seeing
//! that, gives the delivery back as *held* (pending, no attempt counted,
//! the reason recorded) instead of recording an attempt.  The scheduler
//! then stops claiming that route's deliveries ([`Breakers::route_hold`])
//! until the destination's next probe is due, when it lets one through:
//! no sandbox runs and no store write is spent on a destination known to
//! be down.
//!
//! The states:
//!
//! * closed: requests go; `threshold` consecutive failures (no connection,
//!   timeout, DNS, TLS, 5xx, 429) open it;
//! * open: requests are held; once the probe wait has passed (starting at
//!   `initial_backoff_ms`, doubling after each failed probe, at most
//!   `breaker_max_probe_ms` and `max_backoff_ms`), the next request is
//!   the probe: half-open;
//! * half-open: one probe is out, other requests are held; its success
//!   closes the breaker (and the held deliveries are claimable at once),
//!   its failure opens it again with a longer wait.
//!
//! Any answer that is not a failure (2xx, 4xx but 429) counts as the
//! destination being up.  The host's own refusals (egress, too large)
//! count as nothing.  State is per process: on a shared store each node
//! has its own breakers and probes on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::egress::{Destination, Sent, Transport, TransportError, TransportFailure};
use crate::ops::Metrics;
use crate::sandbox::bindings::types::HttpRequest;
use crate::time::now_millis;

/// Most destinations tracked at once (only failing ones are): a transform
/// allowed a wildcard cannot grow the table without bound.  Beyond it, a
/// new destination is simply not guarded.
const MAX_TRACKED: usize = 4096;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Requests go.
    Closed,
    /// Requests are held until the probe at this time (ms since the epoch).
    Open { probe_at_ms: i64 },
    /// One probe is out; the rest is held.
    HalfOpen,
}

impl State {
    /// The `breaker_state` gauge value and the transition label.
    fn gauge(self) -> (i64, &'static str) {
        match self {
            State::Closed => (0, "closed"),
            State::Open { .. } => (1, "open"),
            State::HalfOpen => (2, "half_open"),
        }
    }
}

/// One destination's breaker.
#[derive(Debug, Clone, Copy)]
struct Breaker {
    /// Failures in a row, across routes.
    failures: u32,
    /// Probes that failed in a row since it opened: the probe wait doubles
    /// with each.
    failed_probes: u32,
    /// Where it stands.
    state: State,
}

/// Whether a request may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Permit {
    /// Send it; `probe`: it is the one probe of an open breaker.
    Send { probe: bool },
    /// Hold it: the destination is down; a probe may go at this time.
    Hold { probe_at_ms: i64 },
}

/// What an answer says of its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It answered (2xx, 3xx, 4xx but 429).
    Up,
    /// No connection, timeout, DNS, TLS, 5xx, 429.
    Down,
    /// Nothing learnt (the host refused to send, the response was too
    /// large, a dry run).
    Unknown,
}

/// What an answer says of its destination.
pub(super) fn verdict(sent: &Option<Sent>) -> Verdict {
    match sent {
        Some(Ok(resp)) if resp.status == 429 || resp.status >= 500 => Verdict::Down,
        Some(Ok(_)) => Verdict::Up,
        Some(Err(e)) => match e.kind {
            TransportFailure::Dns
            | TransportFailure::Connect
            | TransportFailure::Tls
            | TransportFailure::Timeout
            | TransportFailure::Other => Verdict::Down,
            TransportFailure::TooLarge
            | TransportFailure::EgressDenied
            | TransportFailure::BreakerOpen => Verdict::Unknown,
        },
        None => Verdict::Unknown,
    }
}

/// What the scheduler does with a route whose deliveries were held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RouteHold {
    /// Not held (any more): claim as usual.
    Free,
    /// A probe is due: one delivery may go (when none of the route runs).
    Probe,
    /// Claim nothing before this time (ms since the epoch).
    Until(i64),
}

/// The breakers of every destination, and the routes held by them.
pub(super) struct Breakers {
    /// Consecutive failures that open a breaker; 0: breakers are off.
    threshold: u32,
    /// The first probe wait (ms): `delivery.initial_backoff_ms`.
    first_probe_ms: u64,
    /// The longest probe wait (ms): `delivery.breaker_max_probe_ms`.
    max_probe_ms: u64,
    /// Destinations that failed lately, by `scheme://host:port`; one that
    /// answers is dropped (closed with no failures is the default).
    table: Mutex<HashMap<String, Breaker>>,
    /// Routes whose deliveries were held, with the destinations that held
    /// them: the scheduler claims from them only when a probe is due.
    held_routes: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// `breaker_state` and `breaker_transitions_total`.
    metrics: Arc<Metrics>,
}

impl Breakers {
    pub(super) fn new(policy: &crate::config::DeliveryPolicy, metrics: Arc<Metrics>) -> Breakers {
        Breakers {
            threshold: policy.breaker_failures,
            first_probe_ms: policy.initial_backoff_ms.max(1),
            // A probe never waits longer than a retry would.
            max_probe_ms: policy
                .breaker_max_probe_ms
                .min(policy.max_backoff_ms)
                .max(1),
            table: Mutex::new(HashMap::new()),
            held_routes: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Breaker>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        self.held_routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Breakers are on (`delivery.breaker_failures` > 0).
    pub(super) fn enabled(&self) -> bool {
        self.threshold > 0
    }

    /// How many consecutive failures open a breaker.
    pub(super) fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The wait before the next probe after `failed_probes` failed ones.
    fn probe_wait_ms(&self, failed_probes: u32) -> i64 {
        let wait = self
            .first_probe_ms
            .saturating_mul(1u64 << failed_probes.min(30))
            .min(self.max_probe_ms);
        wait.min(i64::MAX as u64) as i64
    }

    /// Records a state change (metrics, one log line).
    fn moved(&self, destination: &str, from: State, to: State) {
        let (from_gauge, _) = from.gauge();
        let (gauge, label) = to.gauge();
        if from_gauge == gauge {
            return;
        }
        self.metrics
            .breaker_state
            .with_label_values(&[destination])
            .set(gauge);
        self.metrics
            .breaker_transitions
            .with_label_values(&[destination, label])
            .inc();
        match to {
            State::Open { probe_at_ms } if matches!(from, State::Closed) => tracing::warn!(
                destination,
                failures = self.threshold,
                next_probe_in_ms = probe_at_ms.saturating_sub(now_millis()),
                "destination failing: circuit breaker open, its deliveries are held and one probe goes at the back-off rate"
            ),
            State::Closed => tracing::info!(
                destination,
                "destination answers again: circuit breaker closed, held deliveries go now"
            ),
            _ => tracing::debug!(destination, state = label, "circuit breaker"),
        }
    }

    /// Whether a request to `destination` may go now.
    pub(super) fn permit(&self, destination: &str, now_ms: i64) -> Permit {
        if !self.enabled() {
            return Permit::Send { probe: false };
        }
        let mut table = self.table();
        let Some(b) = table.get_mut(destination) else {
            return Permit::Send { probe: false };
        };
        match b.state {
            State::Closed => Permit::Send { probe: false },
            State::Open { probe_at_ms } if now_ms >= probe_at_ms => {
                let from = b.state;
                b.state = State::HalfOpen;
                drop(table);
                self.moved(destination, from, State::HalfOpen);
                Permit::Send { probe: true }
            }
            State::Open { probe_at_ms } => Permit::Hold { probe_at_ms },
            State::HalfOpen => Permit::Hold {
                probe_at_ms: now_ms.saturating_add(self.probe_wait_ms(b.failed_probes)),
            },
        }
    }

    /// What a request to `destination` learnt; `probe`: it was the probe.
    pub(super) fn record(&self, destination: &str, verdict: Verdict, probe: bool, now_ms: i64) {
        if !self.enabled() {
            return;
        }
        let mut table = self.table();
        let (from, to) = match verdict {
            Verdict::Up => match table.remove(destination) {
                Some(b) => (b.state, State::Closed),
                None => return,
            },
            Verdict::Down => {
                if !table.contains_key(destination) && table.len() >= MAX_TRACKED {
                    return;
                }
                let b = table.entry(destination.to_string()).or_insert(Breaker {
                    failures: 0,
                    failed_probes: 0,
                    state: State::Closed,
                });
                b.failures = b.failures.saturating_add(1);
                let from = b.state;
                match b.state {
                    State::HalfOpen if probe => {
                        b.failed_probes = b.failed_probes.saturating_add(1);
                        b.state = State::Open {
                            probe_at_ms: now_ms.saturating_add(self.probe_wait_ms(b.failed_probes)),
                        };
                    }
                    State::Closed if b.failures >= self.threshold => {
                        b.failed_probes = 0;
                        b.state = State::Open {
                            probe_at_ms: now_ms.saturating_add(self.probe_wait_ms(0)),
                        };
                    }
                    // A request sent before it opened: nothing more to learn.
                    _ => {}
                }
                (from, b.state)
            }
            Verdict::Unknown => {
                // A probe that taught nothing: open again, same wait.
                match table.get_mut(destination) {
                    Some(b) if probe && b.state == State::HalfOpen => {
                        b.state = State::Open {
                            probe_at_ms: now_ms.saturating_add(self.probe_wait_ms(b.failed_probes)),
                        };
                        (State::HalfOpen, b.state)
                    }
                    _ => return,
                }
            }
        };
        drop(table);
        self.moved(destination, from, to);
    }

    /// Where `destination`'s breaker stands.
    pub(super) fn state(&self, destination: &str) -> State {
        self.table()
            .get(destination)
            .map_or(State::Closed, |b| b.state)
    }

    /// `route`'s deliveries were held by these destinations' breakers.
    pub(super) fn hold_route(&self, route: &str, destinations: impl IntoIterator<Item = String>) {
        self.held()
            .entry(route.to_string())
            .or_default()
            .extend(destinations);
    }

    /// An attempt of `route` ended without its flow asking any of the
    /// destinations that hold the route (`asked`: those it did ask): the
    /// route no longer goes there (a reload, a per-event URL), so it is
    /// not held by them any more.
    pub(super) fn settle_route(&self, route: &str, asked: &BTreeSet<String>) {
        let mut held = self.held();
        // A flow that asked nothing (it failed first) teaches nothing.
        if !asked.is_empty()
            && held
                .get(route)
                .is_some_and(|dests| dests.is_disjoint(asked))
        {
            held.remove(route);
        }
    }

    /// What the scheduler may claim from `route` now.  A route is held
    /// while one of the destinations that held it is not closed; a probe
    /// is due when one of them is open past its probe time.
    pub(super) fn route_hold(&self, route: &str, now_ms: i64) -> RouteHold {
        let mut held = self.held();
        let Some(dests) = held.get_mut(route) else {
            return RouteHold::Free;
        };
        let mut until: Option<i64> = None;
        let mut probe = false;
        dests.retain(|d| match self.state(d) {
            State::Closed => false,
            State::Open { probe_at_ms } if probe_at_ms <= now_ms => {
                probe = true;
                true
            }
            State::Open { probe_at_ms } => {
                until = Some(until.map_or(probe_at_ms, |u| u.min(probe_at_ms)));
                true
            }
            State::HalfOpen => {
                // The probe's attempt wakes the scheduler when it ends.
                let recheck = now_ms.saturating_add(1000);
                until = Some(until.map_or(recheck, |u| u.min(recheck)));
                true
            }
        });
        if dests.is_empty() {
            held.remove(route);
            return RouteHold::Free;
        }
        match (probe, until) {
            (true, _) => RouteHold::Probe,
            (false, Some(t)) => RouteHold::Until(t),
            (false, None) => RouteHold::Free,
        }
    }
}

/// A transport whose requests ask their destination's breaker first.
/// One per attempt: it remembers which destinations held a request.
pub(super) struct Guarded<'a, T> {
    /// Performs the requests that may go.
    inner: &'a T,
    /// The breakers asked.
    breakers: &'a Breakers,
    /// Destinations whose breaker held a request of this flow.
    held: Mutex<BTreeSet<String>>,
    /// Every destination this flow asked to send to (held or not).
    asked: Mutex<BTreeSet<String>>,
}

impl<'a, T: Transport> Guarded<'a, T> {
    pub(super) fn new(inner: &'a T, breakers: &'a Breakers) -> Guarded<'a, T> {
        Guarded {
            inner,
            breakers,
            held: Mutex::new(BTreeSet::new()),
            asked: Mutex::new(BTreeSet::new()),
        }
    }

    /// The destinations whose breaker held a request of this flow, and
    /// every destination it asked to send to.
    pub(super) fn into_sets(self) -> (BTreeSet<String>, BTreeSet<String>) {
        (
            self.held.into_inner().unwrap_or_else(|p| p.into_inner()),
            self.asked.into_inner().unwrap_or_else(|p| p.into_inner()),
        )
    }
}

/// Reports a probe that never finished (its flow was dropped) as having
/// taught nothing, so the breaker does not stay half-open.
struct ProbeGuard<'a> {
    /// The breakers.
    breakers: &'a Breakers,
    /// Whose probe.
    destination: &'a str,
    /// Still out: nothing was recorded yet.
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breakers
                .record(self.destination, Verdict::Unknown, true, now_millis());
        }
    }
}

impl<T: Transport> Transport for Guarded<'_, T> {
    async fn send(&self, req: &HttpRequest, to: &Destination) -> Option<Sent> {
        if !self.breakers.enabled() {
            return self.inner.send(req, to).await;
        }
        let destination = to.origin();
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(destination.clone());
        match self.breakers.permit(&destination, now_millis()) {
            Permit::Hold { probe_at_ms } => {
                self.held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(destination.clone());
                Some(Err(TransportError::new(
                    TransportFailure::BreakerOpen,
                    format!(
                        "not sent: destination breaker open for {destination} (it failed {} times in a row); the delivery is held, not attempted, until a probe gets through (next probe in {} ms)",
                        self.breakers.threshold(),
                        probe_at_ms.saturating_sub(now_millis()).max(0)
                    ),
                )))
            }
            Permit::Send { probe } => {
                let mut guard = ProbeGuard {
                    breakers: self.breakers,
                    destination: &destination,
                    armed: probe,
                };
                let sent = self.inner.send(req, to).await;
                guard.armed = false;
                self.breakers
                    .record(&destination, verdict(&sent), probe, now_millis());
                sent
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(threshold: u32) -> Breakers {
        let policy = crate::config::DeliveryPolicy {
            breaker_failures: threshold,
            initial_backoff_ms: 1_000,
            breaker_max_probe_ms: 4_000,
            max_backoff_ms: 60_000,
            ..Default::default()
        };
        Breakers::new(&policy, Arc::new(Metrics::new()))
    }

    const D: &str = "https://down.example:443";

    #[test]
    fn opens_after_k_failures_probes_at_the_backoff_rate_and_closes_on_success() {
        let b = breakers(3);
        let t = 1_000_000;
        for _ in 0..2 {
            assert_eq!(b.permit(D, t), Permit::Send { probe: false });
            b.record(D, Verdict::Down, false, t);
        }
        assert_eq!(b.state(D), State::Closed);
        b.record(D, Verdict::Down, false, t);
        assert_eq!(
            b.state(D),
            State::Open {
                probe_at_ms: t + 1_000
            }
        );
        assert_eq!(
            b.permit(D, t + 999),
            Permit::Hold {
                probe_at_ms: t + 1_000
            }
        );
        // The probe; the others are held while it is out.
        assert_eq!(b.permit(D, t + 1_000), Permit::Send { probe: true });
        assert!(matches!(b.permit(D, t + 1_001), Permit::Hold { .. }));
        // It fails: the wait doubles, up to the cap.
        b.record(D, Verdict::Down, true, t + 1_100);
        assert_eq!(
            b.state(D),
            State::Open {
                probe_at_ms: t + 3_100
            }
        );
        assert_eq!(b.permit(D, t + 3_100), Permit::Send { probe: true });
        b.record(D, Verdict::Down, true, t + 3_100);
        assert_eq!(
            b.state(D),
            State::Open {
                probe_at_ms: t + 7_100
            }
        );
        assert_eq!(b.permit(D, t + 7_100), Permit::Send { probe: true });
        b.record(D, Verdict::Down, true, t + 7_100);
        assert_eq!(
            b.state(D),
            State::Open {
                probe_at_ms: t + 11_100
            }
        );
        // A success closes it.
        assert_eq!(b.permit(D, t + 11_100), Permit::Send { probe: true });
        b.record(D, Verdict::Up, true, t + 11_200);
        assert_eq!(b.state(D), State::Closed);
        assert_eq!(b.permit(D, t + 11_201), Permit::Send { probe: false });
    }

    #[test]
    fn a_success_resets_the_count_and_other_destinations_are_apart() {
        let b = breakers(2);
        b.record(D, Verdict::Down, false, 0);
        b.record(D, Verdict::Up, false, 0);
        b.record(D, Verdict::Down, false, 0);
        assert_eq!(b.state(D), State::Closed);
        b.record(D, Verdict::Down, false, 0);
        assert!(matches!(b.state(D), State::Open { .. }));
        assert_eq!(
            b.permit("https://up.example:443", 1),
            Permit::Send { probe: false }
        );
    }

    #[test]
    fn a_probe_that_taught_nothing_opens_again_without_growing() {
        let b = breakers(1);
        b.record(D, Verdict::Down, false, 0);
        assert_eq!(b.permit(D, 1_000), Permit::Send { probe: true });
        b.record(D, Verdict::Unknown, true, 1_000);
        assert_eq!(b.state(D), State::Open { probe_at_ms: 2_000 });
    }

    #[test]
    fn held_routes_wait_for_the_probe_and_go_once_closed() {
        let b = breakers(1);
        b.record(D, Verdict::Down, false, 0);
        b.hold_route("r", [D.to_string()]);
        assert_eq!(b.route_hold("r", 10), RouteHold::Until(1_000));
        assert_eq!(b.route_hold("other", 10), RouteHold::Free);
        assert_eq!(b.route_hold("r", 1_000), RouteHold::Probe);
        assert_eq!(b.permit(D, 1_000), Permit::Send { probe: true });
        assert!(matches!(b.route_hold("r", 1_001), RouteHold::Until(_)));
        b.record(D, Verdict::Up, true, 1_002);
        assert_eq!(b.route_hold("r", 1_003), RouteHold::Free);
    }

    #[test]
    fn a_route_that_no_longer_asks_its_destination_is_let_go() {
        let b = breakers(1);
        b.record(D, Verdict::Down, false, 0);
        b.hold_route("r", [D.to_string()]);
        b.settle_route("r", &BTreeSet::from([D.to_string()]));
        assert_eq!(b.route_hold("r", 10), RouteHold::Until(1_000));
        b.settle_route("r", &BTreeSet::from(["https://elsewhere:443".to_string()]));
        assert_eq!(b.route_hold("r", 10), RouteHold::Free);
    }

    #[test]
    fn off_when_the_threshold_is_zero() {
        let b = breakers(0);
        for _ in 0..100 {
            b.record(D, Verdict::Down, false, 0);
        }
        assert_eq!(b.permit(D, 0), Permit::Send { probe: false });
    }
}
