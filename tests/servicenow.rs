//! The ServiceNow transform (Python, transforms-py/servicenow, built and
//! signed by `ci/py.sh`) end to end: webhooks into the real server, the
//! real component in the sandbox, and a stub ServiceNow Table API on
//! loopback that keeps incidents.  One server carries two routes, basic
//! auth to one stub and OAuth bearer to another, so every scenario runs
//! with both; the stubs refuse any other credentials with 401.
//!
//! Plus its golden fixtures through `ztbridge transform test`, and the dry
//! run through `ztbridge transform run`.
//!
//! The component comes from `ZTBRIDGE_PY_SERVICENOW_WASM` (default
//! transforms-py/servicenow/servicenow.wasm).  When it is missing these
//! tests say so and pass, unless `ZTBRIDGE_REQUIRE_PY=1` (CI sets it).

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use common::*;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const WAIT: Duration = Duration::from_secs(60);
const USER: &str = "ztbridge.integration";
const PASSWORD: &str = "Sn-pa55:w0rd-7c6b";
const TOKEN: &str = "snow-oauth-0123456789abcdef";
const EVENT_ID: &str = "RSW-20250611-000123";

fn component() -> Option<PathBuf> {
    let p = std::env::var_os("ZTBRIDGE_PY_SERVICENOW_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("transforms-py/servicenow/servicenow.wasm"));
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("ZTBRIDGE_REQUIRE_PY").is_none(),
        "{} is missing and ZTBRIDGE_REQUIRE_PY is set: build it with `bash ci/py.sh`",
        p.display()
    );
    eprintln!(
        "SKIPPED: the ServiceNow transform is not built ({} missing); `bash ci/py.sh` builds it",
        p.display()
    );
    None
}

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: String,
    status: u16,
}

impl Seen {
    /// `GET incident`, `POST incident`, `PATCH <sys_id>` shortened to
    /// `PATCH sys_id`: the sequence of a flow's calls.
    fn call(&self) -> String {
        let what = if self.path.ends_with("/incident") {
            "incident"
        } else {
            "sys_id"
        };
        format!("{} {what}", self.method)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A scripted answer: status, extra headers, JSON body.
type Scripted = (u16, Vec<(String, String)>, Value);

/// An incident as the stub keeps it: the Table API record.
type Incident = serde_json::Map<String, Value>;

#[derive(Default)]
struct Inner {
    incidents: Vec<Incident>,
    seen: Vec<Seen>,
    /// The next requests' answers: `None` = behave normally.
    script: VecDeque<Option<Scripted>>,
}

/// A stub ServiceNow instance speaking the Table API for `incident`:
///
/// * `GET /api/now/table/incident?sysparm_query=correlation_id=X^...&sysparm_fields=a,b&sysparm_limit=n`
///   -> 200 `{"result": [records]}` (only the named fields);
/// * `POST /api/now/table/incident` (JSON) -> 201 `{"result": record}`
///   with a new `sys_id` (32 hex) and `number` (INC0010001...), state 1;
/// * `PATCH /api/now/table/incident/{sys_id}` (JSON) -> 200 `{"result":
///   record}`; `work_notes` are appended to the journal; an unknown sys_id
///   -> 404 `{"error": {"message": "No Record found", ...}, "status": "failure"}`;
/// * a body that is not a JSON object -> 400; any other credentials than
///   the configured basic or bearer ones -> 401, as ServiceNow answers.
#[derive(Clone)]
struct StubServiceNow {
    addr: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
    auth: Arc<String>,
}

fn error(status: u16, message: &str, detail: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"message": message, "detail": detail}, "status": "failure"}),
    )
}

