//! The embedded backend: SQLite in `<data_dir>/events.sqlite3` (events,
//! deliveries, attempts) and `<data_dir>/state.sqlite3` (transform state).
//!
//! Why SQLite (through rusqlite, bundled): one file, no server to run, WAL
//! with `synchronous = FULL` gives an fsync per commit, and other processes
//! may read and write the same file while the service runs, which the
//! `ztbridge events` commands rely on (redb and sled hold an exclusive
//! lock on their file).
//!
//! Writes go through one writer thread ([`writer`]) that commits whatever
//! is queued in one transaction; reads use their own connection.  One
//! `serve` owns a data directory (`serve.lock`); rate limits are kept in
//! memory ([`rate`]), whole in that one process, and so is the work queue
//! ([`queue`]): the database is the journal, claims are served from an
//! index of the open deliveries, bounded, rebuilt from the database when
//! it cannot be trusted.

mod deliveries;
mod queue;
mod rate;
mod schema;
mod state;
mod views;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::store::{
    Admission, AttemptPoint, AttemptRecord, Backlog, ClaimBatch, ClaimScope, DeliveryKey,
    DeliveryState, EventRecord, ListFilter, ListRow, NewEvent, Next, RateLimit, RetrySelection,
    RouteCount, Store, StoreError, TransformState,
};
use crate::time::now_millis;
use crate::time::stage_cpu::Stage;
use queue::Queue;
pub(crate) use state::SqliteState;

/// File name of the event store inside the data directory.
pub(crate) const FILE_NAME: &str = "events.sqlite3";

/// The SQLite store.  Cheap to share behind an `Arc`.
pub struct SqliteStore {
    /// The database file (messages, the lock file's place).
    path: PathBuf,
    /// The writer thread, which owns the write connection.
    writer: writer::Writer,
    /// Reads (the API, the CLI, the scheduler's timers).
    reader: Arc<Mutex<Connection>>,
    /// Transform state (`state.sqlite3`).
    state: Arc<dyn TransformState>,
    /// Rate-limit state (this process owns the store).
    rates: Arc<rate::RateLimiters>,
    /// The work queue: open deliveries in memory, claimed without a query.
    queue: Arc<Queue>,
    /// `serve.lock`, held from `start` on: one service per directory.
    lock: Mutex<Option<std::fs::File>>,
    /// Set by the writer when the store's files were deleted or replaced
    /// under it ([`Store::lost`]).
    lost: writer::Lost,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend {
            backend: "sqlite",
            context: "statement failed".into(),
            source: Box::new(e),
        }
    }
}

