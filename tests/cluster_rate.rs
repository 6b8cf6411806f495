//! The cluster-wide rate limit and inbound dedupe, with 3 `ztbridge
//! serve` processes on one PostgreSQL.  A test binary of its own: the
//! sink's windows are measured with no other test loading the machine.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, carried, event, node_config, post};
use common::pg::PgServer;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_and_the_inbound_dedupe_hold_for_the_cluster() {
    let pg = PgServer::new_async().await;
    let pd = StubPagerDuty::start().await;
    // The 60/min with a burst of 6 (at most 66 in any 60 s), five
    // times faster: 300/min, burst 6, at most 66 in any 12 s (about a
    // minute for 300 events).  The tokens are taken at claim; the sink's
    // windows also see the claim-to-request delay of each attempt, and
    // GCRA leaves one token of slack (65 fit a half-open window).
    let route = pagerduty_route(&pd, "rate_per_minute = 300\nrate_burst = 6");
    let cluster = Cluster::start(3, &node_config(&pg, &route)).await;
    let urls = cluster.urls();
    let client = reqwest::Client::new();

    // The same body to two nodes at once: one delivery.
    let same = event("RSW-SAME-1", 0);
    let (a, b) = tokio::join!(
        post(&client, &urls[0], &same),
        post(&client, &urls[1], &same)
    );
    let mut codes = vec![a.unwrap().0, b.unwrap().0];
    codes.sort();
    assert_eq!(codes, vec![200, 202], "one stored, one duplicate");

    // Warm every node's sandbox and HTTP client first, so that a slow
    // first attempt does not shift a burst into a later window (they count
    // in the windows like any other delivery).
    for (i, url) in urls.iter().cycle().take(9).enumerate() {
        let got = post(&client, url, &event(&format!("RSW-WARM-{i}"), 0)).await;
        assert!(matches!(got, Some((202, _))), "{got:?}");
    }
    pd.wait_for(10, Duration::from_secs(60)).await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (client, url) = (client.clone(), urls[i % urls.len()].clone());
        tasks.push(tokio::spawn(async move {
            let got = post(&client, &url, &event(&format!("RSW-RATE-{i:03}"), 0)).await;
            assert!(matches!(got, Some((202, _))), "{got:?}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let received = pd.wait_for(310, Duration::from_secs(180)).await;
    let times: Vec<Instant> = received.iter().map(|r| r.at).collect();
    let window = Duration::from_secs(12);
    let most = times
        .iter()
        .map(|t| {
            times
                .iter()
                .filter(|u| **u >= *t && **u < *t + window)
                .count()
        })
        .max()
        .unwrap_or(0);
    // The limiter decides when a request may leave (GCRA: a burst of 6,
    // then 5/s); the sink sees it after the transform, the HTTP hop and
    // scheduling, so arrivals may bunch by that delay.  Bound: what the
    // limiter allows in the window widened by 1 s of that delay.
    let bound = 6 + 5 * (12 + 1);
    println!(
        "at most {most} deliveries in any 12 s window (limiter: 66; with 1 s arrival jitter: {bound})"
    );
    assert!(most <= bound, "{most} deliveries in one 12 s window");
    // Let anything late arrive: still one delivery of the same body.
    assert_eq!(
        pd.received()
            .iter()
            .filter(|r| carried(r).0 == "RSW-SAME-1")
            .count(),
        1
    );
}
