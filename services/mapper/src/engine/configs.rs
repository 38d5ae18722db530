//! The apps' mapping configs: one TOML file per app in the configs folder.

use super::{AppConfig, Engine};
use crate::error::{MapperError, Result};
use crate::mapping::{self, MappingConfig};

impl Engine {
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
    pub fn config(&self, app: &str) -> Result<MappingConfig> {
        if !mapping::valid_app_name(app) {
            return Err(MapperError::BadAppName(app.to_owned()));
        }
        let path = mapping::path_of(&self.configs_dir, app);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            let known: Vec<String> = self.configs().into_iter().map(|c| c.app).collect();
            let help = if known.is_empty() {
                format!(
                    "no apps are configured; write a mapping config to {}",
                    path.display()
                )
            } else {
                format!("configured apps: {}", known.join(", "))
            };
            MapperError::UnknownApp {
                app: app.to_owned(),
                help,
            }
        })?;
        mapping::parse(app, &text).map_err(|errors| MapperError::InvalidConfig {
            app: app.to_owned(),
            path: path.clone(),
            problems: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// Validates and writes a config atomically (fsynced, so a crash keeps the old or the new).
    pub fn put_config(&self, app: &str, text: &str) -> Result<MappingConfig> {
        if !mapping::valid_app_name(app) {
            return Err(MapperError::BadAppName(app.to_owned()));
        }
        let config = mapping::parse(app, text).map_err(MapperError::Rejected)?;
        // An API app (InvokeAI) is given no folder: nothing of it is written on this host.
        if config.url.is_none()
            && let Some(why) = self.app_roots.refuses(&config.root)
        {
            return Err(MapperError::RootNotAllowed(why));
        }
        std::fs::create_dir_all(&self.configs_dir).map_err(|e| MapperError::Internal(e.to_string()))?;
        let path = mapping::path_of(&self.configs_dir, app);
        pumas_runtime::fsio::write_atomic(&path, text.as_bytes())
            .map_err(|e| MapperError::Internal(format!("writing {}: {e}", path.display())))?;
        Ok(config)
    }
}