impl ToSql for DeliveryState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for DeliveryState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        DeliveryState::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("unknown delivery state {s:?}").into()))
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // An fsync on every commit: a 2xx is only sent after one.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer runs each job of a batch in a savepoint, whose journal
    // went to a temporary file once past 64 KiB: a write syscall per page
    // on the hot path.  In memory it is bounded by one batch's pages.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating, migrating) `dir/events.sqlite3` and
    /// `dir/state.sqlite3`.
    pub(crate) fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(dir, Queue::default())
    }

    /// `open`, with the given work queue (tests give it small caps).
    fn open_with(dir: &Path, queue: Queue) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(FILE_NAME);
        let mut write = connect(&path)?;
        schema::migrate(&mut write, &path.display().to_string())?;
        let reader = connect(&path)?;
        let state = SqliteState::open(dir).map_err(|e| StoreError::Backend {
            backend: "sqlite",
            context: format!("{}: transform state", dir.display()),
            source: Box::new(e),
        })?;
        let queue = Arc::new(queue);
        let lost = writer::Lost::default();
        Ok(SqliteStore {
            writer: writer::Writer::start(write, queue.clone(), &path, lost.clone())?,
            lost,
            path,
            reader: Arc::new(Mutex::new(reader)),
            state: Arc::new(state),
            rates: Arc::default(),
            queue,
            lock: Mutex::new(None),
        })
    }

    /// Opens an existing store (the CLI): a clear error when there is none.
    pub fn open_existing(dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "no event store at {} (is the data directory right? see --data-dir / data_dir)",
                path.display()
            )));
        }
        SqliteStore::open(dir)
    }

    /// Opens an existing store for reading only (`events list`, `events
    /// show`): one connection opened with `SQLITE_OPEN_READ_ONLY`, no
    /// writer, no migration, no transform state; it works while the
    /// service runs (WAL readers do not block the writer) and can change
    /// nothing.  Writes answer [`StoreError::ReadOnly`].
    pub fn open_read_only(dir: &Path) -> Result<SqliteStore, StoreError> {
        use rusqlite::OpenFlags;
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "no event store at {} (is the data directory right? see --data-dir / data_dir)",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::check_current(&conn, &path.display().to_string())?;
        Ok(SqliteStore {
            writer: writer::Writer::read_only(),
            lost: writer::Lost::default(),
            reader: Arc::new(Mutex::new(conn)),
            state: Arc::new(crate::store::MemoryState::default()),
            rates: Arc::default(),
            queue: Arc::new(Queue::default()),
            lock: Mutex::new(None),
            path,
        })
    }

    /// Runs `f` on the reader connection, off the async workers.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Takes the data directory for this process alone (`serve`): a second
    /// service on the same directory would re-run the first one's attempts.
    fn lock_exclusive(&self) -> Result<std::fs::File, StoreError> {
        let path = self.path.with_file_name("serve.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("cannot open {}", path.display()), e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                StoreError::Busy(format!(
                    "another `ztbridge serve` is using this data directory ({} is locked)",
                    path.display()
                ))
            },
        )?;
        Ok(file)
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    async fn admit(&self, event: NewEvent, dedupe_window_ms: i64) -> Result<Admission, StoreError> {
        let queue = self.queue.clone();
        self.writer
            .write_then(
                Some(Stage::StoreAdmit),
                move |c| deliveries::admit(c, &event, dedupe_window_ms),
                move |result, committed| {
                    if let (Ok((_, open)), true) = (result, committed) {
                        queue.admitted(open.clone());
                    }
                },
            )
            .await
            .map(|(admission, _)| admission)
    }

    async fn start(&self) -> Result<usize, StoreError> {
        let lock = self.lock_exclusive()?;
        *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(lock);
        let now = now_millis();
        let (queue, rebuild) = (self.queue.clone(), self.queue.clone());
        self.writer
            .write_then(
                None,
                move |c| {
                    queue.turn_off();
                    let resumed = deliveries::recover(c, now)?;
                    Ok((resumed, deliveries::load_open(c, queue.rebuild_at())?))
                },
                move |result, committed| {
                    if let (Ok((_, Some(open))), true) = (result, committed) {
                        rebuild.rebuild(open.clone());
                    }
                },
            )
            .await
            .map(|(resumed, _)| resumed)
    }

    fn set_rate_limits(&self, limits: Vec<(String, RateLimit)>) {
        self.rates.set(limits);
    }

    async fn claim_within(
        &self,
        now_ms: i64,
        max: usize,
        scope: &ClaimScope,
    ) -> Result<ClaimBatch, StoreError> {
        if let Some(batch) = self.queue.claim(now_ms, max, scope, &self.rates) {
            if !batch.claims.is_empty() {
                let keys: Vec<DeliveryKey> = batch.claims.iter().map(|c| c.key.clone()).collect();
                self.writer.send(Some(Stage::StoreClaim), move |c| {
                    deliveries::mark_in_flight(c, &keys, now_ms)
                });
            }
            return Ok(batch);
        }
        // The index is off: the SQL path, and a rebuild once the backlog
        // is small enough (counted at most once a second).
        let (scope, rates, queue, after) = (
            scope.clone(),
            self.rates.clone(),
            self.queue.clone(),
            self.queue.clone(),
        );
        self.writer
            .write_then(
                Some(Stage::StoreClaim),
                move |c| {
                    let batch = deliveries::claim(c, now_ms, max, &scope, &rates, &queue)?;
                    let open = if batch.claims.len() < max && queue.rebuild_check_due(now_ms) {
                        deliveries::load_open(c, queue.rebuild_at())?
                    } else {
                        None
                    };
                    Ok((batch, open))
                },
                move |result, committed| match (result, committed) {
                    (Ok((_, Some(open))), true) => {
                        after.rebuild(open.clone());
                    }
                    (Ok((batch, _)), false) => {
                        let keys: Vec<DeliveryKey> =
                            batch.claims.iter().map(|c| c.key.clone()).collect();
                        after.released(&keys);
                    }
                    _ => {}
                },
            )
            .await
            .map(|(batch, _)| batch)
    }

    async fn release(&self, keys: Vec<DeliveryKey>) -> Result<(), StoreError> {
        let queue = self.queue.clone();
        let released = keys.clone();
        self.writer
            .write_then(
                None,
                move |c| deliveries::release(c, &keys),
                move |result, committed| {
                    if result.is_ok() && committed {
                        queue.released(&released);
                    }
                },
            )
            .await
    }

    async fn hold(&self, key: DeliveryKey, reason: String) -> Result<(), StoreError> {
        let queue = self.queue.clone();
        let released = vec![key.clone()];
        self.writer
            .write_then(
                None,
                move |c| deliveries::hold(c, &key, &reason),
                move |result, committed| {
                    if result.is_ok() && committed {
                        queue.released(&released);
                    }
                },
            )
            .await
    }

    async fn finish(
        &self,
        key: DeliveryKey,
        attempt: AttemptRecord,
        next: Next,
    ) -> Result<(), StoreError> {
        let now = now_millis();
        let queue = self.queue.clone();
        let (done_key, done_next) = (key.clone(), next.clone());
        self.writer
            .write_then(
                Some(Stage::StoreFinish),
                move |c| deliveries::finish(c, &key, &attempt, &next, now),
                move |result, committed| {
                    if result.is_ok() && committed {
                        queue.finished(&done_key, &done_next);
                    }
                },
            )
            .await
    }

    async fn next_retry_ms(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        if let Some(next) = self.queue.next_retry_ms(now_ms) {
            return Ok(next);
        }
        self.read(move |c| views::next_retry_ms(c, now_ms)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let now = now_millis();
        self.writer
            .write(None, move |c| {
                c.execute("UPDATE health SET at_ms = ?1 WHERE id = 1", [now])?;
                Ok(())
            })
            .await
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        self.read(views::backlog).await
    }

    async fn open_by_route(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(views::open_by_route).await
    }

    async fn record(
        &self,
        receipt_id: &str,
        with_body: bool,
    ) -> Result<Option<EventRecord>, StoreError> {
        let id = receipt_id.to_string();
        self.read(move |c| views::record(c, &id, with_body)).await
    }

    async fn receipts_for_event_id(&self, event_id: &str) -> Result<Vec<String>, StoreError> {
        let id = event_id.to_string();
        self.read(move |c| views::receipts_for_event_id(c, &id))
            .await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<ListRow>, StoreError> {
        self.read(move |c| views::list(c, &filter)).await
    }

    async fn count(&self, filter: ListFilter) -> Result<u64, StoreError> {
        self.read(move |c| views::count(c, &filter)).await
    }

    async fn route_counts(&self) -> Result<Vec<RouteCount>, StoreError> {
        self.read(views::route_counts).await
    }

    async fn attempts_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttemptPoint>, StoreError> {
        self.read(move |c| views::attempts_since(c, since_ms, limit))
            .await
    }

    async fn requeue(
        &self,
        receipt_id: &str,
        route: Option<&str>,
        horizon_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let now = now_millis();
        let queue = self.queue.clone();
        let (id, route) = (receipt_id.to_string(), route.map(str::to_string));
        self.writer
            .write(None, move |c| {
                // Re-opened deliveries are not in the index: it is rebuilt.
                queue.turn_off();
                deliveries::requeue(c, &id, route.as_deref(), now, horizon_ms)
            })
            .await
    }

    async fn skip(&self, receipt_id: &str, route: &str, reason: &str) -> Result<bool, StoreError> {
        let now = now_millis();
        let queue = self.queue.clone();
        let (id, route, reason) = (
            receipt_id.to_string(),
            route.to_string(),
            reason.to_string(),
        );
        self.writer
            .write(None, move |c| {
                // A closed delivery leaves the index: it is rebuilt.
                queue.turn_off();
                deliveries::skip(c, &id, &route, &reason, now)
            })
            .await
    }

    async fn set_paused(&self, route: &str, paused: bool) -> Result<(), StoreError> {
        let now = now_millis();
        let route = route.to_string();
        self.writer
            .write(None, move |c| {
                deliveries::set_paused(c, &route, paused, now)
            })
            .await
    }

    async fn paused_routes(&self) -> Result<Vec<String>, StoreError> {
        self.read(views::paused_routes).await
    }

    async fn retry_failed(
        &self,
        selection: RetrySelection,
        horizon_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let now = now_millis();
        let queue = self.queue.clone();
        self.writer
            .write(None, move |c| {
                // Re-opened deliveries are not in the index: it is rebuilt.
                queue.turn_off();
                deliveries::retry_failed(c, &selection, now, horizon_ms)
            })
            .await
    }

    async fn purge_delivered_before(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .writer
                .write(None, move |c| deliveries::purge(c, before_ms))
                .await?;
            total += n;
            if n < deliveries::PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    fn transform_state(&self) -> Arc<dyn TransformState> {
        self.state.clone()
    }

    fn lost(&self) -> Option<String> {
        self.lost.get().cloned()
    }
}

#[cfg(test)]
mod tests;
