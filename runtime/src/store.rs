//! The durable event store: every accepted webhook and, per route, its
//! delivery and every attempt, in SQLite (`<data_dir>/events.sqlite3`).
//!
//! Why SQLite (through rusqlite, bundled): one file, no server to run, WAL
//! with `synchronous = FULL` gives an fsync per commit, and other processes
//! may read and write the same file while the service runs, which the
//! `ztbridge events` commands rely on (redb and sled hold an exclusive
//! lock on their file).
//!
//! All writes go through one writer thread that owns the write connection
//! and commits whatever is queued in one transaction (group commit): under
//! a burst, many webhooks share one fsync, and none is answered before the
//! commit that holds it has returned.  Reads use their own connection.
//!
//! Tables: `events` (the body as received, the headers that matter, the
//! receive time), `deliveries` (one row per route and event: pending,
//! in_flight, delivered or failed), `attempts` (one row per attempt).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::time::rfc3339_millis;

/// File name inside the data directory.
pub const FILE_NAME: &str = "events.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("event store: {0}")]
    Io(#[from] std::io::Error),
    #[error("event store: commit failed: {0}")]
    Commit(String),
    #[error("event store: the writer has stopped")]
    WriterGone,
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first attempt or its next retry.
    Pending,
    /// An attempt is running (reset to pending on start: a crash mid-way
    /// means the attempt is made again).
    InFlight,
    Delivered,
    /// Dead letter: given up, with the reason.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "in_flight" | "in-flight" => DeliveryState::InFlight,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => return None,
        })
    }
}

/// An accepted webhook, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub receipt_id: String,
    /// Receive time, milliseconds since the epoch.
    pub received_ms: i64,
    /// Superna's event ID, when recognisable.
    pub event_id: Option<String>,
    /// What orders deliveries: the event ID, or the receipt ID without one.
    pub order_key: String,
    pub severity: String,
    pub state: Option<String>,
    /// SHA-256 of the body (duplicate detection).
    pub body_hash: String,
    /// The JSON text as received (after inflating).
    pub body: Arc<str>,
    /// The request headers worth keeping (never credentials).
    pub headers: Vec<(String, String)>,
    /// Routes whose filter took the event: one delivery each.
    pub routes: Vec<String>,
    /// Give up retrying after this time (ms since the epoch).
    pub deadline_ms: i64,
}

/// What `insert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Stored and committed.
    Stored,
    /// The same body was received within the duplicate window: not stored.
    Duplicate {
        receipt_id: String,
        received_at: String,
    },
}

/// A delivery taken for an attempt.
#[derive(Debug, Clone)]
pub struct Claim {
    pub event_seq: i64,
    pub route: String,
    pub receipt_id: String,
    pub received_ms: i64,
    pub event_id: Option<String>,
    pub body: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    pub deadline_ms: i64,
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempt: u32,
    pub at_ms: i64,
    /// The flow's outcome, as JSON (`flow::Outcome`).
    pub outcome: Value,
    /// Status of the last response received, if any.
    pub last_status: Option<u16>,
    /// A short excerpt of what went wrong, if anything did.
    pub error: Option<String>,
    pub steps: u32,
    pub fuel_used: u64,
    pub duration_ms: f64,
    pub transform_digest: String,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone)]
pub enum Next {
    Delivered,
    Retry { at_ms: i64 },
    Failed { reason: String },
}

/// A row of `events list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListRow {
    pub receipt_id: String,
    pub received_at: String,
    pub event_id: Option<String>,
    pub severity: String,
    pub state: Option<String>,
    pub route: String,
    pub delivery: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub reason: Option<String>,
    pub next_attempt_at: Option<String>,
}

/// Counts for back-pressure and monitoring.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Backlog {
    /// Deliveries pending or in flight.
    pub open: u64,
    /// Receive time of the oldest event with an open delivery.
    pub oldest_open_ms: Option<i64>,
}

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write: runs on the writer thread inside the batch's transaction
/// (`None` when the transaction could not begin) and returns what to do
/// once the batch has committed or failed.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// Most writes committed together.
const MAX_BATCH: usize = 512;

