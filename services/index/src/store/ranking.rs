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
    BooleanQuery, BoostQuery, ConstScoreQuery, EnableScoring, Occur, PhraseQuery, Query, RangeQuery,
    TermQuery, Weight,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{
    DocId, DocSet as _, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher, SeekDangerResult,
    SegmentReader, TERMINATED, TantivyDocument, Term,
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
    /// Every word of the text columns, once, docs only: what a query word needs to match
    /// somewhere (the driver of a multi-word query's candidates).
    words: Field,
    /// Every two words that stand next to each other in a text column (`q4 k`), docs only: a
    /// phrase's candidates without reading a position (see [`Ranking::conjunctive`]).
    pairs: Field,
}

/// The ranking index.
pub struct Ranking {
    index: Index,
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

/// Per text column, the queries whose scores add up to a phrase's score there.
type PhraseColumns = Vec<Vec<Box<dyn Query>>>;

/// How the pairs field writes two neighbouring words (words never hold a space).
fn pair(first: &str, second: &str) -> String {
    format!("{first} {second}")
}

/// One column's part of a phrase, checked at the candidates in turn. Its scorer is made at the
/// first candidate (a phrase scorer made anywhere else would look for its first match, reading
/// positions all the way), then moved with `seek_danger`, which answers "here or not" without
/// looking further.
struct Probe<'w> {
    weight: &'w dyn Weight,
    scorer: Option<Box<dyn tantivy::query::Scorer>>,
    /// No match before this document.
    floor: DocId,
}

impl<'w> Probe<'w> {
    fn new(weight: &'w dyn Weight) -> Self {
        Self {
            weight,
            scorer: None,
            floor: 0,
        }
    }

    /// This column's score of the phrase in `doc`, or `None` when it does not match there.
    /// Called with increasing documents.
    fn score_at(&mut self, segment: &SegmentReader, doc: DocId) -> tantivy::Result<Option<Score>> {
        if doc < self.floor {
            return Ok(None);
        }
        let found = match &mut self.scorer {
            Some(scorer) => scorer.seek_danger(doc),
            None => {
                let (found, scorer) = self.weight.scorer_danger(segment, doc, 1.0)?;
                self.scorer = Some(scorer);
                found
            }
        };
        Ok(match (found, &mut self.scorer) {
            (SeekDangerResult::Found, Some(scorer)) => {
                self.floor = doc + 1;
                Some(scorer.score())
            }
            (SeekDangerResult::SeekLowerBound(next), _) => {
                self.floor = next;
                None
            }
            (SeekDangerResult::Found, None) => None,
        })
    }
}

