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

/// Polls `f` every 20 ms for up to 10 s: the real condition, no fixed
/// sleep.
async fn eventually<T>(mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "condition never met"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn ev(receipt: &str, alert: &str) -> NewEvent {
    crate::store::conformance::event(receipt, alert, receipt, &["pd"])
}

#[tokio::test]
async fn a_claim_from_memory_is_marked_in_flight_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.start().await.unwrap();
    assert!(store.queue.is_complete());
    store.admit(ev("r1", "E1"), 0).await.unwrap();
    let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    assert_eq!(claims.len(), 1);
    // The mark rides in the writer's next batch: a later write commits
    // after it.
    store.ping().await.unwrap();
    let rec = store.record("r1", false).await.unwrap().unwrap();
    assert_eq!(rec.deliveries[0].state, DeliveryState::InFlight);
    store
        .finish(
            claims[0].key.clone(),
            crate::store::conformance::attempt(1),
            Next::Delivered,
        )
        .await
        .unwrap();
    let rec = store.record("r1", false).await.unwrap().unwrap();
    assert_eq!(rec.deliveries[0].state, DeliveryState::Delivered);
}

#[tokio::test]
async fn past_its_cap_the_index_turns_off_and_is_rebuilt_as_the_backlog_drains() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(dir.path(), Queue::with_caps(4, 1 << 20)).unwrap();
    store.start().await.unwrap();
    // Two alerts, three updates each: six open deliveries, over the cap.
    for i in 0..6 {
        let alert = if i % 2 == 0 { "A" } else { "B" };
        store.admit(ev(&format!("r{i}"), alert), 0).await.unwrap();
    }
    assert!(!store.queue.is_complete(), "six deliveries, a cap of four");
    // The SQL path serves claims, in per-alert order, one per alert.
    let mut order = Vec::new();
    loop {
        let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
        if claims.is_empty() {
            break;
        }
        assert!(claims.len() <= 2, "one per alert at a time: {claims:?}");
        for c in claims {
            order.push(c.receipt_id.clone());
            store
                .finish(
                    c.key,
                    crate::store::conformance::attempt(1),
                    Next::Delivered,
                )
                .await
                .unwrap();
        }
    }
    assert_eq!(order.len(), 6);
    let pos = |r: &str| order.iter().position(|x| x == r).unwrap();
    assert!(pos("r0") < pos("r2") && pos("r2") < pos("r4"), "{order:?}");
    assert!(pos("r1") < pos("r3") && pos("r3") < pos("r5"), "{order:?}");
    // Drained: the index is back (rebuilt at most once a second).
    eventually(async || {
        store.claim(now_millis(), 10, &[]).await.unwrap();
        store.queue.is_complete().then_some(())
    })
    .await;
    store.admit(ev("r6", "A"), 0).await.unwrap();
    let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].receipt_id, "r6");
}

#[tokio::test]
async fn another_connections_change_is_seen_and_order_holds_across_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.start().await.unwrap();
    store.admit(ev("r1", "E1"), 0).await.unwrap();
    store.admit(ev("r2", "E1"), 0).await.unwrap();
    store.admit(ev("x1", "X"), 0).await.unwrap();
    let now = now_millis();
    let claims = store.claim(now, 10, &[]).await.unwrap().claims;
    let got: Vec<&str> = claims.iter().map(|c| c.receipt_id.as_str()).collect();
    assert_eq!(got, ["r1", "x1"]);
    let x1 = claims[1].key.clone();
    store
        .finish(
            x1,
            crate::store::conformance::attempt(1),
            Next::Failed {
                reason: "400".into(),
            },
        )
        .await
        .unwrap();
    // Another process (the CLI's `events retry`) re-queues x1.
    let other = connect(&dir.path().join(FILE_NAME)).unwrap();
    other
        .execute(
            "UPDATE deliveries SET state = 'pending', next_at_ms = 0
             WHERE event_seq = (SELECT seq FROM events WHERE receipt_id = 'x1')",
            [],
        )
        .unwrap();
    // The writer sees it within a second and claims go to the database,
    // which hands out x1 again but never r2 while r1 runs.
    let again = eventually(async || {
        let c = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
        (!c.is_empty()).then_some(c)
    })
    .await;
    let got: Vec<&str> = again.iter().map(|c| c.receipt_id.as_str()).collect();
    assert_eq!(got, ["x1"]);
    assert_eq!(again[0].attempt, 2);
    let more = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    assert!(more.is_empty(), "r2 waits while r1 runs: {more:?}");
}

