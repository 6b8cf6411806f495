//! `ztbridge store copy`: moves an SQLite data directory's events (pending,
//! failed, delivered: every delivery with its attempts, as it stands) and
//! the transforms' state into a PostgreSQL store.  Idempotent: an event
//! whose receipt ID is there already, and a state key that exists, are
//! skipped; a target that holds anything is refused unless `force`.
//! Deliveries that were in flight arrive pending, their attempt counted.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::postgres::{Imported, PgStore};
use super::sqlite::SqliteStore;
use super::{Store, StoreError};

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// Events copied.
    pub events: usize,
    /// Events already in the target (skipped).
    pub skipped: usize,
    /// Transform-state entries copied.
    pub state: usize,
}

fn sqlite(e: rusqlite::Error) -> StoreError {
    StoreError::from(e)
}

/// Copies `dir`'s SQLite store into `to`.
pub async fn copy_sqlite_to_postgres(
    dir: &Path,
    to: &PgStore,
    force: bool,
) -> Result<CopyReport, StoreError> {
    let from = SqliteStore::open_existing(dir)?;
    if !force && !to.is_empty().await? {
        return Err(StoreError::Busy(format!(
            "{} already holds events or transform state: pass --force to add what is missing (events already there are skipped)",
            to.describe()
        )));
    }
    let events = dir.join("events.sqlite3");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut report = CopyReport::default();
    let mut after = 0i64;
    loop {
        // A page at a time, read and closed before the awaits.
        let page: Vec<(i64, String, Option<String>, String, String, String, String)> = {
            let c = Connection::open_with_flags(&events, flags).map_err(sqlite)?;
            let mut stmt = c
                .prepare(
                    "SELECT seq, receipt_id, event_id, order_key, body_hash, body, headers
                       FROM events WHERE seq > ?1 ORDER BY seq LIMIT 500",
                )
                .map_err(sqlite)?;
            let rows = stmt
                .query_map([after], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(sqlite)?;
            rows.collect::<Result<_, _>>().map_err(sqlite)?
        };
        let Some(last) = page.last() else {
            break;
        };
        after = last.0;
        for (_, receipt, event_id, order_key, hash, body, headers) in &page {
            let Some(record) = from.record(receipt, false).await? else {
                continue;
            };
            let copied = to
                .import(&Imported {
                    record: &record,
                    event_id: event_id.as_deref(),
                    order_key,
                    body_hash: hash,
                    body,
                    headers,
                })
                .await?;
            if copied {
                report.events += 1;
            } else {
                report.skipped += 1;
            }
        }
    }
    let state = dir.join("state.sqlite3");
    if state.exists() {
        let entries: Vec<(String, String, String)> = {
            let c = Connection::open_with_flags(&state, flags).map_err(sqlite)?;
            let mut stmt = c
                .prepare("SELECT route, key, value FROM route_state ORDER BY route, key")
                .map_err(sqlite)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(sqlite)?;
            rows.collect::<Result<_, _>>().map_err(sqlite)?
        };
        for (route, key, value) in entries {
            if to.import_state(&route, &key, &value).await? {
                report.state += 1;
            }
        }
    }
    Ok(report)
}
