//! A delivery's life on a shared database: claims (`FOR UPDATE SKIP
//! LOCKED` on the heads of (route, alert), each taking a rate token,
//! leased to this node), heartbeats that renew the leases, the sweep that
//! takes over expired ones, finishes committed in groups, the release on
//! stop, and the operators' retry and purge.
//!
//! Why per-alert order holds across nodes: only the head of a (route,
//! alert) is a candidate (no open predecessor, no in-flight successor);
//! two claimers that pick the same head meet on its row lock and SKIP
//! LOCKED makes the second pass over it; a row claimed meanwhile is
//! re-checked once locked (no longer pending) and dropped.  A stale
//! snapshot can only hold a row back: predecessors only ever close, and
//! one alert's admits commit in alert_seq order.  Rows are locked in key
//! order by the heartbeat and the finishes, and with SKIP LOCKED by the
//! sweep, so no two statements deadlock.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{Notify, mpsc, oneshot};

use super::admit::futures_join;
use super::pg_error;
use super::rate::Limits;
use crate::store::{
    AttemptRecord, Claim, ClaimBatch, ClaimScope, ClaimTally, DeliveryKey, Next, RetrySelection,
    StoreError,
};
use crate::time::now_millis;

/// Candidates: due pending heads of their (route, alert), not yet chosen
/// in this transaction, not of a skipped or paused route.
const CANDIDATES: &str = "
SELECT d.event_seq, d.route
  FROM deliveries d
 WHERE d.state = 'pending' AND d.next_at_ms <= $1::bigint
   AND d.route <> ALL($2::text[])
   AND NOT EXISTS (SELECT 1 FROM unnest($4::bigint[], $5::text[]) AS c(s, r)
                    WHERE c.s = d.event_seq AND c.r = d.route)
   AND NOT EXISTS (
       SELECT 1 FROM deliveries p
        WHERE p.route = d.route AND p.alert_key = d.alert_key
          AND p.state IN ('pending', 'in_flight')
          AND (p.alert_seq < d.alert_seq OR (p.state = 'in_flight' AND p.alert_seq > d.alert_seq)))
   AND NOT EXISTS (
       SELECT 1 FROM route_pauses rp
        WHERE rp.route = d.route AND (rp.until_ms IS NULL OR rp.until_ms > $1::bigint))
 ORDER BY d.event_seq
 LIMIT $3
   FOR UPDATE OF d SKIP LOCKED";

/// The chosen candidates become this node's, leased.
const MARK: &str = "
UPDATE deliveries d
   SET state = 'in_flight', lease_owner = $3::text,
       lease_until = clock_timestamp() + $4::bigint * interval '1 ms', updated_ms = $5::bigint
  FROM unnest($1::bigint[], $2::text[]) AS c(event_seq, route), events e
 WHERE d.event_seq = c.event_seq AND d.route = c.route AND e.seq = d.event_seq
RETURNING d.event_seq, d.route, d.attempts, d.deadline_ms, e.receipt_id, e.received_ms,
          e.event_id, e.body";

