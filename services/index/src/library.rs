//! The library: canonical directories under `shared-resources/models`, their metadata files, and
//! the derived index kept in step with them. The only writer of both.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard, broadcast};

use crate::error::IndexError;
use crate::jobs::Jobs;
use crate::metadata::{METADATA_FILE, Metadata, OVERRIDES_FILE, Overrides, now_rfc3339};
use crate::slug::{parse_model_id, slugify};
use crate::store::{Change, Record, Store};
use pumas_runtime::fsio::{sync_dir, write_json_atomic};

/// Directory (under the models root) where imports assemble a model before it appears.
pub const STAGING_DIR: &str = ".staging";
/// The journal an import writes into its staging directory before it touches any file.
pub const JOURNAL_FILE: &str = ".pumas-import.json";

/// Library policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Refuse pickle-based formats instead of flagging them.
    pub refuse_pickle: bool,
    /// When not empty, imports may only read below these directories.
    pub import_roots: Vec<PathBuf>,
    /// Imports need `import_roots`: with none, every import is refused. Set for an index that
    /// listens beyond loopback, whose callers are not the user whose files these are.
    pub import_roots_required: bool,
    /// Where downloads are staged (fetch's folder): `BeginModelDownload` takes a staging path only
    /// below it. `None` (the library used directly, in tests) takes any.
    pub download_staging: Option<PathBuf>,
    /// How many jobs work at once and how many may wait.
    pub job_limits: crate::jobs::JobLimits,
    /// How long the change feed and the hash cache are kept.
    pub retention: crate::retention::Retention,
    /// The user's dependency catalog folder (`<data root>/catalog`), read at start over the
    /// built-in one. `None`: the built-in catalog only.
    pub catalog_dir: Option<PathBuf>,
}

/// The library.
pub struct Library {
    root: PathBuf,
    store: Store,
    changes: broadcast::Sender<Change>,
    /// Jobs of this process.
    pub jobs: Jobs,
    /// Policy.
    pub policy: Policy,
    /// Held by every change to a model's files and record (see [`Commit`]).
    commits: Mutex<Touched>,
    /// Held by a reindex from start to end: one at a time.
    reindexing: Mutex<()>,
}

/// What writers changed while a reindex runs, so the reindex does not put back an older copy.
#[derive(Debug, Default)]
struct Touched {
    active: bool,
    ids: HashSet<String>,
}

/// The right to change the library: every write to a model's files, metadata, record or change
/// event happens while one is held, so writes to one model never interleave (no lost update,
/// no ghost record), slugs are chosen without a race, and a reindex knows what changed under
/// it. Hold it only for the short part of a write (renames, metadata, the index row), never
/// while copying or hashing large files.
pub struct Commit<'a>(MutexGuard<'a, Touched>);

impl Commit<'_> {
    /// Notes that `id` changed now (a running reindex keeps this newer state).
    pub fn touch(&mut self, id: &str) {
        if self.0.active {
            self.0.ids.insert(id.to_owned());
        }
    }

    /// Whether `id` changed since the running reindex started.
    pub fn touched(&self, id: &str) -> bool {
        self.0.ids.contains(id)
    }
}

