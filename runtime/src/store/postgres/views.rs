//! Reads for the API, the CLI, the scheduler's timers and the cluster
//! gauges; and `store copy`'s import of one event as it is.

use std::time::Duration;

use deadpool_postgres::Object;

use super::pg_error;
use crate::store::{
    AttemptPoint, AttemptRecord, Backlog, ClusterView, DeliveryRecord, DeliveryState, EventRecord,
    ListFilter, ListRow, RouteCount, StoreError,
};
use crate::text::display_id;

fn state_of(s: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(s).ok_or_else(|| StoreError::Backend {
        backend: "postgres",
        context: "reading a delivery".into(),
        source: format!("unknown delivery state {s:?}").into(),
    })
}

pub(super) async fn backlog(c: &Object) -> Result<Backlog, StoreError> {
    let row = c
        .query_one(
            "SELECT count(*), min(e.received_ms) FROM deliveries d JOIN events e ON e.seq = d.event_seq
              WHERE d.state IN ('pending', 'in_flight')",
            &[],
        )
        .await
        .map_err(pg_error("count open deliveries"))?;
    let open: i64 = row.try_get(0)?;
    Ok(Backlog {
        open: open.max(0) as u64,
        oldest_open_ms: row.try_get(1)?,
    })
}

pub(super) async fn next_retry_ms(c: &Object, now_ms: i64) -> Result<Option<i64>, StoreError> {
    Ok(c.query_one(
        "SELECT min(next_at_ms) FROM deliveries WHERE state = 'pending' AND next_at_ms > $1",
        &[&now_ms],
    )
    .await
    .map_err(pg_error("next retry"))?
    .try_get(0)?)
}

pub(super) async fn open_by_route(c: &Object) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = c
        .query(
            "SELECT route, count(*) FROM deliveries WHERE state IN ('pending', 'in_flight')
              GROUP BY route ORDER BY route",
            &[],
        )
        .await
        .map_err(pg_error("open deliveries by route"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((r.try_get(0)?, r.try_get::<_, i64>(1)?.max(0) as u64));
    }
    Ok(out)
}

pub(super) async fn receipts_for_event_id(
    c: &Object,
    event_id: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT receipt_id FROM events WHERE event_id = $1 ORDER BY seq",
            &[&event_id],
        )
        .await
        .map_err(pg_error("receipts of an event ID"))?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(StoreError::from))
        .collect()
}

/// The WHERE clause of `list` and `count` (parameters $1 to $6).
const LIST_WHERE: &str = "($1::text IS NULL OR d.state = $1) AND ($2::text IS NULL OR d.route = $2)
    AND ($3::text IS NULL OR e.severity = $3)
    AND ($4::bigint IS NULL OR e.received_ms >= $4) AND ($5::bigint IS NULL OR e.received_ms < $5)
    AND ($6::text IS NULL OR strpos(e.receipt_id, $6) > 0
         OR strpos(COALESCE(e.event_id, ''), $6) > 0 OR strpos(e.body, $6) > 0)";

