//! The dry run (`ztbridge transform run`) through the real binary: every
//! request the PagerDuty transform produces, over every fixture, is valid
//! against PagerDuty's published schema; size limits hold for huge events.

mod common;

use common::*;
use serde_json::{Value, json};

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// A JSON request body is shown as JSON, not as a string of escaped JSON.
fn request_body(report: &Value, step: usize) -> Value {
    let body = report["steps"][step]["requests"][0]["body"].clone();
    assert!(body.is_object(), "{body}");
    body
}

#[test]
fn every_fixture_gives_a_schema_valid_request() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = write_temp(
        &dir,
        "r.json",
        r#"[{"status": 202, "body": {"status":"success","message":"Event processed"}}]"#,
    );
    for (name, _) in event_fixtures() {
        let event = format!(
            "{}/tests/fixtures/events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let (code, report, stderr) = ztbridge(&[
            "transform",
            "run",
            "builtin:pagerduty",
            "--event",
            &event,
            "--set",
            &format!("routing_key={ROUTING_KEY}"),
            "--responses",
            &accepted,
        ]);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert_eq!(report["outcome"]["status"], "done", "{name}: {report}");
        let body = request_body(&report, 0);
        // The dry run hides the secret; PagerDuty's schema only needs a string.
        assert_eq!(body["routing_key"], "[redacted]", "{name}");
        let problems = pagerduty_problems(&body);
        assert!(problems.is_empty(), "{name}: {problems:?}\n{body}");
        assert_eq!(
            report["steps"][0]["requests"][0]["url"],
            "https://events.pagerduty.com/v2/enqueue"
        );
    }
}

#[test]
fn huge_events_are_bounded_and_say_what_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = (0..40_000)
        .map(|i| format!("/ifs/data/finance/q2/file-{i:06}.xlsx.locked"))
        .collect();
    let big = json!({
        "id": "RSW-HUGE-1", "severity": "Critical", "state": "LOCKED_OUT", "user": "CORP\\big",
        "files": files, "note": "x".repeat(300_000),
    });
    let event = write_temp(&dir, "big.json", &big.to_string());
    assert!(big.to_string().len() > 1_500_000);
    let (code, report, stderr) = ztbridge(&[
        "transform",
        "run",
        "builtin:pagerduty",
        "--event",
        &event,
        "--set",
        "routing_key=abcd1234abcd1234",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let body = request_body(&report, 0);
    let raw = body.to_string();
    assert!(raw.len() <= 512 * 1024, "request is {} bytes", raw.len());
    assert!(pagerduty_problems(&body).is_empty());
    let details = &body["payload"]["custom_details"];
    let note = details["ztbridge_truncated"]
        .as_str()
        .expect("truncation note");
    assert!(
        note.contains("list items") && note.contains("cut"),
        "{note}"
    );
    assert_eq!(
        details["received_event"]["id"], "RSW-HUGE-1",
        "the structure survives"
    );
    assert_eq!(
        details["zero_trust"]["file_count"], 40_000,
        "the count of files is kept"
    );
    let logs = report["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "warn" && l["message"].as_str().unwrap().contains("shrunk"))
    );
}

#[test]
fn long_ids_and_summaries_stay_within_limits() {
    let dir = tempfile::tempdir().unwrap();
    let ev = json!({"id": "X".repeat(400), "severity": "Critical", "state": "LOCKED_OUT", "user": "U".repeat(3000)});
    let event = write_temp(&dir, "long.json", &ev.to_string());
    let (code, report, _) = ztbridge(&[
        "transform",
        "run",
        "builtin:pagerduty",
        "--event",
        &event,
        "--set",
        "routing_key=abcd1234abcd1234",
    ]);
    assert_eq!(code, 0);
    let body = request_body(&report, 0);
    assert!(
        pagerduty_problems(&body).is_empty(),
        "{:?}",
        pagerduty_problems(&body)
    );
    assert!(
        body["dedup_key"]
            .as_str()
            .unwrap()
            .starts_with("superna-zt-sha256-")
    );
    assert_eq!(
        body["payload"]["summary"].as_str().unwrap().chars().count(),
        1024
    );
}

#[test]
fn failures_and_configuration_errors_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let event = format!(
        "{}/tests/fixtures/events/critical-lockout.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let throttled = write_temp(
        &dir,
        "r.json",
        r#"[{"status": 429, "headers": {"Retry-After": "30"}, "body": "slow down"}]"#,
    );
    let (code, report, _) = ztbridge(&[
        "transform",
        "run",
        "builtin:pagerduty",
        "--event",
        &event,
        "--set",
        "routing_key=abcd1234abcd1234",
        "--responses",
        &throttled,
    ]);
    assert_eq!(code, 1);
    assert_eq!(report["outcome"]["status"], "failed");
    assert_eq!(report["outcome"]["retryable"], true);
    assert_eq!(report["outcome"]["retry_after_seconds"], 30);

    // Missing routing key: a clear error naming the key and its variable.
    let (code, _, stderr) = ztbridge(&["transform", "run", "builtin:pagerduty", "--event", &event]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("routing_key") && stderr.contains("ZTBRIDGE_PAGERDUTY_ROUTING_KEY"),
        "{stderr}"
    );

    // Unknown built-in.
    let (code, _, stderr) = ztbridge(&["transform", "run", "builtin:nope", "--event", &event]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown built-in transform `nope`"),
        "{stderr}"
    );
}

