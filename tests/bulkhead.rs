//! Isolation: one bad destination never delays another.
//!
//! * Bulkheads: a route whose destination hangs holds only its share of
//!   the sandbox slots (`max_in_flight`); another route delivers all its
//!   events meanwhile.
//! * Circuit breaker: a destination that is down gets about one request
//!   per probe wait once its breaker opened, the held deliveries are not
//!   counted as attempts, and when it answers again everything is
//!   delivered.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn event(id: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["id"] = json!(id);
    v.to_string()
}

fn route(name: &str, stub: &StubPagerDuty, extra: &str) -> String {
    format!(
        "[[route]]\nname = {name:?}\ntransform = \"builtin:pagerduty\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n{extra}\n[route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = {:?}\n",
        stub.url()
    )
}

/// A hanging destination (it holds every request) and a healthy one, each
/// behind its route, in a server with 8 sandbox slots whose requests never
/// time out during a test.  `delivery` adds lines to `[delivery]`,
/// `hanging_route` to the hanging route.
async fn hanging_and_healthy(
    delivery: &str,
    hanging_route: &str,
) -> (StubPagerDuty, StubPagerDuty, Server) {
    let hanging = StubPagerDuty::start().await;
    let healthy = StubPagerDuty::start().await;
    hanging.hold();
    let config = format!(
        "[limits]\nmax_instances = 8\nrequest_timeout_ms = 600000\n[delivery]\ndedupe_window_secs = 0\n{delivery}{}{}",
        route("hanging", &hanging, hanging_route),
        route("healthy", &healthy, "")
    );
    let server = Server::start(&config).await;
    (hanging, healthy, server)
}

/// Posts `n` events with the IDs `{prefix}-0`, `{prefix}-1`...; each must
/// be accepted.  Their receipt IDs, in order.
async fn post_events(server: &Server, prefix: &str, n: usize) -> Vec<String> {
    let mut receipts = Vec::new();
    for i in 0..n {
        let (status, answer) = server.post_plain(&event(&format!("{prefix}-{i}"))).await;
        assert_eq!(status, 202, "{answer}");
        receipts.push(answer["receipt_id"].as_str().unwrap().to_string());
    }
    receipts
}

