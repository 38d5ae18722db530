//! Inspection: which files form one library item, and what their headers and configs say.

pub mod gguf;
pub mod pickle;
pub mod safetensors;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Storage formats (metadata.json spelling).
pub mod format {
    pub const SAFETENSORS: &str = "safetensors";
    pub const GGUF: &str = "gguf";
    pub const DIFFUSERS: &str = "diffusers";
    pub const TRANSFORMERS: &str = "transformers";
    pub const PICKLE: &str = "pickle";
    pub const ONNX: &str = "onnx";
    pub const UNKNOWN: &str = "unknown";
}

/// What inspection found, the input of detection.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The model's name (from the file or folder name).
    pub name: String,
    /// Relative paths of the model's files.
    pub file_names: Vec<String>,
    /// Storage format.
    pub format: &'static str,
    /// Merged safetensors headers of the main weights (all shards).
    pub safetensors: Option<safetensors::Header>,
    /// GGUF header of the main file.
    pub gguf: Option<gguf::Header>,
    /// `config.json` at the model root.
    pub config: Option<Value>,
    /// `model_index.json` at the model root.
    pub model_index: Option<Value>,
    /// Other configs by relative path (e.g. `unet/config.json`).
    pub sub_configs: BTreeMap<String, Value>,
}

/// Extensions of weight files we import.
const WEIGHT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "sft",
    "gguf",
    "ckpt",
    "pt",
    "pth",
    "bin",
    "onnx",
    "pkl",
];
/// Pickle-based extensions (can run code when loaded).
const PICKLE_EXTENSIONS: &[&str] = &["ckpt", "pt", "pth", "bin", "pkl"];
/// Largest config/json file we read.
const MAX_CONFIG: u64 = 16 * 1024 * 1024;

/// Why inspection refused the input.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The path does not exist or cannot be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    /// A directory without any model file.
    #[error("{path} contains no model files (looked for {})", WEIGHT_EXTENSIONS.join(", "))]
    NoModelFiles { path: String },
    /// A header is malformed.
    #[error("{path} is not a valid {format} file: {reason}")]
    Malformed {
        path: String,
        format: &'static str,
        reason: String,
    },
    /// A single file whose name says it is no model file of any format we know.
    #[error("{path} is not a model file: its name has none of the model extensions ({})", WEIGHT_EXTENSIONS.join(", "))]
    NotAModel { path: String },
    /// A shard of a set is missing.
    #[error("{path} is part {part} of {total}, but {missing} is missing")]
    IncompleteSet {
        path: String,
        part: u32,
        total: u32,
        missing: String,
    },
}

/// A file of a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitFile {
    /// Absolute source path.
    pub source: PathBuf,
    /// Path inside the model directory ('/'-separated).
    pub relative: String,
    /// Size in bytes.
    pub size: u64,
}

/// One library item to be: the files that belong together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Name for display and the slug.
    pub name: String,
    /// The path the user gave (or the file/folder the unit came from).
    pub origin: PathBuf,
    /// Its files, sorted by relative path.
    pub files: Vec<UnitFile>,
    /// Files kept with it that are not its weights (a preview beside a LoRA, ...).
    pub side_files: Vec<SideUnitFile>,
}

/// A file beside a model's weights that the library keeps with it, under a name of its own
/// (`relative` is `.pumas-preview.png`, ...), never part of the model's files or digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideUnitFile {
    /// `preview`, `civitai_info` or `user_metadata`.
    pub role: &'static str,
    /// The file.
    pub file: UnitFile,
}

