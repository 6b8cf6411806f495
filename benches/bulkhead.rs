//! Bulkheads: a healthy route's delivery latency while another route's
//! destination hangs, against the same route's latency measured in the
//! same run without the hanging neighbour.
//!
//! Three runs of the real service (in-process, loopback stubs, the
//! built-in PagerDuty transform), each with a fresh data directory:
//!
//! * **alone**: one route, `healthy`, to a stub that answers 202 at once;
//! * **neighbour ok**: `healthy` and `other`, both stubs answering at once;
//! * **neighbour hangs**: the same two routes, `other`'s stub never
//!   answering (every request held open, as a destination answering in
//!   25 s does);
//! * **hangs, no bulkhead**: the same, with `route_max_in_flight = 64`
//!   (every route may take every slot, as before bulkheads) and a 2 s
//!   request timeout so that the run ends: what the bulkheads prevent.
//!
//! Each run posts the same N webhooks (both routes take them all) and
//! measures, per event, the time from its 202 to the healthy stub
//! receiving it.  Reports p50/p99 and the ratio of each run's p99 to the
//! **alone** p99 (issue 21 target: at most 2x while the neighbour hangs).
//!
//! The first three modes run interleaved for ZTBRIDGE_BENCH_ROUNDS rounds
//! (default 5), and the medians are reported: p99 at millisecond scale
//! moves with the machine's load.
//!
//! `cargo bench --bench bulkhead` (ZTBRIDGE_BENCH_EVENTS, default 200;
//! ZTBRIDGE_BENCH_CLIENTS, default 8).
//!
//! With ZTBRIDGE_BENCH_OUTAGE_SECS=60 it measures the circuit breaker
//! instead: ZTBRIDGE_BENCH_OUTAGE_EVENTS (500) events to a sink answering
//! 503 for that long, without then with the breaker (default settings):
//! the requests the sink got while down, and how long after it came back
//! every event was delivered.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::{
    ROUTING_KEY, env_usize, gzip_webhook, post_webhook, sample_event, serve, start_service,
};
use serde_json::{Value, json};

/// Gzip webhooks with distinct alert IDs, tagged by `run`.
fn bodies(run: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let template = sample_event();
    (0..n)
        .map(|i| {
            let id = format!("RSW-{run}-{i:05}");
            let body = gzip_webhook(&template, &id, flate2::Compression::default());
            (id, body)
        })
        .collect()
}

/// When each alert reached the stub, by the ID its dedup key carries.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A PagerDuty stub answering 202 at once, noting arrivals.
async fn answering(arrivals: Arrivals) -> std::net::SocketAddr {
    serve(Router::new().route(
        "/v2/enqueue",
        post(move |body: Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let id = v["dedup_key"]
                        .as_str()
                        .unwrap_or("")
                        .trim_start_matches("superna-zt-")
                        .to_string();
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id)
                        .or_insert(at);
                }
                (
                    StatusCode::ACCEPTED,
                    axum::Json(json!({"status": "success", "message": "Event processed"})),
                )
            }
        }),
    ))
    .await
}

/// A destination that never answers.
async fn hanging() -> std::net::SocketAddr {
    serve(Router::new().route(
        "/v2/enqueue",
        post(|_body: Bytes| async {
            std::future::pending::<()>().await;
            StatusCode::ACCEPTED
        }),
    ))
    .await
}

fn route(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "[[route]]\nname = {name:?}\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n\
         [route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = \"http://{addr}/v2/enqueue\"\n"
    )
}

/// Per-event latencies (202 -> healthy stub), sorted.
async fn run(
    name: &str,
    delivery: &str,
    routes: String,
    arrivals: Arrivals,
    n: usize,
    clients: usize,
) -> Vec<Duration> {
    let data = tempfile::tempdir().expect("tempdir");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = start_service(
        data.path(),
        &format!("[delivery]\ndedupe_window_secs = 0\n{delivery}\n{routes}"),
        async move {
            let _ = stopped.await;
        },
    )
    .await;
    let bodies = Arc::new(bodies(name, n));
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (bodies, accepted, next) = (bodies.clone(), accepted.clone(), next.clone());
        let url = format!("http://{addr}/webhook");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((id, body)) = bodies.get(i) else {
                    return;
                };
                let resp = post_webhook(&client, &url, body.clone())
                    .await
                    .expect("post");
                let at = Instant::now();
                assert_eq!(resp.status(), StatusCode::ACCEPTED, "webhook {i} refused");
                accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), at);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let started = Instant::now();
    loop {
        let got = bodies
            .iter()
            .filter(|(id, _)| {
                arrivals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(id)
            })
            .count();
        if got == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{name}: the healthy route delivered {got} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies: Vec<Duration> = bodies
        .iter()
        .map(|(id, _)| arrivals[id].saturating_duration_since(accepted[id]))
        .collect();
    latencies.sort();
    let _ = stop.send(());
    // Held requests of a hanging neighbour keep the drain busy until its
    // timeout: do not wait for them.
    server.abort();
    latencies
}

