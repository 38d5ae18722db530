//! Planning an app's links and making the plan true: create, replace, remove, and record what
//! was made in the registry while the next links are made.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{Engine, Outcome, Trigger, unmapped_key};
use crate::error::{MapperError, Result};
use crate::links::{self, OnDisk};
use crate::mapping::{MappingConfig, Strategy};
use crate::plan::{self, Action, ActionKind, Model, Plan, Want};
use crate::registry::LinkRow;

/// Registry rows written per transaction while an apply runs.
const RECORD_BATCH: usize = 500;

impl Engine {
    /// The plan for an app (a dry run).
    pub async fn preview(&self, app: &str) -> Result<Plan, MapperError> {
        let config = self.config(app)?;
        let models = self.library.all_models().await?;
        if config.layout() == crate::presets::Layout::Api {
            return self.api_preview(&config, &models).await;
        }
        let recorded = self.registry.for_app(app).await?;
        Ok(plan::plan(&config, &self.mount, &models, &recorded, None))
    }

    /// Makes an app's plan true. `scope` limits it to some models (change feed).
    pub async fn apply(
        &self,
        app: &str,
        replace_conflicts: bool,
        scope: Option<&HashSet<String>>,
        trigger: Trigger,
    ) -> Result<Outcome, MapperError> {
        let config = self.config(app)?;
        // ComfyUI's config file is written from the whole library (which families hold
        // pipelines): a change to any model rewrites it from every model.
        let scope = if config.strategy == Strategy::ConfigFile {
            None
        } else {
            scope
        };
        let lock = self.lock(app);
        let _guard = lock.lock().await;
        // Checked under the app lock, so a feed apply queued behind an unmap cannot undo it.
        let key = unmapped_key(app);
        match trigger {
            Trigger::Request => self.registry.delete_state(&key).await?,
            Trigger::Follow if self.registry.get_state(&key).await?.is_some() => {
                return Ok(Outcome::default());
            }
            Trigger::Follow => {}
        }
        let models = match scope {
            Some(ids) => self.library.some_models(ids).await?,
            None => self.library.all_models().await?,
        };
        self.check_mount(&models)?;
        // An API app is kept in step through its own API, the change feed's models only.
        if config.layout() == crate::presets::Layout::Api {
            let outcome = self.api_apply(&config, &models, scope).await?;
            self.registry
                .set_state(&format!("last_apply/{app}"), &crate::now_ms().to_string())
                .await?;
            return Ok(outcome);
        }
        let outcome = self
            .apply_models(&config, &models, replace_conflicts, scope)
            .await?;
        self.report_holds(app).await;
        self.registry
            .set_state(&format!("last_apply/{app}"), &crate::now_ms().to_string())
            .await?;
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
    ) -> Result<Outcome, MapperError> {
        if scope.is_none() {
            // A whole apply first removes what a killed mapper half-wrote in the app's folders
            // (the change feed's small applies skip it: they run on every library change).
            let dirs = Self::keep_dirs(config);
            let _ = tokio::task::spawn_blocking(move || sweep_stale_temps(&dirs)).await;
        }
        let recorded = self.registry.for_app(&config.app).await?;
        let plan = plan::plan(config, &self.mount, models, &recorded, scope);
        self.execute(config, plan, replace_conflicts).await
    }

    /// The plan for these models: every recorded link is checked on disk (the scan repair does).
    pub async fn plan_models(&self, config: &MappingConfig, models: &[Model]) -> Result<Plan, MapperError> {
        let recorded = self.registry.for_app(&config.app).await?;
        Ok(plan::plan(config, &self.mount, models, &recorded, None))
    }

    pub(super) fn keep_dirs(config: &MappingConfig) -> Vec<PathBuf> {
        let mut keep: Vec<PathBuf> = config.rules.iter().map(|r| config.root.join(&r.folder)).collect();
        keep.push(config.root.clone());
        keep
    }

