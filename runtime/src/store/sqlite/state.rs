//! Transform state in SQLite: `<data_dir>/state.sqlite3` (WAL, fsync on
//! commit), one row per (route, key).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

use crate::store::{StateError, TransformState};

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> StateError {
        StateError::backend("sqlite", e)
    }
}

impl From<std::io::Error> for StateError {
    fn from(e: std::io::Error) -> StateError {
        StateError::backend("data directory", e)
    }
}

/// SQLite-backed state.
pub(crate) struct SqliteState {
    /// One connection; state calls are short and rare (a few per flow).
    conn: Mutex<Connection>,
}

impl SqliteState {
    /// Opens (creating) `dir/state.sqlite3`.
    pub(crate) fn open(dir: &Path) -> Result<SqliteState, StateError> {
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

impl TransformState for SqliteState {
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
