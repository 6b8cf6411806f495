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
