//! Link state of models in each configured app, checked on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Engine, State};
use crate::error::MapperError;
use crate::links::{self, OnDisk};
use crate::mapping::{MappingConfig, Strategy};
use crate::plan::Want;
use crate::registry::LinkRow;

impl Engine {
    /// Link state of each model in each configured app.
    pub async fn link_states(
        &self,
        model_ids: &[String],
    ) -> Result<Vec<(String, Vec<(String, State, Vec<String>)>)>, MapperError> {
        let apps: Vec<MappingConfig> = self.configs().into_iter().filter_map(|c| c.config.ok()).collect();
        let mut out = Vec::new();
        // One query for the whole page (none when no app is configured: nothing to report).
        let mut recorded: BTreeMap<String, BTreeMap<String, Vec<LinkRow>>> = BTreeMap::new();
        if !apps.is_empty() {
            for r in self.registry.for_models(model_ids).await? {
                recorded
                    .entry(r.model_id.clone())
                    .or_default()
                    .entry(r.app.clone())
                    .or_default()
                    .push(r);
            }
        }
        for id in model_ids {
            let mut by_app = recorded.remove(id).unwrap_or_default();
            let mut states = Vec::new();
            for config in &apps {
                let rows = by_app.remove(&config.app).unwrap_or_default();
                if rows.is_empty() {
                    states.push((config.app.clone(), State::NotMapped, Vec::new()));
                    continue;
                }
                let mut state = State::Linked;
                // An install in an API app is the app's to keep; the registry says it is there.
                let api = config.layout() == crate::presets::Layout::Api;
                for r in if api { &[][..] } else { &rows[..] } {
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
}
