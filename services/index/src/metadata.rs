//! `metadata.json` and `overrides.json`: the files that are the truth of the library.
//!
//! `metadata.json` holds what Pumas inferred and recorded; `overrides.json` holds what the user
//! changed, and wins. `models.db` is derived from both and can be rebuilt at any time.
//! The schema is documented in `docs/METADATA.md`; bump [`SCHEMA_VERSION`] on any change that an
//! older reader could misread.

use serde::{Deserialize, Serialize};

/// Version of the metadata.json schema this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the inferred metadata in a model directory.
pub const METADATA_FILE: &str = pumas_runtime::layout::MODEL_METADATA_FILE;
/// File name of the user's overrides in a model directory.
pub const OVERRIDES_FILE: &str = pumas_runtime::layout::MODEL_OVERRIDES_FILE;

/// One file of a model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the model directory, '/'-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `sha256:<hex>`.
    pub sha256: String,
    /// `blake3:<hex>`.
    pub blake3: String,
}

/// Where a model came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Imported from local files.
    Local {
        /// The path it was imported from.
        path: String,
    },
    /// Downloaded from a hub.
    Hub {
        /// Hub endpoint.
        endpoint: String,
        /// `org/name`.
        repo_id: String,
        /// Revision asked for.
        revision: String,
        /// Commit sha it was pinned to.
        commit_sha: String,
        /// The variant the download selected (a GGUF quant); empty otherwise.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        selection_label: String,
        /// The download took every file of the repository.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        whole_repository: bool,
    },
}

/// One piece of evidence behind a detection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was looked at (`tensor_key`, `tensor_shape`, `gguf_metadata`, `config_json`, ...).
    pub kind: String,
    /// The key that matched.
    pub key: String,
    /// The value seen.
    pub value: String,
    /// What it points to, e.g. `family=sdxl`.
    pub supports: String,
}

/// Why the model has its type and family.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// Evidence that decided it.
    pub evidence: Vec<Evidence>,
    /// `<type>/<family>` of the runner-up, empty when none.
    #[serde(default)]
    pub runner_up: String,
    /// Its confidence.
    #[serde(default)]
    pub runner_up_confidence: f64,
    /// Version of the rules.
    pub rules_version: u32,
}

/// A model's binding to a dependency profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Stable binding id.
    pub binding_id: String,
    /// Profile id.
    pub profile_id: String,
    /// Profile version.
    pub profile_version: String,
    /// Backend key.
    pub backend_key: String,
    /// Platform selector.
    pub platform_selector: String,
    /// Whether it is active.
    pub active: bool,
    /// The catalog rule that attached it; empty for the user's own. Catalog bindings are
    /// derived (models.db only), never written to metadata.json.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catalog_rule: String,
}

/// `metadata.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// `<model_type>/<family>/<slug>`.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Model type (lowercase, e.g. `checkpoint`).
    pub model_type: String,
    /// Family (e.g. `sdxl`).
    pub family: String,
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Format (`safetensors`, `gguf`, `diffusers`, `transformers`, `pickle`, `onnx`, `unknown`).
    pub format: String,
    /// Precision (`fp16`, `bf16`, ...).
    #[serde(default)]
    pub precision: String,
    /// Quantization (`Q4_K_M`, ...).
    #[serde(default)]
    pub quantization: String,
    /// Parameter count when known.
    #[serde(default)]
    pub parameter_count: Option<u64>,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Sum of file sizes.
    pub total_size: u64,
    /// `blake3:<hex>` over (path, sha256) of all files in order.
    pub composite_digest: String,
    /// Origin.
    pub source: Source,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// License.
    #[serde(default)]
    pub license: String,
    /// RFC 3339 time it entered the library.
    pub added_time: String,
    /// RFC 3339 time its metadata last changed.
    pub updated_time: String,
    /// `ready`, `missing`, `downloading`, `partial`, `error`.
    pub state: String,
    /// Why (for missing/partial/error).
    #[serde(default)]
    pub state_reason: String,
    /// Detection record.
    pub detection: Detection,
    /// Pickle-based format.
    #[serde(default)]
    pub unsafe_format: bool,
    /// Dependency bindings.
    #[serde(default)]
    pub dependency_bindings: Vec<Binding>,
    /// The model declares it needs no dependency bindings.
    #[serde(default)]
    pub declares_no_dependencies: bool,
    /// What the model's files say about themselves (GGUF `general.*`, safetensors
    /// `__metadata__`), bounded.
    #[serde(default, skip_serializing_if = "crate::embedded::Embedded::is_empty")]
    pub embedded: crate::embedded::Embedded,
    /// Files kept with it that are not its weights (a preview, a Civitai info file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub side_files: Vec<SideFile>,
    /// What the hub says about it (hub downloads; refreshed by RefreshHubMetadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<crate::hub_card::HubCard>,
    /// Set while the fetch service is downloading the model (state `downloading` or `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<PendingDownload>,
}