fn pct(l: &[Duration], p: f64) -> Duration {
    let i = ((l.len() as f64 - 1.0) * p).round() as usize;
    l[i.min(l.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A sink that answers 503 while `down` is set, else 202; counts every
/// request and notes when each alert was first accepted.
async fn flapping(
    down: Arc<std::sync::atomic::AtomicBool>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    arrivals: Arrivals,
) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering::SeqCst;
    serve(Router::new().route(
        "/v2/enqueue",
        post(move |body: Bytes| {
            let (down, requests, arrivals) = (down.clone(), requests.clone(), arrivals.clone());
            async move {
                requests.fetch_add(1, SeqCst);
                if down.load(SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let id = v["dedup_key"].as_str().unwrap_or("").to_string();
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id)
                        .or_insert_with(Instant::now);
                }
                StatusCode::ACCEPTED
            }
        }),
    ))
    .await
}

/// The outage figures of issue 21 (a sink down for `secs` with `n`
/// events waiting): requests it got while down, and how long after it
/// came back every event was delivered; with the breaker, and without it
/// (`breaker_failures = 0`), in the same run, default retry settings.
async fn outage(n: usize, secs: u64, breaker: bool) -> (usize, Duration) {
    use std::sync::atomic::Ordering::SeqCst;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let arrivals: Arrivals = Arc::default();
    let sink = flapping(down.clone(), requests.clone(), arrivals.clone()).await;
    let data = tempfile::tempdir().expect("tempdir");
    let (addr, server) = start_service(
        data.path(),
        &format!(
            "[delivery]\ndedupe_window_secs = 0\n{}\n{}",
            if breaker { "" } else { "breaker_failures = 0" },
            route("sink", sink)
        ),
        std::future::pending(),
    )
    .await;
    let client = reqwest::Client::new();
    let tag = if breaker { "obrk" } else { "onone" };
    for (_, body) in bodies(tag, n) {
        let resp = post_webhook(&client, format!("http://{addr}/webhook"), body)
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let while_down = requests.load(SeqCst);
    down.store(false, SeqCst);
    let back = Instant::now();
    while arrivals.lock().unwrap_or_else(|p| p.into_inner()).len() < n {
        assert!(back.elapsed() < Duration::from_secs(900), "not recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = back.elapsed();
    server.abort();
    (while_down, recovered)
}

fn main() {
    let rounds = env_usize("ZTBRIDGE_BENCH_ROUNDS", 5).max(1);
    let n = env_usize("ZTBRIDGE_BENCH_EVENTS", 200);
    let clients = env_usize("ZTBRIDGE_BENCH_CLIENTS", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outage_secs = env_usize("ZTBRIDGE_BENCH_OUTAGE_SECS", 0) as u64;
    if outage_secs > 0 {
        let events = env_usize("ZTBRIDGE_BENCH_OUTAGE_EVENTS", 500);
        rt.block_on(async move {
            println!("outage: {events} events, the sink answering 503 for {outage_secs} s");
            for breaker in [false, true] {
                let (requests, recovered) = outage(events, outage_secs, breaker).await;
                println!(
                    "  breaker {:<3}  {requests:>6} requests while down ({:.1}/s)  all delivered {:.1} s after it came back",
                    if breaker { "on" } else { "off" },
                    requests as f64 / outage_secs as f64,
                    recovered.as_secs_f64()
                );
            }
        });
        return;
    }
    rt.block_on(async move {
        let arrivals: Arrivals = Arc::default();
        let healthy = answering(arrivals.clone()).await;
        let other_ok = answering(Arc::default()).await;
        let other_hangs = hanging().await;

        // Warm-up (compile cache, connections), not reported.
        let _ = run("warm", "", route("healthy", healthy), arrivals.clone(), 50, clients).await;
        let both = |other| format!("{}{}", route("healthy", healthy), route("other", other));
        // The three modes, interleaved round by round so that the load of
        // the machine weighs on each alike; per mode, the median p50/p99.
        let mut modes: Vec<(&str, Vec<f64>, Vec<f64>)> = ["alone", "neighbour ok", "neighbour hangs"]
            .iter()
            .map(|m| (*m, vec![], vec![]))
            .collect();
        for round in 0..rounds {
            for (i, (mode, p50s, p99s)) in modes.iter_mut().enumerate() {
                let routes = match i {
                    0 => route("healthy", healthy),
                    1 => both(other_ok),
                    _ => both(other_hangs),
                };
                let tag = format!("{}{round}", mode.replace(' ', ""));
                let l = run(&tag, "", routes, arrivals.clone(), n, clients).await;
                p50s.push(pct(&l, 0.5).as_secs_f64());
                p99s.push(pct(&l, 0.99).as_secs_f64());
            }
        }
        // Before bulkheads: every route may take every slot (the hanging
        // route's requests end at request_timeout_ms, 2 s here).
        let shared = run(
            "shared",
            "route_max_in_flight = 64\n[limits]\nrequest_timeout_ms = 2000",
            both(other_hangs),
            arrivals.clone(),
            n,
            clients,
        )
        .await;
        modes.push((
            "hangs, no bulkhead",
            vec![pct(&shared, 0.5).as_secs_f64()],
            vec![pct(&shared, 0.99).as_secs_f64()],
        ));

        println!(
            "bulkhead: {n} webhooks, {clients} clients, median of {rounds} rounds; healthy route's delivery latency (202 -> destination)"
        );
        let base = median(&modes[0].2);
        for (name, p50s, p99s) in &modes {
            let p99 = median(p99s);
            println!(
                "  {name:<18} p50 {:>8.1} ms  p99 {:>8.1} ms  p99 / alone {:.2}x   (p99 per round, ms: {})",
                median(p50s) * 1000.0,
                p99 * 1000.0,
                p99 / base,
                p99s.iter()
                    .map(|v| format!("{:.1}", v * 1000.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    });
}
