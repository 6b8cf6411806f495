//! The writes of a delivery's life, as SQL run by the writer thread:
//! admit, claim, release, finish, recover, retry and purge.
//!
//! The hot statements name delivery states as SQL literals, not
//! parameters: a parameter compared with `state`, which the partial index
//! `deliveries_open` filters on, makes SQLite prepare the statement again
//! at every bind.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::queue::{Open, Queue};
use super::rate::RateLimiters;
use crate::store::{
    Admission, AttemptRecord, Claim, ClaimBatch, ClaimScope, ClaimTally, DeliveryKey,
    DeliveryState, NewEvent, Next, RetrySelection, StoreError,
};

use DeliveryState::{Delivered, Failed, InFlight, Pending};

/// The statements every event runs (admit, the in-flight mark, finish):
/// `tests::hot_statements_are_prepared_once` checks that SQLite never
/// prepares them again.
#[cfg(test)]
pub(super) const HOT_STATEMENTS: [&str; 6] = [
    SQL_EARLIER_COPY,
    SQL_INSERT_EVENT,
    SQL_INSERT_DELIVERY,
    SQL_MARK_IN_FLIGHT,
    SQL_INSERT_ATTEMPT,
    SQL_FINISH_DELIVERY,
];

/// Due pending deliveries, oldest first, but those behind an open
/// delivery of the same alert and route (an earlier pending one, or one in
/// flight) and those of the routes in the JSON list ?2.  The states are
/// literals, so the subquery searches the partial index `deliveries_open`
/// (`tests::claims_search_the_open_deliveries_index` checks the plan).
pub(super) const SQL_CLAIM: &str =
    "SELECT d.event_seq, d.route, d.attempts, d.deadline_ms, e.receipt_id, e.received_ms,
        e.event_id, e.body, d.order_key
     FROM deliveries d JOIN events e ON e.seq = d.event_seq
     WHERE d.state = 'pending' AND d.next_at_ms <= ?1
       AND d.route NOT IN (SELECT value FROM json_each(?2))
       AND NOT EXISTS (
           SELECT 1 FROM deliveries p
           WHERE p.route = d.route AND p.order_key = d.order_key
             AND p.state IN ('pending', 'in_flight')
             AND (p.event_seq < d.event_seq OR p.state = 'in_flight'))
     ORDER BY d.event_seq LIMIT ?3";

/// The earlier copy of a body within the dedupe window, only while it is
/// still its alert's latest event: A, B, A again is a real change back,
/// not a repeat.  (Of one alert's copies only the latest can qualify; the
/// scan of `events_by_hash` meets the earliest received first.  No ORDER
/// BY: with one, SQLite prepares the statement again at every run.)
const SQL_EARLIER_COPY: &str = "SELECT e.receipt_id, e.received_ms FROM events e
     WHERE e.body_hash = ?1 AND e.received_ms >= ?2
       AND NOT EXISTS (SELECT 1 FROM events l WHERE l.order_key = ?3 AND l.seq > e.seq)
     LIMIT 1";
const SQL_INSERT_EVENT: &str = "INSERT INTO events (receipt_id, received_ms, event_id, order_key, severity, state, body_hash, body, headers)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const SQL_INSERT_DELIVERY: &str = "INSERT INTO deliveries (event_seq, route, order_key, state, next_at_ms, deadline_ms, updated_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)";
const SQL_MARK_IN_FLIGHT: &str = "UPDATE deliveries SET state = 'in_flight', updated_ms = ?1
     WHERE event_seq = ?2 AND route = ?3 AND state = 'pending'";
const SQL_INSERT_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts (event_seq, route, attempt, at_ms, outcome, last_status, error,
                           steps, fuel_used, duration_ms, transform_digest)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const SQL_FINISH_DELIVERY: &str =
    "UPDATE deliveries SET state = ?3, attempts = ?4, next_at_ms = ?5, updated_ms = ?6,
            last_status = ?7, reason = ?8
     WHERE event_seq = ?1 AND route = ?2";

