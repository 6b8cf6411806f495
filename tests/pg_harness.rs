//! The PostgreSQL test harness (`common::pg::PgServer`) itself: a real
//! server, reached over TCP with SCRAM, whose data outlives a stop, a crash
//! and a start; several at once; nothing left behind, even after a panic or
//! a killed test process.

mod common;

use std::path::PathBuf;

use common::pg::{self, PgServer};

async fn rows(url: &str) -> Vec<(i32, String)> {
    let client = pg::connect(url).await.expect("connect");
    client
        .query("SELECT id, note FROM t ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn postmaster_pid(dir: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive; postmasters are reaped by init once pg_ctl
    // (their parent) has exited.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_stop_crash_and_start() {
    let pg = PgServer::new_async().await;
    let url = pg.url();
    assert!(url.starts_with("postgres://ztbridge:"), "{url}");
    assert!(
        url.ends_with(&format!("@127.0.0.1:{}/ztbridge", pg.port())),
        "{url}"
    );

    let client = pg::connect(&url).await.expect("connect");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("current_user")
        .get(0);
    assert_eq!(who, "ztbridge");
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL)")
        .await
        .expect("create table");
    client
        .execute("INSERT INTO t VALUES (1, $1)", &[&"before stop"])
        .await
        .expect("insert");

    // A fast stop: the open connection is ended, new ones are refused.
    pg.blocking(|p| p.stop()).await;
    assert!(!pg.is_running());
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    assert!(
        pg::connect(&url).await.is_err(),
        "connected to a stopped server"
    );

    pg.blocking(|p| p.start()).await;
    assert_eq!(rows(&url).await, vec![(1, "before stop".to_string())]);

    // A crash (immediate stop) after a commit: recovery replays it.
    let client = pg::connect(&url).await.expect("connect");
    client
        .execute("INSERT INTO t VALUES (2, $1)", &[&"before crash"])
        .await
        .expect("insert");
    pg.blocking(|p| p.kill()).await;
    pg.blocking(|p| p.start()).await;
    assert_eq!(
        rows(&url).await,
        vec![(1, "before stop".into()), (2, "before crash".into())]
    );
    assert!(
        pg.log_tail(50)
            .contains("database system was not properly shut down"),
        "no crash recovery in the log:\n{}",
        pg.log_tail(50)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_checked_over_tcp() {
    let pg = PgServer::new_async().await;
    let wrong = pg.url().replace(pg.password(), "not-the-password");
    let err = pg::connect(&wrong)
        .await
        .err()
        .expect("wrong password accepted");
    let text = format!("{err:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    let method = pg.psql(
        "postgres",
        "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND address = '127.0.0.1'",
    );
    assert_eq!(method, "scram-sha-256");
    // The superuser URL works too (for what a test does behind the
    // service's back).
    let su = pg::connect(&pg.superuser_url("postgres"))
        .await
        .expect("superuser");
    let is_super: bool = su
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("rolsuper")
        .get(0);
    assert!(is_super);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_in_parallel_are_independent() {
    let servers: Vec<PgServer> = futures_join(3).await;
    let mut ports: Vec<u16> = servers.iter().map(|p| p.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "ports shared: {ports:?}");
    for (i, pg) in servers.iter().enumerate() {
        let extra = pg.create_database(&format!("extra_{i}"));
        let client = pg::connect(&extra).await.expect("connect extra database");
        let db: String = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .expect("current_database")
            .get(0);
        assert_eq!(db, format!("extra_{i}"));
        client
            .batch_execute(&format!("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES ({i}, 'server {i}')"))
            .await
            .expect("create");
    }
    for (i, pg) in servers.iter().enumerate() {
        assert_eq!(
            rows(&pg.url_for(&format!("extra_{i}"))).await,
            vec![(i as i32, format!("server {i}"))]
        );
    }
}

async fn futures_join(n: usize) -> Vec<PgServer> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(PgServer::new_async()))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("start"));
    }
    out
}

#[test]
fn a_panicking_test_leaves_nothing_running() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let pg = PgServer::new();
        tx.send((
            pg.dir().to_path_buf(),
            postmaster_pid(pg.dir()).expect("pid"),
        ))
        .unwrap();
        panic!("a test fails while its server runs");
    })
    .join();
    assert!(result.is_err());
    let (dir, pid) = rx.recv().expect("server started");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!alive(pid), "postmaster {pid} still running");
}

/// Run only as the child of `a_killed_test_process_is_cleaned_up_later`:
/// starts a server, says where, and dies without running any destructor.
#[test]
#[ignore = "helper: run by a_killed_test_process_is_cleaned_up_later"]
fn helper_start_then_abort() {
    if std::env::var_os("ZTBRIDGE_PG_HELPER").is_none() {
        return;
    }
    let pg = PgServer::new();
    println!(
        "HELPER dir={} pid={}",
        pg.dir().display(),
        postmaster_pid(pg.dir()).expect("pid")
    );
    std::process::abort();
}

#[test]
fn a_killed_test_process_is_cleaned_up_later() {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "helper_start_then_abort",
            "--ignored",
            "--nocapture",
        ])
        .env("ZTBRIDGE_PG_HELPER", "1")
        .output()
        .expect("run helper");
    assert!(!out.status.success(), "helper did not abort");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("HELPER "))
        .unwrap_or_else(|| {
            panic!(
                "no HELPER line: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let mut dir = PathBuf::new();
    let mut pid = 0u32;
    for kv in line.split(' ') {
        match kv.split_once('=') {
            Some(("dir", v)) => dir = PathBuf::from(v),
            Some(("pid", v)) => pid = v.parse().expect("pid"),
            _ => {}
        }
    }
    // Orphaned: its owner died, the server still runs.
    assert!(
        dir.exists() && alive(pid),
        "helper's server not left running"
    );
    // The next server anywhere reaps it.
    let _next = PgServer::new();
    assert!(!dir.exists(), "{} not removed", dir.display());
    assert!(!alive(pid), "orphaned postmaster {pid} still running");
}
