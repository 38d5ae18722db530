//! The hash cache: digests of files by identity (device, inode, size, mtime), so a reindex or
//! re-import does not hash unchanged bytes again.

use pumas_runtime::time::now_ms;
use sqlx::Row;

use super::Store;
use crate::error::IndexError;

/// The identity of a file for the hash cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKey {
    /// Device.
    pub dev: i64,
    /// Inode.
    pub ino: i64,
    /// Size.
    pub size: i64,
    /// Modification time in nanoseconds.
    pub mtime_ns: i64,
}

impl FileKey {
    /// The key of a file's metadata.
    #[cfg(unix)]
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            dev: meta.dev() as i64,
            ino: meta.ino() as i64,
            size: meta.len() as i64,
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
        }
    }
}

impl Store {
    /// Cached digests of a file identity, if its size and mtime still match.
    pub async fn cached_hash(&self, key: &FileKey) -> Result<Option<(String, String)>, IndexError> {
        let row = sqlx::query(
            "SELECT sha256, blake3 FROM hash_cache WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ?",
        )
        .bind(key.dev)
        .bind(key.ino)
        .bind(key.size)
        .bind(key.mtime_ns)
        .fetch_optional(self.db.read())
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Remembers the digests of a file identity.
    pub async fn put_hash(&self, key: &FileKey, sha256: &str, blake3: &str) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO hash_cache (dev, ino, size, mtime_ns, sha256, blake3, cached_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (dev, ino) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                sha256 = excluded.sha256, blake3 = excluded.blake3, cached_ms = excluded.cached_ms",
        )
        .bind(key.dev)
        .bind(key.ino)
        .bind(key.size)
        .bind(key.mtime_ns)
        .bind(sha256)
        .bind(blake3)
        .bind(now_ms())
        .execute(self.db.write())
        .await?;
        Ok(())
    }
}