#[test]
fn hostile_component_from_a_file_is_contained() {
    let event = format!(
        "{}/tests/fixtures/events/critical-lockout.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, report, stderr) = ztbridge(&[
        "transform",
        "run",
        &wasm_path("hostile"),
        "--event",
        &event,
        "--set",
        "mode=trap",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["outcome"]["kind"], "sandbox");
    assert!(
        report["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("panicking on purpose"),
        "{report}"
    );

    let (code, report, _) = ztbridge(&[
        "transform",
        "run",
        &wasm_path("hostile"),
        "--event",
        &event,
        "--set",
        "mode=huge",
    ]);
    assert_eq!(code, 1);
    assert_eq!(report["outcome"]["kind"], "limit", "{}", report["outcome"]);
    assert!(
        report["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("max_request_body_bytes"),
        "{}",
        report["outcome"]
    );

    // Output larger than the host's per-call copy budget is refused while
    // being copied out of the guest, before it can use host memory.
    let (code, report, _) = ztbridge(&[
        "transform",
        "run",
        &wasm_path("hostile"),
        "--event",
        &event,
        "--set",
        "mode=flood",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        report["outcome"]["kind"], "sandbox",
        "{}",
        report["outcome"]
    );
    assert!(
        report["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("too much data"),
        "{}",
        report["outcome"]
    );

    // Secrets never appear in the output, even when the transform logs them.
    let (code, report, stderr) = ztbridge(&[
        "transform",
        "run",
        &wasm_path("hostile"),
        "--event",
        &event,
        "--set",
        "mode=leak-secret",
        "--set",
        "secret=s3cr3t-v4lue",
    ]);
    assert_eq!(code, 1);
    let all = format!("{report}{stderr}");
    assert!(!all.contains("s3cr3t-v4lue"), "secret leaked: {all}");
    assert!(all.contains("[redacted]"));
}

#[test]
fn inspect_shows_the_declaration_without_secrets() {
    let (code, info, _) = ztbridge(&["transform", "inspect", "builtin:pagerduty"]);
    assert_eq!(code, 0);
    assert_eq!(info["name"], "pagerduty");
    assert!(info["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        info["egress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "events.pagerduty.com")
    );
    let keys = info["config"].as_array().unwrap();
    let rk = keys.iter().find(|k| k["name"] == "routing_key").unwrap();
    assert_eq!(rk["secret"], true);
    assert_eq!(rk["required"], true);
}
