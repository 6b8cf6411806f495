//! The routes that run now: a set replaced whole on reload.  An attempt
//! holds its `Arc<Route>`, so it finishes on the version it started with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::flow::Route;
use crate::store::RateLimit;

/// One version of the configured routes.
pub struct RouteSet {
    /// By name, for attempts.
    by_name: BTreeMap<String, Arc<Route>>,
    /// In configuration order (filters are tried in it).
    order: Vec<Arc<Route>>,
    /// Their rate limits, installed in the store with the set.
    limits: Vec<(String, RateLimit)>,
    /// Each route's bulkhead: most of its deliveries running at once.
    max_in_flight: BTreeMap<String, usize>,
}

impl RouteSet {
    /// `limits`: (route, limit) of the routes that have one; `caps`: each
    /// route's `max_in_flight` ([`super::bulkhead::caps`]; a route not
    /// listed is bounded by the slots alone).
    pub(crate) fn new(
        routes: Vec<Arc<Route>>,
        limits: Vec<(String, RateLimit)>,
        caps: BTreeMap<String, usize>,
    ) -> RouteSet {
        RouteSet {
            max_in_flight: caps,
            by_name: routes
                .iter()
                .map(|r| (r.name.to_string(), r.clone()))
                .collect(),
            order: routes,
            limits,
        }
    }

    /// The routes, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.order.iter()
    }

    /// The route called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name)
    }

    /// The names of the routes whose filter takes `event`, in order.
    pub(crate) fn taking(&self, event: &zt_event::Event) -> Vec<String> {
        self.order
            .iter()
            .filter(|r| r.filter.accepts(event))
            .map(|r| r.name.to_string())
            .collect()
    }

    /// The rate limits of this set.
    pub(crate) fn limits(&self) -> Vec<(String, RateLimit)> {
        self.limits.clone()
    }

    /// Most deliveries of `route` running at once (`None`: the slots
    /// alone bound it).
    pub(crate) fn max_in_flight(&self, route: &str) -> Option<usize> {
        self.max_in_flight.get(route).copied()
    }
}

/// The current [`RouteSet`], swappable while attempts run.
pub(super) struct RouteTable {
    /// The set new events and attempts use.
    current: RwLock<Arc<RouteSet>>,
    /// Set by `replace`: the scheduler re-reads which stored deliveries
    /// belong to no configured route.
    changed: AtomicBool,
}

impl RouteTable {
    pub(super) fn new(set: RouteSet) -> RouteTable {
        RouteTable {
            current: RwLock::new(Arc::new(set)),
            changed: AtomicBool::new(true),
        }
    }

    /// The set that runs now.
    pub(super) fn current(&self) -> Arc<RouteSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the set (reload).
    pub(super) fn replace(&self, set: RouteSet) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.changed.store(true, Ordering::Relaxed);
    }

    /// Whether the set changed since the last call.
    pub(super) fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }
}
