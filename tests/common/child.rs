//! The real `ztbridge` binary as a child process, for tests that kill it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::listen_log::bound_port;
use super::{ROUTING_KEY, wait_until};

/// A running `ztbridge serve`.
pub struct ChildServer {
    proc: std::process::Child,
    pub port: u16,
    /// The config file (the `events` commands read its data_dir).
    pub config_path: PathBuf,
    /// Where its stderr goes (appended across restarts).
    pub log_path: PathBuf,
}

impl ChildServer {
    /// Starts `ztbridge serve` with `config_toml` (listen and data_dir are
    /// added) in `dir`; returns once it accepts connections.
    pub async fn start(dir: &Path, config_toml: &str) -> ChildServer {
        ChildServer::start_with_env(dir, config_toml, &[]).await
    }

    /// `start`, with extra environment variables.
    pub async fn start_with_env(
        dir: &Path,
        config_toml: &str,
        env: &[(&str, &str)],
    ) -> ChildServer {
        ChildServer::start_opts(dir, config_toml, env, None).await
    }

    /// `start`, under `umask` (octal, e.g. `"000"`), set by a shell that
    /// then execs the server (same process).
    pub async fn start_with_umask(dir: &Path, config_toml: &str, umask: &str) -> ChildServer {
        ChildServer::start_opts(dir, config_toml, &[], Some(&format!("umask {umask}"))).await
    }

    /// `start`, with the open-file limit set to `n` by a shell that then
    /// execs the server (`ulimit -n`, soft and hard).
    pub async fn start_with_nofile(dir: &Path, config_toml: &str, n: u32) -> ChildServer {
        ChildServer::start_opts(dir, config_toml, &[], Some(&format!("ulimit -n {n}"))).await
    }

    async fn start_opts(
        dir: &Path,
        config_toml: &str,
        env: &[(&str, &str)],
        shell_prefix: Option<&str>,
    ) -> ChildServer {
        // Port 0: the server binds a free port itself and logs it.  (A port
        // found free here and bound by the child later could be taken in
        // between by another test's listener, which the test would then
        // talk to.)
        let config_path = dir.join("ztbridge.toml");
        let data_dir = dir.join("data").display().to_string();
        let write_config = |port: u16| {
            let text =
                format!("listen = \"127.0.0.1:{port}\"\ndata_dir = {data_dir:?}\n{config_toml}");
            std::fs::write(&config_path, text).expect("write config");
        };
        write_config(0);
        let log_path = dir.join("stderr.log");
        let logged_before = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let serve = [
            env!("CARGO_BIN_EXE_ztbridge"),
            "serve",
            "--config",
            config_path.to_str().expect("utf-8 path"),
        ];
        let mut command = match shell_prefix {
            None => {
                let mut c = Command::new(serve[0]);
                c.args(&serve[1..]);
                c
            }
            Some(prefix) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{prefix} && exec \"$0\" \"$@\""))
                    .args(serve);
                c
            }
        };
        // A cluster node is named after its host and port by default: with
        // port 0 every child would share one name, so each start gets its
        // own (a restart too, as a new port gave it before).
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let node = format!(
            "test-node-{}-{}",
            std::process::id(),
            STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let proc = command
            .env("RUST_LOG", "info,wasmtime=warn,cranelift_codegen=warn")
            .env("ZTBRIDGE_STORE_NODE", node)
            .env("ZTBRIDGE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ztbridge");
        let mut child = ChildServer {
            proc,
            port: 0,
            config_path: config_path.clone(),
            log_path,
        };
        let log_path = child.log_path.clone();
        let bound = wait_until(Duration::from_secs(60), || {
            let log = std::fs::read(&log_path).ok()?;
            bound_port(&String::from_utf8_lossy(log.get(logged_before..)?))
        })
        .await;
        match bound {
            Some(port) => {
                child.port = port;
                // Commands given the config (`send-test`, `events`) find
                // the server where it listens.
                write_config(port);
            }
            None => {
                child.kill9();
                panic!("ztbridge did not start:\n{}", child.log_tail());
            }
        }
        child
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Sends `signal` (`TERM`, `HUP`...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.proc.id().to_string()])
            .status();
    }

    /// SIGTERM (what `systemctl stop` sends).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// SIGHUP (what `systemctl reload` sends), then waits for `logged` to
    /// appear in the log; panics with the log tail if it does not.
    pub async fn reload_and_wait_for(&self, logged: &str) {
        let before = std::fs::read_to_string(&self.log_path)
            .map(|l| l.matches(logged).count())
            .unwrap_or(0);
        self.signal("HUP");
        let seen = wait_until(Duration::from_secs(30), || {
            let now = std::fs::read_to_string(&self.log_path)
                .map(|l| l.matches(logged).count())
                .unwrap_or(0);
            (now > before).then_some(())
        })
        .await;
        if seen.is_none() {
            panic!(
                "after SIGHUP, no {logged:?} in the log:\n{}",
                self.log_tail()
            );
        }
    }

    /// Waits up to `timeout` for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.proc.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub fn kill9(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }

    /// The last few KB of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut start = log.len().saturating_sub(6000);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    /// Runs `ztbridge events <args> --config <this config>`: (exit code,
    /// stdout, stderr).
    pub fn events(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ztbridge"))
            .arg("events")
            .args(args)
            .args(["--config", self.config_path.to_str().expect("utf-8 path")])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run ztbridge events");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// POSTs a plain JSON webhook; (status, answer).
    pub async fn post(&self, body: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url("/webhook"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("post webhook");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `events show ID` as JSON.
    pub fn show(&self, id: &str) -> Value {
        let (code, out, err) = self.events(&["show", id]);
        assert_eq!(code, 0, "events show {id}: {err}");
        serde_json::from_str(&out).expect("events show prints JSON")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // A failing test shows what the server said (its data directory is
        // a temporary one, gone after the test).
        let status = self.proc.try_wait().ok().flatten();
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- ztbridge (port {}, exited: {status:?}) log tail:\n{}",
                self.port,
                self.log_tail()
            );
        }
    }
}
