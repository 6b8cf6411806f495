//! End-to-end events/s of several nodes on one PostgreSQL (issue 15),
//! against one node on SQLite and against PostgreSQL's own ceiling on this
//! machine, all in the same run:
//!
//! * **pgbench** (a) durable single-row inserts and (b) the naive queue
//!   pattern (insert, SKIP LOCKED claim of one, completion: three
//!   transactions per event), 16 clients, on the same server
//!   (benches/pg/*.sql);
//! * **ztbridge**: 1 node on SQLite, then 1, 2 and 3 `ztbridge serve`
//!   processes (the real binary) on a fresh database each, the built-in
//!   PagerDuty transform delivering to a loopback stub that answers 202 at
//!   once.  The same gzip webhooks (distinct alerts) from the same number
//!   of keep-alive clients, round-robin over the nodes.  Reported:
//!   accepted/s (every 202 means committed) and delivered/s (first post
//!   to the stub's last request).
//!
//! Every process shares this machine's cores: more nodes add no CPU.
//!
//! `cargo bench --bench cluster` (ZTBRIDGE_BENCH_EVENTS, default 3000;
//! ZTBRIDGE_BENCH_CLIENTS, 32; PGBENCH_SECONDS, 10).

mod common;
#[allow(dead_code)]
#[path = "../tests/common/pg.rs"]
mod pg;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use common::{ROUTING_KEY, ServeChild, env_usize, gzip_webhook, post_webhook, sample_event, serve};
use serde_json::json;

fn bodies(n: usize, tag: &str) -> Vec<Vec<u8>> {
    let template = sample_event();
    (0..n)
        .map(|i| {
            gzip_webhook(
                &template,
                &format!("RSW-{tag}-{i:06}"),
                flate2::Compression::default(),
            )
        })
        .collect()
}

/// The stub destination: 202 at once, counting.
async fn sink(count: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let app = Router::new().route(
        "/v2/enqueue",
        post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(json!({"status": "success", "message": "Event processed"})),
                )
            }
        }),
    );
    serve(app).await
}

/// A `ztbridge serve` node on `store` (empty: SQLite) delivering to `sink`.
async fn start_node(store: &str, sink: std::net::SocketAddr) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "log_format = \"text\"\n[delivery]\nmax_pending = 100000\n{store}\n\
         [[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n\
         [route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = \"http://{sink}/v2/enqueue\"\n"
    );
    let server = ServeChild::start(dir.path(), &config, "warn", &[]).await;
    Node { server, _dir: dir }
}

/// A node and the directory it lives in (removed after the node stops).
struct Node {
    server: ServeChild,
    _dir: tempfile::TempDir,
}

/// Posts every body round-robin; (accepted/s, delivered/s).
async fn load(
    ports: &[u16],
    bodies: Arc<Vec<Vec<u8>>>,
    clients: usize,
    delivered: Arc<AtomicUsize>,
) -> (f64, f64) {
    let base = delivered.load(Ordering::SeqCst);
    let next = Arc::new(AtomicUsize::new(0));
    let urls: Arc<Vec<String>> = Arc::new(
        ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/webhook"))
            .collect(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, bodies, urls) = (next.clone(), bodies.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return;
                };
                loop {
                    let r = post_webhook(&client, &urls[i % urls.len()], body.clone()).await;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(202) => break,
                        Ok(503) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Ok(s) => panic!("status {s}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let accepted = bodies.len() as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered.load(Ordering::SeqCst) < base + bodies.len() {
        assert!(Instant::now() < deadline, "not everything was delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = bodies.len() as f64 / started.elapsed().as_secs_f64();
    (accepted, delivered)
}

/// pgbench with `script` for PGBENCH_SECONDS: transactions/s.
fn pgbench(pg: &pg::PgServer, db: &str, script: &str) -> f64 {
    let bin = pg::find_bin_dir();
    let secs = std::env::var("PGBENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let out = Command::new(bin.join("pgbench"))
        .args([
            "-n", "-M", "prepared", "-c", "16", "-j", "2", "-T", &secs, "-f",
        ])
        .arg(format!(
            "{}/benches/pg/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", pg.password())
        .env("PGDATABASE", db)
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let events = env_usize("ZTBRIDGE_BENCH_EVENTS", 3000);
    let clients = env_usize("ZTBRIDGE_BENCH_CLIENTS", 32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = pg::PgServer::new_async().await;
        let pg = server.clone();
        let (inserts, naive) = tokio::task::spawn_blocking(move || {
            pg.create_database("pgbench");
            let schema = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/benches/pg/schema.sql"
            ))
            .expect("schema");
            pg.psql("pgbench", &schema);
            (
                pgbench(&pg, "pgbench", "insert.sql"),
                pgbench(&pg, "pgbench", "naive.sql"),
            )
        })
        .await
        .expect("pgbench");
        println!(
            "{} cores, {events} events, {clients} clients; PostgreSQL on this machine: (a) {inserts:.0} durable inserts/s, (b) naive queue {naive:.0} events/s",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let delivered = Arc::new(AtomicUsize::new(0));
        let sink = sink(delivered.clone()).await;
        let mut rows = vec![];
        {
            let node = start_node("", sink).await;
            let (acc, del) = load(&[node.server.port], Arc::new(bodies(events, "SQ")), clients, delivered.clone()).await;
            rows.push(("1 node, SQLite".to_string(), acc, del));
            println!("{:<24} {acc:>8.0} accepted/s {del:>8.0} delivered/s", rows[0].0);
        }
        for n in 1..=3 {
            let db = format!("nodes{n}");
            let url = {
                let (pg, db) = (server.clone(), db.clone());
                tokio::task::spawn_blocking(move || pg.create_database(&db))
                    .await
                    .expect("db")
            };
            let store = format!("[store]\nurl = {url:?}\n");
            let mut nodes = Vec::new();
            for _ in 0..n {
                nodes.push(start_node(&store, sink).await);
            }
            let ports: Vec<u16> = nodes.iter().map(|n| n.server.port).collect();
            let (acc, del) = load(&ports, Arc::new(bodies(events, &db)), clients, delivered.clone()).await;
            let label = format!("{n} node{}, PostgreSQL", if n == 1 { "" } else { "s" });
            println!("{label:<24} {acc:>8.0} accepted/s {del:>8.0} delivered/s ({:.0}% of the naive ceiling)", 100.0 * del / naive.max(1.0));
            rows.push((label, acc, del));
        }
    });
}