impl Library {
    /// The library at `models_dir` with its models.db opened (created, or set aside and made
    /// anew when unusable), and whether models.db is new. `open::open` is what starts
    /// a library: it also recovers interrupted imports, rebuilds or reconciles, and prunes.
    pub async fn open_store(models_dir: &Path, policy: Policy) -> Result<(Arc<Self>, bool), IndexError> {
        std::fs::create_dir_all(models_dir)
            .map_err(|e| IndexError::io(format!("creating {}", models_dir.display()), e))?;
        let db_path = models_dir.join("models.db");
        let mut fresh = !db_path.exists();
        let (catalog, problems) = crate::catalog::Catalog::load(policy.catalog_dir.as_deref());
        for problem in &problems {
            tracing::warn!(file = %problem.file, problem = %problem.message, "a dependency catalog file is not used");
        }
        let catalog = Arc::new(catalog);
        let store = match Store::open_with_catalog(&db_path, Arc::clone(&catalog)).await {
            Ok(store) => store,
            // models.db is derived: when it is unreadable (corrupt, or written by an incompatible
            // build), set it aside and rebuild it from the metadata files. A locked database
            // means another index owns it: that is an error, not a repair.
            Err(err) if !err.to_string().contains("locked") && !err.to_string().contains("busy") => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                tracing::warn!(error = %err, "models.db is unusable; setting it aside and rebuilding it from the metadata files");
                for suffix in ["", "-wal", "-shm"] {
                    let from = models_dir.join(format!("models.db{suffix}"));
                    if from.exists() {
                        let to = models_dir.join(format!("models.db.unusable-{stamp}{suffix}"));
                        std::fs::rename(&from, &to)
                            .map_err(|e| IndexError::io("setting models.db aside", e))?;
                    }
                }
                fresh = true;
                Store::open_with_catalog(&db_path, Arc::clone(&catalog)).await?
            }
            Err(err) => return Err(err),
        };
        // A rebuild that never ended (killed, or failed) left models without their digests:
        // models.db is derived, so it is made anew rather than patched.
        let store = if store.load_interrupted().await? {
            tracing::warn!(
                "the last rebuild of models.db did not finish; rebuilding it from the metadata files"
            );
            store.close().await;
            for suffix in ["", "-wal", "-shm"] {
                let path = models_dir.join(format!("models.db{suffix}"));
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(IndexError::io(format!("removing {}", path.display()), e));
                    }
                    _ => {}
                }
            }
            fresh = true;
            Store::open_with_catalog(&db_path, catalog).await?
        } else {
            store
        };
        let (changes, _) = broadcast::channel(1024);
        let library = Arc::new(Self {
            root: models_dir.to_owned(),
            store,
            changes,
            jobs: Jobs::new(policy.job_limits),
            policy,
            commits: Mutex::default(),
            reindexing: Mutex::default(),
        });
        Ok((library, fresh))
    }

    /// The models root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for the right to change the library (see [`Commit`]).
    pub async fn commit(&self) -> Commit<'_> {
        Commit(self.commits.lock().await)
    }

    /// Marks the start (or end) of a reindex for writers: from then on they note what they touch.
    pub(crate) async fn set_reindexing(&self, active: bool) {
        let mut touched = self.commits.lock().await;
        touched.active = active;
        touched.ids.clear();
    }

    /// Removes a model's record (its files stay as they are).
    pub async fn remove_record(&self, commit: &mut Commit<'_>, id: &str) -> Result<bool, IndexError> {
        commit.touch(id);
        self.store.remove(id).await
    }

    /// Subscribes to live change events.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Records and broadcasts a change.
    pub async fn publish(&self, kind: &str, model_id: &str, previous_id: &str) -> Result<Change, IndexError> {
        let change = self.store.append_change(kind, model_id, previous_id).await?;
        let _ = self.changes.send(change.clone());
        Ok(change)
    }

    /// The directory of a model id (checked: three safe segments).
    pub fn model_dir(&self, id: &str) -> Result<PathBuf, IndexError> {
        let (t, f, s) = parse_model_id(id).ok_or_else(|| {
            IndexError::invalid(
                "model_id",
                format!("`{id}` is not a model id (<type>/<family>/<slug>)"),
            )
        })?;
        Ok(self.root.join(t).join(f).join(s))
    }

    /// One model or NOT_FOUND.
    pub async fn get(&self, id: &str) -> Result<Record, IndexError> {
        parse_model_id(id).ok_or_else(|| {
            IndexError::invalid(
                "model_id",
                format!("`{id}` is not a model id (<type>/<family>/<slug>)"),
            )
        })?;
        self.store
            .get(id)
            .await?
            .ok_or_else(|| IndexError::ModelNotFound(id.to_owned()))
    }

    /// A slug for `name` under `<type>/<family>` that no model uses yet.
    pub async fn unique_id(&self, model_type: &str, family: &str, name: &str) -> Result<String, IndexError> {
        let base = slugify(name);
        for n in 1u32.. {
            let slug = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let id = format!("{model_type}/{family}/{slug}");
            let taken = self.root.join(model_type).join(family).join(&slug).exists()
                || self.store.get(&id).await?.is_some();
            if !taken {
                return Ok(id);
            }
        }
        Err(IndexError::Internal("no free slug".to_owned()))
    }

    /// Writes a model's metadata.json (atomically) and indexes the merged record.
    pub async fn write_and_index(
        &self,
        commit: &mut Commit<'_>,
        metadata: &Metadata,
    ) -> Result<Record, IndexError> {
        commit.touch(&metadata.id);
        let dir = self.model_dir(&metadata.id)?;
        let path = dir.join(METADATA_FILE);
        // Catalog bindings are derived: metadata.json keeps only the user's own.
        let mut value = metadata.clone();
        value.dependency_bindings.retain(|b| b.catalog_rule.is_empty());
        let metadata = &value.clone();
        tokio::task::spawn_blocking(move || write_json_atomic(&path, &value))
            .await
            .map_err(|e| IndexError::Internal(e.to_string()))?
            .map_err(|e| IndexError::io(format!("writing metadata of {}", metadata.id), e))?;
        let overrides = read_overrides(&dir)?;
        let record = self.store.with_effective_bindings(Record {
            metadata: overrides.apply(metadata),
            overridden: overrides.overridden_fields(),
        });
        self.store.upsert(&record).await?;
        Ok(record)
    }

    /// Deletes a model's files and record. Refuses while mapper link holds exist, unless forced.
    pub async fn delete(&self, id: &str, force: bool) -> Result<u64, IndexError> {
        let mut commit = self.commit().await;
        let record = self.get(id).await?;
        let holders = self.store.link_holders(id).await?;
        if !holders.is_empty() && !force {
            return Err(IndexError::Precondition {
                kind: "MODEL_LINKED".to_owned(),
                subject: id.to_owned(),
                message: format!(
                    "model {id} is linked into {} (by {}); unmap it first or delete with force, which removes the links",
                    if holders.len() == 1 {
                        "1 app".to_owned()
                    } else {
                        format!("{} apps", holders.len())
                    },
                    holders.join(", ")
                ),
            });
        }
        let dir = self.model_dir(id)?;
        // The record goes first: a crash before the files are gone leaves a folder that the next
        // reconcile indexes again (nothing lost), never a record without its files.
        self.store.clear_link_holds(id).await?;
        self.remove_record(&mut commit, id).await?;
        self.publish("removed", id, "").await?;
        // Then the folder leaves the tree in one rename, and is deleted outside it.
        if dir.exists() {
            let trash = self
                .root
                .join(STAGING_DIR)
                .join(format!("delete-{}", id.replace('/', "__")));
            std::fs::create_dir_all(self.root.join(STAGING_DIR))
                .map_err(|e| IndexError::io("creating staging", e))?;
            std::fs::rename(&dir, &trash)
                .map_err(|e| IndexError::io(format!("removing {}", dir.display()), e))?;
            let _ = sync_dir(dir.parent().unwrap_or(&self.root));
            drop(commit);
            let trash_clone = trash.clone();
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(trash_clone))
                .await
                .map_err(|e| IndexError::Internal(e.to_string()))?
                .map_err(|e| IndexError::io(format!("deleting {}", trash.display()), e))?;
        }
        Ok(record.metadata.total_size)
    }

    /// Writes user overrides (only the named fields; a named field with no value clears it).
    pub async fn update_overrides(
        &self,
        id: &str,
        changes: &Overrides,
        fields: &[String],
    ) -> Result<Record, IndexError> {
        let mut commit = self.commit().await;
        self.get(id).await?;
        let dir = self.model_dir(id)?;
        let mut overrides = read_overrides(&dir)?;
        for field in fields {
            match field.as_str() {
                "display_name" => overrides.display_name.clone_from(&changes.display_name),
                "model_type" => overrides.model_type.clone_from(&changes.model_type),
                "family" => overrides.family.clone_from(&changes.family),
                "tags" => overrides.tags.clone_from(&changes.tags),
                "description" => overrides.description.clone_from(&changes.description),
                "license" => overrides.license.clone_from(&changes.license),
                "declares_no_dependencies" => {
                    overrides.declares_no_dependencies = changes.declares_no_dependencies
                }
                other => {
                    return Err(IndexError::invalid(
                        "update_mask",
                        format!(
                            "`{other}` cannot be updated (display_name, model_type, family, tags, description, license, declares_no_dependencies can)"
                        ),
                    ));
                }
            }
        }
        crate::vocabulary::check_type_and_family(
            "overrides.",
            overrides.model_type.as_deref(),
            overrides.family.as_deref(),
        )?;
        let path = dir.join(OVERRIDES_FILE);
        write_json_atomic(&path, &overrides).map_err(|e| IndexError::io("writing overrides.json", e))?;
        let metadata = read_metadata(&dir)?;
        let merged = Record {
            metadata: overrides.apply(&metadata),
            overridden: overrides.overridden_fields(),
        };
        // A new type or family moves the model to its canonical place (and changes its id).
        let new_type = merged.metadata.model_type.clone();
        let new_family = merged.metadata.family.clone();
        let (old_type, old_family, slug) = parse_model_id(id).unwrap_or_default();
        if new_type != old_type || new_family != old_family {
            let new_id = self.unique_id(&new_type, &new_family, slug).await?;
            let new_dir = self.model_dir(&new_id)?;
            std::fs::create_dir_all(new_dir.parent().unwrap_or(&self.root))
                .map_err(|e| IndexError::io("creating dir", e))?;
            std::fs::rename(&dir, &new_dir).map_err(|e| IndexError::io("moving the model", e))?;
            let mut moved = metadata.clone();
            moved.id = new_id.clone();
            moved.updated_time = now_rfc3339();
            let record = self.write_and_index(&mut commit, &moved).await?;
            self.remove_record(&mut commit, id).await?;
            self.publish("moved", &new_id, id).await?;
            return Ok(record);
        }
        let mut metadata = metadata;
        metadata.updated_time = now_rfc3339();
        let record = self.write_and_index(&mut commit, &metadata).await?;
        self.publish("updated", id, "").await?;
        Ok(record)
    }

    /// Held by a reindex from start to end, so reindexes run one at a time.
    pub(crate) async fn reindex_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reindexing.lock().await
    }
}

