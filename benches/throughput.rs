//! End-to-end throughput and accept latency of the service, against the
//! limit: a server that accepts and discards, measured in the same run.
//!
//! * **discard**: an axum server on loopback whose `/webhook` reads the
//!   body and answers 202 (no inflate, no parse, no store, no delivery).
//! * **ztbridge**: the real service (the same router `serve` runs) with the
//!   built-in PagerDuty transform, delivering to a loopback stub that
//!   answers 202 at once; each webhook is committed (fsync) before its 202.
//!
//! Both get the same gzip webhooks (distinct alerts) from the same number
//! of concurrent keep-alive clients.  Reports accepted events/s, accept
//! latency p50/p99, and for ztbridge the delivered events/s (until the
//! stub has every event).
//!
//! `cargo bench --bench throughput` (ZTBRIDGE_BENCH_EVENTS,
//! ZTBRIDGE_BENCH_CLIENTS to change the load).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::{
    ROUTING_KEY, env_usize, gzip_webhook, post_webhook, sample_event, serve, start_service,
};
use serde_json::json;

fn bodies(n: usize) -> Vec<Vec<u8>> {
    let template = sample_event();
    (0..n)
        .map(|i| {
            gzip_webhook(
                &template,
                &format!("RSW-BENCH-{i:06}"),
                flate2::Compression::default(),
            )
        })
        .collect()
}

struct Run {
    /// Wall time to get every answer.
    elapsed: Duration,
    /// Per-request accept latency, sorted.
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

async fn load(url: String, bodies: Arc<Vec<Vec<u8>>>, clients: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, bodies, next) = (url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return lat;
                };
                let t = Instant::now();
                let resp = post_webhook(&client, &url, body.clone())
                    .await
                    .expect("post");
                let status = resp.status();
                let _ = resp.bytes().await;
                assert_eq!(status, StatusCode::ACCEPTED, "webhook {i} refused");
                lat.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run { elapsed, latencies }
}

fn main() {
    let n = env_usize("ZTBRIDGE_BENCH_EVENTS", 2000);
    let clients = env_usize("ZTBRIDGE_BENCH_CLIENTS", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let bodies = Arc::new(bodies(n));

        // The limit: accept and discard.
        let discard = serve(Router::new().route(
            "/webhook",
            post(|_body: Bytes| async { (StatusCode::ACCEPTED, axum::Json(json!({"status": "accepted"}))) }),
        ))
        .await;
        // Warm up connections and the allocator.
        let _ = load(format!("http://{discard}/webhook"), Arc::new(bodies[..50].to_vec()), clients).await;
        let base = load(format!("http://{discard}/webhook"), bodies.clone(), clients).await;

        // The stub PagerDuty: 202 at once, counts.
        let delivered = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(std::sync::Mutex::new(Instant::now()));
        let stub = {
            let (delivered, last) = (delivered.clone(), last.clone());
            serve(Router::new().route(
                "/v2/enqueue",
                post(move |_body: Bytes| {
                    let (delivered, last) = (delivered.clone(), last.clone());
                    async move {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        *last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                        (StatusCode::ACCEPTED, axum::Json(json!({"status": "success", "message": "Event processed"})))
                    }
                }),
            ))
            .await
        };
        let data = tempfile::tempdir().expect("tempdir");
        let (addr, _server) = start_service(
            data.path(),
            &format!(
                "[delivery]\ndedupe_window_secs = 0\n\
                 [[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n\
                 [route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = \"http://{stub}/v2/enqueue\"\n"
            ),
            std::future::pending(),
        )
        .await;
        let started = Instant::now();
        let zt = load(format!("http://{addr}/webhook"), bodies.clone(), clients).await;
        while delivered.load(Ordering::Relaxed) < n {
            if started.elapsed() > Duration::from_secs(600) {
                panic!("only {} of {n} delivered", delivered.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let end_to_end = *last.lock().unwrap_or_else(|p| p.into_inner()) - started;
        let e2e_rate = n as f64 / end_to_end.as_secs_f64();

        println!("throughput: {n} gzip webhooks, {clients} concurrent clients, loopback");
        println!(
            "{:<34} {:>12} {:>10} {:>10}",
            "", "events/s", "p50 ms", "p99 ms"
        );
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let row = |label: &str, run: &Run| {
            println!(
                "{:<34} {:>12.0} {:>10.2} {:>10.2}",
                label,
                run.rate(),
                ms(run.pct(0.5)),
                ms(run.pct(0.99))
            )
        };
        row("accept-and-discard (the limit)", &base);
        row("ztbridge accept (fsync'd)", &zt);
        println!(
            "{:<34} {:>12.0}",
            "ztbridge delivered end to end", e2e_rate
        );
        println!(
            "ratios to the limit: accept {:.2}, delivered {:.2}; p50 latency x{:.1}",
            zt.rate() / base.rate(),
            e2e_rate / base.rate(),
            ms(zt.pct(0.5)) / ms(base.pct(0.5)).max(1e-9)
        );
    });
}
