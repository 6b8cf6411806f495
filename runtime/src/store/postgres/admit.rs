//! Admits in groups: webhooks that arrive while a commit is under way wait
//! in a queue; the next group's statements are pipelined in one
//! transaction on one connection and share its commit (one WAL flush),
//! then all are answered.  None is answered before the commit that holds
//! it has returned.  (docs/notes/postgres.md, section 9: per-event
//! transactions stay below the naive pattern; grouping is the lever.)
//!
//! One statement per webhook, chained through RETURNING: the `alerts` row
//! of its alert is upserted first, which locks it until commit, so one
//! alert's admits are serialised across nodes and numbered (alert_seq) in
//! commit order; its WHERE settles the dedupe race (the second of two
//! nodes admitting one body waits for the first's commit, then sees the
//! same head hash within the window: a duplicate).  Groups are sorted by
//! alert key, so two groups never lock alerts in opposite orders.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_postgres::Transaction;

use super::pg_error;
use crate::store::{Admission, NewEvent, StoreError};

/// Most webhooks admitted in one commit.
const MAX_GROUP: usize = 256;
/// Groups committing at once (each on its own connection).
const IN_FLIGHT: usize = 2;

/// One webhook waiting for its group.
struct Job {
    /// The event.
    event: NewEvent,
    /// Its duplicate window (ms; 0: never a duplicate).
    dedupe_ms: i64,
    /// Answered once the group's commit returned.
    reply: oneshot::Sender<Result<Admission, StoreError>>,
}

/// The queue of the admitting tasks.
pub(super) struct Admitter {
    /// Jobs; the task stops when this is dropped.
    jobs: mpsc::UnboundedSender<Job>,
}

impl Admitter {
    pub(super) fn start(pool: Pool, node: Arc<str>, notifier: Arc<Notify>) -> Admitter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, node, notifier, rx));
        Admitter { jobs: tx }
    }

    /// Stores `event` in the next group; returns once committed.
    pub(super) async fn admit(
        &self,
        event: NewEvent,
        dedupe_ms: i64,
    ) -> Result<Admission, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                event,
                dedupe_ms,
                reply,
            })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.unwrap_or(Err(StoreError::WriterGone))
    }
}

async fn run(
    pool: Pool,
    node: Arc<str>,
    notifier: Arc<Notify>,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while the previous commits were under way.
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (pool, node, notifier) = (pool.clone(), node.clone(), notifier.clone());
        tokio::spawn(async move {
            commit_group(&pool, &node, &notifier, jobs).await;
            drop(permit);
        });
    }
}

/// The key that orders and deduplicates: the Superna event ID, or for an
/// event without one its body hash (so the same body is one alert there).
fn alert_key(e: &NewEvent) -> String {
    match e.event_id {
        Some(_) => e.order_key.clone(),
        None => format!("body:{}", e.body_hash),
    }
}

async fn commit_group(pool: &Pool, node: &str, notifier: &Notify, mut jobs: Vec<Job>) {
    // Stable: one alert's webhooks keep their order.
    jobs.sort_by_cached_key(|j| alert_key(&j.event));
    let mut client = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            // No connection: none of the group can be admitted.  All are
            // refused now (a 503 each), instead of each waiting in turn for
            // a connection of its own past the sender's patience.
            let message = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Backend {
                    backend: "postgres",
                    context: "no connection to PostgreSQL".into(),
                    source: message.clone().into(),
                }));
            }
            return;
        }
    };
    let result = admit_all(&mut client, node, &jobs).await;
    let stored = match result {
        Ok(answers) => {
            let stored = answers.iter().any(|a| *a == Admission::Stored);
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.reply.send(Ok(answer));
            }
            stored
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(job) = jobs.pop() {
                let _ = job.reply.send(Err(e));
            }
            false
        }
        Err(e) => {
            // One bad webhook must not refuse the others: each alone.
            tracing::warn!(
                group = jobs.len(),
                "a group admit failed ({}); admitting its webhooks one by one",
                crate::text::error_chain(&e)
            );
            let mut stored = false;
            for job in jobs {
                let answer = admit_all(&mut client, node, std::slice::from_ref(&job))
                    .await
                    .map(|mut a| a.pop().unwrap_or(Admission::Stored));
                stored |= matches!(answer, Ok(Admission::Stored));
                let _ = job.reply.send(answer);
            }
            stored
        }
    };
    if stored {
        notifier.notify_one();
    }
}

