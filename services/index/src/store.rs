//! `models.db`: the derived index (SQLite in WAL mode, FTS5), and nothing else. Every write the
//! library makes to disk is mirrored here; [`crate::library::Library::rebuild`] recreates it
//! from the metadata files.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use pumas_runtime::sqlite::Db;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::error::IndexError;
use crate::metadata::Metadata;

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

/// Filters of list and search (empty = no filter; lists match any of their values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Types (`lora`, ...).
    pub types: Vec<String>,
    /// Families.
    pub families: Vec<String>,
    /// Formats.
    pub formats: Vec<String>,
    /// States.
    pub states: Vec<String>,
    /// Tags that must all be present.
    pub tags: Vec<String>,
    /// Minimum total size.
    pub min_size: Option<u64>,
    /// Maximum total size.
    pub max_size: Option<u64>,
    /// Has (or lacks) a dependency binding.
    pub has_binding: Option<bool>,
    /// Hub repo id.
    pub repo_id: String,
}

/// Sort order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Best match first (search only).
    Relevance,
    /// Name A-Z.
    Name,
    /// Largest first.
    SizeDesc,
    /// Newest first.
    AddedDesc,
}

/// Where the previous page ended: the sort key and id of its last row.
#[derive(Clone, Debug, PartialEq)]
pub enum After {
    /// Nothing: first page.
    Start,
    /// A text sort key.
    Text(String, String),
    /// An integer sort key.
    Int(i64, String),
    /// A score.
    Score(f64, String),
    /// A tier of the streaming relevance plan and the last rowid in it.
    Tier(u8, i64),
}

/// Up to this many matches, results are ranked or sorted exactly; above it, streamed in index
/// order (see [`Store::page`]).
pub const SORT_PLAN_MAX: u64 = 500;
/// Counting stops here: a page's `total` of `COUNT_CAP` means "more than SORT_PLAN_MAX".
pub const COUNT_CAP: u64 = SORT_PLAN_MAX + 1;

/// One page of results.
#[derive(Clone, Debug)]
pub struct Page {
    /// Records with their score (0 for lists).
    pub rows: Vec<(Record, f64)>,
    /// Where the next page starts, when there is one.
    pub next: Option<After>,
    /// Rows that match in all, counted up to [`COUNT_CAP`].
    pub total: u64,
    /// About how much memory the rows hold (their stored JSON), for the page cache's budget.
    pub bytes: usize,
}

impl Page {
    /// Whether more rows match than `total` says.
    pub fn total_capped(&self) -> bool {
        self.total >= COUNT_CAP
    }
}

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

/// The index database.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    pages: Arc<PageCache>,
}

/// Pages already answered, valid until the next write to the models. UIs ask the same list or
/// search again and again (every refresh, every keystroke that lands on a previous query); a
/// hit costs a hash lookup instead of the count and page queries, and a write empties it.
#[derive(Debug, Default)]
struct PageCache {
    /// Bumped after every committed write that can change a page.
    generation: AtomicU64,
    /// The generation the entries belong to, and the entries.
    entries: Mutex<CachedPages>,
}

#[derive(Debug, Default)]
struct CachedPages {
    generation: u64,
    pages: HashMap<String, Arc<Page>>,
    /// What the kept pages hold, by [`PageCache::cost`].
    bytes: usize,
}

impl CachedPages {
    fn clear(&mut self) {
        self.pages.clear();
        self.bytes = 0;
    }
}

impl PageCache {
    /// Entries kept at most; when full, the cache starts over.
    const CAPACITY: usize = 1024;
    /// Memory the kept pages may hold (decoded records take about twice their JSON); when a
    /// page would go over, the cache starts over.
    const CAPACITY_BYTES: usize = 64 << 20;

    /// A page's share of [`Self::CAPACITY_BYTES`]: twice its JSON, plus its key.
    fn cost(key: &str, page: &Page) -> usize {
        key.len() + 2 * page.bytes + 64 * page.rows.len()
    }

    fn get(&self, key: &str) -> (u64, Option<Arc<Page>>) {
        let generation = self.generation.load(AtomicOrdering::Acquire);
        let Ok(mut entries) = self.entries.lock() else {
            return (generation, None);
        };
        if entries.generation != generation {
            entries.generation = generation;
            entries.clear();
        }
        (generation, entries.pages.get(key).cloned())
    }

