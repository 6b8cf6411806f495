//! End to end, as a user would run it: `cargo bench --bench e2e` (about a
//! minute).  Starts the real `ztbridge serve` (release build) as a child
//! process with the built-in PagerDuty transform pointed at a sink in this
//! process that answers 202 at once and counts, loads it with gzip webhooks
//! (distinct alerts) from keep-alive clients, and prints:
//!
//! * accepted events/s (each fsync'd before its 202) and accept latency
//!   p50/p99, beside the same load on an accept-and-discard server
//!   measured in the same run (the limit);
//! * delivered events/s end to end: accepted, transformed in a fresh
//!   sandbox, delivered to the sink (counted there) and recorded as
//!   delivered (the service's `/metrics`);
//! * the stage budget: µs of CPU per event by stage.  The service measures
//!   its synchronous stages itself (`ZTBRIDGE_STAGE_CPU=1`: inflating, the
//!   JSON scan, the store's jobs with their share of each commit, the wasm
//!   steps); HTTP in and HTTP out are what the same server stack (axum,
//!   hyper) and client (reqwest) cost per request here, measured alone in
//!   the same run; the rest is the service's whole CPU (from /proc) minus
//!   those;
//! * RSS idle, after the load, and with 20 000 events pending behind a sink
//!   that is down (answering 503).
//!
//! Knobs: ZTBRIDGE_BENCH_SECS (load seconds, 30), ZTBRIDGE_BENCH_CLIENTS
//! (32), ZTBRIDGE_BENCH_PENDING (20000; 0 skips the memory phase).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::{ROUTING_KEY, ServeChild, env_usize, gzip_webhook, post_webhook, sample_event};
use serde_json::json;

/// Linux's USER_HZ: /proc CPU times are in these ticks.
const TICKS_PER_SEC: f64 = 100.0;

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU seconds (user + system) of this process's threads named `name`.
fn threads_cpu(name: &str) -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc") {
        let Ok(stat) = std::fs::read_to_string(task.expect("task").path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(name) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        ticks += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    ticks as f64 / TICKS_PER_SEC
}

/// CPU seconds (user + system) of process `pid`, all threads.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let close = stat.rfind(')').expect("stat");
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    (fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)) as f64
        / TICKS_PER_SEC
}

/// Resident set size of process `pid`, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// What a load run saw.
struct Load {
    /// Webhooks answered 202.
    accepted: usize,
    /// Other answers.
    refused: usize,
    /// Wall time of the run.
    elapsed: Duration,
    /// Accept latencies, sorted.
    latencies: Vec<Duration>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
    fn pct_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)].as_secs_f64() * 1000.0
    }
}

/// `clients` keep-alive clients post distinct webhooks to `url` until
/// `until` passes or `limit` webhooks were sent.
async fn load(url: String, tag: &str, clients: usize, until: Duration, limit: usize) -> Load {
    let template = Arc::new(sample_event());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, next, template, tag) =
            (url.clone(), next.clone(), template.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut lat, mut accepted, mut refused) = (Vec::new(), 0usize, 0usize);
            while started.elapsed() < until {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let body = gzip_webhook(
                    &template,
                    &format!("RSW-E2E-{tag}-{i:08}"),
                    flate2::Compression::fast(),
                );
                let t = Instant::now();
                let resp = post_webhook(&client, &url, body).await;
                match resp {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.bytes().await;
                        if status == StatusCode::ACCEPTED {
                            accepted += 1;
                            lat.push(t.elapsed());
                        } else {
                            refused += 1;
                        }
                    }
                    Err(_) => refused += 1,
                }
            }
            (lat, accepted, refused)
        }));
    }
    let mut run = Load {
        accepted: 0,
        refused: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (lat, a, r) = t.await.expect("client");
        run.latencies.extend(lat);
        run.accepted += a;
        run.refused += r;
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    run
}

/// Serves `router` on a loopback port of runtime `rt`.
fn serve(rt: &tokio::runtime::Runtime, router: Router) -> std::net::SocketAddr {
    rt.block_on(common::serve(router))
}