#[tokio::test]
async fn read_only_opens_read_only_beside_the_service_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = SqliteStore::open(dir.path()).unwrap();
    service.start().await.unwrap();
    service
        .admit(
            crate::store::conformance::event("r1", "E1", "x", &["pd"]),
            0,
        )
        .await
        .unwrap();
    // While the service holds the store (and its lock).
    let ro = SqliteStore::open_read_only(dir.path()).unwrap();
    assert!(
        ro.reader
            .lock()
            .unwrap()
            .is_readonly(rusqlite::MAIN_DB)
            .unwrap(),
        "opened with SQLITE_OPEN_READ_ONLY"
    );
    assert!(ro.record("r1", false).await.unwrap().is_some());
    let err = ro
        .admit(
            crate::store::conformance::event("r2", "E2", "y", &["pd"]),
            0,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly), "{err}");
    // The service goes on writing, and the reader sees it.
    service
        .admit(
            crate::store::conformance::event("r3", "E3", "z", &["pd"]),
            0,
        )
        .await
        .unwrap();
    assert!(ro.record("r3", false).await.unwrap().is_some());
    // No store: a clear error, nothing created.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        SqliteStore::open_read_only(empty.path()),
        Err(StoreError::NotFound(_))
    ));
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn a_store_file_removed_under_the_writer_is_lost_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.start().await.unwrap();
    store
        .admit(
            crate::store::conformance::event("r1", "E1", "x", &["pd"]),
            0,
        )
        .await
        .unwrap();
    assert!(store.lost().is_none());
    std::fs::remove_file(dir.path().join(format!("{FILE_NAME}-wal"))).unwrap();
    let err = store
        .admit(
            crate::store::conformance::event("r2", "E2", "y", &["pd"]),
            0,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Lost(_)), "{err}");
    assert!(store.lost().unwrap().contains("-wal was removed"));
    // Every later write too.
    assert!(matches!(store.ping().await, Err(StoreError::Lost(_))));
}

/// The claim's search for an alert's open deliveries goes through the
/// partial index (the full one on the same columns is gone, V3).
#[test]
fn claims_search_the_open_deliveries_index() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let c = connect(&dir.path().join(FILE_NAME)).unwrap();
    let mut stmt = c
        .prepare(&format!("EXPLAIN QUERY PLAN {}", deliveries::SQL_CLAIM))
        .unwrap();
    let plan: Vec<String> = stmt
        .query_map(rusqlite::params![0i64, "[]", 10i64], |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter()
            .any(|step| step.contains("SEARCH p USING INDEX deliveries_open")),
        "{plan:#?}"
    );
    let indexes: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'deliveries_order'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "deliveries_order is dropped by V3");
}

/// The statements every event runs stay prepared: a statement SQLite
/// prepares again at each run (a bound parameter it may plan by) costs a
/// parse per event on the writer thread.
#[test]
fn hot_statements_are_prepared_once() {
    let dir = tempfile::tempdir().unwrap();
    // Creates and migrates the database.
    drop(SqliteStore::open(dir.path()).unwrap());
    // The writer's functions on a connection made as the writer's is.
    let c = connect(&dir.path().join(FILE_NAME)).unwrap();
    for i in 0..5 {
        let event = ev(&format!("r{i}"), &format!("E{i}"));
        let tx = c.unchecked_transaction().unwrap();
        let (_, open) = deliveries::admit(&tx, &event, 60_000).unwrap();
        let key = DeliveryKey {
            event_seq: open[0].seq,
            route: open[0].route.to_string(),
        };
        deliveries::mark_in_flight(&tx, std::slice::from_ref(&key), now_millis()).unwrap();
        deliveries::finish(
            &tx,
            &key,
            &crate::store::conformance::attempt(1),
            &Next::Delivered,
            now_millis(),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    for sql in deliveries::HOT_STATEMENTS {
        let stmt = c.prepare_cached(sql).unwrap();
        let runs = stmt.get_status(rusqlite::StatementStatus::Run);
        assert!(runs >= 5, "{runs} runs of {sql}");
        let again = stmt.get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(again, 0, "prepared {again} more times: {sql}");
    }
}