    pub(super) async fn execute(
        &self,
        config: &MappingConfig,
        mut plan: Plan,
        replace_conflicts: bool,
    ) -> Result<Outcome, MapperError> {
        let root = config.root.clone();
        let app = config.app.clone();
        let keep = Self::keep_dirs(config);
        let actions = std::mem::take(&mut plan.actions);
        // Made links are recorded while the next ones are made: the registry's writes overlap
        // the filesystem work instead of following it.
        let (rows_tx, mut rows_rx) = tokio::sync::mpsc::channel::<Vec<LinkRow>>(8);
        let mut tree = links::AppTree::new(&root, self.registry.dirs_of(&app).await?);
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
                    identity: String::new(),
                    sha256: String::new(),
                };
                for mut a in actions {
                    let result: Result<(), String> = match a.kind {
                        ActionKind::Keep => {
                            if a.recorded.is_none() {
                                let mut row = record(&a, a.strategy);
                                row.identity = tree.identity(&a.target);
                                made.push(row);
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
                            let replaced_by_user = a.kind == ActionKind::Replace
                                && a.recorded
                                    .as_ref()
                                    .is_some_and(|r| is_copy(r) && !still_ours(&mut tree, r, &a.target));
                            let cleared = if replaced_by_user {
                                Err(format!(
                                    "{}: a file Pumas did not make took the place of its copy (left alone)",
                                    a.target.display()
                                ))
                            } else if a.kind == ActionKind::Replace
                                && !links::replaces_atomically(&want, a.strategy)
                            {
                                links::remove(&mut tree, &a.target, &keep)
                            } else {
                                Ok(())
                            };
                            cleared
                                .and_then(|()| links::make(&mut tree, &a.target, &want, a.strategy))
                                .map(|(used, sha256)| {
                                    a.strategy = used;
                                    let mut row = record(&a, used);
                                    row.identity = tree.identity(&a.target);
                                    row.sha256 = sha256;
                                    made.push(row);
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
                            let made_by_us = recorded
                                .as_ref()
                                .is_some_and(|r| still_ours(&mut tree, r, &a.target));
                            let a_copy = recorded.as_ref().is_some_and(is_copy);
                            let outcome = match state {
                                // The app's own config file: take our section out, keep the rest.
                                _ if a
                                    .target
                                    .file_name()
                                    .is_some_and(|n| n == "extra_model_paths.yaml") =>
                                {
                                    links::strip_comfy_section(&mut tree, &a.target)
                                }
                                // The very entry we made, even when its library file is gone.
                                Ok(_) if made_by_us => links::remove(&mut tree, &a.target, &keep),
                                // A copy is ours only by its record (inode and content), never by
                                // its size: anything else there is the user's.
                                Ok(_) if a_copy => Ok(()),
                                Ok(OnDisk::Foreign) => Ok(()),
                                Ok(_) => links::remove(&mut tree, &a.target, &keep),
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
                            tree.move_aside(&a.target)
                                .and_then(|aside| {
                                    a.reason = format!("moved aside to {}", aside.display());
                                    links::make(&mut tree, &a.target, &want, a.strategy)
                                })
                                .map(|(used, sha256)| {
                                    a.kind = ActionKind::Replace;
                                    let mut row = record(&a, used);
                                    row.identity = tree.identity(&a.target);
                                    row.sha256 = sha256;
                                    made.push(row);
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
                (done, forgotten, unresolved, tree.take_changes())
            })
        });
        let record = async {
            while let Some(rows) = rows_rx.recv().await {
                self.registry.put_many(&rows).await?;
            }
            Ok::<(), sqlx::Error>(())
        };
        let (work, recorded) = tokio::join!(work, record);
        let (done, forgotten, unresolved, (dirs_made, dirs_removed)) =
            work.map_err(|e| MapperError::Internal(e.to_string()))?;
        recorded?;
        self.registry.remove_many(&config.app, &forgotten).await?;
        self.registry
            .record_dirs(&config.app, &dirs_made, &dirs_removed)
            .await?;
        plan.actions = done;
        Ok(Outcome { plan, unresolved })
    }
}

/// A copy of a library file (not a link, not a small file of the mapper's own).
fn is_copy(row: &LinkRow) -> bool {
    matches!(
        Strategy::from_name(&row.strategy),
        Strategy::Copy | Strategy::Reflink
    ) && !row.source.is_empty()
}

/// Whether the entry at `target` is still the one recorded in `row`: the same inode, and for a
/// copy the same content as when it was written (a copy the user changed in place is theirs).
fn still_ours(tree: &mut links::AppTree, row: &LinkRow, target: &std::path::Path) -> bool {
    if row.identity.is_empty() || row.identity != tree.identity(target) {
        return false;
    }
    if is_copy(row) && !row.sha256.is_empty() {
        return tree.content_sha256(target).is_ok_and(|sha| sha == row.sha256);
    }
    true
}

/// Removes the temp files another (killed) mapper process left in these folders.
pub(super) fn sweep_stale_temps(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Ok(n) = pumas_runtime::fsio::remove_stale_temps(dir)
            && n > 0
        {
            tracing::info!(dir = %dir.display(), removed = n, "removed temp files a stopped mapper left");
        }
    }
}

impl Engine {
    /// Refuses to link when the library mount does not show the library: the mount is missing,
    /// or none of the models at hand has its folder there (a wrong --library-mount would make
    /// every link dangle while the apply reported success).
    fn check_mount(&self, models: &[Model]) -> Result<()> {
        let refuse = |why: String| {
            Err(MapperError::LibraryNotVisible {
                mount: self.mount.clone(),
                why,
            })
        };
        if !self.mount.is_dir() {
            return refuse("it is not a folder on this host".to_owned());
        }
        let probe: Vec<&Model> = models.iter().filter(|m| m.state == "ready").take(8).collect();
        if !probe.is_empty() && !probe.iter().any(|m| self.mount.join(&m.id).is_dir()) {
            return refuse(format!(
                "{} is not there",
                self.mount.join(&probe[0].id).display()
            ));
        }
        Ok(())
    }
}
