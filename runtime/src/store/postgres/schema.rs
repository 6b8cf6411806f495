//! The schema: numbered `.sql` migrations in `migrations/`, embedded and
//! applied by refinery on the connection that holds a session advisory
//! lock, so nodes starting together apply them once (refinery takes no
//! lock of its own).  A database whose schema is newer than this binary
//! is refused with a clear message.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::StoreError;

mod embedded {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

/// 'ztbridge' as 8 ASCII bytes: the migration lock.
const MIGRATION_LOCK: i64 = 8823785813459625829;

/// The newest schema version this binary knows.
pub(crate) fn latest() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// What [`migrate`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The version before (0: an empty database).
    pub was: i32,
    /// The version now.
    pub now: i32,
}

/// Brings the database to the latest schema (`apply`), or only checks it
/// (`!apply`: an older schema is then an error too), refusing a newer one.
pub(crate) async fn migrate(
    client: &mut Client,
    place: &str,
    apply: bool,
) -> Result<SchemaStatus, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error("waiting for the migration lock"))?;
    let result = under_lock(client, place, apply).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error("releasing the migration lock"));
    let status = result?;
    unlock?;
    Ok(status)
}

async fn under_lock(
    client: &mut Client,
    place: &str,
    apply: bool,
) -> Result<SchemaStatus, StoreError> {
    let known = latest();
    let has_history: bool = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await
        .map_err(pg_error("reading the schema version"))?
        .try_get(0)?;
    let was: i32 = if has_history {
        client
            .query_one(
                "SELECT coalesce(max(version), 0)::int4 FROM refinery_schema_history",
                &[],
            )
            .await
            .map_err(pg_error("reading the schema version"))?
            .try_get(0)?
    } else {
        0
    };
    if was > known {
        return Err(StoreError::Schema(format!(
            "{place}: the database schema is at version {was}, newer than this ztbridge knows ({known}): it was migrated by a newer release. Upgrade this node (run the release the other nodes run), or restore a backup taken before the upgrade"
        )));
    }
    if !apply {
        if was < known {
            return Err(StoreError::Schema(format!(
                "{place}: the database schema is at version {was}; this ztbridge needs {known}: run `ztbridge store migrate`"
            )));
        }
        return Ok(SchemaStatus { was, now: was });
    }
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| StoreError::Backend {
            backend: "postgres",
            context: format!("{place}: schema migration"),
            source: Box::new(e),
        })?;
    for m in report.applied_migrations() {
        tracing::info!(
            place,
            version = m.version(),
            name = m.name(),
            "event store schema migrated"
        );
    }
    Ok(SchemaStatus { was, now: known })
}
