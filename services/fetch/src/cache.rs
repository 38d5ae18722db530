//! The hub search cache: `<root>/shared-resources/cache/search.sqlite`, its own file (not
//! models.db). Entries are whole answer pages keyed by the normalized query; an entry older than
//! its TTL is still served when the hub is slow or down, while a refresh runs.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pumas_runtime::sqlite::Db;

/// A cached answer.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The stored body (JSON of the answer page).
    pub body: String,
    /// When the hub answered it.
    pub fetched_at: SystemTime,
}

impl Entry {
    /// Older than `ttl`.
    pub fn is_stale(&self, ttl: Duration) -> bool {
        self.fetched_at.elapsed().map(|age| age > ttl).unwrap_or(true)
    }
}

/// Answers kept at most, newest first (besides the age limit `put` is given).
pub const MAX_ENTRIES: i64 = 2000;

/// The cache.
#[derive(Clone)]
pub struct SearchCache {
    db: Db,
}

use pumas_runtime::time::millis;

impl SearchCache {
    /// Opens (or creates) the cache at `path`. An unreadable cache is replaced: it holds nothing
    /// that cannot be fetched again.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        match Self::open_once(path).await {
            Ok(cache) => Ok(cache),
            Err(err) => {
                tracing::warn!(error = %err, path = %path.display(), "search cache unusable; starting a new one");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                Self::open_once(path).await
            }
        }
    }

    async fn open_once(path: &Path) -> Result<Self, sqlx::Error> {
        let db = Db::open(path, 2).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS search_cache (
                key TEXT PRIMARY KEY,
                body TEXT NOT NULL,
                fetched_at INTEGER NOT NULL
            )",
        )
        .execute(db.write())
        .await?;
        Ok(Self { db })
    }

    /// The entry for `key`, fresh or stale.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, sqlx::Error> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT body, fetched_at FROM search_cache WHERE key = ?")
                .bind(key)
                .fetch_optional(self.db.read())
                .await?;
        Ok(row.map(|(body, at)| Entry {
            body,
            fetched_at: UNIX_EPOCH + Duration::from_millis(at.max(0) as u64),
        }))
    }

    /// Stores an answer, and drops entries older than `keep` or beyond the newest
    /// [`MAX_ENTRIES`], so the file stays small.
    pub async fn put(&self, key: &str, body: &str, keep: Duration) -> Result<SystemTime, sqlx::Error> {
        let now = SystemTime::now();
        sqlx::query("INSERT OR REPLACE INTO search_cache (key, body, fetched_at) VALUES (?, ?, ?)")
            .bind(key)
            .bind(body)
            .bind(millis(now))
            .execute(self.db.write())
            .await?;
        sqlx::query(
            "DELETE FROM search_cache WHERE fetched_at < ? OR key IN
               (SELECT key FROM search_cache ORDER BY fetched_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
        )
        .bind(millis(now) - keep.as_millis() as i64)
        .bind(MAX_ENTRIES)
        .execute(self.db.write())
        .await?;
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn old_and_surplus_answers_are_dropped() -> Result<(), sqlx::Error> {
        let dir = tempfile::tempdir().map_err(sqlx::Error::Io)?;
        let cache = SearchCache::open(&dir.path().join("search.sqlite")).await?;
        let day = Duration::from_secs(86_400);
        for n in 0..(MAX_ENTRIES + 5) {
            cache.put(&format!("q{n}"), "{}", day).await?;
        }
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM search_cache")
            .fetch_one(cache.db.read())
            .await?;
        assert_eq!(count, MAX_ENTRIES);
        assert!(
            cache.get(&format!("q{}", MAX_ENTRIES + 4)).await?.is_some(),
            "the newest stays"
        );
        // An entry older than `keep` goes at the next put.
        sqlx::query("UPDATE search_cache SET fetched_at = 0 WHERE key = 'q100'")
            .execute(cache.db.write())
            .await?;
        cache.put("fresh", "{}", day).await?;
        assert!(cache.get("q100").await?.is_none());
        Ok(())
    }
}
