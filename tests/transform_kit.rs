//! The transform kit through the real binary: `transform test` on the
//! built-in transforms' fixtures and on the JavaScript transform
//! (transforms-js/webhook, built by ci/js.sh), readable diffs and exit
//! codes, `--update`, and the JavaScript transform signed and delivering in
//! the running service like a built-in.
//!
//! The JavaScript component comes from `ZTBRIDGE_JS_WASM` (default
//! transforms-js/webhook/webhook.wasm).  When it is missing those tests say
//! so and pass, unless `ZTBRIDGE_REQUIRE_JS=1` (CI sets it).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs the binary; exit code and stdout + stderr as text.
fn run(args: &[&str]) -> (i32, String) {
    ztbridge_text(args, &["ZTBRIDGE_COMPILE_CACHE"])
}

fn js_wasm() -> Option<PathBuf> {
    let p = std::env::var_os("ZTBRIDGE_JS_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("transforms-js/webhook/webhook.wasm"));
    if p.is_file() {
        return Some(p);
    }
    if std::env::var_os("ZTBRIDGE_REQUIRE_JS").is_some() {
        panic!(
            "{} is missing and ZTBRIDGE_REQUIRE_JS is set: build it with `bash ci/js.sh`",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: the JavaScript transform is not built ({} missing); `bash ci/js.sh` builds it (needs Node.js and npm)",
        p.display()
    );
    None
}

/// Every fixture line says `ok` and reports fuel; the summary says all
/// passed.
fn assert_all_pass(out: &str, expected: usize) {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL"))
        .collect();
    assert_eq!(lines.len(), expected, "{out}");
    for l in &lines {
        assert!(l.starts_with("ok "), "{out}");
        let fuel: u64 = l
            .split("fuel")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(|n| n.replace(',', "").parse().expect("fuel number"))
            .expect("fuel column");
        assert!(fuel > 0, "{l}");
    }
    assert!(
        out.contains(&format!("{expected} passed, 0 failed")),
        "{out}"
    );
}

fn count_fixtures(dir: &str) -> usize {
    std::fs::read_dir(Path::new(ROOT).join(dir))
        .expect("fixtures")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count()
}

#[test]
fn builtin_transforms_pass_their_fixtures() {
    for name in ["pagerduty", "jitbit", "opsgenie", "splunk", "template"] {
        let dir = format!("transforms/{name}/fixtures");
        let (code, out) = run(&[
            "transform",
            "test",
            &format!("builtin:{name}"),
            &format!("{ROOT}/{dir}"),
        ]);
        assert_eq!(code, 0, "{out}");
        assert_all_pass(&out, count_fixtures(&dir));
    }
}

#[test]
fn a_mismatch_fails_with_a_readable_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let src = format!("{ROOT}/transforms/pagerduty/fixtures/trigger-critical-lockout.json");
    let mut fx: Value = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    let body = &mut fx["expect"]["steps"][0]["requests"][0]["body"];
    body["event_action"] = "resolve".into();
    fx["expect"]["outcome"]["message"] = "something else".into();
    std::fs::write(tmp.path().join("wrong.json"), fx.to_string()).unwrap();
    // A fixture that is not even runnable fails too, with the reason.
    std::fs::write(tmp.path().join("broken.json"), r#"{"config": {}}"#).unwrap();

    let dir = tmp.path().display().to_string();
    let (code, out) = run(&["transform", "test", "builtin:pagerduty", &dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL    wrong"), "{out}");
    let has = |sign: char, text: &str| {
        out.lines()
            .any(|l| l.trim_start().starts_with(sign) && l.contains(text))
    };
    assert!(has('-', r#""event_action": "resolve","#), "{out}");
    assert!(has('+', r#""event_action": "trigger","#), "{out}");
    assert!(has('-', r#""message": "something else""#), "{out}");
    assert!(
        has('+', r#""message": "PagerDuty accepted trigger"#),
        "{out}"
    );
    // Only the changes and their context are shown, not the whole body.
    assert!(!out.contains("\"summary\""), "{out}");
    assert!(
        out.contains("FAIL    broken") && out.contains("needs `event`"),
        "{out}"
    );
    assert!(out.contains("0 passed, 2 failed"), "{out}");
}

#[test]
fn update_records_the_expectation_then_it_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let event = fixture("events/critical-lockout.json");
    let fx = format!(
        r#"{{"event": {event}, "config": {{"routing_key": "{ROUTING_KEY}"}},
            "responses": [{{"status": 202, "body": "{{}}"}}]}}"#
    );
    let path = tmp.path().join("new.json");
    std::fs::write(&path, fx).unwrap();
    let file = path.display().to_string();
    let (code, out) = run(&["transform", "test", "builtin:pagerduty", &file]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--update"), "{out}");

    let (code, out) = run(&["transform", "test", "builtin:pagerduty", &file, "--update"]);
    assert_eq!(code, 0, "{out}");
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(recorded["expect"]["outcome"]["status"], "done");
    assert_eq!(
        recorded["expect"]["steps"][0]["requests"][0]["body"]["dedup_key"],
        "superna-zt-RSW-20250611-000123"
    );
    let (code, out) = run(&["transform", "test", "builtin:pagerduty", &file]);
    assert_eq!(code, 0, "{out}");
    assert_all_pass(&out, 1);
}

#[test]
fn javascript_transform_passes_its_fixtures() {
    let Some(wasm) = js_wasm() else { return };
    let dir = "transforms-js/webhook/fixtures";
    let cache = compile_cache_dir();
    let (code, out) = run(&[
        "transform",
        "test",
        &wasm.display().to_string(),
        &format!("{ROOT}/{dir}"),
        "--cache",
        &cache,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("webhook-js "), "{out}");
    assert_all_pass(&out, count_fixtures(dir));

    // The second load comes from the compile cache.
    let (code, out) = run(&[
        "transform",
        "test",
        &wasm.display().to_string(),
        &format!("{ROOT}/{dir}/slack-critical-lockout.json"),
        "--cache",
        &cache,
    ]);
    assert_eq!(code, 0, "{out}");
    let ms: f64 = out
        .split("loaded in ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .expect("load time");
    assert!(
        ms < 2_000.0,
        "a cached 12 MB component loaded in {ms} ms\n{out}"
    );
}

/// A chat webhook stub: records what it is sent, answers 200 "ok" like
/// Slack.
async fn chat_stub() -> (String, Arc<Mutex<Vec<(HeaderMap, String)>>>) {
    let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    async fn hook(
        State(got): State<Arc<Mutex<Vec<(HeaderMap, String)>>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        got.lock()
            .unwrap()
            .push((headers, String::from_utf8_lossy(&body).into_owned()));
        "ok"
    }
    let app = Router::new()
        .route("/services/T0/B0/secret", post(hook))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/services/T0/B0/secret"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_transform_signed_delivers_in_the_service() {
    let Some(wasm) = js_wasm() else { return };
    let (signed, kdir, _keys) =
        sign_with_fresh_key(&wasm, "webhook.wasm", &["ZTBRIDGE_COMPILE_CACHE"]);

    let (url, got) = chat_stub().await;
    let config = format!(
        "[trust]\nkeys = [{kdir:?}]\n\n[[route]]\nname = \"slack\"\ntransform = {signed:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nurl = {url:?}\n"
    );
    let server = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(Server::start(&config))
    })
    .await
    .unwrap();
    let (status, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let record = server
        .settled(
            answer["receipt_id"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (headers, body) = &got[0];
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("[CRITICAL] Superna Zero Trust event RSW-20250611-000123: LOCKED_OUT for user CORP\\jsmith"),
        "{text}"
    );

    // Tampering with the signed file makes the service refuse it.
    let mut bytes = std::fs::read(&signed).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&signed, bytes).unwrap();
    let (code, out) = run(&["transform", "verify", &signed, "--trusted", &kdir]);
    assert_ne!(code, 0, "{out}");
}
