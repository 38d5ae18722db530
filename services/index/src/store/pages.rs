//! Lists and searches: filters, sort orders, keyset paging and counts, answered through the
//! page cache. Relevance comes from the ranking index ([`super::ranking`]); the other orders
//! from models.db.

use std::sync::Arc;

use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Hit, Record, Store};
use crate::error::IndexError;
use crate::query::Query;

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
    /// License filter keys ([`crate::hub_card::license_key`]); any of them.
    pub licenses: Vec<String>,
    /// Base model filter keys ([`crate::hub_card::base_model_key`]); any of them.
    pub base_models: Vec<String>,
    /// Pipeline tag filter keys ([`crate::hub_card::pipeline_key`]); any of them.
    pub pipeline_tags: Vec<String>,
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
    /// A relevance score and the rowid of the last hit.
    Ranked(f64, u64),
}

/// Up to this many matches, a sorted list or search sorts them all; above it, it streams in
/// index order (see [`Store::page`]).
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

impl Store {
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
        for keys in [&filter.licenses, &filter.base_models, &filter.pipeline_tags] {
            if keys.is_empty() {
                continue;
            }
            qb.push(" AND (");
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                qb.push("instr(m.tags_key, ")
                    .push_bind(format!("|{key}|"))
                    .push(") > 0");
            }
            qb.push(")");
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
            _ => {}
        }
    }

    fn order_by(order: Order) -> &'static str {
        match order {
            Order::Name | Order::Relevance => " ORDER BY m.name_key, m.id",
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
    async fn count_matching(
        conn: &mut sqlx::SqliteConnection,
        fts: Option<&str>,
        filter: &Filter,
    ) -> Result<u64, IndexError> {
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
        let n: i64 = qb.build().fetch_one(&mut *conn).await.map_err(fts_error)?.get(0);
        Ok(n as u64)
    }

    /// One page of models matching `filter`, and `query` when given.
    ///
    /// By relevance, the ranking index answers the true top of any number of matches. In the
    /// other orders, two plans, picked by how many rows match: up to [`SORT_PLAN_MAX`], all
    /// matches are sorted exactly; above it, sorting them all would cost more than the page is
    /// worth, so the query walks the order's index testing filters and stops at the page.
    pub async fn page(
        &self,
        query: Option<&Query>,
        filter: &Filter,
        order: Order,
        after: &After,
        limit: u32,
    ) -> Result<Arc<Page>, IndexError> {
        let key = format!("{query:?}|{filter:?}|{order:?}|{after:?}|{limit}");
        let (generation, hit) = self.pages.get(&key);
        if let Some(page) = hit {
            return Ok(page);
        }
        let page = Arc::new(self.page_uncached(query, filter, order, after, limit).await?);
        self.pages.put(generation, key, Arc::clone(&page));
        Ok(page)
    }

    async fn page_uncached(
        &self,
        query: Option<&Query>,
        filter: &Filter,
        order: Order,
        after: &After,
        limit: u32,
    ) -> Result<Page, IndexError> {
        if let Some(query) = query
            && order == Order::Relevance
        {
            return self.ranked_page(query, filter, after, limit).await;
        }
        let order = if order == Order::Relevance {
            Order::Name
        } else {
            order
        };
        let fts = query.map(Query::to_fts);
        let fts = fts.as_deref();
        // One connection for the count and the page: no second trip through the pool.
        let mut conn = self.db.read().acquire().await?;
        let total = Self::count_matching(&mut conn, fts, filter).await?;
        let stream = total > SORT_PLAN_MAX;
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT m.record, m.name_key, m.total_size, m.added_ms, m.id FROM models m");
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
        Self::push_keyset(&mut qb, order, after);
        qb.push(Self::order_by(order));
        qb.push(" LIMIT ").push_bind(i64::from(limit) + 1);
        let rows = qb.build().fetch_all(&mut *conn).await.map_err(fts_error)?;

        let more = rows.len() > limit as usize;
        let mut out = Vec::with_capacity(rows.len().min(limit as usize));
        let mut next = None;
        let mut bytes = 0;
        for row in rows.iter().take(limit as usize) {
            let json = row.get::<&str, _>(0);
            bytes += json.len();
            let record = self.decode(json)?;
            let id: String = row.get(4);
            next = Some(match order {
                Order::Name | Order::Relevance => After::Text(row.get(1), id),
                Order::SizeDesc => After::Int(row.get(2), id),
                Order::AddedDesc => After::Int(row.get(3), id),
            });
            out.push((record, 0.0));
        }
        Ok(Page {
            rows: out,
            next: if more { next } else { None },
            total,
            bytes,
        })
    }

    /// A page by relevance: the ranking index's top hits after `after`, read back from
    /// models.db by rowid on the calling thread ([`super::record_reader`]).
    async fn ranked_page(
        &self,
        query: &Query,
        filter: &Filter,
        after: &After,
        limit: u32,
    ) -> Result<Page, IndexError> {
        let after = match after {
            After::Start => None,
            After::Ranked(score, rowid) => Some(Hit {
                score: *score as f32,
                rowid: *rowid,
            }),
            _ => {
                return Err(IndexError::invalid(
                    "page_token",
                    "belongs to another order; send the same request as the first page, or start again without a token",
                ));
            }
        };
        let (hits, total) = self
            .ranking
            .top(query, filter, after, limit as usize + 1, COUNT_CAP)
            .map_err(|e| IndexError::Internal(format!("relevance index: {e}")))?;
        let more = hits.len() > limit as usize;
        let hits = &hits[..hits.len().min(limit as usize)];
        let rowids: Vec<i64> = hits.iter().map(|h| h.rowid as i64).collect();
        let records = if rowids.is_empty() {
            std::collections::HashMap::new()
        } else {
            self.records.records(&rowids)?
        };
        let mut out = Vec::with_capacity(hits.len());
        let mut bytes = 0;
        for hit in hits {
            // A hit whose row is gone was removed between the two reads: skip it.
            if let Some(json) = records.get(&(hit.rowid as i64)) {
                bytes += json.len();
                out.push((self.decode(json)?, f64::from(hit.score)));
            }
        }
        let next = hits
            .last()
            .filter(|_| more)
            .map(|h| After::Ranked(f64::from(h.score), h.rowid));
        Ok(Page {
            rows: out,
            next,
            total,
            bytes,
        })
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
