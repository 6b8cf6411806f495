//! Compiles the guest transforms in `transforms/` to wasm32-wasip2
//! components so the binary can embed the built-in ones and the tests and
//! benchmarks can load the testing ones.
//!
//! The nested cargo uses its own target directory (the outer build holds the
//! lock on the main one) and a clean environment (the outer build's
//! RUSTFLAGS, target and profile variables must not leak into it).
//! The components land in `$OUT_DIR/wasm/*.wasm`; `ZTBRIDGE_WASM_DIR`
//! points there for tests and benchmarks.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (cargo package, file name in OUT_DIR/wasm)
const GUESTS: &[(&str, &str)] = &[
    ("zt-pagerduty", "pagerduty.wasm"),
    ("zt-jitbit", "jitbit.wasm"),
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

    // target/<profile>/build/ztbridge-<hash>/out -> target/wasm-guests, shared
    // by every profile so the guests are built once.
    let guest_target = env::var_os("ZTBRIDGE_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            out.ancestors()
                .nth(4)
                .map(|t| t.join("wasm-guests"))
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

/// Cargo scans a directory given to rerun-if-changed recursively.
fn rerun_if_changed_tree(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
}