/// Report of a reindex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReindexReport {
    /// Model directories seen.
    pub seen: u64,
    /// Records added to the index.
    pub added: u64,
    /// Records updated.
    pub updated: u64,
    /// Records marked missing.
    pub missing: u64,
}

/// Reads `metadata.json` of a model directory.
/// Keeps `card` on the model, its description and license taking the card's where it has them.
pub fn apply_hub_card(metadata: &mut Metadata, card: crate::hub_card::HubCard) {
    if !card.description.is_empty() {
        metadata.description = card.description.clone();
    }
    if !card.license.is_empty() {
        metadata.license = card.license.clone();
    }
    // The card's image, when the model holds it, is its preview (unless one came with it).
    let image = crate::metadata::stored_path(&card.image_path);
    metadata
        .side_files
        .retain(|s| !(s.role == "preview" && metadata.files.iter().any(|f| f.path == s.path)));
    if !card.image_path.is_empty()
        && !metadata.side_files.iter().any(|s| s.role == "preview")
        && let Some(file) = metadata.files.iter().find(|f| f.path == image)
    {
        metadata.side_files.push(crate::metadata::SideFile {
            role: "preview".to_owned(),
            path: file.path.clone(),
            size: file.size,
        });
    }
    metadata.hub = Some(card);
}

