//! The mapper's work: read configs, plan, apply (idempotently), unmap, repair, report link
//! states, tell the index which models each app holds, and follow the index's change feed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pumas_proto::common::v1 as common;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{
    BatchGetModelsRequest, GetServiceInfoRequest, ListModelsRequest, ReplaceLinkHoldsRequest,
    WatchChangesRequest,
};
use pumas_runtime::ApiError;
use pumas_runtime::client::TracedChannel;
use tokio::sync::watch;

use crate::links::{self, OnDisk};
use crate::mapping::{self, ConfigError, MappingConfig, Strategy};
use crate::plan::{self, Action, ActionKind, Model, Plan, Want};
use crate::registry::{LinkRow, Registry};

/// A configured app: its config, or why it cannot be used.
pub struct AppConfig {
    pub app: String,
    pub text: String,
    pub config: Result<MappingConfig, Vec<ConfigError>>,
}

/// What an apply did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub plan: Plan,
    /// Problems left as they are (conflicts not replaced, unsafe paths, failures).
    pub unresolved: Vec<plan::Warning>,
}

/// Link state of a model in one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Linked,
    Conflict,
    Broken,
    NotMapped,
}

/// The mapper.
pub struct Engine {
    configs_dir: PathBuf,
    mount: PathBuf,
    host: String,
    pub registry: Registry,
    index: IndexServiceClient<TracedChannel>,
    /// One apply at a time per app (the feed follower and RPCs share it).
    app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether the change feed is connected.
    pub following: watch::Sender<bool>,
}

