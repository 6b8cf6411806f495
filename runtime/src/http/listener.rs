//! The webhook listener: accepts connections under a cap and serves each
//! with hyper's HTTP/1.1 connection (what `axum::serve` would do, with the
//! settings it does not expose).
//!
//! * **Header-read timeout** (`intake.header_read_timeout_secs`, 10 s):
//!   hyper's own `header_read_timeout`.  Its clock starts when the
//!   connection is ready for a request head (on accept, and again after
//!   each answer), so it bounds slow headers *and* idle keep-alive
//!   connections; a client trickling one header byte every 2 s is closed.
//! * **Connection cap** (`intake.max_connections`, by default the
//!   open-file limit less headroom): a semaphore taken at accept.  At the
//!   cap the oldest connection with no request in progress (idle, or still
//!   sending its header) is closed to make room, so clients holding
//!   connections open cannot keep a real webhook out; when every
//!   connection is mid-request the listener stops accepting until one
//!   ends (the kernel's backlog holds the new ones).  Reaching the cap is
//!   logged (at most every 10 s) and counted in `/metrics`.
//! * A body that does not arrive whole in time is the handler's 408
//!   ([`super::webhook`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

use crate::ops::Metrics;
use crate::time::now_millis;

/// How the listener bounds its connections.
pub(crate) struct Settings {
    /// Header-read (and keep-alive idle) timeout.
    pub(crate) header_read_timeout: Duration,
    /// Open connections at most.
    pub(crate) max_connections: usize,
}

/// One open connection, as the cap sees it.
#[derive(Default)]
struct Conn {
    /// Requests in progress (handler running): a busy connection is never
    /// closed to make room.
    busy: AtomicUsize,
    /// Told to close (the cap needs its place).
    evict: Notify,
}

/// The open connections, oldest first (ids only grow).
struct Conns {
    /// Open connections by id.
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// The next id.
    next: AtomicU64,
}

impl Conns {
    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        self.lock().insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the oldest connection with no request in progress to close;
    /// false when every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let victim = open
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(conn) => {
                // notify_one keeps the permit if the task is not waiting yet.
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts a request in progress on its connection while alive.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At most one log line per this many ms about the cap or accept errors.
const LOG_EVERY_MS: i64 = 10_000;

/// Logs at most once per [`LOG_EVERY_MS`]; true when this call may log.
fn may_log(last: &AtomicI64) -> bool {
    let now = now_millis();
    let prev = last.load(Ordering::Relaxed);
    now - prev >= LOG_EVERY_MS
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// requests in progress finish (idle connections are closed at once).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = settings.max_connections.max(1);
    tracing::info!(
        max_connections = max,
        header_read_timeout_secs = settings.header_read_timeout.as_secs(),
        "webhook connections: at most {max} open (intake.max_connections)"
    );
    let slots = Arc::new(Semaphore::new(max));
    let conns = Arc::new(Conns {
        open: Mutex::new(BTreeMap::new()),
        next: AtomicU64::new(0),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (cap_logged, error_logged) = (AtomicI64::new(0), AtomicI64::new(0));
    let cap_hits_since_log = AtomicU64::new(0);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors (the cap is above what is left) or a
                // connection reset before it was accepted: pause, go on.
                if may_log(&error_logged) {
                    tracing::error!("cannot accept a webhook connection: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics.connection_cap_reached.inc();
                let hits = cap_hits_since_log.fetch_add(1, Ordering::Relaxed) + 1;
                let evicted = conns.evict_oldest_idle();
                if evicted {
                    metrics.connections_evicted.inc();
                }
                if may_log(&cap_logged) {
                    cap_hits_since_log.store(0, Ordering::Relaxed);
                    tracing::warn!(
                        max_connections = max,
                        times = hits,
                        "webhook connection cap reached: {}; raise intake.max_connections (and the open-file limit) if these are real clients",
                        if evicted {
                            "the oldest idle connection was closed to make room"
                        } else {
                            "every connection is mid-request; new ones wait"
                        }
                    );
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, conn) = conns.add();
        metrics.connections_open.inc();
        let svc_conn = conn.clone();
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let busy = Busy::new(svc_conn.clone());
                let router = router.clone();
                async move {
                    let resp = router.oneshot(req.map(axum::body::Body::new)).await;
                    drop(busy);
                    resp
                }
            });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let (conns, metrics) = (conns.clone(), metrics.clone());
        tokio::spawn(async move {
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        if e.is_timeout() {
                            metrics.connections_timed_out.inc();
                        }
                        tracing::debug!("webhook connection ended: {e}");
                    }
                }
                () = conn.evict.notified() => {}
            }
            conns.remove(id);
            metrics.connections_open.dec();
            drop(permit);
        });
    }
    drop(listener);
    // Idle connections close at once; requests in progress finish.
    graceful.shutdown().await;
    Ok(())
}
