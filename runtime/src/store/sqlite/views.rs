//! Reads for the API, the CLI and the scheduler's timers, on the reader
//! connection.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{
    AttemptPoint, AttemptRecord, Backlog, DeliveryRecord, DeliveryState, EventRecord, ListFilter,
    ListRow, RouteCount, StoreError,
};
use crate::text::display_id;

use DeliveryState::{InFlight, Pending};

/// Open deliveries and the oldest one's receive time.
pub(super) fn backlog(c: &Connection) -> Result<Backlog, StoreError> {
    let (open, oldest) = c.prepare_cached(
        "SELECT COUNT(*), MIN(e.received_ms) FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.state IN (?1, ?2)",
    )?
    .query_row(params![Pending, InFlight], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
    })?;
    Ok(Backlog {
        open: open.max(0) as u64,
        oldest_open_ms: oldest,
    })
}

/// The earliest retry time after `now_ms`.
pub(super) fn next_retry_ms(c: &Connection, now_ms: i64) -> Result<Option<i64>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT MIN(next_at_ms) FROM deliveries WHERE state = ?2 AND next_at_ms > ?1",
    )?
    .query_row(params![now_ms, Pending], |r| r.get(0))?)
}

/// Open deliveries per route.
pub(super) fn open_by_route(c: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT route, COUNT(*) FROM deliveries WHERE state IN (?1, ?2) GROUP BY route",
    )?;
    let rows = stmt.query_map(params![Pending, InFlight], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Receipt IDs of the webhooks that carried `event_id`, oldest first.
pub(super) fn receipts_for_event_id(
    c: &Connection,
    event_id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        c.prepare_cached("SELECT receipt_id FROM events WHERE event_id = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([event_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The WHERE clause of `list` and `count` (parameters ?1 to ?7).
const LIST_WHERE: &str = "(?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.route = ?2)
           AND (?3 IS NULL OR e.severity = ?3)
           AND (?4 IS NULL OR e.received_ms >= ?4) AND (?5 IS NULL OR e.received_ms < ?5)
           AND (?6 IS NULL OR instr(e.receipt_id, ?6) > 0 OR instr(COALESCE(e.event_id, ''), ?6) > 0
                OR instr(e.body, ?6) > 0)";

/// Deliveries, newest first.
pub(super) fn list(c: &Connection, f: &ListFilter) -> Result<Vec<ListRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT e.receipt_id, e.received_ms, e.event_id, e.severity, e.state, d.route, d.state,
                d.attempts, d.last_status, d.reason, d.next_at_ms
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {LIST_WHERE}
         ORDER BY d.event_seq DESC, d.route LIMIT ?7 OFFSET ?8"
    ))?;
    let limit = f.limit.min(i64::MAX as usize) as i64;
    let offset = f.offset.min(i64::MAX as usize) as i64;
    let rows = stmt.query_map(
        params![
            f.state, f.route, f.severity, f.since_ms, f.until_ms, f.text, limit, offset
        ],
        |r| {
            let delivery: DeliveryState = r.get(6)?;
            Ok(ListRow {
                receipt_id: r.get(0)?,
                received_ms: r.get(1)?,
                event_id: r.get(2)?,
                severity: r.get(3)?,
                state: r.get(4)?,
                route: r.get(5)?,
                next_attempt_ms: (delivery == Pending).then(|| r.get(10)).transpose()?,
                delivery,
                attempts: r.get(7)?,
                last_status: r.get(8)?,
                reason: r.get(9)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many deliveries `list` would return without limit and offset.
pub(super) fn count(c: &Connection, f: &ListFilter) -> Result<u64, StoreError> {
    let n: i64 = c
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {LIST_WHERE}"
        ))?
        .query_row(
            params![f.state, f.route, f.severity, f.since_ms, f.until_ms, f.text],
            |r| r.get(0),
        )?;
    Ok(n.max(0) as u64)
}

/// Deliveries per route and state, with the oldest receive time.
pub(super) fn route_counts(c: &Connection) -> Result<Vec<RouteCount>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT d.route, d.state, COUNT(*), MIN(e.received_ms)
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         GROUP BY d.route, d.state ORDER BY d.route, d.state",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RouteCount {
            route: r.get(0)?,
            state: r.get(1)?,
            count: r.get::<_, i64>(2)?.max(0) as u64,
            oldest_received_ms: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Attempts since `since_ms`, oldest first, the newest `limit`.
pub(super) fn attempts_since(
    c: &Connection,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<AttemptPoint>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT route, at_ms, error IS NULL, duration_ms FROM (
             SELECT route, at_ms, error, duration_ms FROM attempts WHERE at_ms >= ?1
             ORDER BY at_ms DESC LIMIT ?2)
         ORDER BY at_ms",
    )?;
    let rows = stmt.query_map(
        params![since_ms, limit.min(i64::MAX as usize) as i64],
        |r| {
            Ok(AttemptPoint {
                route: r.get(0)?,
                at_ms: r.get(1)?,
                ok: r.get(2)?,
                duration_ms: r.get(3)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The paused routes.
pub(super) fn paused_routes(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT route FROM route_pauses ORDER BY route")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Everything known of one webhook.
pub(super) fn record(
    c: &Connection,
    receipt_id: &str,
    with_body: bool,
) -> Result<Option<EventRecord>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT seq, received_ms, event_id, severity, state, body, headers FROM events WHERE receipt_id = ?1",
        )?
        .query_row([receipt_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                EventRecord {
                    receipt_id: receipt_id.to_string(),
                    received_ms: r.get(1)?,
                    event_id: r
                        .get::<_, Option<String>>(2)?
                        .map(|id| display_id(Some(&id))),
                    severity: r.get(3)?,
                    state: r.get(4)?,
                    deliveries: vec![],
                    headers: None,
                    body: None,
                },
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .optional()?;
    let Some((seq, mut record, body, headers)) = row else {
        return Ok(None);
    };
    if with_body {
        record.headers = serde_json::from_str(&headers).ok();
        record.body = Some(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)));
    }
    let mut dstmt = c.prepare_cached(
        "SELECT route, state, attempts, next_at_ms, deadline_ms, last_status, reason, updated_ms
         FROM deliveries WHERE event_seq = ?1 ORDER BY route",
    )?;
    let deliveries = dstmt
        .query_map([seq], |r| {
            let state: DeliveryState = r.get(1)?;
            let (next, deadline, updated): (i64, i64, i64) = (r.get(3)?, r.get(4)?, r.get(7)?);
            Ok(DeliveryRecord {
                route: r.get(0)?,
                state,
                attempts_made: r.get(2)?,
                last_status: r.get(5)?,
                reason: r.get(6)?,
                attempts: vec![],
                next_attempt_ms: (state == Pending).then_some(next),
                gives_up_ms: (state == Pending).then_some(deadline),
                delivered_ms: (state == DeliveryState::Delivered).then_some(updated),
                failed_ms: (state == DeliveryState::Failed).then_some(updated),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut astmt = c.prepare_cached(
        "SELECT attempt, at_ms, outcome, last_status, error, steps, fuel_used, duration_ms, transform_digest
         FROM attempts WHERE event_seq = ?1 AND route = ?2 ORDER BY attempt",
    )?;
    for mut d in deliveries {
        d.attempts = astmt
            .query_map(params![seq, d.route], |r| {
                let outcome: String = r.get(2)?;
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    at_ms: r.get(1)?,
                    outcome: serde_json::from_str(&outcome)
                        .unwrap_or(serde_json::Value::String(outcome)),
                    last_status: r.get(3)?,
                    error: r.get(4)?,
                    steps: r.get(5)?,
                    fuel_used: r.get::<_, i64>(6)?.max(0) as u64,
                    duration_ms: r.get(7)?,
                    transform_digest: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        record.deliveries.push(d);
    }
    Ok(Some(record))
}
