//! Test harness: the real server in-process on loopback, stub destinations
//! that speak the documented protocols, and the PagerDuty request schema.
#![allow(dead_code)]

pub mod child;
pub mod cluster;
pub mod listen_log;
pub mod pg;
pub mod stub;

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use ztbridge_runtime::Builtins;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;

pub const WASM_DIR: &str = env!("ZTBRIDGE_WASM_DIR");
pub const ROUTING_KEY: &str = "R0UTINGKEYabcdef0123456789abcdef";

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

pub fn event_fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).expect("read"),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 8, "fixtures missing");
    v
}

pub fn wasm_path(name: &str) -> String {
    format!("{WASM_DIR}/{name}.wasm")
}

pub fn builtins() -> Builtins {
    let mut b = Builtins::new();
    for name in ["pagerduty", "jitbit", "opsgenie", "splunk", "template"] {
        b.insert(
            name.to_string(),
            Arc::from(std::fs::read(wasm_path(name)).expect("built-in component")),
        );
    }
    b
}

/// Runs the real binary: exit code, stdout as JSON (or null), stderr.
pub fn ztbridge(args: &[&str]) -> (i32, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ztbridge");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// The PagerDuty Events v2 `/enqueue` request schema from PagerDuty's own
/// OpenAPI description.
pub fn pagerduty_schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let mut doc: Value =
            serde_json::from_str(&fixture("pagerduty-events-v2.openapi.json")).expect("openapi");
        let obj = doc.as_object_mut().expect("object");
        obj.insert(
            "$ref".into(),
            json!("#/paths/~1enqueue/post/requestBody/content/application~1json/schema"),
        );
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build(&doc)
            .expect("schema")
    })
}

/// Schema errors plus the documented limits the schema does not encode.
pub fn pagerduty_problems(body: &Value) -> Vec<String> {
    let mut problems: Vec<String> = pagerduty_schema()
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    if let Some(k) = body.get("dedup_key").and_then(Value::as_str) {
        if k.chars().count() > 255 {
            problems.push("dedup_key longer than 255".into());
        }
    }
    if let Some(s) = body.pointer("/payload/summary").and_then(Value::as_str) {
        if s.chars().count() > 1024 {
            problems.push("summary longer than 1024".into());
        }
    }
    let action = body
        .get("event_action")
        .and_then(Value::as_str)
        .unwrap_or("");
    if action == "trigger" && body.get("payload").is_none() {
        problems.push("trigger without payload".into());
    }
    if action != "trigger" && body.get("dedup_key").is_none() {
        problems.push("acknowledge/resolve without dedup_key".into());
    }
    if body.to_string().len() > 512 * 1024 {
        problems.push("request larger than 512 KB".into());
    }
    problems
}

/// One request a stub received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("stub received JSON")
    }
}

/// A scripted answer: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct StubState {
    received: Mutex<Vec<Received>>,
    /// Answers given before the protocol's normal behaviour resumes.
    script: Mutex<VecDeque<Answer>>,
    /// Answer every request this way until cleared (an outage).
    outage: Mutex<Option<Answer>>,
    /// Each answer waits a pseudo-random time in this range (ms).
    delay_ms: Mutex<(u64, u64)>,
    /// Requests being answered now, and the most seen at once.
    active: std::sync::atomic::AtomicUsize,
    max_active: std::sync::atomic::AtomicUsize,
    /// While set, every request is held unanswered (a hanging
    /// destination) until `release_held`.
    held: std::sync::atomic::AtomicBool,
    /// Wakes the held requests.
    gate: tokio::sync::Notify,
}

/// Decrements the stub's active count when a request is answered.
struct ActiveGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn answer(a: Answer) -> axum::response::Response {
    let (status, hdrs, body) = a;
    let mut h = HeaderMap::new();
    for (k, v) in hdrs {
        h.insert(k, v.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), h, body).into_response()
}

/// A stub PagerDuty Events API v2: validates each request against the
/// published schema (400 with `errors` when invalid, like PagerDuty),
/// checks the routing key (a wrong one gets 400 "invalid routing key"),
/// answers 202 with the dedup_key, or whatever was scripted.
#[derive(Clone)]
pub struct StubPagerDuty {
    pub addr: SocketAddr,
    state: Arc<StubState>,
}

