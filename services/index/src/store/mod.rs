//! `models.db`: the derived index (SQLite in WAL mode, FTS5), and nothing else. Every write the
//! library makes to disk is mirrored here; a reindex (`reindex::reindex`) recreates it
//! from the metadata files.
//!
//! One room per concern: this module opens the database and reads and writes model records;
//! [`pages`] answers lists and searches (with [`page_cache`]); [`changes`] is the change feed
//! and its retention; [`hashes`] the hash cache; [`holds`] dependency bindings and link holds.

mod bound_models;
mod changes;
mod hashes;
mod holds;
mod load;
mod page_cache;
mod pages;
mod ranking;
mod record_reader;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use pumas_runtime::sqlite::Db;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{QueryBuilder, Row, SqlSafeStr as _, Sqlite};
use std::str::FromStr as _;

use crate::error::IndexError;
use crate::metadata::Metadata;

pub use changes::{Change, Pruned};
pub use hashes::FileKey;
use page_cache::PageCache;
pub use pages::{After, COUNT_CAP, Filter, Order, Page, SORT_PLAN_MAX};
use ranking::RankDoc;
pub use ranking::{Hit, Ranking};

use crate::catalog::Catalog;

/// A model as the index keeps it: the merged metadata and which fields the user overrode.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// metadata.json with overrides.json applied.
    pub metadata: Metadata,
    /// Fields the overrides file sets.
    pub overridden: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRecord {
    metadata: Metadata,
    overridden: Vec<String>,
}
/// The index database.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    pages: Arc<PageCache>,
    /// Relevance ranking, derived from the models table and written in step with it.
    ranking: Arc<Ranking>,
    /// Held from a write's transaction until the ranking has it, so the ranking sees the
    /// writes in the order models.db committed them.
    write_order: Arc<tokio::sync::Mutex<load::WriteOrder>>,
    /// The dependency catalog: what a model nobody bound is bound to, in every record written.
    catalog: Arc<Catalog>,
    /// A ranked page's records, read on the calling thread.
    records: Arc<record_reader::RecordReader>,
}

