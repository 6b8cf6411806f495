//! Why a store operation failed, with the backend's error as the source.

/// A store failure.  Each variant keeps the underlying error as its
/// `source`, so logs and records show the whole cause chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("event store ({backend}): {context}")]
    Backend {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What was being done.
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file of the data directory could not be read or written.
    #[error("event store: {context}")]
    Io {
        /// What was being done, with the path.
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The commit that held this write failed (disk full, I/O error...).
    #[error("event store: the commit failed")]
    Commit {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The schema is newer than this binary, or cannot be migrated.
    #[error("event store: {0}")]
    Schema(String),
    /// Another process holds what this one needs (the data directory).
    #[error("event store: {0}")]
    Busy(String),
    /// Nothing at the configured place (the CLI on a missing store).
    #[error("event store: {0}")]
    NotFound(String),
    /// A file of the store was deleted or replaced while in use: what is
    /// committed now would not survive a restart, so nothing is
    /// acknowledged any more (until a restart opens the store again).
    #[error("event store lost: {0}")]
    Lost(String),
    /// The store was opened read-only (`events list`, `events show`).
    #[error("event store: opened read-only, cannot write")]
    ReadOnly,
    /// The writer (or the connection pool) has stopped.
    #[error("event store: the writer has stopped")]
    WriterGone,
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}