async fn pd_enqueue(
    State(s): State<Arc<StubState>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    use std::sync::atomic::Ordering::SeqCst;
    let now_active = s.active.fetch_add(1, SeqCst) + 1;
    let _active = ActiveGuard(&s.active);
    s.max_active.fetch_max(now_active, SeqCst);
    let text = String::from_utf8_lossy(&body).into_owned();
    let n = {
        let mut r = s.received.lock().unwrap();
        r.push(Received {
            at: Instant::now(),
            path: "/v2/enqueue".into(),
            headers: headers.clone(),
            body: text.clone(),
        });
        r.len() as u64
    };
    loop {
        let opened = s.gate.notified();
        tokio::pin!(opened);
        opened.as_mut().enable();
        if !s.held.load(SeqCst) {
            break;
        }
        opened.await;
    }
    let (lo, hi) = *s.delay_ms.lock().unwrap();
    if hi > 0 {
        let spread = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % (hi - lo + 1);
        tokio::time::sleep(Duration::from_millis(lo + spread)).await;
    }
    if let Some(a) = s.outage.lock().unwrap().clone() {
        return answer(a);
    }
    let scripted = s.script.lock().unwrap().pop_front();
    if let Some(a) = scripted {
        return answer(a);
    }
    let bad = |errors: Vec<String>| {
        (StatusCode::BAD_REQUEST, axum::Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})))
            .into_response()
    };
    if !headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        return bad(vec!["Content-Type must be application/json".into()]);
    }
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return bad(vec!["body is not JSON".into()]);
    };
    let problems = pagerduty_problems(&v);
    if !problems.is_empty() {
        return bad(problems);
    }
    if v.get("routing_key").and_then(Value::as_str) != Some(ROUTING_KEY) {
        return bad(vec!["Invalid routing key".into()]);
    }
    let dedup = v.get("dedup_key").cloned().unwrap_or(json!("generated"));
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup})),
    )
        .into_response()
}

impl StubPagerDuty {
    pub async fn start() -> StubPagerDuty {
        StubPagerDuty::start_on("127.0.0.1:0")
            .await
            .expect("bind stub")
    }

