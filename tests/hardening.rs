//! The real binary as an attacker meets it: text from an event or a
//! transform cannot forge log lines or table rows, and the data directory
//! is private whatever the umask the service was started with.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::child::ChildServer;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Waits until every delivery of `receipt` is delivered or failed.
async fn settled(child: &ChildServer, receipt: &str) -> Value {
    let client = reqwest::Client::new();
    let url = child.url(&format!("/api/events/{receipt}"));
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        last = client.get(&url).send().await.unwrap().json().await.unwrap();
        let done = last["deliveries"].as_array().is_some_and(|ds| {
            !ds.is_empty()
                && ds
                    .iter()
                    .all(|d| d["state"] == "delivered" || d["state"] == "failed")
        });
        if done {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not settled: {last}\n{}", child.log_tail());
}

/// The critical lockout fixture with its ID replaced.
fn event_with_id(id: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["id"] = Value::String(id.into());
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_and_transform_text_cannot_forge_log_lines_or_table_rows() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Text logs (the default), as journald gets them.
    let config = format!(
        "[trust]\nallow_unsigned = true\n{}\
         [[route]]\nname = \"hostile\"\ntransform = {:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nmode = \"log-inject\"\nurl = {:?}\n",
        pagerduty_route(&pd, ""),
        wasm_path("hostile"),
        pd.url(),
    );
    let child = ChildServer::start(dir.path(), &config).await;
    let id = "RSW-1\n1999-01-01T00:00:00.000000Z ERROR FORGED-BY-ID\r\u{0}\u{1b}[2J\u{85}\u{2028}";
    let (status, answer) = child.post(&event_with_id(id)).await;
    assert_eq!(status, 202, "{answer}");
    // The answer shows the ID escaped, on one line.
    let shown = answer["event_id"].as_str().unwrap();
    assert!(shown.starts_with("RSW-1\\n1999"), "{shown}");
    let record = settled(&child, answer["receipt_id"].as_str().unwrap()).await;
    assert_eq!(
        record["deliveries"].as_array().unwrap().len(),
        2,
        "{record}"
    );

    let log = std::fs::read_to_string(&child.log_path).unwrap();
    for forged in ["FORGED-BY-ID", "FORGED-BY-LOG", "FORGED-BY-STDOUT"] {
        assert!(
            log.contains(forged),
            "{forged} was not logged at all:\n{log}"
        );
    }
    for line in log.lines() {
        assert!(
            !line.starts_with("1999-01-01") && !line.starts_with("FORGED"),
            "a forged log line: {line:?}"
        );
        if line.contains("FORGED") {
            // On the same line as the real entry, with the control
            // characters escaped before it.
            assert!(
                line.contains("\\n1999") || line.contains("\\rFORGED"),
                "{line:?}"
            );
        }
    }
    for raw in ['\r', '\0', '\u{1b}', '\u{85}', '\u{2028}'] {
        assert!(!log.contains(raw), "raw {raw:?} in the log:\n{log:?}");
    }

    // `events list`: one line per row.
    let (code, table, err) = child.events(&["list"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "a header and two rows:\n{table}");
    assert!(
        rows[1..].iter().all(|r| r.contains("RSW-1\\n1999")),
        "{table}"
    );
    for raw in ['\r', '\0', '\u{1b}', '\u{85}', '\u{2028}'] {
        assert!(!table.contains(raw), "raw {raw:?} in the table:\n{table:?}");
    }
}

/// Every file and directory under `dir` (two levels), with its mode.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut out = vec![(dir.display().to_string(), mode(dir))];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push((e.path().display().to_string(), mode(&e.path())));
        if e.path().is_dir() {
            for inner in std::fs::read_dir(e.path()).unwrap().flatten() {
                out.push((inner.path().display().to_string(), mode(&inner.path())));
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_whatever_the_umask() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    // What an earlier run under umask 000 may have left.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let old = data.join("left-open.txt");
    std::fs::write(&old, b"x").unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();

    let child = ChildServer::start_with_umask(dir.path(), &pagerduty_route(&pd, ""), "000").await;
    let (status, answer) = child.post(&fixture("events/critical-lockout.json")).await;
    assert_eq!(status, 202, "{answer}");
    settled(&child, answer["receipt_id"].as_str().unwrap()).await;

    let all = modes(&data);
    let names: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    for expected in [
        "events.sqlite3",
        "events.sqlite3-wal",
        "events.sqlite3-shm",
        "state.sqlite3",
        "serve.lock",
        "compile-cache",
        ".cwasm",
    ] {
        assert!(
            names.iter().any(|n| n.contains(expected)),
            "no {expected} in {names:?}"
        );
    }
    for (path, m) in &all {
        let want = if Path::new(path).is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(*m, want, "{path} is {m:o}, not {want:o}: {all:?}");
    }
    assert!(
        child.log_tail().contains("made private"),
        "{}",
        child.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_gets_no_environment_files_or_sockets() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!(
        "[trust]\nallow_unsigned = true\n[[route]]\nname = \"hostile\"\ntransform = {:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nmode = \"escape\"\nurl = {:?}\n",
        wasm_path("hostile"),
        pd.url(),
    ))
    .await;
    let (status, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let d = &record["deliveries"][0];
    let message = d["attempts"][0]["outcome"]["message"].as_str().unwrap();
    assert_eq!(
        message, "escape: env=0 args=0 file=false dir=false socket=false",
        "{d}"
    );
    assert!(pd.received().is_empty(), "the raw socket reached the stub");
}
