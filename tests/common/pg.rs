//! A real PostgreSQL server for tests, started from the distribution's
//! binaries (`/usr/lib/postgresql/<version>/bin`, the newest; or
//! `ZTBRIDGE_PG_BIN`).
//!
//! Each `PgServer` has its own directory (`$TMPDIR/ztbridge-pgsrv-*`, owned
//! by `postgres`, mode 0700) holding the cluster (`data/`), the server log
//! (`server.log`) and the Unix socket, and its own port on 127.0.0.1.
//! Clients connect over TCP with SCRAM-SHA-256 as role `ztbridge`, which owns
//! database `ztbridge`; the superuser `postgres` has a password too.
//!
//! Parallel use, in one process and across processes:
//! - ports are drawn at random from 20000–32000, below Linux's ephemeral
//!   range, so a `bind(127.0.0.1:0)` elsewhere never takes one while its
//!   server is stopped; each is reserved with an exclusive `flock` on
//!   `$TMPDIR/ztbridge-pg-ports/<port>.lock` for the server's lifetime; and a
//!   start that still meets "Address already in use" tries another port;
//! - each directory has `owner.lock`, locked by the process that made it:
//!   a directory whose lock can be taken belongs to a dead process (a test
//!   binary killed by a signal, whose `Drop`s never ran), so the next
//!   `PgServer::new` anywhere stops that server and removes it.
//!
//! Everything waits for real conditions: `pg_ctl -w` returns once the server
//! accepts connections (or has stopped), `psql` connects through the socket.
//! No fixed sleeps.
//!
//! The methods block (a start takes about a second): from an async test use
//! `PgServer::new_async()` and `pg.blocking(|p| p.stop()).await`, so other
//! tasks of the runtime go on meanwhile.
//!
//! As root, `initdb`, `pg_ctl` and `psql` run as `postgres` through `runuser`
//! (PostgreSQL refuses to run as root); as any other user, as that user.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The role the service connects as, owner of database [`DATABASE`].
pub const ROLE: &str = "ztbridge";
pub const DATABASE: &str = "ztbridge";

const DIR_PREFIX: &str = "ztbridge-pgsrv-";
const PORTS_DIR: &str = "ztbridge-pg-ports";
/// Ports are drawn from here: below Linux's default ephemeral range
/// (32768–60999), so no `bind(:0)` and no outgoing connection takes one.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;
/// How long `pg_ctl -w` may wait for a start or a stop (crash recovery
/// included).
const PG_CTL_TIMEOUT_S: &str = "120";

/// A PostgreSQL server of its own.  Clones share the one server, which is
/// stopped (immediately) and whose directory is removed when the last clone
/// is dropped, also while a test panics.
#[derive(Clone)]
pub struct PgServer {
    inner: Arc<Inner>,
}

struct Inner {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    password: String,
    /// Whether commands run as `postgres` through `runuser` (we are root).
    as_postgres: bool,
    running: Mutex<bool>,
    /// Held for the server's lifetime: the port is ours.
    _port_lock: File,
    /// Held for the server's lifetime: the directory is alive.
    _owner_lock: File,
}