impl StubServiceNow {
    async fn start(auth: String) -> StubServiceNow {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = StubServiceNow {
            addr: listener.local_addr().unwrap(),
            inner: Arc::default(),
            auth: Arc::new(auth),
        };
        let app = Router::new()
            .route("/api/now/table/incident", get(table).post(table))
            .route("/api/now/table/incident/{sys_id}", patch(record))
            .with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        stub
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    fn script(&self, answers: Vec<Option<Scripted>>) {
        self.lock().script.extend(answers);
    }

    fn incidents(&self) -> Vec<Incident> {
        self.lock().incidents.clone()
    }

    fn calls(&self) -> Vec<String> {
        self.lock().seen.iter().map(Seen::call).collect()
    }

    fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    fn clear(&self) {
        self.lock().seen.clear();
    }

    /// The incident with this correlation ID (exactly one expected).
    fn by_correlation(&self, cid: &str) -> Incident {
        let found: Vec<Incident> = self
            .incidents()
            .into_iter()
            .filter(|i| i["correlation_id"] == cid)
            .collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        found.into_iter().next().unwrap()
    }

    /// Handles one request: auth, the script, then the Table API.
    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: Option<String>,
        headers: &HeaderMap,
        body: &Bytes,
        sys_id: Option<&str>,
    ) -> Response {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let text = String::from_utf8_lossy(body).into_owned();
        let mut inner = self.lock();
        let authorized = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == self.auth.as_str());
        let scripted = inner.script.pop_front().flatten();
        let (status, extra, value) = if let Some(s) = scripted {
            s
        } else if !authorized {
            let (s, v) = error(
                401,
                "User Not Authenticated",
                "Required to provide Auth information",
            );
            (s, vec![], v)
        } else {
            let (s, v) = table_api(&mut inner, method, &query, &text, sys_id);
            (s, vec![], v)
        };
        inner.seen.push(Seen {
            at: Instant::now(),
            method: method.to_string(),
            path: path.to_string(),
            query,
            headers: headers.clone(),
            body: text,
            status,
        });
        let mut resp = (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(value.clone()),
        )
            .into_response();
        for (k, v) in extra {
            resp.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        resp
    }
}