/// The event store.  Cheap to share behind an `Arc`.
pub struct Store {
    /// The database file (for messages).
    path: PathBuf,
    /// Queue of the writer thread, which owns the write connection.
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Reads (the API, the CLI, the scheduler's timers).
    reader: Mutex<Connection>,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // An fsync on every commit: a 2xx is only sent after one.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_id  TEXT NOT NULL UNIQUE,
    received_ms INTEGER NOT NULL,
    event_id    TEXT,
    order_key   TEXT NOT NULL,
    severity    TEXT NOT NULL,
    state       TEXT,
    body_hash   TEXT NOT NULL,
    body        TEXT NOT NULL,
    headers     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_hash ON events (body_hash, received_ms);
CREATE INDEX IF NOT EXISTS events_by_event_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_by_order_key ON events (order_key, seq);
CREATE INDEX IF NOT EXISTS events_by_time ON events (received_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    event_seq   INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    route       TEXT NOT NULL,
    order_key   TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at_ms  INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    last_status INTEGER,
    reason      TEXT,
    PRIMARY KEY (event_seq, route)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at_ms);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (route, order_key, event_seq);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (route, order_key, event_seq)
    WHERE state IN ('pending', 'in_flight');
CREATE TABLE IF NOT EXISTS attempts (
    event_seq   INTEGER NOT NULL,
    route       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    last_status INTEGER,
    error       TEXT,
    steps       INTEGER NOT NULL,
    fuel_used   INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    transform_digest TEXT NOT NULL,
    PRIMARY KEY (event_seq, route, attempt),
    FOREIGN KEY (event_seq, route) REFERENCES deliveries (event_seq, route) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO health (id, at_ms) VALUES (1, 0);
PRAGMA user_version = 1;
";

impl Store {
    /// Opens (creating) `dir/events.sqlite3`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let writer = connect(&path)?;
        writer.execute_batch(SCHEMA)?;
        let reader = connect(&path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ztbridge-store".into())
            .spawn(move || writer_loop(writer, rx))?;
        Ok(Store {
            path,
            jobs: Mutex::new(tx),
            reader: Mutex::new(reader),
        })
    }

    /// Opens an existing store for the CLI: a clear error when there is none.
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no event store at {} (is the data directory right? see --data-dir / data_dir)",
                    path.display()
                ),
            )));
        }
        Store::open(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> oneshot::Receiver<Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>| -> Reply {
            let result = match conn {
                None => Err(StoreError::Commit("could not begin a transaction".into())),
                Some(conn) => in_savepoint(conn, f),
            };
            Box::new(move |commit: Result<(), String>| {
                let result = match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Commit(e)),
                };
                let _ = tx.send(result);
            })
        });
        // A send error drops the job and with it `tx`: the receiver then
        // reports WriterGone.
        let _ = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        rx
    }

    /// Runs `f` in the writer's next batch; returns once that batch is
    /// committed (fsync'd).
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f).await.unwrap_or(Err(StoreError::WriterGone))
    }

    /// `write` for callers outside an async runtime (the CLI).
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f)
            .blocking_recv()
            .unwrap_or(Err(StoreError::WriterGone))
    }

    /// Stores an event and its deliveries unless the same body arrived
    /// within `dedupe_ms` (0: never a duplicate).
    pub async fn insert(&self, ev: NewEvent, dedupe_ms: i64) -> Result<Admission, StoreError> {
        self.write(move |c| insert(c, &ev, dedupe_ms)).await
    }

    /// On start: attempts that were running when the process stopped are
    /// made again.  Returns how many.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let now = crate::time::now_millis();
        self.write(move |c| {
            // An interrupted attempt counts (a transform that crashes the
            // process must not be retried for ever); past the horizon it
            // is a dead letter.
            c.execute(
                "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, updated_ms = ?1,
                        reason = 'an attempt was interrupted by a stop or crash and the retry horizon is over'
                 WHERE state = 'in_flight' AND deadline_ms < ?1",
                [now],
            )?;
            Ok(c.execute(
                "UPDATE deliveries SET state = 'pending', attempts = attempts + 1, updated_ms = ?1,
                        reason = 'an attempt was interrupted by a stop or crash'
                 WHERE state = 'in_flight'",
                [now],
            )?)
        })
        .await
    }

    /// Takes up to `max` due deliveries for attempts, oldest first, never
    /// two of one (route, event ID) and never one whose predecessor for
    /// that (route, event ID) is still open.  `skip` lists routes not to
    /// take (not configured); `admit(route)` asks the route's rate limiter
    /// for a token (`Err(wait)`: none for `wait`).  Returns the claims and
    /// the shortest rate-limit wait met.
    pub async fn claim(
        &self,
        now_ms: i64,
        max: usize,
        skip: Vec<String>,
        admit: impl FnMut(&str) -> Result<(), std::time::Duration> + Send + 'static,
    ) -> Result<(Vec<Claim>, Option<std::time::Duration>), StoreError> {
        self.write(move |c| claim(c, now_ms, max, skip, admit))
            .await
    }

    /// Gives a claimed delivery back (pending, no attempt counted): the
    /// attempt could not start.
    pub async fn release(&self, event_seq: i64, route: String) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                "UPDATE deliveries SET state = 'pending' WHERE event_seq = ?1 AND route = ?2 AND state = 'in_flight'",
                params![event_seq, route],
            )?;
            Ok(())
        })
        .await
    }

    /// Records an attempt and where the delivery goes next.
    pub async fn finish(
        &self,
        event_seq: i64,
        route: String,
        attempt: AttemptRow,
        next: Next,
    ) -> Result<(), StoreError> {
        self.write(move |c| finish(c, event_seq, &route, &attempt, &next))
            .await
    }

    /// A write through the writer thread, committed: the store is writable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let now = crate::time::now_millis();
        self.write(move |c| {
            c.execute("UPDATE health SET at_ms = ?1 WHERE id = 1", [now])?;
            Ok(())
        })
        .await
    }

    /// Open deliveries and the oldest one's receive time.
    pub fn backlog(&self) -> Result<Backlog, StoreError> {
        let c = self.reader();
        let (open, oldest) = c.query_row(
            "SELECT COUNT(*), MIN(e.received_ms) FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.state IN ('pending', 'in_flight')",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
        )?;
        Ok(Backlog {
            open: open.max(0) as u64,
            oldest_open_ms: oldest,
        })
    }

    /// The earliest retry time after `now_ms`, if any delivery waits for one.
    pub fn next_retry_ms(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.reader().query_row(
            "SELECT MIN(next_at_ms) FROM deliveries WHERE state = 'pending' AND next_at_ms > ?1",
            [now_ms],
            |r| r.get(0),
        )?)
    }

    /// Open deliveries per route (for routes no longer configured).
    pub fn open_by_route(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let c = self.reader();
        let mut stmt = c.prepare(
            "SELECT route, COUNT(*) FROM deliveries WHERE state IN ('pending', 'in_flight') GROUP BY route",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Everything known of one webhook, by receipt ID: as `GET
    /// /api/events/{receipt}` and `events show` present it.  `with_body`
    /// adds the event as received and its headers.
    pub fn record(&self, receipt_id: &str, with_body: bool) -> Result<Option<Value>, StoreError> {
        record(&self.reader(), receipt_id, with_body)
    }

    /// Receipt IDs of the webhooks that carried Superna event ID `event_id`,
    /// oldest first.
    pub fn receipts_for_event_id(&self, event_id: &str) -> Result<Vec<String>, StoreError> {
        let c = self.reader();
        let mut stmt =
            c.prepare("SELECT receipt_id FROM events WHERE event_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([event_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries, newest first, optionally of one state and route.
    pub fn list(
        &self,
        state: Option<DeliveryState>,
        route: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListRow>, StoreError> {
        let c = self.reader();
        let mut stmt = c.prepare(
            "SELECT e.receipt_id, e.received_ms, e.event_id, e.severity, e.state, d.route, d.state,
                    d.attempts, d.last_status, d.reason, d.next_at_ms
             FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE (?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.route = ?2)
             ORDER BY d.event_seq DESC, d.route LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![state.map(|s| s.as_str()), route, limit as i64],
            |r| {
                let delivery: String = r.get(6)?;
                let next: i64 = r.get(10)?;
                Ok(ListRow {
                    receipt_id: r.get(0)?,
                    received_at: rfc3339_millis(r.get(1)?),
                    event_id: r.get(2)?,
                    severity: r.get(3)?,
                    state: r.get(4)?,
                    route: r.get(5)?,
                    next_attempt_at: (delivery == "pending").then(|| rfc3339_millis(next)),
                    delivery,
                    attempts: r.get(7)?,
                    last_status: r.get(8)?,
                    reason: r.get(9)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Failed deliveries back to pending: of one webhook (`receipt_id`) or
    /// all, optionally of one route.  The retry horizon restarts now.
    /// Returns (receipt ID, route) of each.
    pub fn retry_failed(
        &self,
        receipt_id: Option<String>,
        route: Option<String>,
        horizon_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let now = crate::time::now_millis();
        self.write_blocking(move |c| {
            let mut stmt = c.prepare(
                "UPDATE deliveries SET state = 'pending', next_at_ms = ?1, deadline_ms = ?2,
                        updated_ms = ?1, reason = NULL
                 WHERE state = 'failed'
                   AND (?3 IS NULL OR route = ?3)
                   AND (?4 IS NULL OR event_seq = (SELECT seq FROM events WHERE receipt_id = ?4))
                 RETURNING (SELECT receipt_id FROM events WHERE seq = event_seq), route",
            )?;
            let rows = stmt.query_map(
                params![now, now.saturating_add(horizon_ms), route, receipt_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Deletes webhooks received before `before_ms` whose every delivery was
    /// delivered before `before_ms` (or that no route took).  Failed and
    /// open deliveries are never purged.  Returns how many webhooks.
    pub fn purge_delivered_before(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.write_blocking(move |c| purge(c, before_ms))?;
            total += n;
            if (n as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// `purge_delivered_before` for async callers (the retention task).
    pub async fn purge_delivered_before_async(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.write(move |c| purge(c, before_ms)).await?;
            total += n;
            if (n as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Takes the data directory for this process alone (`serve`): a second
    /// service on the same directory would re-run the first one's attempts.
    /// Held while the returned file is open.
    pub fn lock_exclusive(&self) -> Result<std::fs::File, StoreError> {
        let path = self.path.with_file_name("serve.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                StoreError::Io(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "another `ztbridge serve` is using this data directory ({} is locked)",
                        path.display()
                    ),
                ))
            },
        )?;
        Ok(file)
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A transaction left open by an earlier failure would make every
        // BEGIN fail from now on.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
                for job in jobs {
                    // SQLite may roll the whole transaction back on its own
                    // (disk full, I/O error): later jobs must not run
                    // outside it, where they would commit unreported.
                    if conn.is_autocommit() {
                        replies.push(job(None));
                    } else {
                        replies.push(job(Some(&conn)));
                    }
                }
                let commit = if conn.is_autocommit() {
                    Err("the transaction was rolled back (disk full or I/O error?)".to_string())
                } else {
                    conn.execute_batch("COMMIT").map_err(|e| e.to_string())
                };
                if commit.is_err() && !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                if let Err(e) = &commit {
                    tracing::error!("event store: commit failed: {e}");
                }
                for reply in replies {
                    reply(commit.clone());
                }
            }
            Err(e) => {
                tracing::error!("event store: cannot begin a transaction: {e}");
                for job in jobs {
                    job(None)(Err(e.to_string()));
                }
            }
        }
    }
}

/// Runs `f` so that its failure undoes only its own writes.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    let result = f(conn);
    match &result {
        Ok(_) => conn.execute_batch("RELEASE job")?,
        Err(_) => conn.execute_batch("ROLLBACK TO job; RELEASE job")?,
    }
    result
}

fn insert(c: &Connection, ev: &NewEvent, dedupe_ms: i64) -> Result<Admission, StoreError> {
    if dedupe_ms > 0 {
        let earlier: Option<(String, i64)> = c
            .query_row(
                // Only while the earlier one is still the alert's latest:
                // A, B, A again is a real change back, not a repeat.
                "SELECT e.receipt_id, e.received_ms FROM events e
                 WHERE e.body_hash = ?1 AND e.received_ms >= ?2
                   AND NOT EXISTS (SELECT 1 FROM events l WHERE l.order_key = ?3 AND l.seq > e.seq)
                 ORDER BY e.seq LIMIT 1",
                params![
                    ev.body_hash,
                    ev.received_ms.saturating_sub(dedupe_ms),
                    ev.order_key
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((receipt_id, ms)) = earlier {
            return Ok(Admission::Duplicate {
                receipt_id,
                received_at: rfc3339_millis(ms),
            });
        }
    }
    let headers = serde_json::to_string(
        &ev.headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<String, Value>>(),
    )
    .unwrap_or_else(|_| "{}".into());
    c.prepare_cached(
        "INSERT INTO events (receipt_id, received_ms, event_id, order_key, severity, state, body_hash, body, headers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
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
    let mut stmt = c.prepare_cached(
        "INSERT INTO deliveries (event_seq, route, order_key, state, next_at_ms, deadline_ms, updated_ms)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?4)",
    )?;
    for route in &ev.routes {
        stmt.execute(params![
            seq,
            route,
            ev.order_key,
            ev.received_ms,
            ev.deadline_ms
        ])?;
    }
    Ok(Admission::Stored)
}

fn claim(
    c: &Connection,
    now_ms: i64,
    max: usize,
    mut skip: Vec<String>,
    mut admit: impl FnMut(&str) -> Result<(), std::time::Duration>,
) -> Result<(Vec<Claim>, Option<std::time::Duration>), StoreError> {
    let mut claims = Vec::new();
    let mut wait: Option<std::time::Duration> = None;
    if max == 0 {
        return Ok((claims, wait));
    }
    let window = (max * 2).max(16);
    // A route that runs out of tokens is skipped, and the query is asked
    // again, so one rate-limited route never starves the others.
    for _round in 0..4 {
        let skip_json = serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into());
        let mut stmt = c.prepare_cached(
            "SELECT d.event_seq, d.route, d.attempts, d.deadline_ms, e.receipt_id, e.received_ms,
                    e.event_id, e.body
             FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.state = 'pending' AND d.next_at_ms <= ?1
               AND d.route NOT IN (SELECT value FROM json_each(?2))
               AND NOT EXISTS (
                   SELECT 1 FROM deliveries p
                   WHERE p.route = d.route AND p.order_key = d.order_key
                     AND p.state IN ('pending', 'in_flight')
                     AND (p.event_seq < d.event_seq OR p.state = 'in_flight'))
             ORDER BY d.event_seq LIMIT ?3",
        )?;
        let rows: Vec<Claim> = stmt
            .query_map(params![now_ms, skip_json, window as i64], |r| {
                Ok(Claim {
                    event_seq: r.get(0)?,
                    route: r.get(1)?,
                    attempt: r.get::<_, u32>(2)?.saturating_add(1),
                    deadline_ms: r.get(3)?,
                    receipt_id: r.get(4)?,
                    received_ms: r.get(5)?,
                    event_id: r.get(6)?,
                    body: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let fetched = rows.len();
        let mut limited = false;
        for row in rows {
            if claims.len() == max {
                break;
            }
            if skip.contains(&row.route) {
                continue;
            }
            match admit(&row.route) {
                Ok(()) => claims.push(row),
                Err(w) => {
                    wait = Some(wait.map_or(w, |x| x.min(w)));
                    skip.push(row.route);
                    limited = true;
                }
            }
        }
        if claims.len() == max || fetched < window || !limited {
            break;
        }
    }
    let mut mark = c.prepare_cached(
        "UPDATE deliveries SET state = 'in_flight', updated_ms = ?1 WHERE event_seq = ?2 AND route = ?3",
    )?;
    for cl in &claims {
        mark.execute(params![now_ms, cl.event_seq, cl.route])?;
    }
    Ok((claims, wait))
}

fn finish(
    c: &Connection,
    event_seq: i64,
    route: &str,
    a: &AttemptRow,
    next: &Next,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO attempts (event_seq, route, attempt, at_ms, outcome, last_status, error,
                               steps, fuel_used, duration_ms, transform_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        event_seq,
        route,
        a.attempt,
        a.at_ms,
        a.outcome.to_string(),
        a.last_status,
        a.error,
        a.steps,
        a.fuel_used as i64,
        a.duration_ms,
        a.transform_digest
    ])?;
    let (state, next_at, reason) = match next {
        Next::Delivered => ("delivered", a.at_ms, None),
        Next::Retry { at_ms } => ("pending", *at_ms, a.error.clone()),
        Next::Failed { reason } => ("failed", a.at_ms, Some(reason.clone())),
    };
    c.prepare_cached(
        "UPDATE deliveries SET state = ?3, attempts = ?4, next_at_ms = ?5, updated_ms = ?6,
                last_status = ?7, reason = ?8
         WHERE event_seq = ?1 AND route = ?2",
    )?
    .execute(params![
        event_seq,
        route,
        state,
        a.attempt,
        next_at,
        crate::time::now_millis(),
        a.last_status,
        reason
    ])?;
    Ok(())
}

/// Webhooks deleted per write job, so a large purge never holds the
/// writer (and the webhooks waiting on it) for long.
const PURGE_BATCH: i64 = 1000;

fn purge(c: &Connection, before_ms: i64) -> Result<usize, StoreError> {
    Ok(c.execute(
        "DELETE FROM events WHERE seq IN (
             SELECT seq FROM events WHERE received_ms < ?1 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq
                   AND (d.state != 'delivered' OR d.updated_ms >= ?1))
             LIMIT ?2)",
        params![before_ms, PURGE_BATCH],
    )?)
}

fn record(c: &Connection, receipt_id: &str, with_body: bool) -> Result<Option<Value>, StoreError> {
    type EventRow = (
        i64,
        i64,
        Option<String>,
        String,
        Option<String>,
        String,
        String,
    );
    let row: Option<EventRow> = c
        .query_row(
            "SELECT seq, received_ms, event_id, severity, state, body, headers FROM events WHERE receipt_id = ?1",
            [receipt_id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()?;
    let Some((seq, received_ms, event_id, severity, state, body, headers)) = row else {
        return Ok(None);
    };
    let mut deliveries = Vec::new();
    let mut dstmt = c.prepare(
        "SELECT route, state, attempts, next_at_ms, deadline_ms, last_status, reason, updated_ms
         FROM deliveries WHERE event_seq = ?1 ORDER BY route",
    )?;
    let drows = dstmt.query_map([seq], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<u16>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })?;
    let mut astmt = c.prepare(
        "SELECT attempt, at_ms, outcome, last_status, error, steps, fuel_used, duration_ms, transform_digest
         FROM attempts WHERE event_seq = ?1 AND route = ?2 ORDER BY attempt",
    )?;
    for d in drows {
        let (route, state, attempts_made, next_at, deadline, last_status, reason, updated) = d?;
        let attempts = astmt
            .query_map(params![seq, route], |r| {
                let outcome: String = r.get(2)?;
                Ok(json!({
                    "attempt": r.get::<_, u32>(0)?,
                    "at": rfc3339_millis(r.get(1)?),
                    "outcome": serde_json::from_str::<Value>(&outcome).unwrap_or(Value::String(outcome)),
                    "last_status": r.get::<_, Option<u16>>(3)?,
                    "error": r.get::<_, Option<String>>(4)?,
                    "steps": r.get::<_, u32>(5)?,
                    "fuel_used": r.get::<_, i64>(6)?,
                    "duration_ms": r.get::<_, f64>(7)?,
                    "transform_digest": r.get::<_, String>(8)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut d = json!({
            "route": route,
            "state": state,
            "attempts_made": attempts_made,
            "last_status": last_status,
            "attempts": attempts,
        });
        if let Some(reason) = reason {
            d["reason"] = json!(reason);
        }
        match state.as_str() {
            "pending" => {
                d["next_attempt_at"] = json!(rfc3339_millis(next_at));
                d["gives_up_at"] = json!(rfc3339_millis(deadline));
            }
            "delivered" => d["delivered_at"] = json!(rfc3339_millis(updated)),
            "failed" => d["failed_at"] = json!(rfc3339_millis(updated)),
            _ => {}
        }
        deliveries.push(d);
    }
    let mut out = json!({
        "receipt_id": receipt_id,
        "received_at": rfc3339_millis(received_ms),
        "event_id": event_id.as_deref().map(|id| crate::dispatch::display_id(Some(id))),
        "severity": severity,
        "state": state,
        "deliveries": deliveries,
    });
    if with_body {
        out["headers"] = serde_json::from_str(&headers).unwrap_or(Value::Null);
        out["event"] = serde_json::from_str(&body).unwrap_or(Value::String(body));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(receipt: &str, event_id: &str, body: &str, routes: &[&str]) -> NewEvent {
        NewEvent {
            receipt_id: receipt.into(),
            received_ms: crate::time::now_millis(),
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

    fn attempt(n: u32) -> AttemptRow {
        AttemptRow {
            attempt: n,
            at_ms: crate::time::now_millis(),
            outcome: json!({"status": "done", "message": "ok"}),
            last_status: Some(202),
            error: None,
            steps: 1,
            fuel_used: 10,
            duration_ms: 1.0,
            transform_digest: "sha256:x".into(),
        }
    }

    #[tokio::test]
    async fn order_duplicates_claims_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let admit = |_: &str| Ok(());
        assert_eq!(
            store
                .insert(event("r1", "E1", "{\"a\":1}", &["pd", "jb"]), 60_000)
                .await
                .unwrap(),
            Admission::Stored
        );
        store
            .insert(event("r2", "E1", "{\"a\":2}", &["pd"]), 60_000)
            .await
            .unwrap();
        // The same body again is a duplicate of r1.
        match store
            .insert(event("r3", "E9", "{\"a\":1}", &["pd"]), 60_000)
            .await
            .unwrap()
        {
            Admission::Duplicate { receipt_id, .. } => assert_eq!(receipt_id, "r1"),
            other => panic!("{other:?}"),
        }
        let now = crate::time::now_millis();
        let (claims, _) = store.claim(now, 10, vec![], admit).await.unwrap();
        // r2 waits behind r1 on route pd; r1 goes on both routes.
        let mut got: Vec<_> = claims
            .iter()
            .map(|c| (c.receipt_id.clone(), c.route.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![("r1".into(), "jb".into()), ("r1".into(), "pd".into())]
        );
        // Nothing more until r1 is done on pd.
        let (none, _) = store.claim(now, 10, vec![], admit).await.unwrap();
        assert!(none.is_empty());
        let pd = claims.iter().find(|c| c.route == "pd").unwrap();
        store
            .finish(pd.event_seq, "pd".into(), attempt(1), Next::Delivered)
            .await
            .unwrap();
        let (next, _) = store.claim(now, 10, vec![], admit).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].receipt_id, "r2");
        // A restart makes the in-flight ones pending again.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recover().await.unwrap(), 2);
        assert_eq!(store.backlog().unwrap().open, 2);
        let rec = store.record("r1", true).unwrap().unwrap();
        assert_eq!(rec["event"]["a"], 1);
        let states: Vec<_> = rec["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["route"].as_str().unwrap(), d["state"].as_str().unwrap()))
            .collect();
        assert_eq!(states, vec![("jb", "pending"), ("pd", "delivered")]);
    }

    #[test]
    fn every_connection_fsyncs_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = store.reader();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous = FULL");
        // The writer's connection is made by the same function.
        let w = connect(&dir.path().join(FILE_NAME)).unwrap();
        let sync: i64 = w.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2);
    }

    #[tokio::test]
    async fn a_change_back_is_not_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = |r: &str| event(r, "E1", "{\"state\":\"LOCKED_OUT\"}", &["pd"]);
        assert_eq!(
            store.insert(a("r1"), 60_000).await.unwrap(),
            Admission::Stored
        );
        // A repeat of the latest is a duplicate...
        assert!(matches!(
            store.insert(a("r2"), 60_000).await.unwrap(),
            Admission::Duplicate { .. }
        ));
        // ...but after another state, the same body again is news.
        store
            .insert(
                event("r3", "E1", "{\"state\":\"ACCESS_RESTORED\"}", &["pd"]),
                60_000,
            )
            .await
            .unwrap();
        assert_eq!(
            store.insert(a("r4"), 60_000).await.unwrap(),
            Admission::Stored
        );
    }

    #[tokio::test]
    async fn a_retried_predecessor_never_runs_beside_an_in_flight_successor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .insert(event("r1", "E1", "1", &["pd"]), 0)
            .await
            .unwrap();
        store
            .insert(event("r2", "E1", "2", &["pd"]), 0)
            .await
            .unwrap();
        let now = crate::time::now_millis();
        let (c1, _) = store
            .claim(now, 10, vec![], |_: &str| Ok(()))
            .await
            .unwrap();
        assert_eq!(c1.len(), 1);
        store
            .finish(
                c1[0].event_seq,
                "pd".into(),
                attempt(1),
                Next::Failed { reason: "x".into() },
            )
            .await
            .unwrap();
        let (c2, _) = store
            .claim(now, 10, vec![], |_: &str| Ok(()))
            .await
            .unwrap();
        assert_eq!(c2[0].receipt_id, "r2");
        // r1 is re-queued while r2 is in flight: it must wait.
        let s = Arc::new(store);
        let s2 = s.clone();
        tokio::task::spawn_blocking(move || s2.retry_failed(Some("r1".into()), None, 60_000))
            .await
            .unwrap()
            .unwrap();
        let (c3, _) = s
            .claim(crate::time::now_millis() + 10, 10, vec![], |_: &str| Ok(()))
            .await
            .unwrap();
        assert!(c3.is_empty(), "{c3:?}");
        // Released (as on a stop), r2 is claimable again; a restart counts
        // the interrupted attempt.
        s.release(c2[0].event_seq, "pd".into()).await.unwrap();
        let (c4, _) = s
            .claim(crate::time::now_millis() + 10, 10, vec![], |_: &str| Ok(()))
            .await
            .unwrap();
        assert_eq!(c4.len(), 1);
        assert_eq!(s.recover().await.unwrap(), 1);
        let rec = s.record(&c4[0].receipt_id, false).unwrap().unwrap();
        // r1: its failed attempt and the interrupted one.
        assert_eq!(c4[0].receipt_id, "r1");
        assert_eq!(rec["deliveries"][0]["attempts_made"], 2);
    }

    #[tokio::test]
    async fn a_rate_limited_route_does_not_starve_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..40 {
            store
                .insert(
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
            .insert(event("b", "B", "b", &["fast"]), 0)
            .await
            .unwrap();
        let now = crate::time::now_millis();
        let (claims, wait) = store
            .claim(now, 2, vec![], |route: &str| {
                if route == "slow" {
                    Err(std::time::Duration::from_millis(500))
                } else {
                    Ok(())
                }
            })
            .await
            .unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].route, "fast");
        assert_eq!(wait, Some(std::time::Duration::from_millis(500)));
    }

    #[tokio::test]
    async fn failed_retry_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .insert(event("r1", "E1", "x", &["pd"]), 0)
            .await
            .unwrap();
        store
            .insert(event("r2", "E2", "y", &["pd"]), 0)
            .await
            .unwrap();
        let now = crate::time::now_millis();
        let (claims, _) = store
            .claim(now, 10, vec![], |_: &str| Ok(()))
            .await
            .unwrap();
        for c in claims {
            let next = if c.receipt_id == "r1" {
                Next::Failed {
                    reason: "400 bad".into(),
                }
            } else {
                Next::Delivered
            };
            store
                .finish(c.event_seq, c.route, attempt(1), next)
                .await
                .unwrap();
        }
        let failed = store.list(Some(DeliveryState::Failed), None, 10).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].reason.as_deref(), Some("400 bad"));
        // Purge spares the failed one.
        let store = Arc::new(store);
        let s = store.clone();
        let purged = tokio::task::spawn_blocking(move || {
            s.purge_delivered_before(crate::time::now_millis() + 1000)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(purged, 1);
        assert!(store.record("r2", false).unwrap().is_none());
        let s = store.clone();
        let retried =
            tokio::task::spawn_blocking(move || s.retry_failed(Some("r1".into()), None, 1000))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(retried, vec![("r1".to_string(), "pd".to_string())]);
        assert_eq!(store.backlog().unwrap().open, 1);
    }
}
