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
//!
//! The store's files are watched ([`Watch`]): after each commit (and every
//! second when idle) the database, its WAL and its SHM must still be the
//! files opened at start.  A file deleted or replaced under the service
//! means commits go to a file no restart will see; the batch is then
//! answered with [`StoreError::Lost`] instead of success, and so is every
//! later write: nothing more is acknowledged.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::queue::Queue;
use crate::store::StoreError;
use crate::time::stage_cpu::{self, Stage};

/// How a batch ended, shared by the replies of every job in it.
type CommitResult = Result<(), BatchError>;

/// Why a batch did not commit (or must not be acknowledged).
#[derive(Clone)]
enum BatchError {
    /// SQLite failed it.
    Sqlite(Arc<rusqlite::Error>),
    /// The store's files are gone or replaced: see [`Watch`].
    Lost(Arc<str>),
}

/// Set once the store's files are found deleted or replaced.
pub(super) type Lost = Arc<OnceLock<String>>;
/// What to tell a job's caller once its batch has committed or failed.
type Reply = Box<dyn FnOnce(CommitResult) + Send>;
/// A write: runs on the writer thread inside the batch's transaction
/// (`None` when the transaction could not begin) and returns its reply.
type Work = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// A write and the stage its CPU is counted in (the bench's budget).
struct Job {
    /// The write.
    work: Work,
    /// Where its CPU goes in the stage budget, if anywhere; also tells
    /// whether its commit may wait ([`Job::can_wait`]).
    stage: Option<Stage>,
}

impl Job {
    /// An in-flight mark or an attempt's record: no webhook waits on it,
    /// so its commit may wait [`LAZY_WAIT`] for one that does.
    fn can_wait(&self) -> bool {
        matches!(self.stage, Some(Stage::StoreClaim | Stage::StoreFinish))
    }
}

/// How long a batch of jobs that can wait is held open for an admit.
const LAZY_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

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
    /// A read-only store has no thread: writes are refused as such.
    read_only: bool,
}

impl Writer {
    /// Starts the writer thread on `conn`; `queue` is turned off when
    /// another connection changes the database.
    /// `path` is the database file, watched with its WAL and SHM; `lost`
    /// is set when they are found deleted or replaced.
    pub(super) fn start(
        conn: Connection,
        queue: Arc<Queue>,
        path: &Path,
        lost: Lost,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let watch = Watch::new(path);
        let thread = std::thread::Builder::new()
            .name("ztbridge-store".into())
            .spawn(move || writer_loop(conn, rx, &queue, watch, &lost))
            .map_err(|e| StoreError::io("cannot start the store writer thread", e))?;
        Ok(Writer {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            read_only: false,
        })
    }

    /// No writer: every write answers [`StoreError::ReadOnly`].
    pub(super) fn read_only() -> Writer {
        Writer {
            jobs: Mutex::new(None),
            thread: Mutex::new(None),
            read_only: true,
        }
    }

