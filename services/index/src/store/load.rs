//! Loading a library being rebuilt from its metadata files: many thousands of models into an
//! empty index, as fast as one SQLite writer allows.
//!
//! Two things make a load cheaper than the same models upserted:
//! - **Digests last, in order.** A digest is random, so a thousand models' digests touch most
//!   leaves of `model_digests` (300,000 rows at 100k models), and each batch wrote them all to
//!   the WAL again: a third of a 100k rebuild. A load stages them in a temporary table of the
//!   writer's connection (appended, no index) and inserts them once, sorted, when it ends.
//!   Until then `PRAGMA user_version` says [`LOADING`]: a start that finds it knows the load was
//!   interrupted (models without digests) and rebuilds models.db anew.
//! - **The relevance index takes a batch in while SQLite writes the next one.** Its intake runs
//!   behind; every later change to the relevance index waits for it first, so it still sees the
//!   writes in the order models.db committed them.

use std::sync::Arc;

use sqlx::{Row as _, SqliteConnection};
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
    /// A load's digests wait in `temp.loaded_digests` (from its first batch until it ends).
    staging_digests: bool,
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
    pub(super) fn staging_digests(&self) -> bool {
        self.staging_digests
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
            if last && order.staging_digests {
                self.write_loaded_digests().await?;
                order.staging_digests = false;
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

    /// The digests a load staged, into `model_digests` at once and in order (a sequential
    /// append); the indexes over them are dropped meanwhile and made again after (a sort, not
    /// 300,000 random inserts). One transaction, which also ends the mark of a load under way.
    async fn write_loaded_digests(&self) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
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
             DROP TABLE temp.loaded_digests;
             PRAGMA user_version = 0;",
        )
        .execute(&mut *tx)
        .await?;
        for (_, sql) in indexes {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "wrote the loaded models' digests"
        );
        Ok(())
    }

    /// In a loaded batch's transaction: the staging table, and the mark of a load under way.
    pub(super) async fn begin_loaded_batch(
        order: &mut WriteOrder,
        tx: &mut SqliteConnection,
    ) -> Result<(), IndexError> {
        if !order.staging_digests {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE TEMP TABLE IF NOT EXISTS loaded_digests (digest TEXT NOT NULL, model_id TEXT NOT NULL);
                 PRAGMA user_version = {LOADING};"
            )))
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// After a loaded batch committed: its digests are staged, and the relevance index takes
    /// its models in while the next batch is written.
    pub(super) async fn end_loaded_batch(
        &self,
        order: &mut WriteOrder,
        docs: Vec<RankDoc>,
    ) -> Result<(), IndexError> {
        order.staging_digests = true;
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
