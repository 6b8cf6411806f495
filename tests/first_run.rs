//! The first ten minutes, run as a new user would with the real binary:
//! `--version`, completions and man pages, keys and release signatures,
//! output that survives `| head`, configuration warnings, the data
//! directory, environment precedence, `send-test`.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ztbridge"));
    c.env("RUST_LOG", "warn")
        .env_remove("ZTBRIDGE_PAGERDUTY_ROUTING_KEY")
        .env_remove("ZTBRIDGE_INBOUND_TOKEN")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY");
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out: Output = cmd.output().expect("run ztbridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_commit_date_and_contract() {
    let (code, out, err) = run(bin().arg("--version"));
    assert_eq!(code, 0, "{err}");
    let wit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wit/ztbridge.wit")).unwrap();
    let contract = wit
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .unwrap()
        .trim_end_matches(';');
    assert!(
        out.starts_with(&format!("ztbridge {}\n", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains(&format!("contracts:  {contract}")), "{out}");
    assert!(out.contains("git commit: "), "{out}");
    let date = out
        .lines()
        .find_map(|l| l.strip_prefix("build date: "))
        .unwrap();
    assert_eq!(date.len(), 10, "{out}");
    // -V: one line.
    let (_, short, _) = run(bin().arg("-V"));
    assert_eq!(short.lines().count(), 1, "{short}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(bin().args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("send-test"), "{shell}: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(bin().args(["manpages", "--out"]).arg(dir.path()));
    assert_eq!(code, 0, "{err}");
    let main = std::fs::read_to_string(dir.path().join("ztbridge.1")).unwrap();
    assert!(main.contains(".TH ztbridge"), "{main}");
    assert!(dir.path().join("ztbridge-events-retry.1").exists());
    assert!(!dir.path().join("ztbridge-manpages.1").exists());
}

#[test]
fn keys_are_text_generating_twice_says_so_once_and_files_sign() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = run(bin().args(["keys", "generate", "--out", d, "--name", "rel"]));
    assert_eq!(code, 0, "{err}");
    let public = std::fs::read_to_string(dir.path().join("rel.pub")).expect(".pub is text");
    assert!(public.contains("-----BEGIN PUBLIC KEY-----"), "{public}");

    let (code, _, err) = run(bin().args(["keys", "generate", "--out", d, "--name", "rel"]));
    assert_eq!(code, 2);
    assert!(err.contains("already exist"), "{err}");
    assert_eq!(err.matches("exist").count(), 1, "said once: {err}");

    // A detached signature over SHA256SUMS, as the release makes it.
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, "0123  ztbridge\n").unwrap();
    let key = dir.path().join("rel.key");
    let (code, _, err) = run(bin()
        .args(["keys", "sign"])
        .arg(&sums)
        .arg("--key")
        .arg(&key));
    assert_eq!(code, 0, "{err}");
    let sig = std::fs::read_to_string(dir.path().join("SHA256SUMS.sig")).unwrap();
    assert!(sig.starts_with("ztbridge-signature v1\n"), "{sig}");
    let verify = |trusted: &str| {
        run(bin()
            .args(["keys", "verify"])
            .arg(&sums)
            .args(["--trusted", trusted]))
    };
    let pubkey = dir.path().join("rel.pub");
    let (code, out, err) = verify(pubkey.to_str().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("good signature"), "{out}");
    std::fs::write(&sums, "0124  ztbridge\n").unwrap();
    let (code, _, err) = verify(pubkey.to_str().unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("BAD signature"), "{err}");
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    for args in [
        &["transform", "inspect", "builtin:pagerduty"][..],
        &["completions", "bash"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin()
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// A config file in a fresh directory; returns (dir, path).
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztbridge.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const PD_ROUTE: &str = "[[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\n";

#[test]
fn the_route_variable_wins_over_the_file_whatever_the_file_says() {
    // The example config's `{ env = "PAGERDUTY_ROUTING_KEY" }`, that
    // variable unset: ZTBRIDGE_PAGERDUTY_ROUTING_KEY is enough.
    let (dir, path) = config_file(&format!(
        "data_dir = \"data\"\n{PD_ROUTE}[route.config]\nrouting_key = {{ env = \"PAGERDUTY_ROUTING_KEY\" }}\nurl = \"https://file.example/v2/enqueue\"\n"
    ));
    let (code, out, err) = run(bin()
        .args(["config", "check"])
        .arg(&path)
        .env_remove("PAGERDUTY_ROUTING_KEY")
        .env("ZTBRIDGE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        .env("ZTBRIDGE_PAGERDUTY_URL", "https://env.example/v2/enqueue"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("config routing_key: (set, secret) (from ZTBRIDGE_PAGERDUTY_ROUTING_KEY)"),
        "{out}"
    );
    assert!(
        out.contains(
            "config url: \"https://env.example/v2/enqueue\" (from ZTBRIDGE_PAGERDUTY_URL)"
        ),
        "a literal in the file loses too: {out}"
    );
    // Without the override, the file's { env } is read, and named when unset.
    let (code, _, err) = run(bin()
        .args(["config", "check"])
        .arg(&path)
        .env_remove("PAGERDUTY_ROUTING_KEY"));
    assert_eq!(code, 2);
    assert!(err.contains("`PAGERDUTY_ROUTING_KEY` is not set"), "{err}");
    // The README states the same rule.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("wins over the key's value in the file, whatever that value is"),
        "README"
    );
    // Checking created nothing: no data directory.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn one_name_for_the_inbound_token() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("ZTBRIDGE_INBOUND_TOKEN"));
    assert!(!readme.contains("ZTBRIDGE_WEBHOOK_TOKEN"));
    // The built-in default configuration reads it.
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(bin()
        .args(["config", "check"])
        .current_dir(dir.path())
        .env("ZTBRIDGE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        .env("ZTBRIDGE_INBOUND_TOKEN", "a-long-enough-shared-secret"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("inbound: token required (from environment variable ZTBRIDGE_INBOUND_TOKEN)"),
        "{out}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "config check created nothing in the current directory"
    );
}

#[test]
fn config_check_warns_about_typos_and_impossible_values() {
    let (dir, path) = config_file(&format!(
        "data_dir = \"data\"\n{PD_ROUTE}severities = [\"critcal\", \"sever\"]\nstates = [\"lockot\"]\n\
         [route.config]\nrouting_key = {ROUTING_KEY:?}\n\
         severity_map = \"critical=critical,major=eror\"\nrouting_kye = \"x\"\n"
    ));
    let (code, out, err) = run(bin().args(["config", "check", "--config"]).arg(&path));
    assert_eq!(code, 0, "warnings do not fail the check: {out}\n{err}");
    for want in [
        "`critcal` is read as `critical`",
        "`sever` is not a Superna severity",
        "`lockot` is neither a state kind",
        "did you mean `lockout`?",
        "`eror` (for `major`) is not a PagerDuty severity",
        "did you mean `error`?",
        "routing_kye is not a key transform `pagerduty` reads",
        "did you mean `routing_key`?",
        "5 warnings",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "config check creates no directory"
    );

    // A destination no request could reach (plain http:// without
    // allow_http) is an error, not a dead letter at delivery time.
    let (_http_dir, path) = config_file(&format!(
        "data_dir = \"data\"\n{PD_ROUTE}[route.config]\nrouting_key = {ROUTING_KEY:?}\n\
         url = \"http://pd.example/v2/enqueue\"\n"
    ));
    let (code, out, err) = run(bin().args(["config", "check"]).arg(&path));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("is plain http:// but allow_http is false"),
        "{out}"
    );
    assert!(
        err.contains("this URL could never be delivered to"),
        "{err}"
    );

    // Unknown keys anywhere: an error with a suggestion.
    let (_typo_dir, path) = config_file("listn = \"127.0.0.1:5000\"\n");
    let (code, _, err) = run(bin().args(["config", "check"]).arg(&path));
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `listen`?"), "{err}");
}

#[test]
fn config_check_event_shows_routes_and_requests() {
    let (_dir, path) = config_file(&format!(
        "data_dir = \"data\"\n{PD_ROUTE}severities = [\"critical\"]\n[route.config]\nrouting_key = {ROUTING_KEY:?}\n"
    ));
    let event = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/critical-lockout.json"
    );
    let (code, out, err) = run(bin()
        .args(["config", "check"])
        .arg(&path)
        .args(["--event", event]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route pagerduty: takes it"), "{out}");
    assert!(
        out.contains("\"dedup_key\": \"superna-zt-RSW-20250611-000123\""),
        "body as JSON: {out}"
    );
    assert!(!out.contains(ROUTING_KEY), "secret shown: {out}");
    let warning = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/warning-monitor.json"
    );
    let (code, out, _) = run(bin()
        .args(["config", "check"])
        .arg(&path)
        .args(["--event", warning]));
    assert_eq!(code, 0);
    assert!(out.contains("route pagerduty: skips it"), "{out}");
    assert!(out.contains("no route takes this event"), "{out}");
}

#[test]
fn a_missing_credential_file_is_explained() {
    let (dir, path) = config_file(&format!(
        "{PD_ROUTE}[route.config]\nrouting_key = {{ file = \"pagerduty_routing_key\" }}\n"
    ));
    let (code, _, err) = run(bin().args(["config", "check"]).arg(&path));
    assert_eq!(code, 2);
    let beside = dir.path().join("credentials/pagerduty_routing_key");
    assert!(err.contains("A credential file holds one secret"), "{err}");
    assert!(err.contains("$CREDENTIALS_DIRECTORY is not set"), "{err}");
    assert!(err.contains(&beside.display().to_string()), "{err}");
    // Put there, it is read.
    std::fs::create_dir(dir.path().join("credentials")).unwrap();
    std::fs::write(&beside, format!("{ROUTING_KEY}\n")).unwrap();
    let (code, out, err) = run(bin().args(["config", "check"]).arg(&path));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(from credential file"), "{out}");
}

#[test]
fn the_data_dir_is_found_through_config_and_said_once() {
    let (dir, path) = config_file(&format!("{PD_ROUTE}enabled = false\n"));
    let (code, _, err) = run(bin()
        .args(["events", "list", "--config"])
        .arg(&path)
        .current_dir(dir.path()));
    assert_eq!(code, 2);
    assert_eq!(err.matches("ztbridge-data").count(), 1, "said once: {err}");
    assert!(err.contains("data_dir is not set"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!dir.path().join("ztbridge-data").exists());
}

#[test]
fn log_fields_are_plain_values() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("unsigned.wasm");
    std::fs::copy(wasm_path("pagerduty"), &wasm).unwrap();
    let event = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/critical-lockout.json"
    );
    let (_, _, err) = run(bin().args(["transform", "run"]).arg(&wasm).args([
        "--event",
        event,
        "--set",
        "routing_key=R0UTINGKEYabcdef0123456789abcdef",
    ]));
    assert!(err.contains(&format!("file={}", wasm.display())), "{err}");
}

/// `send-test --config`: the config's listen address and token; a plain
/// warning before sending; an outcome line for every severity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_reads_the_config_and_says_what_happened() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = "send-test-shared-secret-0123";
    let server = common::child::ChildServer::start_with_env(
        dir.path(),
        &format!(
            "[inbound]\ntoken = {{ env = \"FIRST_RUN_TOKEN\" }}\n{}",
            pagerduty_route(&pd, "severities = [\"critical\", \"major\"]")
        ),
        &[("FIRST_RUN_TOKEN", token)],
    )
    .await;
    let config = server.config_path.clone();
    let send = move |extra: &[&str]| {
        let mut c = bin();
        c.args(["send-test", "--config"])
            .arg(&config)
            .args(extra)
            .env("FIRST_RUN_TOKEN", token);
        run(&mut c)
    };
    let send2 = send.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || send2(&["--severity", "critical"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("REAL incident"), "{err}");
    assert!(out.contains("HTTP 202"), "{out}");
    assert!(out.contains("outcome: accepted for pagerduty"), "{out}");
    pd.wait_for(1, std::time::Duration::from_secs(20)).await;

    let send3 = send.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || send3(&["--severity", "warning"]))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("outcome: accepted, but no route takes a warning"),
        "{out}"
    );

    let (code, out, err) =
        tokio::task::spawn_blocking(move || send(&["--dry-run", "--severity", "major"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: nothing is sent"), "{out}");
    assert!(out.contains("route pagerduty: takes it"), "{out}");
    assert!(!err.contains("REAL incident"), "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        pd.received().len(),
        1,
        "the warning and the dry run sent nothing"
    );
}

/// `events retry` takes a Superna event ID; `events purge --dry-run`
/// deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_retry_by_event_id_and_purge_dry_run() {
    let pd = StubPagerDuty::start().await;
    pd.outage((400, vec![], "{\"status\":\"invalid event\"}".into()));
    let dir = tempfile::tempdir().unwrap();
    let server = common::child::ChildServer::start(dir.path(), &pagerduty_route(&pd, "")).await;
    let mut event: serde_json::Value =
        serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    event["id"] = "RSW-FIRST-RUN-1".into();
    let (status, answer) = server.post(&event.to_string()).await;
    assert_eq!(status, 202);
    let receipt = answer["receipt_id"].as_str().unwrap().to_string();
    wait_until(std::time::Duration::from_secs(20), || {
        (server.show(&receipt)["deliveries"][0]["state"] == "failed").then_some(())
    })
    .await
    .expect("a dead letter");
    pd.end_outage();
    let (code, out, err) = server.events(&["retry", "RSW-FIRST-RUN-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{receipt} pagerduty: pending")),
        "{out}"
    );
    wait_until(std::time::Duration::from_secs(20), || {
        (server.show(&receipt)["deliveries"][0]["state"] == "delivered").then_some(())
    })
    .await
    .expect("delivered after retry");
    let (code, out, err) =
        server.events(&["purge", "--delivered-before", "2999-01-01", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would purge 1 webhook "), "{out}");
    assert_eq!(
        server.show(&receipt)["receipt_id"],
        receipt.as_str(),
        "nothing deleted"
    );
    let (code, _, _) = server.events(&["retry", "RSW-NO-SUCH-EVENT"]);
    assert_eq!(code, 1);
}

/// The packages' /etc/ztbridge/ztbridge.toml checks clean once the routing
/// key is in `credentials/` beside it, as the quick start puts it.
#[test]
fn the_packaged_config_checks_clean_with_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztbridge.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ztbridge.toml"),
        &path,
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("credentials")).unwrap();
    std::fs::write(
        dir.path().join("credentials/pagerduty_routing_key"),
        ROUTING_KEY,
    )
    .unwrap();
    let (code, out, err) = run(bin().args(["config", "check"]).arg(&path));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("data_dir: /var/lib/ztbridge (data_dir in the config"),
        "{out}"
    );
    assert!(out.contains("0 warnings"), "{out}");
}