pub(super) async fn list(c: &Object, f: &ListFilter) -> Result<Vec<ListRow>, StoreError> {
    let state = f.state.map(|s| s.as_str());
    let limit = f.limit.min(i64::MAX as usize) as i64;
    let offset = f.offset.min(i64::MAX as usize) as i64;
    let rows = c
        .query(
            &format!(
                "SELECT e.receipt_id, e.received_ms, e.event_id, e.severity, e.state, d.route, d.state,
                        d.attempts, d.last_status, d.reason, d.next_at_ms
                   FROM deliveries d JOIN events e ON e.seq = d.event_seq
                  WHERE {LIST_WHERE}
                  ORDER BY d.event_seq DESC, d.route LIMIT $7 OFFSET $8"
            ),
            &[
                &state, &f.route, &f.severity, &f.since_ms, &f.until_ms, &f.text, &limit, &offset,
            ],
        )
        .await
        .map_err(pg_error("list deliveries"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let delivery = state_of(r.try_get(6)?)?;
        let attempts: i32 = r.try_get(7)?;
        let status: Option<i32> = r.try_get(8)?;
        out.push(ListRow {
            receipt_id: r.try_get(0)?,
            received_ms: r.try_get(1)?,
            event_id: r.try_get(2)?,
            severity: r.try_get(3)?,
            state: r.try_get(4)?,
            route: r.try_get(5)?,
            next_attempt_ms: if delivery == DeliveryState::Pending {
                Some(r.try_get(10)?)
            } else {
                None
            },
            delivery,
            attempts: attempts.max(0) as u32,
            last_status: status.and_then(|s| u16::try_from(s).ok()),
            reason: r.try_get(9)?,
        });
    }
    Ok(out)
}

pub(super) async fn count(c: &Object, f: &ListFilter) -> Result<u64, StoreError> {
    let state = f.state.map(|s| s.as_str());
    let row = c
        .query_one(
            &format!(
                "SELECT count(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {LIST_WHERE}"
            ),
            &[&state, &f.route, &f.severity, &f.since_ms, &f.until_ms, &f.text],
        )
        .await
        .map_err(pg_error("count deliveries"))?;
    let n: i64 = row.try_get(0)?;
    Ok(n.max(0) as u64)
}

pub(super) async fn route_counts(c: &Object) -> Result<Vec<RouteCount>, StoreError> {
    let rows = c
        .query(
            "SELECT d.route, d.state, count(*), min(e.received_ms)
               FROM deliveries d JOIN events e ON e.seq = d.event_seq
              GROUP BY d.route, d.state ORDER BY d.route, d.state",
            &[],
        )
        .await
        .map_err(pg_error("count deliveries by route"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let n: i64 = r.try_get(2)?;
        out.push(RouteCount {
            route: r.try_get(0)?,
            state: state_of(r.try_get(1)?)?,
            count: n.max(0) as u64,
            oldest_received_ms: r.try_get(3)?,
        });
    }
    Ok(out)
}

pub(super) async fn attempts_since(
    c: &Object,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<AttemptPoint>, StoreError> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = c
        .query(
            "SELECT route, at_ms, error IS NULL, duration_ms FROM (
                 SELECT route, at_ms, error, duration_ms FROM attempts WHERE at_ms >= $1
                  ORDER BY at_ms DESC LIMIT $2) a
              ORDER BY at_ms",
            &[&since_ms, &limit],
        )
        .await
        .map_err(pg_error("recent attempts"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(AttemptPoint {
            route: r.try_get(0)?,
            at_ms: r.try_get(1)?,
            ok: r.try_get(2)?,
            duration_ms: r.try_get(3)?,
        });
    }
    Ok(out)
}

pub(super) async fn paused_routes(c: &Object) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT route FROM route_pauses WHERE until_ms IS NULL OR until_ms > $1 ORDER BY route",
            &[&crate::time::now_millis()],
        )
        .await
        .map_err(pg_error("paused routes"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(r.try_get(0)?);
    }
    Ok(out)
}

pub(super) async fn record(
    c: &Object,
    receipt_id: &str,
    with_body: bool,
) -> Result<Option<EventRecord>, StoreError> {
    let Some(row) = c
        .query_opt(
            "SELECT seq, received_ms, event_id, severity, state, body, headers
               FROM events WHERE receipt_id = $1",
            &[&receipt_id],
        )
        .await
        .map_err(pg_error("read an event"))?
    else {
        return Ok(None);
    };
    let seq: i64 = row.try_get(0)?;
    let event_id: Option<String> = row.try_get(2)?;
    let mut record = EventRecord {
        receipt_id: receipt_id.to_string(),
        received_ms: row.try_get(1)?,
        event_id: event_id.map(|id| display_id(Some(&id))),
        severity: row.try_get(3)?,
        state: row.try_get(4)?,
        deliveries: vec![],
        headers: None,
        body: None,
    };
    if with_body {
        let body: String = row.try_get(5)?;
        let headers: String = row.try_get(6)?;
        record.headers = serde_json::from_str(&headers).ok();
        record.body = Some(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)));
    }
    let deliveries = c
        .query(
            "SELECT route, state, attempts, next_at_ms, deadline_ms, last_status, reason, updated_ms
               FROM deliveries WHERE event_seq = $1 ORDER BY route",
            &[&seq],
        )
        .await
        .map_err(pg_error("read deliveries"))?;
    let attempts = c
        .query(
            "SELECT route, attempt, at_ms, outcome, last_status, error, steps, fuel_used,
                    duration_ms, transform_digest
               FROM attempts WHERE event_seq = $1 ORDER BY route, attempt",
            &[&seq],
        )
        .await
        .map_err(pg_error("read attempts"))?;
    for d in deliveries {
        let state = state_of(d.try_get(1)?)?;
        let route: String = d.try_get(0)?;
        let (next, deadline, updated): (i64, i64, i64) =
            (d.try_get(3)?, d.try_get(4)?, d.try_get(7)?);
        let made: i32 = d.try_get(2)?;
        let status: Option<i32> = d.try_get(5)?;
        let mut list = Vec::new();
        for a in attempts.iter() {
            if a.try_get::<_, &str>(0)? != route {
                continue;
            }
            let outcome: String = a.try_get(3)?;
            let n: i32 = a.try_get(1)?;
            let st: Option<i32> = a.try_get(4)?;
            let steps: i32 = a.try_get(6)?;
            let fuel: i64 = a.try_get(7)?;
            list.push(AttemptRecord {
                attempt: n.max(0) as u32,
                at_ms: a.try_get(2)?,
                outcome: serde_json::from_str(&outcome)
                    .unwrap_or(serde_json::Value::String(outcome)),
                last_status: st.and_then(|s| u16::try_from(s).ok()),
                error: a.try_get(5)?,
                steps: steps.max(0) as u32,
                fuel_used: fuel.max(0) as u64,
                duration_ms: a.try_get(8)?,
                transform_digest: a.try_get(9)?,
            });
        }
        record.deliveries.push(DeliveryRecord {
            route,
            state,
            attempts_made: made.max(0) as u32,
            last_status: status.and_then(|s| u16::try_from(s).ok()),
            attempts: list,
            reason: d.try_get(6)?,
            next_attempt_ms: (state == DeliveryState::Pending).then_some(next),
            gives_up_ms: (state == DeliveryState::Pending).then_some(deadline),
            delivered_ms: (state == DeliveryState::Delivered).then_some(updated),
            failed_ms: (state == DeliveryState::Failed).then_some(updated),
        });
    }
    Ok(Some(record))
}

