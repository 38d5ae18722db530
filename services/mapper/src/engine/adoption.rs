//! Adoption: an app's own model files join the library (moved in, one copy per content), the
//! copies the library already has are dropped, and the app is linked to the library.

use std::collections::{HashMap, HashSet};

use super::{Engine, Outcome, Trigger};
use crate::adopt::{self, Candidate};
use crate::error::{MapperError, Result};
use crate::plan;

impl Engine {
    /// An app's own model files that could join the library, and the bytes adopting them frees.
    pub async fn preview_adoption(&self, app: &str) -> Result<(Vec<Candidate>, u64), MapperError> {
        let config = self.config(app)?;
        if config.layout() == crate::presets::Layout::Api {
            return Err(MapperError::NotForThisApp(format!(
                "{app} keeps its models through its own API, not in folders the mapper reads: import its model files with `pumas import` instead"
            )));
        }
        let ours: HashSet<String> = self
            .registry
            .for_app(app)
            .await?
            .into_iter()
            .map(|r| r.target)
            .collect();
        let scan_config = config.clone();
        let mut candidates = tokio::task::spawn_blocking(move || adopt::scan(&scan_config, &ours))
            .await
            .map_err(|e| MapperError::Internal(e.to_string()))?
            .map_err(|e| MapperError::Internal(format!("scanning {}: {e}", config.root.display())))?;
        let mut known: HashMap<String, String> = HashMap::new();
        for c in &mut candidates {
            if !known.contains_key(&c.sha256) {
                let found = self.library.model_with_hash(&c.sha256).await?;
                known.insert(c.sha256.clone(), found);
            }
            c.existing_model_id = known.get(&c.sha256).cloned().unwrap_or_default();
        }
        let reclaim = adopt::reclaimable(&candidates);
        Ok((candidates, reclaim))
    }

    /// Adopts an app's own files: new content is moved into the library (one copy per content),
    /// copies of what the library has are dropped, then the app is linked to the library.
    pub async fn adopt(&self, app: &str) -> Result<Outcome, MapperError> {
        let (candidates, _) = self.preview_adoption(app).await?;
        let config = self.config(app)?;
        // App files go through the app tree: confined to its root, no symlink followed, and
        // only the very file that was checked.
        let mut tree = crate::links::AppTree::new(&config.root, Default::default());
        let mut done: HashSet<String> = HashSet::new();
        let mut unresolved = Vec::new();
        for c in &candidates {
            if done.contains(&c.sha256) {
                // Another copy of content handled already: the library has it now, if it
                // proves so.
                match self.library_holds(c, None).await {
                    Err(why) => unresolved.push(adopt_warning(c, format!("kept: {why}"))),
                    Ok(identity) => {
                        if let Err(e) = tree.remove_checked(&c.path, &identity) {
                            unresolved.push(adopt_warning(c, format!("could not remove the duplicate: {e}")));
                        }
                    }
                }
                continue;
            }
            if c.existing_model_id.is_empty() {
                if let Some(why) = self.library.import_by_move(&c.path).await? {
                    unresolved.push(adopt_warning(c, format!("the library did not take it: {why}")));
                    continue;
                }
            } else {
                match self.library_holds(c, Some(&c.existing_model_id)).await {
                    Err(why) => {
                        unresolved.push(adopt_warning(c, format!("kept: {why}")));
                        continue;
                    }
                    Ok(identity) => {
                        if let Err(e) = tree.remove_checked(&c.path, &identity) {
                            unresolved.push(adopt_warning(c, format!("could not remove the copy: {e}")));
                            continue;
                        }
                    }
                }
            }
            done.insert(c.sha256.clone());
        }
        let mut outcome = self.apply(app, false, None, Trigger::Request).await?;
        outcome.unresolved.extend(unresolved);
        Ok(outcome)
    }
}

impl Engine {
    /// Whether the library provably holds the content of app file `c`, so the app file may go:
    /// a READY model with a file of that SHA-256, present under this host's mount with the same
    /// size, and not the very same file (another inode). Returns the app file's identity
    /// (`<dev>:<inode>`) as checked; says why not otherwise.
    async fn library_holds(&self, c: &Candidate, model_id: Option<&str>) -> Result<String, String> {
        use std::os::unix::fs::MetadataExt as _;
        let id = match model_id {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => self
                .library
                .model_with_hash(&c.sha256)
                .await
                .map_err(|e| e.to_string())?,
        };
        if id.is_empty() {
            return Err("the library has no model with this content".to_owned());
        }
        let ids = HashSet::from([id.clone()]);
        let models = self.library.some_models(&ids).await.map_err(|e| e.to_string())?;
        let model = models
            .first()
            .ok_or_else(|| format!("library model {id} is gone"))?;
        if model.state != "ready" {
            return Err(format!("library model {id} is {}, not ready", model.state));
        }
        let (path, _) = model
            .files
            .iter()
            .find(|(_, sha)| *sha == c.sha256)
            .ok_or_else(|| format!("library model {id} has no file with this content"))?;
        let library_file = self.mount.join(&id).join(path);
        let theirs = std::fs::metadata(&library_file).map_err(|e| {
            format!(
                "the library's copy {} cannot be read: {e}",
                library_file.display()
            )
        })?;
        let ours = std::fs::symlink_metadata(&c.path).map_err(|e| e.to_string())?;
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Err(format!("it is the library's own file {}", library_file.display()));
        }
        if theirs.len() != ours.len() {
            return Err(format!(
                "the library's copy {} has another size",
                library_file.display()
            ));
        }
        Ok(format!("{}:{}", ours.dev(), ours.ino()))
    }
}

fn adopt_warning(c: &Candidate, message: String) -> plan::Warning {
    plan::Warning {
        code: "not_adopted".to_owned(),
        model_id: c.existing_model_id.clone(),
        path: c.path.display().to_string(),
        message: format!("{}: {message}", c.path.display()),
    }
}
