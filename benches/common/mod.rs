//! What the benchmarks share: knobs from the environment, the sample
//! webhook, loopback servers, the service in-process, and waiting for a
//! `ztbridge serve` child to be ready.  Each benchmark uses some of it.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{Value, json};
use ztbridge_runtime::Builtins;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;

pub const WASM_DIR: &str = env!("ZTBRIDGE_WASM_DIR");
pub const ROUTING_KEY: &str = "R0UTINGKEYabcdef0123456789abcdef";

/// A whole-number knob from the environment variable `name`, else
/// `default` (unset or not a number).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The alert the benchmarks post (with distinct IDs):
/// tests/fixtures/events/critical-lockout.json.
pub fn sample_event() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/events/critical-lockout.json"
        ))
        .expect("fixture"),
    )
    .expect("fixture JSON")
}

/// A webhook body for alert `id`: `event` with that ID, as JSON gzip'd at
/// `level`, as Superna sends it.
pub fn gzip_webhook(event: &Value, id: &str, level: flate2::Compression) -> Vec<u8> {
    let mut v = event.clone();
    v["id"] = json!(id);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
    e.write_all(&serde_json::to_vec(&v).expect("json"))
        .expect("gzip");
    e.finish().expect("gzip")
}

/// POSTs a gzip JSON webhook `body` to `url` with the headers Superna
/// sends (`content-type: application/json`, `content-encoding: gzip`).
pub async fn post_webhook(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
}

/// A loopback port that is free now, for a server started next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Serves `router` on a free loopback port, in a task of the current
/// runtime; its address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

/// The service in-process, with the built-in PagerDuty transform: the
/// configuration `config` with `data_dir = data` before it, on a free
/// loopback port until `shutdown` completes.  Its address and its task.
pub async fn start_service(
    data: &Path,
    config: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let config = Config::parse(
        &format!("data_dir = {:?}\n{config}", data.display().to_string()),
        "bench",
    )
    .expect("config");
    let mut builtins = Builtins::new();
    builtins.insert(
        "pagerduty".into(),
        Arc::from(std::fs::read(format!("{WASM_DIR}/pagerduty.wasm")).expect("component")),
    );
    let app = Arc::new(App::build(config, &builtins, true).expect("app"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { app.serve(listener, shutdown).await });
    (addr, server)
}

/// Polls `{base}/readyz` every 50 ms until it answers a success or
/// `timeout` passes; whether it did.
pub async fn wait_ready(base: &str, timeout: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
