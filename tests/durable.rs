//! Durable delivery, with the real binary as a child process: nothing
//! acknowledged is lost (kill -9 mid-burst), outages and 429s are ridden
//! out, dead letters can be retried, one alert's updates arrive in order.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::ChildServer;
use common::*;
use serde_json::{Value, json};

/// Retries quick enough for tests.
const QUICK: &str = "[delivery]\ninitial_backoff_ms = 100\nmax_backoff_ms = 2000\n";

fn event(id: &str, seq: usize, state: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["id"] = json!(id);
    v["state"] = json!(state);
    v["update_seq"] = json!(seq);
    serde_json::to_vec(&v).unwrap()
}

/// POSTs a gzip webhook the way Superna does; (status, answer).
async fn post(client: &reqwest::Client, url: &str, body: &[u8]) -> Result<(u16, Value), String> {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(body))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.map_err(|e| e.to_string())?;
    Ok((status, v))
}

/// The Superna event ID, dedup key and update number a PagerDuty request
/// carries (a resolve has no payload: its ID comes from the dedup key, its
/// update number is unknown, u64::MAX).
fn carried(r: &Received) -> (String, String, u64) {
    let v = r.json();
    let dedup = v["dedup_key"].as_str().unwrap_or("").to_string();
    let ev = &v["payload"]["custom_details"]["received_event"];
    let id = ev["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| dedup.trim_start_matches("superna-zt-").to_string());
    let seq = ev["update_seq"].as_u64().unwrap_or(u64::MAX);
    (id, dedup, seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_burst_loses_nothing_acknowledged() {
    let pd = StubPagerDuty::start().await;
    pd.delay(5, 40);
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{QUICK}{}", pagerduty_route(&pd, ""));
    let mut server = ChildServer::start(dir.path(), &config).await;
    let url = server.url("/webhook");

    // 8 senders, 400 distinct alerts; kill -9 once 150 are acknowledged.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (acked, next, client, url) = (acked.clone(), next.clone(), client.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= 400 {
                    return;
                }
                let id = format!("RSW-KILL-{i:04}");
                match post(&client, &url, &event(&id, 0, "LOCKED_OUT")).await {
                    Ok((202, _)) => acked.lock().unwrap().push(id),
                    Ok((s, v)) => panic!("unexpected answer {s}: {v}"),
                    // The server is gone: stop sending.
                    Err(_) => return,
                }
            }
        }));
    }
    wait_until(Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 150).then_some(())
    })
    .await
    .expect("150 webhooks acknowledged");
    server.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let before_restart = pd.received().len();
    println!(
        "acknowledged {} webhooks; PagerDuty had {before_restart} requests at the kill",
        acked.len()
    );
    assert!(acked.len() >= 150 && acked.len() < 400, "{}", acked.len());

    // Restart on the same data directory: everything acknowledged arrives.
    let server = ChildServer::start(dir.path(), &config).await;
    let all = wait_until(Duration::from_secs(120), || {
        let got: BTreeSet<String> = pd.received().iter().map(|r| carried(r).0).collect();
        acked.is_subset(&got).then_some(())
    })
    .await;
    if all.is_none() {
        let got: BTreeSet<String> = pd.received().iter().map(|r| carried(r).0).collect();
        let missing: Vec<_> = acked.difference(&got).take(10).collect();
        panic!(
            "acknowledged events never delivered: {missing:?}\n{}",
            server.log_tail()
        );
    }
    // The real condition: every acknowledged alert is recorded as
    // delivered, and nothing is open (pending or in flight) any more.  A
    // delivery can be in flight after its request reached the stub, so
    // waiting on `pending` alone races with the last record.
    let settled = wait_until(Duration::from_secs(60), || {
        let open = ["pending", "in_flight"].iter().any(|state| {
            let (_, out, _) = server.events(&["list", "--state", state, "--json"]);
            out.trim() != "[]"
        });
        if open {
            return None;
        }
        let (_, out, _) =
            server.events(&["list", "--state", "delivered", "--limit", "1000", "--json"]);
        let delivered: Vec<Value> = serde_json::from_str(&out).ok()?;
        let ids: BTreeSet<String> = delivered
            .iter()
            .filter_map(|r| r["event_id"].as_str().map(str::to_string))
            .collect();
        acked.is_subset(&ids).then_some(ids)
    })
    .await;
    let Some(delivered_ids) = settled else {
        let (_, out, _) = server.events(&["list", "--limit", "1000", "--json"]);
        panic!(
            "acknowledged events not all recorded as delivered:\n{out}\n{}",
            server.log_tail()
        );
    };
    // Whatever was stored but not acknowledged (committed just before the
    // kill) is delivered too; nothing else reaches the stub from now on.
    assert!(acked.is_subset(&delivered_ids));
    let mut per_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in pd.received() {
        let (id, dedup, _) = carried(&r);
        per_id.entry(id).or_default().push(dedup);
    }
    let repeated: Vec<_> = per_id.iter().filter(|(_, d)| d.len() > 1).collect();
    println!(
        "{} distinct alerts delivered, {} delivered twice (in flight at the kill)",
        per_id.len(),
        repeated.len()
    );
    for (id, dedups) in &per_id {
        // One dedup key per alert, whatever the number of attempts:
        // PagerDuty folds a repeat into the same incident.
        assert!(
            dedups
                .iter()
                .all(|d| d == &dedups[0] && d.contains(id.as_str())),
            "{id}: {dedups:?}"
        );
    }
    // A repeat can only be an attempt that was running at the kill: at most
    // the sandbox slots (limits.max_instances, 64 by default).
    assert!(repeated.len() <= 64, "{} repeats", repeated.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_then_recovery_delivers_everything_and_routes_stay_independent() {
    let down = StubPagerDuty::start().await;
    let up = StubPagerDuty::start().await;
    down.outage((500, vec![], "{\"status\":\"error\"}".into()));
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "[[route]]\nname = \"down\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = {:?}\n\
         [[route]]\nname = \"up\"\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = {:?}\n",
        down.url(),
        up.url()
    );
    // The breaker off: this test counts the failing route's retries
    // (tests/bulkhead.rs covers the breaker that would hold them).
    let server = ChildServer::start(
        dir.path(),
        &format!("{QUICK}breaker_failures = 0\n{routes}"),
    )
    .await;
    let client = reqwest::Client::new();
    for i in 0..10 {
        let (s, _) = post(
            &client,
            &server.url("/webhook"),
            &event(&format!("RSW-OUT-{i}"), 0, "LOCKED_OUT"),
        )
        .await
        .unwrap();
        assert_eq!(s, 202);
    }
    // The healthy route delivers everything while the other keeps failing.
    up.wait_for(10, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(30), || {
        (down.received().len() >= 20).then_some(())
    })
    .await
    .expect("the failing route keeps retrying");
    assert_eq!(
        up.received().len(),
        10,
        "a failing route must not duplicate another's deliveries"
    );
    // Every delivery of the failing route waits for its retry, each with
    // an attempt counted.  One being retried right now is in flight, not
    // pending: wait for a moment when none is, instead of racing it.
    let waiting = wait_until(Duration::from_secs(30), || {
        let (_, out, _) =
            server.events(&["list", "--route", "down", "--state", "pending", "--json"]);
        let pending: Vec<Value> = serde_json::from_str(&out).ok()?;
        (pending.len() == 10 && pending.iter().all(|r| r["attempts"].as_u64() >= Some(1)))
            .then_some(())
    })
    .await;
    if waiting.is_none() {
        let (_, out, _) = server.events(&["list", "--route", "down", "--json"]);
        panic!("the failing route's deliveries are not all waiting for a retry:\n{out}");
    }

    down.end_outage();
    let got = wait_until(Duration::from_secs(30), || {
        let ok: BTreeSet<String> = down
            .received()
            .iter()
            .rev()
            .take(40)
            .map(|r| carried(r).0)
            .collect();
        (ok.len() == 10).then_some(ok)
    })
    .await;
    assert!(got.is_some(), "{}", server.log_tail());
    wait_until(Duration::from_secs(20), || {
        let (_, out, _) =
            server.events(&["list", "--route", "down", "--state", "delivered", "--json"]);
        (serde_json::from_str::<Vec<Value>>(&out)
            .map(|v| v.len())
            .unwrap_or(0)
            == 10)
            .then_some(())
    })
    .await
    .expect("all delivered on the recovered route");
    // Each record shows its failed attempts and the final success.
    let rec = server.show("RSW-OUT-0");
    let rec = if rec.is_array() { rec[0].clone() } else { rec };
    let d = rec["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["route"] == "down")
        .unwrap()
        .clone();
    let attempts = d["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{d}");
    assert_eq!(attempts[0]["last_status"], 500, "{d}");
    assert_eq!(attempts.last().unwrap()["last_status"], 202, "{d}");
    assert!(
        attempts.iter().all(|a| a["transform_digest"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:"))),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_and_the_rate_limit_are_honoured() {
    let pd = StubPagerDuty::start().await;
    pd.script(vec![(
        429,
        vec![("retry-after", "2".into())],
        "{\"status\":\"throttled\"}".into(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    // 120 a minute with a burst of 2: after two, one every half second.
    let config = format!(
        "{QUICK}{}",
        pagerduty_route(&pd, "rate_per_minute = 120\nrate_burst = 2")
    );
    let server = ChildServer::start(dir.path(), &config).await;
    let client = reqwest::Client::new();
    let (s, _) = post(
        &client,
        &server.url("/webhook"),
        &event("RSW-429", 0, "LOCKED_OUT"),
    )
    .await
    .unwrap();
    assert_eq!(s, 202);
    let r = pd.wait_for(2, Duration::from_secs(30)).await;
    let gap = r[1].at - r[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 not honoured: {gap:?}"
    );
    assert_eq!(carried(&r[1]).0, "RSW-429");

    // Rate: 8 alerts sent at once reach PagerDuty over >= 2.5 s.
    let start = pd.received().len();
    for i in 0..8 {
        let (s, _) = post(
            &client,
            &server.url("/webhook"),
            &event(&format!("RSW-RATE-{i}"), 0, "LOCKED_OUT"),
        )
        .await
        .unwrap();
        assert_eq!(s, 202);
    }
    let all = pd.wait_for(start + 8, Duration::from_secs(30)).await;
    let times: Vec<Instant> = all[start..].iter().map(|r| r.at).collect();
    let span = *times.last().unwrap() - times[0];
    println!("8 deliveries spread over {span:?} at 120/min burst 2");
    assert!(
        span >= Duration::from_millis(2500),
        "rate limit not applied: {span:?}"
    );
    assert!(
        all[start..]
            .iter()
            .all(|r| r.json()["event_action"] == "trigger")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_400_is_a_dead_letter_and_events_retry_delivers_it_once_fixed() {
    let pd = StubPagerDuty::start().await;
    pd.outage((
        400,
        vec![("content-type", "application/json".into())],
        "{\"status\":\"invalid event\",\"message\":\"Event object is invalid\",\"errors\":[\"Invalid routing key\"]}".into(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let server =
        ChildServer::start(dir.path(), &format!("{QUICK}{}", pagerduty_route(&pd, ""))).await;
    let client = reqwest::Client::new();
    let (s, answer) = post(
        &client,
        &server.url("/webhook"),
        &event("RSW-400", 0, "LOCKED_OUT"),
    )
    .await
    .unwrap();
    assert_eq!(s, 202);
    let receipt = answer["receipt_id"].as_str().unwrap().to_string();
    let failed = wait_until(Duration::from_secs(20), || {
        let (_, out, _) = server.events(&["list", "--state", "failed", "--json"]);
        let v: Vec<Value> = serde_json::from_str(&out).ok()?;
        (!v.is_empty()).then_some(v)
    })
    .await
    .expect("a dead letter");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["receipt_id"], receipt.as_str());
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("400") && reason.contains("Invalid routing key"),
        "{reason}"
    );
    // At once: one attempt, no retries.
    assert_eq!(failed[0]["attempts"], 1);
    assert_eq!(pd.received().len(), 1);
    // The table names the reason too.
    let (_, table, _) = server.events(&["list", "--state", "failed"]);
    assert!(
        table.contains(&receipt) && table.contains("Invalid routing key"),
        "{table}"
    );

    // The cause is fixed; retry.
    pd.end_outage();
    let (code, out, err) = server.events(&["retry", &receipt]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&receipt), "{out}");
    let rec = wait_until(Duration::from_secs(20), || {
        let rec = server.show(&receipt);
        (rec["deliveries"][0]["state"] == "delivered").then_some(rec)
    })
    .await
    .unwrap_or_else(|| panic!("not delivered after retry:\n{}", server.log_tail()));
    let attempts = rec["deliveries"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{rec}");
    assert_eq!(attempts[0]["last_status"], 400);
    assert_eq!(attempts[1]["last_status"], 202);
    assert_eq!(
        rec["event"]["id"], "RSW-400",
        "events show has the event as received"
    );
    assert_eq!(rec["headers"]["content-encoding"], "gzip");
    assert_eq!(pd.received().len(), 2);
    // Nothing failed is left; retrying again finds nothing.
    let (code, _, err) = server.events(&["retry", "--all-failed"]);
    assert_eq!(code, 0);
    assert!(err.contains("no failed deliveries"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_of_one_alert_arrive_in_order_under_concurrency() {
    let pd = StubPagerDuty::start().await;
    // Slow, uneven answers: later updates would overtake earlier ones if
    // the host let them run side by side.
    pd.delay(5, 60);
    let dir = tempfile::tempdir().unwrap();
    let server =
        ChildServer::start(dir.path(), &format!("{QUICK}{}", pagerduty_route(&pd, ""))).await;
    let client = reqwest::Client::new();
    let states = [
        "LOCKED_OUT",
        "DELAYED_LOCKOUT",
        "LOCKED_OUT",
        "MONITOR",
        "ACCESS_RESTORED",
    ];
    let mut tasks = Vec::new();
    for a in 0..12 {
        let (client, url) = (client.clone(), server.url("/webhook"));
        tasks.push(tokio::spawn(async move {
            for (seq, state) in states.iter().enumerate() {
                let (s, _) = post(
                    &client,
                    &url,
                    &event(&format!("RSW-ORD-{a:02}"), seq, state),
                )
                .await
                .unwrap();
                assert_eq!(s, 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = pd
        .wait_for(12 * states.len(), Duration::from_secs(60))
        .await;
    let mut per_id: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &got {
        let (id, _, seq) = carried(r);
        per_id.entry(id).or_default().push(seq);
    }
    assert_eq!(per_id.len(), 12);
    // Updates 0..3 trigger (they carry their number); 4 resolves (no
    // payload): it must come last.
    for (id, seqs) in &per_id {
        assert_eq!(
            seqs,
            &vec![0, 1, 2, 3, u64::MAX],
            "{id} arrived out of order"
        );
    }
    let last = got
        .iter()
        .rev()
        .find(|r| carried(r).0 == "RSW-ORD-00")
        .unwrap();
    assert_eq!(last.json()["event_action"], "resolve");
    // Different alerts did go concurrently.
    println!("stub saw up to {} requests at once", pd.max_concurrency());
    assert!(pd.max_concurrency() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_body_twice_is_delivered_once_and_purge_keeps_failures() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server =
        ChildServer::start(dir.path(), &format!("{QUICK}{}", pagerduty_route(&pd, ""))).await;
    let client = reqwest::Client::new();
    let body = event("RSW-DUP", 0, "LOCKED_OUT");
    let (s1, a1) = post(&client, &server.url("/webhook"), &body).await.unwrap();
    let (s2, a2) = post(&client, &server.url("/webhook"), &body).await.unwrap();
    assert_eq!(s1, 202);
    assert_eq!(s2, 200, "{a2}");
    assert_eq!(a2["status"], "duplicate");
    assert_eq!(a2["receipt_id"], a1["receipt_id"]);
    // A changed body (the alert's next state) is not a duplicate.
    let (s3, _) = post(
        &client,
        &server.url("/webhook"),
        &event("RSW-DUP", 1, "ACCESS_RESTORED"),
    )
    .await
    .unwrap();
    assert_eq!(s3, 202);
    // Both stored deliveries settle; the duplicate was never stored, so
    // once both are delivered nothing more can reach the stub.
    wait_until(Duration::from_secs(20), || {
        let (_, out, _) = server.events(&["list", "--state", "delivered", "--json"]);
        (serde_json::from_str::<Vec<Value>>(&out)
            .map(|v| v.len())
            .unwrap_or(0)
            == 2)
            .then_some(())
    })
    .await
    .expect("both delivered");
    let (_, out, _) = server.events(&["list", "--json"]);
    let stored: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(stored.len(), 2, "the duplicate must not be stored: {out}");
    assert_eq!(pd.received().len(), 2);

    // Purge: delivered events before a future time go; bad input is refused.
    let (code, _, err) = server.events(&["purge", "--delivered-before", "yesterday-ish"]);
    assert_ne!(code, 0);
    assert!(err.contains("--delivered-before"), "{err}");
    let (code, out, err) = server.events(&["purge", "--delivered-before", "2999-01-01"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("purged 2 webhooks"), "{out}");
    let (code, _, _) = server.events(&["show", a1["receipt_id"].as_str().unwrap()]);
    assert_eq!(code, 1);
}
