//! Reindex: make models.db agree with the tree. Indexes every `metadata.json`, adopts model
//! folders copied in by hand, marks records whose files vanished as missing (kept, not deleted)
//! and restores them when the files come back — by path, or by content when a folder moved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::IndexError;
use crate::jobs::{Handle, ItemResult, Outcome};
use crate::library::{Library, ReindexReport, read_metadata, read_overrides};
use crate::metadata::now_rfc3339;
use crate::metadata::{FileEntry, METADATA_FILE, Metadata};
use crate::store::Record;
use crate::{detect, inspect};

/// Model directories: `<root>/<type>/<family>/<slug>`, skipping dot-directories.
fn model_dirs(root: &Path) -> Vec<PathBuf> {
    fn subdirs(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
    subdirs(root)
        .iter()
        .flat_map(|t| subdirs(t))
        .flat_map(|f| subdirs(&f))
        .collect()
}

fn id_of(root: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let id = parts.join("/");
    crate::slug::parse_model_id(&id).map(|_| id.clone())
}

/// Whether every file of the metadata is present with its recorded size.
fn files_state(dir: &Path, files: &[FileEntry]) -> (&'static str, String) {
    let mut missing = Vec::new();
    for f in files {
        match std::fs::metadata(dir.join(&f.path)) {
            Ok(m) if m.len() == f.size => {}
            Ok(m) => missing.push(format!("{} has {} bytes, {} expected", f.path, m.len(), f.size)),
            Err(_) => missing.push(format!("{} is missing", f.path)),
        }
    }
    match missing.len() {
        0 => ("ready", String::new()),
        n if n == files.len() => ("missing", missing.join("; ")),
        _ => ("partial", missing.join("; ")),
    }
}

/// What the scan found in one model directory.
enum Scanned {
    /// A metadata.json, possibly corrected (id from the path, state from the files).
    Indexed {
        dir: PathBuf,
        metadata: Box<Metadata>,
        overridden: Vec<String>,
        /// The corrected metadata.json to write, when the file on disk is out of date.
        rewrite: Option<Box<Metadata>>,
        /// An import journal was left in the folder (a crash after the folder was placed).
        stale_journal: bool,
    },
    /// Weights without metadata.json: adopt in place.
    Adopt { dir: PathBuf, id: String },
    /// Unreadable.
    Failed {
        dir: PathBuf,
        id: String,
        error: IndexError,
    },
}

/// Reads model directories (blocking: runs on the blocking pool).
fn scan(root: &Path, dirs: Vec<PathBuf>) -> Vec<Scanned> {
    dirs.into_iter()
        .filter_map(|dir| {
            let id = id_of(root, &dir)?;
            // Half-written files of a killed process (never one of this process's own writes).
            match pumas_runtime::fsio::remove_stale_temps(&dir) {
                Ok(0) => {}
                Ok(n) => tracing::info!(dir = %dir.display(), removed = n, "removed temp files a stopped index left"),
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove leftover temp files"),
            }
            if !dir.join(METADATA_FILE).is_file() {
                return Some(Scanned::Adopt { dir, id });
            }
            let read = (|| {
                let mut metadata = read_metadata(&dir)?;
                let mut rewrite = false;
                if metadata.id != id {
                    // Copied or moved here by hand: the path is the id.
                    metadata.id.clone_from(&id);
                    rewrite = true;
                }
                let (state, reason) = files_state(&dir, &metadata.files);
                let keep_state = matches!(metadata.state.as_str(), "downloading" | "error");
                if !keep_state && (metadata.state != state || metadata.state_reason != reason) {
                    metadata.state = state.to_owned();
                    metadata.state_reason = reason;
                    rewrite = true;
                }
                let overrides = read_overrides(&dir)?;
                if rewrite {
                    metadata.updated_time = now_rfc3339();
                }
                Ok::<_, IndexError>((
                    Box::new(overrides.apply(&metadata)),
                    overrides.overridden_fields(),
                    rewrite.then(|| Box::new(metadata)),
                ))
            })();
            let stale_journal = dir.join(crate::library::JOURNAL_FILE).exists();
            Some(match read {
                Ok((metadata, overridden, rewrite)) => Scanned::Indexed {
                    dir,
                    metadata,
                    overridden,
                    rewrite,
                    stale_journal,
                },
                Err(error) => Scanned::Failed { dir, id, error },
            })
        })
        .collect()
}

/// Records indexed per transaction.
const BATCH: usize = 1000;
/// In a rebuild, the relevance index makes what it took in searchable every this many batches
/// (and at the end), not after each: each publish also ends the writer's in-memory segment, which
/// keeps the load's memory peak low.
const PUBLISH_EVERY: usize = 5;

/// Rescans the tree: indexes every metadata.json (rebuilding models.db when it is new), adopts
/// model folders copied in by hand, marks records whose files vanished as missing and restores
/// them when the files are back. One reindex runs at a time.
pub async fn reindex(library: &Arc<Library>, job: Option<&Handle>) -> Result<ReindexReport, IndexError> {
    let _one_at_a_time = library.reindex_turn().await;
    library.set_reindexing(true).await;
    let report = run(library, job).await;
    library.set_reindexing(false).await;
    report
}

/// Runs a reindex. On an empty index (models.db new or deleted) it is a rebuild: records go in
/// a thousand per transaction and no change events are sent (nothing changed on disk).
async fn run(library: &Arc<Library>, job: Option<&Handle>) -> Result<ReindexReport, IndexError> {
    let root = library.root().to_owned();
    let walk_root = root.clone();
    let dirs = tokio::task::spawn_blocking(move || model_dirs(&walk_root))
        .await
        .map_err(|e| IndexError::Internal(e.to_string()))?;
    if let Some(h) = job {
        h.update(|s| s.items_total = dirs.len() as u64);
    }
    let known: BTreeSet<String> = library.store().all_ids().await?.into_iter().collect();
    let rebuilding = known.is_empty();
    let mut report = ReindexReport::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut found_digests: BTreeMap<String, String> = BTreeMap::new();
    let mut batch = Batch::default();
    let mut events: Vec<(&'static str, String)> = Vec::new();
    let mut results: Vec<ItemResult> = Vec::new();
    let failed = |dir: &Path, id: String, error: &IndexError| ItemResult {
        source: dir.display().to_string(),
        outcome: Outcome::Failed,
        model_id: id,
        error: Some(error.into()),
    };

    // Read a batch of directories at a time, so memory stays flat however large the library;
    // the next batch is read from disk while this one is written to models.db.
    let mut chunks = dirs
        .chunks(BATCH)
        .map(<[PathBuf]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter();
    let read_ahead = |chunk: Option<Vec<PathBuf>>| {
        chunk.map(|chunk| {
            let root = root.clone();
            tokio::task::spawn_blocking(move || scan(&root, chunk))
        })
    };
    let mut next = read_ahead(chunks.next());
    let mut pending: Vec<Scanned> = Vec::new();
    // A full batch is written behind, while the loop reads and sorts the next one.
    let mut writing: Option<tokio::task::JoinHandle<Result<(), IndexError>>> = None;
    let mut loaded_unpublished = 0;
    loop {
        let Some(item) = pending.pop() else {
            let Some(reading) = next.take() else { break };
            let mut scanned = reading.await.map_err(|e| IndexError::Internal(e.to_string()))?;
            next = read_ahead(chunks.next());
            scanned.reverse();
            pending = scanned;
            continue;
        };
        if job.is_some_and(Handle::cancelled) {
            break;
        }
        report.seen += 1;
        match item {
            Scanned::Failed { dir, id, error } => {
                tracing::warn!(dir = %dir.display(), %error, "reindex skipped a directory");
                results.push(failed(&dir, id, &error));
            }
            Scanned::Adopt { dir, id } => match adopt(library, &dir, &id).await {
                Ok(Some((outcome, id))) => {
                    seen.insert(id.clone());
                    report.added += 1;
                    results.push(ItemResult {
                        source: dir.display().to_string(),
                        outcome,
                        model_id: id,
                        error: None,
                    });
                }
                Ok(None) => {}
                Err(error) => results.push(failed(&dir, id, &error)),
            },
            Scanned::Indexed {
                dir,
                metadata,
                overridden,
                rewrite,
                stale_journal,
            } => {
                let id = metadata.id.clone();
                let metadata_id = id.clone();
                seen.insert(id.clone());
                found_digests.insert(metadata.composite_digest.clone(), id.clone());
                // With the catalog's bindings, as stored: a catalog upgrade shows as an update.
                let record = library.store().with_effective_bindings(Record {
                    metadata: *metadata,
                    overridden,
                });
                let outcome = if rebuilding || !known.contains(&id) {
                    Outcome::Added
                } else if rewrite.is_some()
                    || library
                        .store()
                        .get_checked(&id)
                        .await?
                        .is_none_or(|(stored, column_current)| stored != record || !column_current)
                {
                    if record.metadata.state == "ready" {
                        Outcome::Updated
                    } else {
                        Outcome::Missing
                    }
                } else {
                    Outcome::Unchanged
                };
                match outcome {
                    Outcome::Added => report.added += 1,
                    Outcome::Updated | Outcome::Missing => report.updated += 1,
                    _ => {}
                }
                if outcome != Outcome::Unchanged {
                    if !rebuilding {
                        events.push((
                            if outcome == Outcome::Added {
                                "added"
                            } else {
                                "updated"
                            },
                            id.clone(),
                        ));
                        results.push(ItemResult {
                            source: dir.display().to_string(),
                            outcome,
                            model_id: id,
                            error: None,
                        });
                    }
                    batch.records.push(record);
                }
                if let Some(metadata) = rewrite {
                    batch.rewrites.push((dir.clone(), metadata));
                }
                if stale_journal {
                    batch.journals.push((metadata_id, dir));
                }
            }
        }
        if batch.records.len() >= BATCH {
            finish_writing(writing.take()).await?;
            loaded_unpublished += usize::from(rebuilding);
            let publish = loaded_unpublished >= PUBLISH_EVERY;
            if publish {
                loaded_unpublished = 0;
            }
            let (library, batch, events) = (
                Arc::clone(library),
                std::mem::take(&mut batch),
                std::mem::take(&mut events),
            );
            writing = Some(tokio::spawn(async move {
                flush(&library, batch, events, rebuilding).await?;
                if publish {
                    library.store().publish_loaded(false).await?;
                }
                Ok(())
            }));
        }
        if let Some(h) = job
            && report.seen % 256 == 0
        {
            let done = report.seen;
            h.update(|s| s.items_done = done);
        }
    }
    finish_writing(writing.take()).await?;
    flush(library, batch, events, rebuilding).await?;
    if rebuilding {
        library.store().publish_loaded(true).await?;
    }

    // Records whose directory is gone: moved (same content elsewhere) or missing.
    if job.is_none_or(|h| !h.cancelled()) {
        for id in known.difference(&seen) {
            let mut commit = library.commit().await;
            if commit.touched(id) {
                continue;
            }
            let Some(mut record) = library.store().get(id).await? else {
                continue;
            };
            if let Some(new_id) = found_digests
                .get(&record.metadata.composite_digest)
                .filter(|n| *n != id)
            {
                library.remove_record(&mut commit, id).await?;
                library.publish("moved", new_id, id).await?;
                continue;
            }
            if record.metadata.state != "missing" {
                record.metadata.state = "missing".to_owned();
                record.metadata.state_reason =
                    "the model's directory is gone (unmounted disk or removed by hand)".to_owned();
                library.store().upsert(&record).await?;
                library.publish("updated", id, "").await?;
                report.missing += 1;
                results.push(ItemResult {
                    source: id.clone(),
                    outcome: Outcome::Missing,
                    model_id: id.clone(),
                    error: None,
                });
            }
        }
    }
    if let Some(h) = job {
        let done = report.seen;
        h.update(|s| {
            s.items_done = done;
            s.results.extend(results);
        });
    }
    Ok(report)
}

/// What a reindex writes, a batch at a time.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    /// Model folders whose metadata.json is rewritten (id from the path, state from the files).
    rewrites: Vec<(PathBuf, Box<Metadata>)>,
    /// Import journals a crash left in placed folders.
    journals: Vec<(String, PathBuf)>,
}

/// Waits for the batch being written behind, if any.
async fn finish_writing(
    writing: Option<tokio::task::JoinHandle<Result<(), IndexError>>>,
) -> Result<(), IndexError> {
    match writing {
        Some(task) => task.await.map_err(|e| IndexError::Internal(e.to_string()))?,
        None => Ok(()),
    }
}

/// Writes a batch. A model a writer changed since the reindex started is skipped: the writer's
/// copy is newer than what the reindex read (a delete stays deleted, an update is kept).
async fn flush(
    library: &Library,
    mut batch: Batch,
    mut events: Vec<(&'static str, String)>,
    rebuilding: bool,
) -> Result<(), IndexError> {
    let commit = library.commit().await;
    batch.records.retain(|r| !commit.touched(&r.metadata.id));
    events.retain(|(_, id)| !commit.touched(id));
    for (dir, metadata) in batch.rewrites.drain(..) {
        if commit.touched(&metadata.id) {
            continue;
        }
        let path = dir.join(METADATA_FILE);
        pumas_runtime::fsio::write_json_atomic(&path, &metadata)
            .map_err(|e| IndexError::io(format!("writing {}", path.display()), e))?;
    }
    for (id, dir) in batch.journals.drain(..) {
        if !commit.touched(&id) {
            let _ = std::fs::remove_file(dir.join(crate::library::JOURNAL_FILE));
        }
    }
    if !batch.records.is_empty() {
        if rebuilding {
            library.store().load_many(&batch.records).await?;
        } else {
            library.store().upsert_many(&batch.records).await?;
        }
        batch.records.clear();
    }
    for (kind, id) in events.drain(..) {
        library.publish(kind, &id, "").await?;
    }
    Ok(())
}

/// A folder at `<type>/<family>/<slug>` with weights but no metadata.json: adopt it in place.
async fn adopt(library: &Library, dir: &Path, id: &str) -> Result<Option<(Outcome, String)>, IndexError> {
    let (path_type, _, _) = crate::slug::parse_model_id(id).unwrap_or_default();
    if !crate::vocabulary::is_model_type(path_type) {
        tracing::warn!(dir = %dir.display(), "not adopting: `{path_type}` is not a model type folder");
        return Ok(None);
    }
    let dir_owned = dir.to_owned();
    let units = tokio::task::spawn_blocking(move || inspect::units_for(&dir_owned))
        .await
        .map_err(|e| IndexError::Internal(e.to_string()))?;
    let Ok(units) = units else { return Ok(None) };
    // The folder is one model: gather all its files into one unit.
    let name = units.first().map(|u| u.name.clone()).unwrap_or_default();
    let mut files: Vec<inspect::UnitFile> = units.into_iter().flat_map(|u| u.files).collect();
    for f in &mut files {
        f.relative = f
            .source
            .strip_prefix(dir)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    let unit = inspect::Unit {
        name,
        origin: dir.to_owned(),
        files,
        side_files: Vec::new(),
    };
    let unit_for_facts = unit.clone();
    let facts = tokio::task::spawn_blocking(move || inspect::facts_for(&unit_for_facts))
        .await
        .map_err(|e| IndexError::Internal(e.to_string()))?
        .map_err(|e| IndexError::invalid("directory", e.to_string()))?;
    let decision = detect::detect(&facts);
    let entries = crate::import::hash_unit(library, &unit, None).await?;
    let (path_type, path_family, _) = crate::slug::parse_model_id(id).unwrap_or_default();
    let mut decision = decision;
    decision.detection.evidence.insert(
        0,
        crate::metadata::Evidence {
            kind: "library_path".to_owned(),
            key: id.to_owned(),
            value: format!("{path_type}/{path_family}"),
            supports: "placed there by hand".to_owned(),
        },
    );
    let metadata = crate::import::local_metadata(
        id.to_owned(),
        &unit,
        &facts,
        decision,
        entries,
        unit.name.clone(),
        path_type.to_owned(),
        path_family.to_owned(),
        Vec::new(),
    );
    // Adopt only what is still an unclaimed folder: an import or download may own it by now.
    let mut commit = library.commit().await;
    if commit.touched(id) || dir.join(METADATA_FILE).exists() || library.store().get(id).await?.is_some() {
        return Ok(None);
    }
    library.write_and_index(&mut commit, &metadata).await?;
    library.publish("added", id, "").await?;
    Ok(Some((Outcome::Added, id.to_owned())))
}
