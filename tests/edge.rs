//! The webhook port against clients that hold connections: slow headers,
//! trickled bodies, idle keep-alive connections, more connections than the
//! service has file descriptors; and the store's files removed under the
//! running service.  Real binary (or the real listener in process), real
//! sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::child::ChildServer;
use common::*;
use serde_json::Value;

/// A prometheus sample's value from `GET /metrics` (0 when absent).
async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads until the server closes the connection (EOF or reset); what it
/// sent.  Panics if it does not close within `limit` (the socket's read
/// timeout: a server that never closes fails the test, it does not hang).
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server did not close the connection within {limit:?} ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Slow-loris clients: `n` connections, each sending one byte of a
/// request header every 2 s; a connection the server closes is opened
/// again (as an attacker would).  Runs on its own thread until dropped.
struct Loris {
    stop: Arc<AtomicBool>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
    /// Connections the server closed (and that were opened again).
    closed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Loris {
    fn start(port: u16, n: usize) -> Loris {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (s, o, c) = (stop.clone(), open.clone(), closed.clone());
        let thread = std::thread::spawn(move || {
            const HEAD: &[u8] =
                b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: ";
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let connect = || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
            let mut conns: Vec<Option<(TcpStream, usize)>> = Vec::with_capacity(n);
            for _ in 0..n {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let conn = connect().map(|t| (t, 0));
                if conn.is_some() {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                conns.push(conn);
            }
            while !s.load(Ordering::Relaxed) {
                let round = Instant::now();
                for slot in conns.iter_mut() {
                    if s.load(Ordering::Relaxed) {
                        return;
                    }
                    let alive = match slot {
                        Some((t, sent)) => {
                            let byte = HEAD.get(*sent).copied().unwrap_or(b'a');
                            *sent += 1;
                            t.write_all(&[byte]).is_ok()
                        }
                        None => false,
                    };
                    if !alive {
                        if slot.take().is_some() {
                            o.fetch_sub(1, Ordering::Relaxed);
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(t) = connect() {
                            o.fetch_add(1, Ordering::Relaxed);
                            *slot = Some((t, 0));
                        }
                    }
                }
                // One byte per connection every 2 s.
                if let Some(rest) = Duration::from_secs(2).checked_sub(round.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        });
        Loris {
            stop,
            open,
            closed,
            thread: Some(thread),
        }
    }
}

impl Drop for Loris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_beyond_the_fd_limit_do_not_starve_a_real_webhook() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Defaults: header_read_timeout_secs = 10, max_connections derived
    // from the open-file limit (1024 here).
    let child = ChildServer::start_with_nofile(dir.path(), &pagerduty_route(&pd, ""), 1024).await;
    // Baseline in the same run: a real POST with no slow client.
    let started = Instant::now();
    let (status, answer) = child.post(&fixture("events/warning-monitor.json")).await;
    let baseline = started.elapsed();
    assert_eq!(status, 202, "{answer}");
    let loris = Loris::start(child.port, 1500);
    // All 1500 connected (accepted, or waiting in the kernel's backlog).
    let all = wait_until(Duration::from_secs(120), || {
        (loris.open.load(Ordering::Relaxed) + loris.closed.load(Ordering::Relaxed) >= 1500)
            .then_some(())
    })
    .await;
    assert!(all.is_some(), "the slow clients could not connect");
    // The cap is reached, logged and counted.
    let metrics = child.url("/metrics");
    let mut cap_hits = 0.0;
    for _ in 0..600 {
        cap_hits = metric(&metrics, "ztbridge_webhook_connection_cap_reached_total").await;
        if cap_hits > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cap_hits > 0.0, "the connection cap was never reached");
    let logged = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&child.log_path)
            .ok()?
            .contains("webhook connection cap reached")
            .then_some(())
    })
    .await;
    assert!(logged.is_some(), "reaching the cap was not logged");

    // A real webhook, on a fresh connection, while they keep trickling.
    let started = Instant::now();
    let (status, answer) = child.post(&fixture("events/critical-lockout.json")).await;
    let latency = started.elapsed();
    assert_eq!(status, 202, "{answer}");
    let open = metric(&metrics, "ztbridge_webhook_connections_open").await;
    let evicted = metric(&metrics, "ztbridge_webhook_connections_evicted_total").await;
    eprintln!(
        "real POST answered 202 in {:.1} ms with 1500 slow clients at ulimit -n 1024 \
         ({:.1}x the {:.1} ms baseline without them) \
         (server: {open} connections open, cap reached {cap_hits}+ times, {evicted} evicted; \
         clients: {} open, {} closed by the server)",
        latency.as_secs_f64() * 1000.0,
        latency.as_secs_f64() / baseline.as_secs_f64(),
        baseline.as_secs_f64() * 1000.0,
        loris.open.load(Ordering::Relaxed),
        loris.closed.load(Ordering::Relaxed),
    );
    assert!(
        open < 1024.0,
        "{open} connections open at an fd limit of 1024"
    );
    // And it is delivered.
    assert!(
        pd.wait_for(2, Duration::from_secs(60)).await.len() == 2,
        "the accepted webhook was not delivered"
    );
    drop(loris);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_answered_408_with_json() {
    let pd = StubPagerDuty::start().await;
    let config = format!(
        "[intake]\nbody_read_timeout_secs = 1\n{}",
        pagerduty_route(&pd, "")
    );
    let server = Server::start(&config).await;
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"a\":",
    )
    .unwrap();
    // The rest never comes.
    let answer = read_until_closed(&mut s, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer}"));
    assert_eq!(json["error"], "body_timeout", "{json}");
    assert_eq!(server.rejected("body_timeout").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_closed() {
    let pd = StubPagerDuty::start().await;
    let config = format!(
        "[intake]\nheader_read_timeout_secs = 1\n{}",
        pagerduty_route(&pd, "")
    );
    let server = Server::start(&config).await;
    // Connected, nothing sent: closed.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let got = read_until_closed(&mut silent, Duration::from_secs(30));
    assert!(got.is_empty(), "{got}");
    // A header trickled slower than the timeout: closed.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /hea").unwrap();
    let got = read_until_closed(&mut slow, Duration::from_secs(30));
    assert!(!got.contains("200 OK"), "{got}");
    // One request answered, then idle on keep-alive: closed after it.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = read_until_closed(&mut idle, Duration::from_secs(30));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        !got.contains("connection: close"),
        "closed by the answer, not by the idle timeout: {got}"
    );
    let timed_out = {
        let text = server.metrics_text().await;
        text.lines()
            .find(|l| l.starts_with("ztbridge_webhook_connections_timed_out_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(timed_out >= 2.0, "timeouts counted: {timed_out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_store_files_stop_acknowledgements_and_readiness() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::start(dir.path(), &pagerduty_route(&pd, "")).await;
    let ready = reqwest::get(child.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let (status, answer) = child.post(&fixture("events/critical-lockout.json")).await;
    assert_eq!(status, 202, "{answer}");

    let data = dir.path().join("data");
    for f in ["events.sqlite3", "events.sqlite3-wal", "events.sqlite3-shm"] {
        std::fs::remove_file(data.join(f)).unwrap();
    }
    // Whichever notices first (a webhook's commit or the idle check),
    // nothing is acknowledged any more.
    let (status, answer) = child.post(&fixture("events/warning-monitor.json")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "store_lost", "{answer}");
    let ready = reqwest::get(child.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["reason"], "store_lost", "{ready}");
    assert!(
        metric(
            &child.url("/metrics"),
            "ztbridge_webhooks_rejected_total{reason=\"store_lost\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        child.log_tail().contains("EVENT STORE LOST"),
        "{}",
        child.log_tail()
    );
    // It stays so.
    let (status, _) = child.post(&fixture("events/critical-lockout.json")).await;
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_store_file_is_noticed_without_a_webhook() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::start(dir.path(), &pagerduty_route(&pd, "")).await;
    let data = dir.path().join("data");
    // Another file put in its place (a restore done under the service).
    let db = data.join("events.sqlite3");
    std::fs::copy(&db, data.join("copy")).unwrap();
    std::fs::rename(data.join("copy"), &db).unwrap();
    let mut last = Value::Null;
    for _ in 0..300 {
        let resp = reqwest::get(child.url("/readyz")).await.unwrap();
        last = resp.json().await.unwrap();
        if last["reason"] == "store_lost" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["reason"], "store_lost", "{last}");
    assert!(
        last["message"].as_str().unwrap().contains("replaced"),
        "{last}"
    );
    let (status, answer) = child.post(&fixture("events/critical-lockout.json")).await;
    assert_eq!(status, 503, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_past_its_retry_deadline_is_a_dead_letter_not_an_attempt() {
    let pd = StubPagerDuty::start().await;
    pd.outage((503, vec![], "{\"status\":\"unavailable\"}".into()));
    let dir = tempfile::tempdir().unwrap();
    // The first retry (2.5-3 s after the first attempt) is due before the
    // 4 s deadline; the service is frozen until the deadline has passed.
    let config = format!(
        "[delivery]\nretry_horizon_secs = 4\ninitial_backoff_ms = 2500\nmax_backoff_ms = 3000\ndedupe_window_secs = 0\n{}",
        pagerduty_route(&pd, "")
    );
    let child = ChildServer::start(dir.path(), &config).await;
    let (status, answer) = child.post(&fixture("events/critical-lockout.json")).await;
    assert_eq!(status, 202, "{answer}");
    let accepted = Instant::now();
    let receipt = answer["receipt_id"].as_str().unwrap().to_string();
    assert_eq!(pd.wait_for(1, Duration::from_secs(30)).await.len(), 1);
    child.signal("STOP");
    // Wait for the real condition: the deadline (4 s after acceptance,
    // with a margin for the clock of the POST's answer) has passed.
    wait_until(Duration::from_secs(60), || {
        (accepted.elapsed() > Duration::from_secs(5)).then_some(())
    })
    .await;
    child.signal("CONT");
    let mut last = Value::Null;
    for _ in 0..600 {
        last = reqwest::get(child.url(&format!("/api/events/{receipt}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if last["deliveries"][0]["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = &last["deliveries"][0];
    assert_eq!(d["state"], "failed", "{last}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("retry deadline"), "{reason}");
    assert!(reason.contains("before attempt 2"), "{reason}");
    // The destination saw the first attempt only.
    assert_eq!(pd.received().len(), 1);
}