/// The Table API proper.
fn table_api(
    inner: &mut Inner,
    method: &Method,
    query: &[(String, String)],
    body: &str,
    sys_id: Option<&str>,
) -> (u16, Value) {
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if method == Method::GET {
        // Encoded query: terms joined by `^`; `field=value` filters,
        // ORDERBY... terms sort (only newest-first by creation is needed).
        let q = param("sysparm_query").unwrap_or_default();
        let filters: Vec<(String, String)> = q
            .split('^')
            .filter(|t| !t.starts_with("ORDERBY") && !t.is_empty())
            .filter_map(|t| t.split_once('=').map(|(a, b)| (a.into(), b.into())))
            .collect();
        let mut found: Vec<&Incident> = inner
            .incidents
            .iter()
            .filter(|i| filters.iter().all(|(k, v)| i.get(k) == Some(&json!(v))))
            .collect();
        found.reverse();
        let limit: usize = param("sysparm_limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(10_000);
        let fields: Option<Vec<String>> =
            param("sysparm_fields").map(|f| f.split(',').map(String::from).collect());
        let result: Vec<Value> = found
            .into_iter()
            .take(limit)
            .map(|i| match &fields {
                Some(f) => Value::Object(
                    i.iter()
                        .filter(|(k, _)| f.contains(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                None => Value::Object(i.clone()),
            })
            .collect();
        return (200, json!({ "result": result }));
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(body) else {
        return error(400, "Exception while reading request", "not a JSON object");
    };
    match sys_id {
        None => {
            let n = inner.incidents.len() + 1;
            let mut inc = Incident::new();
            inc.insert("sys_id".into(), json!(format!("{n:0>32x}")));
            inc.insert("number".into(), json!(format!("INC{:07}", 10_000 + n)));
            inc.insert("state".into(), json!("1"));
            inc.insert("work_notes".into(), json!(""));
            for (k, v) in fields {
                inc.insert(k, v);
            }
            inner.incidents.push(inc.clone());
            (201, json!({ "result": inc }))
        }
        Some(id) => {
            let Some(inc) = inner.incidents.iter_mut().find(|i| i["sys_id"] == id) else {
                return error(
                    404,
                    "No Record found",
                    "Record doesn't exist or ACL restricts the record retrieval",
                );
            };
            for (k, v) in fields {
                if k == "work_notes" {
                    // A journal field: each update adds an entry.
                    let old = inc["work_notes"].as_str().unwrap_or_default().to_string();
                    let add = v.as_str().unwrap_or_default();
                    inc.insert(k, json!(format!("{old}\n---\n{add}")));
                } else {
                    inc.insert(k, v);
                }
            }
            (200, json!({ "result": inc.clone() }))
        }
    }
}

async fn table(
    State(stub): State<StubServiceNow>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stub.answer(
        &method,
        "/api/now/table/incident",
        query,
        &headers,
        &body,
        None,
    )
}

async fn record(
    State(stub): State<StubServiceNow>,
    UrlPath(sys_id): UrlPath<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/now/table/incident/{sys_id}");
    stub.answer(&method, &path, query, &headers, &body, Some(&sys_id))
}

/// Runs the binary; exit code and stdout + stderr.
fn run(args: &[&str]) -> (i32, String) {
    ztbridge_text(args, &[])
}

/// The component signed: as ci/py.sh signed it when it says which keys
/// to trust (target/py-signing/trusted), else signed here with a fresh key.
/// Returns (file, trusted key directory, the temp dir kept alive).
fn signed(wasm: &Path) -> (String, String, tempfile::TempDir) {
    sign_with_fresh_key(wasm, "servicenow.wasm", &[])
}

/// The delivery of `route` in a record.
fn delivery<'a>(record: &'a Value, route: &str) -> &'a Value {
    record["deliveries"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["route"] == route))
        .unwrap_or_else(|| panic!("no delivery for {route}: {record}"))
}

fn outcome(record: &Value, route: &str) -> String {
    let d = delivery(record, route);
    let attempts = d["attempts"].as_array().expect("attempts");
    attempts.last().expect("an attempt")["outcome"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn delivered(record: &Value, route: &str) -> String {
    assert_eq!(delivery(record, route)["state"], "delivered", "{record}");
    outcome(record, route)
}

/// The critical-lockout fixture with a change applied.
fn lockout_with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    change(v.as_object_mut().unwrap());
    v.to_string()
}

fn with_state(id: &str, state: &str) -> String {
    lockout_with(|m| {
        m.insert("id".into(), json!(id));
        m.insert("state".into(), json!(state));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_created_noted_and_resolved_with_basic_and_bearer_auth() {
    let Some(wasm) = component() else { return };
    let (file, kdir, _keys) = signed(&wasm);
    // The header a client sends for these credentials (RFC 7617), built by
    // reqwest rather than by hand.
    let basic = reqwest::Client::new()
        .get("http://x/")
        .basic_auth(USER, Some(PASSWORD))
        .build()
        .unwrap()
        .headers()["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    let a = StubServiceNow::start(basic).await;
    let b = StubServiceNow::start(format!("Bearer {TOKEN}")).await;
    let route = |name: &str, stub: &StubServiceNow, auth: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\ntransform = {file:?}\nallow_http = true\nprivate_networks = [\"127.0.0.0/8\"]\n[route.config]\ninstance_url = {:?}\nassignment_group = \"Storage Security\"\n{auth}\n",
            stub.url()
        )
    };
    let config = format!(
        "{FAST_RETRY}\n[trust]\nkeys = [{kdir:?}]\n\n{}{}",
        route(
            "snow-basic",
            &a,
            &format!("user = {USER:?}\npassword = {PASSWORD:?}")
        ),
        route("snow-bearer", &b, &format!("token = {TOKEN:?}")),
    );
    // The server compiles the 18 MB component: start it off the runtime.
    let server = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(Server::start(&config))
    })
    .await
    .unwrap();
    let cid = format!("superna-zt-{EVENT_ID}");

    // 1. The first alert creates the incident, correlated by the event ID.
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    for (route, stub) in [("snow-basic", &a), ("snow-bearer", &b)] {
        assert_eq!(
            delivered(&record, route),
            format!("created incident INC0010001 (correlation_id {cid})")
        );
        assert_eq!(stub.calls(), ["GET incident", "POST incident"], "{route}");
        let search = &stub.seen()[0];
        assert!(
            search.query.contains(&(
                "sysparm_query".into(),
                format!("correlation_id={cid}^ORDERBYDESCsys_created_on")
            )),
            "{:?}",
            search.query
        );
        let inc = stub.by_correlation(&cid);
        assert_eq!(inc["impact"], "1", "critical is impact 1");
        assert_eq!(inc["urgency"], "1");
        assert_eq!(inc["assignment_group"], "Storage Security");
        assert_eq!(inc["category"], "security");
        assert_eq!(
            inc["short_description"],
            "[CRITICAL] Superna Zero Trust: LOCKED_OUT for user CORP\\jsmith"
        );
        let description = inc["description"].as_str().unwrap();
        assert!(
            description.contains("Client IPs: 10.20.30.41"),
            "{description}"
        );
        assert!(
            description.contains("/ifs/data/finance/q2/budget.xlsx.locked"),
            "{description}"
        );
        let post = &stub.seen()[1];
        assert_eq!(post.json()["correlation_id"], cid.as_str());
        assert_eq!(post.headers["content-type"], "application/json");
        assert_eq!(post.headers["accept"], "application/json");
        stub.clear();
    }
    // Each route authenticated its own way (the stubs refuse anything else).
    assert!(a.seen().is_empty() && b.seen().is_empty());

    // 2. An update adds work notes to that incident; no second incident.
    let record = server.deliver(&with_state(EVENT_ID, "MONITOR"), WAIT).await;
    for (route, stub) in [("snow-basic", &a), ("snow-bearer", &b)] {
        assert_eq!(
            delivered(&record, route),
            format!("added work notes to incident INC0010001 (correlation_id {cid})")
        );
        assert_eq!(stub.calls(), ["GET incident", "PATCH sys_id"], "{route}");
        assert_eq!(stub.incidents().len(), 1);
        let inc = stub.by_correlation(&cid);
        let notes = inc["work_notes"].as_str().unwrap();
        assert!(
            notes.contains("Superna Zero Trust update: MONITOR (update, other)"),
            "{notes}"
        );
        assert_eq!(inc["state"], "1", "an update does not resolve");
        stub.clear();
    }

    // 3. Superna closes the alert: the incident is resolved.
    let record = server
        .deliver(&with_state(EVENT_ID, "ACCESS_RESTORED"), WAIT)
        .await;
    for (route, stub) in [("snow-basic", &a), ("snow-bearer", &b)] {
        assert_eq!(
            delivered(&record, route),
            format!("resolved incident INC0010001 (correlation_id {cid})")
        );
        let inc = stub.by_correlation(&cid);
        assert_eq!(inc["state"], "6");
        assert_eq!(inc["close_code"], "Solution provided");
        let notes = inc["close_notes"].as_str().unwrap();
        assert!(
            notes.starts_with(
                "Superna Zero Trust closed the alert: ACCESS_RESTORED (access_restored)"
            ),
            "{notes}"
        );
        stub.clear();
    }
    // Closed again (a replay): already resolved, nothing sent but the search.
    let record = server
        .deliver(&with_state(EVENT_ID, "ACCESS_RESTORED"), WAIT)
        .await;
    assert_eq!(
        delivered(&record, "snow-basic"),
        "incident INC0010001 is already resolved (state 6)"
    );
    assert_eq!(a.calls(), ["GET incident"]);
    a.clear();
    b.clear();

    // 4. 429 with Retry-After: retried no earlier than the destination asked.
    a.script(vec![Some((
        429,
        vec![("Retry-After".into(), "1".into())],
        json!({"error": {"message": "Too many requests"}, "status": "failure"}),
    ))]);
    let record = server
        .deliver(&with_state("RSW-2", "LOCKED_OUT"), WAIT)
        .await;
    assert!(
        delivered(&record, "snow-basic").starts_with("created incident INC0010002"),
        "{record}"
    );
    let attempts = delivery(&record, "snow-basic")["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2, "{record}");
    assert!(
        attempts[0]["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 429"),
        "{record}"
    );
    let seen = a.seen();
    assert_eq!(
        a.calls(),
        ["GET incident", "GET incident", "POST incident"],
        "the whole flow runs again"
    );
    assert_eq!(seen[0].status, 429);
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(b.calls(), ["GET incident", "POST incident"]);
    a.clear();
    b.clear();

    // 5. A 404 on the update (the incident was deleted meanwhile): a new
    // incident is created instead.
    a.script(vec![
        None,
        Some((
            404,
            vec![],
            json!({"error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record retrieval"}, "status": "failure"}),
        )),
    ]);
    let record = server.deliver(&with_state("RSW-2", "MONITOR"), WAIT).await;
    assert!(
        delivered(&record, "snow-basic").starts_with("created incident INC0010003"),
        "{record}"
    );
    assert_eq!(a.calls(), ["GET incident", "PATCH sys_id", "POST incident"]);
    a.clear();
    b.clear();

    // 6. 401: permanent, not retried; the message says why.
    a.script(vec![Some((
        401,
        vec![],
        json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"}),
    ))]);
    let record = server
        .deliver(&with_state("RSW-3", "LOCKED_OUT"), WAIT)
        .await;
    let d = delivery(&record, "snow-basic");
    assert_eq!(d["state"], "failed", "{record}");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{record}");
    let why = outcome(&record, "snow-basic");
    assert!(
        why.contains("HTTP 401") && why.contains("check the credentials"),
        "{why}"
    );
    assert!(!why.contains(PASSWORD));
    assert_eq!(a.calls(), ["GET incident"]);
    a.clear();

    // 7. A 404 on the incident table: a wrong instance_url, permanent.
    a.script(vec![Some((
        404,
        vec![],
        json!({"error": {"message": "Invalid table incident"}, "status": "failure"}),
    ))]);
    let record = server
        .deliver(&with_state("RSW-4", "LOCKED_OUT"), WAIT)
        .await;
    let d = delivery(&record, "snow-basic");
    assert_eq!(d["state"], "failed", "{record}");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{record}");
    assert!(
        outcome(&record, "snow-basic").contains("check `instance_url`"),
        "{record}"
    );

    // Every request to the basic-auth stub carried basic credentials.
    assert!(a.seen().iter().all(|s| {
        s.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    }));
}

#[test]
fn servicenow_passes_its_fixtures_and_runs_dry() {
    let Some(wasm) = component() else { return };
    let wasm = wasm.display().to_string();
    let dir = format!("{ROOT}/transforms-py/servicenow/fixtures");
    let cache = compile_cache_dir();
    let (code, out) = run(&["transform", "test", &wasm, &dir, "--cache", &cache]);
    assert_eq!(code, 0, "{out}");
    let fixtures = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert!(fixtures >= 6, "{fixtures}");
    assert!(
        out.contains(&format!("{fixtures} passed, 0 failed")),
        "{out}"
    );

    // The dry run prints the search request, secrets redacted.
    let (code, out) = run(&[
        "transform",
        "run",
        &wasm,
        "--event",
        &format!("{ROOT}/tests/fixtures/events/critical-lockout.json"),
        "--set",
        "instance_url=https://acme.service-now.com",
        "--set",
        "user=ztbridge",
        "--set",
        &format!("password={PASSWORD}"),
        "--cache",
        &cache,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("https://acme.service-now.com/api/now/table/incident?sysparm_query=correlation_id%3Dsuperna-zt-RSW-20250611-000123"),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "{out}");
}