pub fn read_metadata(dir: &Path) -> Result<Metadata, IndexError> {
    let path = dir.join(METADATA_FILE);
    let bytes = std::fs::read(&path).map_err(|e| IndexError::io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| IndexError::Internal(format!("{} is not valid metadata: {e}", path.display())))
}

/// Reads `overrides.json` of a model directory (empty when absent).
pub fn read_overrides(dir: &Path) -> Result<Overrides, IndexError> {
    let path = dir.join(OVERRIDES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| IndexError::Internal(format!("{} is not valid: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::default()),
        Err(e) => Err(IndexError::io(format!("reading {}", path.display()), e)),
    }
}

impl Library {
    /// Creates or replaces a model's dependency binding (an empty id gets a stable one).
    pub async fn put_binding(
        &self,
        model_id: &str,
        mut binding: crate::metadata::Binding,
    ) -> Result<(Record, crate::metadata::Binding), IndexError> {
        let mut commit = self.commit().await;
        let record = self.get(model_id).await?;
        for (field, value) in [
            ("binding.profile_id", &binding.profile_id),
            ("binding.profile_version", &binding.profile_version),
        ] {
            if !crate::slug::is_safe_segment(value) {
                return Err(IndexError::invalid(
                    field,
                    format!("`{value}` is not a valid profile id or version"),
                ));
            }
        }
        if binding.backend_key.trim().is_empty() {
            return Err(IndexError::invalid(
                "binding.backend_key",
                "name the backend, e.g. \"torch-cuda\"",
            ));
        }
        if binding.platform_selector.is_empty() {
            binding.platform_selector = "*".to_owned();
        }
        if !crate::vocabulary::valid_selector(&binding.platform_selector) {
            return Err(IndexError::invalid(
                "binding.platform_selector",
                format!(
                    "`{}` is not a platform selector (\"*\", \"linux-*\", \"linux-x86_64\")",
                    binding.platform_selector
                ),
            ));
        }
        let catalog = self.store.catalog();
        if crate::profiles::read(&self.root, catalog, &binding.profile_id, &binding.profile_version)?
            .is_none()
        {
            return Err(IndexError::ProfileNotFound(format!(
                "{}@{}",
                binding.profile_id, binding.profile_version
            )));
        }
        binding.catalog_rule.clear();
        if binding.binding_id.is_empty() {
            let key = format!(
                "{model_id}|{}|{}|{}|{}",
                binding.profile_id, binding.profile_version, binding.backend_key, binding.platform_selector
            );
            binding.binding_id = format!("bind-{}", &blake3::hash(key.as_bytes()).to_hex()[..16]);
        } else if binding.binding_id.starts_with(crate::catalog::BINDING_PREFIX) {
            return Err(IndexError::invalid(
                "binding.binding_id",
                format!(
                    "ids starting with `{}` are the catalog's; leave it empty for a stable id of your own",
                    crate::catalog::BINDING_PREFIX
                ),
            ));
        } else if !crate::slug::is_safe_segment(&binding.binding_id) {
            return Err(IndexError::invalid(
                "binding.binding_id",
                "must be letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(owner) = self.store.binding_owner(&binding.binding_id).await?
            && owner != model_id
        {
            return Err(IndexError::Conflict {
                what: "dependency binding".to_owned(),
                name: binding.binding_id.clone(),
                help: format!("it belongs to model `{owner}`; binding ids are unique across the library"),
            });
        }
        let dir = self.model_dir(&record.metadata.id)?;
        let mut metadata = read_metadata(&dir)?;
        metadata
            .dependency_bindings
            .retain(|b| b.binding_id != binding.binding_id);
        metadata.dependency_bindings.push(binding.clone());
        metadata
            .dependency_bindings
            .sort_by(|a, b| a.binding_id.cmp(&b.binding_id));
        metadata.updated_time = now_rfc3339();
        let record = self.write_and_index(&mut commit, &metadata).await?;
        self.publish("updated", model_id, "").await?;
        Ok((record, binding))
    }

    /// Replaces what the hub says about a hub-downloaded model. The card's first paragraph
    /// becomes the description and its license the license, unless the user overrode them
    /// (overrides.json still wins) or the hub has none.
    pub async fn set_hub_card(
        &self,
        model_id: &str,
        card: crate::hub_card::HubCard,
    ) -> Result<Record, IndexError> {
        let mut commit = self.commit().await;
        let record = self.get(model_id).await?;
        if !matches!(record.metadata.source, crate::metadata::Source::Hub { .. }) {
            return Err(IndexError::Precondition {
                kind: "NOT_FROM_HUB".to_owned(),
                subject: model_id.to_owned(),
                message: format!(
                    "{model_id} was imported from local files; only hub downloads have hub metadata"
                ),
            });
        }
        let dir = self.model_dir(&record.metadata.id)?;
        let mut metadata = read_metadata(&dir)?;
        apply_hub_card(&mut metadata, card);
        metadata.updated_time = now_rfc3339();
        let record = self.write_and_index(&mut commit, &metadata).await?;
        self.publish("updated", model_id, "").await?;
        Ok(record)
    }

    /// Deletes a dependency binding.
    pub async fn delete_binding(&self, binding_id: &str) -> Result<(), IndexError> {
        let mut commit = self.commit().await;
        if binding_id.starts_with(crate::catalog::BINDING_PREFIX) {
            return Err(IndexError::Precondition {
                kind: "catalog_binding".to_owned(),
                subject: binding_id.to_owned(),
                message: format!(
                    "binding `{binding_id}` was attached by the catalog and goes away by itself: bind \
                     the model yourself (that replaces the catalog's bindings), or declare that it needs \
                     no dependencies"
                ),
            });
        }
        let owner = self
            .store
            .binding_owner(binding_id)
            .await?
            .ok_or_else(|| IndexError::BindingNotFound(binding_id.to_owned()))?;
        let dir = self.model_dir(&owner)?;
        let mut metadata = read_metadata(&dir)?;
        metadata
            .dependency_bindings
            .retain(|b| b.binding_id != binding_id);
        metadata.updated_time = now_rfc3339();
        self.write_and_index(&mut commit, &metadata).await?;
        self.publish("updated", &owner, "").await?;
        Ok(())
    }

    /// Deletes a published profile version. Refused while models bind it, unless forced.
    pub async fn delete_profile(&self, id: &str, version: &str, force: bool) -> Result<(), IndexError> {
        let _commit = self.commit().await;
        if !force {
            let bound = self.store.models_binding(id, version, 11).await?;
            if !bound.is_empty() {
                let shown = bound.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
                return Err(IndexError::Precondition {
                    kind: "profile_in_use".to_owned(),
                    subject: format!("{id}@{version}"),
                    message: format!(
                        "dependency profile `{id}@{version}` is bound by {}{shown}{}; unbind them first, \
                         or delete with force (their bindings then resolve as unknown_profile)",
                        if bound.len() > 10 {
                            "more than 10 models, among them "
                        } else {
                            ""
                        },
                        if bound.len() > 10 { ", ..." } else { "" },
                    ),
                });
            }
        }
        let root = self.root.clone();
        let catalog = std::sync::Arc::clone(self.store.catalog());
        let (id, version) = (id.to_owned(), version.to_owned());
        tokio::task::spawn_blocking(move || crate::profiles::delete(&root, &catalog, &id, &version))
            .await
            .map_err(|e| IndexError::Internal(e.to_string()))?
    }
}
