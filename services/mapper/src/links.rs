//! Making, checking and removing entries in app trees, safely: nothing outside the app root,
//! no following a symlink planted in the tree, no deleting a file the mapper did not make.

use std::cell::RefCell;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

pub use crate::apptree::AppTree;
use crate::mapping::{MappingConfig, Strategy};

/// What is at a target now, compared with what is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDisk {
    /// Nothing.
    Missing,
    /// Exactly what is wanted.
    Matches,
    /// A link or copy of the library, but not the wanted one.
    Ours,
    /// A symlink whose target is gone.
    Broken,
    /// Something else (a real file, a directory, a link elsewhere).
    Foreign,
}

/// The strategy `auto` resolves to for this app: hardlink on the library's filesystem, else
/// symlink. (Reflink probing needs an ioctl this crate does not make: `unsafe` is forbidden.)
pub fn effective_strategy(config: &MappingConfig, mount: &Path) -> Strategy {
    match config.strategy {
        Strategy::Auto => {
            let dev = |p: &Path| {
                p.ancestors()
                    .find_map(|a| std::fs::metadata(a).ok())
                    .map(|m| m.dev())
            };
            match (dev(mount), dev(&config.root)) {
                (Some(a), Some(b)) if a == b => Strategy::Hardlink,
                _ => Strategy::Symlink,
            }
        }
        other => other,
    }
}

/// What an entry of the app tree should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// A link to a library file, made with the app's strategy.
    Link { source: PathBuf },
    /// A symlink with exactly this text (HF cache snapshot entries).
    Symlink { text: PathBuf },
    /// A small file with this content (HF cache refs, ComfyUI's extra_model_paths.yaml).
    File { content: String },
}

/// The symlink text from `target` to `source`: relative when they share a root below `/` (so it
/// survives bind mounts of that root), absolute otherwise.
pub fn link_text(target: &Path, source: &Path) -> PathBuf {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let a: Vec<Component> = parent.components().collect();
    let b: Vec<Component> = source.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common < 2 {
        return source.to_owned();
    }
    let mut text = PathBuf::new();
    for _ in common..a.len() {
        text.push("..");
    }
    for c in &b[common..] {
        text.push(c.as_os_str());
    }
    text
}

/// What one plan or apply learned about folders of the app tree; see [`with_dir_cache`].
#[derive(Default)]
struct DirCache {
    /// Real directories all the way from the root (no symlink on the way).
    safe: HashSet<PathBuf>,
    /// Folders that do not exist, below a checked prefix: nothing in them to look at.
    missing: HashSet<PathBuf>,
}

thread_local! {
    static DIRS: RefCell<Option<DirCache>> = const { RefCell::new(None) };
}

/// Runs `f` with a cache of checked folders, so thousands of links in one folder cost one walk
/// up to the root instead of one each, and a folder that does not exist yet costs no look-up
/// per link. The cache lives only for this call.
pub fn with_dir_cache<T>(f: impl FnOnce() -> T) -> T {
    DIRS.with(|c| *c.borrow_mut() = Some(DirCache::default()));
    let result = f();
    DIRS.with(|c| *c.borrow_mut() = None);
    result
}

fn with_cache<T>(f: impl FnOnce(&mut DirCache) -> T) -> Option<T> {
    DIRS.with(|c| c.borrow_mut().as_mut().map(f))
}

fn dir_known(dir: &Path) -> bool {
    with_cache(|c| c.safe.contains(dir)).unwrap_or(false)
}

fn dir_missing(dir: &Path) -> bool {
    with_cache(|c| c.missing.contains(dir)).unwrap_or(false)
}

/// Folders were made: what was missing may exist now.
fn folders_made() {
    with_cache(|c| c.missing.clear());
}

/// Folders were removed: forget them (and what is below them) as safe.
fn folders_removed(top: &Path) {
    with_cache(|c| c.safe.retain(|d| !d.starts_with(top)));
}

/// Refuses a target whose existing ancestors below `root` include a symlink (one planted in the
/// app tree could lead anywhere), or that is not under `root` at all.
pub fn check_path(root: &Path, target: &Path) -> Result<(), String> {
    let relative = target
        .strip_prefix(root)
        .map_err(|_| format!("{} is outside the app root {}", target.display(), root.display()))?;
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("{} leaves the app root", target.display()));
    }
    if target.parent().is_some_and(|p| dir_known(p) || dir_missing(p)) {
        return Ok(());
    }
    let mut at = root.to_owned();
    let parts: Vec<_> = relative.components().collect();
    let mut complete = true;
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        at.push(c.as_os_str());
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symlink inside the app tree; Pumas does not follow it (it could lead outside the app root)",
                    at.display()
                ));
            }
            Ok(m) if !m.is_dir() => return Err(format!("{} is a file, not a folder", at.display())),
            Ok(_) => {}
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if let Some(parent) = target.parent() {
        let parent = parent.to_owned();
        with_cache(|c| {
            if complete {
                c.safe.insert(parent);
            } else {
                c.missing.insert(parent);
            }
        });
    }
    Ok(())
}

