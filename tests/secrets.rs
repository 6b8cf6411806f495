//! Secrets (the PagerDuty routing key, the inbound webhook token, a secret
//! a transform logs on purpose) never appear in the service's logs, its
//! data directory or its API answers.  Runs the real binary as a child
//! process with debug logging and reads everything it wrote.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const INBOUND: &str = "inbound-token-SECRET-0123456789";
const LEAKY: &str = "transform-config-SECRET-xyz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_store_or_api() {
    let pd = StubPagerDuty::start().await;
    // The stub echoes nothing secret; make it fail once with a body that
    // quotes the routing key, as a careless destination might.
    pd.script(vec![(
        500,
        vec![],
        format!("internal error for key {ROUTING_KEY}"),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n[inbound]\ntoken = {{ env = \"TEST_INBOUND_TOKEN\" }}\n\
         [trust]\nallow_unsigned = true\n[delivery]\nmax_attempts = 3\ninitial_backoff_ms = 50\n\
         [[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n\
         [route.config]\nurl = {:?}\n\
         [[route]]\nname = \"leaky\"\ntransform = {:?}\n[route.config]\nmode = \"leak-secret\"\nsecret = {{ env = \"TEST_LEAKY_SECRET\" }}\n",
        dir.path().join("data").display().to_string(),
        pd.url(),
        wasm_path("hostile"),
    );
    let config_path = dir.path().join("ztbridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ztbridge"))
        .args(["serve", "--config", config_path.to_str().unwrap()])
        // Everything at trace except the compiler's own chatter.
        .env("RUST_LOG", "trace,wasmtime=info,wasmtime_environ=info,wasmtime_cranelift=info,cranelift_codegen=info,cranelift_frontend=info")
        .env("ZTBRIDGE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        .env("TEST_INBOUND_TOKEN", INBOUND)
        .env("TEST_LEAKY_SECRET", LEAKY)
        // Files, not pipes: nobody reads a pipe while the test runs.
        .stdout(Stdio::from(std::fs::File::create(dir.path().join("stdout.log")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("stderr.log")).unwrap()))
        .spawn()
        .expect("spawn ztbridge");

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    if !wait_listening(port, Duration::from_secs(30)).await {
        let _ = child.kill();
        let err = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        panic!(
            "server did not start: {}",
            &err[err.len().saturating_sub(3000)..]
        );
    }
    let resp = client
        .post(format!("{base}/webhook"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("authorization", format!("Bearer {INBOUND}"))
        .body(gzip(fixture("events/critical-lockout.json").as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer: serde_json::Value = resp.json().await.unwrap();
    let receipt = answer["receipt_id"].as_str().unwrap().to_string();
    // A refused webhook with a wrong token is logged too.
    let _ = client
        .post(format!("{base}/webhook"))
        .header("authorization", format!("Bearer {INBOUND}-wrong"))
        .send()
        .await;

    // PagerDuty got the key (it must), after one failure and a retry.
    let got = pd.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].json()["routing_key"], ROUTING_KEY);
    let mut api = String::new();
    for _ in 0..400 {
        api = client
            .get(format!("{base}/api/events/{receipt}"))
            .header("authorization", format!("Bearer {INBOUND}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if api.contains("\"delivered\"") && api.contains("\"failed\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        api.contains("\"delivered\"") && api.contains("\"failed\""),
        "{api}"
    );

    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap()
        + &std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert!(
        logs.contains("delivered"),
        "logs were captured: {}",
        &logs[..logs.len().min(2000)]
    );
    assert!(
        logs.contains("[redacted]"),
        "the leaky transform's secret was redacted, not dropped silently"
    );

    let mut store = Vec::new();
    for entry in walk(&dir.path().join("data")) {
        store.extend(std::fs::read(entry).unwrap());
    }
    assert!(!store.is_empty(), "the data directory holds files");
    let store = String::from_utf8_lossy(&store);
    for secret in [ROUTING_KEY, INBOUND, LEAKY] {
        assert!(!logs.contains(secret), "secret {secret} found in the logs");
        assert!(
            !api.contains(secret),
            "secret {secret} found in the API answer"
        );
        assert!(
            !store.contains(secret),
            "secret {secret} found in the data directory"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
