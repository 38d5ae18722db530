//! Models the fetch service downloads. The model appears (state `downloading`) as soon as its
//! small files are in, inferred from them; at the end its verified files move from the fetch
//! service's staging directory into the canonical layout (a rename: no second copy) and it
//! becomes `ready`. A cancelled download's record goes away; a failed one shows `error`.

use std::path::{Path, PathBuf};

use crate::detect;
use crate::error::IndexError;
use crate::hash;
use crate::inspect::{self, Unit, UnitFile};
use crate::library::Library;
use crate::metadata::now_rfc3339;
use crate::metadata::{Evidence, FileEntry, Metadata, PendingDownload, SCHEMA_VERSION, Source};
use crate::slug::parse_model_id;
use crate::store::Record;
use pumas_runtime::fsio::sync_dir;

/// What BeginModelDownload carries.
pub struct Begin {
    pub download_id: String,
    pub endpoint: String,
    pub repo_id: String,
    pub revision: String,
    pub commit_sha: String,
    pub staging: PathBuf,
    pub expected: Vec<FileEntry>,
    pub model_type: Option<String>,
    pub family: Option<String>,
    pub tags: Vec<String>,
    pub license: String,
    /// The variant the selection picked (a GGUF quant), for the model's name.
    pub selection_label: String,
    /// The download takes every file of the repository.
    pub whole_repository: bool,
    /// What the hub says about the repository.
    pub hub: Option<crate::hub_card::HubCard>,
}

/// A repository file path that is safe to join under a directory.
fn check_relative(path: &str) -> Result<(), IndexError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(IndexError::invalid(
            "files.path",
            format!("`{}` is not a safe relative path", path.escape_debug()),
        ));
    }
    Ok(())
}

/// The unit made of the files of `expected` that are complete under `dir`.
fn present_unit(name: &str, dir: &Path, expected: &[FileEntry]) -> Unit {
    let mut files: Vec<UnitFile> = expected
        .iter()
        .filter_map(|f| {
            let source = dir.join(&f.path);
            let meta = std::fs::metadata(&source).ok()?;
            (meta.is_file() && meta.len() == f.size).then_some(UnitFile {
                source,
                relative: f.path.clone(),
                size: f.size,
            })
        })
        .collect();
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Unit {
        name: name.to_owned(),
        origin: dir.to_owned(),
        files,
        side_files: Vec::new(),
    }
}

async fn inspect_unit(unit: Unit) -> Result<(detect::Facts, detect::Decision, bool), IndexError> {
    tokio::task::spawn_blocking(move || {
        let facts = inspect::facts_for(&unit).unwrap_or_else(|err| {
            // Early files can be a partial picture; a malformed one fails the commit below.
            tracing::debug!(error = %err, "inspecting a download's files");
            detect::Facts {
                name: unit.name.clone(),
                file_names: unit.files.iter().map(|f| f.relative.clone()).collect(),
                ..Default::default()
            }
        });
        let decision = detect::detect(&facts);
        let unsafe_format = inspect::is_unsafe(&unit);
        (facts, decision, unsafe_format)
    })
    .await
    .map_err(|e| IndexError::Internal(e.to_string()))
}

fn user_override(model_type: &str, family: &str) -> Evidence {
    Evidence {
        kind: "user_override".to_owned(),
        key: "download request".to_owned(),
        value: format!("{model_type}/{family}"),
        supports: format!("type={model_type} family={family}"),
    }
}