/// Takes up to `max` due deliveries, oldest first, in per-alert order,
/// each with a token of its route's rate limit.
pub(super) async fn claim(
    c: &mut Object,
    node: &str,
    lease: Duration,
    rates: &Limits,
    now_ms: i64,
    max: usize,
    scope: &ClaimScope,
) -> Result<ClaimBatch, StoreError> {
    let mut batch = ClaimBatch::default();
    if max == 0 {
        return Ok(batch);
    }
    let tx = c.transaction().await.map_err(pg_error("begin a claim"))?;
    let mut skip = scope.skip.clone();
    skip.extend(
        scope
            .room
            .iter()
            .filter(|(_, room)| **room == 0)
            .map(|(r, _)| r.clone()),
    );
    let mut tally = ClaimTally::default();
    let mut chosen: Vec<(i64, String)> = Vec::new();
    let window = (max * 2).max(16) as i64;
    let candidates = tx
        .prepare_cached(CANDIDATES)
        .await
        .map_err(pg_error("prepare the claim"))?;
    // A route that runs out of tokens is skipped and the query asked
    // again, so one rate-limited route never starves the others.
    for _round in 0..4 {
        let seqs: Vec<i64> = chosen.iter().map(|c| c.0).collect();
        let routes: Vec<&str> = chosen.iter().map(|c| c.1.as_str()).collect();
        let rows = tx
            .query(&candidates, &[&now_ms, &skip, &window, &seqs, &routes])
            .await
            .map_err(pg_error("claim candidates"))?;
        let fetched = rows.len() as i64;
        let mut round: Vec<(i64, String)> = Vec::new();
        // A route at its bulkhead's cap is skipped and the query asked
        // again, like a rate-limited one.
        let mut limited = false;
        for r in &rows {
            if chosen.len() + round.len() == max {
                break;
            }
            let route: String = r.try_get(1)?;
            if !tally.allows(scope, &route) {
                if !skip.contains(&route) {
                    skip.push(route);
                }
                limited = true;
                continue;
            }
            tally.take(&route);
            round.push((r.try_get(0)?, route));
        }
        // One rate_take per rate key among them, for as many as it has.
        let mut wanted: Vec<(String, i32)> = Vec::new();
        for (_, route) in &round {
            if let Some(limit) = rates.get(route) {
                match wanted.iter_mut().find(|(k, _)| *k == limit.key) {
                    Some((_, n)) => *n += 1,
                    None => wanted.push((limit.key.clone(), 1)),
                }
            }
        }
        for (key, n) in wanted {
            let Some(limit) = rates.by_key(&key) else {
                continue;
            };
            let (granted, wait) = super::rate::take(&tx, &limit, n).await?;
            if granted < n {
                limited = true;
                batch.rate_wait = Some(batch.rate_wait.map_or(wait, |w| w.min(wait)));
                // Keep the first `granted` of this key, in order.
                let mut left = granted;
                round.retain(|(_, route)| match rates.get(route) {
                    Some(l) if l.key == key => {
                        if left > 0 {
                            left -= 1;
                            true
                        } else {
                            if !skip.contains(route) {
                                skip.push(route.clone());
                            }
                            false
                        }
                    }
                    _ => true,
                });
            }
        }
        chosen.extend(round);
        if chosen.len() == max || fetched < window || !limited {
            break;
        }
    }
    if !chosen.is_empty() {
        let seqs: Vec<i64> = chosen.iter().map(|c| c.0).collect();
        let routes: Vec<&str> = chosen.iter().map(|c| c.1.as_str()).collect();
        let lease_ms = lease.as_millis().min(i64::MAX as u128) as i64;
        let rows = tx
            .query(MARK, &[&seqs, &routes, &node, &lease_ms, &now_ms])
            .await
            .map_err(pg_error("claim"))?;
        let mut claims = Vec::with_capacity(rows.len());
        for r in rows {
            let attempts: i32 = r.try_get(2)?;
            claims.push(Claim {
                key: DeliveryKey {
                    event_seq: r.try_get(0)?,
                    route: r.try_get(1)?,
                },
                attempt: (attempts.max(0) as u32).saturating_add(1),
                deadline_ms: r.try_get(3)?,
                receipt_id: r.try_get(4)?,
                received_ms: r.try_get(5)?,
                event_id: r.try_get(6)?,
                body: r.try_get(7)?,
            });
        }
        claims.sort_by_key(|c| c.key.event_seq);
        batch.claims = claims;
    }
    tx.commit().await.map_err(|e| StoreError::Commit {
        source: Box::new(e),
    })?;
    Ok(batch)
}

/// Claimed deliveries back to pending, no attempt counted.
pub(super) async fn release(
    c: &Object,
    node: &str,
    keys: &[DeliveryKey],
) -> Result<(), StoreError> {
    let mut keys = keys.to_vec();
    keys.sort_by(|a, b| (a.event_seq, &a.route).cmp(&(b.event_seq, &b.route)));
    let seqs: Vec<i64> = keys.iter().map(|k| k.event_seq).collect();
    let routes: Vec<&str> = keys.iter().map(|k| k.route.as_str()).collect();
    c.execute(
        "UPDATE deliveries d SET state = 'pending', lease_owner = NULL, lease_until = NULL
           FROM unnest($1::bigint[], $2::text[]) AS k(event_seq, route)
          WHERE d.event_seq = k.event_seq AND d.route = k.route
            AND d.state = 'in_flight' AND d.lease_owner = $3",
        &[&seqs, &routes, &node],
    )
    .await
    .map_err(pg_error("release claims"))?;
    Ok(())
}

/// A claimed delivery back to pending unattempted, with why it waits.
pub(super) async fn hold(
    c: &Object,
    node: &str,
    key: &DeliveryKey,
    reason: &str,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL, reason = $4
          WHERE event_seq = $1 AND route = $2 AND state = 'in_flight' AND lease_owner = $3",
        &[&key.event_seq, &key.route, &node, &reason],
    )
    .await
    .map_err(pg_error("hold a delivery"))?;
    Ok(())
}

