//! What the benchmarks share: knobs from the environment, the sample
//! webhook, loopback servers, the service in-process, and a
//! `ztbridge serve` child.  Each benchmark uses some of it.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{Value, json};
use ztbridge_runtime::Builtins;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;

#[path = "../../tests/common/listen_log.rs"]
mod listen_log;
use listen_log::bound_port;

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

/// A `ztbridge serve` child; killed on drop.
pub struct ServeChild {
    /// The process (its pid is what the benchmarks measure).
    pub child: std::process::Child,
    /// The port it bound itself (`listen = "127.0.0.1:0"`).
    pub port: u16,
    /// Its stderr, shown when it fails to start.
    log_path: PathBuf,
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeChild {
    /// Starts `ztbridge serve` with `config` (listen and data_dir are set
    /// here; data_dir in `dir`), logging at `log_level` (the
    /// line naming the bound port is always logged) with `env` added;
    /// returns once `/readyz` answers a success, else panics with the
    /// reason and its log's tail.
    ///
    /// The child binds port 0 and logs the port: a port found free here
    /// and bound by the child later can be taken in between (by any
    /// listener, or as a connection's source port), and the child would
    /// then fail to start.
    pub async fn start(dir: &Path, config: &str, log_level: &str, env: &[(&str, &str)]) -> Self {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = dir.join("ztbridge.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n{config}",
                dir.join("data").display().to_string()
            ),
        )
        .expect("config");
        let log_path = dir.join("stderr.log");
        let log = std::fs::File::create(&log_path).expect("log");
        // Named apart: a cluster node's default name is host:port.
        let node = format!(
            "bench-node-{}-{}",
            std::process::id(),
            STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"))
            .args(["serve", "--config", path.to_str().expect("path")])
            .env(
                "RUST_LOG",
                format!("{log_level},ztbridge_runtime::http=info"),
            )
            .env("ZTBRIDGE_STORE_NODE", node)
            .envs(env.iter().copied())
            .stderr(log)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn ztbridge");
        let mut server = ServeChild {
            child,
            port: 0,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        server.port = loop {
            let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
            if let Some(port) = bound_port(&log) {
                break port;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                server.fail(&format!("exited ({status}) before listening"));
            }
            if Instant::now() >= deadline {
                server.fail("not listening after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let client = reqwest::Client::new();
        let why = loop {
            let last = match client.get(server.url("/readyz")).send().await {
                Ok(r) if r.status().is_success() => return server,
                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if let Ok(Some(status)) = server.child.try_wait() {
                break format!("exited ({status}) before ready");
            }
            if Instant::now() >= deadline {
                break format!("not ready after 120 s; /readyz: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        server.fail(&why)
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn fail(&self, why: &str) -> ! {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("ztbridge serve {why}; its log ends:\n{}", tail.join("\n"));
    }
}
