//! Loading a library being rebuilt from its metadata files: many thousands of models into an
//! empty index, as fast as one SQLite writer allows.
//!
//! Three things make a load cheaper than the same models upserted:
//! - **Digests last, in order.** A digest is random, so a thousand models' digests touch most
//!   leaves of `model_digests` (300,000 rows at 100k models), and each batch wrote them all to
//!   the WAL again: a third of a 100k rebuild. A load stages them in a temporary table of the
//!   writer's connection (appended, no index) and inserts them once, sorted, when it ends.
//!   Until then `PRAGMA user_version` says [`LOADING`]: a start that finds it knows the load was
//!   interrupted (models without digests) and rebuilds models.db anew.
//! - **No fsync until it ends.** Its writes go unsynced (`synchronous = OFF`), which is safe
//!   because the mark is made durable in the database file first: a power cut mid-load leaves a
//!   file that says it was loading (or one SQLite cannot read), and either is made anew. Before
//!   the mark is cleared, a checkpoint syncs everything the load wrote.
//! - **The relevance index takes a batch in while SQLite writes the next one.** Its intake runs
//!   behind; every later change to the relevance index waits for it first, so it still sees the
//!   writes in the order models.db committed them.

use std::sync::Arc;

use sqlx::Row as _;
use tokio::task::JoinHandle;

use super::{Record, Store, ranking::RankDoc, ranking_error};
use crate::error::IndexError;

/// `PRAGMA user_version` while a load is under way (0 otherwise).
const LOADING: i64 = 1;

/// What the writes share under the write-order lock (held from a write's transaction until the
/// relevance index has it).
#[derive(Debug, Default)]
pub(super) struct WriteOrder {
    /// The relevance index's intake of the last loaded batch, when it may still be running.
    ranking_intake: Option<JoinHandle<tantivy::Result<()>>>,
    /// A load is under way: marked, unsynced, its digests waiting in `temp.loaded_digests`.
    loading: bool,
}

impl WriteOrder {
    /// Waits for the relevance index to have taken in every loaded batch: done before any other
    /// change reaches it.
    pub(super) async fn settle_ranking_intake(&mut self) -> Result<(), IndexError> {
        match self.ranking_intake.take() {
            Some(intake) => intake
                .await
                .map_err(|e| IndexError::Internal(e.to_string()))?
                .map_err(ranking_error),
            None => Ok(()),
        }
    }

    /// Whether a load's digests are staged: a write of the same models drops them, as its own
    /// digests replace theirs.
    pub(super) fn loading(&self) -> bool {
        self.loading
    }
}

impl Store {
    /// Inserts models into a library being rebuilt from its metadata files (no model in it yet
    /// when the rebuild began): as [`Store::upsert_many`], but the digests wait for the end of
    /// the load and the relevance index takes the models in behind, without making them
    /// searchable batch by batch; [`Store::publish_loaded`] does that.
    pub async fn load_many(&self, records: &[Record]) -> Result<(), IndexError> {
        self.write_many(records, true).await
    }

    /// Makes what [`Store::load_many`] gave the relevance index searchable; `last` when the
    /// load is done, which also writes its digests and merges the relevance index's segments
    /// into one.
    pub async fn publish_loaded(&self, last: bool) -> Result<(), IndexError> {
        {
            let mut order = self.write_order.lock().await;
            order.settle_ranking_intake().await?;
            if last && order.loading {
                self.end_load().await?;
                order.loading = false;
            }
            let ranking = Arc::clone(&self.ranking);
            tokio::task::spawn_blocking(move || ranking.apply(&[], &[]))
                .await
                .map_err(|e| IndexError::Internal(e.to_string()))?
                .map_err(ranking_error)?;
            self.pages.invalidate();
        }
        if last {
            self.compact_ranking();
        }
        Ok(())
    }

