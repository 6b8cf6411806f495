//! The allocator: mimalloc, for Rust's allocations and for SQLite's.
//!
//! Why: the packages ship the static musl build, and musl's allocator
//! (mallocng) maps and unmaps memory for medium sizes as their groups fill
//! and empty: about one `mmap` + `munmap` pair per event in a storm, each
//! `munmap` a TLB shootdown across the cores.  That build delivered about
//! 40 % fewer events/s than the glibc one on the same machine.  With
//! mimalloc the two builds allocate alike, and the glibc build spends less
//! CPU per event too (figures: README, Benchmarks, Throughput).
//!
//! SQLite is a C library and calls `malloc` itself: left on musl's, its
//! statement journal (a savepoint per store job) mapped and unmapped a
//! group for nearly every job once Rust's allocations had moved away
//! (8.7 pairs per event).  [`sqlite`] hands it mimalloc before the first
//! connection opens, and turns SQLite's memory statistics off: with them
//! on, each of its `malloc`s and `free`s takes a process-wide mutex, and
//! the statement journal of every job's savepoint allocates for each page
//! it records (nothing in ztbridge reads those statistics).

use std::ffi::{c_int, c_void};

use libmimalloc_sys as mi;
use rusqlite::ffi;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives SQLite mimalloc for its allocations and turns its memory
/// statistics off.  Call before any SQLite connection opens (SQLite takes
/// these settings only before it initializes; later it refuses them with
/// `SQLITE_MISUSE`, said on stderr, and keeps its defaults).
pub fn sqlite() {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(sqlite_malloc),
        xFree: Some(sqlite_free),
        xRealloc: Some(sqlite_realloc),
        xSize: Some(sqlite_size),
        xRoundup: Some(sqlite_roundup),
        xInit: Some(sqlite_init),
        xShutdown: Some(sqlite_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to a
    // sqlite3_mem_methods, which SQLite copies (so a local will do); the functions below keep
    // its contract (sizes are never negative: SQLite checks them first).
    let rc = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_MALLOC,
            &methods as *const ffi::sqlite3_mem_methods,
        )
    };
    if rc != ffi::SQLITE_OK {
        eprintln!("ztbridge: SQLite keeps the C allocator (SQLITE_CONFIG_MALLOC: code {rc})");
    }
    // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int; like the call above,
    // it is refused (and changes nothing) once SQLite has initialized.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
    if rc != ffi::SQLITE_OK {
        eprintln!(
            "ztbridge: SQLite keeps its memory statistics (SQLITE_CONFIG_MEMSTATUS: code {rc})"
        );
    }
}

unsafe extern "C" fn sqlite_malloc(n: c_int) -> *mut c_void {
    // SAFETY: plain allocation; null on failure, as SQLite expects.
    unsafe { mi::mi_malloc(n.max(0) as usize) }
}

unsafe extern "C" fn sqlite_free(p: *mut c_void) {
    // SAFETY: `p` came from sqlite_malloc/sqlite_realloc (or is null).
    unsafe { mi::mi_free(p) }
}

unsafe extern "C" fn sqlite_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: as above.
    unsafe { mi::mi_realloc(p, n.max(0) as usize) }
}

unsafe extern "C" fn sqlite_size(p: *mut c_void) -> c_int {
    // SAFETY: as above; SQLite's allocations are far below 2 GiB.
    unsafe { mi::mi_usable_size(p).min(c_int::MAX as usize) as c_int }
}

unsafe extern "C" fn sqlite_roundup(n: c_int) -> c_int {
    // SAFETY: pure function of its argument.
    unsafe { mi::mi_good_size(n.max(0) as usize).min(c_int::MAX as usize) as c_int }
}

unsafe extern "C" fn sqlite_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn sqlite_shutdown(_: *mut c_void) {}
