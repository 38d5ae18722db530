//! The change feed: events with strictly increasing cursors, the floor below which events are
//! no longer kept, and the pruning that enforces retention (of the hash cache too).

use pumas_runtime::time::{now_ms, now_us};
use sqlx::Row;

use super::Store;
use crate::error::IndexError;

/// A change-feed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Cursor.
    pub cursor: u64,
    /// `added`, `updated`, `removed`, `moved`.
    pub kind: String,
    /// Model id.
    pub model_id: String,
    /// Previous id (moved).
    pub previous_id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
}

/// Raises the change feed's floor to the bound cursor (never lowers it).
const RAISE_FLOOR: &str = "INSERT INTO change_floor (id, cursor) VALUES (1, ?)
     ON CONFLICT (id) DO UPDATE SET cursor = MAX(cursor, excluded.cursor)";

/// What one pruning pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Change-feed events.
    pub changes: u64,
    /// Hash-cache entries.
    pub hashes: u64,
}
impl Store {
    /// Appends a change event and returns its cursor. Cursors are microsecond timestamps made
    /// strictly increasing, so they keep growing across a rebuild of models.db.
    pub async fn append_change(
        &self,
        kind: &str,
        model_id: &str,
        previous_id: &str,
    ) -> Result<Change, IndexError> {
        let now_us = now_us();
        let time_ms = now_ms();
        let mut tx = self.db.begin_write().await?;
        let last: Option<i64> = sqlx::query("SELECT MAX(cursor) FROM changes")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let cursor = now_us.max(last.unwrap_or(0) + 1);
        sqlx::query(
            "INSERT INTO changes (cursor, kind, model_id, previous_id, time_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(cursor)
        .bind(kind)
        .bind(model_id)
        .bind(previous_id)
        .bind(time_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Change {
            cursor: cursor as u64,
            kind: kind.to_owned(),
            model_id: model_id.to_owned(),
            previous_id: previous_id.to_owned(),
            time_ms,
        })
    }

    /// Events after `cursor`, oldest first, at most `limit`.
    pub async fn changes_after(&self, cursor: u64, limit: u32) -> Result<Vec<Change>, IndexError> {
        let rows = sqlx::query(
            "SELECT cursor, kind, model_id, previous_id, time_ms FROM changes WHERE cursor > ? ORDER BY cursor LIMIT ?",
        )
        .bind(cursor as i64)
        .bind(i64::from(limit))
        .fetch_all(self.db.read())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Change {
                cursor: r.get::<i64, _>(0) as u64,
                kind: r.get(1),
                model_id: r.get(2),
                previous_id: r.get(3),
                time_ms: r.get(4),
            })
            .collect())
    }

    /// Cursors at or below this one were pruned (or predate a rebuild of models.db): a feed
    /// reader that last saw one of them has missed events. 0 when nothing was pruned.
    pub async fn change_floor(&self) -> Result<u64, IndexError> {
        let floor: Option<i64> = sqlx::query("SELECT cursor FROM change_floor WHERE id = 1")
            .fetch_optional(self.db.read())
            .await?
            .map(|r| r.get(0));
        Ok(floor.unwrap_or(0).max(0) as u64)
    }

    /// Raises the floor to `cursor` (never lowers it).
    pub async fn raise_change_floor(&self, cursor: u64) -> Result<(), IndexError> {
        sqlx::query(RAISE_FLOOR)
            .bind(cursor as i64)
            .execute(self.db.write())
            .await?;
        Ok(())
    }

    /// Drops change-feed events older than `keep_since_ms` or beyond the newest `max_events`,
    /// raising the floor past them; and hash-cache entries cached before `keep_since_ms` or
    /// beyond the newest `max_hashes`.
    pub async fn prune(
        &self,
        changes_since_ms: i64,
        max_events: u64,
        hashes_since_ms: i64,
        max_hashes: u64,
    ) -> Result<Pruned, IndexError> {
        let mut tx = self.db.begin_write().await?;
        let by_age: Option<i64> = sqlx::query("SELECT MAX(cursor) FROM changes WHERE time_ms < ?")
            .bind(changes_since_ms)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let by_count: Option<i64> =
            sqlx::query("SELECT cursor FROM changes ORDER BY cursor DESC LIMIT 1 OFFSET ?")
                .bind(max_events.min(i64::MAX as u64) as i64)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get(0));
        let mut pruned = Pruned::default();
        if let Some(cutoff) = by_age.max(by_count) {
            pruned.changes = sqlx::query("DELETE FROM changes WHERE cursor <= ?")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(RAISE_FLOOR).bind(cutoff).execute(&mut *tx).await?;
        }
        pruned.hashes = sqlx::query(
            "DELETE FROM hash_cache WHERE cached_ms < ? OR rowid IN
               (SELECT rowid FROM hash_cache ORDER BY cached_ms DESC LIMIT -1 OFFSET ?)",
        )
        .bind(hashes_since_ms)
        .bind(max_hashes.min(i64::MAX as u64) as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(pruned)
    }

    /// The newest cursor (0 when the feed is empty).
    pub async fn head_cursor(&self) -> Result<u64, IndexError> {
        let last: Option<i64> = sqlx::query("SELECT MAX(cursor) FROM changes")
            .fetch_one(self.db.read())
            .await?
            .get(0);
        Ok(last.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileKey;

    #[tokio::test]
    async fn pruning_keeps_the_newest_events_and_hashes_and_raises_the_floor() -> Result<(), IndexError> {
        let dir = tempfile::tempdir().map_err(|e| IndexError::io("tempdir", e))?;
        let store = Store::open(&dir.path().join("models.db")).await?;
        let mut cursors = Vec::new();
        for n in 0..5 {
            cursors.push(
                store
                    .append_change("added", &format!("lora/sdxl/m{n}"), "")
                    .await?
                    .cursor,
            );
            let key = FileKey {
                dev: 1,
                ino: n,
                size: 10,
                mtime_ns: 0,
            };
            store.put_hash(&key, "sha", "b3").await?;
        }
        assert_eq!(store.change_floor().await?, 0);

        // Nothing is older than a day: only the counts prune.
        let day_ago = now_ms() - 24 * 3600 * 1000;
        let pruned = store.prune(day_ago, 2, day_ago, 3).await?;
        assert_eq!(
            pruned,
            Pruned {
                changes: 3,
                hashes: 2
            }
        );
        assert_eq!(
            store.change_floor().await?,
            cursors[2],
            "the newest pruned cursor"
        );
        let kept: Vec<u64> = store
            .changes_after(0, 10)
            .await?
            .iter()
            .map(|c| c.cursor)
            .collect();
        assert_eq!(kept, cursors[3..].to_vec());
        let newest = FileKey {
            dev: 1,
            ino: 4,
            size: 10,
            mtime_ns: 0,
        };
        assert!(store.cached_hash(&newest).await?.is_some());

        // Everything older than now goes; the floor never goes down.
        let later = now_ms() + 1;
        let pruned = store.prune(later, 100, later, 100).await?;
        assert_eq!(
            pruned,
            Pruned {
                changes: 2,
                hashes: 3
            }
        );
        assert_eq!(store.change_floor().await?, cursors[4]);
        store.raise_change_floor(1).await?;
        assert_eq!(store.change_floor().await?, cursors[4]);
        Ok(())
    }
}
