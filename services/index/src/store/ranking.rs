//! Relevance ranking: a tantivy index in memory, derived from models.db, that answers "the top
//! k models for this query" by BM25 with column weights, pruned with block-max WAND, so a query
//! that matches 30,000 models costs what its first page costs (docs/ARCHITECTURE.md, "Search").
//!
//! models.db stays the record store: this index holds only what ranking and filtering need and
//! a model's `rowid` there, is built from models.db at open, and is written in step with it
//! under the same writer lock (see [`super::Store::upsert_many`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Mutex;

use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, EnableScoring, Occur, PhrasePrefixQuery, PhraseQuery, Query,
    RangeQuery, TermQuery, Weight,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{
    DocSet as _, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TERMINATED, TantivyDocument, Term,
};

use super::pages::Filter;
use crate::query::{Phrase, Query as UserQuery};

/// The text columns, as in models_fts, with their weights (a name match counts ten times a
/// description match).
const TEXT_COLUMNS: [(&str, f32); 7] = [
    ("name", 10.0),
    ("family", 3.0),
    ("architecture", 2.0),
    ("tags", 4.0),
    ("description", 1.0),
    ("files", 2.0),
    ("repo", 3.0),
];

/// How many dictionary words one typed prefix may stand for (`00` would otherwise be every
/// serial number in the library).
const PREFIX_EXPANSIONS: usize = 128;

/// The writer's indexing memory (tantivy's floor is 15 MB per thread).
const WRITER_BUDGET: usize = 24 << 20;

/// What the ranking index holds of one model.
#[derive(Clone, Debug)]
pub struct RankDoc {
    /// The model's rowid in models.db (how a hit is read back, and the tie-break).
    pub rowid: i64,
    /// Model id.
    pub id: String,
    /// Filter columns, as models.db keeps them.
    pub model_type: String,
    pub family: String,
    pub format: String,
    pub state: String,
    pub tags: Vec<String>,
    pub total_size: u64,
    pub has_binding: bool,
    pub repo_id: String,
    /// The text columns, in [`TEXT_COLUMNS`] order.
    pub text: [String; 7],
}

/// One ranked hit: its score and its rowid in models.db.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub score: f32,
    pub rowid: u64,
}

impl Hit {
    /// Better first: higher score, then lower rowid.
    fn rank_cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.rowid.cmp(&other.rowid))
    }

    /// Whether this hit comes after `after` in rank order (belongs to a later page).
    fn is_after(&self, after: &Hit) -> bool {
        self.rank_cmp(after) == Ordering::Greater
    }
}

/// Heap entry: the worst hit on top.
struct Worst(Hit);
impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.rank_cmp(&other.0)
    }
}

struct Fields {
    rowid: Field,
    id: Field,
    model_type: Field,
    family: Field,
    format: Field,
    state: Field,
    tags: Field,
    total_size: Field,
    has_binding: Field,
    repo_id: Field,
    text: [Field; 7],
}

/// The ranking index.
pub struct Ranking {
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    analyzer: TextAnalyzer,
}

impl std::fmt::Debug for Ranking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ranking").finish_non_exhaustive()
    }
}

/// Words as models_fts's unicode61 tokenizer sees them: runs of letters and digits, lower-cased,
/// accents folded.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// A score with its last 7 mantissa bits cleared (a resolution of 1.5e-5). A sum of column
/// scores differs in its last bits with the order it was added in, and block-max WAND adds in
/// another order than a full scan: on the coarser grid both give the same score, so the rank
/// order (ties by rowid) and the page cursor do not depend on the path.
fn quantize(score: f32) -> f32 {
    f32::from_bits(score.to_bits() & !0x7F)
}

fn next_down(score: f32) -> f32 {
    // Scores are finite and non-negative: one ulp below keeps ties with `score` in play (the
    // pruning callback only sees scores strictly above its threshold).
    if score > 0.0 {
        f32::from_bits(score.to_bits() - 1)
    } else {
        f32::MIN
    }
}

