//! The build ID of the runtime: a hash of its sources, the dependency lock
//! file and its version.  The compile cache names entries with it, so a
//! compiled transform is only ever loaded by the build that wrote it
//! (`ZTBRIDGE_BUILD_ID`, 16 hex digits).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

fn feed(path: &Path, h: &mut DefaultHasher) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            feed(&e, h);
        }
    } else if let Ok(bytes) = std::fs::read(path) {
        path.to_string_lossy().hash(h);
        bytes.hash(h);
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut h = DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    // Relative names, so the ID does not depend on where the tree is.
    std::env::set_current_dir(dir).expect("manifest dir");
    feed(Path::new("src"), &mut h);
    feed(Path::new("Cargo.toml"), &mut h);
    feed(Path::new("../Cargo.lock"), &mut h);
    println!("cargo:rustc-env=ZTBRIDGE_BUILD_ID={:016x}", h.finish());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");
}
