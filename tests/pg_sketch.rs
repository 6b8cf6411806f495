//! The PostgreSQL store's design sketch (docs/notes/postgres.md, its
//! schema.sql and queries.sql) run against a real server: migrations under
//! an advisory lock, admits (order, dedupe under a race), claims by several
//! nodes at once with SKIP LOCKED (never two in flight for one route and
//! alert, never out of order, retries, a node that dies holding claims, a
//! slow node that keeps its leases by heartbeat), release on stop, the
//! cluster-wide rate limit, and LISTEN/NOTIFY.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::{self, PgServer};
use tokio_postgres::Client;

const SCHEMA: &str = include_str!("../docs/notes/postgres/schema.sql");
const QUERIES: &str = include_str!("../docs/notes/postgres/queries.sql");
const ROUTES: [&str; 2] = ["pagerduty", "jitbit"];

fn q(name: &str) -> &'static str {
    QUERIES
        .split("-- name: ")
        .skip(1)
        .find_map(|part| {
            let (n, rest) = part.split_once('\n')?;
            (n.trim() == name).then_some(rest)
        })
        .unwrap_or_else(|| panic!("no query {name} in queries.sql"))
}

/// The migration runner of the note, in a few lines: under the advisory
/// lock, what is not applied yet is applied, each in its own transaction;
/// a schema newer than this node knows is refused.
async fn migrate(url: &str, node: &str, known: &[(i32, &str, &str)]) -> Result<usize, String> {
    let mut c = pg::connect(url).await.map_err(|e| e.to_string())?;
    c.execute(q("migrate_lock"), &[])
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        c.batch_execute(q("migrate_bootstrap")).await?;
        let applied: Vec<i32> = c
            .query(q("migrate_applied"), &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let newest_known = known.iter().map(|m| m.0).max().unwrap_or(0);
        if let Some(&newest) = applied.iter().max() {
            if newest > newest_known {
                return Ok(Err(format!(
                    "the database schema is at version {newest}, this ztbridge knows up to \
                     {newest_known}: upgrade this node (the others have been)"
                )));
            }
        }
        let mut n = 0;
        for (version, name, sql) in known {
            if applied.contains(version) {
                continue;
            }
            let tx = c.transaction().await?;
            tx.batch_execute(sql).await?;
            tx.execute(
                q("migrate_record"),
                &[version, name, &"sha256-of-file", &node],
            )
            .await?;
            tx.commit().await?;
            n += 1;
        }
        Ok::<_, tokio_postgres::Error>(Ok(n))
    }
    .await;
    c.execute(q("migrate_unlock"), &[])
        .await
        .map_err(|e| e.to_string())?;
    result.map_err(|e| format!("{e:?}"))?
}

async fn fresh_db(pg: &PgServer, name: &str) -> String {
    let url = pg
        .blocking({
            let name = name.to_string();
            move |p| p.create_database(&name)
        })
        .await;
    migrate(&url, "setup", &[(1, "v1", SCHEMA)])
        .await
        .expect("migrate");
    let c = pg::connect(&url).await.expect("connect");
    for node in ["n1", "n2", "n3", "dead", "slow"] {
        c.execute(q("node_register"), &[&node, &"test"])
            .await
            .expect("node");
    }
    url
}

#[derive(Debug, PartialEq)]
enum Admitted {
    Stored { alert_seq: i64 },
    Duplicate { of: String },
}

async fn admit(
    c: &mut Client,
    node: &str,
    receipt: &str,
    alert: &str,
    body: &str,
    window_ms: i64,
) -> Admitted {
    let hash = body.as_bytes().to_vec(); // stands for the SHA-256
    let tx = c.transaction().await.expect("begin");
    let rows = tx
        .query(q("admit_alert"), &[&alert, &hash, &receipt, &window_ms])
        .await
        .expect("admit_alert");
    let Some(row) = rows.first() else {
        let of: String = tx
            .query_one(q("duplicate_of"), &[&alert])
            .await
            .expect("duplicate_of")
            .get(0);
        tx.commit().await.expect("commit");
        return Admitted::Duplicate { of };
    };
    let alert_seq: i64 = row.get(0);
    let routes: Vec<&str> = ROUTES.to_vec();
    let n = tx
        .execute(
            q("admit_event"),
            &[
                &receipt,
                &node,
                &Some(alert),
                &alert,
                &alert_seq,
                &"critical",
                &None::<&str>,
                &hash,
                &body,
                &"{}",
                &routes,
                &3_600_000i64,
            ],
        )
        .await
        .expect("admit_event");
    assert_eq!(n, ROUTES.len() as u64);
    tx.execute(q("admit_notify"), &[]).await.expect("notify");
    tx.commit().await.expect("commit");
    Admitted::Stored { alert_seq }
}

