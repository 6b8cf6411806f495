//! The writer thread: owns the write connection and commits whatever is
//! queued in one transaction (group commit).  Under a burst many webhooks
//! share one fsync, and none is answered before the commit that holds it
//! has returned.  Each job runs in its own savepoint, so one job's failure
//! undoes only its own writes.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::StoreError;

/// How a batch ended, shared by the replies of every job in it.
type CommitResult = Result<(), Arc<rusqlite::Error>>;
/// What to tell a job's caller once its batch has committed or failed.
type Reply = Box<dyn FnOnce(CommitResult) + Send>;
/// A write: runs on the writer thread inside the batch's transaction
/// (`None` when the transaction could not begin) and returns its reply.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// Most writes committed together.
const MAX_BATCH: usize = 512;

/// The queue of the writer thread.
pub(super) struct Writer {
    /// Jobs for the thread; it stops when this is dropped.
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ztbridge-store".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::io("cannot start the store writer thread", e))?;
        Ok(Writer {
            jobs: Mutex::new(tx),
        })
    }

    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> oneshot::Receiver<Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>| -> Reply {
            let result = match conn {
                None => Err(StoreError::Commit {
                    source: "could not begin a transaction".into(),
                }),
                Some(conn) => in_savepoint(conn, f),
            };
            Box::new(move |commit: CommitResult| {
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
        let _ = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        rx
    }

    /// Runs `f` in the writer's next batch; returns once that batch is
    /// committed (fsync'd).
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f).await.unwrap_or(Err(StoreError::WriterGone))
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
                }
                for reply in replies {
                    reply(commit.clone());
                }
            }
            Err(e) => {
                tracing::error!("event store: cannot begin a transaction: {e}");
                let e = Arc::new(e);
                for job in jobs {
                    job(None)(Err(e.clone()));
                }
            }
        }
    }
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
