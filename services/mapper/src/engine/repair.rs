//! Unmap (remove every link the mapper made in an app) and repair (fix what the registry and
//! the tree disagree on).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Engine, Outcome, Trigger, unmapped_key};
use crate::error::{MapperError, Result};
use crate::mapping::Strategy;
use crate::plan::{Action, ActionKind, Plan};

impl Engine {
    /// Removes every link the mapper made in an app.
    pub async fn unmap(&self, app: &str) -> Result<Outcome, MapperError> {
        let config = self.config(app)?;
        let lock = self.lock(app);
        let _guard = lock.lock().await;
        // Stays unmapped until the next explicit apply: the feed must not link it again.
        self.registry
            .set_state(&unmapped_key(app), &crate::now_ms().to_string())
            .await?;
        if config.layout() == crate::presets::Layout::Api {
            return self.api_unmap(&config).await;
        }
        let recorded = self.registry.for_app(app).await?;
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
    pub async fn repair(&self, app: &str) -> Result<Outcome, MapperError> {
        let config = self.config(app)?;
        // An API app has no tree to repair: syncing it again re-installs what it lost.
        if config.layout() == crate::presets::Layout::Api {
            return self.apply(app, false, None, Trigger::Follow).await;
        }
        let recorded = self.registry.for_app(app).await?;
        let scope: HashSet<String> = recorded.iter().map(|r| r.model_id.clone()).collect();
        let mut outcome = self.apply(app, false, Some(&scope), Trigger::Follow).await?;
        let known: HashSet<String> = self
            .registry
            .for_app(app)
            .await?
            .into_iter()
            .map(|r| r.target)
            .collect();
        let mount = self.mount.clone();
        let root = config.root.clone();
        let dangling = tokio::task::spawn_blocking(move || {
            // Dangling symlinks into the library that no registry row knows: the user's, or
            // left by a lost registry. Reported, never removed: the mapper touches only what
            // its registry says it made.
            walkdir::WalkDir::new(&root)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.path_is_symlink() && !known.contains(&e.path().display().to_string()))
                .map(walkdir::DirEntry::into_path)
                .filter(|path| {
                    let text = std::fs::read_link(path).unwrap_or_default();
                    let absolute = path.parent().map(|p| p.join(&text)).unwrap_or_default();
                    let into_library = text.starts_with(&mount) || normalize(&absolute).starts_with(&mount);
                    into_library && std::fs::metadata(path).is_err()
                })
                .collect::<Vec<PathBuf>>()
        })
        .await
        .map_err(|e| MapperError::Internal(e.to_string()))?;
        for path in dangling {
            outcome.unresolved.push(crate::plan::Warning {
                code: "unknown_dangling_link".to_owned(),
                model_id: String::new(),
                path: path.display().to_string(),
                message: format!(
                    "{}: a dangling link into the library that Pumas has no record of making; left alone (remove it if it is yours)",
                    path.display()
                ),
            });
        }
        Ok(outcome)
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
