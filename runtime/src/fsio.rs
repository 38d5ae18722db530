//! Atomic file writes: a temp file created exclusively in the same directory, fsync, rename,
//! fsync the directory. A crash at any point leaves either the old file or the new one, never a
//! torn one, and the temp name cannot be a planted symlink (it is created `O_EXCL`).

use std::io::{self, Write};
use std::path::Path;

/// Prefix of every temp file Pumas writes beside a file it replaces. The full prefix adds a mark
/// of the process that wrote it ([`temp_prefix`]), so [`remove_stale_temps`] can remove what a
/// killed process left without touching a write in progress.
pub const TEMP_PREFIX: &str = ".pumas-tmp-";

/// `TEMP_PREFIX` plus this process's mark: random per process, so neither a restart with the
/// same pid (pid 1 in a container) nor another process on the same files is mistaken for us.
pub fn temp_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(crate::time::now_us() as u128);
        format!("{TEMP_PREFIX}{:08x}-", h.finish() as u32)
    })
}

/// A new temp file in `dir`, named with [`temp_prefix`], created exclusively (`O_EXCL`, so a
/// planted symlink is never followed). Deleted on drop unless persisted.
pub fn temp_file_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().prefix(temp_prefix()).tempfile_in(dir)
}

/// Removes the temp files another process left in `dir` (not below it): a write it did not
/// finish before it was killed. Returns how many went.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let mine = temp_prefix();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && !name.starts_with(mine) && entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent directory"))?;
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Flushes a directory entry change (rename, create, unlink) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Copies `from` to `to` and makes the copy durable before returning: a caller may delete the
/// source right after (a MOVE across filesystems).
pub fn copy_durable(from: &Path, to: &Path) -> io::Result<u64> {
    let n = std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("metadata.json");
        write_atomic(&path, b"first")?;
        write_atomic(&path, b"second")?;
        assert_eq!(std::fs::read(&path)?, b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        Ok(())
    }

    #[test]
    fn only_temps_of_other_processes_are_swept() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let stale = dir.path().join(format!("{TEMP_PREFIX}deadbeef-x1y2z3"));
        std::fs::write(&stale, b"half a file")?;
        let ours = temp_file_in(dir.path())?;
        std::fs::write(dir.path().join("metadata.json"), b"{}")?;
        assert_eq!(remove_stale_temps(dir.path())?, 1);
        assert!(!stale.exists(), "a dead process's temp file goes");
        assert!(ours.path().exists(), "a write in progress here stays");
        assert!(dir.path().join("metadata.json").exists());
        Ok(())
    }
}