impl PgServer {
    /// Creates a cluster, starts it, and creates role and database
    /// `ztbridge`.  Panics (with the server log) if anything fails.
    pub fn new() -> PgServer {
        let bin = find_bin_dir();
        let as_postgres = is_root();
        reap_orphans(&bin, as_postgres);

        let dir = make_dir(as_postgres);
        // Locked first, then given its name: a reaper never sees an
        // unlocked owner.lock of a live directory.
        let owner_lock = {
            let tmp = dir.join("owner.lock.new");
            let f = File::create(&tmp).expect("owner.lock");
            f.lock().expect("lock owner.lock");
            std::fs::rename(&tmp, dir.join("owner.lock")).expect("owner.lock");
            f
        };
        let password = random_hex();
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("pwfile");
        if as_postgres {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown pwfile");
        }

        let data = dir.join("data");
        let out = pg_command(&bin, "initdb", as_postgres, &dir)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                // Test clusters are thrown away: skip initdb's own fsyncs.
                // The server itself keeps fsync on (durability tests).
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        let _ = std::fs::remove_file(&pwfile);
        check(&out, "initdb", None);

        // Settings every start uses; the port is given on pg_ctl's command
        // line so that a start can move to another port before the first
        // success.
        let mut conf = OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        write!(
            conf,
            "\n# ztbridge test harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\n\
             max_connections = 200\n\
             shared_buffers = '32MB'\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            dir.display()
        )
        .expect("write postgresql.conf");
        drop(conf);

        let mut tries = 0;
        let (port, port_lock) = loop {
            tries += 1;
            let (port, lock) = reserve_port();
            match pg_ctl_start(&bin, as_postgres, &dir, port) {
                Ok(()) => break (port, lock),
                Err(why) if why.contains("Address already in use") && tries < 8 => continue,
                Err(why) => panic!("PostgreSQL did not start on port {port}: {why}"),
            }
        };

        let pg = PgServer {
            inner: Arc::new(Inner {
                bin,
                dir,
                port,
                password,
                as_postgres,
                running: Mutex::new(true),
                _port_lock: port_lock,
                _owner_lock: owner_lock,
            }),
        };
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{}'", pg.inner.password),
        );
        pg.create_database(DATABASE);
        pg
    }

    /// [`PgServer::new`] off the async runtime's threads.
    pub async fn new_async() -> PgServer {
        match tokio::task::spawn_blocking(PgServer::new).await {
            Ok(pg) => pg,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Runs `f` (e.g. `|p| p.stop()`) on a blocking thread.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PgServer) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || f(&me)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The server's directory (cluster in `data/`, log in `server.log`).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// `ztbridge`'s password (SCRAM over TCP).
    pub fn password(&self) -> &str {
        &self.inner.password
    }

    /// `postgres://ztbridge:PASSWORD@127.0.0.1:PORT/ztbridge`
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of database `db` as role `ztbridge`.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://{ROLE}:{}@127.0.0.1:{}/{db}",
            self.inner.password, self.inner.port
        )
    }

    /// The superuser's URL (same password), for what a test does behind
    /// the service's back (e.g. `pg_terminate_backend`).
    pub fn superuser_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.inner.password, self.inner.port
        )
    }

    /// Creates database `name` (lower-case letters, digits, `_`) owned by
    /// `ztbridge`; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {ROLE}"));
        self.url_for(name)
    }

    /// Runs `sql` as the superuser through the Unix socket; returns psql's
    /// unaligned, tuples-only output.  Panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = pg_command(
            &self.inner.bin,
            "psql",
            self.inner.as_postgres,
            &self.inner.dir,
        )
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(&self.inner.dir)
        .args([
            "-p",
            &self.inner.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
        check(&out, "psql", Some(self));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Stops the server (fast: sessions are ended, a checkpoint is
    /// written); returns once it has stopped.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    /// Stops the server at once, as a crash would (`-m immediate`: no
    /// checkpoint; the next start runs crash recovery).
    pub fn kill(&self) {
        self.pg_ctl_stop("immediate");
    }

    /// Starts the stopped server again, same directory and port; returns
    /// once it accepts connections (after crash recovery, if any).
    pub fn start(&self) {
        let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        assert!(!*running, "PgServer::start: already running");
        if let Err(why) = pg_ctl_start(
            &self.inner.bin,
            self.inner.as_postgres,
            &self.inner.dir,
            self.inner.port,
        ) {
            panic!(
                "PostgreSQL did not start again on port {}: {why}",
                self.inner.port
            );
        }
        *running = true;
    }

    /// Turns TLS on with this certificate chain and key (PEM): restarts
    /// the server with `ssl = on`.  Plain connections are still accepted
    /// (pg_hba's `host` lines match both).
    pub fn enable_tls(&self, cert_chain_pem: &[u8], key_pem: &[u8]) {
        let was_running = self.is_running();
        if was_running {
            self.stop();
        }
        let data = self.inner.dir.join("data");
        let ids = self.inner.as_postgres.then(postgres_ids);
        for (name, pem) in [("server.crt", cert_chain_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, pem).expect("write TLS file");
            // The server refuses a key others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
            }
        }
        let mut conf = OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )
        .expect("write postgresql.conf");
        drop(conf);
        if was_running {
            self.start();
        }
    }

    pub fn is_running(&self) -> bool {
        *self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        assert!(*running, "PgServer: stop while stopped");
        let out = self.inner.pg_ctl_stop(mode).expect("run pg_ctl stop");
        check(&out, "pg_ctl stop", Some(self));
        *running = false;
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.inner.dir, lines)
    }
}

