//! Back-pressure: whether another webhook may be accepted now.  Past
//! `max_pending` open deliveries, or under `min_free_disk_mb` free in the
//! data directory, `/webhook` answers 503 instead of accepting what it
//! cannot keep.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why no more webhooks can be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `max_pending` open deliveries.
    Backlog,
    /// Less than `min_free_disk_mb` free in the data directory.
    Disk,
}

/// The counts back-pressure is decided on.
pub(super) struct Room {
    /// Open deliveries (pending or in flight): counted on admit and
    /// settle, re-read from the store every few seconds (the CLI may
    /// re-queue behind the service's back).
    open: AtomicU64,
    /// Past this many open deliveries, refuse.
    max_open: u64,
    /// Whether the data directory has `min_free_disk_mb` free.
    disk_ok: AtomicBool,
}

impl Room {
    pub(super) fn new(max_open: u64) -> Room {
        Room {
            open: AtomicU64::new(0),
            max_open,
            disk_ok: AtomicBool::new(true),
        }
    }

    /// Whether another webhook may be accepted.
    pub(super) fn check(&self) -> Result<(), Full> {
        if !self.disk_ok.load(Ordering::Relaxed) {
            return Err(Full::Disk);
        }
        if self.open.load(Ordering::Relaxed) >= self.max_open {
            return Err(Full::Backlog);
        }
        Ok(())
    }

    /// `n` deliveries were admitted.
    pub(super) fn opened(&self, n: u64) {
        self.open.fetch_add(n, Ordering::Relaxed);
    }

    /// A delivery settled (delivered or dead-lettered).
    pub(super) fn settled(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// The store's count, which wins over ours.
    pub(super) fn recount(&self, open: u64) {
        self.open.store(open, Ordering::Relaxed);
    }

    /// Open deliveries, as last counted.
    pub(super) fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Records the disk check; returns whether it changed.
    pub(super) fn set_disk_ok(&self, ok: bool) -> bool {
        self.disk_ok.swap(ok, Ordering::Relaxed) != ok
    }
}