fn canonical(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// What is at `target` compared with `want` made as `strategy`; Err when the path is unsafe.
pub fn inspect(root: &Path, target: &Path, want: &Want, strategy: Strategy) -> Result<OnDisk, String> {
    check_path(root, target)?;
    if target.parent().is_some_and(dir_missing) {
        return Ok(OnDisk::Missing);
    }
    let Ok(meta) = std::fs::symlink_metadata(target) else {
        return Ok(OnDisk::Missing);
    };
    if meta.file_type().is_symlink() {
        let text = std::fs::read_link(target).unwrap_or_default();
        let resolved = || canonical(target);
        return Ok(match want {
            Want::Symlink { text: wanted } if &text == wanted => OnDisk::Matches,
            Want::Symlink { .. } if resolved().is_none() => OnDisk::Broken,
            Want::Symlink { .. } => OnDisk::Ours,
            // The text we would write: no need to resolve it.
            Want::Link { source } if text == link_text(target, source) || text == *source => {
                if strategy == Strategy::Symlink && std::fs::metadata(target).is_ok() {
                    OnDisk::Matches
                } else if std::fs::metadata(target).is_ok() {
                    OnDisk::Ours
                } else {
                    OnDisk::Broken
                }
            }
            Want::Link { source } => match resolved() {
                None => OnDisk::Broken,
                Some(r) if Some(&r) == canonical(source).as_ref() && strategy == Strategy::Symlink => {
                    OnDisk::Matches
                }
                Some(_) if text == link_text(target, source) || text == *source => OnDisk::Ours,
                Some(_) => OnDisk::Foreign,
            },
            Want::File { .. } => OnDisk::Foreign,
        });
    }
    if meta.is_dir() {
        return Ok(OnDisk::Foreign);
    }
    Ok(match want {
        Want::Link { source } => match std::fs::metadata(source) {
            Ok(src)
                if strategy == Strategy::Hardlink && src.ino() == meta.ino() && src.dev() == meta.dev() =>
            {
                OnDisk::Matches
            }
            Ok(src) if matches!(strategy, Strategy::Copy | Strategy::Reflink) && src.len() == meta.len() => {
                OnDisk::Matches
            }
            Ok(src) if src.ino() == meta.ino() && src.dev() == meta.dev() => OnDisk::Ours,
            _ => OnDisk::Foreign,
        },
        Want::File { content } => match std::fs::read_to_string(target) {
            Ok(text) if &text == content => OnDisk::Matches,
            _ => OnDisk::Ours,
        },
        Want::Symlink { .. } => OnDisk::Foreign,
    })
}

/// Whether [`make`] puts `want` over an existing entry by one rename (no removal first).
pub fn replaces_atomically(want: &Want, strategy: Strategy) -> bool {
    match want {
        Want::File { .. } => true,
        Want::Link { .. } => matches!(strategy, Strategy::Copy | Strategy::Reflink),
        Want::Symlink { .. } => false,
    }
}

/// Makes `want` at `target` through the app's [`AppTree`] (no symlink followed, checked at the
/// write itself). Returns the strategy actually used (hardlink falls back to symlink across
/// filesystems) and, for a copy, `sha256:<hex>` of what was written.
pub fn make(
    tree: &mut AppTree,
    target: &Path,
    want: &Want,
    strategy: Strategy,
) -> Result<(Strategy, String), String> {
    let link = |tree: &mut AppTree, source: &Path| {
        tree.symlink(target, &link_text(target, source))
            .map(|()| (Strategy::Symlink, String::new()))
    };
    let made = match want {
        Want::Symlink { text } => tree
            .symlink(target, text)
            .map(|()| (Strategy::Symlink, String::new())),
        Want::File { content } => tree
            .put(target, content.as_bytes())
            .map(|()| (Strategy::Copy, String::new())),
        Want::Link { source } => match strategy {
            Strategy::Hardlink => match tree.hard_link(target, source)? {
                true => Ok((Strategy::Hardlink, String::new())),
                false => link(tree, source),
            },
            // One rename of a temp file of ours, with the hash of what was written.
            Strategy::Copy | Strategy::Reflink => tree
                .copy(target, source, strategy == Strategy::Reflink)
                .map(|sha| (strategy, sha)),
            _ => link(tree, source),
        },
    };
    folders_made();
    made
}

/// Removes an entry the mapper made, then the folders it made that this leaves empty (never
/// `keep` or above).
pub fn remove(tree: &mut AppTree, target: &Path, keep: &[PathBuf]) -> Result<(), String> {
    let removed = tree.remove(target, keep);
    // Forget the folders that went (the highest one covers those below it).
    if let Some(gone) = target.ancestors().skip(1).take_while(|d| !d.exists()).last() {
        folders_removed(gone);
    }
    removed
}

const BEGIN: &str =
    "# BEGIN pumas: managed by Pumas and rewritten on every apply; edit your own sections, not this one";
const END: &str = "# END pumas";

/// Takes the `pumas` section out of a ComfyUI `extra_model_paths.yaml`, keeping the rest (and
/// removing the file when nothing else was in it).
pub fn strip_comfy_section(tree: &mut AppTree, path: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept = without_section(&text);
    if kept.trim().is_empty() {
        tree.remove(path, &[])
    } else {
        tree.put(path, kept.as_bytes())
    }
}

fn without_section(existing: &str) -> String {
    let mut kept = String::new();
    let mut inside = false;
    for line in existing.lines() {
        if line.starts_with("# BEGIN pumas") {
            inside = true;
            continue;
        }
        if line.starts_with(END) {
            inside = false;
            continue;
        }
        if !inside {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// ComfyUI's `extra_model_paths.yaml` with a `pumas` section pointing at the library's type
/// folders (ComfyUI scans them recursively), keeping every other section as it is.
///
/// A diffusers pipeline (`model_index.json` with `unet/`, `vae/`... inside) must not be seen by a
/// recursive scan for weights: ComfyUI would list each part as a checkpoint that fails to load.
/// So a type folder that holds pipelines is given as its family folders without them, and the
/// families that hold pipelines as their other models' folders one by one (ComfyUI reads a
/// multi-line value as one path per line). The pipelines' family folders go under `diffusers`,
/// where ComfyUI's diffusers loader looks for `model_index.json`.
pub fn comfy_extra_paths(config: &MappingConfig, mount: &Path, models: &[&crate::plan::Model]) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    let existing = std::fs::read_to_string(config.root.join("extra_model_paths.yaml")).unwrap_or_default();
    let kept = without_section(&existing);
    let mut tree: BTreeMap<&str, BTreeMap<&str, Family<'_>>> = BTreeMap::new();
    for m in models {
        let entry = tree
            .entry(&m.model_type)
            .or_default()
            .entry(&m.family)
            .or_default();
        if m.format == "diffusers" {
            entry.0.insert(m.slug());
        } else {
            entry.1.insert(m.slug());
        }
    }
    let mut section = format!("{BEGIN}\npumas:\n  base_path: {}\n", mount.display());
    let mut pipeline_families: BTreeSet<String> = BTreeSet::new();
    for (key, folder) in [
        ("checkpoints", "checkpoint"),
        ("diffusion_models", "diffusion_model"),
        ("loras", "lora"),
        ("vae", "vae"),
        ("text_encoders", "text_encoder"),
        ("clip_vision", "clip_vision"),
        ("controlnet", "controlnet"),
        ("embeddings", "embedding"),
        ("upscale_models", "upscaler"),
    ] {
        let families = tree.get(folder);
        if families.is_none_or(|fams| fams.values().all(|(pipelines, _)| pipelines.is_empty())) {
            section.push_str(&format!("  {key}: {folder}\n"));
            continue;
        }
        let mut paths: Vec<String> = Vec::new();
        for (family, (pipelines, others)) in families.into_iter().flatten() {
            if pipelines.is_empty() {
                paths.push(format!("{folder}/{family}"));
            } else {
                pipeline_families.insert(format!("{folder}/{family}"));
                paths.extend(others.iter().map(|slug| format!("{folder}/{family}/{slug}")));
            }
        }
        push_paths(&mut section, key, &paths);
    }
    let pipelines: Vec<String> = pipeline_families.into_iter().collect();
    push_paths(&mut section, "diffusers", &pipelines);
    section.push_str(END);
    section.push('\n');
    if kept.trim().is_empty() {
        section
    } else {
        format!("{}\n{section}", kept.trim_end())
    }
}

/// The slugs of one `<type>/<family>` folder: (diffusers pipelines, other models).
type Family<'a> = (
    std::collections::BTreeSet<&'a str>,
    std::collections::BTreeSet<&'a str>,
);

/// One key with several paths, as ComfyUI reads them (a block of lines); nothing for none.
fn push_paths(section: &mut String, key: &str, paths: &[String]) {
    match paths {
        [] => {}
        [one] => section.push_str(&format!("  {key}: {one}\n")),
        many => {
            section.push_str(&format!("  {key}: |\n"));
            for p in many {
                section.push_str(&format!("    {p}\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_relative_within_a_shared_root() {
        let t = link_text(
            Path::new("/srv/apps/comfy/models/loras/a.safetensors"),
            Path::new("/srv/pumas/models/lora/sdxl/a/a.safetensors"),
        );
        assert_eq!(
            t,
            PathBuf::from("../../../../pumas/models/lora/sdxl/a/a.safetensors")
        );
        let t = link_text(Path::new("/a/x/y"), Path::new("/b/z"));
        assert_eq!(t, PathBuf::from("/b/z"));
    }

    #[test]
    fn planted_symlinks_and_escapes_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("app");
        std::fs::create_dir_all(root.join("models")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("models/loras")).expect("plant");
        assert!(check_path(&root, &root.join("models/loras/x.safetensors")).is_err());
        assert!(check_path(&root, &root.join("models/../../x")).is_err());
        assert!(check_path(&root, &dir.path().join("elsewhere")).is_err());
        assert!(check_path(&root, &root.join("models/vae/x.safetensors")).is_ok());
    }
}

#[cfg(test)]
mod strategy_tests {
    use super::*;

    #[test]
    fn hardlinks_fall_back_to_symlinks_across_filesystems_and_copies_are_plain_files() {
        let disk = tempfile::tempdir().expect("tmp");
        let source = disk.path().join("lib/model.safetensors");
        std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
        std::fs::write(&source, b"weights").expect("write");
        let want = Want::Link {
            source: source.clone(),
        };

        let root = disk.path().join("app");
        let copy = root.join("models/copy.safetensors");
        let mut tree = AppTree::new(&root, Default::default());
        assert_eq!(
            make(&mut tree, &copy, &want, Strategy::Copy).map(|m| m.0),
            Ok(Strategy::Copy)
        );
        let meta = std::fs::symlink_metadata(&copy).expect("copy");
        assert!(meta.is_file() && meta.len() == 7);
        assert_eq!(inspect(&root, &copy, &want, Strategy::Copy), Ok(OnDisk::Matches));

        // /dev/shm is a tmpfs on Linux: another filesystem than the temp dir's.
        let shm = Path::new("/dev/shm");
        let other_fs = std::fs::metadata(shm)
            .ok()
            .zip(std::fs::metadata(disk.path()).ok())
            .is_some_and(|(a, b)| a.dev() != b.dev());
        if !other_fs {
            eprintln!("SKIPPED: no second filesystem (/dev/shm) to test the hardlink fallback");
            return;
        }
        let elsewhere = tempfile::tempdir_in(shm).expect("tmp in /dev/shm");
        let root = elsewhere.path().to_owned();
        let link = root.join("models/loras/model.safetensors");
        let mut tree = AppTree::new(&root, Default::default());
        assert_eq!(
            make(&mut tree, &link, &want, Strategy::Hardlink).map(|m| m.0),
            Ok(Strategy::Symlink)
        );
        assert_eq!(std::fs::read(&link).expect("through the link"), b"weights");
    }
}

#[cfg(test)]
mod dir_cache_tests {
    use super::*;

    #[test]
    fn the_folder_cache_follows_folders_made_and_removed_within_one_apply() {
        let disk = tempfile::tempdir().expect("tmp");
        let source = disk.path().join("lib/model.safetensors");
        std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
        std::fs::write(&source, b"weights").expect("write");
        let want = Want::Link { source };
        let root = disk.path().join("app");
        let target = root.join("models/loras/sub/model.safetensors");
        let sibling = root.join("models/loras/other.safetensors");
        let mut tree = AppTree::new(&root, Default::default());
        with_dir_cache(|| {
            // Nothing exists yet: both are missing, known without a look at each entry.
            assert_eq!(
                inspect(&root, &target, &want, Strategy::Symlink),
                Ok(OnDisk::Missing)
            );
            assert_eq!(
                inspect(&root, &sibling, &want, Strategy::Symlink),
                Ok(OnDisk::Missing)
            );
            // Making the first creates the sibling's folder too: it is looked at again.
            assert_eq!(
                make(&mut tree, &target, &want, Strategy::Symlink).map(|m| m.0),
                Ok(Strategy::Symlink)
            );
            std::os::unix::fs::symlink("elsewhere", &sibling).expect("a foreign link");
            assert_eq!(
                inspect(&root, &sibling, &want, Strategy::Symlink),
                Ok(OnDisk::Broken)
            );
            assert_eq!(
                inspect(&root, &target, &want, Strategy::Symlink),
                Ok(OnDisk::Matches)
            );
            // Removing the only link of a folder removes the folder; making it again recreates it
            // (a replace does exactly this).
            assert_eq!(remove(&mut tree, &target, std::slice::from_ref(&root)), Ok(()));
            assert!(!root.join("models/loras/sub").exists());
            assert_eq!(
                make(&mut tree, &target, &want, Strategy::Symlink).map(|m| m.0),
                Ok(Strategy::Symlink)
            );
            assert_eq!(std::fs::read(&target).expect("through the link"), b"weights");
        });
    }
}
