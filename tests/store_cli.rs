//! The commands on a PostgreSQL store (the real binary): `store copy` from
//! an SQLite data directory (idempotent, refusing a non-empty target
//! unless --force), `store migrate` and `--check`, and `events
//! list/show/retry/purge` with the store taken from the config or
//! `ZTBRIDGE_STORE_URL`.

mod common;

use std::process::Command;

use common::pg::PgServer;
use serde_json::Value;
use ztbridge_runtime::config::Config;
use ztbridge_runtime::store::Next;
use ztbridge_runtime::store::conformance::{attempt, event};

/// Runs `ztbridge args` with `env`: (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ztbridge"))
        .args(args)
        .env_remove("ZTBRIDGE_STORE_URL")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ztbridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_migrate_and_the_events_commands_on_postgres() {
    let pg = PgServer::new_async().await;
    let url = pg.url();
    // An SQLite store with a delivered, a failed and a pending webhook
    // and a Jitbit ticket in the transform state.
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(
        &format!("data_dir = {:?}", dir.path().display().to_string()),
        "test",
    )
    .unwrap();
    {
        let (store, _) = ztbridge_runtime::app::open_store(&config, None, false).unwrap();
        store.start().await.unwrap();
        for (r, id) in [("r1", "E1"), ("r2", "E2"), ("r3", "E3")] {
            store.admit(event(r, id, r, &["pd"]), 0).await.unwrap();
        }
        let now = ztbridge_runtime::time::now_millis();
        for c in store.claim(now, 2, &[]).await.unwrap().claims {
            let next = if c.receipt_id == "r1" {
                Next::Delivered
            } else {
                Next::Failed {
                    reason: "400 bad".into(),
                }
            };
            store.finish(c.key, attempt(1), next).await.unwrap();
        }
        let mut w = std::collections::BTreeMap::new();
        w.insert("ticket:E1".to_string(), Some("1001".to_string()));
        store.transform_state().apply("jitbit", &w).unwrap();
    }
    let from = dir.path().to_str().unwrap();

    let (code, out, err) = run(&["store", "migrate", "--check", "--url", &url], &[]);
    assert_eq!(code, 1, "an empty database is not migrated: {out}{err}");
    let (code, out, err) = run(&["store", "migrate", "--url", &url], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migrated from version 0"), "{out}");
    assert!(!out.contains(pg.password()), "{out}");
    let (code, out, _) = run(&["store", "migrate", "--check", "--url", &url], &[]);
    assert_eq!(code, 0, "{out}");

    let (code, out, err) = run(&["store", "copy", "--from", from, "--to", &url], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("copied 3 events (0 already there) and 1 transform-state entries"),
        "{out}"
    );
    // Again: refused (not empty); with --force, nothing is copied twice.
    let (code, _, err) = run(&["store", "copy", "--from", from, "--to", &url], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    let (code, out, err) = run(
        &["store", "copy", "--from", from, "--to", &url, "--force"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copied 0 events (3 already there)"), "{out}");

    // The events commands, the store from the environment.
    let env = [("ZTBRIDGE_STORE_URL", url.as_str())];
    let (code, out, err) = run(&["events", "list", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["receipt_id"].as_str().unwrap(),
                r["delivery"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("r3", "pending"), ("r2", "failed"), ("r1", "delivered")]
    );
    let (code, out, _) = run(&["events", "show", "E2"], &env);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown[0]["deliveries"][0]["reason"], "400 bad");
    assert_eq!(shown[0]["deliveries"][0]["attempts"][0]["last_status"], 202);
    let (code, out, _) = run(&["events", "retry", "--all-failed"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("r2 pd: pending"), "{out}");
    let (code, out, _) = run(
        &["events", "purge", "--delivered-before", "2999-01-01"],
        &env,
    );
    assert_eq!(code, 0);
    assert!(out.contains("purged 1 webhook"), "{out}");

    // The same through a config file's [store] with the password apart.
    let cfg = dir.path().join("pg.toml");
    let no_pw = url.replace(&format!(":{}@", pg.password()), "@");
    std::fs::write(
        &cfg,
        format!("[store]\nurl = {no_pw:?}\npassword = {{ env = \"PG_PW_FOR_TEST\" }}\n"),
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "events",
            "list",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[("PG_PW_FOR_TEST", pg.password())],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 2);
}
