//! The SQLite backend: the conformance suite, plus what only SQLite has
//! (fsync pragmas, the schema version check, the data directory lock).

use std::sync::Arc;

use super::*;

/// A temporary data directory; every `open` is a restart on it.
struct Sqlite(tempfile::TempDir);

impl crate::store::conformance::Backend for Sqlite {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.0.path()).unwrap())
    }
}

mod conformance {
    use super::Sqlite;
    crate::store_conformance!(Sqlite(tempfile::tempdir().unwrap()));
}

#[test]
fn every_connection_fsyncs_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let c = store.reader.lock().unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous = FULL");
    // The writer's connection is made by the same function.
    let w = connect(&dir.path().join(FILE_NAME)).unwrap();
    let sync: i64 = w.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(sync, 2);
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let next = schema::latest() + 1;
    let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    c.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (?1, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
        [next],
    )
    .unwrap();
    drop(c);
    let err = SqliteStore::open(dir.path()).err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Schema(_)), "{text}");
    assert!(
        text.contains(&format!(
            "schema version {next}, newer than this ztbridge knows"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_first_wave_database_is_adopted_as_it_is() {
    // Databases made before migrations: the tables exist, with data, and
    // no history table.  Opening keeps the data and records version 1.
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        c.execute_batch(include_str!("migrations/V1__initial.sql"))
            .unwrap();
        c.execute(
            "INSERT INTO events (receipt_id, received_ms, order_key, severity, body_hash, body, headers)
             VALUES ('r-old', 1, 'r-old', 'critical', 'h', '{}', '{}')",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.record("r-old", false).await.unwrap().is_some());
    let c = store.reader.lock().unwrap();
    let v: i32 = c
        .query_row(
            "SELECT MAX(version) FROM refinery_schema_history",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, schema::latest());
}

#[tokio::test]
async fn one_service_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let a = SqliteStore::open(dir.path()).unwrap();
    let b = SqliteStore::open(dir.path()).unwrap();
    a.start().await.unwrap();
    let err = b.start().await.err().expect("the second is refused");
    assert!(err.to_string().contains("serve.lock is locked"), "{err}");
}
