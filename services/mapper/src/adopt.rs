//! Adoption: an app's own model files join the library and are replaced by links, so an
//! existing ComfyUI or Forge install moves to Pumas in one step and identical files in two apps
//! become one. Files already in the library (same SHA-256) are not imported again.

use std::collections::{BTreeMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::mapping::MappingConfig;

/// Weight files worth adopting.
const WEIGHT_EXTENSIONS: &[&str] = &[
    ".safetensors",
    ".sft",
    ".ckpt",
    ".pt",
    ".pth",
    ".bin",
    ".gguf",
    ".onnx",
];

/// One app file that could join the library.
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    pub path: PathBuf,
    pub size: u64,
    /// `sha256:<hex>`.
    pub sha256: String,
    /// A library model with the same content, when there is one.
    pub existing_model_id: String,
    /// Other app files with the same content.
    pub duplicates: Vec<PathBuf>,
}

/// The app's own weight files under its rule folders: regular files only (never a symlink, never
/// an entry the mapper made), grouped by size and hashed.
pub fn scan(config: &MappingConfig, ours: &HashSet<String>) -> std::io::Result<Vec<Candidate>> {
    let mut folders: Vec<PathBuf> = Vec::new();
    for rule in &config.rules {
        for f in std::iter::once(&rule.folder).chain(rule.legacy.iter()) {
            let dir = config.root.join(f);
            if !folders.iter().any(|known| dir.starts_with(known)) {
                folders.retain(|known| !known.starts_with(&dir));
                folders.push(dir);
            }
        }
    }
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    for folder in folders {
        // Never through a symlink: a rule folder (or a folder above it in the app) that is one
        // could lead anywhere, and adoption deletes what it finds.
        let through_symlink = folder
            .ancestors()
            .take_while(|a| a.starts_with(&config.root) && *a != config.root.as_path())
            .any(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()));
        if through_symlink {
            continue;
        }
        let walk = walkdir::WalkDir::new(folder).follow_root_links(false);
        for entry in walk.into_iter().filter_map(Result::ok) {
            let path = entry.path();
            let name = path.to_string_lossy().to_ascii_lowercase();
            if entry.file_type().is_file()
                && !ours.contains(&path.display().to_string())
                && WEIGHT_EXTENSIONS.iter().any(|x| name.ends_with(x))
                && !name.ends_with(".pumas-aside")
                && let Ok(meta) = entry.metadata()
            {
                files.push((entry.into_path(), meta.len()));
            }
        }
    }
    files.sort();
    files.dedup();
    let mut out = Vec::with_capacity(files.len());
    for (path, size) in files {
        out.push(Candidate {
            sha256: sha256_of(&path)?,
            path,
            size,
            ..Default::default()
        });
    }
    let mut by_hash: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for c in &out {
        by_hash.entry(c.sha256.clone()).or_default().push(c.path.clone());
    }
    for c in &mut out {
        c.duplicates = by_hash[&c.sha256]
            .iter()
            .filter(|p| **p != c.path)
            .cloned()
            .collect();
    }
    Ok(out)
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

/// Bytes adoption frees: every file already in the library, and every extra copy of the rest.
pub fn reclaimable(candidates: &[Candidate]) -> u64 {
    let mut first_of_hash: HashSet<&str> = HashSet::new();
    candidates
        .iter()
        .map(|c| {
            if !c.existing_model_id.is_empty() || !first_of_hash.insert(c.sha256.as_str()) {
                c.size
            } else {
                0
            }
        })
        .sum()
}
