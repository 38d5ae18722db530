//! Apps reached through their own API instead of folders (InvokeAI's model manager): each
//! library model a rule takes is installed *in place* by its path in the library, and what the
//! mapper installed is deleted again when the model leaves the library or the app is unmapped.
//! What the user installed in the app is never touched, even when it lies in the library. The
//! registry records each install (target `invokeai:<path>`, identity = the app's model key), so
//! link holds and link states work as for links.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use super::{Engine, Outcome};
use crate::error::{MapperError, Result};
use crate::invokeai;
use crate::mapping::{MappingConfig, Strategy};
use crate::plan::{self, Action, ActionKind, Model, Plan, Warning};
use crate::registry::LinkRow;

/// The registry's strategy name for an install through an app's API.
pub const API_STRATEGY: &str = "api";

/// The registry target of an install of `path`.
pub fn api_target(path: &str) -> String {
    format!("invokeai:{path}")
}

fn client(config: &MappingConfig) -> Result<invokeai::Client> {
    let url = config
        .url
        .as_deref()
        .ok_or_else(|| MapperError::Internal(format!("{} has no url", config.app)))?;
    invokeai::Client::new(url).map_err(MapperError::Internal)
}

impl Engine {
    /// The library path the app is given for each model a rule takes (a single file, else the
    /// model's folder), and what it would not load.
    fn api_wanted(
        &self,
        config: &MappingConfig,
        models: &[Model],
        warnings: &mut Vec<Warning>,
    ) -> BTreeMap<String, String> {
        let mut wanted = BTreeMap::new();
        for m in models {
            let Some(rule) = plan::rule_for(config, m) else {
                continue;
            };
            if m.state != "ready" {
                continue;
            }
            let dir = self.mount.join(&m.id);
            let path = match m.files.as_slice() {
                [(file, _)] => {
                    let lower = file.to_ascii_lowercase();
                    if !rule.extensions.is_empty()
                        && !rule.extensions.iter().any(|e| lower.ends_with(e.as_str()))
                    {
                        warnings.push(Warning {
                            code: "extension_not_loaded".to_owned(),
                            model_id: m.id.clone(),
                            path: file.clone(),
                            message: format!(
                                "{} does not load `{file}` (it loads {})",
                                config.preset.display_name,
                                rule.extensions.join(" ")
                            ),
                        });
                        continue;
                    }
                    dir.join(file)
                }
                _ => dir,
            };
            wanted.insert(path.display().to_string(), m.id.clone());
        }
        wanted
    }

    /// What syncing the app would do: install, delete (only what the mapper installed), keep.
    /// With `scope` (the change feed), only those models are installed or deleted.
    async fn api_actions(
        &self,
        config: &MappingConfig,
        models: &[Model],
        scope: Option<&HashSet<String>>,
    ) -> Result<(Plan, HashMap<String, invokeai::Installed>)> {
        let mut warnings = Vec::new();
        let wanted = self.api_wanted(config, models, &mut warnings);
        let installed: HashMap<String, invokeai::Installed> = client(config)?
            .list()
            .await
            .map_err(MapperError::AppUnreachable)?
            .into_iter()
            .map(|m| (m.path.clone(), m))
            .collect();
        let recorded: HashMap<String, LinkRow> = self
            .registry
            .for_app(&config.app)
            .await?
            .into_iter()
            .filter(|r| scope.is_none_or(|s| s.contains(&r.model_id)))
            .map(|r| (r.source.clone(), r))
            .collect();
        let action = |kind, model_id: &str, path: &str, recorded: Option<LinkRow>, reason: &str| Action {
            kind,
            model_id: model_id.to_owned(),
            target: PathBuf::from(api_target(path)),
            want: None,
            recorded,
            strategy: Strategy::Auto,
            reason: reason.to_owned(),
        };
        let mut actions = Vec::new();
        for (path, model_id) in &wanted {
            let ours = recorded.get(path).cloned();
            match (installed.get(path), ours) {
                (Some(_), ours @ Some(_)) => {
                    actions.push(action(ActionKind::Keep, model_id, path, ours, "installed"))
                }
                (Some(_), None) => actions.push(action(
                    ActionKind::Keep,
                    model_id,
                    path,
                    None,
                    "installed in the app by hand",
                )),
                (None, ours) => actions.push(action(
                    ActionKind::Create,
                    model_id,
                    path,
                    ours,
                    "install in place",
                )),
            }
        }
        for (path, row) in &recorded {
            if !wanted.contains_key(path) {
                actions.push(action(
                    ActionKind::Remove,
                    &row.model_id,
                    path,
                    Some(row.clone()),
                    "no longer in the library",
                ));
            }
        }
        Ok((Plan { actions, warnings }, installed))
    }