#[derive(Debug, Clone)]
struct Claimed {
    event_seq: i64,
    route: String,
    alert: String,
    alert_seq: i64,
    attempt: i32,
}

/// One claim transaction: candidates (SKIP LOCKED), the rate limit per
/// route if any, then the granted ones marked in flight.
async fn claim(
    c: &mut Client,
    node: &str,
    batch: i64,
    lease_ms: i64,
    rate: Option<(i64, i32)>,
) -> Vec<Claimed> {
    let tx = c.transaction().await.expect("begin");
    let cands: Vec<(i64, String)> = tx
        .query(q("claim_candidates"), &[&batch])
        .await
        .expect("claim_candidates")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut take: Vec<(i64, String)> = Vec::new();
    match rate {
        None => take = cands,
        Some((interval_ms, burst)) => {
            let mut by_route: Vec<(String, Vec<i64>)> = Vec::new();
            for (seq, route) in cands {
                match by_route.iter_mut().find(|(r, _)| *r == route) {
                    Some((_, v)) => v.push(seq),
                    None => by_route.push((route, vec![seq])),
                }
            }
            for (route, seqs) in by_route {
                let n = seqs.len() as i32;
                let row = tx
                    .query_one(q("rate_take"), &[&route, &n, &interval_ms, &burst])
                    .await
                    .expect("rate_take");
                let granted: i32 = row.get(0);
                take.extend(
                    seqs.into_iter()
                        .take(granted as usize)
                        .map(|s| (s, route.clone())),
                );
            }
        }
    }
    let seqs: Vec<i64> = take.iter().map(|t| t.0).collect();
    let routes: Vec<&str> = take.iter().map(|t| t.1.as_str()).collect();
    let rows = tx
        .query(q("claim_mark"), &[&seqs, &routes, &node, &lease_ms])
        .await
        .expect("claim_mark");
    tx.commit().await.expect("commit");
    rows.iter()
        .map(|r| Claimed {
            event_seq: r.get("event_seq"),
            route: r.get("route"),
            alert: r.get("alert_key"),
            alert_seq: r.get("alert_seq"),
            attempt: r.get("attempt"),
        })
        .collect()
}

