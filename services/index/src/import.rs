//! The import pipeline: inspect -> detect -> hash (cached, one pass for both digests) -> place
//! into a staging directory -> write metadata.json -> one atomic rename into the canonical path
//! -> index -> change event. A crash at any point leaves no half-placed model: staging
//! directories are rolled back at the next start (moved files go back where they came from).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::detect;
use crate::error::IndexError;
use crate::hash::{self, Digests};
use crate::inspect::{self, Unit};
use crate::jobs::{Failure, Handle, ItemResult, Outcome, State};
use crate::library::{JOURNAL_FILE, Library, STAGING_DIR};
use crate::metadata::now_rfc3339;
use crate::metadata::{FileEntry, METADATA_FILE, Metadata, SCHEMA_VERSION, Source};
use crate::store::FileKey;
use pumas_runtime::fsio::{sync_dir, write_json_atomic};

/// How files are placed into the library.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Copy the bytes (the kernel may share extents on copy-on-write filesystems).
    #[default]
    Copy,
    /// Move: rename on the same filesystem, else copy + verify + delete the source.
    Move,
    /// Hard link (same filesystem only).
    Hardlink,
    /// Copy-on-write clone where the filesystem supports it (copy_file_range), else a copy.
    Reflink,
}

/// What the caller asked for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Paths to import.
    pub paths: Vec<PathBuf>,
    /// Placement.
    pub mode: Mode,
    /// Type override.
    pub model_type: Option<String>,
    /// Family override.
    pub family: Option<String>,
    /// Display name override.
    pub display_name: Option<String>,
    /// Extra tags.
    pub tags: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Journal {
    mode: Mode,
    files: Vec<JournalFile>,
}

#[derive(Serialize, Deserialize)]
struct JournalFile {
    source: PathBuf,
    relative: String,
}