/// One statement per webhook: the alert's row (order, dedupe), the event,
/// its deliveries.  Returns the stored event's seq, or the duplicate's
/// receipt and receive time when it is one of a committed event; all NULL
/// when the alert row's head said "duplicate" after waiting for another
/// node's commit (read the head then).
const ADMIT: &str = "
WITH dup AS (
    SELECT e.receipt_id, e.received_ms FROM events e
     WHERE $13::bigint > 0 AND e.body_hash = $8::text AND e.received_ms >= $2::bigint - $13::bigint
       AND NOT EXISTS (SELECT 1 FROM events l WHERE l.alert_key = $4::text AND l.seq > e.seq)
     ORDER BY e.seq LIMIT 1
), a AS (
    INSERT INTO alerts AS a (alert_key, last_alert_seq, head_hash, head_receipt, head_received_ms)
    SELECT $4::text, 1, $8::text, $1::text, $2::bigint WHERE NOT EXISTS (SELECT 1 FROM dup)
    ON CONFLICT (alert_key) DO UPDATE
       SET last_alert_seq = a.last_alert_seq + 1,
           head_hash = excluded.head_hash,
           head_receipt = excluded.head_receipt,
           head_received_ms = excluded.head_received_ms
     WHERE NOT ($13::bigint > 0 AND a.head_hash = excluded.head_hash
                AND a.head_received_ms >= excluded.head_received_ms - $13::bigint)
    RETURNING last_alert_seq
), e AS (
    INSERT INTO events (receipt_id, received_ms, received_by, event_id, alert_key, alert_seq,
                        severity, state, body_hash, body, headers)
    SELECT $1::text, $2::bigint, $3::text, $5::text, $4::text, a.last_alert_seq,
           $6::text, $7::text, $8::text, $9::text, $10::text
      FROM a
    RETURNING seq, alert_seq
), d AS (
    INSERT INTO deliveries (event_seq, route, alert_key, alert_seq, state, next_at_ms,
                            deadline_ms, updated_ms)
    SELECT e.seq, r.route, $4::text, e.alert_seq, 'pending', $2::bigint, $11::bigint, $2::bigint
      FROM e, unnest($12::text[]) AS r(route)
)
SELECT (SELECT seq FROM e), (SELECT receipt_id FROM dup), (SELECT received_ms FROM dup)";

async fn admit_all(
    client: &mut deadpool_postgres::Object,
    node: &str,
    jobs: &[Job],
) -> Result<Vec<Admission>, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_error("begin an admit"))?;
    let stmt = tx
        .prepare_cached(ADMIT)
        .await
        .map_err(pg_error("prepare the admit"))?;
    let keys: Vec<String> = jobs.iter().map(|j| alert_key(&j.event)).collect();
    let headers: Vec<String> = jobs
        .iter()
        .map(|j| {
            serde_json::Value::Object(
                j.event
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            )
            .to_string()
        })
        .collect();
    // Pipelined: every statement is sent before the first answer is read.
    let rows = futures_join(
        jobs.iter()
            .zip(&keys)
            .zip(&headers)
            .map(|((j, key), headers)| {
                let e = &j.event;
                let tx = &tx;
                let stmt = &stmt;
                async move {
                    tx.query_one(
                        stmt,
                        &[
                            &e.receipt_id,
                            &e.received_ms,
                            &node,
                            key,
                            &e.event_id,
                            &e.severity,
                            &e.state,
                            &e.body_hash,
                            &&*e.body,
                            headers,
                            &e.deadline_ms,
                            &e.routes,
                            &j.dedupe_ms,
                        ],
                    )
                    .await
                }
            }),
    )
    .await;
    let mut answers = Vec::with_capacity(jobs.len());
    for (row, key) in rows.into_iter().zip(&keys) {
        let row = row.map_err(pg_error("admit"))?;
        let seq: Option<i64> = row.try_get(0)?;
        let dup: Option<String> = row.try_get(1)?;
        let dup_ms: Option<i64> = row.try_get(2)?;
        answers.push(match (seq, dup, dup_ms) {
            (Some(_), _, _) => Admission::Stored,
            (None, Some(receipt_id), Some(received_ms)) => Admission::Duplicate {
                receipt_id,
                received_ms,
            },
            _ => head_of(&tx, key).await?,
        });
    }
    tx.commit().await.map_err(|e| StoreError::Commit {
        source: Box::new(e),
    })?;
    Ok(answers)
}

/// The duplicate another node committed meanwhile: the alert's head.
async fn head_of(tx: &Transaction<'_>, key: &str) -> Result<Admission, StoreError> {
    let row = tx
        .query_one(
            "SELECT head_receipt, head_received_ms FROM alerts WHERE alert_key = $1",
            &[&key],
        )
        .await
        .map_err(pg_error("read a duplicate's original"))?;
    Ok(Admission::Duplicate {
        receipt_id: row.try_get(0)?,
        received_ms: row.try_get(1)?,
    })
}

/// Polls every future together, in order (tokio-postgres sends a query
/// when its future is first polled: this pipelines them), and returns
/// their outputs in order.
pub(super) async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