/// Finishes a batch: `(claim, retry)`, delivered unless `retry`.  Returns
/// how many were still this node's.
async fn finish(c: &Client, node: &str, done: &[(Claimed, bool)]) -> usize {
    let seqs: Vec<i64> = done.iter().map(|d| d.0.event_seq).collect();
    let routes: Vec<&str> = done.iter().map(|d| d.0.route.as_str()).collect();
    let states: Vec<&str> = done
        .iter()
        .map(|d| if d.1 { "pending" } else { "delivered" })
        .collect();
    let retry: Vec<Option<i64>> = done.iter().map(|d| d.1.then_some(30)).collect();
    let status: Vec<Option<i32>> = done
        .iter()
        .map(|d| Some(if d.1 { 503 } else { 202 }))
        .collect();
    let reason: Vec<Option<&str>> = done.iter().map(|d| d.1.then_some("503")).collect();
    c.query(
        q("finish"),
        &[&seqs, &routes, &states, &retry, &status, &reason, &node],
    )
    .await
    .expect("finish")
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_prepares_and_migrations_run_once() {
    let pg = PgServer::new_async().await;
    let url = pg.url();
    // Three nodes start together: one applies V1, the others wait, then
    // find it applied.  (Without the lock the CREATE TABLEs would collide.)
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { migrate(&url, &format!("n{i}"), &[(1, "v1", SCHEMA)]).await })
        })
        .collect();
    let mut applied = 0;
    for r in runs {
        applied += r.await.expect("task").expect("migrate");
    }
    assert_eq!(applied, 1);

    let c = pg::connect(&url).await.expect("connect");
    for part in QUERIES.split("-- name: ").skip(1) {
        let (name, _) = part.split_once('\n').expect("name line");
        c.prepare(q(name.trim()))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }

    // A node older than the schema refuses to start, and says why.
    c.execute(q("migrate_record"), &[&2i32, &"v2", &"x", &"newer-node"])
        .await
        .expect("record v2");
    let err = migrate(&url, "old", &[(1, "v1", SCHEMA)])
        .await
        .unwrap_err();
    assert!(
        err.contains("schema is at version 2") && err.contains("knows up to 1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_of_one_alert_are_serialised_and_a_raced_duplicate_is_stored_once() {
    let pg = PgServer::new_async().await;
    let url = fresh_db(&pg, "admit").await;
    let rounds = 40;
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let (url, barrier) = (url.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut c = pg::connect(&url).await.expect("connect");
                let mut out = Vec::new();
                for r in 0..rounds {
                    // Nodes 0 and 1 receive the same webhook at once; node
                    // 2 an update of the same alert.
                    let body = if i < 2 {
                        format!("r{r}-same")
                    } else {
                        format!("r{r}-other")
                    };
                    barrier.wait().await;
                    let a = admit(
                        &mut c,
                        &format!("n{i}"),
                        &format!("n{i}-r{r}"),
                        "alert-1",
                        &body,
                        600_000,
                    )
                    .await;
                    out.push((r, i, a));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    for r in 0..rounds {
        let same: Vec<&Admitted> = all
            .iter()
            .filter(|(rr, i, _)| *rr == r && *i < 2)
            .map(|x| &x.2)
            .collect();
        let stored = same
            .iter()
            .filter(|a| matches!(a, Admitted::Stored { .. }))
            .count();
        // Once, unless the other alert update landed between the two (then
        // the second is a change back, not a repeat, as on one node).
        let other_between = {
            let seqs: Vec<i64> = all
                .iter()
                .filter(|(rr, _, _)| *rr == r)
                .filter_map(|(_, i, a)| match a {
                    Admitted::Stored { alert_seq } => Some((*i, *alert_seq)),
                    _ => None,
                })
                .map(|(i, s)| if i == 2 { -s } else { s })
                .collect();
            let other = seqs.iter().find(|s| **s < 0).map(|s| -s);
            let mine: Vec<i64> = seqs.iter().filter(|s| **s > 0).copied().collect();
            matches!((other, mine.as_slice()), (Some(o), [a, b]) if o > *a.min(b) && o < *a.max(b))
        };
        assert!(
            stored == 1 || (stored == 2 && other_between),
            "round {r}: {same:?}"
        );
    }
    // alert_seq is dense and follows commit order (seq is drawn under the
    // alert's lock).
    let c = pg::connect(&url).await.expect("connect");
    let rows = c
        .query(
            "SELECT alert_seq FROM events WHERE alert_key = 'alert-1' ORDER BY seq",
            &[],
        )
        .await
        .expect("events");
    let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(seqs.len() >= rounds * 2, "{}", seqs.len());
}

/// What the (simulated) destinations saw, checked as it happens.
#[derive(Default)]
struct Sink {
    in_flight: HashMap<(String, String), (i64, String)>,
    delivered_upto: HashMap<(String, String), i64>,
    violations: Vec<String>,
    delivered: u64,
}

impl Sink {
    fn start(&mut self, node: &str, c: &Claimed) {
        let key = (c.route.clone(), c.alert.clone());
        if let Some((seq, other)) = self.in_flight.get(&key) {
            self.violations.push(format!(
                "{node} took {key:?} #{} while {other} has #{seq} in flight",
                c.alert_seq
            ));
        }
        let upto = self.delivered_upto.get(&key).copied().unwrap_or(0);
        if c.alert_seq != upto + 1 {
            self.violations.push(format!(
                "{node} took {key:?} #{} after #{upto} delivered",
                c.alert_seq
            ));
        }
        self.in_flight.insert(key, (c.alert_seq, node.to_string()));
    }

    fn end(&mut self, c: &Claimed, delivered: bool) {
        let key = (c.route.clone(), c.alert.clone());
        self.in_flight.remove(&key);
        if delivered {
            self.delivered_upto.insert(key, c.alert_seq);
            self.delivered += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_claim_concurrently_in_order_and_take_over_a_dead_nodes_claims() {
    let pg = PgServer::new_async().await;
    let url = fresh_db(&pg, "claims").await;
    let (alerts, updates) = (24usize, 12usize);
    let total = (alerts * updates * ROUTES.len()) as i64;
    let lease_ms = 1500i64;
    let sink = Arc::new(Mutex::new(Sink::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let taken_over = Arc::new(AtomicU64::new(0));

    // Admitters: each alert's updates in sequence, to the nodes in turn;
    // alerts in parallel.
    let mut admitters = Vec::new();
    for a in 0..alerts {
        let url = url.clone();
        admitters.push(tokio::spawn(async move {
            let mut c = pg::connect(&url).await.expect("connect");
            for u in 0..updates {
                let node = format!("n{}", 1 + (a + u) % 3);
                let got = admit(
                    &mut c,
                    &node,
                    &format!("a{a}-u{u}"),
                    &format!("alert-{a}"),
                    &format!("a{a} update {u}"),
                    600_000,
                )
                .await;
                assert_eq!(
                    got,
                    Admitted::Stored {
                        alert_seq: u as i64 + 1
                    }
                );
                tokio::task::yield_now().await;
            }
        }));
    }

    // A node that claims a batch and dies: never delivers, never renews.
    let dead_claims = {
        let mut c = pg::connect(&url).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = claim(&mut c, "dead", 6, lease_ms, None).await;
            if !got.is_empty() {
                break got;
            }
            assert!(Instant::now() < deadline, "nothing to claim");
            tokio::task::yield_now().await;
        }
    };

    // Live nodes: claim, deliver (one in ten fails once: retried), finish,
    // and sweep expired leases.
    let mut nodes = Vec::new();
    for n in 1..=3 {
        let (url, sink, stop, taken_over) =
            (url.clone(), sink.clone(), stop.clone(), taken_over.clone());
        nodes.push(tokio::spawn(async move {
            let node = format!("n{n}");
            let mut c = pg::connect(&url).await.expect("connect");
            let mut idle = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let expired = c
                    .query(q("expire_leases"), &[])
                    .await
                    .expect("expire")
                    .len();
                taken_over.fetch_add(expired as u64, Ordering::Relaxed);
                let got = claim(&mut c, &node, 8, lease_ms, None).await;
                if got.is_empty() {
                    idle += 1;
                    // The real scheduler waits for NOTIFY or its next due
                    // time; here, a short poll.
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(idle.min(10)))).await;
                    continue;
                }
                idle = 0;
                let mut done = Vec::new();
                for cl in got {
                    sink.lock().unwrap().start(&node, &cl);
                    tokio::task::yield_now().await;
                    let fail = cl.attempt == 1 && (cl.event_seq * 7 + cl.alert_seq) % 10 == 0;
                    // Recorded before the finish commits, so no other node
                    // can claim the successor before the sink knows.
                    sink.lock().unwrap().end(&cl, !fail);
                    done.push((cl, fail));
                }
                let kept = finish(&c, &node, &done).await;
                assert_eq!(kept, done.len(), "{node} lost a lease it renewed");
            }
        }));
    }

    // A slow node: holds one claim for 3 leases, renewing by heartbeat; no
    // one takes it meanwhile.
    let slow = {
        let (url, sink) = (url.clone(), sink.clone());
        tokio::spawn(async move {
            let mut c = pg::connect(&url).await.expect("connect");
            let got = loop {
                let got = claim(&mut c, "slow", 1, lease_ms, None).await;
                if !got.is_empty() {
                    break got;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            sink.lock().unwrap().start("slow", &got[0]);
            let until = Instant::now() + Duration::from_millis(3 * lease_ms as u64);
            while Instant::now() < until {
                c.execute(q("heartbeat"), &[&"slow", &lease_ms])
                    .await
                    .expect("heartbeat");
                tokio::time::sleep(Duration::from_millis(lease_ms as u64 / 3)).await;
            }
            sink.lock().unwrap().end(&got[0], true);
            assert_eq!(
                finish(&c, "slow", &[(got[0].clone(), false)]).await,
                1,
                "slow node's lease was taken"
            );
        })
    };

    for a in admitters {
        a.await.expect("admitter");
    }
    slow.await.expect("slow node");
    let c = pg::connect(&url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: i64 = c
            .query_one(
                "SELECT count(*) FROM deliveries WHERE state = 'delivered'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if delivered == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {total} delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for n in nodes {
        n.await.expect("node");
    }
    let sink = sink.lock().unwrap();
    assert!(sink.violations.is_empty(), "{:#?}", sink.violations);
    assert_eq!(sink.delivered, total as u64);
    assert!(
        taken_over.load(Ordering::Relaxed) >= dead_claims.len() as u64,
        "the dead node's {} claims were not taken over",
        dead_claims.len()
    );
    let retried: i64 = c
        .query_one("SELECT count(*) FROM deliveries WHERE attempts > 1", &[])
        .await
        .expect("retried")
        .get(0);
    assert!(retried > 0, "no retries exercised");
    eprintln!(
        "{total} deliveries by 3 nodes: {} claims of a dead node taken over, {retried} retried, order kept",
        dead_claims.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_gives_its_claims_back_at_once() {
    let pg = PgServer::new_async().await;
    let url = fresh_db(&pg, "release").await;
    let mut c = pg::connect(&url).await.expect("connect");
    for a in 0..4 {
        admit(
            &mut c,
            "n1",
            &format!("r{a}"),
            &format!("alert-{a}"),
            "x",
            0,
        )
        .await;
    }
    let held = claim(&mut c, "n1", 100, 30_000, None).await;
    assert_eq!(held.len(), 8);
    assert!(claim(&mut c, "n2", 100, 30_000, None).await.is_empty());
    let n: i64 = c
        .query_one(q("live_nodes"), &[&10_000i64])
        .await
        .expect("live")
        .get(0);
    assert_eq!(n, 5);
    let released = c.query(q("release"), &[&"n1"]).await.expect("release");
    assert_eq!(released.len(), 8);
    let n: i64 = c
        .query_one(q("live_nodes"), &[&10_000i64])
        .await
        .expect("live")
        .get(0);
    assert_eq!(n, 4);
    // Another node takes them now, not 30 s later.
    assert_eq!(claim(&mut c, "n2", 100, 30_000, None).await.len(), 8);
    // The released node's late finish does not count.
    assert_eq!(finish(&c, "n1", &[(held[0].clone(), false)]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_across_nodes() {
    let pg = PgServer::new_async().await;
    let url = fresh_db(&pg, "rate").await;
    // 50 a second (one per 20 ms), bursts of 6, three nodes taking at once.
    let (interval_ms, burst) = (20i64, 6i32);
    let run = Duration::from_millis(1500);
    let start = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = pg::connect(&url).await.expect("connect");
                let mut granted = 0i64;
                while start.elapsed() < run {
                    let row = c
                        .query_one(
                            q("rate_take"),
                            &[&"pd-key", &(1 + i % 2), &interval_ms, &burst],
                        )
                        .await
                        .expect("rate_take");
                    granted += i64::from(row.get::<_, i32>(0));
                }
                granted
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += t.await.expect("task");
    }
    let elapsed_ms = start.elapsed().as_millis() as i64;
    let ceiling = i64::from(burst) + elapsed_ms / interval_ms + 1;
    assert!(
        granted <= ceiling,
        "{granted} tokens in {elapsed_ms} ms, limit {ceiling}"
    );
    assert!(
        granted >= ceiling * 8 / 10,
        "{granted} tokens in {elapsed_ms} ms: too few ({ceiling})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admit_wakes_listeners_on_commit_only() {
    let pg = PgServer::new_async().await;
    let url = fresh_db(&pg, "notify").await;
    let (listener, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener
        .batch_execute("LISTEN ztbridge_due")
        .await
        .expect("listen");

    let mut c = pg::connect(&url).await.expect("connect");
    let t = c.transaction().await.expect("begin");
    t.execute("SELECT pg_notify('ztbridge_due', 'rolled back')", &[])
        .await
        .expect("notify");
    t.rollback().await.expect("rollback");
    admit(&mut c, "n1", "r1", "alert-1", "body", 0).await;
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification within 10 s")
        .expect("listener gone");
    assert_eq!(got, ("ztbridge_due".to_string(), String::new()));
}
