//! The template transform end to end: the README's example route (taken
//! from README.md itself) reproduces the seed's PagerDuty request
//! (`benches/seed/seed.py`) through the real server into the stub
//! PagerDuty, which validates it against PagerDuty's schema; error answers
//! are retried or not as documented; a broken template is refused by
//! `config check` and at start, before any delivery.  Also the CLI:
//! `transform run` previews a template, `transform list` lists every
//! built-in and `transform inspect` describes each new one.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// The fenced block after `<!-- example: NAME -->` in README.md.
fn readme_example(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let marker = format!("<!-- example: {name} -->");
    let at = readme.find(&marker).expect("the README has the example");
    let rest = &readme[at + marker.len()..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("\n```").expect("the block ends");
    rest[start..start + end].to_string()
}

/// The README's template route, pointed at `stub` (loopback needs
/// `allow_http` and `private_networks`) with the routing key inline.
fn readme_route(stub: &StubPagerDuty) -> String {
    let example = readme_example("template-pagerduty");
    let mut out = String::new();
    for line in example.lines() {
        if line.starts_with("url = ") {
            out.push_str(&format!("url = {:?}\n", stub.url()));
        } else if line.starts_with("secret = ") {
            out.push_str(&format!("secret = {ROUTING_KEY:?}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
            if line.starts_with("transform = ") {
                out.push_str("allow_http = true\nprivate_networks = [\"127.0.0.0/8\"]\n");
            }
        }
    }
    format!("{FAST_RETRY}{out}")
}

/// What `benches/seed/seed.py` sends to PagerDuty for `event` (an event
/// carrying id, severity, state and user: the seed prints `None` for a
/// missing one where the template prints nothing).
fn seed_request(event: &Value) -> Value {
    let text = |k: &str| match &event[k] {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    };
    let severity = match text("severity").to_lowercase().as_str() {
        "critical" => "critical",
        "major" => "error",
        "warning" => "warning",
        _ => "info",
    };
    json!({
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": format!("superna-zt-{}", text("id")),
        "payload": {
            "summary": format!("[{}] {}: {}", text("severity"), text("state"), text("user")),
            "source": event["cluster"].as_str().unwrap_or("superna"),
            "severity": severity,
            "custom_details": {"received_event": event},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_sends_exactly_what_the_seed_sends() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&readme_route(&pd)).await;
    let names = [
        "critical-lockout.json",
        "critical-access-restored.json",
        "false-positive.json",
    ];
    for name in names {
        let record = server
            .deliver(&fixture(&format!("events/{name}")), WAIT)
            .await;
        assert_eq!(
            record["deliveries"][0]["state"], "delivered",
            "{name}: {record}"
        );
    }
    let got = pd.wait_for(names.len(), WAIT).await;
    for (name, r) in names.iter().zip(&got) {
        let event: Value = serde_json::from_str(&fixture(&format!("events/{name}"))).unwrap();
        assert_eq!(r.json(), seed_request(&event), "{name}");
        assert!(pagerduty_problems(&r.json()).is_empty());
    }
    // Every other fixture is delivered valid too (the stub refuses an
    // invalid request with 400, which is permanent).
    for (name, body) in event_fixtures() {
        let record = server.deliver(&body, WAIT).await;
        assert_eq!(
            record["deliveries"][0]["state"], "delivered",
            "{name}: {record}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_content_stays_inside_json_strings() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&readme_route(&pd)).await;
    let mut event: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    event["user"] = json!("x\", \"event_action\": \"resolve");
    event["state"] = json!("{{ secret }}");
    let record = server.deliver(&event.to_string(), WAIT).await;
    assert_eq!(record["deliveries"][0]["state"], "delivered", "{record}");
    let sent = pd.wait_for(1, WAIT).await[0].json();
    assert_eq!(sent["event_action"], "trigger");
    assert_eq!(sent, seed_request(&event));
    assert!(
        sent["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("{{ secret }}"),
        "event text is data, never a template"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_are_retried_or_not_as_documented() {
    let pd = StubPagerDuty::start().await;
    pd.script(vec![
        (500, vec![("retry-after", "1".into())], "upstream".into()),
        (429, vec![], "slow down".into()),
    ]);
    let server = Server::start(&readme_route(&pd)).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    let o = delivered_after(&record, 3);
    assert_eq!(
        (&o[0]["retryable"], &o[1]["retryable"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(o[0]["retry_after_seconds"], 1);
    assert!(
        o[2]["message"]
            .as_str()
            .unwrap()
            .ends_with("/v2/enqueue answered HTTP 202"),
        "{record}"
    );

    for status in [401u16, 404, 400] {
        let pd = StubPagerDuty::start().await;
        pd.script(vec![(status, vec![], "no".into())]);
        let server = Server::start(&readme_route(&pd)).await;
        let record = server
            .deliver(&fixture("events/critical-lockout.json"), WAIT)
            .await;
        assert_eq!(record["deliveries"][0]["state"], "failed", "{record}");
        assert_not_retried(&record, &format!("HTTP {status}"));
        assert!(!record.to_string().contains(ROUTING_KEY), "redacted");
    }
}

/// A config file with one template route whose body is `body`.
fn config_file(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("ztbridge.toml");
    let text = format!(
        "data_dir = {:?}\n[[route]]\nname = \"hook\"\ntransform = \"builtin:template\"\n[route.config]\nurl = \"https://hooks.example.com/zt\"\nbody = '''\n{body}\n'''\n",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_broken_template_is_refused_by_config_check_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        (r#"{"user": {{ raw.user }"#, "template `body` (line 1)"),
        (r#"{"user": {{ raw.user | nosuchfilter }}}"#, "nosuchfilter"),
        (
            r#"{"user": {{ raw.user | safe }}}"#,
            "the rendered body is not JSON",
        ),
    ] {
        let path = config_file(dir.path(), body);
        let (code, _, stderr) = ztbridge(&["config", "check", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{body}: accepted");
        assert!(stderr.contains("route `hook`"), "{stderr}");
        assert!(stderr.contains(want), "{body}: {stderr}");

        let text = std::fs::read_to_string(&path).unwrap();
        let config = ztbridge_runtime::config::Config::parse(&text, "test").unwrap();
        let err = match ztbridge_runtime::app::App::build(config, &builtins(), true) {
            Ok(_) => panic!("{body}: the service started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(want), "{body}: {err}");
    }
    // A good one passes.
    let path = config_file(dir.path(), r#"{"user": {{ raw.user }}}"#);
    let (code, _, stderr) = ztbridge(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn transform_run_previews_the_rendered_request() {
    let event = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/critical-lockout.json"
    );
    let (code, report, stderr) = ztbridge(&[
        "transform",
        "run",
        "builtin:template",
        "--event",
        event,
        "--set",
        "url=https://hooks.example.com/zt",
        "--set",
        r#"headers={"Content-Type": "application/json", "X-Event": "{{ event.event_id }}"}"#,
        "--set",
        r#"body={"who": {{ raw.user }}, "kind": {{ event.state_kind }}}"#,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let request = &report["steps"][0]["requests"][0];
    assert_eq!(request["url"], "https://hooks.example.com/zt");
    assert_eq!(
        request["body"],
        json!({"who": "CORP\\jsmith", "kind": "open"})
    );
    assert!(
        request["headers"]
            .to_string()
            .contains("RSW-20250611-000123"),
        "{request}"
    );
}

#[test]
fn transform_list_and_inspect_cover_every_builtin() {
    let (code, list, stderr) = ztbridge(&["transform", "list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let names: Vec<&str> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["jitbit", "opsgenie", "pagerduty", "splunk", "template"]
    );
    for t in list.as_array().unwrap() {
        assert_eq!(t["contract"], "ztbridge:transform@0.2.0", "{t}");
        assert!(!t["description"].as_str().unwrap().is_empty());
        assert!(!t["egress"].as_array().unwrap().is_empty(), "{t}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztbridge"))
        .args(["transform", "list"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("TRANSFORM"), "{table}");
    assert!(table.contains("builtin:opsgenie"), "{table}");

    for (name, egress) in [
        (
            "opsgenie",
            json!(["api.opsgenie.com", "api.eu.opsgenie.com", "config:api_url"]),
        ),
        ("splunk", json!(["config:url"])),
        ("template", json!(["config:url"])),
    ] {
        let (code, info, stderr) = ztbridge(&["transform", "inspect", &format!("builtin:{name}")]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(info["name"], name);
        assert_eq!(info["egress"], egress, "{info}");
        assert_eq!(info["signers"], "built-in (trusted with the binary)");
    }
}
