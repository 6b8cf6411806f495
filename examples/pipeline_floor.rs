//! The floor of any pipeline that keeps the guarantees issue #16 asks for,
//! built from the same parts as ztbridge and nothing else: a webhook in
//! (gunzipped if sent so), read into the event record the transforms get,
//! one row inserted into SQLite (WAL, `synchronous=FULL`, a writer thread
//! committing everything waiting at once) before the 202; then a fresh
//! sandbox running the built-in PagerDuty transform (ztbridge's engine,
//! limits and pooling allocator), its request sent with reqwest, the
//! response handed back to it, and the row marked delivered in a later
//! group commit.
//!
//! Left out, because a pipeline can run without them: routes, filters,
//! retries and their schedule, rate limits, breakers, egress checks,
//! attempt records, metrics, logs, tracing spans, auth, the read API,
//! back-pressure.  `benches/seed/compare.sh` measures it in the same run as
//! the seed, the relay floor and ztbridge: the ceiling of a fresh sandbox
//! per event with fsync before the 202 on this machine.
//!
//!   cargo run --release --example pipeline_floor -- PORT SINK_URL DB_PATH
//!
//! `PIPELINE_FLOOR_WITHOUT` (a comma-separated list) drops guarantees, to
//! price each one: `fsync` commits with `synchronous=OFF`, `store` writes
//! nothing (202 at once), `sandbox` POSTs the body as received instead of
//! running the transform.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use tokio::sync::oneshot;
use ztbridge_runtime::config::Limits;
use ztbridge_runtime::flow::{FlowInput, record};
use ztbridge_runtime::sandbox::bindings::types::{Header, HttpResponse, Step};
use ztbridge_runtime::sandbox::{Engine, FlowContext, Sandbox, Transform};
use ztbridge_runtime::store::{MemoryState, TransformState};
use ztbridge_runtime::text::Redactor;

/// The allocator ztbridge runs on (src/alloc.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the handlers and delivery tasks share.
struct Shared {
    /// ztbridge's wasmtime engine (pooling allocator, fuel, epochs).
    engine: Engine,
    /// The built-in PagerDuty transform, compiled once.
    transform: Arc<Transform>,
    /// Its config: the routing key and the sink's URL.
    config: Arc<BTreeMap<String, String>>,
    /// Transform state (the PagerDuty transform keeps none).
    state: Arc<dyn TransformState>,
    /// The redactor a flow context needs (nothing to redact here).
    redactor: Arc<Redactor>,
    /// Outbound HTTP, one keep-alive pool.
    client: reqwest::Client,
    /// To the SQLite writer thread (`None` without the store).
    writer: Option<std::sync::mpsc::Sender<Write>>,
    /// The sink's URL, for the runs without the sandbox.
    sink: String,
    /// `PIPELINE_FLOOR_WITHOUT` has `sandbox`.
    without_sandbox: bool,
    /// One permit per pool slot (`Limits::max_instances`): a delivery waits
    /// for a slot instead of failing when more are running than the pool
    /// holds, as ztbridge's workers do.
    slots: Arc<tokio::sync::Semaphore>,
}

/// One write for the writer thread.
enum Write {
    /// Insert the event; answer with its row ID once committed.
    Admit(Arc<str>, oneshot::Sender<i64>),
    /// Mark the row delivered (nobody waits).
    Delivered(i64),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(sink), Some(db)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: pipeline_floor PORT SINK_URL DB_PATH".into());
    };
    let limits = Limits::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_instances as usize));
    let engine = Engine::new(limits)?;
    let bytes = std::fs::read(concat!(env!("ZTBRIDGE_WASM_DIR"), "/pagerduty.wasm"))?;
    let transform = Transform::load(&engine, "pagerduty", &bytes)?;
    let without = std::env::var("PIPELINE_FLOOR_WITHOUT").unwrap_or_default();
    let without: Vec<&str> = without.split(',').map(str::trim).collect();
    let writer = match without.contains(&"store") {
        true => None,
        false => Some(spawn_writer(&db, !without.contains(&"fsync"))?),
    };
    let shared = Arc::new(Shared {
        engine,
        transform,
        config: Arc::new(
            [
                (
                    "routing_key".into(),
                    "R0UTINGKEYabcdef0123456789abcdef".into(),
                ),
                ("url".into(), sink.clone()),
            ]
            .into(),
        ),
        state: Arc::new(MemoryState::default()),
        redactor: Arc::new(Redactor::default()),
        client: reqwest::Client::new(),
        writer,
        sink,
        without_sandbox: without.contains(&"sandbox"),
        slots,
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = Router::new()
                .route("/webhook", post(webhook))
                .with_state(shared);
            let listener =
                tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
            axum::serve(listener, app).await?;
            Ok(())
        })
}