/// Asserts that each event of `receipts` settles (waiting at most
/// `timeout` for each) with both its deliveries delivered.
async fn assert_all_delivered(server: &Server, receipts: &[String], timeout: Duration) {
    for r in receipts {
        let ev = server.settled(r, timeout).await;
        let states: Vec<&str> = ev["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["state"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(states, ["delivered", "delivered"], "{ev}");
    }
}

/// Polls an async condition every 50 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_route_holds_only_its_share_while_another_delivers_everything() {
    const N: usize = 40;
    // 8 slots, 2 routes: 4 each by default.
    let (hanging, healthy, server) = hanging_and_healthy("", "").await;
    let receipts = post_events(&server, "RSW-BULK", N).await;
    // The healthy route delivers every event while the hanging one holds
    // exactly its share of connections.
    let isolated = wait_until(Duration::from_secs(60), || {
        (healthy.received().len() >= N && hanging.active() == 4).then_some(())
    })
    .await;
    assert!(
        isolated.is_some(),
        "healthy route delivered {} of {N}; hanging route holds {} connections (cap 4)",
        healthy.received().len(),
        hanging.active()
    );
    assert_eq!(healthy.received().len(), N, "each event once");
    assert_eq!(hanging.received().len(), 4, "no more than its cap was sent");
    assert_eq!(hanging.max_concurrency(), 4);
    assert_eq!(
        server
            .metric("ztbridge_route_in_flight", &[("route", "hanging")])
            .await,
        Some(4.0)
    );
    // Released, it delivers everything, never more than its cap at once.
    hanging.release_held();
    hanging.wait_for(N, Duration::from_secs(60)).await;
    assert_all_delivered(&server, &receipts, Duration::from_secs(30)).await;
    assert!(
        hanging.max_concurrency() <= 4,
        "{}",
        hanging.max_concurrency()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_max_in_flight_overrides_the_share() {
    let (hanging, healthy, server) =
        hanging_and_healthy("route_max_in_flight = 3\n", "max_in_flight = 2").await;
    post_events(&server, "RSW-CAP", 10).await;
    let held = wait_until(Duration::from_secs(60), || {
        (healthy.received().len() >= 10 && hanging.active() == 2).then_some(())
    })
    .await;
    assert!(
        held.is_some(),
        "healthy {} of 10, hanging holds {}",
        healthy.received().len(),
        hanging.active()
    );
    assert_eq!(hanging.received().len(), 2);
    assert!(
        healthy.max_concurrency() <= 3,
        "{}",
        healthy.max_concurrency()
    );
    hanging.release_held();
    hanging.wait_for(10, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_down_destination_gets_a_probe_at_the_backoff_rate_then_everything_is_delivered() {
    const N: usize = 30;
    const K: usize = 5;
    const SLOTS: usize = 4;
    let sink = StubPagerDuty::start().await;
    sink.outage((503, vec![], "{\"status\":\"unavailable\"}".into()));
    let destination = format!("http://{}", sink.addr);
    // Two routes to the one destination share its breaker.  Retries and
    // probes start at 1 s; probes wait at most 2 s.
    let config = format!(
        "[limits]\nmax_instances = {SLOTS}\n[delivery]\ndedupe_window_secs = 0\ninitial_backoff_ms = 1000\nmax_backoff_ms = 2000\nbreaker_failures = {K}\nbreaker_max_probe_ms = 2000\n{}{}",
        route("one", &sink, ""),
        route("two", &sink, "")
    );
    let server = Server::start(&config).await;
    let started = Instant::now();
    let receipts = post_events(&server, "RSW-BRK", N).await;
    // The breaker opens, and stays down through several failed probes
    // (each failed probe opens it again).
    let opened = eventually(Duration::from_secs(60), || async {
        server
            .metric(
                "ztbridge_breaker_transitions_total",
                &[("destination", &destination), ("to", "open")],
            )
            .await
            .unwrap_or(0.0)
            >= 4.0
    })
    .await;
    assert!(opened, "the breaker did not open and probe");
    assert_eq!(
        server
            .metric("ztbridge_breaker_state", &[("destination", &destination)])
            .await
            .map(|v| v >= 1.0),
        Some(true)
    );
    let down_for = started.elapsed().as_secs_f64();
    let requests = sink.received().len();
    // Without the breaker, 60 deliveries retried every 1-2 s would have
    // made well over a hundred requests by now.  With it: the K failures
    // that opened it, what was already in flight then (at most the
    // slots), and about one probe a second.
    let bound = K + SLOTS + (down_for * 2.0).ceil() as usize + 3;
    assert!(
        requests <= bound,
        "{requests} requests to a down destination in {down_for:.1} s (bound {bound})"
    );
    // Held deliveries say why, and were not counted as attempts.
    let mut held = 0;
    for r in &receipts {
        let ev = server.event(r).await;
        for d in ev["deliveries"].as_array().unwrap() {
            if d["reason"]
                .as_str()
                .is_some_and(|s| s.contains("destination breaker open"))
            {
                held += 1;
            }
        }
    }
    assert!(held > 0, "no delivery shows the breaker as its reason");
    assert!(
        server
            .metric("ztbridge_deliveries_held_total", &[("route", "one")])
            .await
            .unwrap_or(0.0)
            + server
                .metric("ztbridge_deliveries_held_total", &[("route", "two")])
                .await
                .unwrap_or(0.0)
            >= 1.0
    );

    // It comes back: everything is delivered, the breaker closes.
    sink.end_outage();
    let back = Instant::now();
    assert_all_delivered(&server, &receipts, Duration::from_secs(60)).await;
    let recovered_in = back.elapsed();
    assert_eq!(
        server
            .metric("ztbridge_breaker_state", &[("destination", &destination)])
            .await,
        Some(0.0)
    );
    // Honest accounting: every attempt counted is a request the sink got.
    let mut attempts = 0u64;
    for r in &receipts {
        let ev = server.event(r).await;
        for d in ev["deliveries"].as_array().unwrap() {
            attempts += d["attempts_made"].as_u64().unwrap();
        }
    }
    assert_eq!(
        attempts as usize,
        sink.received().len(),
        "attempts counted vs requests received"
    );
    eprintln!(
        "breaker: {requests} requests in {down_for:.1} s down (bound {bound}); all {} deliveries done {:.1} s after the sink came back",
        2 * N,
        recovered_in.as_secs_f64()
    );
}