    /// What a write that found no writer answers.
    fn gone(&self) -> StoreError {
        if self.read_only {
            StoreError::ReadOnly
        } else {
            StoreError::WriterGone
        }
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
                    Err(BatchError::Sqlite(e)) => Err(StoreError::Commit {
                        source: Box::new(SharedError(e)),
                    }),
                    Err(BatchError::Lost(why)) => Err(StoreError::Lost(why.to_string())),
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
            .unwrap_or_else(|_| Err(self.gone()))
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
            .unwrap_or_else(|_| Err(self.gone()))
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

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    queue: &Queue,
    mut watch: Watch,
    lost: &OnceLock<String>,
) {
    let mut data_version = read_data_version(&conn);
    loop {
        // Idle, the writer still looks for other connections' changes
        // every second (claims from memory would not see them), and at
        // its files (readiness must not wait for a webhook to fail).
        let first = match rx.recv_timeout(IDLE_CHECK) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now_version = read_data_version(&conn);
                if now_version != data_version {
                    data_version = now_version;
                    queue.turn_off();
                }
                if lost.get().is_none() {
                    let _ = watch.check(lost, queue);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut jobs = vec![first];
        take_queued(&rx, &mut jobs);
        // Nobody waits on this batch but attempts and claims: give it a
        // moment to be joined by a webhook's admit, whose commit it then
        // rides (one fsync and one write of the hot pages, not two).
        if jobs.iter().all(Job::can_wait) {
            let until = std::time::Instant::now() + LAZY_WAIT;
            while jobs.len() < MAX_BATCH {
                let left = until.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        let urgent = !job.can_wait();
                        jobs.push(job);
                        if urgent {
                            take_queued(&rx, &mut jobs);
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        // Lost: nothing runs, nothing is acknowledged.
        if let Some(why) = lost.get() {
            let why: Arc<str> = Arc::from(why.as_str());
            for job in jobs {
                (job.work)(None)(Err(BatchError::Lost(why.clone())));
            }
            continue;
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
        match run(&conn, "BEGIN IMMEDIATE") {
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
                let mut commit: CommitResult = if conn.is_autocommit() {
                    Err(BatchError::Sqlite(rolled_back()))
                } else {
                    run(&conn, "COMMIT").map_err(|e| BatchError::Sqlite(Arc::new(e)))
                };
                if commit.is_err() && !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                if let Err(BatchError::Sqlite(e)) = &commit {
                    tracing::error!("event store: commit failed: {e}");
                    queue.turn_off();
                }
                // Committed to files a restart would not find: not an
                // acknowledgement.
                if commit.is_ok()
                    && let Err(why) = watch.check(lost, queue)
                {
                    commit = Err(BatchError::Lost(why));
                }
                for reply in replies {
                    reply(commit.clone());
                }
            }
            Err(e) => {
                tracing::error!("event store: cannot begin a transaction: {e}");
                let e = BatchError::Sqlite(Arc::new(e));
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

/// Adds the jobs already queued to `jobs`, up to [`MAX_BATCH`].
fn take_queued(rx: &mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
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
    run(conn, "SAVEPOINT job")?;
    let result = f(conn);
    match &result {
        Ok(_) => run(conn, "RELEASE job")?,
        Err(_) => {
            run(conn, "ROLLBACK TO job")?;
            run(conn, "RELEASE job")?;
        }
    }
    result
}

/// Runs one statement of transaction control, prepared once per
/// connection (a batch runs several per job: parsing them each time was a
/// visible share of the writer's CPU).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The identity (device, inode) of the store's files as opened: the
/// database, its WAL and its SHM.  SQLite keeps writing to an open file
/// that was unlinked, and a file put in its place is another database: in
/// both cases what is committed would be gone at the next start.
pub(super) struct Watch {
    /// Each file's path and its identity when first seen (`None`: not
    /// seen yet; the WAL and SHM appear with the first write).
    files: Vec<(PathBuf, Option<(u64, u64)>)>,
}

impl Watch {
    pub(super) fn new(db: &Path) -> Watch {
        let with = |suffix: &str| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let files = [db.to_path_buf(), with("-wal"), with("-shm")]
            .into_iter()
            .map(|p| {
                let id = identity(&p).ok();
                (p, id)
            })
            .collect();
        Watch { files }
    }

    /// Err (and `lost` set, the queue turned off, a loud log line) when a
    /// file seen before is gone or is another file now.
    fn check(&mut self, lost: &OnceLock<String>, queue: &Queue) -> Result<(), Arc<str>> {
        for (path, seen) in &mut self.files {
            let now = identity(path);
            let why = match (*seen, now) {
                (None, Ok(id)) => {
                    *seen = Some(id);
                    continue;
                }
                (None, Err(_)) => continue,
                (Some(was), Ok(id)) if was == id => continue,
                (Some(_), Ok(_)) => format!("{} was replaced by another file", path.display()),
                (Some(_), Err(e)) => format!("{} was removed ({e})", path.display()),
            };
            let why = format!(
                "{why} while the service was using it: webhooks are refused from now on (503 store_lost); \
                 restore the file or restart the service (acknowledged events since the loss may be gone)"
            );
            tracing::error!("EVENT STORE LOST: {why}");
            queue.turn_off();
            let _ = lost.set(why.clone());
            return Err(Arc::from(lost.get().map(String::as_str).unwrap_or(&why)));
        }
        Ok(())
    }
}

/// A file's (device, inode), through `stat` on its path.
fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::stat(path).map_err(std::io::Error::from)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}