fn migrator() -> Migrator {
    let steps = [
        (1, "library", include_str!("../../migrations/0001_library.sql")),
        (
            2,
            "retention",
            include_str!("../../migrations/0002_retention.sql"),
        ),
    ];
    Migrator::with_migrations(
        steps
            .into_iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode, migrated, with the
    /// built-in catalog.
    pub async fn open(path: &Path) -> Result<Self, IndexError> {
        Self::open_with_catalog(path, Arc::new(Catalog::built_in())).await
    }

    /// [`Store::open`] with the catalog in force (built-in and the user's).
    pub async fn open_with_catalog(path: &Path, catalog: Arc<Catalog>) -> Result<Self, IndexError> {
        let db = Db::open(path, 4).await?;
        migrator()
            .run(db.write())
            .await
            .map_err(|e| IndexError::Internal(format!("migrating models.db: {e}")))?;
        let ranking = Arc::new(Ranking::new().map_err(ranking_error)?);
        let store = Self {
            db,
            pages: Arc::default(),
            ranking,
            write_order: Arc::default(),
            catalog,
            records: Arc::new(record_reader::RecordReader::new(path)),
        };
        store.load_ranking().await?;
        Ok(store)
    }

    /// Builds the ranking index from every row of models.db.
    async fn load_ranking(&self) -> Result<(), IndexError> {
        use futures_util::TryStreamExt as _;
        let started = std::time::Instant::now();
        let mut rows = sqlx::query(
            "SELECT rowid, id, model_type, family, format, state, total_size, has_binding, repo_id, tags_key,
             fts_name, fts_family, fts_architecture, fts_tags, fts_description, fts_files, fts_repo FROM models",
        )
        .fetch(self.db.read());
        let mut batch = Vec::with_capacity(2000);
        let mut loaded = 0usize;
        while let Some(row) = rows.try_next().await? {
            let tags_key: String = row.get(9);
            batch.push(RankDoc {
                rowid: row.get(0),
                id: row.get(1),
                model_type: row.get(2),
                family: row.get(3),
                format: row.get(4),
                state: row.get(5),
                total_size: row.get::<i64, _>(6) as u64,
                has_binding: row.get(7),
                repo_id: row.get(8),
                tags: tags_key
                    .split('|')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                text: std::array::from_fn(|i| row.get(10 + i)),
            });
            if batch.len() == batch.capacity() {
                loaded += batch.len();
                self.ranking.load(&batch).map_err(ranking_error)?;
                batch.clear();
            }
        }
        loaded += batch.len();
        self.ranking.load(&batch).map_err(ranking_error)?;
        self.ranking.apply(&[], &[]).map_err(ranking_error)?;
        if loaded > 0 {
            self.compact_ranking();
            tracing::info!(
                models = loaded,
                seconds = started.elapsed().as_secs_f64(),
                "built the relevance index"
            );
        }
        Ok(())
    }

    /// The dependency catalog in force.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A record with the bindings in effect: its own, else the catalog's (see [`Catalog`]).
    pub fn with_effective_bindings(&self, mut record: Record) -> Record {
        record.metadata.dependency_bindings = self.catalog.effective_bindings(&record.metadata);
        record
    }

    /// The relevance ranking.
    pub fn ranking(&self) -> &Ranking {
        &self.ranking
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.records.close();
        self.db.close().await;
    }

    /// Inserts or replaces a model (FTS, tags and digests included) in one transaction.
    pub async fn upsert(&self, record: &Record) -> Result<(), IndexError> {
        self.upsert_many(std::slice::from_ref(record)).await
    }

    /// Inserts or replaces many models in one transaction, with multi-row statements: a batch
    /// of a thousand is a handful of round trips (triggers keep the FTS index in step).
    pub async fn upsert_many(&self, records: &[Record]) -> Result<(), IndexError> {
        self.write_many(records, false).await
    }

    /// [`Ranking::compact`] in the background: searches go through the segments meanwhile, and
    /// a merge changes no answer (same models, same statistics), so no cached page goes stale.
    /// A failure leaves the segments as they are (slower, not wrong).
    fn compact_ranking(&self) {
        let ranking = Arc::clone(&self.ranking);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match ranking.compact() {
                Ok(merged) => tracing::info!(
                    merged,
                    seconds = started.elapsed().as_secs_f64(),
                    "merged the relevance index into one segment"
                ),
                Err(err) => tracing::warn!(error = %err, "could not merge the relevance index's segments"),
            }
        });
    }

    async fn write_many(&self, records: &[Record], loading: bool) -> Result<(), IndexError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<ModelRow> = Vec::with_capacity(records.len());
        let mut tags: Vec<(String, String)> = Vec::new();
        let mut digests: Vec<(String, String)> = Vec::new();
        let mut bindings: Vec<(String, String)> = Vec::new();
        for record in records {
            // The stored record keeps the user's bindings only: the catalog's are derived on
            // every read (cheaper than storing four more per model, and a catalog upgrade needs
            // no rewrite). Whether any binding is in effect is a column, for the filter.
            let mut m = record.metadata.clone();
            m.dependency_bindings.retain(|b| b.catalog_rule.is_empty());
            let has_binding = self.has_binding(&m);
            let m = &m;
            let json = serde_json::to_string(&StoredRecord {
                metadata: m.clone(),
                overridden: record.overridden.clone(),
            })
            .map_err(|e| IndexError::Internal(e.to_string()))?;
            let added_ms = prost_types::Timestamp::from_str(&m.added_time)
                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
                .unwrap_or_default();
            let repo = match &m.source {
                crate::metadata::Source::Hub { repo_id, .. } => repo_id.clone(),
                crate::metadata::Source::Local { .. } => String::new(),
            };
            let files: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
            let filter_tags = filter_tags(m);
            for tag in &filter_tags {
                tags.push((tag.clone(), m.id.clone()));
            }
            for b in &m.dependency_bindings {
                bindings.push((b.binding_id.clone(), m.id.clone()));
            }
            let all_digests = m
                .files
                .iter()
                .flat_map(|f| [f.sha256.as_str(), f.blake3.as_str()])
                .chain([m.composite_digest.as_str()])
                .filter(|d| !d.is_empty());
            for digest in all_digests {
                digests.push((digest.to_owned(), m.id.clone()));
            }
            rows.push(ModelRow {
                id: m.id.clone(),
                name_key: m.display_name.to_lowercase(),
                model_type: m.model_type.clone(),
                family: m.family.clone(),
                format: m.format.clone(),
                state: m.state.clone(),
                total_size: m.total_size as i64,
                added_ms,
                repo: repo.clone(),
                has_binding,
                tags_key: tags_key(&filter_tags),
                json,
                fts: [
                    format!(
                        "{} {}",
                        m.display_name,
                        m.id.rsplit('/').next().unwrap_or_default()
                    ),
                    format!("{} {}", m.family, m.model_type),
                    m.architecture.clone(),
                    // Tags and what a user searches a file by: trigger words, base model,
                    // author, license.
                    format!("{} {}", m.tags.join(" "), m.embedded.search_text()),
                    m.description.clone(),
                    files.join(" "),
                    repo,
                ],
            });
        }
        tags.sort();
        tags.dedup();
        digests.sort();
        digests.dedup();

        let mut order = self.write_order.lock().await;
        if loading {
            self.begin_load(&mut order).await?;
        }
        let mut tx = self.db.begin_write().await?;
        let mut rank_docs: Vec<RankDoc> = Vec::with_capacity(rows.len());
        // SQLite allows 32766 bound parameters: 18 per model row, 2 per tag/digest row.
        for chunk in rows.chunks(1000) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO models (id, name_key, model_type, family, format, state, total_size, added_ms, repo_id,
                 has_binding, tags_key, record, fts_name, fts_family, fts_architecture, fts_tags, fts_description, fts_files, fts_repo) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.id.clone())
                    .push_bind(r.name_key.clone())
                    .push_bind(r.model_type.clone())
                    .push_bind(r.family.clone())
                    .push_bind(r.format.clone())
                    .push_bind(r.state.clone())
                    .push_bind(r.total_size)
                    .push_bind(r.added_ms)
                    .push_bind(r.repo.clone())
                    .push_bind(r.has_binding)
                    .push_bind(r.tags_key.clone())
                    .push_bind(r.json.clone());
                for f in &r.fts {
                    b.push_bind(f.clone());
                }
            });
            qb.push(
                " ON CONFLICT (id) DO UPDATE SET name_key = excluded.name_key, model_type = excluded.model_type,
                 family = excluded.family, format = excluded.format, state = excluded.state,
                 total_size = excluded.total_size, added_ms = excluded.added_ms, repo_id = excluded.repo_id,
                 has_binding = excluded.has_binding, tags_key = excluded.tags_key, record = excluded.record, fts_name = excluded.fts_name,
                 fts_family = excluded.fts_family, fts_architecture = excluded.fts_architecture,
                 fts_tags = excluded.fts_tags, fts_description = excluded.fts_description,
                 fts_files = excluded.fts_files, fts_repo = excluded.fts_repo
                 RETURNING rowid, id",
            );
            let written = qb.build().fetch_all(&mut *tx).await?;
            let rowids: std::collections::HashMap<String, i64> =
                written.iter().map(|r| (r.get(1), r.get(0))).collect();
            for r in chunk {
                rank_docs.push(RankDoc {
                    rowid: rowids.get(&r.id).copied().unwrap_or_default(),
                    id: r.id.clone(),
                    model_type: r.model_type.clone(),
                    family: r.family.clone(),
                    format: r.format.clone(),
                    state: r.state.clone(),
                    tags: r
                        .tags_key
                        .split('|')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    total_size: r.total_size as u64,
                    has_binding: r.has_binding,
                    repo_id: r.repo.clone(),
                    text: r.fts.clone(),
                });
            }
            // A load's models are new: no old tag, digest or binding rows to drop. Digests a load
            // staged for these models are replaced by theirs.
            let replaced = ["model_tags", "model_digests", "model_bindings"]
                .into_iter()
                .chain(order.loading().then_some("temp.loaded_digests"))
                .filter(|_| !loading);
            for table in replaced {
                let mut del: QueryBuilder<Sqlite> =
                    QueryBuilder::new(format!("DELETE FROM {table} WHERE model_id IN ("));
                let mut list = del.separated(", ");
                for r in chunk {
                    list.push_bind(r.id.clone());
                }
                list.push_unseparated(")");
                del.build().execute(&mut *tx).await?;
            }
        }
        bindings.sort();
        bindings.dedup();
        for (table, column, pairs) in [
            ("model_tags", "tag", &tags),
            (
                if loading {
                    "temp.loaded_digests"
                } else {
                    "model_digests"
                },
                "digest",
                &digests,
            ),
            ("model_bindings", "binding_id", &bindings),
        ] {
            for chunk in pairs.chunks(10_000) {
                let mut qb: QueryBuilder<Sqlite> =
                    QueryBuilder::new(format!("INSERT OR IGNORE INTO {table} ({column}, model_id) "));
                qb.push_values(chunk, |mut b, (value, id)| {
                    b.push_bind(value.clone()).push_bind(id.clone());
                });
                qb.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        if loading {
            self.end_loaded_batch(&mut order, rank_docs).await?;
        } else {
            self.rank(&mut order, rank_docs, Vec::new()).await;
        }
        drop(order);
        self.pages.invalidate();
        Ok(())
    }

    /// Gives the ranking index what models.db just committed. A failure there is logged, not
    /// returned: the write is done, and the next start rebuilds the ranking from models.db.
    async fn rank(&self, order: &mut load::WriteOrder, upserts: Vec<RankDoc>, removed: Vec<String>) {
        let ranking = Arc::clone(&self.ranking);
        let done = async {
            order.settle_ranking_intake().await?;
            tokio::task::spawn_blocking(move || ranking.apply(&upserts, &removed))
                .await
                .map_err(|e| IndexError::Internal(e.to_string()))?
                .map_err(ranking_error)
        };
        if let Err(err) = done.await {
            tracing::error!(error = %err, "the relevance index missed a write; a restart rebuilds it");
        }
    }

    /// Removes a model (its tags, digests and FTS entry go with it); false when it was not there.
    pub async fn remove(&self, id: &str) -> Result<bool, IndexError> {
        let mut order = self.write_order.lock().await;
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query("DELETE FROM models WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if order.loading() {
            sqlx::query("DELETE FROM temp.loaded_digests WHERE model_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.rank(&mut order, Vec::new(), vec![id.to_owned()]).await;
        drop(order);
        self.pages.invalidate();
        Ok(done.rows_affected() > 0)
    }

    /// Whether a model has an active binding in effect, its own or the catalog's: the
    /// `has_binding` column.
    fn has_binding(&self, m: &Metadata) -> bool {
        self.catalog.effective_bindings(m).iter().any(|b| b.active)
    }

    /// One model, and whether its derived columns still say what this build and the catalog
    /// in force say: `has_binding` (a catalog edit can change it without changing the record)
    /// and the filter keys in `tags_key` (a newer build can derive more of them).
    pub async fn get_checked(&self, id: &str) -> Result<Option<(Record, bool)>, IndexError> {
        let row = sqlx::query("SELECT record, has_binding, tags_key FROM models WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.read())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let record = self.decode(row.get::<&str, _>(0))?;
        let current = row.get::<bool, _>(1) == self.has_binding(&record.metadata)
            && row.get::<&str, _>(2) == tags_key(&filter_tags(&record.metadata));
        Ok(Some((record, current)))
    }

    /// Ids of the models downloaded from `repo_id`.
    pub async fn ids_from_repo(&self, repo_id: &str) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query("SELECT id FROM models WHERE repo_id = ? ORDER BY id")
            .bind(repo_id)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Ids of the models that carry `tag` (or filter key, e.g. `base_model:org/name`).
    pub async fn ids_tagged(&self, tag: &str) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query("SELECT model_id FROM model_tags WHERE tag = ? ORDER BY model_id")
            .bind(tag)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// A stored record as the API shows it: with the catalog's bindings when it has none of its
    /// own.
    fn decode(&self, json: &str) -> Result<Record, IndexError> {
        let stored: StoredRecord = serde_json::from_str(json)
            .map_err(|e| IndexError::Internal(format!("corrupt record in models.db: {e}")))?;
        Ok(self.with_effective_bindings(Record {
            metadata: stored.metadata,
            overridden: stored.overridden,
        }))
    }

    /// One model.
    pub async fn get(&self, id: &str) -> Result<Option<Record>, IndexError> {
        let row = sqlx::query("SELECT record FROM models WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.read())
            .await?;
        row.map(|r| self.decode(r.get::<&str, _>(0))).transpose()
    }

    /// The model a fetch download created, if any.
    pub async fn find_by_download_id(&self, download_id: &str) -> Result<Option<Record>, IndexError> {
        let row = sqlx::query(
            "SELECT record FROM models WHERE state IN ('downloading', 'error')
             AND json_extract(record, '$.metadata.download.download_id') = ? LIMIT 1",
        )
        .bind(download_id)
        .fetch_optional(self.db.read())
        .await?;
        row.map(|r| self.decode(r.get::<&str, _>(0))).transpose()
    }

    /// Every model id.
    pub async fn all_ids(&self) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query("SELECT id FROM models ORDER BY id")
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Number of models.
    pub async fn count(&self) -> Result<u64, IndexError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM models")
            .fetch_one(self.db.read())
            .await?
            .get(0);
        Ok(n as u64)
    }

    /// Models with a file or composite digest equal to `digest`.
    pub async fn find_by_digest(&self, digest: &str) -> Result<Vec<Record>, IndexError> {
        let rows = sqlx::query(
            "SELECT m.record FROM model_digests d JOIN models m ON m.id = d.model_id WHERE d.digest = ? ORDER BY m.id",
        )
        .bind(digest)
        .fetch_all(self.db.read())
        .await?;
        rows.iter().map(|r| self.decode(r.get::<&str, _>(0))).collect()
    }
}

/// What the tag filters match a model by: its tags and its filter keys (license, base models,
/// pipeline tag; see [`crate::hub_card::filter_keys`]), without repeats.
fn filter_tags(m: &Metadata) -> Vec<String> {
    let mut all = m.tags.clone();
    all.extend(crate::hub_card::filter_keys(m));
    all.sort();
    all.dedup();
    all
}

/// The `tags_key` column: `|tag1|tag2|`, or empty.
fn tags_key(tags: &[String]) -> String {
    if tags.is_empty() {
        String::new()
    } else {
        format!("|{}|", tags.join("|"))
    }
}

fn ranking_error(err: tantivy::TantivyError) -> IndexError {
    IndexError::Internal(format!("relevance index: {err}"))
}

/// One model row as `upsert_many` writes it.
struct ModelRow {
    id: String,
    name_key: String,
    model_type: String,
    family: String,
    format: String,
    state: String,
    total_size: i64,
    added_ms: i64,
    repo: String,
    has_binding: bool,
    tags_key: String,
    json: String,
    fts: [String; 7],
}
