//! The store conformance suite: what every backend must do, written once
//! against the [`Store`] interface.  Each backend's tests call every
//! function here with a way to open (and reopen) a store of its kind.
//! Public with the `conformance` feature, so that the root crate's tests
//! run it against PostgreSQL (tests/store_postgres.rs).
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::time::now_millis;

/// Opens stores of one backend on one database: a second `open` after the
/// first is dropped sees the same data (a restart).
pub trait Backend {
    fn open(&self) -> Arc<dyn Store>;
}

pub fn event(receipt: &str, event_id: &str, body: &str, routes: &[&str]) -> NewEvent {
    NewEvent {
        receipt_id: receipt.into(),
        received_ms: now_millis(),
        event_id: Some(event_id.into()),
        order_key: event_id.into(),
        severity: "critical".into(),
        state: Some("LOCKED_OUT".into()),
        body_hash: format!("hash-{body}"),
        body: body.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        routes: routes.iter().map(|r| r.to_string()).collect(),
        deadline_ms: i64::MAX,
    }
}

pub fn attempt(n: u32) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        at_ms: now_millis(),
        outcome: serde_json::json!({"status": "done", "message": "ok"}),
        last_status: Some(202),
        error: None,
        steps: 1,
        fuel_used: 10,
        duration_ms: 1.0,
        transform_digest: "sha256:x".into(),
    }
}

fn routes_of(batch: &ClaimBatch) -> Vec<(String, String)> {
    let mut got: Vec<_> = batch
        .claims
        .iter()
        .map(|c| (c.receipt_id.clone(), c.key.route.clone()))
        .collect();
    got.sort();
    got
}

/// Per-alert order, duplicates, claims, and recovery after a restart.
pub async fn order_duplicates_claims_and_recovery(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    assert_eq!(
        store
            .admit(event("r1", "E1", "{\"a\":1}", &["pd", "jb"]), 60_000)
            .await
            .unwrap(),
        Admission::Stored
    );
    store
        .admit(event("r2", "E1", "{\"a\":2}", &["pd"]), 60_000)
        .await
        .unwrap();
    // The same body again is a duplicate of r1.
    match store
        .admit(event("r3", "E9", "{\"a\":1}", &["pd"]), 60_000)
        .await
        .unwrap()
    {
        Admission::Duplicate { receipt_id, .. } => assert_eq!(receipt_id, "r1"),
        other => panic!("{other:?}"),
    }
    let now = now_millis();
    let claims = store.claim(now, 10, &[]).await.unwrap();
    // r2 waits behind r1 on route pd; r1 goes on both routes.
    assert_eq!(
        routes_of(&claims),
        vec![("r1".into(), "jb".into()), ("r1".into(), "pd".into())]
    );
    // Nothing more until r1 is done on pd.
    assert!(store.claim(now, 10, &[]).await.unwrap().claims.is_empty());
    let pd = claims.claims.iter().find(|c| c.key.route == "pd").unwrap();
    store
        .finish(pd.key.clone(), attempt(1), Next::Delivered)
        .await
        .unwrap();
    let next = store.claim(now, 10, &[]).await.unwrap();
    assert_eq!(next.claims.len(), 1);
    assert_eq!(next.claims[0].receipt_id, "r2");
    // A restart makes the in-flight ones pending again, counted.
    drop(store);
    let store = b.open();
    assert_eq!(store.start().await.unwrap(), 2);
    assert_eq!(store.backlog().await.unwrap().open, 2);
    let rec = store.record("r1", true).await.unwrap().unwrap();
    assert_eq!(rec.body.as_ref().unwrap()["a"], 1);
    let states: Vec<_> = rec
        .deliveries
        .iter()
        .map(|d| (d.route.as_str(), d.state, d.attempts_made))
        .collect();
    assert_eq!(
        states,
        vec![
            ("jb", DeliveryState::Pending, 1),
            ("pd", DeliveryState::Delivered, 1)
        ]
    );
    assert_eq!(
        store.receipts_for_event_id("E1").await.unwrap(),
        ["r1", "r2"]
    );
}