    /// Starts a load (before its first batch): the staging table, and the mark, durable in the
    /// database file before anything is written unsynced.
    pub(super) async fn begin_load(&self, order: &mut WriteOrder) -> Result<(), IndexError> {
        if order.loading {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE IF NOT EXISTS loaded_digests (digest TEXT NOT NULL, model_id TEXT NOT NULL);
             PRAGMA user_version = {LOADING};"
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        order.loading = true;
        // When readers keep the checkpoint from finishing, the load is written synced, as
        // any other write.
        if self.checkpoint().await? {
            sqlx::raw_sql("PRAGMA synchronous = OFF")
                .execute(self.db.write())
                .await?;
        }
        Ok(())
    }

    /// Ends a load: its digests into `model_digests` at once and in order (a sequential append;
    /// the indexes over them dropped meanwhile and made again after: a sort, not 300,000 random
    /// inserts), everything it wrote synced, and then the mark cleared.
    async fn end_load(&self) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
        // As `Db::open` sets it.
        sqlx::raw_sql("PRAGMA synchronous = NORMAL")
            .execute(self.db.write())
            .await?;
        let mut tx = self.db.begin_write().await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sql FROM sqlite_master
             WHERE type = 'index' AND tbl_name = 'model_digests' AND sql IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (name, _) in &indexes {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
                .execute(&mut *tx)
                .await?;
        }
        // No check that each model is still there: a write that replaced or removed one of
        // them dropped its staged digests.
        sqlx::raw_sql(
            "INSERT OR IGNORE INTO model_digests (digest, model_id)
             SELECT digest, model_id FROM temp.loaded_digests ORDER BY digest, model_id;
             DROP TABLE temp.loaded_digests;",
        )
        .execute(&mut *tx)
        .await?;
        for (_, sql) in indexes {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // The checkpoint copies that last transaction (never empty: it made the indexes again)
        // into the database file and syncs it, with every page the load wrote unsynced before.
        if self.checkpoint().await? {
            sqlx::raw_sql("PRAGMA user_version = 0")
                .execute(self.db.write())
                .await?;
        } else {
            tracing::warn!(
                "models.db could not be checkpointed after its rebuild (readers kept it busy); the next start rebuilds it again"
            );
        }
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "wrote the loaded models' digests and synced the load"
        );
        Ok(())
    }

    /// Copies the write-ahead log into the database file and syncs both; false when readers
    /// kept part of it from being copied.
    async fn checkpoint(&self) -> Result<bool, IndexError> {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(self.db.write())
            .await?;
        Ok(busy == 0)
    }

    /// After a loaded batch committed: its digests are staged, and the relevance index takes
    /// its models in while the next batch is written.
    pub(super) async fn end_loaded_batch(
        &self,
        order: &mut WriteOrder,
        docs: Vec<RankDoc>,
    ) -> Result<(), IndexError> {
        order.settle_ranking_intake().await?;
        let ranking = Arc::clone(&self.ranking);
        order.ranking_intake = Some(tokio::task::spawn_blocking(move || ranking.load(&docs)));
        Ok(())
    }

    /// Whether models.db holds a load that never ended (a crash or a failure mid-rebuild): its
    /// models may lack their digests, so it is rebuilt anew.
    pub async fn load_interrupted(&self) -> Result<bool, IndexError> {
        let version: i64 = sqlx::query("PRAGMA user_version")
            .fetch_one(self.db.read())
            .await?
            .get(0);
        Ok(version == LOADING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn synchronous(store: &Store) -> i64 {
        sqlx::query("PRAGMA synchronous")
            .fetch_one(store.db.write())
            .await
            .expect("pragma")
            .get(0)
    }

    /// The writer goes unsynced only while the load's mark is set, and synced again before it
    /// is cleared.
    #[tokio::test]
    async fn a_load_is_unsynced_only_while_it_is_marked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        crate::synthetic::generate_catalog(tmp.path(), 1).expect("generate");
        let models = tmp.path().join("shared-resources/models");
        let dir = walkdir::WalkDir::new(&models)
            .into_iter()
            .flatten()
            .find(|e| e.file_name() == crate::metadata::METADATA_FILE)
            .and_then(|e| e.path().parent().map(std::path::Path::to_owned))
            .expect("a model folder");
        let record = Record {
            metadata: crate::library::read_metadata(&dir).expect("metadata"),
            overridden: Vec::new(),
        };
        let store = Store::open(&tmp.path().join("t.db")).await.expect("open");
        assert_eq!(synchronous(&store).await, 1, "NORMAL");
        store
            .load_many(std::slice::from_ref(&record))
            .await
            .expect("load");
        assert!(store.load_interrupted().await.expect("mark"));
        assert_eq!(synchronous(&store).await, 0, "OFF while loading");
        store.publish_loaded(true).await.expect("end");
        assert_eq!(synchronous(&store).await, 1, "NORMAL again");
        assert!(!store.load_interrupted().await.expect("mark"));
        store.close().await;
    }
}
