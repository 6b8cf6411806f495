//! The writer thread: owns the write connection and commits whatever is
//! queued in one transaction (group commit).  Under a burst many webhooks
//! share one fsync, and none is answered before the commit that holds it
//! has returned.  Each job runs in its own savepoint, so one job's failure
//! undoes only its own writes.
//!
//! A job may carry a hook that runs on this thread right after its batch
//! committed (or failed), before the next batch begins: that is where the
//! in-memory queue learns what became true, in commit order.  Jobs can
//! also be sent without waiting for them (the in-flight marks of claims
//! served from memory).  Before each batch the writer asks SQLite whether
//! another connection changed the database (`PRAGMA data_version`); if so
//! the queue's index no longer tells the whole truth and is turned off.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::queue::Queue;
use crate::store::StoreError;
use crate::time::stage_cpu::{self, Stage};

/// How a batch ended, shared by the replies of every job in it.
type CommitResult = Result<(), Arc<rusqlite::Error>>;
/// What to tell a job's caller once its batch has committed or failed.
type Reply = Box<dyn FnOnce(CommitResult) + Send>;
/// A write: runs on the writer thread inside the batch's transaction
/// (`None` when the transaction could not begin) and returns its reply.
type Work = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// A write and the stage its CPU is counted in (the bench's budget).
struct Job {
    /// The write.
    work: Work,
    /// Where its CPU goes in the stage budget, if anywhere.
    stage: Option<Stage>,
}

/// Most writes committed together.
const MAX_BATCH: usize = 512;

/// How often an idle writer checks for other connections' changes.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The queue of the writer thread.
pub(super) struct Writer {
    /// Jobs for the thread; it stops when this is dropped (`None` once
    /// dropped).
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// The thread, joined on drop so that every job sent (in-flight marks
    /// included) is committed before the store is gone.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`; `queue` is turned off when
    /// another connection changes the database.
    pub(super) fn start(conn: Connection, queue: Arc<Queue>) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("ztbridge-store".into())
            .spawn(move || writer_loop(conn, rx, &queue))
            .map_err(|e| StoreError::io("cannot start the store writer thread", e))?;
        Ok(Writer {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `f`; `then` runs on the writer thread once the batch is
    /// over, with the job's result and whether the batch committed.
    fn submit<T: Send + 'static>(
        &self,
        stage: Option<Stage>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        then: impl FnOnce(&Result<T, StoreError>, bool) + Send + 'static,
    ) -> oneshot::Receiver<Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let work: Work = Box::new(move |conn: Option<&Connection>| -> Reply {
            let result = match conn {
                None => Err(StoreError::Commit {
                    source: "could not begin a transaction".into(),
                }),
                Some(conn) => in_savepoint(conn, f),
            };
            Box::new(move |commit: CommitResult| {
                then(&result, commit.is_ok());
                let result = match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Commit {
                        source: Box::new(SharedError(e)),
                    }),
                };
                let _ = tx.send(result);
            })
        });
        // A send error drops the job and with it `tx`: the receiver then
        // reports WriterGone.
        if let Some(jobs) = &*self.jobs.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = jobs.send(Job { work, stage });
        }
        rx
    }

    /// Runs `f` in the writer's next batch; returns once that batch is
    /// committed (fsync'd).
    pub(super) async fn write<T: Send + 'static>(
        &self,
        stage: Option<Stage>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(stage, f, |_, _| {})
            .await
            .unwrap_or(Err(StoreError::WriterGone))
    }

    /// `write`, with `then` run on the writer thread after the batch (see
    /// [`Writer::submit`]).
    pub(super) async fn write_then<T: Send + 'static>(
        &self,
        stage: Option<Stage>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        then: impl FnOnce(&Result<T, StoreError>, bool) + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(stage, f, then)
            .await
            .unwrap_or(Err(StoreError::WriterGone))
    }

    /// Queues `f` without waiting for it; a failure is logged.
    pub(super) fn send(
        &self,
        stage: Option<Stage>,
        f: impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    ) {
        drop(self.submit(stage, f, |result, committed| {
            if let Err(e) = result {
                tracing::error!("event store: {}", crate::text::error_chain(e));
            } else if !committed {
                tracing::error!("event store: a background write was not committed");
            }
        }));
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

/// A commit error shared by every job of a batch.
#[derive(Debug)]
struct SharedError(Arc<rusqlite::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, queue: &Queue) {
    let mut data_version = read_data_version(&conn);
    loop {
        // Idle, the writer still looks for other connections' changes
        // every second: claims from memory would not see them.
        let first = match rx.recv_timeout(IDLE_CHECK) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now_version = read_data_version(&conn);
                if now_version != data_version {
                    data_version = now_version;
                    queue.turn_off();
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let measuring = stage_cpu::enabled();
        let t0 = if measuring {
            stage_cpu::thread_cpu_ns()
        } else {
            0
        };
        // Another connection (the CLI's `events retry`, `purge`) changed
        // the database: the in-memory index may be wrong.
        let now_version = read_data_version(&conn);
        if now_version != data_version {
            data_version = now_version;
            queue.turn_off();
        }
        // A transaction left open by an earlier failure would make every
        // BEGIN fail from now on.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let mut own = 0u64;
        let stages: Vec<Option<Stage>> = jobs.iter().map(|j| j.stage).collect();
        let mut job_cpu: Vec<u64> = Vec::new();
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let j0 = if measuring {
                        stage_cpu::thread_cpu_ns()
                    } else {
                        0
                    };
                    // SQLite may roll the whole transaction back on its own
                    // (disk full, I/O error): later jobs must not run
                    // outside it, where they would commit unreported.
                    if conn.is_autocommit() {
                        replies.push((job.work)(None));
                    } else {
                        replies.push((job.work)(Some(&conn)));
                    }
                    if measuring {
                        let ns = stage_cpu::thread_cpu_ns().saturating_sub(j0);
                        own += ns;
                        job_cpu.push(ns);
                    }
                }
                let commit: CommitResult = if conn.is_autocommit() {
                    Err(rolled_back())
                } else {
                    conn.execute_batch("COMMIT").map_err(Arc::new)
                };
                if commit.is_err() && !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                if let Err(e) = &commit {
                    tracing::error!("event store: commit failed: {e}");
                    queue.turn_off();
                }
                for reply in replies {
                    reply(commit.clone());
                }
            }
            Err(e) => {
                tracing::error!("event store: cannot begin a transaction: {e}");
                let e = Arc::new(e);
                for job in jobs {
                    (job.work)(None)(Err(e.clone()));
                }
            }
        }
        if measuring {
            // Each job's own CPU, and an equal share of the batch's (begin,
            // commit and fsync, the replies).
            let batch = stage_cpu::thread_cpu_ns().saturating_sub(t0);
            let share = batch.saturating_sub(own) / stages.len().max(1) as u64;
            for (i, stage) in stages.iter().enumerate() {
                if let Some(stage) = stage {
                    stage_cpu::add(*stage, job_cpu.get(i).copied().unwrap_or(0) + share);
                }
            }
        }
    }
}

/// SQLite's count of commits by other connections (0 when unreadable).
fn read_data_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .unwrap_or(0)
}

/// The error of a batch SQLite rolled back on its own.
fn rolled_back() -> Arc<rusqlite::Error> {
    Arc::new(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some("the transaction was rolled back (disk full or I/O error?)".into()),
    ))
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