/// Opens the database and starts the thread that group-commits writes.
fn spawn_writer(path: &str, fsync: bool) -> rusqlite::Result<std::sync::mpsc::Sender<Write>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "OFF" })?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (
             id INTEGER PRIMARY KEY,
             body TEXT NOT NULL,
             delivered INTEGER NOT NULL DEFAULT 0
         )",
    )?;
    let (tx, rx) = std::sync::mpsc::channel::<Write>();
    std::thread::spawn(move || {
        let mut conn = conn;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let mut answers = Vec::new();
            let committed = (|| -> rusqlite::Result<()> {
                let tx = conn.transaction()?;
                {
                    let mut insert = tx.prepare_cached("INSERT INTO events (body) VALUES (?1)")?;
                    let mut mark =
                        tx.prepare_cached("UPDATE events SET delivered = 1 WHERE id = ?1")?;
                    for w in batch {
                        match w {
                            Write::Admit(body, answer) => {
                                insert.execute([body])?;
                                answers.push((tx.last_insert_rowid(), answer));
                            }
                            Write::Delivered(id) => {
                                mark.execute([id])?;
                            }
                        }
                    }
                }
                tx.commit()
            })();
            match committed {
                // Dropping the answers fails those webhooks with a 503.
                Err(e) => eprintln!("pipeline_floor: commit failed: {e}"),
                Ok(()) => {
                    for (id, answer) in answers {
                        let _ = answer.send(id);
                    }
                }
            }
        }
    });
    Ok(tx)
}

/// Reads the webhook, waits for its commit, answers 202 and starts its
/// delivery.
async fn webhook(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let text: Arc<str> = if gzip {
        let mut s = String::new();
        match flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut s) {
            Ok(_) => s.into(),
            Err(_) => return (StatusCode::BAD_REQUEST, r#"{"error":"bad gzip"}"#),
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(s) => s.into(),
            Err(_) => return (StatusCode::BAD_REQUEST, r#"{"error":"not UTF-8"}"#),
        }
    };
    let id = match &shared.writer {
        None => 0,
        Some(writer) => {
            let (answer, committed) = oneshot::channel();
            if writer.send(Write::Admit(text.clone(), answer)).is_err() {
                return (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"store"}"#);
            }
            let Ok(id) = committed.await else {
                return (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"store"}"#);
            };
            id
        }
    };
    tokio::spawn(deliver(shared, id, text));
    (StatusCode::ACCEPTED, r#"{"status":"accepted"}"#)
}

/// Runs the transform in a fresh sandbox, sends what it asks for, and marks
/// the row delivered when it is done.
async fn deliver(shared: Arc<Shared>, id: i64, body: Arc<str>) {
    let Ok(_slot) = shared.slots.clone().acquire_owned().await else {
        return;
    };
    if shared.without_sandbox {
        let sent = shared
            .client
            .post(&shared.sink)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(resp) => drop(resp.text().await),
            Err(e) => return eprintln!("pipeline_floor: {e}"),
        }
        return delivered(&shared, id);
    }
    let receipt = id.to_string();
    let event = record(&FlowInput {
        body: &body,
        receipt_id: &receipt,
        received_ms: ztbridge_runtime::time::now_millis(),
        attempt: 1,
    });
    let ctx = FlowContext::new(
        Arc::from("pagerduty"),
        shared.config.clone(),
        shared.state.clone(),
        shared.redactor.clone(),
    )
    .for_event(&event);
    let mut sandbox = match Sandbox::new(&shared.engine, &shared.transform, ctx).await {
        Ok(s) => s,
        Err(e) => return eprintln!("pipeline_floor: {e}"),
    };
    let mut step = sandbox.start(&event).await;
    loop {
        let requests = match step {
            Ok(Ok(Step::Send(requests))) => requests,
            Ok(Ok(Step::Done(_))) => break,
            Ok(Err(f)) => return eprintln!("pipeline_floor: transform failed: {}", f.message),
            Err(e) => return eprintln!("pipeline_floor: {e}"),
        };
        let mut responses = Vec::with_capacity(requests.len());
        for r in &requests {
            let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap_or_default();
            let mut req = shared.client.request(method, &r.url).body(r.body.clone());
            for h in &r.headers {
                req = req.header(&h.name, &h.value);
            }
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) => return eprintln!("pipeline_floor: {e}"),
            };
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| Header {
                    name: k.as_str().to_string(),
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                })
                .collect();
            let body = resp.text().await.unwrap_or_default();
            responses.push(Ok(HttpResponse {
                status,
                headers,
                body,
            }));
        }
        step = sandbox.resume(&responses).await;
    }
    drop(sandbox);
    delivered(&shared, id);
}

/// Queues the row's mark as delivered for the next group commit.
fn delivered(shared: &Shared, id: i64) {
    if let Some(writer) = &shared.writer {
        let _ = writer.send(Write::Delivered(id));
    }
}