/// Checks a request before any work starts, and returns the units it stands for. Every problem
/// here is the caller's and changes nothing.
pub fn plan(library: &Library, request: &Request) -> Result<Vec<Unit>, IndexError> {
    if request.paths.is_empty() {
        return Err(IndexError::invalid(
            "paths",
            "give at least one file or directory to import",
        ));
    }
    crate::vocabulary::check_type_and_family("", request.model_type.as_deref(), request.family.as_deref())?;
    let mut units = Vec::new();
    for (i, path) in request.paths.iter().enumerate() {
        let field = format!("paths[{i}]");
        if !path.is_absolute() {
            return Err(IndexError::invalid(
                field,
                format!("`{}` is not an absolute path", path.display()),
            ));
        }
        let real = std::fs::canonicalize(path).map_err(|e| {
            IndexError::invalid(field.clone(), format!("`{}` cannot be read: {e}", path.display()))
        })?;
        let roots = &library.policy.import_roots;
        if roots.is_empty() && library.policy.import_roots_required {
            return Err(IndexError::Precondition {
                kind: "IMPORT_ROOTS_REQUIRED".to_owned(),
                subject: path.display().to_string(),
                message: "this index listens beyond loopback and takes imports only from the directories its operator names; start it with --import-root <dir> (repeatable)".to_owned(),
            });
        }
        if !roots.is_empty() && !roots.iter().any(|r| real.starts_with(r)) {
            return Err(IndexError::invalid(
                field,
                format!(
                    "`{}` is outside the directories this index may import from ({})",
                    path.display(),
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // Compared with the real path of the library too: a data root reached through a symlink
        // or given relative must not let the library be a source.
        let library_root =
            std::fs::canonicalize(library.root()).unwrap_or_else(|_| library.root().to_owned());
        if real.starts_with(&library_root) || real.starts_with(library.root()) {
            return Err(IndexError::invalid(
                field,
                format!("`{}` is already inside the library", path.display()),
            ));
        }
        let found =
            inspect::units_for(&real).map_err(|e| IndexError::invalid(field.clone(), e.to_string()))?;
        for unit in &found {
            if library.policy.refuse_pickle && inspect::is_unsafe(unit) {
                return Err(IndexError::Precondition {
                    kind: "UNSAFE_FORMAT_REFUSED".to_owned(),
                    subject: unit.origin.display().to_string(),
                    message: format!(
                        "{} is a pickle-based file, which can run code when loaded, and this index refuses them (--refuse-pickle); convert it to safetensors",
                        unit.origin.display()
                    ),
                });
            }
        }
        units.extend(found);
    }
    if request.display_name.is_some() && units.len() > 1 {
        return Err(IndexError::invalid(
            "display_name",
            "a display name can only be given when importing one model",
        ));
    }
    if matches!(request.mode, Mode::Copy | Mode::Reflink) {
        let needed: u64 = units.iter().map(Unit::size).sum();
        let available = fs4::available_space(library.root()).unwrap_or(u64::MAX);
        // Keep a margin for metadata and the filesystem itself.
        if needed.saturating_add(64 << 20) > available {
            return Err(IndexError::NoSpace(format!(
                "the import needs {needed} bytes and the library's filesystem has {available} free"
            )));
        }
    }
    Ok(units)
}

/// Runs an import job to its end.
pub async fn run(library: Arc<Library>, handle: Handle, request: Request, units: Vec<Unit>) {
    let Some(_turn) = library.jobs.turn(&handle).await else {
        return;
    };
    handle.start();
    let total: u64 = units.iter().map(Unit::size).sum();
    handle.update(|s| {
        s.bytes_total = total;
        s.items_total = units.len() as u64;
    });
    let job_id = handle_id(&handle);
    for (n, unit) in units.into_iter().enumerate() {
        if handle.cancelled() {
            break;
        }
        handle.update(|s| s.current = unit.origin.display().to_string());
        let source = unit.origin.display().to_string();
        let size = unit.size();
        let before = current_bytes(&handle);
        let result = import_unit(&library, &handle, &request, unit, &format!("{job_id}-{n}")).await;
        let item = match result {
            Ok((outcome, model_id)) => ItemResult {
                source,
                outcome,
                model_id,
                error: None,
            },
            Err(err) => {
                tracing::warn!(error = %err, "import of one item failed");
                ItemResult {
                    source,
                    outcome: Outcome::Failed,
                    model_id: String::new(),
                    error: Some(Failure::from(&err)),
                }
            }
        };
        handle.update(|s| {
            s.results.push(item);
            s.items_done += 1;
            s.bytes_done = before + size;
        });
    }
    let failed = handle_failed_all(&handle);
    handle.finish(if failed { State::Failed } else { State::Succeeded }, None);
}

fn handle_id(handle: &Handle) -> String {
    handle.snapshot().id
}

fn current_bytes(handle: &Handle) -> u64 {
    handle.snapshot().bytes_done
}

fn handle_failed_all(handle: &Handle) -> bool {
    let s = handle.snapshot();
    !s.results.is_empty() && s.results.iter().all(|r| r.outcome == Outcome::Failed)
}

/// Hashes every file of a unit (cache-aware) into file entries.
pub(crate) async fn hash_unit(
    library: &Library,
    unit: &Unit,
    handle: Option<&Handle>,
) -> Result<Vec<FileEntry>, IndexError> {
    let mut files = Vec::with_capacity(unit.files.len());
    for f in &unit.files {
        let digests = hash_cached(library, &f.source, handle).await?;
        files.push(FileEntry {
            path: f.relative.clone(),
            size: f.size,
            sha256: digests.sha256,
            blake3: digests.blake3,
        });
    }
    Ok(files)
}

/// The metadata of a model that was just inspected and hashed from local files.
#[allow(clippy::too_many_arguments)]
pub(crate) fn local_metadata(
    id: String,
    unit: &Unit,
    facts: &detect::Facts,
    decision: detect::Decision,
    files: Vec<FileEntry>,
    display_name: String,
    model_type: String,
    family: String,
    tags: Vec<String>,
) -> Metadata {
    let now = now_rfc3339();
    let composite = hash::composite(
        &files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect::<Vec<_>>(),
    );
    let embedded = crate::embedded::from_facts(facts);
    Metadata {
        schema_version: SCHEMA_VERSION,
        id,
        display_name,
        model_type,
        family,
        architecture: decision.architecture,
        format: facts.format.to_owned(),
        precision: decision.precision,
        quantization: decision.quantization,
        parameter_count: decision.parameter_count,
        total_size: files.iter().map(|f| f.size).sum(),
        files,
        composite_digest: composite,
        source: Source::Local {
            path: unit.origin.display().to_string(),
        },
        tags,
        description: embedded.description.clone(),
        license: embedded.license.clone(),
        added_time: now.clone(),
        updated_time: now,
        state: "ready".to_owned(),
        state_reason: String::new(),
        detection: decision.detection,
        unsafe_format: inspect::is_unsafe(unit),
        dependency_bindings: Vec::new(),
        declares_no_dependencies: false,
        embedded,
        hub: None,
        side_files: unit
            .side_files
            .iter()
            .map(|s| crate::metadata::SideFile {
                role: s.role.to_owned(),
                path: s.file.relative.clone(),
                size: s.file.size,
            })
            .collect(),
        download: None,
    }
}

/// Hashes a file, using the cache when its identity is unchanged.
pub async fn hash_cached(
    library: &Library,
    path: &Path,
    handle: Option<&Handle>,
) -> Result<Digests, IndexError> {
    let meta =
        std::fs::metadata(path).map_err(|e| IndexError::io(format!("reading {}", path.display()), e))?;
    let key = FileKey::of(&meta);
    if let Some((sha256, blake3)) = library.store().cached_hash(&key).await? {
        return Ok(Digests { sha256, blake3 });
    }
    let owned = path.to_owned();
    let cancel = handle.map(Handle::cancel_flag);
    let progress_handle = handle.cloned();
    let base = handle.map(current_bytes).unwrap_or(0);
    let digests = tokio::task::spawn_blocking(move || {
        let mut last = 0u64;
        hash::hash_file(&owned, |done| {
            if let Some(h) = &progress_handle
                && done - last >= (8 << 20)
            {
                h.update(|s| s.bytes_done = base + done);
                last = done;
            }
            !cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
        })
    })
    .await
    .map_err(|e| IndexError::Internal(e.to_string()))?
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            IndexError::Precondition {
                kind: "CANCELLED".to_owned(),
                subject: path.display().to_string(),
                message: "the job was cancelled".to_owned(),
            }
        } else {
            IndexError::io(format!("hashing {}", path.display()), e)
        }
    })?;
    library
        .store()
        .put_hash(&key, &digests.sha256, &digests.blake3)
        .await?;
    Ok(digests)
}

async fn import_unit(
    library: &Arc<Library>,
    handle: &Handle,
    request: &Request,
    unit: Unit,
    staging_name: &str,
) -> Result<(Outcome, String), IndexError> {
    // Inspect and detect (blocking reads of headers).
    let unit_for_facts = unit.clone();
    let facts = tokio::task::spawn_blocking(move || inspect::facts_for(&unit_for_facts))
        .await
        .map_err(|e| IndexError::Internal(e.to_string()))?
        .map_err(|e| IndexError::invalid("paths", e.to_string()))?;
    let decision = detect::detect(&facts);

    // Hash every file.
    let files = hash_unit(library, &unit, Some(handle)).await?;
    let composite = hash::composite(
        &files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect::<Vec<_>>(),
    );

    // Same content already in the library: report it, store nothing.
    if let Some(existing) = duplicate_of(library, &files, &composite).await? {
        return Ok((Outcome::Duplicate, existing));
    }

    let model_type = request
        .model_type
        .clone()
        .unwrap_or_else(|| decision.model_type.clone());
    let family = request.family.clone().unwrap_or_else(|| decision.family.clone());
    let display_name = request.display_name.clone().unwrap_or_else(|| unit.name.clone());
    let mut detection = decision.detection.clone();
    if request.model_type.is_some() || request.family.is_some() {
        detection.evidence.insert(
            0,
            crate::metadata::Evidence {
                kind: "user_override".to_owned(),
                key: "import request".to_owned(),
                value: format!("{model_type}/{family}"),
                supports: format!("type={model_type} family={family}"),
            },
        );
    }
    let mut tags: Vec<String> = request.tags.clone();
    tags.sort();
    tags.dedup();
    let mut decision = decision;
    decision.detection = detection;
    let mut metadata = local_metadata(
        String::new(),
        &unit,
        &facts,
        decision,
        files.clone(),
        display_name.clone(),
        model_type.clone(),
        family.clone(),
        tags,
    );

    // The slow part (copying or moving the bytes) goes into a staging folder first, with a
    // journal that lets a crash be rolled back; nothing is visible in the library yet.
    let staging = library.root().join(STAGING_DIR).join(staging_name);
    let mode = request.mode;
    {
        let (unit, staging) = (unit.clone(), staging.clone());
        tokio::task::spawn_blocking(move || stage(&unit, mode, &staging))
            .await
            .map_err(|e| IndexError::Internal(e.to_string()))??;
    }

    // The short part under the commit: check again for a twin (another import may have added
    // the same content meanwhile), choose a free id, put the folder in place and index it. If
    // any step fails, the folder leaves the library again, so a FAILED item leaves nothing.
    let mut commit = library.commit().await;
    let committed = async {
        if let Some(existing) = duplicate_of(library, &files, &composite).await? {
            return Ok(Err(existing));
        }
        let id = library.unique_id(&model_type, &family, &display_name).await?;
        metadata.id.clone_from(&id);
        let final_dir = library.model_dir(&id)?;
        {
            let (staging, final_dir, metadata) = (staging.clone(), final_dir.clone(), metadata.clone());
            tokio::task::spawn_blocking(move || publish_staged(&staging, &final_dir, &metadata))
                .await
                .map_err(|e| IndexError::Internal(e.to_string()))??;
        }
        match library.write_and_index(&mut commit, &metadata).await {
            Ok(_) => {
                let _ = std::fs::remove_file(final_dir.join(JOURNAL_FILE));
                Ok(Ok(id))
            }
            Err(err) => {
                // Take the folder out again; the staging roll-back below puts sources back.
                if std::fs::rename(&final_dir, &staging).is_ok() {
                    let _ = library.remove_record(&mut commit, &id).await;
                }
                Err(err)
            }
        }
    }
    .await;
    let id = match committed {
        Ok(Ok(id)) => id,
        Ok(Err(existing)) => {
            drop(commit);
            unstage(&staging).await;
            return Ok((Outcome::Duplicate, existing));
        }
        Err(err) => {
            drop(commit);
            unstage(&staging).await;
            return Err(err);
        }
    };
    if let Err(err) = library.publish("added", &id, "").await {
        // The model is in the library and the index; only its event is lost (a reindex or
        // the mapper's next full apply catches up).
        tracing::warn!(error = %err, model_id = %id, "recording the change event of an import failed");
    }
    Ok((Outcome::Added, id))
}

/// The id of a model with the same content, if the library has one.
async fn duplicate_of(
    library: &Library,
    files: &[FileEntry],
    composite: &str,
) -> Result<Option<String>, IndexError> {
    let probe = if files.len() == 1 {
        files[0].sha256.as_str()
    } else {
        composite
    };
    let Some(existing) = library.store().find_by_digest(probe).await?.into_iter().next() else {
        return Ok(None);
    };
    let same = files.len() > 1 || existing.metadata.files.len() == 1;
    Ok(same.then_some(existing.metadata.id))
}

/// Rolls a staging folder back (moved sources go home), off the async threads.
async fn unstage(staging: &Path) {
    let staging = staging.to_owned();
    let done = tokio::task::spawn_blocking(move || {
        if staging.exists() {
            roll_back(&staging)
        } else {
            Ok(())
        }
    })
    .await;
    if let Ok(Err(err)) = done {
        tracing::warn!(error = %err, "rolling back an import's staging folder failed; the next start retries");
    }
}

/// Every file an import places: the weights and the side files kept with them.
fn staged_files(unit: &Unit) -> impl Iterator<Item = &crate::inspect::UnitFile> {
    unit.files.iter().chain(unit.side_files.iter().map(|s| &s.file))
}

/// Places a unit's files into `staging` (created fresh), journal first.
fn stage(unit: &Unit, mode: Mode, staging: &Path) -> Result<(), IndexError> {
    let io =
        |what: &str, path: &Path, e: std::io::Error| IndexError::io(format!("{what} {}", path.display()), e);
    std::fs::create_dir_all(staging).map_err(|e| io("creating", staging, e))?;
    let journal = Journal {
        mode,
        files: staged_files(unit)
            .map(|f| JournalFile {
                source: f.source.clone(),
                relative: f.relative.clone(),
            })
            .collect(),
    };
    write_json_atomic(&staging.join(JOURNAL_FILE), &journal).map_err(|e| io("writing", staging, e))?;
    let result = staged_files(unit).try_for_each(|f| {
        let dest = staging.join(&f.relative);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        still_as_checked(&f.source, f.size)?;
        place_file(&f.source, &dest, mode, &f.relative)
    });
    if result.is_err() && staging.exists() {
        // Put moved files back and drop the staging directory.
        let _ = roll_back(staging);
    }
    result
}

/// Writes metadata.json into a staged folder and renames it into its canonical place.
fn publish_staged(staging: &Path, final_dir: &Path, metadata: &Metadata) -> Result<(), IndexError> {
    let io =
        |what: &str, path: &Path, e: std::io::Error| IndexError::io(format!("{what} {}", path.display()), e);
    write_json_atomic(&staging.join(METADATA_FILE), metadata)
        .map_err(|e| io("writing metadata in", staging, e))?;
    let parent = final_dir
        .parent()
        .ok_or_else(|| IndexError::Internal("model dir has no parent".to_owned()))?;
    std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
    if final_dir.exists() {
        return Err(IndexError::Conflict {
            what: "model directory".to_owned(),
            name: final_dir.display().to_string(),
            help: String::new(),
        });
    }
    std::fs::rename(staging, final_dir).map_err(|e| io("moving into place", final_dir, e))?;
    sync_dir(parent).map_err(|e| io("syncing", parent, e))
}

/// The check of [`plan`] again, at the moment a source file is used: its path is still the
/// real one (no folder on the way swapped for a symlink since, so it is still inside the
/// directories that were allowed and outside the library), and it is still a plain file of the
/// size that was planned.
fn still_as_checked(source: &Path, size: u64) -> Result<(), IndexError> {
    let changed = |why: String| IndexError::Precondition {
        kind: "SOURCE_CHANGED".to_owned(),
        subject: source.display().to_string(),
        message: format!(
            "{} changed after the import was checked ({why}); nothing was taken from it, import it again",
            source.display()
        ),
    };
    match std::fs::canonicalize(source) {
        Ok(real) if real == source => {}
        Ok(real) => return Err(changed(format!("it now leads to {}", real.display()))),
        Err(e) => return Err(changed(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(source).map_err(|e| changed(e.to_string()))?;
    if !meta.is_file() {
        return Err(changed("it is no longer a plain file".to_owned()));
    }
    if meta.len() != size {
        return Err(changed(format!(
            "its size went from {size} to {} bytes",
            meta.len()
        )));
    }
    Ok(())
}

fn place_file(source: &Path, dest: &Path, mode: Mode, relative: &str) -> Result<(), IndexError> {
    let io = |what: &str, e: std::io::Error| IndexError::io(format!("{what} {}", source.display()), e);
    match mode {
        Mode::Copy | Mode::Reflink => {
            // std::fs::copy uses copy_file_range, which shares extents on btrfs/XFS (a reflink)
            // and copies in the kernel elsewhere.
            pumas_runtime::fsio::copy_durable(source, dest).map_err(|e| io("copying", e))?;
        }
        Mode::Hardlink => std::fs::hard_link(source, dest).map_err(|e| {
            if e.raw_os_error() == Some(18) {
                IndexError::Precondition {
                    kind: "CROSS_DEVICE".to_owned(),
                    subject: source.display().to_string(),
                    message: format!(
                        "{} is on another filesystem than the library, so it cannot be hard-linked; import with mode copy or move",
                        source.display()
                    ),
                }
            } else {
                io("hard-linking", e)
            }
        })?,
        Mode::Move => match std::fs::rename(source, dest) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(18) => {
                // Across filesystems: copy (durably), verify the copy, then remove the original.
                pumas_runtime::fsio::copy_durable(source, dest).map_err(|e| io("copying", e))?;
                let a = hash::hash_file(source, |_| true).map_err(|e| io("verifying", e))?;
                let b = hash::hash_file(dest, |_| true).map_err(|e| io("verifying copy of", e))?;
                if a != b {
                    return Err(IndexError::Internal(format!("copy of {relative} does not match its source")));
                }
                std::fs::remove_file(source).map_err(|e| io("removing moved", e))?;
            }
            Err(e) => return Err(io("moving", e)),
        },
    }
    Ok(())
}

fn roll_back(staging: &Path) -> std::io::Result<()> {
    if let Ok(bytes) = std::fs::read(staging.join(JOURNAL_FILE))
        && let Ok(journal) = serde_json::from_slice::<Journal>(&bytes)
        && journal.mode == Mode::Move
    {
        for f in &journal.files {
            let staged = staging.join(&f.relative);
            if staged.exists() && !f.source.exists() && std::fs::rename(&staged, &f.source).is_err() {
                pumas_runtime::fsio::copy_durable(&staged, &f.source)?;
            }
        }
    }
    std::fs::remove_dir_all(staging)
}

/// Rolls back every staging directory a crash left behind; returns how many there were.
pub fn recover(models_root: &Path) -> Result<usize, IndexError> {
    let staging = models_root.join(STAGING_DIR);
    let Ok(entries) = std::fs::read_dir(&staging) else {
        return Ok(0);
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(err) = roll_back(&path) {
            // The index still starts: the folder keeps the files (nothing is deleted that was
            // not put back), and the next start tries again.
            tracing::error!(error = %err, path = %path.display(), "an interrupted import could not be rolled back; its files stay in this folder");
            continue;
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_folder_swapped_for_a_symlink_after_the_check_is_refused_and_nothing_moves() {
        let disk = tempfile::tempdir().expect("tmp");
        let real = std::fs::canonicalize(disk.path()).expect("real");
        let models = real.join("models");
        std::fs::create_dir_all(&models).expect("mkdir");
        std::fs::write(models.join("a.safetensors"), b"0123456789").expect("write");
        let units = inspect::units_for(&models.join("a.safetensors")).expect("units");
        // Swapped after the check: the same path now leads to a secret elsewhere.
        let secrets = real.join("secrets");
        std::fs::create_dir_all(&secrets).expect("mkdir");
        std::fs::write(secrets.join("a.safetensors"), b"private!!!").expect("write");
        std::fs::rename(&models, real.join("moved")).expect("rename");
        std::os::unix::fs::symlink(&secrets, &models).expect("plant");
        let staging = real.join("staging");
        let err = stage(&units[0], Mode::Move, &staging).expect_err("refused");
        assert!(
            matches!(&err, IndexError::Precondition { kind, .. } if kind == "SOURCE_CHANGED"),
            "{err:?}"
        );
        assert_eq!(
            std::fs::read(secrets.join("a.safetensors")).expect("kept"),
            b"private!!!"
        );
        assert!(!staging.exists(), "the staging folder was rolled back");

        // A file whose size changed since the check is refused the same way.
        std::fs::remove_file(&models).expect("unplant");
        std::fs::rename(real.join("moved"), &models).expect("back");
        std::fs::write(models.join("a.safetensors"), b"0123456789abc").expect("grow");
        let err = stage(&units[0], Mode::Copy, &staging).expect_err("refused");
        assert!(err.to_string().contains("size"), "{err}");
    }
}
