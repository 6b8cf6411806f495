//! Several `ztbridge serve` processes (the real binary) on one PostgreSQL
//! (tests/common/pg.rs): a node kill -9'd mid-burst loses nothing
//! acknowledged and keeps per-alert order; the Jitbit flow makes one
//! ticket per alert with its comments in order whichever nodes take the
//! updates; PostgreSQL stopped mid-burst (the rate limit and the inbound
//! dedupe: tests/cluster_rate.rs).  Everything waits for real conditions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::jitbit::{StubJitbit, jitbit_route};
use common::pg::PgServer;
use common::*;
use serde_json::{Value, json};

use common::cluster::{Cluster, carried, event, node_config, post};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_burst_loses_nothing_acknowledged_and_order_holds() {
    let pg = PgServer::new_async().await;
    let pd = StubPagerDuty::start().await;
    pd.delay(2, 20);
    let mut cluster = Cluster::start(3, &node_config(&pg, &pagerduty_route(&pd, ""))).await;
    let urls = cluster.urls();
    let (alerts, updates) = (400usize, 5usize);

    // 16 senders; each alert's updates one after another (as Superna
    // sends them: the next after the previous was answered), round-robin
    // over the nodes; a node that does not answer is skipped (as a load
    // balancer would).
    let acked: Arc<Mutex<BTreeSet<(String, usize)>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let turn = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (acked, next, turn, client, urls) = (
            acked.clone(),
            next.clone(),
            turn.clone(),
            client.clone(),
            urls.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let a = next.fetch_add(1, Ordering::SeqCst);
                if a >= alerts {
                    return;
                }
                let id = format!("RSW-CL-{a:04}");
                for u in 0..updates {
                    let body = event(&id, u);
                    loop {
                        let n = turn.fetch_add(1, Ordering::SeqCst) % urls.len();
                        match post(&client, &urls[n], &body).await {
                            Some((202 | 200, _)) => break,
                            Some((503, _)) | None => continue,
                            Some((s, v)) => panic!("unexpected answer {s}: {v}"),
                        }
                    }
                    acked.lock().unwrap().insert((id.clone(), u));
                }
            }
        }));
    }
    wait_until(Duration::from_secs(120), || {
        (acked.lock().unwrap().len() >= 600).then_some(())
    })
    .await
    .expect("600 webhooks acknowledged");
    let victim = cluster.nodes[1].as_mut().unwrap();
    let victim_port = victim.port;
    victim.kill9();
    cluster.nodes[1] = None;
    println!("node on port {victim_port} killed after 600 acknowledgements");
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), alerts * updates);

    let all = wait_until(Duration::from_secs(180), || {
        let got: BTreeSet<(String, usize)> = pd
            .received()
            .iter()
            .map(|r| {
                let (id, seq) = carried(r);
                (id, seq as usize)
            })
            .collect();
        acked.is_subset(&got).then_some(())
    })
    .await;
    if all.is_none() {
        let got: BTreeSet<(String, usize)> = pd
            .received()
            .iter()
            .map(|r| {
                let (id, seq) = carried(r);
                (id, seq as usize)
            })
            .collect();
        let missing: Vec<_> = acked.difference(&got).take(10).collect();
        panic!(
            "acknowledged events never delivered: {missing:?}\n{}",
            cluster.any().log_tail()
        );
    }
    // Per alert, in the order the sink saw them: repeats of one update
    // come together (a repeat is the dead node's attempt, made again
    // before the next update may start), and updates in order.
    let mut per_alert: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in pd.received() {
        let (id, seq) = carried(&r);
        per_alert.entry(id).or_default().push(seq);
    }
    let mut repeats = 0;
    for (id, seqs) in &per_alert {
        let mut order = seqs.clone();
        order.dedup();
        repeats += seqs.len() - order.len();
        assert_eq!(
            order,
            (0..updates as u64).collect::<Vec<_>>(),
            "{id}: updates out of order at the sink: {seqs:?}"
        );
    }
    let total = pd.received().len();
    println!(
        "{} events acknowledged by 3 nodes (one kill -9'd), {total} requests at the sink, {repeats} repeats",
        acked.len()
    );
    // A repeat can only be an attempt the dead node had claimed: at most
    // its sandbox slots (limits.max_instances, 64).
    assert!(repeats <= 64, "{repeats} repeats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jitbit_across_nodes_one_ticket_per_alert_comments_in_order() {
    let pg = PgServer::new_async().await;
    let stub = StubJitbit::start().await;
    let cluster = Cluster::start(3, &node_config(&pg, &jitbit_route(&stub, ""))).await;
    let urls = cluster.urls();
    let client = reqwest::Client::new();
    let (alerts, updates) = (8usize, 4usize);
    let mut tasks = Vec::new();
    for a in 0..alerts {
        let (client, urls) = (client.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            for u in 0..updates {
                let mut v: Value =
                    serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
                v["id"] = json!(format!("RSW-JB-{a}"));
                let files: Vec<String> = (0..=u)
                    .map(|f| format!("/ifs/data/a{a}/file{f}.locked"))
                    .collect();
                v["files"] = json!(files);
                let body = serde_json::to_vec(&v).unwrap();
                // Each update to the next node.
                let url = &urls[(a + u) % urls.len()];
                let got = post(&client, url, &body).await;
                assert!(
                    matches!(got, Some((202, _))),
                    "alert {a} update {u}: {got:?}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = wait_until(Duration::from_secs(120), || {
        let t = stub.tickets();
        (t.len() >= alerts && t.iter().all(|t| t.comments.len() >= updates - 1)).then_some(t)
    })
    .await;
    let Some(tickets) = done else {
        panic!(
            "tickets: {:#?}\n{}",
            stub.tickets(),
            cluster.any().log_tail()
        );
    };
    assert_eq!(tickets.len(), alerts, "one ticket per alert: {tickets:#?}");
    for t in &tickets {
        assert_eq!(t.comments.len(), updates - 1, "{t:#?}");
        for (i, c) in t.comments.iter().enumerate() {
            assert!(
                c.contains(&format!("Files: {} &rarr; {}", i + 1, i + 2)),
                "ticket {}: comment {i} out of order: {c}",
                t.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_mid_burst_503s_only_while_down_and_nothing_acknowledged_is_lost() {
    let pg = PgServer::new_async().await;
    let pd = StubPagerDuty::start().await;
    let cluster = Cluster::start(3, &node_config(&pg, &pagerduty_route(&pd, ""))).await;
    let urls = cluster.urls();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..6 {
        let (acked, refused, stop, next, client, urls) = (
            acked.clone(),
            refused.clone(),
            stop.clone(),
            next.clone(),
            client.clone(),
            urls.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut i = next.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                let id = format!("RSW-DOWN-{i:05}");
                match post(&client, &urls[(i + s) % urls.len()], &event(&id, 0)).await {
                    Some((202 | 200, _)) => {
                        acked.lock().unwrap().insert(id);
                        i = next.fetch_add(1, Ordering::SeqCst);
                    }
                    Some((503, _)) => {
                        refused.lock().unwrap().push(Instant::now());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("unexpected answer: {other:?}"),
                }
            }
        }));
    }
    wait_until(Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 200).then_some(())
    })
    .await
    .expect("200 acknowledged");
    let down_from = Instant::now();
    pg.blocking(|p| p.stop()).await;
    // Not ready while it is down.
    let not_ready = wait_until(Duration::from_secs(20), || {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(cluster.any().url("/readyz"))
            .output()
            .ok()
            .filter(|o| o.stdout == b"503")
            .map(|_| ())
    })
    .await;
    assert!(
        not_ready.is_some(),
        "/readyz stayed ready with the database down"
    );
    let deadline = down_from + Duration::from_secs(20);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pg.blocking(|p| p.start()).await;
    let up_at = Instant::now();
    let before = acked.lock().unwrap().len();
    wait_until(Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= before + 200).then_some(())
    })
    .await
    .expect("200 more acknowledged after the database came back");
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    assert!(!refused.is_empty(), "no 503 while the database was down");
    // The last 503 comes from a statement on a connection the restart
    // cut, at the latest a pool timeout (5 s) after the start.
    let late: Vec<_> = refused
        .iter()
        .filter(|t| **t < down_from || **t > up_at + Duration::from_secs(6))
        .collect();
    assert!(
        late.is_empty(),
        "{} 503s outside the outage ({} in all)",
        late.len(),
        refused.len()
    );
    let all = wait_until(Duration::from_secs(120), || {
        let got: BTreeSet<String> = pd.received().iter().map(|r| carried(r).0).collect();
        acked.is_subset(&got).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "acknowledged events lost\n{}",
        cluster.any().log_tail()
    );
    println!(
        "{} acknowledged, {} refused with 503 during the 20 s outage",
        acked.len(),
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sigterm_a_node_gives_its_claims_back_at_once() {
    let pg = PgServer::new_async().await;
    let pd = StubPagerDuty::start().await;
    // Slow answers: attempts are still running when the drain times out.
    pd.delay(1500, 1500);
    // A 120 s lease: anything delivered well before that was given back,
    // not taken over.
    let config = format!(
        "[delivery]\ninitial_backoff_ms = 100\ndrain_timeout_ms = 200\n[store]\nurl = {:?}\nlease_secs = 120\n{}",
        pg.url(),
        pagerduty_route(&pd, "")
    );
    let mut cluster = Cluster::start(2, &config).await;
    let urls = cluster.urls();
    let client = reqwest::Client::new();
    for i in 0..10 {
        let got = post(&client, &urls[0], &event(&format!("RSW-TERM-{i}"), 0)).await;
        assert!(matches!(got, Some((202, _))), "{got:?}");
    }
    pd.wait_for(1, Duration::from_secs(30)).await;
    let stopping = Instant::now();
    let a = cluster.nodes[0].as_mut().unwrap();
    a.terminate();
    assert_eq!(a.wait_exit(Duration::from_secs(30)).await, Some(0));
    cluster.nodes[0] = None;
    // Recorded as delivered (the stub counts a request on arrival, also
    // one whose attempt the stop cut short).
    let all = wait_until(Duration::from_secs(60), || {
        let (_, out, _) = cluster
            .any()
            .events(&["list", "--state", "delivered", "--json"]);
        let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
        (rows.len() == 10).then_some(())
    })
    .await;
    assert!(all.is_some(), "{}", cluster.any().log_tail());
    assert!(
        stopping.elapsed() < Duration::from_secs(60),
        "the claims waited for their lease"
    );
}