fn model_from(record: &common::ModelRecord) -> Model {
    let name = |table: &[(&str, i32)], v: i32| {
        table
            .iter()
            .find(|(_, n)| *n == v)
            .map(|(s, _)| (*s).to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    use common::{ModelFormat as F, ModelState as S, ModelType as T};
    let types: Vec<(&str, i32)> = crate::presets::MODEL_TYPES
        .iter()
        .map(|t| {
            (
                *t,
                T::from_str_name(&format!("MODEL_TYPE_{}", t.to_ascii_uppercase()))
                    .map(|x| x as i32)
                    .unwrap_or(-1),
            )
        })
        .collect();
    let formats: Vec<(&str, i32)> = [
        "safetensors",
        "gguf",
        "diffusers",
        "transformers",
        "pickle",
        "onnx",
        "unknown",
    ]
    .iter()
    .map(|f| {
        (
            *f,
            F::from_str_name(&format!("MODEL_FORMAT_{}", f.to_ascii_uppercase()))
                .map(|x| x as i32)
                .unwrap_or(-1),
        )
    })
    .collect();
    let states: Vec<(&str, i32)> = ["ready", "missing", "downloading", "partial", "error"]
        .iter()
        .map(|s| {
            (
                *s,
                S::from_str_name(&format!("MODEL_STATE_{}", s.to_ascii_uppercase()))
                    .map(|x| x as i32)
                    .unwrap_or(-1),
            )
        })
        .collect();
    let (repo_id, commit) = match record.source.as_ref().and_then(|s| s.source.as_ref()) {
        Some(common::model_source::Source::Hub(h)) => (h.repo_id.clone(), h.commit_sha.clone()),
        _ => (String::new(), String::new()),
    };
    Model {
        id: record.model_id.clone(),
        display_name: record.display_name.clone(),
        model_type: name(&types, record.model_type),
        family: record.family.clone(),
        format: name(&formats, record.format),
        state: name(&states, record.state),
        tags: record.tags.clone(),
        files: record
            .files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect(),
        repo_id,
        commit,
    }
}

fn index_error(status: tonic::Status) -> ApiError {
    ApiError::FailedPrecondition {
        kind: "INDEX_UNREACHABLE".to_owned(),
        subject: "index".to_owned(),
        message: format!(
            "the mapper cannot read the library from the index: {}",
            status.message()
        ),
    }
}

impl Engine {
    pub fn new(
        configs_dir: PathBuf,
        mount: PathBuf,
        host: String,
        registry: Registry,
        index: IndexServiceClient<TracedChannel>,
    ) -> Arc<Self> {
        Arc::new(Self {
            configs_dir,
            mount,
            host,
            registry,
            index,
            app_locks: Mutex::new(HashMap::new()),
            following: watch::channel(false).0,
        })
    }

    /// Where this host sees the library.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Every config in the configs folder, sorted by app.
    pub fn configs(&self) -> Vec<AppConfig> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.configs_dir) else {
            return out;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let Some(app) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let config = mapping::parse(&app, &text);
            out.push(AppConfig { app, text, config });
        }
        out.sort_by(|a, b| a.app.cmp(&b.app));
        out
    }

    /// One app's config, or NOT_FOUND / FAILED_PRECONDITION (invalid config).
    pub fn config(&self, app: &str) -> Result<MappingConfig, ApiError> {
        if !mapping::valid_app_name(app) {
            return Err(ApiError::invalid(
                "app",
                format!("`{app}` is not an app name (letters, digits, `-`, `_`, `.`)"),
            ));
        }
        let path = mapping::path_of(&self.configs_dir, app);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            let known: Vec<String> = self.configs().into_iter().map(|c| c.app).collect();
            ApiError::NotFoundHelp {
                resource_type: "app".to_owned(),
                name: app.to_owned(),
                help: if known.is_empty() {
                    format!(
                        "no apps are configured; write a mapping config to {}",
                        path.display()
                    )
                } else {
                    format!("configured apps: {}", known.join(", "))
                },
            }
        })?;
        mapping::parse(app, &text).map_err(|errors| ApiError::FailedPrecondition {
            kind: "INVALID_MAPPING_CONFIG".to_owned(),
            subject: path.display().to_string(),
            message: format!(
                "the mapping config of {app} is invalid: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        })
    }

    /// Validates and writes a config atomically.
    pub fn put_config(
        &self,
        app: &str,
        text: &str,
    ) -> Result<MappingConfig, Result<Vec<ConfigError>, ApiError>> {
        if !mapping::valid_app_name(app) {
            return Err(Err(ApiError::invalid(
                "app",
                format!("`{app}` is not an app name"),
            )));
        }
        let config = mapping::parse(app, text).map_err(Ok)?;
        std::fs::create_dir_all(&self.configs_dir).map_err(|e| Err(ApiError::Internal(e.to_string())))?;
        let path = mapping::path_of(&self.configs_dir, app);
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Err(ApiError::Internal(format!("writing {}: {e}", path.display()))))?;
        Ok(config)
    }

    /// Every model of the library.
    pub async fn all_models(&self) -> Result<Vec<Model>, ApiError> {
        let mut index = self.index.clone();
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = index
                .list_models(ListModelsRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .map_err(index_error)?
                .into_inner();
            out.extend(page.models.iter().map(model_from));
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    async fn some_models(&self, ids: &HashSet<String>) -> Result<Vec<Model>, ApiError> {
        let mut index = self.index.clone();
        let mut out = Vec::new();
        let ids: Vec<String> = ids.iter().cloned().collect();
        for chunk in ids.chunks(500) {
            let page = index
                .batch_get_models(BatchGetModelsRequest {
                    model_ids: chunk.to_vec(),
                })
                .await
                .map_err(index_error)?
                .into_inner();
            out.extend(page.models.iter().map(model_from));
        }
        Ok(out)
    }

    fn lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.app_locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(app.to_owned()).or_default())
    }

    /// The plan for an app (a dry run).
    pub async fn preview(&self, app: &str) -> Result<Plan, ApiError> {
        let config = self.config(app)?;
        let models = self.all_models().await?;
        let recorded = self.registry.for_app(app).await.map_err(db)?;
        Ok(plan::plan(&config, &self.mount, &models, &recorded, None))
    }

    /// Makes an app's plan true. `scope` limits it to some models (change feed).
    pub async fn apply(
        &self,
        app: &str,
        replace_conflicts: bool,
        scope: Option<&HashSet<String>>,
        trigger: Trigger,
    ) -> Result<Outcome, ApiError> {
        let config = self.config(app)?;
        let lock = self.lock(app);
        let _guard = lock.lock().await;
        // Checked under the app lock, so a feed apply queued behind an unmap cannot undo it.
        let key = unmapped_key(app);
        match trigger {
            Trigger::Request => self.registry.delete_state(&key).await.map_err(db)?,
            Trigger::Follow if self.registry.get_state(&key).await.map_err(db)?.is_some() => {
                return Ok(Outcome::default());
            }
            Trigger::Follow => {}
        }
        let models = match scope {
            Some(ids) => self.some_models(ids).await?,
            None => self.all_models().await?,
        };
        let outcome = self
            .apply_models(&config, &models, replace_conflicts, scope)
            .await?;
        self.report_holds(app).await;
        self.registry
            .set_state(&format!("last_apply/{app}"), &crate::now_ms().to_string())
            .await
            .map_err(db)?;
        Ok(outcome)
    }

    /// Plans and applies `config` for these models (the part of [`Engine::apply`] that needs no
    /// index; benchmarks call it directly).
    pub async fn apply_models(
        &self,
        config: &MappingConfig,
        models: &[Model],
        replace_conflicts: bool,
        scope: Option<&HashSet<String>>,
    ) -> Result<Outcome, ApiError> {
        if scope.is_none() {
            // A whole apply first removes what a killed mapper half-wrote in the app's folders
            // (the change feed's small applies skip it: they run on every library change).
            let dirs = Self::keep_dirs(config);
            let _ = tokio::task::spawn_blocking(move || sweep_stale_temps(&dirs)).await;
        }
        let recorded = self.registry.for_app(&config.app).await.map_err(db)?;
        let plan = plan::plan(config, &self.mount, models, &recorded, scope);
        self.execute(config, plan, replace_conflicts).await
    }

    /// The plan for these models: every recorded link is checked on disk (the scan repair does).
    pub async fn plan_models(&self, config: &MappingConfig, models: &[Model]) -> Result<Plan, ApiError> {
        let recorded = self.registry.for_app(&config.app).await.map_err(db)?;
        Ok(plan::plan(config, &self.mount, models, &recorded, None))
    }

    fn keep_dirs(config: &MappingConfig) -> Vec<PathBuf> {
        let mut keep: Vec<PathBuf> = config.rules.iter().map(|r| config.root.join(&r.folder)).collect();
        keep.push(config.root.clone());
        keep
    }

    async fn execute(
        &self,
        config: &MappingConfig,
        mut plan: Plan,
        replace_conflicts: bool,
    ) -> Result<Outcome, ApiError> {
        let root = config.root.clone();
        let app = config.app.clone();
        let keep = Self::keep_dirs(config);
        let actions = std::mem::take(&mut plan.actions);
        // Made links are recorded while the next ones are made: the registry's writes overlap
        // the filesystem work instead of following it.
        let (rows_tx, mut rows_rx) = tokio::sync::mpsc::channel::<Vec<LinkRow>>(8);
        let work = tokio::task::spawn_blocking(move || {
            links::with_dir_cache(|| {
                let now = crate::now_ms();
                let mut made: Vec<LinkRow> = Vec::new();
                let mut forgotten: Vec<String> = Vec::new();
                let mut unresolved: Vec<plan::Warning> = Vec::new();
                let mut done: Vec<Action> = Vec::with_capacity(actions.len());
                let record = |a: &Action, used: Strategy| LinkRow {
                    app: app.clone(),
                    target: a.target.display().to_string(),
                    model_id: a.model_id.clone(),
                    source: match &a.want {
                        Some(Want::Link { source }) => source.display().to_string(),
                        Some(Want::Symlink { text }) => text.display().to_string(),
                        _ => String::new(),
                    },
                    strategy: used.name().to_owned(),
                    created_ms: now,
                    identity: links::identity(&a.target),
                };
                for mut a in actions {
                    let result: Result<(), String> = match a.kind {
                        ActionKind::Keep => {
                            if a.recorded.is_none() {
                                made.push(record(&a, a.strategy));
                            }
                            Ok(())
                        }
                        ActionKind::Create | ActionKind::Replace => {
                            let want = a.want.clone().unwrap_or(Want::File {
                                content: String::new(),
                            });
                            // Files and copies replace the old entry by a rename (atomic: a kill
                            // never leaves neither, which for ComfyUI's extra_model_paths.yaml
                            // would lose the user's own sections); links must go first.
                            let cleared = if a.kind == ActionKind::Replace
                                && !links::replaces_atomically(&want, a.strategy)
                            {
                                links::remove(&root, &a.target, &keep)
                            } else {
                                Ok(())
                            };
                            cleared
                                .and_then(|()| links::make(&root, &a.target, &want, a.strategy))
                                .map(|used| {
                                    a.strategy = used;
                                    made.push(record(&a, used));
                                })
                        }
                        ActionKind::Remove => {
                            // Only what is still ours goes; a file someone put there stays.
                            let recorded = a.recorded.clone();
                            let want = recorded.as_ref().map(|r| match Strategy::from_name(&r.strategy) {
                                Strategy::Symlink if !r.source.starts_with('/') => Want::Symlink {
                                    text: PathBuf::from(&r.source),
                                },
                                Strategy::Copy if r.source.is_empty() => Want::File {
                                    content: String::new(),
                                },
                                _ => Want::Link {
                                    source: PathBuf::from(&r.source),
                                },
                            });
                            let state = want
                                .as_ref()
                                .map(|w| links::inspect(&root, &a.target, w, a.strategy))
                                .unwrap_or(Ok(OnDisk::Missing));
                            let made_by_us = recorded.as_ref().is_some_and(|r| {
                                !r.identity.is_empty() && r.identity == links::identity(&a.target)
                            });
                            let outcome = match state {
                                // The app's own config file: take our section out, keep the rest.
                                _ if a
                                    .target
                                    .file_name()
                                    .is_some_and(|n| n == "extra_model_paths.yaml") =>
                                {
                                    links::strip_comfy_section(&a.target)
                                }
                                // The very entry we made, even when its library file is gone.
                                Ok(_) if made_by_us => links::remove(&root, &a.target, &keep),
                                Ok(OnDisk::Foreign) => Ok(()),
                                Ok(_) => links::remove(&root, &a.target, &keep),
                                Err(e) => Err(e),
                            };
                            forgotten.push(a.target.display().to_string());
                            outcome
                        }
                        ActionKind::Conflict
                            if replace_conflicts && a.want.is_some() && !a.reason.contains("same path") =>
                        {
                            let want = a.want.clone().unwrap_or(Want::File {
                                content: String::new(),
                            });
                            links::move_aside(&root, &a.target)
                                .and_then(|aside| {
                                    a.reason = format!("moved aside to {}", aside.display());
                                    links::make(&root, &a.target, &want, a.strategy)
                                })
                                .map(|used| {
                                    a.kind = ActionKind::Replace;
                                    made.push(record(&a, used));
                                })
                        }
                        ActionKind::Conflict => {
                            unresolved.push(plan::Warning {
                                code: "conflict".to_owned(),
                                model_id: a.model_id.clone(),
                                path: a.target.display().to_string(),
                                message: format!("{}: {} (left alone)", a.target.display(), a.reason),
                            });
                            Ok(())
                        }
                    };
                    if let Err(message) = result {
                        unresolved.push(plan::Warning {
                            code: "failed".to_owned(),
                            model_id: a.model_id.clone(),
                            path: a.target.display().to_string(),
                            message,
                        });
                        a.kind = ActionKind::Conflict;
                    }
                    done.push(a);
                    if made.len() >= RECORD_BATCH {
                        // The receiver only goes away when recording failed; that error wins.
                        let _ = rows_tx.blocking_send(std::mem::take(&mut made));
                    }
                }
                let _ = rows_tx.blocking_send(made);
                (done, forgotten, unresolved)
            })
        });
        let record = async {
            while let Some(rows) = rows_rx.recv().await {
                self.registry.put_many(&rows).await?;
            }
            Ok::<(), sqlx::Error>(())
        };
        let (work, recorded) = tokio::join!(work, record);
        let (done, forgotten, unresolved) = work.map_err(|e| ApiError::Internal(e.to_string()))?;
        recorded.map_err(db)?;
        self.registry
            .remove_many(&config.app, &forgotten)
            .await
            .map_err(db)?;
        plan.actions = done;
        Ok(Outcome { plan, unresolved })
    }

    /// Removes every link the mapper made in an app.
    pub async fn unmap(&self, app: &str) -> Result<Outcome, ApiError> {
        let config = self.config(app)?;
        let lock = self.lock(app);
        let _guard = lock.lock().await;
        // Stays unmapped until the next explicit apply: the feed must not link it again.
        self.registry
            .set_state(&unmapped_key(app), &crate::now_ms().to_string())
            .await
            .map_err(db)?;
        let recorded = self.registry.for_app(app).await.map_err(db)?;
        let actions = recorded
            .iter()
            .map(|r| Action {
                kind: ActionKind::Remove,
                model_id: r.model_id.clone(),
                target: PathBuf::from(&r.target),
                want: None,
                recorded: Some(r.clone()),
                strategy: Strategy::from_name(&r.strategy),
                reason: "unmap".to_owned(),
            })
            .collect();
        let outcome = self
            .execute(
                &config,
                Plan {
                    actions,
                    warnings: Vec::new(),
                },
                false,
            )
            .await?;
        self.report_holds(app).await;
        Ok(outcome)
    }

    /// Fixes what the registry and the tree disagree on: broken links, links of models that left
    /// the library, links removed by hand, and dangling symlinks into the library that no
    /// registry knows (left by a lost registry). Foreign files are reported, never touched.
    pub async fn repair(&self, app: &str) -> Result<Outcome, ApiError> {
        let config = self.config(app)?;
        let recorded = self.registry.for_app(app).await.map_err(db)?;
        let scope: HashSet<String> = recorded.iter().map(|r| r.model_id.clone()).collect();
        let mut outcome = self.apply(app, false, Some(&scope), Trigger::Follow).await?;
        let known: HashSet<String> = self
            .registry
            .for_app(app)
            .await
            .map_err(db)?
            .into_iter()
            .map(|r| r.target)
            .collect();
        let mount = self.mount.clone();
        let root = config.root.clone();
        let keep = Self::keep_dirs(&config);
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let path = e.path();
                    let Ok(meta) = std::fs::symlink_metadata(&path) else {
                        continue;
                    };
                    if meta.is_dir() {
                        stack.push(path);
                    } else if meta.file_type().is_symlink() && !known.contains(&path.display().to_string()) {
                        let text = std::fs::read_link(&path).unwrap_or_default();
                        let absolute = path.parent().map(|p| p.join(&text)).unwrap_or_default();
                        let into_library =
                            text.starts_with(&mount) || normalize(&absolute).starts_with(&mount);
                        if into_library
                            && std::fs::metadata(&path).is_err()
                            && links::remove(&root, &path, &keep).is_ok()
                        {
                            removed.push(path);
                        }
                    }
                }
            }
            removed
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        for path in removed {
            outcome.plan.actions.push(Action {
                kind: ActionKind::Remove,
                model_id: String::new(),
                target: path,
                want: None,
                recorded: None,
                strategy: Strategy::Symlink,
                reason: "a dangling link into the library that no registry entry knows".to_owned(),
            });
        }
        Ok(outcome)
    }

    /// An app's own model files that could join the library, and the bytes adopting them frees.
    pub async fn preview_adoption(&self, app: &str) -> Result<(Vec<crate::adopt::Candidate>, u64), ApiError> {
        let config = self.config(app)?;
        let ours: HashSet<String> = self
            .registry
            .for_app(app)
            .await
            .map_err(db)?
            .into_iter()
            .map(|r| r.target)
            .collect();
        let scan_config = config.clone();
        let mut candidates = tokio::task::spawn_blocking(move || crate::adopt::scan(&scan_config, &ours))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(format!("scanning {}: {e}", config.root.display())))?;
        let mut index = self.index.clone();
        let mut known: HashMap<String, String> = HashMap::new();
        for c in &mut candidates {
            if !known.contains_key(&c.sha256) {
                let found = index
                    .find_models_by_hash(pumas_proto::index::v1::FindModelsByHashRequest {
                        digest: c.sha256.clone(),
                    })
                    .await
                    .map_err(index_error)?
                    .into_inner()
                    .models
                    .into_iter()
                    .next()
                    .map(|m| m.model_id)
                    .unwrap_or_default();
                known.insert(c.sha256.clone(), found);
            }
            c.existing_model_id = known.get(&c.sha256).cloned().unwrap_or_default();
        }
        let reclaim = crate::adopt::reclaimable(&candidates);
        Ok((candidates, reclaim))
    }

    /// Adopts an app's own files: new content is moved into the library (one copy per content),
    /// copies of what the library has are dropped, then the app is linked to the library.
    pub async fn adopt(&self, app: &str) -> Result<Outcome, ApiError> {
        let (candidates, _) = self.preview_adoption(app).await?;
        let mut index = self.index.clone();
        let mut done: HashSet<String> = HashSet::new();
        let mut unresolved = Vec::new();
        for c in &candidates {
            if done.contains(&c.sha256) {
                // Another copy of content handled already: the library has it now.
                if let Err(e) = std::fs::remove_file(&c.path) {
                    unresolved.push(adopt_warning(c, format!("could not remove the duplicate: {e}")));
                }
                continue;
            }
            if c.existing_model_id.is_empty() {
                let started = index
                    .import_models(pumas_proto::index::v1::ImportModelsRequest {
                        paths: vec![c.path.display().to_string()],
                        mode: common::ImportMode::Move as i32,
                        ..Default::default()
                    })
                    .await
                    .map_err(index_error)?
                    .into_inner();
                let job_id = started
                    .job
                    .and_then(|j| j.status)
                    .map(|s| s.job_id)
                    .unwrap_or_default();
                let mut stream = index
                    .watch_job(pumas_proto::index::v1::WatchJobRequest { job_id })
                    .await
                    .map_err(index_error)?
                    .into_inner();
                let mut last = None;
                while let Ok(Some(update)) = stream.message().await {
                    last = update.job;
                }
                let failed = last
                    .as_ref()
                    .and_then(|j| j.results.first())
                    .and_then(|r| r.error.as_ref())
                    .map(|e| e.message.clone());
                if let Some(why) = failed {
                    unresolved.push(adopt_warning(c, format!("the library did not take it: {why}")));
                    continue;
                }
            } else if let Err(e) = std::fs::remove_file(&c.path) {
                unresolved.push(adopt_warning(c, format!("could not remove the copy: {e}")));
                continue;
            }
            done.insert(c.sha256.clone());
        }
        let mut outcome = self.apply(app, false, None, Trigger::Request).await?;
        outcome.unresolved.extend(unresolved);
        Ok(outcome)
    }

    /// Link state of each model in each configured app.
    pub async fn link_states(
        &self,
        model_ids: &[String],
    ) -> Result<Vec<(String, Vec<(String, State, Vec<String>)>)>, ApiError> {
        let apps: Vec<MappingConfig> = self.configs().into_iter().filter_map(|c| c.config.ok()).collect();
        let mut out = Vec::new();
        for id in model_ids {
            let rows = self.registry.for_model(id).await.map_err(db)?;
            let mut by_app: BTreeMap<String, Vec<LinkRow>> = BTreeMap::new();
            for r in rows {
                by_app.entry(r.app.clone()).or_default().push(r);
            }
            let mut states = Vec::new();
            for config in &apps {
                let rows = by_app.remove(&config.app).unwrap_or_default();
                if rows.is_empty() {
                    states.push((config.app.clone(), State::NotMapped, Vec::new()));
                    continue;
                }
                let mut state = State::Linked;
                for r in &rows {
                    let want = if Strategy::from_name(&r.strategy) == Strategy::Symlink
                        && !r.source.starts_with('/')
                    {
                        Want::Symlink {
                            text: PathBuf::from(&r.source),
                        }
                    } else if r.source.is_empty() {
                        continue;
                    } else {
                        Want::Link {
                            source: PathBuf::from(&r.source),
                        }
                    };
                    match links::inspect(
                        &config.root,
                        Path::new(&r.target),
                        &want,
                        Strategy::from_name(&r.strategy),
                    ) {
                        Ok(OnDisk::Matches) => {}
                        Ok(OnDisk::Foreign) | Err(_) => state = State::Conflict,
                        Ok(_) if state == State::Linked => state = State::Broken,
                        Ok(_) => {}
                    }
                }
                states.push((
                    config.app.clone(),
                    state,
                    rows.into_iter().map(|r| r.target).collect(),
                ));
            }
            out.push((id.clone(), states));
        }
        Ok(out)
    }

    /// Tells the index which models this app links, so it refuses to delete them.
    async fn report_holds(&self, app: &str) {
        let Ok(models) = self.registry.models_of(app).await else {
            return;
        };
        let mut index = self.index.clone();
        if let Err(status) = index
            .replace_link_holds(ReplaceLinkHoldsRequest {
                holder: format!("{}/{app}", self.host),
                model_ids: models.into_iter().filter(|m| !m.is_empty()).collect(),
            })
            .await
        {
            tracing::warn!(app, error = %status.message(), "could not report link holds to the index");
        }
    }

    /// The last change-feed cursor applied to every app (0 before the first).
    pub async fn change_cursor(&self) -> u64 {
        self.registry
            .get_state("change_cursor")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    async fn save_cursor(&self, cursor: u64) {
        if let Err(err) = self
            .registry
            .set_state("change_cursor", &cursor.to_string())
            .await
        {
            tracing::warn!(error = %err, "could not save the change cursor");
        }
    }

    /// Follows the index's change feed: a model that becomes ready is linked, a removed one
    /// unlinked, a moved one relinked, in every app whose rules match. Resumes from its cursor;
    /// with none (first start, or a cursor the index no longer keeps) it starts at the index's
    /// head and brings every app up to date once.
    pub async fn follow(self: Arc<Self>) {
        // What a killed mapper left half-written in any app's folders (an unmapped app is not
        // applied again, so it would keep them).
        let dirs: Vec<PathBuf> = self
            .configs()
            .into_iter()
            .filter_map(|c| c.config.ok())
            .flat_map(|c| Self::keep_dirs(&c))
            .collect();
        let _ = tokio::task::spawn_blocking(move || sweep_stale_temps(&dirs)).await;
        loop {
            let saved = self.change_cursor().await;
            let mut index = self.index.clone();
            let after = if saved > 0 {
                saved
            } else {
                match index.get_service_info(GetServiceInfoRequest {}).await {
                    Ok(info) => info.into_inner().change_cursor,
                    Err(status) => {
                        self.following.send_replace(false);
                        tracing::debug!(error = %status.message(), "index not reachable; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            };
            let stream = index
                .watch_changes(WatchChangesRequest {
                    after_cursor: after,
                    include_models: false,
                })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(status) if status.code() == tonic::Code::OutOfRange => {
                    tracing::warn!(
                        "the index no longer keeps changes after cursor {after}; re-applying every app"
                    );
                    self.save_cursor(0).await;
                    continue;
                }
                Err(status) => {
                    self.following.send_replace(false);
                    tracing::debug!(error = %status.message(), "change feed not reachable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.following.send_replace(true);
            if saved == 0 {
                // Subscribed first, so nothing between the snapshot and the feed is lost.
                self.apply_all(None).await;
                self.save_cursor(after).await;
            }
            loop {
                let first = match stream.message().await {
                    Ok(Some(m)) => m,
                    _ => break,
                };
                // Gather what arrives together, then apply once.
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
                while let Ok(Ok(Some(m))) = tokio::time::timeout_at(deadline, stream.message()).await {
                    batch.push(m);
                }
                let mut scope = HashSet::new();
                for change in &batch {
                    scope.insert(change.model_id.clone());
                    if !change.previous_model_id.is_empty() {
                        scope.insert(change.previous_model_id.clone());
                    }
                }
                let cursor = batch.iter().map(|c| c.cursor).max().unwrap_or(after);
                self.apply_all(Some(&scope)).await;
                self.save_cursor(cursor).await;
            }
            self.following.send_replace(false);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn apply_all(&self, scope: Option<&HashSet<String>>) {
        for c in self.configs() {
            if c.config.is_err() {
                continue;
            }
            match self.apply(&c.app, false, scope, Trigger::Follow).await {
                Ok(o) => {
                    let changed = o.plan.count(ActionKind::Create)
                        + o.plan.count(ActionKind::Replace)
                        + o.plan.count(ActionKind::Remove);
                    if changed > 0 {
                        tracing::info!(app = %c.app, changed, "followed library changes");
                    }
                }
                Err(err) => tracing::warn!(app = %c.app, error = %err, "following library changes failed"),
            }
        }
    }
}

/// Removes the temp files another (killed) mapper process left in these folders.
fn sweep_stale_temps(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Ok(n) = pumas_runtime::fsio::remove_stale_temps(dir)
            && n > 0
        {
            tracing::info!(dir = %dir.display(), removed = n, "removed temp files a stopped mapper left");
        }
    }
}

/// Registry rows written per transaction while an apply runs.
const RECORD_BATCH: usize = 500;

/// Who asked for an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A caller (apply, adopt): maps the app again even if it was unmapped.
    Request,
    /// The change feed or repair: leaves an unmapped app alone.
    Follow,
}

/// Registry state key set while an app is unmapped (value: when, in ms since the epoch).
pub fn unmapped_key(app: &str) -> String {
    format!("unmapped/{app}")
}

fn adopt_warning(c: &crate::adopt::Candidate, message: String) -> plan::Warning {
    plan::Warning {
        code: "not_adopted".to_owned(),
        model_id: c.existing_model_id.clone(),
        path: c.path.display().to_string(),
        message: format!("{}: {message}", c.path.display()),
    }
}

/// `a/b/../c` -> `a/c`, without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn db(err: sqlx::Error) -> ApiError {
    ApiError::Internal(format!("link registry: {err}"))
}