impl Inner {
    fn pg_ctl_stop(&self, mode: &str) -> std::io::Result<Output> {
        pg_command(&self.bin, "pg_ctl", self.as_postgres, &self.dir)
            .args(["stop", "-w", "-t", PG_CTL_TIMEOUT_S, "-m", mode, "-D"])
            .arg(self.dir.join("data"))
            .output()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let running = *self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        if std::thread::panicking() {
            eprintln!(
                "PostgreSQL test server on port {} (log tail):\n{}",
                self.port,
                log_tail(&self.dir, 40)
            );
        }
        if running {
            // The data is thrown away: no checkpoint.
            let _ = self.pg_ctl_stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and
/// `pg_ctl`, or `ZTBRIDGE_PG_BIN`.
pub fn find_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ZTBRIDGE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: Vec<u32> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin \
             (apt-get install postgresql, or set ZTBRIDGE_PG_BIN)"
        ),
    }
}

fn is_root() -> bool {
    // The effective uid, without a libc dependency: /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no `postgres` user: install the postgresql package"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("id output")
    };
    (id("-u"), id("-g"))
}

/// A new `$TMPDIR/ztbridge-pgsrv-*`, mode 0700, owned by `postgres` when
/// we are root.
fn make_dir(as_postgres: bool) -> PathBuf {
    loop {
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            &random_hex()[..8]
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .expect("chmod");
                if as_postgres {
                    let (uid, gid) = postgres_ids();
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
                }
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

/// Stops and removes every server directory whose owner process is gone.
fn reap_orphans(bin: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = e.path();
        let Ok(lock) = File::open(dir.join("owner.lock")) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // its owner is alive
        }
        if dir.join("data/postmaster.pid").exists() {
            let _ = pg_command(bin, "pg_ctl", as_postgres, &dir)
                .args([
                    "stop",
                    "-w",
                    "-t",
                    PG_CTL_TIMEOUT_S,
                    "-m",
                    "immediate",
                    "-D",
                ])
                .arg(dir.join("data"))
                .output();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A port of [`PORT_RANGE`] locked for us and free right now.
fn reserve_port() -> (u16, File) {
    let ports = std::env::temp_dir().join(PORTS_DIR);
    if std::fs::create_dir(&ports).is_ok() {
        // Shared by every user's test runs, like /tmp itself.
        let _ = std::fs::set_permissions(&ports, std::fs::Permissions::from_mode(0o1777));
    }
    for _ in 0..1000 {
        let r = u64::from_str_radix(&random_hex()[..8], 16).expect("hex");
        let port = PORT_RANGE.start + (r % u64::from(PORT_RANGE.end - PORT_RANGE.start)) as u16;
        let Ok(lock) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ports.join(format!("{port}.lock")))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // another PgServer's
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return (port, lock);
        }
    }
    panic!("no free port in {PORT_RANGE:?}");
}

fn pg_ctl_start(bin: &Path, as_postgres: bool, dir: &Path, port: u16) -> Result<(), String> {
    let log = dir.join("server.log");
    let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let out = pg_command(bin, "pg_ctl", as_postgres, dir)
        .args(["start", "-w", "-t", PG_CTL_TIMEOUT_S, "-D"])
        .arg(dir.join("data"))
        .arg("-l")
        .arg(&log)
        .args(["-o", &format!("-p {port}")])
        .output()
        .map_err(|e| format!("run pg_ctl: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    // What this start wrote to the log (the reason is there, not in
    // pg_ctl's own output).
    let text = std::fs::read(&log).unwrap_or_default();
    let new = String::from_utf8_lossy(&text[(log_len as usize).min(text.len())..]).into_owned();
    Err(format!(
        "pg_ctl start: {}{}\n--- server log ---\n{new}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A command for PostgreSQL program `prog`, as `postgres` when we are root,
/// run in `dir` (the postgres user may not be able to enter our working
/// directory), with no PG* variables of ours.
fn pg_command(bin: &Path, prog: &str, as_postgres: bool, dir: &Path) -> Command {
    let mut cmd = if as_postgres {
        // /usr/sbin may be missing from a non-login root's PATH.
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("runuser");
        let mut c = Command::new(runuser);
        c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
        c
    } else {
        Command::new(bin.join(prog))
    };
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

fn check(out: &Output, what: &str, pg: Option<&PgServer>) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {}{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pg.map(|p| format!("\n--- server log ---\n{}", p.log_tail(30)))
                .unwrap_or_default()
        );
    }
}

fn log_tail(dir: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// 32 random hex digits (std's per-process random hash keys, a counter,
/// the time).
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Connects `url` with tokio-postgres (no TLS), driving the connection on
/// a task of its own.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
