//! Bulkheads: each route runs at most `max_in_flight` deliveries at once,
//! so a route whose destination hangs holds only its share of the sandbox
//! slots while the other routes keep delivering with theirs.
//!
//! The caps are decided here from the configuration; the scheduler counts
//! what runs ([`Bulkheads`]) and asks the store for at most each route's
//! free room ([`crate::store::ClaimScope`]): a route at its cap is passed
//! over for other routes' work, never claimed and given back.  On a shared
//! store the caps hold per node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::config::RouteConfig;
use crate::ops::Metrics;

/// The cap of every route in `routes`: its own `max_in_flight`, else
/// `default` (`delivery.route_max_in_flight`), else an equal share of the
/// `slots`: `slots / routes`, rounded down, at least 1.
pub(crate) fn caps<'a>(
    routes: impl IntoIterator<Item = &'a RouteConfig>,
    default: Option<u32>,
    slots: u32,
) -> BTreeMap<String, usize> {
    let routes: Vec<&RouteConfig> = routes.into_iter().collect();
    let share = default
        .unwrap_or_else(|| (slots / (routes.len().max(1) as u32)).max(1))
        .max(1);
    routes
        .into_iter()
        .map(|r| {
            (
                r.name.clone(),
                r.max_in_flight.unwrap_or(share).max(1) as usize,
            )
        })
        .collect()
}

/// What each route runs now.
pub(super) struct Bulkheads {
    /// Attempts running, by route (absent: none).
    running: Mutex<HashMap<String, usize>>,
    /// `route_in_flight`, kept with the counts.
    metrics: Arc<Metrics>,
}

/// One running attempt's place in its route's bulkhead, given back when
/// dropped (the attempt ended, or its claim was given back).
pub(super) struct Seat {
    /// Whose count to decrement.
    bulkheads: Arc<Bulkheads>,
    /// The route it counts against.
    route: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut running = self.bulkheads.lock();
        let left = match running.get_mut(&self.route) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            running.remove(&self.route);
        }
        self.bulkheads
            .metrics
            .route_in_flight
            .with_label_values(&[&self.route])
            .set(left as i64);
    }
}

impl Bulkheads {
    pub(super) fn new(metrics: Arc<Metrics>) -> Bulkheads {
        Bulkheads {
            running: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attempts of `route` running now.
    pub(super) fn running(&self, route: &str) -> usize {
        self.lock().get(route).copied().unwrap_or(0)
    }

    /// Counts an attempt of `route` until the seat is dropped.
    pub(super) fn enter(self: &Arc<Self>, route: &str) -> Seat {
        let now = {
            let mut running = self.lock();
            let n = running.entry(route.to_string()).or_default();
            *n += 1;
            *n
        };
        self.metrics
            .route_in_flight
            .with_label_values(&[route])
            .set(now as i64);
        Seat {
            bulkheads: self.clone(),
            route: route.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(text: &str) -> RouteConfig {
        toml::from_str(&format!("transform = 'builtin:pagerduty'\n{text}")).unwrap()
    }

    #[test]
    fn an_equal_share_unless_set() {
        let routes = [
            route("name = 'a'"),
            route("name = 'b'"),
            route("name = 'c'\nmax_in_flight = 2"),
        ];
        let got = caps(&routes, None, 64);
        assert_eq!(got["a"], 21);
        assert_eq!(got["b"], 21);
        assert_eq!(got["c"], 2);
        // More routes than slots: one each.
        let many: Vec<RouteConfig> = (0..10).map(|i| route(&format!("name = 'r{i}'"))).collect();
        assert!(caps(&many, None, 4).values().all(|n| *n == 1));
        // One route: every slot.
        assert_eq!(caps(&routes[..1], None, 64)["a"], 64);
        // The [delivery] default.
        assert_eq!(caps(&routes, Some(5), 64)["a"], 5);
        assert_eq!(caps(&routes, Some(5), 64)["c"], 2);
    }

    #[test]
    fn seats_count_and_give_back() {
        let b = Arc::new(Bulkheads::new(Arc::new(Metrics::new())));
        let one = b.enter("a");
        let two = b.enter("a");
        let other = b.enter("b");
        assert_eq!(b.running("a"), 2);
        drop(one);
        assert_eq!(b.running("a"), 1);
        drop(two);
        drop(other);
        assert_eq!(b.running("a"), 0);
        assert_eq!(b.running("b"), 0);
    }
}
