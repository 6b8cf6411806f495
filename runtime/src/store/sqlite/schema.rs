//! The schema: numbered `.sql` migrations in `migrations/`, embedded in the
//! binary and applied by refinery at open.  A database whose schema is
//! newer than this binary knows is refused with a clear message (an
//! older binary must not write to a layout it does not understand).

use rusqlite::Connection;

use crate::store::StoreError;

mod embedded {
    refinery::embed_migrations!("src/store/sqlite/migrations");
}

/// The newest schema version this binary knows.
pub(super) fn latest() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// Brings `conn`'s database to the latest schema, refusing a newer one.
pub(super) fn migrate(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let runner = embedded::migrations::runner();
    let known = latest();
    let has_history: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history')",
            [],
            |r| r.get(0),
        )
        .map_err(StoreError::from)?;
    let applied = if has_history {
        runner
            .get_last_applied_migration(conn)
            .map_err(|e| schema_error(path, e))?
            .map(|m| m.version())
    } else {
        None
    };
    if let Some(v) = applied.filter(|v| *v > known) {
        return Err(StoreError::Schema(format!(
            "{path} has schema version {v}, newer than this ztbridge knows ({known}): it was written by a newer release. Run that release (or newer), or restore a backup taken before the upgrade"
        )));
    }
    let report = runner.run(conn).map_err(|e| schema_error(path, e))?;
    for m in report.applied_migrations() {
        tracing::info!(
            path,
            version = m.version(),
            name = m.name(),
            "event store schema migrated"
        );
    }
    Ok(())
}

/// A read-only open: the schema must be the one this binary knows (it
/// cannot migrate).
pub(super) fn check_current(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let known = latest();
    let applied: Option<i32> = conn
        .query_row(
            "SELECT MAX(version) FROM refinery_schema_history",
            [],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::Backend {
            backend: "sqlite",
            context: format!("{path}: reading the schema version"),
            source: Box::new(e),
        })?;
    match applied {
        Some(v) if v == known => Ok(()),
        Some(v) if v > known => Err(StoreError::Schema(format!(
            "{path} has schema version {v}, newer than this ztbridge knows ({known}): run the release that wrote it"
        ))),
        v => Err(StoreError::Schema(format!(
            "{path} has schema version {}, older than this ztbridge's ({known}): start `ztbridge serve` (or run `ztbridge store migrate`) once to migrate it, then read it",
            v.unwrap_or(0)
        ))),
    }
}

fn schema_error(path: &str, e: refinery::Error) -> StoreError {
    StoreError::Backend {
        backend: "sqlite",
        context: format!("{path}: schema migration"),
        source: Box::new(e),
    }
}
