//! Compiles the guest transforms in `transforms/` to wasm32-wasip2
//! components so the binary can embed the built-in ones and the tests and
//! benchmarks can load the testing ones.
//!
//! The nested cargo uses its own target directory (the outer build holds the
//! lock on the main one) and a clean environment (the outer build's
//! RUSTFLAGS, target and profile variables must not leak into it).
//! The components land in `$OUT_DIR/wasm/*.wasm`; `ZTBRIDGE_WASM_DIR`
//! points there for tests and benchmarks.  The nested build is for
//! wasm32-wasip2 whatever the outer target is (a musl release build
//! included): it inherits neither `--target` nor the outer linker or
//! RUSTFLAGS.
//!
//! It also sets what `ztbridge --version` prints: the git commit
//! (`ZTBRIDGE_GIT_HASH`, or `git rev-parse`), the build date
//! (`SOURCE_DATE_EPOCH` when set, for reproducible builds) and the
//! contract versions, read from the `package` lines of `wit/*.wit`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (cargo package, file name in OUT_DIR/wasm)
const GUESTS: &[(&str, &str)] = &[
    ("zt-pagerduty", "pagerduty.wasm"),
    ("zt-jitbit", "jitbit.wasm"),
    ("zt-opsgenie", "opsgenie.wasm"),
    ("zt-splunk", "splunk.wasm"),
    ("zt-template", "template.wasm"),
    ("zt-test-empty", "empty.wasm"),
    ("zt-test-hostile", "hostile.wasm"),
    ("zt-test-probe", "probe.wasm"),
    ("zt-test-v01", "v01.wasm"),
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    for dir in ["transforms", "wit"] {
        rerun_if_changed_tree(&root.join(dir));
    }
    println!("cargo:rerun-if-env-changed=ZTBRIDGE_GUEST_TARGET_DIR");
    build_info(&root);

    // target/<profile>/build/ztbridge-<hash>/out -> target/wasm-guests, shared
    // by every profile so the guests are built once; with `--target T` the
    // layout is target/T/<profile>/build/..., and the guests still go to
    // target/wasm-guests.
    let guest_target = env::var_os("ZTBRIDGE_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let mut top = out.ancestors().nth(4);
            if let (Some(t), Ok(triple)) = (top, env::var("TARGET"))
                && t.file_name().is_some_and(|n| *n == *triple)
            {
                top = t.parent();
            }
            top.map(|t| t.join("wasm-guests"))
                .unwrap_or_else(|| out.join("wasm-guests"))
        });

    ensure_wasm_target();

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("transforms"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&guest_target);
    for (pkg, _) in GUESTS {
        cmd.args(["-p", pkg]);
    }
    // A clean environment for the nested build.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = key == "CARGO_HOME"
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_REGISTRIES_")
            || key == "CARGO_MAKEFLAGS";
        let outer = key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key == "RUSTDOC"
            || key == "TARGET"
            || key == "HOST"
            || key == "OUT_DIR"
            || key == "PROFILE"
            || key == "OPT_LEVEL"
            || key == "DEBUG"
            || key == "NUM_JOBS"
            || key == "CARGO_ENCODED_RUSTFLAGS";
        if outer && !keep {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo for the guest transforms: {e}"));
    if !status.success() {
        panic!(
            "building the guest transforms in transforms/ failed (cargo's output is above). \
             If it says the wasm32-wasip2 target is missing: `rustup target add wasm32-wasip2`."
        );
    }

    let wasm_out = out.join("wasm");
    std::fs::create_dir_all(&wasm_out).expect("create OUT_DIR/wasm");
    for (pkg, file) in GUESTS {
        let built = guest_target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", pkg.replace('-', "_")));
        std::fs::copy(&built, wasm_out.join(file))
            .unwrap_or_else(|e| panic!("copy {} -> {file}: {e}", built.display()));
    }
    println!("cargo:rustc-env=ZTBRIDGE_WASM_DIR={}", wasm_out.display());
}

/// A fresh checkout must build with no other step: when rustup manages the
/// toolchain and the wasm32-wasip2 target is missing, add it (seconds).
/// Set ZTBRIDGE_NO_RUSTUP=1 to forbid that (the build then fails with the
/// command to run).
fn ensure_wasm_target() {
    println!("cargo:rerun-if-env-changed=ZTBRIDGE_NO_RUSTUP");
    if env::var_os("ZTBRIDGE_NO_RUSTUP").is_some() {
        return;
    }
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return; // no rustup: the toolchain is managed some other way
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return;
    }
    println!(
        "cargo:warning=installing the wasm32-wasip2 target with rustup (needed to build the built-in transforms)"
    );
    let ok = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("cargo:warning=`rustup target add wasm32-wasip2` failed; run it by hand");
    }
}

/// `ZTBRIDGE_GIT_HASH`, `ZTBRIDGE_BUILD_DATE` and `ZTBRIDGE_CONTRACTS`
/// for `ztbridge --version`.
fn build_info(root: &Path) {
    println!("cargo:rerun-if-env-changed=ZTBRIDGE_GIT_HASH");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let hash = match env::var("ZTBRIDGE_GIT_HASH") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ => {
            // A new commit or checkout changes HEAD or the branch's ref.
            for path in [
                git(&["rev-parse", "--git-path", "HEAD"]),
                git(&["symbolic-ref", "-q", "HEAD"])
                    .and_then(|r| git(&["rev-parse", "--git-path", &r])),
                git(&["rev-parse", "--git-path", "packed-refs"]),
            ]
            .into_iter()
            .flatten()
            {
                let path = root.join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=ZTBRIDGE_GIT_HASH={hash}");
    if let Ok(target) = env::var("TARGET") {
        println!("cargo:rustc-env=ZTBRIDGE_TARGET={target}");
    }

    let secs = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    println!("cargo:rustc-env=ZTBRIDGE_BUILD_DATE={y:04}-{m:02}-{d:02}");

    // `package ztbridge:transform@0.1.0;` in each wit/*.wit.
    let mut contracts = Vec::new();
    let wit = root.join("wit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&wit)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "wit"))
    {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("package ") {
                let name = rest.trim().trim_end_matches(';').trim();
                if !contracts.iter().any(|c| c == name) {
                    contracts.push(name.to_string());
                }
            }
        }
    }
    if contracts.is_empty() {
        panic!("no `package NAME@VERSION;` line in {}/*.wit", wit.display());
    }
    println!("cargo:rustc-env=ZTBRIDGE_CONTRACTS={}", contracts.join(" "));
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Cargo scans a directory given to rerun-if-changed recursively.
fn rerun_if_changed_tree(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
}