/// One finish waiting for its group.
struct Job {
    /// Which delivery.
    key: DeliveryKey,
    /// The attempt as recorded.
    attempt: AttemptRecord,
    /// Where the delivery goes next.
    next: Next,
    /// When it was recorded (ms since the epoch).
    now_ms: i64,
    /// Answered once the group's commit returned.
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Finishes grouped into commits, like admits.
pub(super) struct Finisher {
    /// Jobs; the task stops when this is dropped.
    jobs: mpsc::UnboundedSender<Job>,
}

impl Finisher {
    pub(super) fn start(pool: Pool, node: Arc<str>) -> Finisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(finish_loop(pool, node, rx));
        Finisher { jobs: tx }
    }

    /// Records an attempt and where its delivery goes next, in the next
    /// group; returns once committed.  Only while the lease is this
    /// node's: a delivery taken over meanwhile keeps the other node's
    /// outcome (at least once).
    pub(super) async fn finish(
        &self,
        key: DeliveryKey,
        attempt: AttemptRecord,
        next: Next,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                key,
                attempt,
                next,
                now_ms: now_millis(),
                reply,
            })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.unwrap_or(Err(StoreError::WriterGone))
    }
}

async fn finish_loop(pool: Pool, node: Arc<str>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < 256 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        jobs.sort_by(|a, b| (a.key.event_seq, &a.key.route).cmp(&(b.key.event_seq, &b.key.route)));
        match finish_all(&pool, &node, &jobs).await {
            Ok(()) => {
                for j in jobs {
                    let _ = j.reply.send(Ok(()));
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(j) = jobs.pop() {
                    let _ = j.reply.send(Err(e));
                }
            }
            Err(_) => {
                for j in jobs {
                    let r = finish_all(&pool, &node, std::slice::from_ref(&j)).await;
                    let _ = j.reply.send(r);
                }
            }
        }
    }
}

const FINISH: &str = "
WITH upd AS (
    UPDATE deliveries
       SET state = $3::text, attempts = $4::int4, next_at_ms = $5::bigint, updated_ms = $6::bigint,
           last_status = $7::int4, reason = $8::text, lease_owner = NULL, lease_until = NULL
     WHERE event_seq = $1::bigint AND route = $2::text AND state = 'in_flight' AND lease_owner = $9::text
    RETURNING event_seq, route
)
INSERT INTO attempts (event_seq, route, attempt, node_id, at_ms, outcome, last_status, error,
                      steps, fuel_used, duration_ms, transform_digest)
SELECT event_seq, route, $4::int4, $9::text, $10::bigint, $11::text, $7::int4, $12::text,
       $13::int4, $14::bigint, $15::float8, $16::text
  FROM upd
ON CONFLICT (event_seq, route, attempt) DO UPDATE
   SET node_id = excluded.node_id, at_ms = excluded.at_ms, outcome = excluded.outcome,
       last_status = excluded.last_status, error = excluded.error, steps = excluded.steps,
       fuel_used = excluded.fuel_used, duration_ms = excluded.duration_ms,
       transform_digest = excluded.transform_digest
RETURNING 1";

async fn finish_all(pool: &Pool, node: &str, jobs: &[Job]) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(super::pool_error)?;
    let tx = client
        .transaction()
        .await
        .map_err(pg_error("begin a finish"))?;
    let stmt = tx
        .prepare_cached(FINISH)
        .await
        .map_err(pg_error("prepare the finish"))?;
    let rows = futures_join(jobs.iter().map(|j| {
        let (tx, stmt) = (&tx, &stmt);
        async move {
            let a = &j.attempt;
            let (state, next_at, reason) = match &j.next {
                Next::Delivered => ("delivered", a.at_ms, None),
                Next::Retry { at_ms } => ("pending", *at_ms, a.error.clone()),
                Next::Failed { reason } => ("failed", a.at_ms, Some(reason.clone())),
            };
            let attempt = a.attempt.min(i32::MAX as u32) as i32;
            let status = a.last_status.map(i32::from);
            let steps = a.steps.min(i32::MAX as u32) as i32;
            let fuel = a.fuel_used.min(i64::MAX as u64) as i64;
            tx.query(
                stmt,
                &[
                    &j.key.event_seq,
                    &j.key.route,
                    &state,
                    &attempt,
                    &next_at,
                    &j.now_ms,
                    &status,
                    &reason,
                    &node,
                    &a.at_ms,
                    &a.outcome.to_string(),
                    &a.error,
                    &steps,
                    &fuel,
                    &a.duration_ms,
                    &a.transform_digest,
                ],
            )
            .await
        }
    }))
    .await;
    for (rows, j) in rows.into_iter().zip(jobs) {
        if rows.map_err(pg_error("record an attempt"))?.is_empty() {
            tracing::warn!(
                event_seq = j.key.event_seq,
                route = %j.key.route,
                "this node's claim was taken over (its lease ran out): the attempt is not recorded; another node made or makes it again"
            );
        }
    }
    tx.commit().await.map_err(|e| StoreError::Commit {
        source: Box::new(e),
    })?;
    Ok(())
}

