//! ci/deps.sh decides whether to install PostgreSQL: only when no
//! `<root>/<version>/bin` has the server programs.  Run against made-up
//! roots, with the commands that would change the machine printed instead.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn deps(root: &Path) -> String {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ci/deps.sh"))
        .env("ZTBRIDGE_PG_ROOT", root)
        .env("ZTBRIDGE_DEPS_DRY_RUN", "1")
        // A browser "present", so only PostgreSQL's decision shows.
        .env("ZTBRIDGE_CHROMIUM_BIN", "/bin/sh")
        .output()
        .expect("run ci/deps.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ci/deps.sh failed: {text}");
    text
}

fn server(root: &Path, version: &str, programs: &[&str], mode: u32) {
    let bin = root.join(version).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in programs {
        let f = bin.join(p);
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn installs(text: &str) -> bool {
    text.contains(
        "would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql",
    )
}

const ALL: &[&str] = &["initdb", "pg_ctl", "postgres", "pgbench"];

#[test]
fn installs_when_there_is_no_server() {
    let root = tempfile::tempdir().unwrap();
    let text = deps(&root.path().join("absent"));
    assert!(installs(&text), "{text}");
    // Without Debian's main cluster, decided before the install.
    let cluster = text
        .find("create_main_cluster")
        .expect("createcluster.d drop-in");
    assert!(cluster < text.find("apt-get install").unwrap(), "{text}");
    assert!(text.contains("apt-get update"), "{text}");

    let text = deps(root.path()); // exists, empty
    assert!(installs(&text), "{text}");
}

#[test]
fn installs_when_the_server_is_incomplete() {
    let root = tempfile::tempdir().unwrap();
    // The client package alone (psql, no server).
    server(root.path(), "15", &["psql", "pg_dump"], 0o755);
    assert!(installs(&deps(root.path())));
    // initdb not executable.
    server(root.path(), "16", ALL, 0o644);
    assert!(installs(&deps(root.path())));
    // initdb without pg_ctl.
    server(root.path(), "17", &["initdb", "postgres"], 0o755);
    assert!(installs(&deps(root.path())));
}

#[test]
fn does_nothing_when_a_server_is_there_and_names_the_newest() {
    let root = tempfile::tempdir().unwrap();
    server(root.path(), "9.6", ALL, 0o755);
    server(root.path(), "15", ALL, 0o755);
    server(root.path(), "16", &["initdb"], 0o755); // incomplete: not chosen
    let text = deps(root.path());
    assert!(!text.contains("would run"), "{text}");
    assert!(
        text.contains(&format!("present: {}/15/bin", root.path().display())),
        "{text}"
    );
}
