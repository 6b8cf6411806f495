//! Per-route key/value state that transforms keep between flows (e.g.
//! Superna event ID -> Jitbit ticket ID).
//!
//! The server keeps it in SQLite (`<data_dir>/state.sqlite3`, WAL, fsync on
//! commit); the offline dry run keeps it in memory.  SQLite rather than a
//! pure-Rust store because operators' CLI commands must read the data while
//! the service runs (SQLite allows readers in other processes; redb and sled
//! hold an exclusive lock).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

/// Largest key and value a transform may store.
pub const MAX_KEY_BYTES: usize = 512;
pub const MAX_VALUE_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("state store: {0}")]
    Io(#[from] std::io::Error),
}

/// Where state lives.  `apply` commits a batch atomically.
pub trait StateStore: Send + Sync {
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

/// SQLite-backed state.
pub struct SqliteState {
    /// One connection; state calls are short and rare (a few per flow).
    conn: Mutex<Connection>,
}

impl SqliteState {
    /// Opens (creating) `dir/state.sqlite3`.
    pub fn open(dir: &Path) -> Result<SqliteState, StateError> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("state.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS route_state (
                route TEXT NOT NULL,
                key   TEXT NOT NULL,
                value TEXT NOT NULL,
                updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
                PRIMARY KEY (route, key)
            ) WITHOUT ROWID;",
        )?;
        Ok(SqliteState {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateStore for SqliteState {
    fn get(&self, route: &str, key: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM route_state WHERE route = ?1 AND key = ?2",
                [route, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn apply(
        &self,
        route: &str,
        writes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (key, value) in writes {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO route_state (route, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (route, key) DO UPDATE SET value = excluded.value,
                       updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
                    [route, key, v],
                )?,
                None => tx.execute(
                    "DELETE FROM route_state WHERE route = ?1 AND key = ?2",
                    [route, key],
                )?,
            };
        }
        tx.commit()?;
        Ok(())
    }

    fn dump(&self, route: &str) -> Result<BTreeMap<String, String>, StateError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT key, value FROM route_state WHERE route = ?1 ORDER BY key")?;
        let rows = stmt.query_map([route], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
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

impl StateStore for MemoryState {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_state_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("ztbridge-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = SqliteState::open(&dir).unwrap();
            let mut w = BTreeMap::new();
            w.insert("ticket:RSW-1".to_string(), Some("42".to_string()));
            w.insert("gone".to_string(), Some("x".to_string()));
            s.apply("jitbit", &w).unwrap();
            let mut d = BTreeMap::new();
            d.insert("gone".to_string(), None);
            s.apply("jitbit", &d).unwrap();
        }
        let s = SqliteState::open(&dir).unwrap();
        assert_eq!(
            s.get("jitbit", "ticket:RSW-1").unwrap().as_deref(),
            Some("42")
        );
        assert_eq!(s.get("jitbit", "gone").unwrap(), None);
        assert_eq!(s.get("pagerduty", "ticket:RSW-1").unwrap(), None);
        assert_eq!(s.dump("jitbit").unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
