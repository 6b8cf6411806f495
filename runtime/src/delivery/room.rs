//! Back-pressure: whether another webhook may be accepted now.  Past
//! `max_pending` open deliveries, or under `min_free_disk_mb` free in the
//! data directory, or with the store's files lost, `/webhook` answers 503
//! instead of accepting what it cannot keep.  `/readyz` asks the same
//! question ([`super::Dispatcher::room`]), so the two cannot disagree: free
//! space is read when asked (one `statvfs`), not by a periodic task.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why no more webhooks can be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `max_pending` open deliveries.
    Backlog,
    /// Less than `min_free_disk_mb` free in the data directory.
    Disk,
    /// The store's files were deleted or replaced (see `Store::lost`).
    StoreLost,
}

/// The counts back-pressure is decided on.
pub(super) struct Room {
    /// Open deliveries (pending or in flight): counted on admit and
    /// settle, re-read from the store every few seconds (the CLI may
    /// re-queue behind the service's back).
    open: AtomicU64,
    /// Past this many open deliveries, refuse.
    max_open: u64,
    /// Whether the data directory had `min_free_disk_mb` free when last
    /// asked (to log changes once).
    disk_ok: AtomicBool,
    /// The directory whose free space is checked, and the bytes it must
    /// keep free (`None`: a remote store).
    disk: Option<(PathBuf, u64)>,
}

impl Room {
    pub(super) fn new(max_open: u64, disk: Option<(PathBuf, u64)>) -> Room {
        Room {
            open: AtomicU64::new(0),
            max_open,
            disk_ok: AtomicBool::new(true),
            disk,
        }
    }

    /// Whether another webhook may be accepted.
    pub(super) fn check(&self) -> Result<(), Full> {
        if !self.disk_has_room() {
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

    /// Free space now (a `statvfs`, microseconds); a change is logged
    /// once.  Unreadable: assumed fine (the commit will tell).
    fn disk_has_room(&self) -> bool {
        let Some((dir, min_free)) = &self.disk else {
            return true;
        };
        let Ok(st) = rustix::fs::statvfs(dir) else {
            return true;
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let ok = free >= *min_free;
        if self.disk_ok.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(
                    free_mb = free >> 20,
                    "free disk space is back: accepting webhooks"
                );
            } else {
                tracing::error!(
                    free_mb = free >> 20,
                    min_free_mb = min_free >> 20,
                    "data directory is short of disk space: webhooks are refused with 503 (delivery.min_free_disk_mb)"
                );
            }
        }
        ok
    }
}
