//! On-disk cache of compiled components.
//!
//! Compiling a component with cranelift costs 25-60 ms for a small Rust
//! transform but seconds for a JavaScript or Python one (12-18 MB of wasm
//! carrying a whole language runtime).  The cache keeps the output of
//! `Engine::precompile_component` in a directory, one file per component:
//!
//! * the key is the sha256 of the component bytes AND the engine's
//!   `precompile_compatibility_hash()` (wasmtime version, target, and every
//!   setting that changes code generation: fuel, epochs, ...), so an
//!   artifact is only ever loaded by an engine that could have produced it;
//! * entries are written to a temporary file in the same directory and
//!   renamed into place, so a reader never sees half a file and concurrent
//!   writers do not corrupt each other;
//! * an entry that fails to load (truncated, corrupt, from another wasmtime)
//!   is ignored, recompiled and replaced.
//!
//! Loading uses `Component::deserialize_file` (mmap), 8-30x faster than
//! deserialising from bytes for large artifacts.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Where a component came from on a cached load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled and stored.
    Miss,
    /// Compiled; an unusable entry was replaced.
    Replaced,
    /// Compiled; the cache could not be written (the reason is logged).
    Unwritable,
}

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    /// Where entries live (`<data_dir>/compile-cache`).
    dir: PathBuf,
}

impl CompileCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> CompileCache {
        CompileCache { dir: dir.into() }
    }

    /// The entry file for `bytes` compiled by `engine`.
    pub fn entry_path(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> PathBuf {
        // Hashed with sha256 (not std's DefaultHasher, whose output may
        // change between Rust releases) so entry names are stable.
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        let wasm = hex::encode(Sha256::digest(bytes));
        self.dir.join(format!("{wasm}-{engine_key}.cwasm"))
    }

    /// The component for `bytes`: from the cache when a usable entry
    /// exists, otherwise compiled (and stored).  Compile errors are
    /// returned as they are; cache problems never fail the load.
    pub(crate) fn load(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        let path = self.entry_path(engine, bytes);
        let mut stale = false;
        if path.is_file() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name),
            // and only by this module, via rename (never modified in place).
            // wasmtime still checks the header and refuses foreign or
            // incompatible artifacts; those are rebuilt below.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(entry = %path.display(), error = %format!("{e:#}"), "ignoring an unusable compile cache entry");
                    stale = true;
                }
            }
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

    /// Writes an entry atomically: temporary file, fsync, rename.
    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{:?}-{}",
            std::process::id(),
            std::thread::current().id(),
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry")
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(compiled)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
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

    #[test]
    fn invalid_wasm_is_an_error_and_nothing_is_stored() {
        let dir = tmp();
        let cache = CompileCache::new(&dir);
        assert!(cache.load(&engine(), b"not wasm").is_err());
        assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
