//! The console with many events stored: `cargo bench --bench
//! console_events`.  Seeds a SQLite store with ZTBRIDGE_BENCH_EVENTS
//! (10 000) events, each with a pending delivery for a route that is not
//! configured (so nothing delivers them and the store stays as seeded),
//! starts the service in this process with its console, and times the
//! pages an operator opens first, as an admin script would fetch them
//! (bearer token, whole answer read):
//!
//! * `/login` (no store access): the baseline of the same run, to which
//!   every other figure is also given as a ratio;
//! * `/events` (page 1 and its count), `/events?q=...` (text search, a scan
//!   of every body), `/events?page=100`, `/dead-letters`, `/` (overview),
//!   `/api/events`.
//!
//! Prints the median and p90 of ZTBRIDGE_BENCH_ROUNDS (30) requests each.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::env_usize;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;
use ztbridge_runtime::store::NewEvent;

const TOKEN: &str = "bench-admin-token-0123456789";

fn event(i: usize, now: i64) -> NewEvent {
    let id = format!("RSW-BENCH-{i:06}");
    let body = format!(
        r#"{{"id":"{id}","severity":"CRITICAL","state":"LOCKED_OUT","user":"CORP\\user{i}","files":["/ifs/data/finance/q{}/f{i}.xlsx"],"clientIPs":["10.0.{}.{}"]}}"#,
        i % 4,
        i / 256 % 256,
        i % 256
    );
    NewEvent {
        receipt_id: format!("rbench-{i:06}"),
        received_ms: now - (10_000 - i as i64) * 1000,
        event_id: Some(id.clone()),
        order_key: id,
        severity: if i.is_multiple_of(3) {
            "major"
        } else {
            "critical"
        }
        .into(),
        state: Some("LOCKED_OUT".into()),
        body_hash: format!("h{i}"),
        body: body.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        routes: vec!["archived".into()],
        deadline_ms: i64::MAX,
    }
}

fn main() {
    let n = env_usize("ZTBRIDGE_BENCH_EVENTS", 10_000);
    let rounds = env_usize("ZTBRIDGE_BENCH_ROUNDS", 30);
    let data = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let text = format!(
        "data_dir = {:?}\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = {TOKEN:?}\n",
        data.path().display().to_string()
    );
    let config = Config::parse(&text, "bench").expect("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        // Seed, many admits in flight at once (the writer commits them in
        // groups).
        let t = Instant::now();
        {
            let (store, _) =
                ztbridge_runtime::app::open_store(&config, None, false).expect("store");
            let now = ztbridge_runtime::time::now_millis();
            for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
                let mut tasks = Vec::new();
                for &i in chunk {
                    let s = store.clone();
                    tasks.push(tokio::spawn(async move { s.admit(event(i, now), 0).await }));
                }
                for t in tasks {
                    t.await.expect("task").expect("admit");
                }
            }
        }
        println!("seeded {n} events in {:.1} s", t.elapsed().as_secs_f64());
        let app = Arc::new(App::build(config, &Default::default(), false).expect("app"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(app.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("{base}/login")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let time = |path: &'static str| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let mut v = Vec::with_capacity(rounds);
                let mut bytes = 0;
                for _ in 0..rounds {
                    let t = Instant::now();
                    let r = client
                        .get(format!("{base}{path}"))
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                        .expect("get");
                    assert!(r.status().is_success(), "{path}: {}", r.status());
                    bytes = r.bytes().await.expect("body").len();
                    v.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                v.sort_by(|a, b| a.total_cmp(b));
                (v[v.len() / 2], v[v.len() * 9 / 10], bytes)
            }
        };
        let (base_p50, base_p90, _) = time("/login").await;
        println!(
            "{:<28} {:>9} {:>9} {:>9} {:>10}",
            "page", "p50 ms", "p90 ms", "x login", "bytes"
        );
        println!(
            "{:<28} {base_p50:>9.2} {base_p90:>9.2} {:>9.1} {:>10}",
            "/login (baseline)", 1.0, "-"
        );
        for path in [
            "/events",
            "/events?q=RSW-BENCH-004242",
            "/events?severity=major&page=20",
            "/events?page=100",
            "/dead-letters",
            "/",
            "/api/events",
        ] {
            let (p50, p90, bytes) = time(path).await;
            println!(
                "{path:<28} {p50:>9.2} {p90:>9.2} {:>9.1} {bytes:>10}",
                p50 / base_p50
            );
        }
        let _ = tx.send(());
        let _ = serving.await;
    });
}