/// The service's `/metrics`, as (name with labels, value).
fn scrape(rt: &tokio::runtime::Runtime, base: &str) -> Vec<(String, f64)> {
    let text = rt.block_on(async {
        match reqwest::get(format!("{base}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    });
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include every one of
/// `labels` (`outcome="delivered"`).
fn metric(m: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, l) = k.split_once('{').unwrap_or((k, ""));
            n == name && labels.iter().all(|want| l.contains(want))
        })
        .map(|(_, v)| v)
        .sum()
}

fn main() {
    let secs = env_usize("ZTBRIDGE_BENCH_SECS", 30) as u64;
    let clients = env_usize("ZTBRIDGE_BENCH_CLIENTS", 32);
    let pending = env_usize("ZTBRIDGE_BENCH_PENDING", 20_000);
    let calibrate = Duration::from_secs((secs / 6).clamp(2, 5));

    // The sink: an instant PagerDuty that counts, or answers 503 when down.
    let sink_rt = runtime("e2e-sink", 1);
    let delivered = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let sink = {
        let (delivered, down) = (delivered.clone(), down.clone());
        serve(
            &sink_rt,
            Router::new().route(
                "/v2/enqueue",
                post(move |_body: Bytes| {
                    let (delivered, down) = (delivered.clone(), down.clone());
                    async move {
                        if down.load(Ordering::Relaxed) {
                            return (
                                StatusCode::SERVICE_UNAVAILABLE,
                                axum::Json(json!({"status": "unavailable"})),
                            );
                        }
                        delivered.fetch_add(1, Ordering::Relaxed);
                        (
                            StatusCode::ACCEPTED,
                            axum::Json(json!({"status": "success", "message": "Event processed"})),
                        )
                    }
                }),
            ),
        )
    };
    let load_rt = runtime("e2e-load", 2);

    // The limit, and HTTP in: an axum server that reads the body and answers.
    let limit_rt = runtime("e2e-limit", 2);
    let limit_addr = serve(
        &limit_rt,
        Router::new().route(
            "/webhook",
            post(|_body: Bytes| async {
                (
                    StatusCode::ACCEPTED,
                    axum::Json(json!({"status": "accepted"})),
                )
            }),
        ),
    );
    let cpu0 = threads_cpu("e2e-limit");
    let limit = load_rt.block_on(load(
        format!("http://{limit_addr}/webhook"),
        "limit",
        clients,
        calibrate,
        usize::MAX,
    ));
    let http_in_us = (threads_cpu("e2e-limit") - cpu0) / limit.accepted.max(1) as f64 * 1e6;
    drop(limit_rt);

    // HTTP out: reqwest posting a PagerDuty-sized event to the sink.
    let out_rt = runtime("e2e-out", 2);
    let pd_body = serde_json::to_string(&json!({
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "superna-zt-RSW-E2E-00000000",
        "payload": {"summary": "[Critical] LOCKED_OUT: CORP\\jsmith on prod-cluster-01 - Mass file rename, Honeypot access (from 10.20.30.41)",
                    "source": "prod-cluster-01", "severity": "critical", "component": "\\\\prod-cluster-01\\finance",
                    "group": "ISILON_CLUSTER", "class": "lockout", "timestamp": "2025-06-11T10:15:03Z",
                    "custom_details": {"received_event": std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events/critical-lockout.json")).expect("fixture")}}
    })).expect("json");
    let (out_n, out_cpu) = {
        let cpu0 = threads_cpu("e2e-out");
        let sent = Arc::new(AtomicUsize::new(0));
        out_rt.block_on(async {
            let client = reqwest::Client::new();
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (client, sent, body, url) = (
                    client.clone(),
                    sent.clone(),
                    pd_body.clone(),
                    format!("http://{sink}/v2/enqueue"),
                );
                tasks.push(tokio::spawn(async move {
                    while started.elapsed() < calibrate {
                        if let Ok(r) = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                        {
                            let _ = r.bytes().await;
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.expect("sender");
            }
        });
        (sent.load(Ordering::Relaxed), threads_cpu("e2e-out") - cpu0)
    };
    let http_out_us = out_cpu / out_n.max(1) as f64 * 1e6;
    drop(out_rt);
    delivered.store(0, Ordering::Relaxed);

    // The service.
    let dir = tempfile::tempdir().expect("tempdir");
    let http = runtime("e2e-ctl", 1);
    let server = http.block_on(ServeChild::start(
        dir.path(),
        &format!(
            "[delivery]\nmax_pending = 1000000\ninitial_backoff_ms = 5000\n\
             [[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n\
             [route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = \"http://{sink}/v2/enqueue\"\n"
        ),
        "info",
        &[("ZTBRIDGE_STAGE_CPU", "1")],
    ));
    let pid = server.child.id();
    let base = server.url("");
    // Warm up (connections, the allocator, the pool's slots).
    let _ = load_rt.block_on(load(
        format!("{base}/webhook"),
        "warm",
        clients,
        Duration::from_secs(2),
        2000,
    ));
    while delivered.load(Ordering::Relaxed)
        < 2000.min(metric(
            &scrape(&http, &base),
            "ztbridge_webhooks_accepted_total",
            &[],
        ) as usize)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss_idle = rss_mib(pid);

    let m0 = scrape(&http, &base);
    let (cpu0, base_delivered) = (process_cpu(pid), delivered.load(Ordering::Relaxed));
    let started = Instant::now();
    let run = load_rt.block_on(load(
        format!("{base}/webhook"),
        "run",
        clients,
        Duration::from_secs(secs),
        usize::MAX,
    ));
    // Every accepted event counted at the sink and recorded as delivered.
    // (queue_depth counts open deliveries: one leaves it once its attempt
    // is recorded.)
    let mut last = scrape(&http, &base);
    while delivered.load(Ordering::Relaxed) - base_delivered < run.accepted
        || metric(&last, "ztbridge_queue_depth", &[]) > 0.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(secs + 600),
            "not everything was delivered"
        );
        std::thread::sleep(Duration::from_millis(5));
        if delivered.load(Ordering::Relaxed) - base_delivered >= run.accepted {
            last = scrape(&http, &base);
        }
    }
    let end_to_end = started.elapsed();
    let cpu = process_cpu(pid) - cpu0;
    let rss_after = rss_mib(pid);
    let e2e_rate = run.accepted as f64 / end_to_end.as_secs_f64();
    let per_event = |s: f64| s / run.accepted.max(1) as f64 * 1e6;

    println!(
        "e2e: {secs} s of gzip webhooks (distinct alerts) from {clients} keep-alive clients, loopback; ztbridge serve ({}, {} build, mimalloc) -> built-in PagerDuty transform -> sink answering 202",
        if cfg!(debug_assertions) {
            "debug build: a smoke run, its figures mean nothing"
        } else {
            "release"
        },
        // The packages ship the musl build, `cargo build` makes the glibc
        // one; their figures differ (README, Benchmarks).
        if cfg!(target_env = "musl") {
            "musl"
        } else {
            "glibc"
        }
    );
    println!(
        "{:<44} {:>10} {:>9} {:>9}",
        "", "events/s", "p50 ms", "p99 ms"
    );
    println!(
        "{:<44} {:>10.0} {:>9.2} {:>9.2}",
        "accept-and-discard (the limit, same load)",
        limit.rate(),
        limit.pct_ms(0.5),
        limit.pct_ms(0.99)
    );
    println!(
        "{:<44} {:>10.0} {:>9.2} {:>9.2}",
        "ztbridge accepted (fsync before 202)",
        run.rate(),
        run.pct_ms(0.5),
        run.pct_ms(0.99)
    );
    println!("{:<44} {:>10.0}", "ztbridge delivered end to end", e2e_rate);
    println!(
        "ratio to the limit: accepted {:.3}, end to end {:.3}; refused {}; {} accepted, {} counted at the sink",
        run.rate() / limit.rate(),
        e2e_rate / limit.rate(),
        run.refused,
        run.accepted,
        delivered.load(Ordering::Relaxed) - base_delivered
    );

    // The stage budget.
    let stage = |name: &str| {
        let label = format!("stage=\"{name}\"");
        let at = |m: &[(String, f64)]| metric(m, "ztbridge_stage_cpu_seconds_total", &[&label]);
        per_event(at(&last) - at(&m0))
    };
    let rows = [
        ("HTTP in (axum/hyper, measured alone)", http_in_us),
        ("decompress (gzip)", stage("decompress")),
        ("parse (intake checks, JSON scan)", stage("parse")),
        ("store admit (insert + commit share)", stage("store_admit")),
        ("store claim (in-flight mark)", stage("store_claim")),
        ("transform (sandbox: new, steps, drop)", stage("transform")),
        ("HTTP out (reqwest, measured alone)", http_out_us),
        (
            "store finish (record + commit share)",
            stage("store_finish"),
        ),
    ];
    let total = per_event(cpu);
    let named: f64 = rows.iter().map(|(_, v)| v).sum();
    println!(
        "stage budget, µs of CPU per event (service total from /proc: {total:.1} µs = {:.2} cores at {e2e_rate:.0}/s)",
        total * e2e_rate / 1e6
    );
    for (label, us) in rows {
        println!("  {label:<42} {us:>8.1}");
    }
    println!(
        "  {:<42} {:>8.1}",
        "the rest (scheduling, logging, metrics...)",
        total - named
    );
    println!("memory (RSS): idle {rss_idle:.1} MiB, after the run {rss_after:.1} MiB");

    if pending > 0 {
        // The sink goes down: every event stays pending, on disk.
        down.store(true, Ordering::Relaxed);
        let m1 = scrape(&http, &base);
        let before = metric(&m1, "ztbridge_webhooks_accepted_total", &[]);
        let backlog = load_rt.block_on(load(
            format!("{base}/webhook"),
            "down",
            clients,
            Duration::from_secs(600),
            pending,
        ));
        let settle = Instant::now();
        // Let retries come round once (first backoff 5 s).
        while settle.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let m2 = scrape(&http, &base);
        println!(
            "memory (RSS) with {} events pending behind a sink that is down: {:.1} MiB (accepted {:.0}, open deliveries {:.0})",
            backlog.accepted,
            rss_mib(pid),
            metric(&m2, "ztbridge_webhooks_accepted_total", &[]) - before,
            metric(&m2, "ztbridge_queue_depth", &[]),
        );
    }
    drop(server);
}