impl Library {
    /// A staging folder fetch may name: an existing absolute directory inside fetch's own
    /// staging area (anything else would let a caller rename any folder into the library).
    fn check_staging(&self, staging: &Path) -> Result<(), IndexError> {
        if !staging.is_absolute() || !staging.is_dir() {
            return Err(IndexError::invalid(
                "staging_path",
                format!("`{}` is not an existing absolute directory", staging.display()),
            ));
        }
        if let Some(area) = &self.policy.download_staging {
            let real = std::fs::canonicalize(staging).unwrap_or_else(|_| staging.to_owned());
            let area = std::fs::canonicalize(area).unwrap_or_else(|_| area.clone());
            if !real.starts_with(&area) || real == area {
                return Err(IndexError::invalid(
                    "staging_path",
                    format!(
                        "`{}` is not a download folder inside fetch's staging area {}",
                        staging.display(),
                        area.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Registers a model being downloaded. Idempotent per download id.
    pub async fn begin_download(&self, begin: Begin) -> Result<Record, IndexError> {
        let mut commit = self.commit().await;
        if let Some(existing) = self.store().find_by_download_id(&begin.download_id).await? {
            return Ok(existing);
        }
        if begin.download_id.is_empty() {
            return Err(IndexError::invalid("download_id", "is empty"));
        }
        self.check_staging(&begin.staging)?;
        for f in &begin.expected {
            check_relative(&f.path)?;
        }
        crate::vocabulary::check_type_and_family("", begin.model_type.as_deref(), begin.family.as_deref())?;
        let repo_name = begin.repo_id.rsplit('/').next().unwrap_or(&begin.repo_id);
        // One quant of a repo is named for it: `tiny-gguf-Q4_K_M`, slug `tiny-gguf-q4-k-m`.
        let label = begin.selection_label.trim();
        let name = if label.is_empty() || repo_name.to_lowercase().ends_with(&label.to_lowercase()) {
            repo_name.to_owned()
        } else {
            format!("{repo_name}-{label}")
        };
        let unit = present_unit(&name, &begin.staging, &begin.expected);
        let (facts, mut decision, unsafe_format) = inspect_unit(unit).await?;
        let model_type = begin
            .model_type
            .clone()
            .unwrap_or_else(|| decision.model_type.clone());
        let family = begin.family.clone().unwrap_or_else(|| decision.family.clone());
        if begin.model_type.is_some() || begin.family.is_some() {
            decision
                .detection
                .evidence
                .insert(0, user_override(&model_type, &family));
        }
        let id = self.unique_id(&model_type, &family, &name).await?;
        let now = now_rfc3339();
        let mut tags = begin.tags.clone();
        tags.sort();
        tags.dedup();
        // The repo's own files keep their names, except one named like a library file.
        let mut files: Vec<FileEntry> = begin
            .expected
            .iter()
            .map(|f| FileEntry {
                path: crate::metadata::stored_path(&f.path),
                ..f.clone()
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut metadata = Metadata {
            schema_version: SCHEMA_VERSION,
            id: id.clone(),
            display_name: name,
            model_type,
            family,
            architecture: decision.architecture,
            format: facts.format.to_owned(),
            precision: decision.precision,
            quantization: decision.quantization,
            parameter_count: decision.parameter_count,
            total_size: files.iter().map(|f| f.size).sum(),
            files,
            composite_digest: String::new(),
            source: Source::Hub {
                endpoint: begin.endpoint,
                repo_id: begin.repo_id,
                revision: begin.revision,
                commit_sha: begin.commit_sha,
                selection_label: begin.selection_label.trim().to_owned(),
                whole_repository: begin.whole_repository,
            },
            tags,
            description: String::new(),
            license: begin.license,
            added_time: now.clone(),
            updated_time: now,
            state: "downloading".to_owned(),
            state_reason: String::new(),
            detection: decision.detection,
            unsafe_format,
            dependency_bindings: Vec::new(),
            declares_no_dependencies: false,
            embedded: Default::default(),
            hub: None,
            side_files: Vec::new(),
            download: Some(PendingDownload {
                download_id: begin.download_id,
                staging_path: begin.staging.display().to_string(),
            }),
        };
        if let Some(card) = begin.hub {
            crate::library::apply_hub_card(&mut metadata, card);
        }
        let dir = self.model_dir(&id)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| IndexError::io(format!("creating {}", dir.display()), e))?;
        let record = self.write_and_index(&mut commit, &metadata).await?;
        self.publish("added", &id, "").await?;
        Ok(record)
    }

    async fn pending(&self, download_id: &str) -> Result<(Record, PendingDownload), IndexError> {
        let record = self
            .store()
            .find_by_download_id(download_id)
            .await?
            .ok_or_else(|| IndexError::ModelNotFound(format!("(download {download_id})")))?;
        let pending = record
            .metadata
            .download
            .clone()
            .ok_or_else(|| IndexError::ModelNotFound(format!("(download {download_id})")))?;
        Ok((record, pending))
    }

    /// Moves a download's verified files into the library and marks the model ready.
    pub async fn commit_download(
        &self,
        download_id: &str,
        files: Vec<FileEntry>,
    ) -> Result<Record, IndexError> {
        let mut commit = self.commit().await;
        let (record, pending) = self.pending(download_id).await?;
        let mut files = files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        check_verified(&files)?;
        let staging = PathBuf::from(&pending.staging_path);
        let id = record.metadata.id.clone();
        let dir = self.model_dir(&id)?;
        let moves = files.clone();
        // From where fetch put each file (its repo path) to where the library keeps it.
        let files: Vec<FileEntry> = files
            .into_iter()
            .map(|f| FileEntry {
                path: crate::metadata::stored_path(&f.path),
                ..f
            })
            .collect();
        let (from, to) = (staging.clone(), dir.clone());
        tokio::task::spawn_blocking(move || move_files(&from, &to, &moves))
            .await
            .map_err(|e| IndexError::Internal(e.to_string()))??;

        // Inspect the whole model now that every file is here.
        let unit = present_unit(&record.metadata.display_name, &dir, &files);
        let (facts, mut decision, unsafe_format) = tokio::task::spawn_blocking(move || {
            let facts = inspect::facts_for(&unit).map_err(|e| IndexError::DataLoss(e.to_string()))?;
            let decision = detect::detect(&facts);
            Ok::<_, IndexError>((facts, decision, inspect::is_unsafe(&unit)))
        })
        .await
        .map_err(|e| IndexError::Internal(e.to_string()))??;
        let dir_metadata = crate::library::read_metadata(&dir)?;
        let overridden_by_request = dir_metadata
            .detection
            .evidence
            .first()
            .is_some_and(|e| e.kind == "user_override");
        let mut metadata = dir_metadata;
        if overridden_by_request {
            decision
                .detection
                .evidence
                .insert(0, user_override(&metadata.model_type, &metadata.family));
        } else {
            metadata.model_type = decision.model_type.clone();
            metadata.family = decision.family.clone();
        }
        metadata.architecture = decision.architecture;
        metadata.format = facts.format.to_owned();
        metadata.precision = decision.precision;
        metadata.quantization = decision.quantization;
        metadata.parameter_count = decision.parameter_count;
        metadata.detection = decision.detection;
        metadata.unsafe_format = unsafe_format;
        metadata.embedded = crate::embedded::from_facts(&facts);
        // The hub's card comes first; what the files say fills what it left out.
        if metadata.license.is_empty() {
            metadata.license.clone_from(&metadata.embedded.license);
        }
        if metadata.description.is_empty() {
            metadata.description.clone_from(&metadata.embedded.description);
        }
        metadata.total_size = files.iter().map(|f| f.size).sum();
        metadata.composite_digest = hash::composite(
            &files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect::<Vec<_>>(),
        );
        metadata.files = files;
        metadata.state = "ready".to_owned();
        metadata.state_reason = String::new();
        metadata.download = None;
        metadata.updated_time = now_rfc3339();

        // The files can say more than the early guess: a model still downloading is linked
        // nowhere, so moving it to its right place costs nothing.
        let (old_type, old_family, slug) = parse_model_id(&id).unwrap_or_default();
        if metadata.model_type != old_type || metadata.family != old_family {
            let new_id = self
                .unique_id(&metadata.model_type, &metadata.family, slug)
                .await?;
            let new_dir = self.model_dir(&new_id)?;
            let parent = new_dir.parent().unwrap_or(self.root()).to_owned();
            std::fs::create_dir_all(&parent).map_err(|e| IndexError::io("creating dir", e))?;
            std::fs::rename(&dir, &new_dir).map_err(|e| IndexError::io("moving the model", e))?;
            let _ = sync_dir(&parent);
            metadata.id = new_id.clone();
            let record = self.write_and_index(&mut commit, &metadata).await?;
            self.remove_record(&mut commit, &id).await?;
            self.publish("moved", &new_id, &id).await?;
            return Ok(record);
        }
        let record = self.write_and_index(&mut commit, &metadata).await?;
        self.publish("updated", &id, "").await?;
        Ok(record)
    }

    /// A download was cancelled (`remove`: the record goes) or failed (state `error`).
    pub async fn abort_download(
        &self,
        download_id: &str,
        remove: bool,
        reason: &str,
    ) -> Result<(), IndexError> {
        let (record, _) = self.pending(download_id).await?;
        let id = record.metadata.id.clone();
        if remove {
            self.delete(&id, true).await?;
            return Ok(());
        }
        let mut commit = self.commit().await;
        let dir = self.model_dir(&id)?;
        let mut metadata = crate::library::read_metadata(&dir)?;
        metadata.state = "error".to_owned();
        metadata.state_reason = if reason.is_empty() {
            "the download failed".to_owned()
        } else {
            reason.to_owned()
        };
        metadata.updated_time = now_rfc3339();
        self.write_and_index(&mut commit, &metadata).await?;
        self.publish("updated", &id, "").await?;
        Ok(())
    }
}

/// Every file safe to place and verified (fetch hashed it while downloading).
fn check_verified(files: &[FileEntry]) -> Result<(), IndexError> {
    for f in files {
        check_relative(&f.path)?;
        let verified = f.sha256.starts_with("sha256:")
            && hash::is_digest(&f.sha256)
            && f.blake3.starts_with("blake3:")
            && hash::is_digest(&f.blake3);
        if !verified {
            return Err(IndexError::invalid(
                "files",
                format!(
                    "`{}` has no sha256 and blake3 digests; only verified files are committed",
                    f.path
                ),
            ));
        }
    }
    Ok(())
}

/// What CommitModelDownload carries for an update of an existing model.
pub struct Update {
    pub download_id: String,
    pub model_id: String,
    pub staging: PathBuf,
    pub commit_sha: String,
    pub files: Vec<FileEntry>,
    pub removed: Vec<String>,
}

impl Library {
    /// Moves an update's verified files over the model's (each a rename, so the old file stays
    /// until its verified successor takes its place), drops the files the new commit removed,
    /// and pins the model to the new commit. The model keeps its id, type and links.
    /// Idempotent: a model already at that commit with those files answers as it is.
    pub async fn commit_update(&self, update: Update) -> Result<Record, IndexError> {
        let mut commit = self.commit().await;
        let record = self.get(&update.model_id).await?;
        let crate::metadata::Source::Hub {
            commit_sha: pinned, ..
        } = &record.metadata.source
        else {
            return Err(IndexError::Precondition {
                kind: "NOT_FROM_HUB".to_owned(),
                subject: update.model_id.clone(),
                message: format!(
                    "{} was imported from local files; only hub downloads are updated",
                    update.model_id
                ),
            });
        };
        let mut files = update.files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        check_verified(&files)?;
        for path in &update.removed {
            check_relative(path)?;
        }
        let stored = |p: &str| crate::metadata::stored_path(p);
        let has_all = files.iter().all(|f| {
            record
                .metadata
                .files
                .iter()
                .any(|m| m.path == stored(&f.path) && m.sha256 == f.sha256)
        });
        if *pinned == update.commit_sha && has_all {
            return Ok(record);
        }
        self.check_staging(&update.staging)?;
        let id = record.metadata.id.clone();
        let dir = self.model_dir(&id)?;
        let (from, to, moves) = (update.staging.clone(), dir.clone(), files.clone());
        let removed: Vec<String> = update.removed.iter().map(|p| stored(p)).collect();
        let gone = removed.clone();
        tokio::task::spawn_blocking(move || {
            move_files(&from, &to, &moves)?;
            for path in &gone {
                match std::fs::remove_file(to.join(path)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(IndexError::io(format!("removing {path}"), e)),
                }
            }
            sync_dir(&to).map_err(|e| IndexError::io("syncing the model dir", e))
        })
        .await
        .map_err(|e| IndexError::Internal(e.to_string()))??;

        let mut metadata = crate::library::read_metadata(&dir)?;
        metadata.files.retain(|m| !removed.contains(&m.path));
        for f in files {
            let entry = FileEntry {
                path: stored(&f.path),
                ..f
            };
            match metadata.files.iter_mut().find(|m| m.path == entry.path) {
                Some(old) => *old = entry,
                None => metadata.files.push(entry),
            }
        }
        metadata.files.sort_by(|a, b| a.path.cmp(&b.path));
        let unit = present_unit(&metadata.display_name, &dir, &metadata.files);
        let facts = tokio::task::spawn_blocking(move || inspect::facts_for(&unit).ok())
            .await
            .map_err(|e| IndexError::Internal(e.to_string()))?;
        if let Some(facts) = facts {
            metadata.embedded = crate::embedded::from_facts(&facts);
        }
        metadata.total_size = metadata.files.iter().map(|f| f.size).sum();
        metadata.composite_digest = hash::composite(
            &metadata
                .files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect::<Vec<_>>(),
        );
        if let crate::metadata::Source::Hub { commit_sha, .. } = &mut metadata.source {
            commit_sha.clone_from(&update.commit_sha);
        }
        metadata.state = "ready".to_owned();
        metadata.state_reason = String::new();
        metadata.updated_time = now_rfc3339();
        tracing::info!(model = %id, download = %update.download_id, commit = %update.commit_sha, "updated a model to a new commit");
        let record = self.write_and_index(&mut commit, &metadata).await?;
        self.publish("updated", &id, "").await?;
        Ok(record)
    }
}

/// Renames each file from staging into the model directory (copying only across filesystems).
fn move_files(staging: &Path, dir: &Path, files: &[FileEntry]) -> Result<(), IndexError> {
    for f in files {
        let from = staging.join(&f.path);
        let to = dir.join(crate::metadata::stored_path(&f.path));
        let have = std::fs::metadata(&to).ok().filter(|m| m.len() == f.size);
        if have.is_some() && !from.exists() {
            // Moved by an earlier attempt that did not finish.
            continue;
        }
        let meta = std::fs::metadata(&from)
            .map_err(|e| IndexError::io(format!("reading downloaded {}", from.display()), e))?;
        if meta.len() != f.size {
            return Err(IndexError::DataLoss(format!(
                "downloaded {} has {} bytes, {} expected",
                f.path,
                meta.len(),
                f.size
            )));
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| IndexError::io("creating dir", e))?;
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(18) => {
                std::fs::copy(&from, &to).map_err(|e| IndexError::io(format!("copying {}", f.path), e))?;
                std::fs::File::open(&to)
                    .and_then(|file| file.sync_all())
                    .map_err(|e| IndexError::io(format!("syncing {}", f.path), e))?;
                let _ = std::fs::remove_file(&from);
            }
            Err(e) => return Err(IndexError::io(format!("moving {} into the library", f.path), e)),
        }
    }
    sync_dir(dir).map_err(|e| IndexError::io("syncing the model dir", e))
}