/// Every lease/3: the node row's heartbeat and every lease it holds are
/// renewed; then expired leases of any node are taken over (made pending,
/// the attempt the dead node may have made counted).
pub(super) async fn heartbeat(pool: Pool, node: String, lease: Duration, wake: Arc<Notify>) {
    let every = (lease / 3).max(Duration::from_millis(200));
    let lease_ms = lease.as_millis().min(i64::MAX as u128) as i64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(c) = pool.get().await else {
            continue; // the database is away: logged by the callers
        };
        let renewed = c
            .query(
                "WITH n AS (
                     INSERT INTO nodes (node_id, version) VALUES ($1, $3)
                     ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = clock_timestamp()
                 ), mine AS (
                     SELECT event_seq, route FROM deliveries
                      WHERE state = 'in_flight' AND lease_owner = $1
                      ORDER BY event_seq, route
                        FOR UPDATE
                 )
                 UPDATE deliveries d SET lease_until = clock_timestamp() + $2::bigint * interval '1 ms'
                   FROM mine
                  WHERE d.event_seq = mine.event_seq AND d.route = mine.route
                    AND d.state = 'in_flight' AND d.lease_owner = $1
                 RETURNING 1",
                &[&node, &lease_ms, &env!("CARGO_PKG_VERSION")],
            )
            .await;
        if let Err(e) = renewed {
            tracing::warn!("lease renewal failed: {}", crate::text::error_chain(&e));
            continue;
        }
        match c
            .query(
                "UPDATE deliveries d
                    SET state = CASE WHEN d.deadline_ms < $1 THEN 'failed' ELSE 'pending' END,
                        attempts = d.attempts + 1,
                        reason = 'an attempt by node ' || d.lease_owner || ' was interrupted (its lease ran out)',
                        lease_owner = NULL, lease_until = NULL, next_at_ms = $1, updated_ms = $1
                   FROM (SELECT event_seq, route FROM deliveries
                          WHERE state = 'in_flight' AND lease_until < clock_timestamp()
                          ORDER BY event_seq, route
                            FOR UPDATE SKIP LOCKED) x
                  WHERE d.event_seq = x.event_seq AND d.route = x.route
                 RETURNING d.event_seq",
                &[&now_millis()],
            )
            .await
        {
            Ok(rows) if !rows.is_empty() => {
                tracing::warn!(
                    taken_over = rows.len(),
                    "claims of a node that stopped renewing its leases were taken over"
                );
                wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("lease sweep failed: {}", crate::text::error_chain(&e)),
        }
    }
}

/// At start, under this node's name lock: its own claims from before (a
/// crash or kill) are made pending again at once, counted; past the
/// horizon they are dead letters.  Returns how many.
pub(super) async fn recover(c: &Object, node: &str) -> Result<usize, StoreError> {
    let rows = c
        .query(
            "UPDATE deliveries
                SET state = CASE WHEN deadline_ms < $2 THEN 'failed' ELSE 'pending' END,
                    attempts = attempts + 1, lease_owner = NULL, lease_until = NULL,
                    updated_ms = $2,
                    reason = CASE WHEN deadline_ms < $2
                        THEN 'an attempt was interrupted by a stop or crash and the retry horizon is over'
                        ELSE 'an attempt was interrupted by a stop or crash' END
              WHERE state = 'in_flight' AND lease_owner = $1
             RETURNING state",
            &[&node, &now_millis()],
        )
        .await
        .map_err(pg_error("recover this node's claims"))?;
    let mut pending = 0;
    for r in rows {
        if r.try_get::<_, String>(0)? == "pending" {
            pending += 1;
        }
    }
    Ok(pending)
}

