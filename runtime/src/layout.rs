//! The data root's directory scheme (ARCHITECTURE.md, "Data on disk"). Each service creates the
//! parts it owns; `pumas up` creates all of them.

use std::io;
use std::path::{Path, PathBuf};

/// Paths under one data root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRoot {
    root: PathBuf,
}

impl DataRoot {
    /// A data root at `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The default: `$PUMAS_DATA_ROOT`, else the platform data dir (`~/.local/share/pumas` on
    /// Linux), else `./pumas-data`.
    pub fn default_path() -> PathBuf {
        if let Some(root) = std::env::var_os("PUMAS_DATA_ROOT").filter(|v| !v.is_empty()) {
            return PathBuf::from(root);
        }
        dirs::data_dir()
            .map(|d| d.join("pumas"))
            .unwrap_or_else(|| PathBuf::from("pumas-data"))
    }

    /// The root itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<root>/shared-resources/models`: the library (index).
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("shared-resources").join("models")
    }

    /// `<root>/shared-resources/models/models.db` (index).
    pub fn models_db(&self) -> PathBuf {
        self.models_dir().join("models.db")
    }

    /// `<root>/catalog`: the user's dependency catalog (profiles and autobinding rules), read by
    /// the index over its built-in one.
    pub fn catalog_dir(&self) -> PathBuf {
        self.root.join("catalog")
    }

    /// `<root>/shared-resources/cache` (fetch).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("shared-resources").join("cache")
    }

    /// `<root>/shared-resources/cache/search.sqlite` (fetch).
    pub fn search_cache_db(&self) -> PathBuf {
        self.cache_dir().join("search.sqlite")
    }

    /// `<root>/launcher-data/mapping-configs` (mapper).
    pub fn mapping_configs_dir(&self) -> PathBuf {
        self.root.join("launcher-data").join("mapping-configs")
    }

    /// `<root>/launcher-data/cache/downloads` (fetch).
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("launcher-data").join("cache").join("downloads")
    }

    /// `<root>/launcher-data/mapper` (the mapper's link registry and state).
    pub fn mapper_state_dir(&self) -> PathBuf {
        self.root.join("launcher-data").join("mapper")
    }

    /// `<root>/launcher-data/secrets` (0700): tokens `pumas up` and the gateway generate.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("launcher-data").join("secrets")
    }

    /// `<root>/launcher-data/secrets/service-token`: the token between the suite's services.
    pub fn service_token_file(&self) -> PathBuf {
        self.secrets_dir().join("service-token")
    }

    /// `<root>/launcher-data/secrets/api-token`: the gateway's generated client token.
    pub fn api_token_file(&self) -> PathBuf {
        self.secrets_dir().join("api-token")
    }

    /// Creates every directory of the scheme.
    pub fn create_all(&self) -> io::Result<()> {
        for dir in [
            self.models_dir(),
            self.cache_dir(),
            self.mapping_configs_dir(),
            self.downloads_dir(),
        ] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }
}

/// A model's metadata file in its library folder.
pub const MODEL_METADATA_FILE: &str = "metadata.json";
/// A model's user overrides in its library folder.
pub const MODEL_OVERRIDES_FILE: &str = "overrides.json";

/// Whether a model's own file, at `path` in its repository or folder, would take the name of one
/// of the library's files: `metadata.json` or `overrides.json` at the model's root, or any
/// `.pumas*` name. Names that are such a name behind leading underscores count too, so that
/// [`stored_path`] never maps two files to one name.
pub fn is_reserved(path: &str) -> bool {
    let mut parts = path.split('/');
    let first = parts.next().unwrap_or_default();
    let root_name = !path.contains('/') && {
        let bare = first.trim_start_matches('_');
        bare == MODEL_METADATA_FILE || bare == MODEL_OVERRIDES_FILE
    };
    root_name
        || path
            .split('/')
            .any(|c| c.trim_start_matches('_').starts_with(".pumas"))
}

/// Where the library keeps a model's own file that is at `path` in its repository or folder:
/// the same path, except that a reserved name (see [`is_reserved`]) gets one more leading `_`
/// on the components that make it reserved (`metadata.json` -> `_metadata.json`,
/// `sub/.pumas-x` -> `sub/_.pumas-x`). The file is kept, never parsed as library metadata.
pub fn stored_path(path: &str) -> String {
    if !is_reserved(path) {
        return path.to_owned();
    }
    if !path.contains('/') {
        return format!("_{path}");
    }
    path.split('/')
        .map(|c| {
            if c.trim_start_matches('_').starts_with(".pumas") {
                format!("_{c}")
            } else {
                c.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_matches_architecture() {
        let root = DataRoot::new("/data");
        assert_eq!(
            root.models_db(),
            Path::new("/data/shared-resources/models/models.db")
        );
        assert_eq!(
            root.search_cache_db(),
            Path::new("/data/shared-resources/cache/search.sqlite")
        );
        assert_eq!(
            root.mapping_configs_dir(),
            Path::new("/data/launcher-data/mapping-configs")
        );
        assert_eq!(
            root.downloads_dir(),
            Path::new("/data/launcher-data/cache/downloads")
        );
    }
}
