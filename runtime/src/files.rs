//! Private files: the data directory holds alert data (users, paths,
//! client IPs), transform state and compiled native code, so it is 0700
//! and its files 0600, whatever the umask the service was started with.
//!
//! Two parts: [`private_umask`] makes every file the process creates from
//! then on private (SQLite's database, WAL and SHM files, `serve.lock`,
//! the compile cache...), and [`make_private`] tightens what an earlier
//! run (or another umask) left open.
//!
//! May import: nothing of the crate.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Sets the process umask to 077: files the process creates are 0600 and
/// directories 0700 at most.  For the commands that write the data
/// directory (`serve`, `config check`, `events`), not for those that
/// write files meant for others (`transform sign`, `transform new`).
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// A file or directory whose mode was tightened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    /// Which.
    pub path: PathBuf,
    /// Its mode before (permission bits).
    pub was: u32,
    /// Its mode now.
    pub now: u32,
}

/// Creates `dir` (0700) when missing and removes group and other access
/// from it, from the files in it and from its subdirectories' files (one
/// level: the compile cache).  Symbolic links are not followed.  Returns
/// what changed.
pub fn make_private(dir: &Path) -> std::io::Result<Vec<Tightened>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A data directory may be a link (systemd's DynamicUser): its target
    // is what must be private.
    let dir = &std::fs::canonicalize(dir)?;
    let mut changed = Vec::new();
    tighten(dir, &mut changed)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let meta = entry.metadata()?;
        if meta.is_file() {
            tighten(&entry.path(), &mut changed)?;
        } else if meta.is_dir() {
            tighten(&entry.path(), &mut changed)?;
            for inner in std::fs::read_dir(entry.path())?.flatten() {
                if inner.metadata().is_ok_and(|m| m.is_file()) {
                    tighten(&inner.path(), &mut changed)?;
                }
            }
        }
    }
    Ok(changed)
}

/// Removes group and other permission bits from `path` (not following a
/// symbolic link); records the change.  Files owned by another user are
/// left as they are (chmod would fail; the owner chose).
fn tighten(path: &Path, changed: &mut Vec<Tightened>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let was = meta.mode() & 0o7777;
    if was & 0o077 == 0 || meta.uid() != rustix::process::geteuid().as_raw() {
        return Ok(());
    }
    let now = was & !0o077;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(now))?;
    changed.push(Tightened {
        path: path.to_path_buf(),
        was,
        now,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn open_files_and_directories_are_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let db = dir.join("events.sqlite3");
        std::fs::write(&db, b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
        let cache = dir.join("compile-cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o775)).unwrap();
        let entry = cache.join("a.cwasm");
        std::fs::write(&entry, b"y").unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644)).unwrap();
        let outside = root.path().join("outside");
        std::fs::write(&outside, b"z").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        let changed = make_private(&dir).unwrap();
        assert_eq!(changed.len(), 4, "{changed:?}");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&entry), 0o600);
        // A link is not followed out of the directory.
        assert_eq!(mode(&outside), 0o644);
        assert!(make_private(&dir).unwrap().is_empty());

        let fresh = root.path().join("a/b/fresh");
        make_private(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        // Through a link, the directory it names is made private.
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = root.path().join("link-to-real");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        make_private(&link).unwrap();
        assert_eq!(mode(&real), 0o700);
    }
}