/// Stores an event and its deliveries unless it is a duplicate; with them,
/// the open deliveries for the in-memory queue.
pub(super) fn admit(
    c: &Connection,
    ev: &NewEvent,
    dedupe_ms: i64,
) -> Result<(Admission, Vec<Open>), StoreError> {
    if dedupe_ms > 0 {
        let earlier: Option<(String, i64)> = c
            .prepare_cached(SQL_EARLIER_COPY)?
            .query_row(
                params![
                    ev.body_hash,
                    ev.received_ms.saturating_sub(dedupe_ms),
                    ev.order_key
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((receipt_id, received_ms)) = earlier {
            return Ok((
                Admission::Duplicate {
                    receipt_id,
                    received_ms,
                },
                vec![],
            ));
        }
    }
    let headers = serde_json::Value::Object(
        ev.headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
    .to_string();
    c.prepare_cached(SQL_INSERT_EVENT)?.execute(params![
        ev.receipt_id,
        ev.received_ms,
        ev.event_id,
        ev.order_key,
        ev.severity,
        ev.state,
        ev.body_hash,
        &*ev.body,
        headers
    ])?;
    let seq = c.last_insert_rowid();
    let mut stmt = c.prepare_cached(SQL_INSERT_DELIVERY)?;
    let mut open = Vec::with_capacity(ev.routes.len());
    let (order_key, receipt_id): (Arc<str>, Arc<str>) = (
        Arc::from(ev.order_key.as_str()),
        Arc::from(ev.receipt_id.as_str()),
    );
    let event_id: Option<Arc<str>> = ev.event_id.as_deref().map(Arc::from);
    for route in &ev.routes {
        stmt.execute(params![
            seq,
            route,
            ev.order_key,
            Pending,
            ev.received_ms,
            ev.deadline_ms
        ])?;
        open.push(Open {
            seq,
            route: Arc::from(route.as_str()),
            order_key: order_key.clone(),
            attempts: 0,
            next_at_ms: ev.received_ms,
            deadline_ms: ev.deadline_ms,
            receipt_id: receipt_id.clone(),
            received_ms: ev.received_ms,
            event_id: event_id.clone(),
            body: ev.body.clone(),
        });
    }
    Ok((Admission::Stored, open))
}

/// Marks deliveries claimed from memory as in flight (sent behind the
/// claim: a crash mid-attempt is then counted at the next start).
pub(super) fn mark_in_flight(
    c: &Connection,
    keys: &[DeliveryKey],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut mark = c.prepare_cached(SQL_MARK_IN_FLIGHT)?;
    for k in keys {
        mark.execute(params![now_ms, k.event_seq, k.route])?;
    }
    Ok(())
}

/// Every open delivery with what its claim needs, oldest first, unless
/// there are more than `limit`: the in-memory index is rebuilt from it.
pub(super) fn load_open(c: &Connection, limit: usize) -> Result<Option<Vec<Open>>, StoreError> {
    let open: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE state IN (?1, ?2)")?
        .query_row(params![Pending, InFlight], |r| r.get(0))?;
    if open as usize > limit {
        return Ok(None);
    }
    let mut stmt = c.prepare_cached(
        "SELECT d.event_seq, d.route, d.order_key, d.attempts, d.next_at_ms, d.deadline_ms,
                e.receipt_id, e.received_ms, e.event_id, e.body
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.state IN (?1, ?2) ORDER BY d.event_seq",
    )?;
    // One Arc per event body, shared by its routes' deliveries.
    let mut last: Option<(i64, Arc<str>)> = None;
    let rows = stmt.query_map(params![Pending, InFlight], |r| {
        let seq: i64 = r.get(0)?;
        let body = match &last {
            Some((s, b)) if *s == seq => b.clone(),
            _ => {
                let b: Arc<str> = Arc::from(r.get::<_, String>(9)?);
                last = Some((seq, b.clone()));
                b
            }
        };
        Ok(Open {
            seq,
            route: Arc::from(r.get::<_, String>(1)?),
            order_key: Arc::from(r.get::<_, String>(2)?),
            attempts: r.get(3)?,
            next_at_ms: r.get(4)?,
            deadline_ms: r.get(5)?,
            receipt_id: Arc::from(r.get::<_, String>(6)?),
            received_ms: r.get(7)?,
            event_id: r.get::<_, Option<String>>(8)?.map(Arc::from),
            body,
        })
    })?;
    Ok(Some(rows.collect::<Result<_, _>>()?))
}

/// Takes due deliveries in per-alert order, each with a rate token.
/// The SQL path (the in-memory index is off): chains with an attempt
/// running in this process are passed over, whatever the database says.
pub(super) fn claim(
    c: &Connection,
    now_ms: i64,
    max: usize,
    scope: &ClaimScope,
    rates: &RateLimiters,
    queue: &Queue,
) -> Result<ClaimBatch, StoreError> {
    let mut batch = ClaimBatch::default();
    if max == 0 {
        return Ok(batch);
    }
    let mut skip = scope.skip.clone();
    skip.extend(
        scope
            .room
            .iter()
            .filter(|(_, room)| **room == 0)
            .map(|(r, _)| r.clone()),
    );
    let mut tally = ClaimTally::default();
    let window = (max * 2).max(16);
    // A route that runs out of tokens is skipped, and the query is asked
    // again, so one rate-limited route never starves the others.
    for _round in 0..4 {
        let skip_json = serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into());
        let mut stmt = c.prepare_cached(SQL_CLAIM)?;
        let rows: Vec<(Claim, String)> = stmt
            .query_map(params![now_ms, skip_json, window as i64], |r| {
                Ok((
                    Claim {
                        key: DeliveryKey {
                            event_seq: r.get(0)?,
                            route: r.get(1)?,
                        },
                        attempt: r.get::<_, u32>(2)?.saturating_add(1),
                        deadline_ms: r.get(3)?,
                        receipt_id: r.get(4)?,
                        received_ms: r.get(5)?,
                        event_id: r.get(6)?,
                        body: r.get(7)?,
                    },
                    r.get(8)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let fetched = rows.len();
        let mut limited = false;
        for (row, order_key) in rows {
            if batch.claims.len() == max {
                break;
            }
            // Its chain has an attempt running here: it waits.
            if skip.contains(&row.key.route) || queue.is_busy(&row.key.route, &order_key) {
                continue;
            }
            // Its route's bulkhead is full: the query is asked again
            // without it, for other routes' work.
            if !tally.allows(scope, &row.key.route) {
                skip.push(row.key.route);
                limited = true;
                continue;
            }
            match rates.admit(&row.key.route) {
                Ok(()) => {
                    queue.take(row.key.event_seq, &row.key.route, &order_key);
                    tally.take(&row.key.route);
                    batch.claims.push(row)
                }
                Err(w) => {
                    batch.rate_wait = Some(batch.rate_wait.map_or(w, |x: Duration| x.min(w)));
                    skip.push(row.key.route);
                    limited = true;
                }
            }
        }
        if batch.claims.len() == max || fetched < window || !limited {
            break;
        }
    }
    let mut mark = c.prepare_cached(
        "UPDATE deliveries SET state = ?1, updated_ms = ?2 WHERE event_seq = ?3 AND route = ?4",
    )?;
    for cl in &batch.claims {
        mark.execute(params![InFlight, now_ms, cl.key.event_seq, cl.key.route])?;
    }
    Ok(batch)
}

/// Claimed deliveries back to pending, no attempt counted.
pub(super) fn release(c: &Connection, keys: &[DeliveryKey]) -> Result<(), StoreError> {
    let mut stmt = c.prepare_cached(
        "UPDATE deliveries SET state = 'pending' WHERE event_seq = ?1 AND route = ?2 AND state = 'in_flight'",
    )?;
    for k in keys {
        stmt.execute(params![k.event_seq, k.route])?;
    }
    Ok(())
}

/// A claimed delivery back to pending unattempted, with why it waits.
pub(super) fn hold(c: &Connection, key: &DeliveryKey, reason: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE deliveries SET state = 'pending', reason = ?3 WHERE event_seq = ?1 AND route = ?2 AND state = 'in_flight'",
    )?
    .execute(params![key.event_seq, key.route, reason])?;
    Ok(())
}

/// Records an attempt and where its delivery goes next.
pub(super) fn finish(
    c: &Connection,
    key: &DeliveryKey,
    a: &AttemptRecord,
    next: &Next,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.prepare_cached(SQL_INSERT_ATTEMPT)?.execute(params![
        key.event_seq,
        key.route,
        a.attempt,
        a.at_ms,
        a.outcome.to_string(),
        a.last_status,
        a.error,
        a.steps,
        a.fuel_used.min(i64::MAX as u64) as i64,
        a.duration_ms,
        a.transform_digest
    ])?;
    let (state, next_at, reason) = match next {
        Next::Delivered => (Delivered, a.at_ms, None),
        Next::Retry { at_ms } => (Pending, *at_ms, a.error.clone()),
        Next::Failed { reason } => (Failed, a.at_ms, Some(reason.clone())),
    };
    c.prepare_cached(SQL_FINISH_DELIVERY)?.execute(params![
        key.event_seq,
        key.route,
        state,
        a.attempt,
        next_at,
        now_ms,
        a.last_status,
        reason
    ])?;
    Ok(())
}

/// At start: attempts that were running when the process stopped are
/// made again, and counted (a transform that crashes the process must not
/// be retried for ever); past the horizon they are dead letters.
pub(super) fn recover(c: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    c.execute(
        "UPDATE deliveries SET state = ?2, attempts = attempts + 1, updated_ms = ?1,
                reason = 'an attempt was interrupted by a stop or crash and the retry horizon is over'
         WHERE state = ?3 AND deadline_ms < ?1",
        params![now_ms, Failed, InFlight],
    )?;
    Ok(c.execute(
        "UPDATE deliveries SET state = ?2, attempts = attempts + 1, updated_ms = ?1,
                reason = 'an attempt was interrupted by a stop or crash'
         WHERE state = ?3",
        params![now_ms, Pending, InFlight],
    )?)
}

/// Failed deliveries back to pending, their horizon restarting now.
/// Returned (and then delivered) oldest first: by the order the events
/// were received (their sequence number), then by route name.
pub(super) fn retry_failed(
    c: &Connection,
    sel: &RetrySelection,
    now_ms: i64,
    horizon_ms: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = c.prepare(
        "UPDATE deliveries SET state = ?5, next_at_ms = ?1, deadline_ms = ?2,
                updated_ms = ?1, reason = NULL
         WHERE state = ?6
           AND (?3 IS NULL OR route = ?3)
           AND (?4 IS NULL OR event_seq = (SELECT seq FROM events WHERE receipt_id = ?4))
         RETURNING event_seq, (SELECT receipt_id FROM events WHERE seq = event_seq), route",
    )?;
    let rows = stmt.query_map(
        params![
            now_ms,
            now_ms.saturating_add(horizon_ms),
            sel.route,
            sel.receipt_id,
            Pending,
            Failed
        ],
        |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut rows: Vec<(i64, String, String)> = rows.collect::<Result<_, _>>()?;
    rows.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    Ok(rows.into_iter().map(|(_, r, route)| (r, route)).collect())
}

/// Makes one webhook's deliveries (one route's) due now, whatever their
/// state but in flight.
pub(super) fn requeue(
    c: &Connection,
    receipt_id: &str,
    route: Option<&str>,
    now_ms: i64,
    horizon_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare(
        "UPDATE deliveries SET state = ?5, next_at_ms = ?1, deadline_ms = ?2,
                updated_ms = ?1, reason = NULL
         WHERE state != ?6
           AND (?3 IS NULL OR route = ?3)
           AND event_seq = (SELECT seq FROM events WHERE receipt_id = ?4)
         RETURNING route",
    )?;
    let rows = stmt.query_map(
        params![
            now_ms,
            now_ms.saturating_add(horizon_ms),
            route,
            receipt_id,
            Pending,
            InFlight
        ],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Closes a pending or failed delivery as done, with `reason`.
pub(super) fn skip(
    c: &Connection,
    receipt_id: &str,
    route: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE deliveries SET state = ?4, updated_ms = ?5, reason = ?3
         WHERE state IN (?6, ?7) AND route = ?2
           AND event_seq = (SELECT seq FROM events WHERE receipt_id = ?1)",
        params![
            receipt_id, route, reason, Delivered, now_ms, Pending, Failed
        ],
    )?;
    Ok(n > 0)
}

/// Pauses (a row) or resumes (no row) a route.
pub(super) fn set_paused(
    c: &Connection,
    route: &str,
    paused: bool,
    now_ms: i64,
) -> Result<(), StoreError> {
    if paused {
        c.execute(
            "INSERT OR IGNORE INTO route_pauses (route, paused_ms) VALUES (?1, ?2)",
            params![route, now_ms],
        )?;
    } else {
        c.execute("DELETE FROM route_pauses WHERE route = ?1", [route])?;
    }
    Ok(())
}

/// Webhooks deleted per write job, so a large purge never holds the
/// writer (and the webhooks waiting on it) for long.
pub(super) const PURGE_BATCH: usize = 1000;

/// Deletes up to [`PURGE_BATCH`] fully delivered webhooks older than
/// `before_ms`.
pub(super) fn purge(c: &Connection, before_ms: i64) -> Result<usize, StoreError> {
    Ok(c.execute(
        "DELETE FROM events WHERE seq IN (
             SELECT seq FROM events WHERE received_ms < ?1 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq
                   AND (d.state != ?3 OR d.updated_ms >= ?1))
             LIMIT ?2)",
        params![before_ms, PURGE_BATCH as i64, Delivered],
    )?)
}
