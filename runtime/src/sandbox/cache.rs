//! On-disk cache of compiled components.
//!
//! Compiling a component with cranelift costs 25-60 ms for a small Rust
//! transform but seconds for a JavaScript or Python one (12-18 MB of wasm
//! carrying a whole language runtime).  The cache keeps the output of
//! `Engine::precompile_component` in a directory, one file per component:
//!
//! * the name binds an entry to the sha256 of the component bytes (the
//!   transform's digest, taken after its signature was verified), to this
//!   build of the runtime (`ZTBRIDGE_BUILD_ID`, a hash of its sources and
//!   locked dependencies) AND to the engine's
//!   `precompile_compatibility_hash()` (wasmtime version, target, and
//!   every setting that changes code generation: fuel, epochs, ...), so an
//!   artifact is only ever loaded by the build and engine that produced it;
//!   entries of other builds for the same component are removed when a new
//!   one is written;
//! * the directory is created 0700 and entries 0600, whatever the umask;
//! * loading native code from a file is only as safe as the file: an entry
//!   is loaded only when it is a regular file owned by this user that no
//!   one else may write, in a directory owned by this user (or root) that no
//!   one else may write to (nor its parent, unless sticky).  Otherwise the
//!   entry is refused and rebuilt, or the directory is not used at all;
//! * entries are written to a temporary file in the same directory and
//!   renamed into place, so a reader never sees half a file and concurrent
//!   writers do not corrupt each other;
//! * an entry that fails to load (truncated, corrupt, from another wasmtime)
//!   is ignored, recompiled and replaced.
//!
//! Loading uses `Component::deserialize_file` (mmap), 8-30x faster than
//! deserialising from bytes for large artifacts.

use std::fs::Metadata;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// This build of the runtime (see the module documentation).
const BUILD_ID: &str = env!("ZTBRIDGE_BUILD_ID");

/// Where a component came from on a cached load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled and stored.
    Miss,
    /// Compiled; an unusable or untrusted entry was replaced.
    Replaced,
    /// Compiled; the cache could not be written (the reason is logged).
    Unwritable,
    /// Compiled; the cache directory is not trusted (owned by someone
    /// else, or writable by others), so it was neither read nor written.
    Untrusted,
}

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    /// Where entries live (`<data_dir>/compile-cache`).
    dir: PathBuf,
}

/// Why a file or directory may have been written by someone else, or
/// `None` when only this user (or root, for a directory) could have.
fn untrusted(meta: &Metadata, want_dir: bool) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if meta.file_type().is_symlink() {
        return Some("a symbolic link".into());
    }
    if want_dir != meta.is_dir() || (!want_dir && !meta.is_file()) {
        return Some("not a regular file or directory as expected".into());
    }
    let owner_ok = meta.uid() == me || (want_dir && meta.uid() == 0);
    if !owner_ok {
        return Some(format!(
            "owned by uid {}, not by this user ({me})",
            meta.uid()
        ));
    }
    let sticky = want_dir && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Some(format!("mode {:o} lets others write to it", mode & 0o777));
    }
    None
}

