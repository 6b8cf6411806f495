//! Operations: the systemd notify protocol, graceful shutdown with
//! deliveries in flight, readiness, Prometheus metrics, `send-test`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::child::ChildServer;
use common::*;
use serde_json::Value;

/// Reads datagrams from `sock` until `want` is seen or `timeout` passes.
fn read_until(sock: &UnixDatagram, want: &str, timeout: Duration, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_ready_watchdog_stopping() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut server = ChildServer::start_with_env(
        dir.path(),
        &pagerduty_route(&pd, ""),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            // 400 ms: the service pings every 200 ms while healthy.
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;
    let mut seen = Vec::new();
    assert!(
        read_until(&sock, "READY=1", Duration::from_secs(30), &mut seen),
        "{seen:?}"
    );
    // Ready means serving.
    let ready: Value = reqwest::get(server.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["routes"][0], "pagerduty");
    // Pings keep coming while healthy.
    let before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    for _ in 0..3 {
        assert!(
            read_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen),
            "{seen:?}"
        );
    }
    assert!(seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= before + 3);
    server.terminate();
    assert!(
        read_until(&sock, "STOPPING=1", Duration::from_secs(10), &mut seen),
        "{seen:?}"
    );
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        server.log_tail()
    );
    // The transforms it compiled are in the compile cache for the next start.
    let cached = std::fs::read_dir(dir.path().join("data/compile-cache"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(cached >= 1, "no compile cache entries");
    // READY came before any ping, STOPPING last.
    let first_ready = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_ping = seen.iter().position(|m| m.contains("WATCHDOG=1")).unwrap();
    assert!(first_ready < first_ping, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_deliveries_in_flight_finish_and_exits_0() {
    let pd = StubPagerDuty::start().await;
    // Each answer takes 1.5 s: the delivery is in flight when SIGTERM comes.
    pd.delay(1500, 1500);
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::start(dir.path(), &pagerduty_route(&pd, "")).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(server.url("/webhook"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(fixture("events/critical-lockout.json").as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let receipt = resp.json::<Value>().await.unwrap()["receipt_id"]
        .as_str()
        .unwrap()
        .to_string();
    pd.wait_for(1, Duration::from_secs(20)).await;
    server.terminate();
    // New webhooks are refused while it drains (connection refused or closed).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = client
        .post(server.url("/webhook"))
        .header("content-type", "application/json")
        .body(fixture("events/warning-monitor.json"))
        .send()
        .await;
    assert!(late.is_err() || late.unwrap().status() != 202);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        server.log_tail()
    );
    // The attempt finished before exit: delivered, not left in flight.
    let rec = server.show(&receipt);
    assert_eq!(rec["deliveries"][0]["state"], "delivered", "{rec}");
    assert_eq!(pd.received().len(), 1);
    assert!(
        server.log_tail().contains("deliveries drained"),
        "{}",
        server.log_tail()
    );
}

fn metric(families: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => 0.0,
        })
        .sum()
}

async fn scrape(server: &Server) -> prometheus_parse::Scrape {
    let resp = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let pd = StubPagerDuty::start().await;
    pd.script(vec![(500, vec![], "oops".into())]);
    let server = Server::start(&format!(
        "[delivery]\ninitial_backoff_ms = 50\n{}",
        pagerduty_route(&pd, "")
    ))
    .await;
    let m0 = scrape(&server).await;
    assert_eq!(metric(&m0, "ztbridge_webhooks_received_total", &[]), 0.0);

    let body = fixture("events/critical-lockout.json");
    let (s, a) = server.post_gzip(&body).await;
    assert_eq!(s, 202);
    let (s, _) = server.post_gzip(&body).await;
    assert_eq!(s, 200, "a duplicate");
    let (s, _) = server.post_plain("{not json").await;
    assert_eq!(s, 400);
    server
        .settled(a["receipt_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;

    let m = scrape(&server).await;
    assert_eq!(metric(&m, "ztbridge_webhooks_received_total", &[]), 3.0);
    assert_eq!(metric(&m, "ztbridge_webhooks_accepted_total", &[]), 1.0);
    assert_eq!(metric(&m, "ztbridge_webhooks_duplicate_total", &[]), 1.0);
    assert_eq!(
        metric(
            &m,
            "ztbridge_webhooks_rejected_total",
            &[("reason", "malformed_json")]
        ),
        1.0
    );
    let pdr = [("route", "pagerduty")];
    assert_eq!(
        metric(
            &m,
            "ztbridge_delivery_attempts_total",
            &[("route", "pagerduty"), ("outcome", "retry")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "ztbridge_delivery_attempts_total",
            &[("route", "pagerduty"), ("outcome", "delivered")]
        ),
        1.0
    );
    assert_eq!(metric(&m, "ztbridge_retries_total", &pdr), 1.0);
    assert_eq!(metric(&m, "ztbridge_dead_letters_total", &pdr), 0.0);
    assert_eq!(metric(&m, "ztbridge_queue_depth", &[]), 0.0);
    // Two flows observed in the histograms (count), two destination answers.
    assert_eq!(metric(&m, "ztbridge_transform_fuel_count", &pdr), 2.0);
    assert_eq!(
        metric(&m, "ztbridge_transform_flow_seconds_count", &pdr),
        2.0
    );
    assert_eq!(metric(&m, "ztbridge_destination_seconds_count", &pdr), 2.0);
    // Real guest work was counted (the host reads the event since
    // contract 0.2, so a flow is some tens of thousands of units).
    assert!(metric(&m, "ztbridge_transform_fuel_sum", &pdr) > 10_000.0);
    assert_eq!(
        metric(&m, "ztbridge_webhook_accept_seconds_count", &[]),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_reaches_a_running_server_and_follows_delivery() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &pagerduty_route(&pd, "")).await;
    let url = server.url("/webhook");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"))
            .args([
                "send-test",
                "--url",
                &url,
                "--severity",
                "major",
                "--follow",
                "--timeout",
                "30",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("HTTP 202"), "{stdout}");
    assert!(stdout.contains("pagerduty: delivered"), "{stdout}");
    // What PagerDuty got is the sample, gzip-decoded and schema-valid.
    let got = pd.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert!(pagerduty_problems(&body).is_empty(), "{body}");
    assert_eq!(body["payload"]["severity"], "error", "major maps to error");
    let id = body["payload"]["custom_details"]["received_event"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("ZTBRIDGE-TEST-"), "{id}");

    // --update resolves the same alert.
    let url = server.url("/webhook");
    let update_id = id.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"))
            .args([
                "send-test",
                "--url",
                &url,
                "--update",
                &update_id,
                "--follow",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = pd.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].json()["event_action"], "resolve");
    assert_eq!(got[1].json()["dedup_key"], body["dedup_key"]);

    // No server: a clear error, non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"))
        .args(["send-test", "--url", "http://127.0.0.1:9/webhook"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `ztbridge serve` running?"));
}

fn sign(file: &str, key: &str, out: &str) {
    let (code, _, err) = ztbridge(&["transform", "sign", file, "--key", key, "--out", out]);
    assert_eq!(code, 0, "{err}");
}

/// The transform digest of a webhook's (only) delivery's last attempt.
fn digest_of(server: &ChildServer, receipt: &str) -> String {
    let rec = server.show(receipt);
    assert_eq!(rec["deliveries"][0]["state"], "delivered", "{rec}");
    rec["deliveries"][0]["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|a| a["transform_digest"].as_str())
        .unwrap()
        .to_string()
}

async fn deliver_one(server: &ChildServer, pd: &StubPagerDuty, id: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["id"] = Value::String(id.into());
    let n = pd.received().len();
    let (status, answer) = server.post(&v.to_string()).await;
    assert_eq!(status, 202);
    let receipt = answer["receipt_id"].as_str().unwrap().to_string();
    pd.wait_for(n + 1, Duration::from_secs(20)).await;
    wait_until(Duration::from_secs(10), || {
        (server.show(&receipt)["deliveries"][0]["state"] == "delivered").then_some(())
    })
    .await
    .expect("delivered");
    receipt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_new_version_and_keeps_the_old_when_tampered() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    for name in ["ops", "second"] {
        let (code, _, err) = ztbridge(&["keys", "generate", "--out", &p("keys"), "--name", name]);
        assert_eq!(code, 0, "{err}");
    }
    let deployed = p("pagerduty.wasm");
    sign(&wasm_path("pagerduty"), &p("keys/ops.key"), &deployed);
    let config = format!(
        "[trust]\nkeys = [{:?}]\n[[route]]\nname = \"pagerduty\"\ntransform = {deployed:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n\
         [route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = {:?}\n",
        p("keys/ops.pub"),
        pd.url()
    );
    let server = ChildServer::start(dir.path(), &config).await;
    let r1 = deliver_one(&server, &pd, "RSW-RELOAD-1").await;
    let d1 = digest_of(&server, &r1);
    assert_eq!(
        d1,
        ztbridge_runtime::sandbox::digest(&std::fs::read(&deployed).unwrap())
    );

    // `config check` sees the same, and never prints the secret.
    let (code, _, err) = ztbridge(&["config", "check", server.config_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"))
        .args(["config", "check", server.config_path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("route pagerduty:") && text.contains(&d1),
        "{text}"
    );
    assert!(text.contains("routing_key: (set, secret)"), "{text}");
    assert!(!text.contains(ROUTING_KEY), "{text}");

    // A new version (a second signature: new bytes, same trusted signer).
    let v2 = p("v2.wasm");
    sign(&deployed, &p("keys/second.key"), &v2);
    std::fs::rename(&v2, &deployed).unwrap();
    let d2 = ztbridge_runtime::sandbox::digest(&std::fs::read(&deployed).unwrap());
    assert_ne!(d1, d2);
    server.reload_and_wait_for("reloaded").await;
    let r2 = deliver_one(&server, &pd, "RSW-RELOAD-2").await;
    assert_eq!(digest_of(&server, &r2), d2);

    // A tampered file: refused, the old version keeps running.
    let mut bytes = std::fs::read(&deployed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&deployed, &bytes).unwrap();
    let (code, _, err) = ztbridge(&["config", "check", server.config_path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("pagerduty.wasm"), "{err}");
    server.reload_and_wait_for("reload failed").await;
    let r3 = deliver_one(&server, &pd, "RSW-RELOAD-3").await;
    assert_eq!(
        digest_of(&server, &r3),
        d2,
        "the tampered version must not run"
    );
}
