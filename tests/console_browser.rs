//! The operator's console in a real browser: the real `ztbridge serve`
//! with its console on a loopback port, a stub PagerDuty, and the
//! distribution's Chromium driven by playwright-core
//! (`tests/browser/console.mjs`).  Covers login, a delivered and a
//! dead-lettered event, retrying the dead letter until it is delivered,
//! pausing and resuming a route, hostile events rendered inert, and POSTs
//! without or with a wrong CSRF token refused.  Screenshots go to
//! `target/console-screenshots/`.
//!
//! Needs `chromium` (apt) and `npm ci` in `tests/browser/`.  Outside CI a
//! missing piece skips the test with a message; under CI (`CI=true`) it
//! fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::child::ChildServer;
use common::{StubPagerDuty, fixture, free_port, pagerduty_route, wait_listening};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "console-admin-token-0123456789";

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium chromium-driver, or set CHROMIUM)"
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("no node (install Node.js 20+)".into());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some(
            "tests/browser/node_modules is missing (run `npm ci` in tests/browser)".into(),
        );
    }
    None
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn event(id: &str, user: &str, path: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["id"] = json!(id);
    v["user"] = json!(user);
    v["files"] = json!([path]);
    v.to_string()
}

/// The delivery state of `receipt` on `route`, from the console's API.
async fn state(client: &reqwest::Client, console: &str, receipt: &str) -> Option<String> {
    let v: Value = client
        .get(format!("{console}/api/events/{receipt}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["deliveries"][0]["state"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_in_a_real_browser() {
    if let Some(why) = missing() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: the console's browser test cannot run: {why}");
        }
        eprintln!("SKIPPED console_in_a_real_browser: {why}");
        return;
    }
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let config = format!(
        "[delivery]\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\ndedupe_window_secs = 0\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = {ADMIN_TOKEN:?}\n\n{}",
        pagerduty_route(&pd, "")
    );
    let server = ChildServer::start(dir.path(), &config).await;
    let console = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    assert!(
        wait_listening(admin_port, Duration::from_secs(30)).await,
        "the console listens"
    );

    let receipt = |v: &Value| v["receipt_id"].as_str().expect("receipt_id").to_string();
    // A delivered event.
    let (s, a) = server
        .post(&event("RSW-CONSOLE-OK", "CORP\\alice", "/ifs/data/ok.txt"))
        .await;
    assert_eq!(s, 202, "{a}");
    let delivered = receipt(&a);
    pd.wait_for(1, Duration::from_secs(30)).await;
    for _ in 0..600 {
        if state(&client, &console, &delivered).await.as_deref() == Some("delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A dead letter: PagerDuty refuses it once (400 is not retried).
    pd.script(vec![(
        400,
        vec![],
        r#"{"status":"invalid event","message":"Event object is invalid","errors":["scripted"]}"#
            .into(),
    )]);
    let (s, a) = server
        .post(&event(
            "RSW-CONSOLE-DEAD",
            "CORP\\bob",
            "/ifs/data/dead.txt",
        ))
        .await;
    assert_eq!(s, 202, "{a}");
    let dead = receipt(&a);
    // Hostile events: every field a browser could be tricked by.
    let big = "A".repeat(1024 * 1024);
    let hostile = [
        event(
            "<script>window.__xss=1</script>",
            "<script>window.__xss=1</script>",
            "\"><img src=x onerror=\"window.__xss=2\">",
        ),
        event(
            "javascript:window.__xss=3",
            "\"><img src=x onerror=alert(1)>",
            "javascript:alert(document.cookie)",
        ),
        event(&format!("RSW-BIG-{}", &big[..1000]), &big, &big[..5000]),
    ];
    let mut xss = Vec::new();
    for h in &hostile {
        let (s, a) = server.post(h).await;
        assert_eq!(s, 202, "{a}");
        xss.push(receipt(&a));
    }
    // Wait for the dead letter and the hostile deliveries to settle.
    let mut settled = false;
    for _ in 0..1200 {
        let d = state(&client, &console, &dead).await;
        let mut all = d.as_deref() == Some("failed");
        for id in &xss {
            all &= matches!(
                state(&client, &console, id).await.as_deref(),
                Some("delivered" | "failed")
            );
        }
        if all {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "deliveries did not settle:\n{}", server.log_tail());

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let out = tokio::process::Command::new("node")
        .arg("console.mjs")
        .current_dir(browser_dir())
        .env("CONSOLE_URL", &console)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHOTS", &shots)
        .env("DELIVERED_ID", &delivered)
        .env("DEAD_ID", &dead)
        .env("XSS_IDS", xss.join(","))
        .env("ROUTE", "pagerduty")
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("the browser script finished within 5 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log_tail()
    );
    assert!(stdout.contains("all browser checks passed"), "{stdout}");
    // What the browser did is what the store holds.
    assert_eq!(
        state(&client, &console, &dead).await.as_deref(),
        Some("delivered")
    );
    println!("screenshots in {}", shots.display());
}
