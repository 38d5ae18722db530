//! The mapper's work: read configs, plan, apply (idempotently), unmap, repair, adopt, report
//! link states, tell the index which models each app holds, and follow the index's change feed.
//!
//! One room per job:
//! - this module: the engine, its outcome types and the per-app lock;
//! - [`configs`]: the apps' mapping configs on disk;
//! - [`library`]: the index as the mapper reads it (the only room that speaks gRPC);
//! - [`apply`]: planning and making links; [`repair`]: unmap and repair;
//! - [`adoption`]: taking an app's own files into the library; [`states`]: link states;
//! - [`follow`]: the change-feed follower.

mod adoption;
mod api_app;
mod apply;
mod configs;
mod follow;
pub mod library;
mod repair;
mod states;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::mapping::{ConfigError, MappingConfig};
use crate::plan::{self, Plan};
use crate::registry::Registry;

pub use library::Library;

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
    library: Library,
    /// One apply at a time per app (the feed follower and RPCs share it).
    app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether the change feed is connected.
    pub following: watch::Sender<bool>,
    /// Folders configs sent over the API may target.
    app_roots: AppRoots,
}

/// Folders that configs sent over the API may target.
#[derive(Clone, Debug, Default)]
pub struct AppRoots {
    /// Allowed folders (real paths); empty = see `required`.
    pub roots: Vec<PathBuf>,
    /// With no roots: refuse every config sent over the API (a mapper beyond loopback).
    pub required: bool,
}

impl AppRoots {
    /// Why `root` may not be written to through the API, if it may not.
    pub fn refuses(&self, root: &Path) -> Option<String> {
        if self.roots.is_empty() {
            return self.required.then(|| {
                format!(
                    "this mapper listens beyond loopback and takes configs over the API only for app folders under --app-root; none is given, so {} is refused (write the config on the mapper's host instead)",
                    root.display()
                )
            });
        }
        let real = real_path(root);
        if self.roots.iter().any(|r| real.starts_with(r)) {
            return None;
        }
        Some(format!(
            "{} is outside the app folders this mapper may write to ({})",
            root.display(),
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The real path of `path`, which need not exist yet: `..` and `.` resolved, and its longest
/// existing ancestor resolved through symlinks.
pub fn real_path(path: &Path) -> PathBuf {
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::CurDir => {}
            other => lexical.push(other.as_os_str()),
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_owned()),
            None => break,
        }
        if !existing.pop() {
            break;
        }
    }
    let mut real = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        real.push(name);
    }
    real
}

impl Engine {
    pub fn new(
        configs_dir: PathBuf,
        mount: PathBuf,
        host: String,
        registry: Registry,
        library: Library,
        app_roots: AppRoots,
    ) -> Arc<Self> {
        Arc::new(Self {
            configs_dir,
            mount,
            host,
            registry,
            library,
            app_locks: Mutex::new(HashMap::new()),
            following: watch::channel(false).0,
            app_roots,
        })
    }

    /// Where this host sees the library.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    pub(super) fn lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.app_locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(app.to_owned()).or_default())
    }
}

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