impl Ranking {
    /// An empty ranking index.
    pub fn new() -> tantivy::Result<Self> {
        let mut schema = Schema::builder();
        let words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("words")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let text = TEXT_COLUMNS.map(|(name, _)| schema.add_text_field(name, words.clone()));
        let fields = Fields {
            rowid: schema.add_u64_field("rowid", FAST),
            id: schema.add_text_field("id", STRING),
            model_type: schema.add_text_field("model_type", STRING),
            family: schema.add_text_field("family_key", STRING),
            format: schema.add_text_field("format", STRING),
            state: schema.add_text_field("state", STRING),
            tags: schema.add_text_field("tag", STRING),
            total_size: schema.add_u64_field("total_size", INDEXED | FAST),
            has_binding: schema.add_u64_field("has_binding", INDEXED),
            repo_id: schema.add_text_field("repo_id", STRING),
            text,
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register("words", analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            reader,
            writer: Mutex::new(writer),
            fields,
            analyzer: analyzer(),
        })
    }

    fn document(&self, d: &RankDoc) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.rowid, d.rowid as u64);
        doc.add_text(f.id, &d.id);
        doc.add_text(f.model_type, &d.model_type);
        doc.add_text(f.family, &d.family);
        doc.add_text(f.format, &d.format);
        doc.add_text(f.state, &d.state);
        for tag in &d.tags {
            doc.add_text(f.tags, tag);
        }
        doc.add_u64(f.total_size, d.total_size);
        doc.add_u64(f.has_binding, u64::from(d.has_binding));
        doc.add_text(f.repo_id, &d.repo_id);
        for (field, text) in f.text.iter().zip(&d.text) {
            doc.add_text(*field, text);
        }
        doc
    }

    /// Replaces these models (by id) and removes `removed`, then makes it visible to searches.
    pub fn apply(&self, upserts: &[RankDoc], removed: &[String]) -> tantivy::Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for id in removed {
            writer.delete_term(Term::from_field_text(self.fields.id, id));
        }
        for d in upserts {
            writer.delete_term(Term::from_field_text(self.fields.id, &d.id));
            writer.add_document(self.document(d))?;
        }
        writer.commit()?;
        drop(writer);
        self.reader.reload()
    }

    /// Adds models to an index being built (no deletes, no commit: [`Ranking::apply`] with
    /// nothing commits them).
    pub fn load(&self, docs: &[RankDoc]) -> tantivy::Result<()> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for d in docs {
            writer.add_document(self.document(d))?;
        }
        Ok(())
    }

    /// The words of `text` as the index stores them.
    fn tokens(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(token) = stream.next() {
            out.push(token.text.clone());
        }
        out
    }

    /// The dictionary words of `field` that start with `prefix`, the most frequent first, at
    /// most [`PREFIX_EXPANSIONS`].
    fn expand(&self, searcher: &Searcher, field: Field, prefix: &str) -> tantivy::Result<Vec<String>> {
        let mut found: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(field)?;
            let mut stream = inverted.terms().range().ge(prefix.as_bytes()).into_stream()?;
            while stream.advance() {
                if !stream.key().starts_with(prefix.as_bytes()) {
                    break;
                }
                *found.entry(stream.key().to_vec()).or_default() += stream.value().doc_freq;
            }
        }
        let mut words: Vec<(Vec<u8>, u32)> = found.into_iter().collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(words
            .into_iter()
            .take(PREFIX_EXPANSIONS)
            .filter_map(|(w, _)| String::from_utf8(w).ok())
            .collect())
    }

    /// One phrase of the query in every text column, each weighted. A single word is a flat
    /// union of term queries (so block-max WAND applies); a prefix word, the union of the words
    /// it expands to.
    fn phrase_query(&self, searcher: &Searcher, phrase: &Phrase) -> tantivy::Result<Option<Box<dyn Query>>> {
        let words: Vec<String> = phrase.words.iter().flat_map(|w| self.tokens(w)).collect();
        let Some(last) = words.last() else {
            return Ok(None);
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, (_, weight)) in self.fields.text.iter().zip(TEXT_COLUMNS) {
            let term = |w: &str| Term::from_field_text(*field, w);
            let mut add =
                |q: Box<dyn Query>| clauses.push((Occur::Should, Box::new(BoostQuery::new(q, weight))));
            match (words.len(), phrase.prefix) {
                (1, false) => add(Box::new(TermQuery::new(term(last), IndexRecordOption::WithFreqs))),
                (1, true) => {
                    for w in self.expand(searcher, *field, last)? {
                        add(Box::new(TermQuery::new(term(&w), IndexRecordOption::WithFreqs)));
                    }
                }
                (_, false) => add(Box::new(PhraseQuery::new(
                    words.iter().map(|w| term(w)).collect(),
                ))),
                (_, true) => add(Box::new(PhrasePrefixQuery::new(
                    words.iter().map(|w| term(w)).collect(),
                ))),
            }
        }
        if clauses.is_empty() {
            // A prefix that no word starts with: matches nothing.
            return Ok(Some(Box::new(tantivy::query::EmptyQuery)));
        }
        Ok(Some(Box::new(BooleanQuery::new(clauses))))
    }

    /// The user's query: OR of groups, each the AND of its words minus its NOT words.
    fn text_query(&self, searcher: &Searcher, query: &UserQuery) -> tantivy::Result<Box<dyn Query>> {
        let mut groups: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for group in &query.groups {
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (negated, phrase) in &group.terms {
                if let Some(q) = self.phrase_query(searcher, phrase)? {
                    clauses.push((if *negated { Occur::MustNot } else { Occur::Must }, q));
                }
            }
            let query: Box<dyn Query> = match clauses.len() {
                0 => Box::new(tantivy::query::EmptyQuery),
                1 if clauses[0].0 == Occur::Must => clauses.remove(0).1,
                _ => Box::new(BooleanQuery::new(clauses)),
            };
            groups.push((Occur::Should, query));
        }
        Ok(if groups.len() == 1 {
            groups.remove(0).1
        } else {
            Box::new(BooleanQuery::new(groups))
        })
    }

    /// The filters as unscored clauses.
    fn filter_clauses(&self, filter: &Filter) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.fields;
        let mut out: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let unscored = |q: Box<dyn Query>| -> Box<dyn Query> { Box::new(ConstScoreQuery::new(q, 0.0)) };
        let any_of = |field: Field, values: &[String]| -> Box<dyn Query> {
            let terms = values.iter().map(|v| Term::from_field_text(field, v));
            Box::new(tantivy::query::TermSetQuery::new(terms))
        };
        for (field, values) in [
            (f.model_type, &filter.types),
            (f.family, &filter.families),
            (f.format, &filter.formats),
            (f.state, &filter.states),
        ] {
            if !values.is_empty() {
                out.push((Occur::Must, unscored(any_of(field, values))));
            }
        }
        for tag in &filter.tags {
            out.push((
                Occur::Must,
                unscored(Box::new(TermQuery::new(
                    Term::from_field_text(f.tags, tag),
                    IndexRecordOption::Basic,
                ))),
            ));
        }
        for keys in [&filter.licenses, &filter.base_models, &filter.pipeline_tags] {
            if !keys.is_empty() {
                out.push((Occur::Must, unscored(any_of(f.tags, keys))));
            }
        }
        if filter.min_size.is_some() || filter.max_size.is_some() {
            let bound = |v: Option<u64>| match v {
                Some(v) => Bound::Included(Term::from_field_u64(f.total_size, v)),
                None => Bound::Unbounded,
            };
            out.push((
                Occur::Must,
                unscored(Box::new(RangeQuery::new(
                    bound(filter.min_size),
                    bound(filter.max_size),
                ))),
            ));
        }
        if let Some(has) = filter.has_binding {
            out.push((
                Occur::Must,
                unscored(Box::new(TermQuery::new(
                    Term::from_field_u64(f.has_binding, u64::from(has)),
                    IndexRecordOption::Basic,
                ))),
            ));
        }
        if !filter.repo_id.is_empty() {
            out.push((
                Occur::Must,
                unscored(Box::new(TermQuery::new(
                    Term::from_field_text(f.repo_id, &filter.repo_id),
                    IndexRecordOption::Basic,
                ))),
            ));
        }
        out
    }

    /// The weight of `query` under `filter`, on a searcher of the current index.
    fn weight(&self, query: &UserQuery, filter: &Filter) -> tantivy::Result<(Searcher, Box<dyn Weight>)> {
        let searcher = self.reader.searcher();
        let text = self.text_query(&searcher, query)?;
        let filters = self.filter_clauses(filter);
        let full: Box<dyn Query> = if filters.is_empty() {
            text
        } else {
            let mut clauses = vec![(Occur::Must, text)];
            clauses.extend(filters);
            Box::new(BooleanQuery::new(clauses))
        };
        let weight = full.weight(EnableScoring::enabled_from_searcher(&searcher))?;
        Ok((searcher, weight))
    }

    /// The best `limit` hits ranked after `after`, and how many models match in all (counted up
    /// to `count_cap`).
    pub fn top(
        &self,
        query: &UserQuery,
        filter: &Filter,
        after: Option<Hit>,
        limit: usize,
        count_cap: u64,
    ) -> tantivy::Result<(Vec<Hit>, u64)> {
        let (searcher, weight) = self.weight(query, filter)?;
        let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(limit + 1);
        let mut total = 0u64;
        for segment in searcher.segment_readers() {
            let rowids = segment.fast_fields().u64("rowid")?;
            let alive = segment.alive_bitset();
            // Counting stops at the cap: an exact count of a broad query would cost more than
            // its page.
            let mut scorer = weight.scorer(segment, 1.0)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED && total < count_cap {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    total += 1;
                }
                doc = scorer.advance();
            }
            if limit == 0 {
                continue;
            }
            let threshold = |heap: &BinaryHeap<Worst>| match heap.peek() {
                Some(worst) if heap.len() >= limit => next_down(worst.0.score),
                _ => f32::MIN,
            };
            let start = threshold(&heap);
            weight.for_each_pruning(start, segment, &mut |doc, score| {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    let hit = Hit {
                        score: quantize(score),
                        rowid: rowids.first(doc).unwrap_or_default(),
                    };
                    if after.is_none_or(|a| hit.is_after(&a)) {
                        heap.push(Worst(hit));
                        if heap.len() > limit {
                            heap.pop();
                        }
                    }
                }
                threshold(&heap)
            })?;
        }
        let mut hits: Vec<Hit> = heap.into_iter().map(|w| w.0).collect();
        hits.sort_by(Hit::rank_cmp);
        Ok((hits, total))
    }

    /// Every match scored, best first: the exact order [`Ranking::top`] must agree with (for
    /// tests: it walks every match without pruning).
    pub fn exhaustive(&self, query: &UserQuery, filter: &Filter) -> tantivy::Result<Vec<Hit>> {
        let (searcher, weight) = self.weight(query, filter)?;
        let mut hits = Vec::new();
        for segment in searcher.segment_readers() {
            let rowids = segment.fast_fields().u64("rowid")?;
            let alive = segment.alive_bitset();
            weight.for_each(segment, &mut |doc, score| {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    hits.push(Hit {
                        score: quantize(score),
                        rowid: rowids.first(doc).unwrap_or_default(),
                    });
                }
            })?;
        }
        hits.sort_by(Hit::rank_cmp);
        Ok(hits)
    }

    /// How many models the index holds.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether the index holds no model.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