/// Largest preview image kept (a larger one is left where it is).
const MAX_PREVIEW: u64 = 16 * 1024 * 1024;
/// Largest Civitai info or user-metadata file kept.
const MAX_SIDE_TEXT: u64 = 4 * 1024 * 1024;
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// The side files beside a single-file model named `<stem>.<ext>`, as A1111, Forge, SD.Next and
/// ComfyUI users keep them: `<stem>.preview.<image>` (else `<stem>.<image>`), `<stem>.civitai.info`
/// and `<stem>.json`.
fn side_files(stem: &str, siblings: &[PathBuf]) -> Vec<SideUnitFile> {
    let stem = stem.to_lowercase();
    let named = |name: &str, max: u64| {
        siblings.iter().find_map(|s| {
            let file_name = s.file_name()?.to_string_lossy().to_lowercase();
            let size = std::fs::symlink_metadata(s).ok().filter(|m| m.is_file())?.len();
            (file_name == name && size <= max).then(|| (s.clone(), size))
        })
    };
    let mut out = Vec::new();
    let preview = IMAGE_EXTENSIONS
        .iter()
        .find_map(|ext| named(&format!("{stem}.preview.{ext}"), MAX_PREVIEW).map(|p| (p, *ext)))
        .or_else(|| {
            IMAGE_EXTENSIONS
                .iter()
                .find_map(|ext| named(&format!("{stem}.{ext}"), MAX_PREVIEW).map(|p| (p, *ext)))
        });
    if let Some(((source, size), ext)) = preview {
        out.push(SideUnitFile {
            role: "preview",
            file: UnitFile {
                source,
                relative: format!(".pumas-preview.{ext}"),
                size,
            },
        });
    }
    for (suffix, role, relative) in [
        ("civitai.info", "civitai_info", ".pumas-civitai.info"),
        ("json", "user_metadata", ".pumas-user-metadata.json"),
    ] {
        if let Some((source, size)) = named(&format!("{stem}.{suffix}"), MAX_SIDE_TEXT) {
            out.push(SideUnitFile {
                role,
                file: UnitFile {
                    source,
                    relative: relative.to_owned(),
                    size,
                },
            });
        }
    }
    out
}

impl Unit {
    /// Total size.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn is_weight(path: &Path) -> bool {
    WEIGHT_EXTENSIONS.contains(&extension(path).as_str())
}

/// `name-00001-of-00003.ext` -> (`name`, 1, 3).
fn shard_parts(file_name: &str) -> Option<(&str, u32, u32)> {
    let stem = file_name.rsplit_once('.')?.0;
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (base, part) = rest.rsplit_once('-')?;
    let part: u32 = part.parse().ok()?;
    let total: u32 = total.parse().ok()?;
    (part >= 1 && part <= total && total > 1).then_some((base, part, total))
}

fn unreadable(path: &Path, err: impl ToString) -> InspectError {
    InspectError::Unreadable {
        path: path.display().to_string(),
        reason: err.to_string(),
    }
}

fn file_entry(source: &Path, relative: String) -> Result<UnitFile, InspectError> {
    let meta = std::fs::metadata(source).map_err(|e| unreadable(source, e))?;
    Ok(UnitFile {
        source: source.to_owned(),
        relative,
        size: meta.len(),
    })
}

/// Walks a directory (not following symlinks, skipping hidden entries), returning files sorted
/// by path.
fn walk(root: &Path) -> Result<Vec<PathBuf>, InspectError> {
    let hidden = |e: &walkdir::DirEntry| e.depth() > 0 && e.file_name().to_string_lossy().starts_with('.');
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| !hidden(e))
    {
        let entry = entry.map_err(|e| unreadable(e.path().unwrap_or(root), e.to_string()))?;
        if entry.file_type().is_file() {
            out.push(entry.into_path());
        }
    }
    out.sort();
    Ok(out)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn stem_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match shard_parts(&name) {
        Some((base, _, _)) => base.to_owned(),
        None => path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(name),
    }
}