    /// A stub on `addr` (`"[::1]:0"`...); `None` when it cannot bind
    /// (no IPv6 on this machine).
    pub async fn start_on(addr: &str) -> Option<StubPagerDuty> {
        let state = Arc::new(StubState::default());
        let app = Router::new()
            .route("/v2/enqueue", post(pd_enqueue))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("stub serve") });
        Some(StubPagerDuty { addr, state })
    }

    pub fn url(&self) -> String {
        format!("http://{}/v2/enqueue", self.addr)
    }

    /// Answers to give next, before normal behaviour.
    pub fn script(&self, answers: Vec<Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Answers every request with `a` until `end_outage`.
    pub fn outage(&self, a: Answer) {
        *self.state.outage.lock().unwrap() = Some(a);
    }

    pub fn end_outage(&self) {
        *self.state.outage.lock().unwrap() = None;
    }

    /// Each answer takes `lo..=hi` ms.
    pub fn delay(&self, lo: u64, hi: u64) {
        *self.state.delay_ms.lock().unwrap() = (lo, hi.max(lo));
    }

    /// Holds every request unanswered (the connection open) until
    /// `release_held`: a destination that hangs.
    pub fn hold(&self) {
        self.state
            .held
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answers the held requests, and the next ones at once.
    pub fn release_held(&self) {
        self.state
            .held
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.state.gate.notify_waiters();
    }

    /// Requests being answered (or held) now.
    pub fn active(&self) -> usize {
        self.state.active.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most requests the stub was answering at once.
    pub fn max_concurrency(&self) -> usize {
        self.state
            .max_active
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_until(timeout, || {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("stub got {} requests, expected {n}", self.received().len()))
    }
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub async fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port that is free now, for a server started next to listen
/// on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits (at most `timeout`) until something accepts connections on this
/// loopback port; whether it did.
pub async fn wait_listening(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .await
    .is_some()
}

/// The real server, in-process, on a loopback port.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    _data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Starts with `config_toml` (a `data_dir` is added).
    pub async fn start(config_toml: &str) -> Server {
        let data = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "data_dir = {:?}\n{config_toml}",
            data.path().display().to_string()
        );
        let config = Config::parse(&text, "test").expect("config");
        let app = Arc::new(App::build(config, &builtins(), true).expect("app"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run_app = app.clone();
        tokio::spawn(async move {
            run_app
                .serve(listener, async move {
                    let _ = rx.await;
                })
                .await
                .expect("server");
        });
        Server {
            addr,
            app,
            client: reqwest::Client::new(),
            _data: data,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a webhook; returns status and JSON answer.
    pub async fn post(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.client.post(self.url("/webhook")).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("post");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer is not JSON: {text:?}"));
        (status, json)
    }

    /// POSTs gzip JSON with Superna's headers.
    pub async fn post_gzip(&self, json: &str) -> (u16, Value) {
        self.post(
            gzip(json.as_bytes()),
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
        )
        .await
    }

    pub async fn post_plain(&self, json: &str) -> (u16, Value) {
        self.post(
            json.as_bytes().to_vec(),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// The text `GET /metrics` answers.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The samples of `name` from `GET /metrics` whose labels include
    /// `labels`, summed; `None` when there is none.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics_text().await;
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text format");
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .reduce(|a, b| a + b)
    }

    /// `ztbridge_webhooks_rejected_total{reason}` from `GET /metrics`.
    pub async fn rejected(&self, reason: &str) -> f64 {
        self.metric("ztbridge_webhooks_rejected_total", &[("reason", reason)])
            .await
            .unwrap_or(0.0)
    }

    /// `GET /api/events/{receipt}`.
    pub async fn event(&self, receipt: &str) -> Value {
        let resp = self
            .client
            .get(self.url(&format!("/api/events/{receipt}")))
            .send()
            .await
            .expect("get");
        resp.json().await.expect("json")
    }

    /// Posts `body` (gzip JSON, as Superna sends it), checks it is
    /// accepted (202) and waits (at most `timeout`) until its deliveries
    /// settle; returns the record.
    pub async fn deliver(&self, body: &str, timeout: Duration) -> Value {
        let (status, answer) = self.post_gzip(body).await;
        assert_eq!(status, 202, "{answer}");
        self.settled(answer["receipt_id"].as_str().expect("receipt"), timeout)
            .await
    }

    /// Waits until every delivery of `receipt` is delivered or failed.
    pub async fn settled(&self, receipt: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.event(receipt).await;
            let done = ev["deliveries"].as_array().is_some_and(|ds| {
                ds.iter()
                    .all(|d| d["state"] == "delivered" || d["state"] == "failed")
            });
            if done || Instant::now() > deadline {
                return ev;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The outcomes of the attempts of a record's first delivery, in order.
pub fn outcomes(record: &Value) -> Vec<Value> {
    record["deliveries"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["outcome"].clone())
        .collect()
}

/// Asserts that a record's first delivery was delivered, at attempt
/// `attempts`; the attempts' outcomes.
pub fn delivered_after(record: &Value, attempts: usize) -> Vec<Value> {
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    let o = outcomes(record);
    assert_eq!(o.len(), attempts, "{record}");
    o
}

/// Asserts that a record's first delivery was tried once and not
/// retried: one attempt, not retryable, whose message contains `want`.
pub fn assert_not_retried(record: &Value, want: &str) {
    let o = outcomes(record);
    assert_eq!(o.len(), 1, "not retried: {record}");
    assert_eq!(o[0]["retryable"], false, "{record}");
    assert!(
        o[0]["message"].as_str().unwrap_or_default().contains(want),
        "{record}"
    );
}

/// Runs the real binary with `RUST_LOG` and the variables in `unset`
/// removed from its environment: exit code, then stdout and stderr as one
/// text.
pub fn ztbridge_text(args: &[&str], unset: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"));
    command.args(args).env_remove("RUST_LOG");
    for name in unset {
        command.env_remove(name);
    }
    let out = command.output().expect("run ztbridge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `wasm` signed by the real binary (run as [`ztbridge_text`] runs it)
/// with a fresh key pair, as `name` in a new temporary directory that
/// holds the keys too.  Returns (signed file, key directory, the
/// temporary directory, to keep alive).
pub fn sign_with_fresh_key(
    wasm: &std::path::Path,
    name: &str,
    unset: &[&str],
) -> (String, String, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("tempdir");
    let kdir = keys.path().display().to_string();
    let (code, out) = ztbridge_text(&["keys", "generate", "--out", &kdir], unset);
    assert_eq!(code, 0, "{out}");
    let file = keys.path().join(name).display().to_string();
    let (code, out) = ztbridge_text(
        &[
            "transform",
            "sign",
            &wasm.display().to_string(),
            "--key",
            &format!("{kdir}/ztbridge-signing.key"),
            "--out",
            &file,
        ],
        unset,
    );
    assert_eq!(code, 0, "{out}");
    (file, kdir, keys)
}

/// The compiled-component cache the tests share (`--cache`):
/// `ZTBRIDGE_COMPILE_CACHE`, else `compile-cache` in the tests' temporary
/// target directory.
pub fn compile_cache_dir() -> String {
    std::env::var("ZTBRIDGE_COMPILE_CACHE").unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("compile-cache")
            .display()
            .to_string()
    })
}

/// A PagerDuty route pointing at `stub`.
pub fn pagerduty_route(stub: &StubPagerDuty, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n{extra}\n[route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = {:?}\n",
        stub.url()
    )
}

/// Fast retries for tests.
/// Quick retries; duplicate detection off, because these tests send the
/// same fixture again on purpose (to test the transforms' own idempotency).
pub const FAST_RETRY: &str = "[delivery]\nmax_attempts = 4\ninitial_backoff_ms = 50\nmax_backoff_ms = 3000\ndedupe_window_secs = 0\n";

pub mod jitbit;