/// A file kept with a model that is not part of its weights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideFile {
    /// `preview`, `civitai_info` or `user_metadata`.
    pub role: String,
    /// Path in the model directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

impl SideFile {
    /// The media type its name says.
    pub fn media_type(&self) -> &'static str {
        let lower = self.path.to_ascii_lowercase();
        match lower.rsplit('.').next().unwrap_or_default() {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "webp" => "image/webp",
            "gif" => "image/gif",
            "json" | "info" => "application/json",
            _ => "application/octet-stream",
        }
    }
}

/// A download in progress: where the fetch service assembles the files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDownload {
    /// The fetch service's download id.
    pub download_id: String,
    /// Absolute staging directory that holds the verified files.
    pub staging_path: String,
}

/// `overrides.json`: user edits. Every field is optional; a present field wins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// Schema version.
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Model type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Tags (replace the inferred tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// License.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Declares no dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declares_no_dependencies: Option<bool>,
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

impl Overrides {
    /// Whether no field is overridden.
    pub fn is_empty(&self) -> bool {
        self.overridden_fields().is_empty()
    }

    /// Names of the overridden fields (ModelRecord field names).
    pub fn overridden_fields(&self) -> Vec<String> {
        let mut fields = Vec::new();
        let mut add = |present: bool, name: &str| {
            if present {
                fields.push(name.to_owned());
            }
        };
        add(self.display_name.is_some(), "display_name");
        add(self.model_type.is_some(), "model_type");
        add(self.family.is_some(), "family");
        add(self.tags.is_some(), "tags");
        add(self.description.is_some(), "description");
        add(self.license.is_some(), "license");
        add(
            self.declares_no_dependencies.is_some(),
            "declares_no_dependencies",
        );
        fields
    }

    /// The metadata with these overrides applied (type/family overrides do not change the id:
    /// the index moves the model when they do).
    pub fn apply(&self, metadata: &Metadata) -> Metadata {
        let mut merged = metadata.clone();
        if let Some(v) = &self.display_name {
            merged.display_name = v.clone();
        }
        if let Some(v) = &self.model_type {
            merged.model_type = v.clone();
        }
        if let Some(v) = &self.family {
            merged.family = v.clone();
        }
        if let Some(v) = &self.tags {
            merged.tags = v.clone();
        }
        if let Some(v) = &self.description {
            merged.description = v.clone();
        }
        if let Some(v) = &self.license {
            merged.license = v.clone();
        }
        if let Some(v) = self.declares_no_dependencies {
            merged.declares_no_dependencies = v;
        }
        merged
    }
}

/// RFC 3339 "now", as metadata timestamps are written.
pub fn now_rfc3339() -> String {
    prost_types::Timestamp::from(std::time::SystemTime::now()).to_string()
}

// The escaping of reserved names lives in the runtime: fetch compares a repo's paths with the
// stored ones when it recognises a commit a crash interrupted.
pub use pumas_runtime::layout::{is_reserved, stored_path};

#[cfg(test)]
mod reserved_tests {
    use super::*;

    #[test]
    fn the_librarys_names_are_escaped_and_nothing_else() {
        assert_eq!(stored_path("metadata.json"), "_metadata.json");
        assert_eq!(stored_path("overrides.json"), "_overrides.json");
        assert_eq!(stored_path("_metadata.json"), "__metadata.json");
        assert_eq!(stored_path(".pumas-import.json"), "_.pumas-import.json");
        assert_eq!(stored_path("sub/.pumas-tmp-x"), "sub/_.pumas-tmp-x");
        // Only at the root are metadata.json and overrides.json the library's.
        assert_eq!(stored_path("unet/metadata.json"), "unet/metadata.json");
        assert_eq!(stored_path("model.safetensors"), "model.safetensors");
        assert_eq!(stored_path("config.json"), "config.json");
        // One-to-one: distinct names stay distinct.
        let names = [
            "metadata.json",
            "_metadata.json",
            "__metadata.json",
            ".pumas",
            "_.pumas",
            "x",
        ];
        let stored: std::collections::BTreeSet<String> = names.iter().map(|n| stored_path(n)).collect();
        assert_eq!(stored.len(), names.len());
        assert!(stored.iter().all(|s| !is_reserved_as_library_file(s)));
    }

    /// What the library itself reads: never a stored model file.
    fn is_reserved_as_library_file(path: &str) -> bool {
        path == METADATA_FILE || path == OVERRIDES_FILE || path.starts_with(".pumas")
    }
}