/// On stop: what this node still holds goes back at once, and its node
/// row goes.  Returns how many claims.
pub(super) async fn stop(c: &Object, node: &str) -> Result<usize, StoreError> {
    let rows = c
        .query(
            "WITH gone AS (
                 DELETE FROM nodes WHERE node_id = $1
             ), mine AS (
                 SELECT event_seq, route FROM deliveries
                  WHERE state = 'in_flight' AND lease_owner = $1
                  ORDER BY event_seq, route
                    FOR UPDATE
             )
             UPDATE deliveries d
                SET state = 'pending', lease_owner = NULL, lease_until = NULL
               FROM mine
              WHERE d.event_seq = mine.event_seq AND d.route = mine.route
                AND d.state = 'in_flight' AND d.lease_owner = $1
             RETURNING d.event_seq",
            &[&node],
        )
        .await
        .map_err(pg_error("give back this node's claims"))?;
    Ok(rows.len())
}

/// Failed deliveries back to pending, their horizon restarting now.
pub(super) async fn retry_failed(
    c: &Object,
    sel: &RetrySelection,
    horizon_ms: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let now = now_millis();
    let rows = c
        .query(
            "UPDATE deliveries d
                SET state = 'pending', next_at_ms = $1, deadline_ms = $2, updated_ms = $1, reason = NULL
               FROM events e
              WHERE e.seq = d.event_seq AND d.state = 'failed'
                AND ($3::text IS NULL OR d.route = $3)
                AND ($4::text IS NULL OR e.receipt_id = $4)
             RETURNING e.receipt_id, d.route, d.event_seq",
            &[&now, &now.saturating_add(horizon_ms), &sel.route, &sel.receipt_id],
        )
        .await
        .map_err(pg_error("retry failed deliveries"))?;
    // Oldest first (received order), then route: as SQLite.
    let mut out: Vec<(i64, String, String)> = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((r.try_get(2)?, r.try_get(0)?, r.try_get(1)?));
    }
    out.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    Ok(out.into_iter().map(|(_, r, route)| (r, route)).collect())
}

/// One webhook's deliveries (one route's) due now, but those in flight.
pub(super) async fn requeue(
    c: &Object,
    receipt_id: &str,
    route: Option<&str>,
    horizon_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let now = now_millis();
    let rows = c
        .query(
            "UPDATE deliveries d
                SET state = 'pending', next_at_ms = $1, deadline_ms = $2, updated_ms = $1, reason = NULL
               FROM events e
              WHERE e.seq = d.event_seq AND d.state <> 'in_flight'
                AND ($3::text IS NULL OR d.route = $3)
                AND e.receipt_id = $4
             RETURNING d.route",
            &[&now, &now.saturating_add(horizon_ms), &route, &receipt_id],
        )
        .await
        .map_err(pg_error("requeue deliveries"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(r.try_get(0)?);
    }
    out.sort();
    Ok(out)
}

/// Closes a pending or failed delivery as done, with `reason`.
pub(super) async fn skip(
    c: &Object,
    receipt_id: &str,
    route: &str,
    reason: &str,
) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "UPDATE deliveries d SET state = 'delivered', updated_ms = $4, reason = $3
               FROM events e
              WHERE e.seq = d.event_seq AND d.state IN ('pending', 'failed')
                AND d.route = $2 AND e.receipt_id = $1",
            &[&receipt_id, &route, &reason, &now_millis()],
        )
        .await
        .map_err(pg_error("skip a delivery"))?;
    Ok(n > 0)
}

/// Pauses (a row, no end) or resumes (no row) a route.
pub(super) async fn set_paused(c: &Object, route: &str, paused: bool) -> Result<(), StoreError> {
    if paused {
        c.execute(
            "INSERT INTO route_pauses (route, until_ms, reason) VALUES ($1, NULL, 'console')
             ON CONFLICT (route) DO UPDATE SET until_ms = NULL",
            &[&route],
        )
        .await
        .map_err(pg_error("pause a route"))?;
    } else {
        c.execute("DELETE FROM route_pauses WHERE route = $1", &[&route])
            .await
            .map_err(pg_error("resume a route"))?;
    }
    Ok(())
}

/// Deletes fully delivered webhooks older than `before_ms`, a thousand
/// per transaction.
pub(super) async fn purge(c: &Object, before_ms: i64) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = c
            .execute(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events WHERE received_ms < $1 AND NOT EXISTS (
                         SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq
                           AND (d.state <> 'delivered' OR d.updated_ms >= $1))
                     LIMIT 1000)",
                &[&before_ms],
            )
            .await
            .map_err(pg_error("purge delivered events"))? as usize;
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}