    /// Keeps `page` if no write happened since `generation` was read (before the queries ran).
    fn put(&self, generation: u64, key: String, page: Arc<Page>) {
        let cost = Self::cost(&key, &page);
        if cost > Self::CAPACITY_BYTES / 4 {
            return; // one huge page would push out everything else
        }
        if let Ok(mut entries) = self.entries.lock()
            && entries.generation == generation
            && self.generation.load(AtomicOrdering::Acquire) == generation
        {
            if entries.pages.len() >= Self::CAPACITY || entries.bytes + cost > Self::CAPACITY_BYTES {
                entries.clear();
            }
            entries.bytes += cost;
            if let Some(old) = entries.pages.insert(key, page) {
                entries.bytes = entries.bytes.saturating_sub(Self::cost("", &old));
            }
        }
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, AtomicOrdering::AcqRel);
    }
}

fn migrator() -> Migrator {
    let steps = [
        (1, "library", include_str!("../migrations/0001_library.sql")),
        (2, "retention", include_str!("../migrations/0002_retention.sql")),
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

use sqlx::SqlSafeStr as _;

use pumas_runtime::time::{now_ms, now_us};

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode, migrated.
    pub async fn open(path: &Path) -> Result<Self, IndexError> {
        let db = Db::open(path, 4).await?;
        migrator()
            .run(db.write())
            .await
            .map_err(|e| IndexError::Internal(format!("migrating models.db: {e}")))?;
        Ok(Self {
            db,
            pages: Arc::default(),
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Inserts or replaces a model (FTS, tags and digests included) in one transaction.
    pub async fn upsert(&self, record: &Record) -> Result<(), IndexError> {
        self.upsert_many(std::slice::from_ref(record)).await
    }

    /// Inserts or replaces many models in one transaction, with multi-row statements: a batch
    /// of a thousand is a handful of round trips (triggers keep the FTS index in step).
    pub async fn upsert_many(&self, records: &[Record]) -> Result<(), IndexError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<ModelRow> = Vec::with_capacity(records.len());
        let mut tags: Vec<(String, String)> = Vec::new();
        let mut digests: Vec<(String, String)> = Vec::new();
        let mut bindings: Vec<(String, String)> = Vec::new();
        for record in records {
            let m = &record.metadata;
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
            for tag in &m.tags {
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
                has_binding: m.dependency_bindings.iter().any(|b| b.active),
                tags_key: if m.tags.is_empty() {
                    String::new()
                } else {
                    format!("|{}|", m.tags.join("|"))
                },
                json,
                fts: [
                    format!(
                        "{} {}",
                        m.display_name,
                        m.id.rsplit('/').next().unwrap_or_default()
                    ),
                    format!("{} {}", m.family, m.model_type),
                    m.architecture.clone(),
                    m.tags.join(" "),
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

        let mut tx = self.db.begin_write().await?;
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
                 fts_files = excluded.fts_files, fts_repo = excluded.fts_repo",
            );
            qb.build().execute(&mut *tx).await?;
            for table in ["model_tags", "model_digests", "model_bindings"] {
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
            ("model_digests", "digest", &digests),
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
        self.pages.invalidate();
        Ok(())
    }

    /// Removes a model (its tags, digests and FTS entry go with it); false when it was not there.
    pub async fn remove(&self, id: &str) -> Result<bool, IndexError> {
        let done = sqlx::query("DELETE FROM models WHERE id = ?")
            .bind(id)
            .execute(self.db.write())
            .await?;
        self.pages.invalidate();
        Ok(done.rows_affected() > 0)
    }

    fn decode(json: &str) -> Result<Record, IndexError> {
        let stored: StoredRecord = serde_json::from_str(json)
            .map_err(|e| IndexError::Internal(format!("corrupt record in models.db: {e}")))?;
        Ok(Record {
            metadata: stored.metadata,
            overridden: stored.overridden,
        })
    }

    /// One model.
    pub async fn get(&self, id: &str) -> Result<Option<Record>, IndexError> {
        let row = sqlx::query("SELECT record FROM models WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.read())
            .await?;
        row.map(|r| Self::decode(r.get::<&str, _>(0))).transpose()
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
        row.map(|r| Self::decode(r.get::<&str, _>(0))).transpose()
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
        rows.iter().map(|r| Self::decode(r.get::<&str, _>(0))).collect()
    }

    /// Filters as SQL. With `indexed` false every column test is written `+column`, which keeps
    /// SQLite from driving the query by a filter index, so it streams in the order index instead.
    fn push_filter(qb: &mut QueryBuilder<Sqlite>, filter: &Filter, indexed: bool) {
        let plus = if indexed { "" } else { "+" };
        let any_of = |qb: &mut QueryBuilder<Sqlite>, column: &str, values: &[String]| {
            if values.is_empty() {
                return;
            }
            qb.push(format!(" AND {plus}m.{column} IN ("));
            let mut list = qb.separated(", ");
            for v in values {
                list.push_bind(v.clone());
            }
            list.push_unseparated(")");
        };
        any_of(qb, "model_type", &filter.types);
        any_of(qb, "family", &filter.families);
        any_of(qb, "format", &filter.formats);
        any_of(qb, "state", &filter.states);
        for tag in &filter.tags {
            // A substring test on the row itself: cheap per row, no set to build.
            qb.push(" AND instr(m.tags_key, ");
            qb.push_bind(format!("|{tag}|"));
            qb.push(") > 0");
        }
        if let Some(min) = filter.min_size {
            qb.push(format!(" AND {plus}m.total_size >= "))
                .push_bind(min as i64);
        }
        if let Some(max) = filter.max_size {
            qb.push(format!(" AND {plus}m.total_size <= "))
                .push_bind(max as i64);
        }
        if let Some(has) = filter.has_binding {
            qb.push(format!(" AND {plus}m.has_binding = ")).push_bind(has);
        }
        if !filter.repo_id.is_empty() {
            qb.push(format!(" AND {plus}m.repo_id = "))
                .push_bind(filter.repo_id.clone());
        }
    }

    fn push_keyset(qb: &mut QueryBuilder<Sqlite>, order: Order, after: &After) {
        match (order, after) {
            (Order::Name, After::Text(key, id)) => {
                qb.push(" AND (m.name_key, m.id) > (")
                    .push_bind(key.clone())
                    .push(", ")
                    .push_bind(id.clone())
                    .push(")");
            }
            (Order::SizeDesc | Order::AddedDesc, After::Int(key, id)) => {
                let column = if order == Order::SizeDesc {
                    "m.total_size"
                } else {
                    "m.added_ms"
                };
                qb.push(format!(" AND ({column} < "))
                    .push_bind(*key)
                    .push(format!(" OR ({column} = "))
                    .push_bind(*key)
                    .push(" AND m.id > ")
                    .push_bind(id.clone())
                    .push("))");
            }
            (Order::Relevance, After::Score(score, id)) => {
                qb.push(" AND (score > ")
                    .push_bind(*score)
                    .push(" OR (score = ")
                    .push_bind(*score)
                    .push(" AND m.id > ")
                    .push_bind(id.clone())
                    .push("))");
            }
            _ => {}
        }
    }

    fn order_by(order: Order) -> &'static str {
        match order {
            Order::Relevance => " ORDER BY score, m.id",
            Order::Name => " ORDER BY m.name_key, m.id",
            Order::SizeDesc => " ORDER BY m.total_size DESC, m.id",
            Order::AddedDesc => " ORDER BY m.added_ms DESC, m.id",
        }
    }

    fn order_index(order: Order) -> &'static str {
        match order {
            Order::SizeDesc => "models_by_size",
            Order::AddedDesc => "models_by_added",
            Order::Name | Order::Relevance => "models_by_name",
        }
    }

    /// How many models match, counting no further than [`COUNT_CAP`] (the `total_size` of every
    /// page; an exact count of a broad query would cost more than the page itself).
    async fn count_matching(&self, fts: Option<&str>, filter: &Filter) -> Result<u64, IndexError> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT COUNT(*) FROM (SELECT 1 FROM ");
        match fts {
            Some(expr) if *filter == Filter::default() => {
                qb.push("models_fts WHERE models_fts MATCH ")
                    .push_bind(expr.to_owned());
            }
            Some(expr) => {
                // CROSS JOIN keeps the FTS match as the outer loop: the other order runs one FTS
                // query per model.
                qb.push("models_fts f CROSS JOIN models m ON m.rowid = f.rowid WHERE models_fts MATCH ");
                qb.push_bind(expr.to_owned());
                Self::push_filter(&mut qb, filter, false);
            }
            None => {
                qb.push("models m WHERE 1 = 1");
                Self::push_filter(&mut qb, filter, true);
            }
        }
        qb.push(" LIMIT ").push_bind(COUNT_CAP as i64).push(")");
        let n: i64 = qb
            .build()
            .fetch_one(self.db.read())
            .await
            .map_err(fts_error)?
            .get(0);
        Ok(n as u64)
    }

    /// One page of models matching `filter`, or of FTS matches of `fts` when given.
    ///
    /// Two plans, picked by how many rows match. Up to [`SORT_PLAN_MAX`], all matches are ranked
    /// (bm25) or sorted, exactly. Above it, sorting them all would cost more than the page is
    /// worth, so the query streams in index order and stops at the page: lists walk the order
    /// index testing filters; relevance search walks FTS matches in two tiers, models whose name
    /// matches first, then the rest, each in library order.
    pub async fn page(
        &self,
        fts: Option<&str>,
        filter: &Filter,
        order: Order,
        after: &After,
        limit: u32,
    ) -> Result<Arc<Page>, IndexError> {
        let key = format!("{fts:?}|{filter:?}|{order:?}|{after:?}|{limit}");
        let (generation, hit) = self.pages.get(&key);
        if let Some(page) = hit {
            return Ok(page);
        }
        let page = Arc::new(self.page_uncached(fts, filter, order, after, limit).await?);
        self.pages.put(generation, key, Arc::clone(&page));
        Ok(page)
    }

    async fn page_uncached(
        &self,
        fts: Option<&str>,
        filter: &Filter,
        order: Order,
        after: &After,
        limit: u32,
    ) -> Result<Page, IndexError> {
        let order = if fts.is_none() && order == Order::Relevance {
            Order::Name
        } else {
            order
        };
        let total = self.count_matching(fts, filter).await?;
        let tiered = fts.is_some() && order == Order::Relevance && total > SORT_PLAN_MAX;
        if tiered || matches!(after, After::Tier(..)) {
            return self
                .tiered_page(fts.unwrap_or_default(), filter, after, limit, total)
                .await;
        }
        let stream = total > SORT_PLAN_MAX;
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("");
        match fts {
            Some(expr) if order == Order::Relevance => {
                // Column weights: name 10, family 3, architecture 2, tags 4, description 1, files 2, repo 3.
                qb.push(
                    "SELECT * FROM (SELECT m.record, m.name_key, m.total_size, m.added_ms, m.id,
                        bm25(models_fts, 10.0, 3.0, 2.0, 4.0, 1.0, 2.0, 3.0) AS score
                     FROM models_fts f CROSS JOIN models m ON m.rowid = f.rowid WHERE models_fts MATCH ",
                );
                qb.push_bind(expr.to_owned());
                Self::push_filter(&mut qb, filter, false);
                qb.push(") m WHERE 1 = 1");
            }
            _ => {
                qb.push(
                    "SELECT m.record, m.name_key, m.total_size, m.added_ms, m.id, 0.0 AS score FROM models m",
                );
                if stream {
                    qb.push(format!(" INDEXED BY {}", Self::order_index(order)));
                }
                qb.push(" WHERE 1 = 1");
                Self::push_filter(&mut qb, filter, !stream);
                if let Some(expr) = fts {
                    qb.push(" AND m.rowid IN (SELECT rowid FROM models_fts WHERE models_fts MATCH ");
                    qb.push_bind(expr.to_owned());
                    qb.push(")");
                }
            }
        }
        Self::push_keyset(&mut qb, order, after);
        qb.push(Self::order_by(order));
        qb.push(" LIMIT ").push_bind(i64::from(limit) + 1);
        let rows = qb.build().fetch_all(self.db.read()).await.map_err(fts_error)?;

        let more = rows.len() > limit as usize;
        let mut out = Vec::with_capacity(rows.len().min(limit as usize));
        let mut next = None;
        let mut bytes = 0;
        for row in rows.iter().take(limit as usize) {
            let json = row.get::<&str, _>(0);
            bytes += json.len();
            let record = Self::decode(json)?;
            let score: f64 = row.get(5);
            let id: String = row.get(4);
            next = Some(match order {
                Order::Relevance => After::Score(score, id),
                Order::Name => After::Text(row.get(1), id),
                Order::SizeDesc => After::Int(row.get(2), id),
                Order::AddedDesc => After::Int(row.get(3), id),
            });
            out.push((record, -score));
        }
        Ok(Page {
            rows: out,
            next: if more { next } else { None },
            total,
            bytes,
        })
    }

    /// The streaming relevance plan: name matches, then other matches, each in rowid order.
    async fn tiered_page(
        &self,
        expr: &str,
        filter: &Filter,
        after: &After,
        limit: u32,
        total: u64,
    ) -> Result<Page, IndexError> {
        let (mut tier, mut rowid) = match after {
            After::Tier(tier, rowid) => (*tier, *rowid),
            _ => (0, 0),
        };
        let tier_exprs = [
            format!("fts_name : ({expr})"),
            format!("({expr}) NOT fts_name : ({expr})"),
        ];
        let mut out = Vec::new();
        let mut next = None;
        let mut bytes = 0;
        while tier < 2 && out.len() <= limit as usize {
            let want = i64::from(limit) + 1 - out.len() as i64;
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT m.record, f.rowid FROM models_fts f CROSS JOIN models m ON m.rowid = f.rowid WHERE models_fts MATCH ",
            );
            qb.push_bind(tier_exprs[tier as usize].clone());
            Self::push_filter(&mut qb, filter, false);
            qb.push(" AND f.rowid > ").push_bind(rowid);
            qb.push(" ORDER BY f.rowid LIMIT ").push_bind(want);
            let rows = qb.build().fetch_all(self.db.read()).await.map_err(fts_error)?;
            let exhausted = (rows.len() as i64) < want;
            for row in rows {
                if out.len() == limit as usize {
                    // One more row exists: the page ends at the previous one.
                    return Ok(Page {
                        rows: out,
                        next,
                        total,
                        bytes,
                    });
                }
                let json = row.get::<&str, _>(0);
                bytes += json.len();
                let record = Self::decode(json)?;
                let r: i64 = row.get(1);
                next = Some(After::Tier(tier, r));
                // Reported score: name matches above the rest.
                out.push((record, f64::from(2 - tier)));
            }
            if exhausted {
                tier += 1;
                rowid = 0;
            } else {
                break;
            }
        }
        let more = tier < 2 && out.len() == limit as usize;
        Ok(Page {
            rows: out,
            next: if more { next } else { None },
            total,
            bytes,
        })
    }

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

    /// The model that holds a binding.
    pub async fn binding_owner(&self, binding_id: &str) -> Result<Option<String>, IndexError> {
        let row = sqlx::query("SELECT model_id FROM model_bindings WHERE binding_id = ?")
            .bind(binding_id)
            .fetch_optional(self.db.read())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Binding ids after `after` (exclusive) in id order, with their models, at most `limit`.
    pub async fn bindings_after(&self, after: &str, limit: u32) -> Result<Vec<(String, String)>, IndexError> {
        let rows = sqlx::query("SELECT binding_id, model_id FROM model_bindings WHERE binding_id > ? ORDER BY binding_id LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Holders of links to a model.
    pub async fn link_holders(&self, model_id: &str) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query("SELECT holder FROM link_holds WHERE model_id = ? ORDER BY holder")
            .bind(model_id)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Replaces the models a holder links to.
    pub async fn replace_link_holds(&self, holder: &str, model_ids: &[String]) -> Result<(), IndexError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM link_holds WHERE holder = ?")
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        for id in model_ids {
            sqlx::query("INSERT OR IGNORE INTO link_holds (holder, model_id) VALUES (?, ?)")
                .bind(holder)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes every link hold on a model (forced delete).
    pub async fn clear_link_holds(&self, model_id: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM link_holds WHERE model_id = ?")
            .bind(model_id)
            .execute(self.db.write())
            .await?;
        Ok(())
    }
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

/// FTS5 syntax errors come from the user's query: report them as such.
fn fts_error(err: sqlx::Error) -> IndexError {
    let text = err.to_string();
    if text.contains("fts5") || text.contains("syntax error") || text.contains("unterminated") {
        IndexError::invalid(
            "query",
            format!("the search engine cannot parse the query: {text}"),
        )
    } else {
        IndexError::Db(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_of(bytes: usize) -> Arc<Page> {
        Arc::new(Page {
            rows: Vec::new(),
            next: None,
            total: 0,
            bytes,
        })
    }

    #[test]
    fn the_page_cache_stays_within_its_byte_budget() {
        let cache = PageCache::default();
        let (generation, _) = cache.get("warm-up");
        let mut peak = 0;
        for n in 0..500 {
            cache.put(generation, format!("query-{n}"), page_of(1 << 20));
            let held = cache.entries.lock().map(|e| e.bytes).unwrap_or(usize::MAX);
            peak = peak.max(held);
        }
        assert!(peak <= PageCache::CAPACITY_BYTES, "held {peak} bytes");
        assert!(
            peak > PageCache::CAPACITY_BYTES / 2,
            "the budget is used, not wasted: {peak}"
        );
        // The latest page is still there; a page too big for the budget is not kept.
        assert!(cache.get("query-499").1.is_some());
        cache.put(generation, "huge".into(), page_of(PageCache::CAPACITY_BYTES));
        assert!(cache.get("huge").1.is_none());
        // A write empties it.
        cache.invalidate();
        assert!(cache.get("query-499").1.is_none());
        assert_eq!(cache.entries.lock().map(|e| e.bytes).unwrap_or(1), 0);
    }

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