/// Live nodes (heartbeat younger than a lease) and dead letters.
pub(super) async fn cluster(c: &Object, lease: Duration) -> Result<ClusterView, StoreError> {
    let lease_ms = lease.as_millis().min(i64::MAX as u128) as i64;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM nodes WHERE NOT stopping
                       AND heartbeat_at > clock_timestamp() - $1::bigint * interval '1 ms'),
                    (SELECT count(*) FROM deliveries WHERE state = 'failed')",
            &[&lease_ms],
        )
        .await
        .map_err(pg_error("cluster gauges"))?;
    let (nodes, dead): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(ClusterView {
        live_nodes: nodes.max(0) as u64,
        dead_letters: dead.max(0) as u64,
    })
}

/// Copies one event with its deliveries and attempts as they are.  A
/// delivery in flight is copied as pending (its attempt counted: it was
/// interrupted).  Skipped when its receipt ID is already there.
pub(super) async fn import(
    c: &mut Object,
    node: &str,
    ev: &super::Imported<'_>,
) -> Result<bool, StoreError> {
    let r = ev.record;
    let (body_hash, body, headers) = (ev.body_hash, ev.body, ev.headers);
    let tx = c.transaction().await.map_err(pg_error("begin an import"))?;
    let alert_key = match ev.event_id {
        Some(_) => ev.order_key.to_string(),
        None => format!("body:{body_hash}"),
    };
    // The event ID as stored (not the display form).
    let row = tx
        .query_opt(
            "WITH a AS (
                 INSERT INTO alerts AS a (alert_key, last_alert_seq, head_hash, head_receipt, head_received_ms)
                 VALUES ($2, 1, $7, $1, $3)
                 ON CONFLICT (alert_key) DO UPDATE
                    SET last_alert_seq = a.last_alert_seq + 1, head_hash = excluded.head_hash,
                        head_receipt = excluded.head_receipt, head_received_ms = excluded.head_received_ms
                 WHERE NOT EXISTS (SELECT 1 FROM events WHERE receipt_id = $1)
                 RETURNING last_alert_seq
             )
             INSERT INTO events (receipt_id, received_ms, received_by, event_id, alert_key, alert_seq,
                                 severity, state, body_hash, body, headers)
             SELECT $1, $3, $4, $5, $2, a.last_alert_seq, $6, $8, $7, $9, $10 FROM a
             ON CONFLICT (receipt_id) DO NOTHING
             RETURNING seq, alert_seq",
            &[
                &r.receipt_id,
                &alert_key,
                &r.received_ms,
                &node,
                &ev.event_id,
                &r.severity,
                &body_hash,
                &r.state,
                &body,
                &headers,
            ],
        )
        .await
        .map_err(pg_error("import an event"))?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(false);
    };
    let (seq, alert_seq): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    for d in &r.deliveries {
        let (state, attempts) = match d.state {
            DeliveryState::InFlight => ("pending", d.attempts_made.saturating_add(1)),
            s => (s.as_str(), d.attempts_made),
        };
        let updated = d.delivered_ms.or(d.failed_ms).unwrap_or(r.received_ms);
        tx.execute(
            "INSERT INTO deliveries (event_seq, route, alert_key, alert_seq, state, attempts,
                                     next_at_ms, deadline_ms, updated_ms, last_status, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &seq,
                &d.route,
                &alert_key,
                &alert_seq,
                &state,
                &(attempts.min(i32::MAX as u32) as i32),
                &d.next_attempt_ms.unwrap_or(r.received_ms),
                &d.gives_up_ms.unwrap_or(i64::MAX),
                &updated,
                &d.last_status.map(i32::from),
                &d.reason,
            ],
        )
        .await
        .map_err(pg_error("import a delivery"))?;
        for a in &d.attempts {
            tx.execute(
                "INSERT INTO attempts (event_seq, route, attempt, node_id, at_ms, outcome, last_status,
                                       error, steps, fuel_used, duration_ms, transform_digest)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT DO NOTHING",
                &[
                    &seq,
                    &d.route,
                    &(a.attempt.min(i32::MAX as u32) as i32),
                    &node,
                    &a.at_ms,
                    &a.outcome.to_string(),
                    &a.last_status.map(i32::from),
                    &a.error,
                    &(a.steps.min(i32::MAX as u32) as i32),
                    &(a.fuel_used.min(i64::MAX as u64) as i64),
                    &a.duration_ms,
                    &a.transform_digest,
                ],
            )
            .await
            .map_err(pg_error("import an attempt"))?;
        }
    }
    tx.commit().await?;
    Ok(true)
}
