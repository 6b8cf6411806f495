//! Per-route key/value state that transforms keep between flows (e.g.
//! Superna event ID -> Jitbit ticket ID): the interface the sandbox's
//! `state-get`/`state-set` imports use, and an in-memory implementation
//! for dry runs.  Each store backend provides a durable one.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Largest key and value a transform may store.
pub const MAX_KEY_BYTES: usize = 512;
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// Why a state read or write failed.
#[derive(Debug, thiserror::Error)]
#[error("transform state: {message}")]
pub struct StateError {
    /// What was being done.
    pub(crate) message: String,
    /// The backend's error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StateError {
    pub(crate) fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StateError {
        StateError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Where state lives.  `apply` commits a batch atomically.  Calls may
/// block: the flow makes them on tokio's blocking pool (a guest's
/// `state-get` too), or in place where no runtime runs.
pub trait TransformState: Send + Sync {
    fn get(&self, route: &str, key: &str) -> Result<Option<String>, StateError>;
    /// `None` deletes the key.
    fn apply(
        &self,
        route: &str,
        writes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), StateError>;
    /// All keys of a route (for the dry run and diagnostics).
    fn dump(&self, route: &str) -> Result<BTreeMap<String, String>, StateError>;
}

/// In-memory state (dry runs, tests).
#[derive(Default)]
pub struct MemoryState {
    /// (route, key) -> value.
    map: Mutex<BTreeMap<(String, String), String>>,
}

impl MemoryState {
    pub fn with(route: &str, initial: BTreeMap<String, String>) -> MemoryState {
        let map = initial
            .into_iter()
            .map(|(k, v)| ((route.to_string(), k), v))
            .collect();
        MemoryState {
            map: Mutex::new(map),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), String>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TransformState for MemoryState {
    fn get(&self, route: &str, key: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .map()
            .get(&(route.to_string(), key.to_string()))
            .cloned())
    }

    fn apply(
        &self,
        route: &str,
        writes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), StateError> {
        let mut map = self.map();
        for (k, v) in writes {
            let key = (route.to_string(), k.clone());
            match v {
                Some(v) => map.insert(key, v.clone()),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn dump(&self, route: &str) -> Result<BTreeMap<String, String>, StateError> {
        Ok(self
            .map()
            .iter()
            .filter(|((r, _), _)| r == route)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}