    /// The plan of an API app (a dry run).
    pub(super) async fn api_preview(&self, config: &MappingConfig, models: &[Model]) -> Result<Plan> {
        Ok(self.api_actions(config, models, None).await?.0)
    }

    /// Makes the app hold what its plan says; every install and delete is recorded as it
    /// happens, and one that fails is reported while the rest go on.
    pub(super) async fn api_apply(
        &self,
        config: &MappingConfig,
        models: &[Model],
        scope: Option<&HashSet<String>>,
    ) -> Result<Outcome> {
        let (plan, installed) = self.api_actions(config, models, scope).await?;
        self.api_execute(config, plan, &installed).await
    }

    /// Deletes from the app every model the mapper installed.
    pub(super) async fn api_unmap(&self, config: &MappingConfig) -> Result<Outcome> {
        let actions = self
            .registry
            .for_app(&config.app)
            .await?
            .into_iter()
            .map(|r| Action {
                kind: ActionKind::Remove,
                model_id: r.model_id.clone(),
                target: PathBuf::from(&r.target),
                want: None,
                recorded: Some(r),
                strategy: Strategy::Auto,
                reason: "unmap".to_owned(),
            })
            .collect();
        let plan = Plan {
            actions,
            warnings: Vec::new(),
        };
        self.api_execute(config, plan, &HashMap::new()).await
    }

    async fn api_execute(
        &self,
        config: &MappingConfig,
        plan: Plan,
        installed: &HashMap<String, invokeai::Installed>,
    ) -> Result<Outcome> {
        let app = client(config)?;
        let mut unresolved = Vec::new();
        let mut done = Vec::with_capacity(plan.actions.len());
        for a in plan.actions {
            let path = a
                .target
                .display()
                .to_string()
                .trim_start_matches("invokeai:")
                .to_owned();
            let result = match a.kind {
                ActionKind::Create => match app.install(&path).await {
                    Ok(key) => self.record_install(config, &a.model_id, &path, &key).await,
                    Err(e) => Err(e),
                },
                ActionKind::Remove => {
                    let key = a
                        .recorded
                        .as_ref()
                        .map(|r| r.identity.clone())
                        .unwrap_or_default();
                    match app.delete(&key).await {
                        Ok(()) => self
                            .registry
                            .remove_many(&config.app, &[api_target(&path)])
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    }
                }
                // An install the app lost the key of (reinstalled by hand) is recorded afresh.
                ActionKind::Keep => match (a.recorded.as_ref(), installed.get(&path)) {
                    (Some(row), Some(now)) if row.identity != now.key => {
                        self.record_install(config, &a.model_id, &path, &now.key).await
                    }
                    _ => Ok(()),
                },
                ActionKind::Replace | ActionKind::Conflict => Ok(()),
            };
            if let Err(message) = result {
                unresolved.push(Warning {
                    code: "app_refused".to_owned(),
                    model_id: a.model_id.clone(),
                    path: path.clone(),
                    message,
                });
                continue;
            }
            done.push(a);
        }
        self.report_holds(&config.app).await;
        Ok(Outcome {
            plan: Plan {
                actions: done,
                warnings: plan.warnings,
            },
            unresolved,
        })
    }

    async fn record_install(
        &self,
        config: &MappingConfig,
        model_id: &str,
        path: &str,
        key: &str,
    ) -> Result<(), String> {
        let row = LinkRow {
            app: config.app.clone(),
            target: api_target(path),
            model_id: model_id.to_owned(),
            source: path.to_owned(),
            strategy: API_STRATEGY.to_owned(),
            created_ms: crate::now_ms(),
            identity: key.to_owned(),
            sha256: String::new(),
        };
        self.registry.put_many(&[row]).await.map_err(|e| e.to_string())
    }
}
