//! The PostgreSQL store against a real server (tests/common/pg.rs): the
//! conformance suite every backend runs, a fresh server per case, then
//! what only a shared store has: migrations by several nodes at once, a
//! newer schema refused, claims of a dead node taken over once its lease
//! ran out, claims given back at once on stop, one admit group.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::PgServer;
use ztbridge_runtime::store::conformance::{self, Backend};
use ztbridge_runtime::store::postgres::{PgOptions, PgStore};
use ztbridge_runtime::store::{Admission, Next, Store, StoreError};

fn options(url: &str, node: &str, lease: Duration) -> PgOptions {
    PgOptions {
        url: url.to_string(),
        password: None,
        node: node.to_string(),
        lease,
        pool_size: 4,
        migrate: true,
    }
}

/// A server of its own; every `open` is a restart of the same node.
struct Pg(PgServer);

impl Pg {
    fn new() -> Pg {
        Pg(PgServer::new())
    }
}

impl Backend for Pg {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            PgStore::new(options(
                &self.0.url(),
                "conformance",
                Duration::from_secs(30),
            ))
            .expect("store"),
        )
    }
}

mod conformance_suite {
    use super::Pg;
    ztbridge_runtime::store_conformance!(Pg::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_migrate_once_and_a_newer_schema_is_refused() {
    let pg = PgServer::new_async().await;
    let url = pg.url();
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let store = PgStore::new(options(&url, &format!("n{i}"), Duration::from_secs(30)))
                    .expect("store");
                store.migrate(true).await.expect("migrate")
            })
        })
        .collect();
    let mut from_empty = 0;
    for r in runs {
        let status = r.await.expect("task");
        assert_eq!(status.now, PgStore::schema_version());
        if status.was == 0 {
            from_empty += 1;
        }
    }
    assert_eq!(from_empty, 1, "exactly one node applied the migrations");

    let next = PgStore::schema_version() + 1;
    pg.blocking(move |p| {
        p.psql(
            "ztbridge",
            &format!(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
                 VALUES ({next}, 'from_the_future', '2030-01-01T00:00:00Z', '0')"
            ),
        )
    })
    .await;
    let store = PgStore::new(options(&url, "old", Duration::from_secs(30))).expect("store");
    let err = store.start().await.expect_err("an older node refuses");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Schema(_)), "{text}");
    assert!(
        text.contains(&format!(
            "schema is at version {next}, newer than this ztbridge knows"
        )) && text.contains("Upgrade this node"),
        "{text}"
    );
    assert!(!text.contains(pg.password()), "the password is never shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_claims_are_taken_over_after_its_lease_and_a_stopping_node_gives_them_back() {
    let pg = PgServer::new_async().await;
    let url = pg.url();
    let lease = Duration::from_millis(1500);
    let a = PgStore::new(options(&url, "a", lease)).expect("a");
    let b = PgStore::new(options(&url, "b", lease)).expect("b");
    a.start().await.expect("a starts");
    b.start().await.expect("b starts");
    for i in 0..4 {
        let ev = conformance::event(&format!("r{i}"), &format!("E{i}"), &format!("{i}"), &["pd"]);
        assert_eq!(a.admit(ev, 0).await.unwrap(), Admission::Stored);
    }
    let now = ztbridge_runtime::time::now_millis();
    let held = a.claim(now, 3, &[]).await.unwrap().claims;
    assert_eq!(held.len(), 3);
    // Disjoint: b gets the fourth only.
    let other = b.claim(now, 10, &[]).await.unwrap().claims;
    assert_eq!(other.len(), 1);
    assert!(held.iter().all(|c| c.key != other[0].key));
    let view = b
        .cluster()
        .await
        .unwrap()
        .expect("a shared store has gauges");
    assert_eq!(view.live_nodes, 2);

    // a dies (no stop): its claims stay leased until the lease runs out,
    // then b's sweep takes them over, the interrupted attempt counted.
    drop(a);
    let started = Instant::now();
    let taken = loop {
        let got = b
            .claim(ztbridge_runtime::time::now_millis(), 10, &[])
            .await
            .unwrap()
            .claims;
        if !got.is_empty() {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.elapsed() >= lease / 2,
        "taken over before the lease ran out: {:?}",
        started.elapsed()
    );
    assert!(taken.iter().all(|c| c.attempt == 2), "{taken:?}");

    // b stops: what it holds goes back at once, to a new node c.
    b.stop().await.unwrap();
    let c = PgStore::new(options(&url, "c", lease)).expect("c");
    c.start().await.expect("c starts");
    let again = c
        .claim(ztbridge_runtime::time::now_millis(), 10, &[])
        .await
        .unwrap()
        .claims;
    assert_eq!(again.len(), taken.len() + other.len());
    // b's late finish does not count: its claims are c's now.
    b.finish(
        other[0].key.clone(),
        conformance::attempt(1),
        Next::Delivered,
    )
    .await
    .unwrap();
    let rec = c
        .record(&other[0].receipt_id, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.deliveries[0].state.as_str(), "in_flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admits_share_commits_and_a_raced_duplicate_is_stored_once() {
    let pg = PgServer::new_async().await;
    let url = pg.url();
    let stores: Vec<Arc<PgStore>> = (0..2)
        .map(|i| {
            Arc::new(
                PgStore::new(options(&url, &format!("n{i}"), Duration::from_secs(30)))
                    .expect("store"),
            )
        })
        .collect();
    // 200 webhooks at once through two nodes; every 10th is the same body
    // sent to both nodes (one is stored, the other is its duplicate).
    let mut tasks = Vec::new();
    for i in 0..200 {
        let node = if i % 10 == 0 { (i / 10) % 2 } else { i % 2 };
        let store = stores[node].clone();
        let (id, body) = if i % 10 == 0 {
            (format!("SAME{}", i / 20), format!("same-{}", i / 20))
        } else {
            (format!("E{i}"), format!("body-{i}"))
        };
        tasks.push(tokio::spawn(async move {
            store
                .admit(
                    conformance::event(&format!("r{i}"), &id, &body, &["pd"]),
                    600_000,
                )
                .await
        }));
    }
    let mut stored = 0;
    let mut dups = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Admission::Stored => stored += 1,
            Admission::Duplicate { .. } => dups += 1,
        }
    }
    assert_eq!((stored, dups), (190, 10));
    assert_eq!(stores[0].backlog().await.unwrap().open, 190);
}