/// Calls `visit` with each dictionary word of `field` that starts with `prefix` and its
/// document frequency, segment by segment, while it answers true; false when it stopped early.
fn each_word_with_prefix(
    searcher: &Searcher,
    field: Field,
    prefix: &str,
    mut visit: impl FnMut(&[u8], u32) -> bool,
) -> tantivy::Result<bool> {
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let mut stream = inverted.terms().range().ge(prefix.as_bytes()).into_stream()?;
        while stream.advance() {
            if !stream.key().starts_with(prefix.as_bytes()) {
                break;
            }
            if !visit(stream.key(), stream.value().doc_freq) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A probe for each column of each phrase.
fn probes(phrases: &[Vec<Box<dyn Weight>>]) -> Vec<Vec<Probe<'_>>> {
    phrases
        .iter()
        .map(|columns| columns.iter().map(|w| Probe::new(w.as_ref())).collect())
        .collect()
}

/// A query of one group evaluated as candidates, then checks: see [`Ranking::conjunctive`].
struct Conjunctive {
    /// Every word and every pair of neighbouring words the positive phrases need, and the
    /// filters, unscored: a superset of the matches, from postings with no positions.
    candidates: Box<dyn Weight>,
    /// Per positive phrase, per column: the scored check.
    positive: Vec<Vec<Box<dyn Weight>>>,
    /// Per negated phrase, per column: a match there drops the candidate.
    negative: Vec<Vec<Box<dyn Weight>>>,
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
            words: schema.add_text_field(
                "word",
                TextOptions::default().set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("words")
                        .set_index_option(IndexRecordOption::Basic),
                ),
            ),
            pairs: schema.add_text_field("pair", STRING),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register("words", analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
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
        // Repeats need no care: a field indexes a document once per word.
        let mut analyzer = self.analyzer.clone();
        for (field, text) in f.text.iter().zip(&d.text) {
            doc.add_text(*field, text);
            doc.add_text(f.words, text);
            let mut stream = analyzer.token_stream(text);
            let mut previous: Option<(usize, String)> = None;
            while let Some(token) = stream.next() {
                if let Some((position, word)) = &previous
                    && position + 1 == token.position
                {
                    doc.add_text(f.pairs, pair(word, &token.text));
                }
                previous = Some((token.position, token.text.clone()));
            }
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
    /// nothing commits them). Until [`Ranking::compact`], no merge runs behind the load (the
    /// compaction merges its segments at once, and a merge of the same segments running
    /// meanwhile would only be thrown away).
    pub fn load(&self, docs: &[RankDoc]) -> tantivy::Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        for d in docs {
            writer.add_document(self.document(d))?;
        }
        Ok(())
    }

    /// The words of a phrase as the index stores them.
    fn phrase_words(&self, phrase: &Phrase) -> Vec<String> {
        phrase.words.iter().flat_map(|w| self.tokens(w)).collect()
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
        each_word_with_prefix(searcher, field, prefix, |word, doc_freq| {
            *found.entry(word.to_vec()).or_default() += doc_freq;
            true
        })?;
        let mut words: Vec<(Vec<u8>, u32)> = found.into_iter().collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(words
            .into_iter()
            .take(PREFIX_EXPANSIONS)
            .filter_map(|(w, _)| String::from_utf8(w).ok())
            .collect())
    }

    /// One phrase of the query in each text column, weighted: per column, the queries whose
    /// scores add up (one, or one per word a typed prefix stands for; none when no word of the
    /// column starts with it). `None` for a phrase with no word.
    fn phrase_columns(&self, searcher: &Searcher, phrase: &Phrase) -> tantivy::Result<Option<PhraseColumns>> {
        let words = self.phrase_words(phrase);
        let Some(last) = words.last() else {
            return Ok(None);
        };
        // A typed last word of a phrase stands for the words that follow the one before it
        // somewhere in the library (the pairs field knows them), the most frequent first.
        let endings = match words.split_last() {
            Some((last, [.., before])) if phrase.prefix => {
                let lead = pair(before, "");
                self.expand(searcher, self.fields.pairs, &pair(before, last))?
                    .into_iter()
                    .filter_map(|p| p.strip_prefix(&lead).map(str::to_owned))
                    .collect()
            }
            _ => Vec::new(),
        };
        // A phrase cannot match in a column that lacks its last word (or every word a typed last
        // word stands for): one dictionary lookup spares the column's phrase statistics and
        // scorers (an exact name is in two columns of seven). No score changes: such a
        // column's phrase query matches nothing.
        let last_words: Vec<&str> = match (words.len(), phrase.prefix) {
            (1, _) => Vec::new(),
            (_, false) => vec![last.as_str()],
            (_, true) if endings.len() <= 4 => endings.iter().map(String::as_str).collect(),
            (_, true) => Vec::new(),
        };
        let mut columns = Vec::with_capacity(TEXT_COLUMNS.len());
        for (field, (_, weight)) in self.fields.text.iter().zip(TEXT_COLUMNS) {
            if !last_words.is_empty() && !Self::holds_any(searcher, *field, &last_words)? {
                columns.push(Vec::new());
                continue;
            }
            let term = |w: &str| Term::from_field_text(*field, w);
            let boost = |q: Box<dyn Query>| -> Box<dyn Query> { Box::new(BoostQuery::new(q, weight)) };
            let column: Vec<Box<dyn Query>> = match (words.len(), phrase.prefix) {
                (1, false) => vec![boost(Box::new(TermQuery::new(
                    term(last),
                    IndexRecordOption::WithFreqs,
                )))],
                (1, true) => self
                    .expand(searcher, *field, last)?
                    .iter()
                    .map(|w| boost(Box::new(TermQuery::new(term(w), IndexRecordOption::WithFreqs))))
                    .collect(),
                (_, false) => vec![boost(Box::new(PhraseQuery::new(
                    words.iter().map(|w| term(w)).collect(),
                )))],
                (n, true) => endings
                    .iter()
                    .map(|ending| {
                        let terms = words[..n - 1].iter().map(|w| term(w)).chain([term(ending)]);
                        boost(Box::new(PhraseQuery::new(terms.collect())))
                    })
                    .collect(),
            };
            columns.push(column);
        }
        Ok(Some(columns))
    }

    /// Whether any of `words` is in `field`'s dictionary.
    fn holds_any(searcher: &Searcher, field: Field, words: &[&str]) -> tantivy::Result<bool> {
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(field)?;
            for word in words {
                if inverted.doc_freq(&Term::from_field_text(field, word))? > 0 {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// One phrase of the query in every text column, each weighted. A single word is a flat
    /// union of term queries (so block-max WAND applies); a prefix word, the union of the words
    /// it expands to.
    fn phrase_query(&self, searcher: &Searcher, phrase: &Phrase) -> tantivy::Result<Option<Box<dyn Query>>> {
        let Some(columns) = self.phrase_columns(searcher, phrase)? else {
            return Ok(None);
        };
        let clauses: Vec<(Occur, Box<dyn Query>)> = columns
            .into_iter()
            .flatten()
            .map(|q| (Occur::Should, q))
            .collect();
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

    /// The weight of `query` under `filter`, on `searcher`.
    fn weight(
        &self,
        searcher: &Searcher,
        query: &UserQuery,
        filter: &Filter,
    ) -> tantivy::Result<Box<dyn Weight>> {
        let text = self.text_query(searcher, query)?;
        let filters = self.filter_clauses(filter);
        let full: Box<dyn Query> = if filters.is_empty() {
            text
        } else {
            let mut clauses = vec![(Occur::Must, text)];
            clauses.extend(filters);
            Box::new(BooleanQuery::new(clauses))
        };
        full.weight(EnableScoring::enabled_from_searcher(searcher))
    }

    /// Every word of `field` that starts with `prefix`, or `None` when there are more than
    /// `limit` of them.
    fn expand_all(
        &self,
        searcher: &Searcher,
        field: Field,
        prefix: &str,
        limit: usize,
    ) -> tantivy::Result<Option<Vec<String>>> {
        let mut found = std::collections::BTreeSet::new();
        let complete = each_word_with_prefix(searcher, field, prefix, |word, _| {
            found.insert(word.to_vec());
            found.len() <= limit
        })?;
        if !complete {
            return Ok(None);
        }
        Ok(Some(
            found
                .into_iter()
                .filter_map(|w| String::from_utf8(w).ok())
                .collect(),
        ))
    }

    /// What a phrase needs in the words and pairs fields, as unscored clauses: each word (a
    /// single word), or each pair of neighbouring words (a phrase). A typed prefix counts
    /// through the words or pairs it stands for, when they are few enough to list.
    fn candidate_clauses(
        &self,
        searcher: &Searcher,
        phrase: &Phrase,
    ) -> tantivy::Result<Vec<Box<dyn Query>>> {
        let f = &self.fields;
        let words = self.phrase_words(phrase);
        let Some((last, whole)) = words.split_last() else {
            return Ok(Vec::new());
        };
        let basic = |field: Field, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, text),
                IndexRecordOption::Basic,
            ))
        };
        // A union of term queries: a term set query would build an FST per query.
        let any_of = |field: Field, mut values: Vec<String>| -> Box<dyn Query> {
            match values.len() {
                0 => Box::new(tantivy::query::EmptyQuery),
                1 => basic(field, &values.remove(0)),
                _ => Box::new(BooleanQuery::new(
                    values.iter().map(|v| (Occur::Should, basic(field, v))).collect(),
                )),
            }
        };
        let mut out = Vec::new();
        let exact = if phrase.prefix { whole } else { &words[..] };
        if exact.len() == 1 {
            out.push(basic(f.words, &exact[0]));
        }
        for two in exact.windows(2) {
            out.push(basic(f.pairs, &pair(&two[0], &two[1])));
        }
        if phrase.prefix {
            let (field, prefix) = match whole.last() {
                Some(before) => (f.pairs, pair(before, last)),
                None => (f.words, last.clone()),
            };
            if let Some(expanded) = self.expand_all(searcher, field, &prefix, PREFIX_EXPANSIONS)? {
                out.push(any_of(field, expanded));
            }
        }
        Ok(out)
    }

    /// A plan for a query of one group that has several phrases or a phrase of several words:
    /// its candidates are the intersection of docs-only postings (each word; each pair of
    /// neighbouring words of a phrase), then each phrase is checked and scored in each column
    /// at the candidates only. A phrase of common words (`q4_k_m`) evaluated as a union of
    /// column phrase queries reads the positions of every model holding all its words, a
    /// quarter of the library; here, of the few candidates. The scores are those of the full
    /// query ([`Ranking::exhaustive`]): the same column queries, added up. `None` for the
    /// queries the pruned union answers best (one word, OR) or that give no candidate clause.
    fn conjunctive(
        &self,
        searcher: &Searcher,
        query: &UserQuery,
        filter: &Filter,
    ) -> tantivy::Result<Option<Conjunctive>> {
        let [group] = query.groups.as_slice() else {
            return Ok(None);
        };
        let positives: Vec<&Phrase> = group.terms.iter().filter(|(n, _)| !n).map(|(_, p)| p).collect();
        let one_word = |p: &Phrase| self.phrase_words(p).len() <= 1;
        if positives.is_empty() || (positives.len() == 1 && one_word(positives[0])) {
            return Ok(None);
        }
        let mut candidates: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for phrase in &positives {
            for clause in self.candidate_clauses(searcher, phrase)? {
                candidates.push((Occur::Must, clause));
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        candidates.extend(self.filter_clauses(filter));
        let scoring = EnableScoring::enabled_from_searcher(searcher);
        let mut positive = Vec::new();
        let mut negative = Vec::new();
        for (negated, phrase) in &group.terms {
            let Some(columns) = self.phrase_columns(searcher, phrase)? else {
                continue;
            };
            let mut weights = Vec::new();
            for mut column in columns {
                let query: Box<dyn Query> = match column.len() {
                    0 => continue,
                    1 => column.remove(0),
                    _ => Box::new(BooleanQuery::new(
                        column.into_iter().map(|q| (Occur::Should, q)).collect(),
                    )),
                };
                weights.push(query.weight(scoring)?);
            }
            if *negated {
                negative.push(weights);
            } else {
                positive.push(weights);
            }
        }
        Ok(Some(Conjunctive {
            candidates: BooleanQuery::new(candidates)
                .weight(EnableScoring::disabled_from_searcher(searcher))?,
            positive,
            negative,
        }))
    }

    /// [`Ranking::top`] by a [`Ranking::conjunctive`] plan: every candidate checked and scored.
    fn top_conjunctive(
        searcher: &Searcher,
        plan: &Conjunctive,
        after: Option<Hit>,
        limit: usize,
        count_cap: u64,
    ) -> tantivy::Result<(Vec<Hit>, u64)> {
        let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(limit + 1);
        let mut total = 0u64;
        for segment in searcher.segment_readers() {
            let rowids = segment.fast_fields().u64("rowid")?;
            let alive = segment.alive_bitset();
            let mut candidates = plan.candidates.scorer(segment, 1.0)?;
            let mut positive = probes(&plan.positive);
            let mut negative = probes(&plan.negative);
            let mut doc = candidates.doc();
            'candidates: while doc != TERMINATED {
                if alive.is_some_and(|a| !a.is_alive(doc)) {
                    doc = candidates.advance();
                    continue;
                }
                let mut score = 0.0;
                for columns in &mut positive {
                    let mut matched = false;
                    for probe in columns {
                        if let Some(s) = probe.score_at(segment, doc)? {
                            matched = true;
                            score += s;
                        }
                    }
                    if !matched {
                        doc = candidates.advance();
                        continue 'candidates;
                    }
                }
                for columns in &mut negative {
                    for probe in columns {
                        if probe.score_at(segment, doc)?.is_some() {
                            doc = candidates.advance();
                            continue 'candidates;
                        }
                    }
                }
                total += 1;
                let hit = Hit {
                    score: quantize(score),
                    rowid: rowids.first(doc).unwrap_or_default(),
                };
                if limit > 0 && after.is_none_or(|a| hit.is_after(&a)) {
                    heap.push(Worst(hit));
                    if heap.len() > limit {
                        heap.pop();
                    }
                }
                doc = candidates.advance();
            }
        }
        let mut hits: Vec<Hit> = heap.into_iter().map(|w| w.0).collect();
        hits.sort_by(Hit::rank_cmp);
        Ok((hits, total.min(count_cap)))
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
        let searcher = self.reader.searcher();
        if let Some(plan) = self.conjunctive(&searcher, query, filter)? {
            return Self::top_conjunctive(&searcher, &plan, after, limit, count_cap);
        }
        let weight = self.weight(&searcher, query, filter)?;
        let counter = self.one_word_counter(&searcher, query, filter)?;
        let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(limit + 1);
        let mut total = 0u64;
        for segment in searcher.segment_readers() {
            let rowids = segment.fast_fields().u64("rowid")?;
            let alive = segment.alive_bitset();
            // Counting stops at the cap: an exact count of a broad query would cost more than
            // its page.
            let mut scorer = counter.as_ref().unwrap_or(&weight).scorer(segment, 1.0)?;
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

    /// For a query of one whole word, what counts its matches cheapest: its postings in the
    /// words field (one list, docs only) instead of the union of seven column lists. The same
    /// models match: a word is in the words field exactly when it is in a column.
    fn one_word_counter(
        &self,
        searcher: &Searcher,
        query: &UserQuery,
        filter: &Filter,
    ) -> tantivy::Result<Option<Box<dyn Weight>>> {
        let [group] = query.groups.as_slice() else {
            return Ok(None);
        };
        let [(false, phrase)] = group.terms.as_slice() else {
            return Ok(None);
        };
        let words = self.phrase_words(phrase);
        let [word] = words.as_slice() else {
            return Ok(None);
        };
        if phrase.prefix {
            return Ok(None);
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(self.fields.words, word),
                IndexRecordOption::Basic,
            )),
        )];
        clauses.extend(self.filter_clauses(filter));
        Ok(Some(
            BooleanQuery::new(clauses).weight(EnableScoring::disabled_from_searcher(searcher))?,
        ))
    }

    /// Every match scored, best first: the exact order [`Ranking::top`] must agree with (for
    /// tests: it walks every match without pruning).
    pub fn exhaustive(&self, query: &UserQuery, filter: &Filter) -> tantivy::Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let weight = self.weight(&searcher, query, filter)?;
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

    /// Merges every segment into one, then searches it: a query pays its term lookups and
    /// scorer set-up per segment, and a load (a start, a rebuild) leaves one per memory budget's
    /// worth of models. Blocks until the merge is done (run it off the async threads).
    pub fn compact(&self) -> tantivy::Result<usize> {
        let segments = self.index.searchable_segment_ids()?;
        let merge = {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            writer.set_merge_policy(Box::new(tantivy::indexer::LogMergePolicy::default()));
            (segments.len() > 1).then(|| writer.merge(&segments))
        };
        if let Some(merge) = merge {
            merge.wait()?;
            self.reader.reload()?;
        }
        Ok(segments.len())
    }

    /// How many segments searches go through.
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
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