impl CompileCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> CompileCache {
        CompileCache { dir: dir.into() }
    }

    /// The entry file for `bytes` compiled by `engine` in this build.
    pub fn entry_path(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> PathBuf {
        // Hashed with sha256 (not std's DefaultHasher, whose output may
        // change between Rust releases) so entry names are stable.
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        let wasm = hex::encode(Sha256::digest(bytes));
        self.dir
            .join(format!("{wasm}-{BUILD_ID}-{engine_key}.cwasm"))
    }

    /// Whether the directory may be read: `Err` with the reason when it
    /// (or its parent) may have been written by someone else.  A missing
    /// directory is fine (it is created private).  A directory of ours that
    /// is too open is made private first.
    fn check_dir(&self) -> Result<(), String> {
        let meta = match std::fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let me = rustix::process::geteuid().as_raw();
        if meta.is_dir() && meta.uid() == me && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot make it private: {e}"))?;
            tracing::warn!(dir = %self.dir.display(), "compile cache directory was open to others; made it 0700");
            return self.check_dir();
        }
        if let Some(why) = untrusted(&meta, true) {
            return Err(why);
        }
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let meta = std::fs::metadata(parent).map_err(|e| e.to_string())?;
            if let Some(why) = untrusted(&meta, true) {
                return Err(format!("its parent {}: {why}", parent.display()));
            }
        }
        Ok(())
    }

    /// The component for `bytes`: from the cache when a usable, trusted
    /// entry exists, otherwise compiled (and stored).  Compile errors are
    /// returned as they are; cache problems never fail the load.
    pub(crate) fn load(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        if let Err(why) = self.check_dir() {
            tracing::warn!(dir = %self.dir.display(), reason = %why, "compile cache directory not trusted: not used (transforms are compiled at each start)");
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Untrusted));
        }
        let path = self.entry_path(engine, bytes);
        let mut stale = false;
        match std::fs::symlink_metadata(&path) {
            Err(_) => {}
            Ok(meta) => match untrusted(&meta, false) {
                Some(why) => {
                    tracing::warn!(entry = %path.display(), reason = %why, "refusing a compile cache entry that someone else may have written; rebuilding it");
                    stale = true;
                }
                None => {
                    // SAFETY: the entry is a regular file owned by this
                    // user that no one else may write, in a directory only
                    // this user may write to (checked above), so it was
                    // written by this module: by `precompile_component` of
                    // this build with an engine of the same compatibility
                    // hash (both are in the name), via rename (never
                    // modified in place).  wasmtime still checks the header
                    // and refuses foreign or incompatible artifacts; those
                    // are rebuilt below.
                    match unsafe { Component::deserialize_file(engine, &path) } {
                        Ok(c) => return Ok((c, CacheOutcome::Hit)),
                        Err(e) => {
                            tracing::warn!(entry = %path.display(), error = %format!("{e:#}"), "ignoring an unusable compile cache entry");
                            stale = true;
                        }
                    }
                }
            },
        }
        let compiled = engine.precompile_component(bytes)?;
        // SAFETY: produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        let outcome = match self.store(&path, &compiled) {
            Ok(()) if stale => CacheOutcome::Replaced,
            Ok(()) => CacheOutcome::Miss,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the compile cache");
                CacheOutcome::Unwritable
            }
        };
        Ok((component, outcome))
    }

    /// Writes an entry atomically (temporary file 0600, fsync, rename),
    /// then removes the entries other builds made of the same component.
    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("entry");
        let tmp = self.dir.join(format!(
            ".tmp-{}-{:?}-{name}",
            std::process::id(),
            std::thread::current().id(),
        ));
        let result = (|| {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(compiled)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        // `<wasm>-<build>-<engine>.cwasm`: same wasm, another build.
        if let Some(wasm) = name.split('-').next() {
            let ours = format!("{wasm}-{BUILD_ID}-");
            for entry in std::fs::read_dir(&self.dir)?.flatten() {
                let other = entry.file_name();
                let other = other.to_string_lossy();
                if other.starts_with(&format!("{wasm}-"))
                    && !other.starts_with(&ours)
                    && other.ends_with(".cwasm")
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// Feeds `Hash` output into sha256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read from the inner hasher
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> wasmtime::Engine {
        let mut c = wasmtime::Config::new();
        c.consume_fuel(true);
        wasmtime::Engine::new(&c).unwrap()
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ztbridge-cache-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// `(component)` in binary form: magic, version 0x0d, layer 1.
    fn wasm() -> Vec<u8> {
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }

    #[test]
    fn miss_then_hit_then_corrupt_entry_is_rebuilt() {
        let dir = tmp();
        let cache = CompileCache::new(&dir);
        let engine = engine();
        let bytes = wasm();
        let (_, o) = cache.load(&engine, &bytes).unwrap();
        assert_eq!(o, CacheOutcome::Miss);
        let (_, o) = cache.load(&engine, &bytes).unwrap();
        assert_eq!(o, CacheOutcome::Hit);

        let entry = cache.entry_path(&engine, &bytes);
        std::fs::write(&entry, b"not an artifact").unwrap();
        let (_, o) = cache.load(&engine, &bytes).unwrap();
        assert_eq!(o, CacheOutcome::Replaced);
        let (_, o) = cache.load(&engine, &bytes).unwrap();
        assert_eq!(o, CacheOutcome::Hit);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn engines_with_other_settings_get_their_own_entry() {
        let dir = tmp();
        let cache = CompileCache::new(&dir);
        let fuel = engine();
        let plain = wasmtime::Engine::default();
        let bytes = wasm();
        assert_ne!(
            cache.entry_path(&fuel, &bytes),
            cache.entry_path(&plain, &bytes)
        );
        assert_eq!(cache.load(&fuel, &bytes).unwrap().1, CacheOutcome::Miss);
        assert_eq!(cache.load(&plain, &bytes).unwrap().1, CacheOutcome::Miss);
        assert_eq!(cache.load(&plain, &bytes).unwrap().1, CacheOutcome::Hit);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn entries_are_private_and_an_entry_others_may_write_is_rebuilt() {
        let dir = tmp();
        let cache = CompileCache::new(&dir);
        let engine = engine();
        let bytes = wasm();
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, CacheOutcome::Miss);
        let entry = cache.entry_path(&engine, &bytes);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&entry), 0o600);
        assert!(entry.to_string_lossy().contains(BUILD_ID));

        for open in [0o666, 0o620, 0o602] {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(open)).unwrap();
            assert_eq!(
                cache.load(&engine, &bytes).unwrap().1,
                CacheOutcome::Replaced,
                "{open:o}"
            );
            assert_eq!(mode(&entry), 0o600);
            assert_eq!(cache.load(&engine, &bytes).unwrap().1, CacheOutcome::Hit);
        }

        // A directory of ours left open is made private again.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, CacheOutcome::Hit);
        assert_eq!(mode(&dir), 0o700);

        // A symbolic link in place of an entry is refused.
        let elsewhere = dir.with_extension("elsewhere");
        std::fs::copy(&entry, &elsewhere).unwrap();
        std::fs::remove_file(&entry).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
        assert_eq!(
            cache.load(&engine, &bytes).unwrap().1,
            CacheOutcome::Replaced
        );
        assert!(
            !std::fs::symlink_metadata(&entry)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let _ = std::fs::remove_file(&elsewhere);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_owned_by_someone_else_are_not_loaded() {
        // Needs to give files away (root, as in CI containers); skipped
        // otherwise.
        let dir = tmp();
        let cache = CompileCache::new(&dir);
        let engine = engine();
        let bytes = wasm();
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, CacheOutcome::Miss);
        let entry = cache.entry_path(&engine, &bytes);
        if std::os::unix::fs::chown(&entry, Some(65534), None).is_err() {
            eprintln!("skipped: cannot chown (not root)");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        assert_eq!(
            cache.load(&engine, &bytes).unwrap().1,
            CacheOutcome::Replaced
        );
        assert_eq!(
            std::fs::metadata(&entry).unwrap().uid(),
            rustix::process::geteuid().as_raw()
        );
        // A whole directory owned by someone else is not used at all.
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        assert_eq!(
            cache.load(&engine, &bytes).unwrap().1,
            CacheOutcome::Untrusted
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn another_build_s_entries_are_not_loaded_and_are_removed() {
        let dir = tmp();
        let cache = CompileCache::new(&dir);
        let engine = engine();
        let bytes = wasm();
        let ours = cache.entry_path(&engine, &bytes);
        let name = ours.file_name().unwrap().to_string_lossy().into_owned();
        let old = dir.join(name.replace(BUILD_ID, "0123456789abcdef"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::fs::write(&old, b"an old build's artifact").unwrap();
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, CacheOutcome::Miss);
        assert!(!old.exists());
        assert!(ours.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_wasm_is_an_error_and_nothing_is_stored() {
        let dir = tmp();
        let cache = CompileCache::new(&dir);
        assert!(cache.load(&engine(), b"not wasm").is_err());
        assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