/// A, B, A again is a change back, not a repeat.
pub async fn a_change_back_is_not_a_duplicate(b: &impl Backend) {
    let store = b.open();
    let a = |r: &str| event(r, "E1", "{\"state\":\"LOCKED_OUT\"}", &["pd"]);
    assert_eq!(
        store.admit(a("r1"), 60_000).await.unwrap(),
        Admission::Stored
    );
    // A repeat of the latest is a duplicate...
    assert!(matches!(
        store.admit(a("r2"), 60_000).await.unwrap(),
        Admission::Duplicate { .. }
    ));
    // ...but after another state, the same body again is news.
    store
        .admit(
            event("r3", "E1", "{\"state\":\"ACCESS_RESTORED\"}", &["pd"]),
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(
        store.admit(a("r4"), 60_000).await.unwrap(),
        Admission::Stored
    );
    // Outside the window nothing is a duplicate.
    assert_eq!(store.admit(a("r5"), 0).await.unwrap(), Admission::Stored);
}

/// A re-queued predecessor waits while its successor is in flight; a
/// release gives a claim back without counting an attempt.
pub async fn a_retried_predecessor_never_runs_beside_an_in_flight_successor(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    store
        .admit(event("r1", "E1", "1", &["pd"]), 0)
        .await
        .unwrap();
    store
        .admit(event("r2", "E1", "2", &["pd"]), 0)
        .await
        .unwrap();
    let now = now_millis();
    let c1 = store.claim(now, 10, &[]).await.unwrap().claims;
    assert_eq!(c1.len(), 1);
    store
        .finish(
            c1[0].key.clone(),
            attempt(1),
            Next::Failed { reason: "x".into() },
        )
        .await
        .unwrap();
    let c2 = store.claim(now, 10, &[]).await.unwrap().claims;
    assert_eq!(c2[0].receipt_id, "r2");
    // r1 is re-queued while r2 is in flight: it must wait.
    let retried = store
        .retry_failed(
            RetrySelection {
                receipt_id: Some("r1".into()),
                route: None,
            },
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(retried, vec![("r1".to_string(), "pd".to_string())]);
    let c3 = store
        .claim(now_millis() + 10, 10, &[])
        .await
        .unwrap()
        .claims;
    assert!(c3.is_empty(), "{c3:?}");
    // Released (as on a stop), r2 gives way: r1, the older, goes first.
    store.release(vec![c2[0].key.clone()]).await.unwrap();
    let c4 = store
        .claim(now_millis() + 10, 10, &[])
        .await
        .unwrap()
        .claims;
    assert_eq!(c4.len(), 1);
    assert_eq!(c4[0].receipt_id, "r1");
    // r1: its failed attempt, and this one is the second.
    assert_eq!(c4[0].attempt, 2);
    let rec = store.record("r2", false).await.unwrap().unwrap();
    assert_eq!(
        rec.deliveries[0].attempts_made, 0,
        "a release counts nothing"
    );
}

/// One rate-limited route never starves the others; the wait is told.
pub async fn a_rate_limited_route_does_not_starve_others(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    store.set_rate_limits(vec![(
        "slow".into(),
        RateLimit {
            key: "slow".into(),
            per_minute: 1,
            burst: 1,
        },
    )]);
    for i in 0..40 {
        store
            .admit(
                event(
                    &format!("a{i}"),
                    &format!("A{i}"),
                    &format!("a{i}"),
                    &["slow"],
                ),
                0,
            )
            .await
            .unwrap();
    }
    store
        .admit(event("b", "B", "b", &["fast"]), 0)
        .await
        .unwrap();
    let now = now_millis();
    let first = store.claim(now, 2, &[]).await.unwrap();
    // One token for slow, then fast; slow's next token is a minute away.
    assert_eq!(
        routes_of(&first),
        vec![("a0".into(), "slow".into()), ("b".into(), "fast".into())]
    );
    let second = store.claim(now, 2, &[]).await.unwrap();
    assert!(second.claims.is_empty());
    let wait = second.rate_wait.expect("the wait is told");
    assert!(
        wait > Duration::from_secs(30) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}

/// A claim within a scope takes no more of a route than its room, passes
/// over a route at its cap for the others' work, and a held delivery goes
/// back to pending with its reason and no attempt counted.
pub async fn a_route_at_its_cap_is_passed_over_and_a_hold_counts_no_attempt(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    for i in 0..10 {
        let r = format!("a{i}");
        store
            .admit(event(&r, &format!("A{i}"), &r, &["busy"]), 0)
            .await
            .unwrap();
    }
    for i in 0..3 {
        let r = format!("b{i}");
        store
            .admit(event(&r, &format!("B{i}"), &r, &["calm"]), 0)
            .await
            .unwrap();
    }
    let now = now_millis();
    let scope = ClaimScope {
        skip: vec![],
        room: [("busy".to_string(), 2)].into_iter().collect(),
    };
    let first = store.claim_within(now, 8, &scope).await.unwrap();
    let count = |route: &str| first.claims.iter().filter(|c| c.key.route == route).count();
    assert_eq!(count("busy"), 2, "{:?}", routes_of(&first));
    assert_eq!(count("calm"), 3, "{:?}", routes_of(&first));
    // At its cap (room 0): nothing of it, and nothing else is due.
    let full = ClaimScope {
        skip: vec![],
        room: [("busy".to_string(), 0)].into_iter().collect(),
    };
    assert!(
        store
            .claim_within(now, 8, &full)
            .await
            .unwrap()
            .claims
            .is_empty()
    );
    // A hold: pending again at once, the reason kept, no attempt counted.
    let held = first
        .claims
        .iter()
        .find(|c| c.key.route == "busy")
        .unwrap()
        .clone();
    store
        .hold(held.key.clone(), "destination breaker open (x)".into())
        .await
        .unwrap();
    let rec = store
        .record(&held.receipt_id, false)
        .await
        .unwrap()
        .unwrap();
    let d = &rec.deliveries[0];
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.attempts_made, 0);
    assert!(d.attempts.is_empty());
    assert_eq!(d.reason.as_deref(), Some("destination breaker open (x)"));
    let again = store
        .claim_within(now_millis(), 8, &ClaimScope::default())
        .await
        .unwrap();
    let back = again
        .claims
        .iter()
        .find(|c| c.key == held.key)
        .expect("a held delivery is claimable again");
    assert_eq!(back.attempt, 1);
}

/// Dead letters are listed with their reason, purge spares them, and
/// `retry_failed` re-opens them.
pub async fn failed_retry_and_purge(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    store
        .admit(event("r1", "E1", "x", &["pd"]), 0)
        .await
        .unwrap();
    store
        .admit(event("r2", "E2", "y", &["pd"]), 0)
        .await
        .unwrap();
    let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    assert_eq!(claims.len(), 2);
    for c in claims {
        let next = if c.receipt_id == "r1" {
            Next::Failed {
                reason: "400 bad".into(),
            }
        } else {
            Next::Delivered
        };
        store.finish(c.key, attempt(1), next).await.unwrap();
    }
    let failed = store
        .list(ListFilter {
            state: Some(DeliveryState::Failed),
            route: None,
            limit: 10,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason.as_deref(), Some("400 bad"));
    let all = store
        .list(ListFilter {
            limit: 10,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].receipt_id, "r2", "newest first");
    // Purge spares the failed one.
    let purged = store
        .purge_delivered_before(now_millis() + 1000)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(store.record("r2", false).await.unwrap().is_none());
    let retried = store
        .retry_failed(
            RetrySelection {
                receipt_id: Some("r1".into()),
                route: None,
            },
            1000,
        )
        .await
        .unwrap();
    assert_eq!(retried, vec![("r1".to_string(), "pd".to_string())]);
    assert_eq!(store.backlog().await.unwrap().open, 1);
}

/// `retry_failed` re-opens dead letters oldest first (the order they were
/// received, then route name), whatever their receipt IDs.
pub async fn retry_is_oldest_first(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    for (receipt, id) in [("rb", "E1"), ("ra", "E2"), ("rc", "E3")] {
        store
            .admit(event(receipt, id, receipt, &["pd", "alpha"]), 0)
            .await
            .unwrap();
    }
    let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    assert_eq!(claims.len(), 6);
    for c in claims {
        let next = Next::Failed {
            reason: "400 bad".into(),
        };
        store.finish(c.key, attempt(1), next).await.unwrap();
    }
    let retried = store
        .retry_failed(
            RetrySelection {
                receipt_id: None,
                route: None,
            },
            60_000,
        )
        .await
        .unwrap();
    let want: Vec<(String, String)> = [
        ("rb", "alpha"),
        ("rb", "pd"),
        ("ra", "alpha"),
        ("ra", "pd"),
        ("rc", "alpha"),
        ("rc", "pd"),
    ]
    .iter()
    .map(|(r, route)| (r.to_string(), route.to_string()))
    .collect();
    assert_eq!(retried, want);
}

/// The console's views: filtered lists and counts with paging, counts
/// by route and state, recent attempts.
pub async fn console_views(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    let mut e1 = event("r1", "E1", "{\"user\":\"CORP\\\\alice\"}", &["pd", "jb"]);
    e1.severity = "major".into();
    store.admit(e1, 0).await.unwrap();
    store
        .admit(event("r2", "E2", "{\"user\":\"bob\"}", &["pd"]), 0)
        .await
        .unwrap();
    let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    assert_eq!(claims.len(), 3);
    for c in claims {
        let (next, a) = if c.receipt_id == "r2" {
            let mut a = attempt(1);
            a.error = Some("400".into());
            (
                Next::Failed {
                    reason: "400".into(),
                },
                a,
            )
        } else {
            (Next::Delivered, attempt(1))
        };
        store.finish(c.key, a, next).await.unwrap();
    }
    let f = |state: Option<DeliveryState>, text: Option<&str>, severity: Option<&str>| ListFilter {
        state,
        text: text.map(str::to_string),
        severity: severity.map(str::to_string),
        limit: 10,
        ..ListFilter::default()
    };
    assert_eq!(store.count(f(None, None, None)).await.unwrap(), 3);
    assert_eq!(store.count(f(None, Some("alice"), None)).await.unwrap(), 2);
    assert_eq!(store.count(f(None, Some("E2"), None)).await.unwrap(), 1);
    assert_eq!(store.count(f(None, Some("r1"), None)).await.unwrap(), 2);
    assert_eq!(store.count(f(None, None, Some("major"))).await.unwrap(), 2);
    assert_eq!(
        store
            .count(f(Some(DeliveryState::Failed), None, None))
            .await
            .unwrap(),
        1
    );
    let future = ListFilter {
        since_ms: Some(now_millis() + 60_000),
        ..f(None, None, None)
    };
    assert_eq!(store.count(future).await.unwrap(), 0);
    let page2 = store
        .list(ListFilter {
            limit: 2,
            offset: 2,
            ..f(None, None, None)
        })
        .await
        .unwrap();
    assert_eq!(page2.len(), 1, "the third row, alone on page 2");
    assert_eq!(page2[0].receipt_id, "r1");
    let counts = store.route_counts().await.unwrap();
    let get = |route: &str, state: DeliveryState| {
        counts
            .iter()
            .find(|c| c.route == route && c.state == state)
            .map(|c| c.count)
    };
    assert_eq!(get("pd", DeliveryState::Delivered), Some(1));
    assert_eq!(get("pd", DeliveryState::Failed), Some(1));
    assert_eq!(get("jb", DeliveryState::Delivered), Some(1));
    let points = store
        .attempts_since(now_millis() - 60_000, 10)
        .await
        .unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(points.iter().filter(|p| !p.ok).count(), 1);
    assert_eq!(
        store
            .attempts_since(now_millis() - 60_000, 2)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Operators' commands on one event: requeue (retry now, run again),
/// skip, and a pause that outlives a restart.
pub async fn requeue_skip_and_pause(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    store
        .admit(event("r1", "E1", "x", &["pd", "jb"]), 0)
        .await
        .unwrap();
    let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    for c in claims {
        store
            .finish(c.key, attempt(1), Next::Delivered)
            .await
            .unwrap();
    }
    assert_eq!(store.backlog().await.unwrap().open, 0);
    // Run again: a delivered delivery is due again.
    let again = store.requeue("r1", Some("pd"), 60_000).await.unwrap();
    assert_eq!(again, vec!["pd".to_string()]);
    assert!(
        store
            .requeue("nope", None, 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    let claims = store.claim(now_millis(), 10, &[]).await.unwrap().claims;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].attempt, 2);
    store
        .finish(
            claims[0].key.clone(),
            attempt(2),
            Next::Failed {
                reason: "gone".into(),
            },
        )
        .await
        .unwrap();
    // Skip closes a failed delivery; a delivered one is not skipped.
    assert!(store.skip("r1", "pd", "skipped").await.unwrap());
    assert!(!store.skip("r1", "jb", "skipped").await.unwrap());
    let rec = store.record("r1", false).await.unwrap().unwrap();
    let pd = rec.deliveries.iter().find(|d| d.route == "pd").unwrap();
    assert_eq!(pd.state, DeliveryState::Delivered);
    assert_eq!(pd.reason.as_deref(), Some("skipped"));
    // Pauses are stored.
    assert!(store.paused_routes().await.unwrap().is_empty());
    store.set_paused("pd", true).await.unwrap();
    store.set_paused("pd", true).await.unwrap();
    store.set_paused("jb", true).await.unwrap();
    store.set_paused("jb", false).await.unwrap();
    drop(store);
    let store = b.open();
    assert_eq!(store.paused_routes().await.unwrap(), vec!["pd".to_string()]);
}

/// A retry waits until its time; `next_retry_ms` tells when.
pub async fn a_retry_waits_for_its_time(b: &impl Backend) {
    let store = b.open();
    store.start().await.unwrap();
    store
        .admit(event("r1", "E1", "x", &["pd"]), 0)
        .await
        .unwrap();
    let now = now_millis();
    let c = store.claim(now, 10, &[]).await.unwrap().claims;
    let at = now + 60_000;
    store
        .finish(c[0].key.clone(), attempt(1), Next::Retry { at_ms: at })
        .await
        .unwrap();
    assert!(store.claim(now, 10, &[]).await.unwrap().claims.is_empty());
    assert_eq!(store.next_retry_ms(now).await.unwrap(), Some(at));
    let later = store.claim(at, 10, &[]).await.unwrap().claims;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].attempt, 2);
    assert_eq!(
        store.open_by_route().await.unwrap(),
        vec![("pd".to_string(), 1)]
    );
    store.ping().await.unwrap();
}

/// Transform state: writes are atomic per batch and survive a reopen.
pub async fn transform_state_survives_a_restart(b: &impl Backend) {
    {
        let store = b.open();
        let s = store.transform_state();
        let mut w = std::collections::BTreeMap::new();
        w.insert("ticket:RSW-1".to_string(), Some("42".to_string()));
        w.insert("gone".to_string(), Some("x".to_string()));
        s.apply("jitbit", &w).unwrap();
        let mut d = std::collections::BTreeMap::new();
        d.insert("gone".to_string(), None);
        s.apply("jitbit", &d).unwrap();
    }
    let store = b.open();
    let s = store.transform_state();
    assert_eq!(
        s.get("jitbit", "ticket:RSW-1").unwrap().as_deref(),
        Some("42")
    );
    assert_eq!(s.get("jitbit", "gone").unwrap(), None);
    assert_eq!(s.get("pagerduty", "ticket:RSW-1").unwrap(), None);
    assert_eq!(s.dump("jitbit").unwrap().len(), 1);
}

/// Runs every case above, each on a fresh database from `fresh`.
#[macro_export]
#[doc(hidden)]
macro_rules! store_conformance {
    ($fresh:expr) => {
        $crate::store_conformance!(@cases $fresh;
            order_duplicates_claims_and_recovery,
            a_change_back_is_not_a_duplicate,
            a_retried_predecessor_never_runs_beside_an_in_flight_successor,
            a_rate_limited_route_does_not_starve_others,
            a_route_at_its_cap_is_passed_over_and_a_hold_counts_no_attempt,
            failed_retry_and_purge,
            retry_is_oldest_first,
            console_views,
            requeue_skip_and_pause,
            a_retry_waits_for_its_time,
            transform_state_survives_a_restart
        );
    };
    (@cases $fresh:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let backend = $fresh;
                $crate::store::conformance::$case(&backend).await;
            }
        )*
    };
}
