//! End to end: real HTTP (plain and gzip) into the real server, the real
//! PagerDuty component in the sandbox, a stub PagerDuty on loopback that
//! validates every request against PagerDuty's published schema.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_plain_webhooks_reach_pagerduty_valid_and_correlated() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!("{FAST_RETRY}{}", pagerduty_route(&pd, ""))).await;

    // New alert, gzip as Superna sends it.
    let (status, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["event_id"], "RSW-20250611-000123");
    assert_eq!(answer["routes"], serde_json::json!(["pagerduty"]));
    let first = pd.wait_for(1, WAIT).await;
    let trigger = first[0].json();
    assert!(
        pagerduty_problems(&trigger).is_empty(),
        "{:?}",
        pagerduty_problems(&trigger)
    );
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "prod-cluster-01");
    assert_eq!(trigger["payload"]["timestamp"], "2025-06-11T10:15:03Z");
    let summary = trigger["payload"]["summary"].as_str().unwrap();
    for part in ["Critical", "LOCKED_OUT", "CORP\\jsmith", "prod-cluster-01"] {
        assert!(summary.contains(part), "summary {summary:?} lacks {part}");
    }
    // The received event travels whole in custom_details.
    let sent_event = &trigger["payload"]["custom_details"]["received_event"];
    let original: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    assert_eq!(sent_event, &original);
    assert!(
        trigger["links"][0]["href"]
            .as_str()
            .unwrap()
            .starts_with("https://eyeglass.corp.example/")
    );
    let dedup = trigger["dedup_key"].as_str().unwrap().to_string();
    assert!(dedup.contains("RSW-20250611-000123"));

    // Its state changes: plain JSON this time; an end state resolves the
    // same alert.
    let (status, _) = server
        .post_plain(&fixture("events/critical-access-restored.json"))
        .await;
    assert_eq!(status, 202);
    let all = pd.wait_for(2, WAIT).await;
    let resolve = all[1].json();
    assert!(
        pagerduty_problems(&resolve).is_empty(),
        "{:?}",
        pagerduty_problems(&resolve)
    );
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(
        resolve["dedup_key"],
        dedup.as_str(),
        "an update must keep the dedup_key"
    );

    // The delivery record says what happened.
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let d = &record["deliveries"][0];
    assert_eq!(d["state"], "delivered", "{record}");
    assert_eq!(d["attempts"][0]["last_status"], 202);
    assert!(
        d["attempts"][0]["transform_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_delivered_schema_valid() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!("{FAST_RETRY}{}", pagerduty_route(&pd, ""))).await;
    let fixtures = event_fixtures();
    for (name, body) in &fixtures {
        let (status, answer) = server.post_gzip(body).await;
        assert_eq!(status, 202, "{name}: {answer}");
        let record = server
            .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
            .await;
        assert_eq!(
            record["deliveries"][0]["state"], "delivered",
            "{name}: {record}"
        );
    }
    let received = pd.wait_for(fixtures.len(), WAIT).await;
    for r in &received {
        let v = r.json();
        assert!(
            pagerduty_problems(&v).is_empty(),
            "{}: {:?}",
            r.body,
            pagerduty_problems(&v)
        );
    }
    // The event without an ID still went out, keyed by its body hash.
    let no_id = received
        .iter()
        .map(Received::json)
        .find(|v| v["payload"]["custom_details"]["received_event"]["user"] == "10.40.0.12");
    let no_id = no_id.expect("the event without an ID was delivered");
    assert!(
        no_id["dedup_key"]
            .as_str()
            .unwrap()
            .starts_with("superna-zt-body-")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn severity_filter_and_state_mapping() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!(
        "{FAST_RETRY}{}",
        pagerduty_route(&pd, "severities = [\"critical\", \"major\"]")
    ))
    .await;
    let (status, answer) = server
        .post_gzip(&fixture("events/warning-monitor.json"))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        answer["routes"],
        serde_json::json!([]),
        "warnings are filtered out"
    );
    let (_, answer) = server
        .post_gzip(&fixture("events/major-delayed-lockout-snake-case.json"))
        .await;
    assert_eq!(answer["routes"], serde_json::json!(["pagerduty"]));
    let got = pd.wait_for(1, WAIT).await;
    let v = got[0].json();
    assert_eq!(v["payload"]["severity"], "error", "Major maps to error");
    assert_eq!(
        v["payload"]["timestamp"], "2025-06-12T10:15:00Z",
        "epoch ms became RFC 3339"
    );
    // A false positive on that event resolves it.
    let (_, answer) = server
        .post_gzip(&fixture("events/false-positive.json"))
        .await;
    assert_eq!(answer["routes"], serde_json::json!(["pagerduty"]));
    let got = pd.wait_for(2, WAIT).await;
    assert_eq!(got[1].json()["event_action"], "resolve");
    assert_eq!(got[1].json()["dedup_key"], v["dedup_key"]);
    assert_eq!(
        pd.received().len(),
        2,
        "the warning never reached PagerDuty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&pagerduty_route(&pd, "")).await;
    let json = [("content-type", "application/json")];
    let gz = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];

    let (s, v) = server.post(b"{\"id\": ".to_vec(), &json).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("line 1"), "{v}");

    let mut truncated = gzip(fixture("events/critical-lockout.json").as_bytes());
    truncated.truncate(truncated.len() / 2);
    let (s, v) = server.post(truncated, &gz).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_gzip")), "{v}");

    let (s, v) = server.post(b"\x00\x01binary".to_vec(), &gz).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_gzip")), "{v}");

    let (s, v) = server
        .post(
            fixture("events/critical-lockout.json").into_bytes(),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (415, Some("unsupported_content_type")),
        "{v}"
    );

    let (s, v) = server
        .post(fixture("events/critical-lockout.json").into_bytes(), &[])
        .await;
    assert_eq!(s, 415, "{v}");

    // A body labelled gzip that is plain JSON is accepted.
    let (s, v) = server
        .post(fixture("events/critical-lockout.json").into_bytes(), &gz)
        .await;
    assert_eq!(s, 202, "{v}");

    // Wrong method and unknown path answer JSON too.
    let r = server
        .client
        .get(server.url("/webhook"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    let r = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");

    // Only the one good webhook reached PagerDuty.
    pd.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pd.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_errors_retry_or_fail_as_documented() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!("{FAST_RETRY}{}", pagerduty_route(&pd, ""))).await;

    // 429 with Retry-After: 1, then a 500, then the stub's normal 202.
    pd.script(vec![
        (
            429,
            vec![("retry-after", "1".into())],
            "{\"status\":\"throttled\"}".into(),
        ),
        (500, vec![], "oops".into()),
    ]);
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let d = &record["deliveries"][0];
    assert_eq!(d["state"], "delivered", "{record}");
    let statuses: Vec<u64> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["last_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![429, 500, 202]);
    let got = pd.received();
    assert_eq!(got.len(), 3);
    let waited = got[1].at.duration_since(got[0].at);
    assert!(
        waited >= Duration::from_millis(990),
        "Retry-After: 1 was not honoured ({waited:?})"
    );
    assert_eq!(
        got[0].json()["dedup_key"],
        got[2].json()["dedup_key"],
        "retries keep the dedup_key"
    );

    // 400 is not retried; the reason is recorded.
    pd.script(vec![(
        400,
        vec![],
        "{\"status\":\"invalid event\",\"errors\":[\"bad things\"]}".into(),
    )]);
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let d = &record["deliveries"][0];
    assert_eq!(d["state"], "failed", "{record}");
    assert_eq!(
        d["attempts"].as_array().unwrap().len(),
        1,
        "400 must not be retried"
    );
    let msg = d["attempts"][0]["outcome"]["message"].as_str().unwrap();
    assert!(msg.contains("400") && msg.contains("bad things"), "{msg}");
    assert_eq!(d["attempts"][0]["outcome"]["retryable"], false);

    // 401 is a configuration problem: not retried either.
    pd.script(vec![(401, vec![], "unauthorized".into())]);
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    assert_eq!(record["deliveries"][0]["state"], "failed");
    assert_eq!(
        record["deliveries"][0]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transforms_are_stopped_and_reported_while_serving_continues() {
    let pd = StubPagerDuty::start().await;
    let hostile = |name: &str, mode: &str| {
        format!(
            "[[route]]\nname = {name:?}\ntransform = {:?}\n[route.config]\nmode = {mode:?}\n",
            wasm_path("hostile")
        )
    };
    let config = format!(
        "{FAST_RETRY}[trust]\nallow_unsigned = true\n[limits]\nstep_timeout_ms = 300\nfuel_per_step = 50000000000\nmemory_bytes = 16777216\n{}{}{}{}{}",
        pagerduty_route(&pd, ""),
        hostile("looper", "loop"),
        hostile("sleeper", "sleep"),
        hostile("hoarder", "memory"),
        hostile("trapper", "trap"),
    ) + &hostile("bloater", "huge");
    let server = Server::start(&config).await;
    let (status, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202);
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let by_route = |name: &str| {
        record["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["route"] == name)
            .cloned()
            .expect("route")
    };
    assert_eq!(by_route("pagerduty")["state"], "delivered", "{record}");
    for (route, expect) in [
        ("looper", "deadline exceeded"),
        // An hour's sleep in a WASI poll: no wasm runs, so no epoch check
        // does; the call's own timer stops it.
        ("sleeper", "deadline exceeded"),
        ("hoarder", "memory limit"),
        ("trapper", "hostile transform panicking"),
    ] {
        let d = by_route(route);
        assert_eq!(d["state"], "failed", "{route}: {d}");
        assert_eq!(
            d["attempts"].as_array().unwrap().len(),
            1,
            "{route}: sandbox failures are not retried"
        );
        let msg = d["attempts"][0]["outcome"]["message"].as_str().unwrap();
        assert!(msg.contains(expect), "{route}: {msg}");
        assert_eq!(d["attempts"][0]["outcome"]["kind"], "sandbox");
    }
    let bloater = by_route("bloater");
    assert_eq!(bloater["state"], "failed", "{bloater}");
    assert_eq!(
        bloater["attempts"][0]["outcome"]["kind"], "limit",
        "{bloater}"
    );
    assert!(
        bloater["attempts"][0]["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("max_request_body_bytes")
    );
    // The server still serves: another event goes through.
    let (status, _) = server
        .post_gzip(&fixture("events/major-delayed-lockout-snake-case.json"))
        .await;
    assert_eq!(status, 202);
    pd.wait_for(2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_bounds_a_loop_before_the_deadline() {
    let pd = StubPagerDuty::start().await;
    let config = format!(
        "[trust]\nallow_unsigned = true\n[limits]\nstep_timeout_ms = 60000\nfuel_per_step = 5000000\n{}[[route]]\nname = \"looper\"\ntransform = {:?}\n[route.config]\nmode = \"loop\"\n",
        pagerduty_route(&pd, ""),
        wasm_path("hostile")
    );
    let server = Server::start(&config).await;
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let d = record["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["route"] == "looper")
        .cloned()
        .unwrap();
    let msg = d["attempts"][0]["outcome"]["message"].as_str().unwrap();
    assert!(msg.contains("fuel exhausted"), "{msg}");
}

/// A state store that takes 50 ms per read, as a PostgreSQL under load
/// may; it counts the reads it answered.
struct SlowState(std::sync::atomic::AtomicUsize);

impl ztbridge_runtime::store::TransformState for SlowState {
    fn get(
        &self,
        _route: &str,
        _key: &str,
    ) -> Result<Option<String>, ztbridge_runtime::store::StateError> {
        std::thread::sleep(Duration::from_millis(50));
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Some("value".into()))
    }
    fn apply(
        &self,
        _route: &str,
        _writes: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<(), ztbridge_runtime::store::StateError> {
        Ok(())
    }
    fn dump(
        &self,
        _route: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ztbridge_runtime::store::StateError>
    {
        Ok(Default::default())
    }
}

/// A step that spends its time waiting in `state-get` (1000 reads of
/// 50 ms: 50 s) is stopped at its 300 ms deadline, in wall-clock time: the
/// ticks that pass while it waits in the host count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_waiting_on_a_slow_state_store_is_stopped_at_its_deadline() {
    use std::sync::Arc;
    use ztbridge_runtime::{config, egress, flow, sandbox, store};
    let limits = config::Limits {
        step_timeout_ms: 300,
        ..config::Limits::default()
    };
    let engine = Arc::new(sandbox::Engine::new(limits).expect("engine"));
    let path = wasm_path("hostile");
    let bytes = std::fs::read(&path).expect("component");
    let transform = sandbox::Transform::load(&engine, &path, &bytes).expect("load");
    let rc: config::RouteConfig =
        toml::from_str("name = \"reader\"\ntransform = \"x\"\n[config]\nmode = \"state-loop\"\n")
            .expect("route config");
    let route = flow::Route::build(&rc, transform, &|_| None).expect("route");
    let slow = Arc::new(SlowState(Default::default()));
    let state: Arc<dyn store::TransformState> = slow.clone();
    let event = flow::record(&flow::FlowInput {
        body: &fixture("events/critical-lockout.json"),
        receipt_id: "r1",
        received_ms: 1_749_636_904_250,
        attempt: 1,
    });
    let canned = egress::CannedTransport::new(vec![]);
    let report = flow::run(&engine, &route, &state, event, &canned).await;
    match &report.outcome {
        flow::Outcome::Failed {
            retryable, message, ..
        } => {
            assert!(!retryable, "{message}");
            assert!(message.contains("deadline exceeded"), "{message}");
        }
        other => panic!("the step outlived its deadline: {other:?}"),
    }
    // Reads start at 0, 50, ... 250 ms: six before the deadline, and the
    // one running at the deadline may still finish.  Counting epoch ticks
    // instead would let 30 run (a read counts as one tick, however long).
    let reads = slow.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(reads <= 8, "the step made {reads} reads of 50 ms in 300 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_outside_the_allow_list_is_refused_and_nothing_is_sent() {
    let pd = StubPagerDuty::start().await;
    let config = format!(
        "[trust]\nallow_unsigned = true\n[[route]]\nname = \"sneaky\"\ntransform = {:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nmode = \"forbidden\"\nurl = {:?}\n\
         [[route]]\nname = \"plain\"\ntransform = {:?}\n[route.config]\nmode = \"plain-http\"\nurl = \"https://allowed.example/ingest\"\n",
        wasm_path("hostile"),
        pd.url(),
        wasm_path("hostile"),
    );
    let server = Server::start(&config).await;
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    for d in record["deliveries"].as_array().unwrap() {
        assert_eq!(d["state"], "failed", "{d}");
        assert_eq!(d["attempts"][0]["outcome"]["kind"], "egress", "{d}");
    }
    let msgs: Vec<&str> = record["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attempts"][0]["outcome"]["message"].as_str().unwrap())
        .collect();
    assert!(msgs.iter().any(|m| m.contains("evil.example")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("scheme `http`")), "{msgs:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pd.received().is_empty(), "nothing may be sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_endless_flows_are_cut() {
    let pd = StubPagerDuty::start().await;
    let elsewhere = StubPagerDuty::start().await;
    // The destination answers with a redirect to another host.
    pd.script(vec![(
        307,
        vec![("location", elsewhere.url())],
        String::new(),
    )]);
    let config = format!(
        "[trust]\nallow_unsigned = true\n[limits]\nmax_steps = 5\n\
         [[route]]\nname = \"redirected\"\ntransform = {:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nmode = \"ok\"\nurl = {:?}\n",
        wasm_path("hostile"),
        pd.url(),
    );
    let server = Server::start(&config).await;
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let d = &record["deliveries"][0];
    assert_eq!(
        d["attempts"][0]["last_status"], 307,
        "the transform saw the redirect itself: {record}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(elsewhere.received().is_empty(), "the redirect was followed");

    // A transform that never stops asking is cut at max_steps.
    let config = format!(
        "[trust]\nallow_unsigned = true\n[limits]\nmax_steps = 5\n\
         [[route]]\nname = \"endless\"\ntransform = {:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nmode = \"endless\"\nurl = {:?}\n",
        wasm_path("hostile"),
        elsewhere.url(),
    );
    let server = Server::start(&config).await;
    let (_, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    let outcome = &record["deliveries"][0]["attempts"][0]["outcome"];
    assert_eq!(outcome["kind"], "limit", "{record}");
    assert!(outcome["message"].as_str().unwrap().contains("max_steps"));
    assert_eq!(
        elsewhere.received().len(),
        5,
        "exactly max_steps requests went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_one_alert_never_overtake_each_other() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!("{FAST_RETRY}{}", pagerduty_route(&pd, ""))).await;
    // The trigger fails twice and is retried with back-off; the resolve,
    // posted right behind it, must wait for it.
    pd.script(vec![
        (500, vec![], "down".into()),
        (503, vec![], "down".into()),
    ]);
    let (s1, _) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    let (s2, _) = server
        .post_gzip(&fixture("events/critical-access-restored.json"))
        .await;
    // Another alert is not held up by the first one's retries.
    let (s3, _) = server
        .post_gzip(&fixture("events/major-delayed-lockout-snake-case.json"))
        .await;
    assert_eq!((s1, s2, s3), (202, 202, 202));
    let got = pd.wait_for(5, WAIT).await;
    let seq: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["dedup_key"].as_str().unwrap().to_string(),
                v["event_action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Scripted failures go to whichever request comes first, so count: the
    // alert's trigger failed at least once, and its resolve went out only
    // after a trigger was retried, never in between.
    let first: Vec<&str> = seq
        .iter()
        .filter(|(k, _)| k.contains("000123"))
        .map(|(_, a)| a.as_str())
        .collect();
    let triggers = first.iter().take_while(|a| **a == "trigger").count();
    assert!(triggers >= 2 && first[triggers..] == ["resolve"], "{seq:?}");
    let other = seq.iter().position(|(k, _)| k.contains("000456")).unwrap();
    let resolve = seq.iter().position(|(_, a)| a == "resolve").unwrap();
    assert!(
        other < resolve,
        "the other alert went first, not behind the retries: {seq:?}"
    );
}

/// A destination that refuses the connection: the attempt is retried, and
/// its record shows the whole cause chain (what failed, and why, down to
/// the operating system's error), not a flattened "request failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_and_the_record_shows_why() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!(
        "[delivery]\ninitial_backoff_ms = 600000\nmax_backoff_ms = 600000\n[[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = \"http://127.0.0.1:{closed_port}/v2/enqueue\"\n"
    );
    let server = Server::start(&config).await;
    let (status, answer) = server
        .post_plain(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let receipt = answer["receipt_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let delivery = loop {
        let ev = server.event(&receipt).await;
        let d = ev["deliveries"][0].clone();
        if d["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt recorded: {ev}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(delivery["state"], "pending", "retried later: {delivery}");
    let error = delivery["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("connection failed") && error.contains("Connection refused"),
        "the cause chain: {error}"
    );
    let outcome = &delivery["attempts"][0]["outcome"];
    assert_eq!(outcome["retryable"], true, "{outcome}");
}

/// `route_in_flight{route="looper"}` from `/metrics`, 0 when absent.
async fn loopers_running(server: &Server) -> f64 {
    server
        .metric("ztbridge_route_in_flight", &[("route", "looper")])
        .await
        .unwrap_or(0.0)
}

/// Guests run on fibers inside the flows' tasks and yield at each epoch
/// tick: as many transforms computing for their whole (long) deadline as
/// the runtime has workers leave the intake and the other routes serving.
/// The checks run on a thread and runtime of their own, so that workers
/// held by a guest make them fail rather than hang with the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_computing_on_every_worker_leave_the_service_serving() {
    let pd = StubPagerDuty::start().await;
    let config = format!(
        "[trust]\nallow_unsigned = true\n[limits]\nstep_timeout_ms = 120000\nfuel_per_step = 1000000000000000\n[delivery]\ndedupe_window_secs = 0\n{}[[route]]\nname = \"looper\"\ntransform = {:?}\nmax_in_flight = 4\n[route.config]\nmode = \"loop\"\n",
        pagerduty_route(&pd, ""),
        wasm_path("hostile")
    );
    let server = Server::start(&config).await;
    let checks = async {
        let post = |i: usize| {
            let mut v: Value =
                serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
            v["id"] = Value::from(format!("spin-{i}"));
            v.to_string()
        };
        for i in 0..4 {
            let (status, answer) = server.post_plain(&post(i)).await;
            assert_eq!(status, 202, "{answer}");
        }
        // Four loopers take their slots: twice this runtime's workers.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let running = loopers_running(&server).await;
            if running >= 4.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the loopers never all ran: {running} in flight"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The intake still answers and the healthy route still delivers.
        for i in 4..8 {
            let (status, answer) = server.post_plain(&post(i)).await;
            assert_eq!(status, 202, "{answer}");
        }
        pd.wait_for(8, WAIT).await;
        assert_eq!(
            loopers_running(&server).await,
            4.0,
            "the loopers were computing all along (their deadline is 120 s)"
        );
    };
    let checked = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async { tokio::time::timeout(WAIT * 2, checks).await })
            })
            .join()
    });
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the service stopped answering while transforms computed"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