/// The units a user path stands for: a file (with its shard set or split parts), a diffusers or
/// transformers folder (one unit), or a folder of loose files (one unit per model file or set).
pub fn units_for(path: &Path) -> Result<Vec<Unit>, InspectError> {
    let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
    if meta.is_file() {
        // Only weights by name here; their content is checked by format when inspected.
        if !is_weight(path) {
            return Err(InspectError::NotAModel {
                path: path.display().to_string(),
            });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let siblings: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| unreadable(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        return Ok(vec![file_unit(path, &siblings)?]);
    }
    let is_folder_model = path.join("model_index.json").is_file() || path.join("config.json").is_file();
    let files = walk(path)?;
    if is_folder_model {
        if !files.iter().any(|f| is_weight(f)) {
            return Err(InspectError::NoModelFiles {
                path: path.display().to_string(),
            });
        }
        // A folder's own metadata.json (or other library name) is kept under an escaped name.
        let files = files
            .iter()
            .map(|f| file_entry(f, crate::metadata::stored_path(&relative(path, f))))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(vec![Unit {
            // A folder's name is its name: "Qwen2.5-0.5B" has no extension to strip.
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            origin: path.to_owned(),
            files,
            side_files: Vec::new(),
        }]);
    }
    // Loose files: one unit per weight file or set, grouped by folder.
    let mut units: Vec<Unit> = Vec::new();
    let mut taken: std::collections::BTreeSet<PathBuf> = Default::default();
    for file in files.iter().filter(|f| is_weight(f)) {
        if taken.contains(file) {
            continue;
        }
        let dir = file.parent().unwrap_or(path);
        let siblings: Vec<PathBuf> = files
            .iter()
            .filter(|f| f.parent() == Some(dir))
            .cloned()
            .collect();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        // An mmproj belongs to the GGUF beside it, if there is one.
        if name.contains("mmproj") && siblings.iter().any(|s| is_main_gguf(s)) {
            continue;
        }
        let unit = file_unit(file, &siblings)?;
        for f in &unit.files {
            taken.insert(f.source.clone());
        }
        units.push(unit);
    }
    if units.is_empty() {
        return Err(InspectError::NoModelFiles {
            path: path.display().to_string(),
        });
    }
    Ok(units)
}

fn is_main_gguf(path: &Path) -> bool {
    extension(path) == "gguf"
        && !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().contains("mmproj"))
}

/// A unit from one file: its whole shard set (and index) or split set, plus an mmproj beside a
/// lone GGUF.
fn file_unit(path: &Path, siblings: &[PathBuf]) -> Result<Unit, InspectError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let ext = extension(path);
    let mut files = Vec::new();
    if let Some((base, part, total)) = shard_parts(&file_name) {
        for i in 1..=total {
            let name = format!("{base}-{i:05}-of-{total:05}.{ext}");
            let shard = dir.join(&name);
            if !shard.is_file() {
                return Err(InspectError::IncompleteSet {
                    path: path.display().to_string(),
                    part,
                    total,
                    missing: name,
                });
            }
            files.push(file_entry(&shard, name)?);
        }
        let index = dir.join(format!("{base}.{ext}.index.json"));
        if index.is_file() {
            files.push(file_entry(&index, format!("{base}.{ext}.index.json"))?);
        }
    } else {
        files.push(file_entry(path, file_name.clone())?);
        if is_main_gguf(path) {
            let main_ggufs = siblings.iter().filter(|s| is_main_gguf(s)).count();
            if main_ggufs == 1 {
                for s in siblings
                    .iter()
                    .filter(|s| extension(s) == "gguf" && !is_main_gguf(s))
                {
                    let name = s
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    files.push(file_entry(s, name)?);
                }
            }
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    // Side files go by the file's own stem (`detail.safetensors` -> `detail.preview.png`), or a
    // set's base name.
    let stem = shard_parts(&file_name)
        .map(|(base, _, _)| base.to_owned())
        .unwrap_or_else(|| {
            file_name
                .rsplit_once('.')
                .map_or(file_name.clone(), |(s, _)| s.to_owned())
        });
    Ok(Unit {
        name: stem_name(path),
        origin: path.to_owned(),
        files,
        side_files: side_files(&stem, siblings),
    })
}

fn read_json(path: &Path) -> Option<Value> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_CONFIG {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Reads the headers and configs of a unit into facts for detection. Malformed headers are an
/// error: a file that claims to be safetensors or GGUF and is not must not enter the library.
pub fn facts_for(unit: &Unit) -> Result<Facts, InspectError> {
    let mut facts = Facts {
        name: unit.name.clone(),
        file_names: unit.files.iter().map(|f| f.relative.clone()).collect(),
        format: format::UNKNOWN,
        ..Facts::default()
    };
    let by_name: BTreeMap<&str, &UnitFile> = unit.files.iter().map(|f| (f.relative.as_str(), f)).collect();
    if let Some(f) = by_name.get("config.json") {
        facts.config = read_json(&f.source);
    }
    if let Some(f) = by_name.get("model_index.json") {
        facts.model_index = read_json(&f.source);
    }
    for f in &unit.files {
        if f.relative.contains('/')
            && f.relative.ends_with("config.json")
            && let Some(v) = read_json(&f.source)
        {
            facts.sub_configs.insert(f.relative.clone(), v);
        }
    }
    let mut merged: Option<safetensors::Header> = None;
    for f in &unit.files {
        let ext = extension(Path::new(&f.relative));
        match ext.as_str() {
            "safetensors" | "sft" => {
                // In a diffusers folder only the top-level weights describe the whole; component
                // weights are inspected through their configs.
                if facts.model_index.is_some() {
                    continue;
                }
                let file = File::open(&f.source).map_err(|e| unreadable(&f.source, e))?;
                let header = safetensors::parse(&mut BufReader::new(file), f.size).map_err(|reason| {
                    InspectError::Malformed {
                        path: f.source.display().to_string(),
                        format: "safetensors",
                        reason,
                    }
                })?;
                let m = merged.get_or_insert_with(Default::default);
                m.tensors.extend(header.tensors);
                m.metadata.extend(header.metadata);
            }
            "gguf" => {
                let file = File::open(&f.source).map_err(|e| unreadable(&f.source, e))?;
                let header =
                    gguf::parse(BufReader::new(file), f.size).map_err(|reason| InspectError::Malformed {
                        path: f.source.display().to_string(),
                        format: "GGUF",
                        reason,
                    })?;
                let is_projector = f.relative.to_ascii_lowercase().contains("mmproj");
                if !is_projector {
                    match &mut facts.gguf {
                        // Split GGUF: tensors of later parts add to the first part's header.
                        Some(first) => first.tensors.extend(header.tensors),
                        None => facts.gguf = Some(header),
                    }
                }
            }
            "onnx" => {
                // An ONNX ModelProto opens with its ir_version (field 1, a varint: tag 0x08).
                let mut first = [0u8; 1];
                let opened = File::open(&f.source).map_err(|e| unreadable(&f.source, e))?;
                let read = std::io::Read::read(&mut BufReader::new(opened), &mut first)
                    .map_err(|e| unreadable(&f.source, e))?;
                if read == 0 || first[0] != 0x08 {
                    return Err(InspectError::Malformed {
                        path: f.source.display().to_string(),
                        format: "ONNX",
                        reason: "it does not start with an ONNX model's ir_version field".to_owned(),
                    });
                }
            }
            ext if PICKLE_EXTENSIONS.contains(&ext) => {
                let file = File::open(&f.source).map_err(|e| unreadable(&f.source, e))?;
                pickle::check(BufReader::new(file), f.size, ext != "bin").map_err(|reason| {
                    InspectError::Malformed {
                        path: f.source.display().to_string(),
                        format: "PyTorch checkpoint",
                        reason,
                    }
                })?;
            }
            _ => {}
        }
    }
    if let Some(mut m) = merged {
        m.tensors.sort_by(|a, b| a.name.cmp(&b.name));
        facts.safetensors = Some(m);
    }
    let exts: Vec<String> = unit
        .files
        .iter()
        .map(|f| extension(Path::new(&f.relative)))
        .collect();
    facts.format = if facts.model_index.is_some() {
        format::DIFFUSERS
    } else if facts.config.is_some() && unit.files.len() > 1 {
        format::TRANSFORMERS
    } else if facts.gguf.is_some() {
        format::GGUF
    } else if facts.safetensors.is_some() {
        format::SAFETENSORS
    } else if exts.iter().any(|e| e == "onnx") {
        format::ONNX
    } else if exts.iter().any(|e| PICKLE_EXTENSIONS.contains(&e.as_str())) {
        format::PICKLE
    } else {
        format::UNKNOWN
    };
    Ok(facts)
}

/// Whether a unit holds pickle-based weights (and no safe ones).
pub fn is_unsafe(unit: &Unit) -> bool {
    let exts: Vec<String> = unit
        .files
        .iter()
        .map(|f| extension(Path::new(&f.relative)))
        .collect();
    let has_pickle = exts.iter().any(|e| PICKLE_EXTENSIONS.contains(&e.as_str()));
    let has_safe = exts
        .iter()
        .any(|e| matches!(e.as_str(), "safetensors" | "sft" | "gguf" | "onnx"));
    has_pickle && !has_safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(
            shard_parts("model-00001-of-00003.safetensors"),
            Some(("model", 1, 3))
        );
        assert_eq!(
            shard_parts("llama-7b-Q4_K_M-00002-of-00002.gguf"),
            Some(("llama-7b-Q4_K_M", 2, 2))
        );
        assert_eq!(shard_parts("model.safetensors"), None);
        assert_eq!(shard_parts("model-00004-of-00003.safetensors"), None);
    }
}
