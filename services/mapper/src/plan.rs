//! Planning: which links an app should have (from its rules and the library's models), compared
//! with what the registry says the mapper made and what is on disk. Pure reads; `apply` acts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use crate::links::Want;
use crate::links::{self, OnDisk};
use crate::mapping::{MappingConfig, Rule, Strategy};
use crate::presets::Layout;
use crate::registry::LinkRow;

/// A library model, as the mapper needs it.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub id: String,
    pub display_name: String,
    pub model_type: String,
    pub family: String,
    pub format: String,
    pub state: String,
    pub tags: Vec<String>,
    /// (path in the model dir, sha256 "sha256:<hex>").
    pub files: Vec<(String, String)>,
    /// `org/name` for hub downloads.
    pub repo_id: String,
    pub commit: String,
    /// Side files kept with the model: (role, path in the model dir).
    pub side_files: Vec<(String, String)>,
}

impl Model {
    pub(crate) fn slug(&self) -> &str {
        self.id.rsplit('/').next().unwrap_or(&self.id)
    }

    fn is_folder_model(&self) -> bool {
        matches!(self.format.as_str(), "diffusers" | "transformers")
            || self.files.iter().any(|(p, _)| p.contains('/'))
    }
}

/// One desired entry.
#[derive(Clone, Debug)]
pub struct Desired {
    pub target: PathBuf,
    pub model_id: String,
    pub want: Want,
}

/// What to do with one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActionKind {
    Create,
    Replace,
    Remove,
    Keep,
    Conflict,
}

/// One planned change.
#[derive(Clone, Debug)]
pub struct Action {
    pub kind: ActionKind,
    pub model_id: String,
    pub target: PathBuf,
    pub want: Option<Want>,
    /// The registry row, for Remove/Replace.
    pub recorded: Option<LinkRow>,
    pub strategy: Strategy,
    pub reason: String,
}

/// Something the app would not see, or should know.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    pub code: String,
    pub model_id: String,
    pub path: String,
    pub message: String,
}

/// A plan.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// Actions of a kind.
    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }
}

pub(crate) fn rule_for<'a>(config: &'a MappingConfig, m: &Model) -> Option<&'a Rule> {
    config.rules.iter().find(|r| {
        r.model_type == m.model_type
            && r.family.as_ref().is_none_or(|f| *f == m.family)
            && (r.formats.is_empty() || r.formats.contains(&m.format))
            && r.tag.as_ref().is_none_or(|t| m.tags.contains(t))
    })
}

fn expand(template: &str, m: &Model, file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let (stem, ext) = match base.rfind('.') {
        Some(i) if i > 0 => (&base[..i], &base[i..]),
        _ => (base, ""),
    };
    let (publisher, repo) = match m.repo_id.split_once('/') {
        Some((p, r)) => (p.to_owned(), r.to_owned()),
        None => (m.family.clone(), m.slug().to_owned()),
    };
    let name: String = m
        .display_name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c == '\0' {
                '-'
            } else {
                c
            }
        })
        .collect();
    template
        .replace("{slug}", m.slug())
        .replace("{name}", &name)
        .replace("{file}", base)
        .replace("{stem}", stem)
        .replace("{ext}", ext)
        .replace("{path}", file)
        .replace("{type}", &m.model_type)
        .replace("{family}", &m.family)
        .replace("{publisher}", &publisher)
        .replace("{repo}", &repo)
}

fn join(root: &Path, folder: &str, name: &str) -> PathBuf {
    let mut p = root.to_owned();
    for part in folder
        .split('/')
        .chain(name.split('/'))
        .filter(|s| !s.is_empty() && *s != ".")
    {
        p.push(part);
    }
    p
}

/// The entries an app should have for `models`.
pub fn desired<'a>(
    config: &MappingConfig,
    mount: &Path,
    models: impl IntoIterator<Item = &'a Model>,
    warnings: &mut Vec<Warning>,
) -> Vec<Desired> {
    let mut out = Vec::new();
    let models: Vec<&Model> = models.into_iter().collect();
    if config.strategy == Strategy::ConfigFile {
        out.push(Desired {
            target: config.root.join("extra_model_paths.yaml"),
            model_id: String::new(),
            want: Want::File {
                content: links::comfy_extra_paths(config, mount, &models),
            },
        });
        return out;
    }
    for m in models {
        let Some(rule) = rule_for(config, m) else { continue };
        if m.state != "ready" {
            warnings.push(Warning {
                code: "not_ready".to_owned(),
                model_id: m.id.clone(),
                path: String::new(),
                message: format!("{} is {}; it is linked once it is ready", m.id, m.state),
            });
            continue;
        }
        if m.model_type == "diffusion_model"
            && config.preset.checkpoint_folders.contains(&rule.folder.as_str())
        {
            warnings.push(Warning {
                code: "diffusion_model_in_checkpoints".to_owned(),
                model_id: m.id.clone(),
                path: rule.folder.clone(),
                message: format!(
                    "{} is a diffusion model only (no VAE or text encoder); {} loads full checkpoints from {}, so it will fail to load there",
                    m.id, config.preset.display_name, rule.folder
                ),
            });
        }
        let model_dir = mount.join(&m.id);
        match config.layout() {
            Layout::HfCache => {
                if m.repo_id.is_empty() || m.commit.is_empty() {
                    continue;
                }
                let repo_dir = config
                    .root
                    .join(format!("models--{}", m.repo_id.replace('/', "--")));
                for (path, sha) in &m.files {
                    let Some(hex) = sha.strip_prefix("sha256:") else {
                        continue;
                    };
                    out.push(Desired {
                        target: repo_dir.join("blobs").join(hex),
                        model_id: m.id.clone(),
                        want: Want::Link {
                            source: model_dir.join(path),
                        },
                    });
                    let depth = path.matches('/').count() + 2;
                    let mut text = PathBuf::new();
                    for _ in 0..depth {
                        text.push("..");
                    }
                    text.push("blobs");
                    text.push(hex);
                    out.push(Desired {
                        target: join(&repo_dir.join("snapshots").join(&m.commit), "", path),
                        model_id: m.id.clone(),
                        want: Want::Symlink { text },
                    });
                }
                out.push(Desired {
                    target: repo_dir.join("refs").join("main"),
                    model_id: m.id.clone(),
                    want: Want::File {
                        content: m.commit.clone(),
                    },
                });
            }
            // An API app is kept in step by its own client (engine::api_app), not by links.
            Layout::Api => {}
            Layout::Folders | Layout::LmStudio => {
                let default = match config.layout() {
                    Layout::LmStudio => "{publisher}/{repo}/{file}",
                    _ if m.is_folder_model() => "{slug}/{path}",
                    _ => "{file}",
                };
                let template = rule.name.as_deref().unwrap_or(default);
                for (path, _) in &m.files {
                    let name = expand(template, m, path);
                    if crate::mapping::unsafe_relative(&name).is_some()
                        || name.split('/').any(|s| s.is_empty())
                    {
                        warnings.push(Warning {
                            code: "unsafe_name".to_owned(),
                            model_id: m.id.clone(),
                            path: name.clone(),
                            message: format!(
                                "`{name}` is not a safe path inside the app root; {} skipped",
                                m.id
                            ),
                        });
                        continue;
                    }
                    let target = join(&config.root, &rule.folder, &name);
                    if !rule.extensions.is_empty() {
                        let lower = name.to_ascii_lowercase();
                        if !rule.extensions.iter().any(|e| lower.ends_with(e.as_str()))
                            && !m.is_folder_model()
                        {
                            warnings.push(Warning {
                                code: "extension_not_loaded".to_owned(),
                                model_id: m.id.clone(),
                                path: target.display().to_string(),
                                message: format!(
                                    "{} does not load `{}` files from {} (it loads {})",
                                    config.preset.display_name,
                                    lower.rsplit('.').next().unwrap_or(""),
                                    if rule.folder.is_empty() {
                                        "its root"
                                    } else {
                                        &rule.folder
                                    },
                                    rule.extensions.join(" ")
                                ),
                            });
                        }
                    }
                    if config.layout() == Layout::LmStudio {
                        let depth = Path::new(&name).components().count();
                        if depth != 3 {
                            warnings.push(Warning {
                                code: "wrong_depth".to_owned(),
                                model_id: m.id.clone(),
                                path: target.display().to_string(),
                                message: "LM Studio only sees files at exactly <publisher>/<repo>/<file>"
                                    .to_owned(),
                            });
                        }
                    }
                    if m.files.len() == 1 {
                        out.extend(side_links(config.preset.kind, m, &model_dir, &target));
                    }
                    out.push(Desired {
                        target,
                        model_id: m.id.clone(),
                        want: Want::Link {
                            source: model_dir.join(path),
                        },
                    });
                }
            }
        }
    }
    out
}

/// A single-file model's side files where the app looks for them, beside the weights' link at
/// `weights`: `<stem>.preview.<ext>` (A1111, Forge, SD.Next and ComfyUI's model browsers), and
/// for the A1111 family `<stem>.civitai.info` (Civitai Helper) and `<stem>.json` (the built-in
/// user metadata: description, activation text).
fn side_links(kind: &str, m: &Model, model_dir: &Path, weights: &Path) -> Vec<Desired> {
    let a1111_family = matches!(kind, "a1111" | "forge" | "sdnext");
    if !a1111_family && kind != "comfyui" {
        return Vec::new();
    }
    let Some(stem) = weights.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = weights.parent().unwrap_or(Path::new(""));
    m.side_files
        .iter()
        .filter_map(|(role, path)| {
            let name = match role.as_str() {
                "preview" => {
                    let ext = path.rsplit('.').next().unwrap_or("png").to_ascii_lowercase();
                    format!("{stem}.preview.{ext}")
                }
                "civitai_info" if a1111_family => format!("{stem}.civitai.info"),
                "user_metadata" if a1111_family => format!("{stem}.json"),
                _ => return None,
            };
            Some(Desired {
                target: dir.join(name),
                model_id: m.id.clone(),
                want: Want::Link {
                    source: model_dir.join(path),
                },
            })
        })
        .collect()
}

/// Warnings about the app tree itself: legacy folder names and case mismatches.
pub fn tree_warnings(config: &MappingConfig) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for rule in &config.rules {
        for legacy in &rule.legacy {
            let dir = config.root.join(legacy);
            if dir.is_dir() && seen.insert(legacy.clone()) {
                out.push(Warning {
                    code: "legacy_folder".to_owned(),
                    model_id: String::new(),
                    path: dir.display().to_string(),
                    message: format!(
                        "{} still has the legacy folder {legacy}; current versions read {}, where Pumas links",
                        config.preset.display_name, rule.folder
                    ),
                });
            }
        }
        if rule.folder.is_empty() || config.root.join(&rule.folder).exists() {
            continue;
        }
        let folder = Path::new(&rule.folder);
        if let (Some(parent), Some(name)) = (folder.parent(), folder.file_name()) {
            let name = name.to_string_lossy().to_lowercase();
            if let Ok(entries) = std::fs::read_dir(config.root.join(parent)) {
                for e in entries.flatten() {
                    let other = e.file_name().to_string_lossy().into_owned();
                    if other.to_lowercase() == name && seen.insert(other.clone()) {
                        out.push(Warning {
                            code: "case_mismatch".to_owned(),
                            model_id: String::new(),
                            path: e.path().display().to_string(),
                            message: format!(
                                "the app reads {} (case matters), but the tree has {}; links go to {}",
                                rule.folder,
                                e.path().display(),
                                rule.folder
                            ),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Compares desired entries with the registry and the disk. With `scope`, only those models
/// (and the registry rows of those models) are considered.
pub fn plan(
    config: &MappingConfig,
    mount: &Path,
    models: &[Model],
    recorded: &[LinkRow],
    scope: Option<&HashSet<String>>,
) -> Plan {
    links::with_dir_cache(|| plan_uncached(config, mount, models, recorded, scope))
}

fn plan_uncached(
    config: &MappingConfig,
    mount: &Path,
    models: &[Model],
    recorded: &[LinkRow],
    scope: Option<&HashSet<String>>,
) -> Plan {
    let mut warnings = tree_warnings(config);
    let in_scope = |id: &str| scope.is_none_or(|s| s.contains(id));
    let models: Vec<&Model> = models.iter().filter(|m| in_scope(&m.id)).collect();
    let wanted = desired(config, mount, models.iter().copied(), &mut warnings);
    let strategy = links::effective_strategy(config, mount);
    let by_target: HashMap<&str, &LinkRow> = recorded
        .iter()
        .filter(|r| in_scope(&r.model_id) || r.model_id.is_empty())
        .map(|r| (r.target.as_str(), r))
        .collect();
    let mut actions = Vec::new();
    // Byte-wise keys: comparing paths component by component is slow at 30,000 links.
    let mut seen: HashSet<std::ffi::OsString> = HashSet::with_capacity(by_target.len() + 1024);
    for d in wanted {
        if !seen.insert(d.target.as_os_str().to_owned()) {
            actions.push(Action {
                kind: ActionKind::Conflict,
                model_id: d.model_id,
                target: d.target,
                want: Some(d.want),
                recorded: None,
                strategy,
                reason: "another model maps to the same path".to_owned(),
            });
            continue;
        }
        let recorded_row = match d.target.to_str() {
            Some(key) => by_target.get(key).copied().cloned(),
            None => by_target
                .get(d.target.display().to_string().as_str())
                .copied()
                .cloned(),
        };
        let made_as = recorded_row
            .as_ref()
            .map(|r| Strategy::from_name(&r.strategy))
            .unwrap_or(strategy);
        let on_disk = links::inspect(&config.root, &d.target, &d.want, made_as);
        let (kind, reason) = match (&recorded_row, on_disk) {
            (_, Err(why)) => (ActionKind::Conflict, why),
            (Some(row), Ok(OnDisk::Matches)) if same_want(row, &d.want) => (ActionKind::Keep, String::new()),
            (Some(_), Ok(OnDisk::Missing)) => (ActionKind::Create, "the link was removed by hand".to_owned()),
            (Some(_), Ok(OnDisk::Matches | OnDisk::Ours)) => {
                (ActionKind::Replace, "the library file changed".to_owned())
            }
            (Some(_), Ok(OnDisk::Broken)) => (ActionKind::Replace, "the link is broken".to_owned()),
            (Some(_), Ok(OnDisk::Foreign)) => (
                ActionKind::Conflict,
                "a file that Pumas did not make replaced its link".to_owned(),
            ),
            (None, Ok(OnDisk::Missing)) => (ActionKind::Create, String::new()),
            // A copy can only be told from the user's own file of the same size by reading
            // both: whatever it is, Pumas did not make it here (no record), so it is not
            // claimed, and unmap will never delete it.
            (None, Ok(OnDisk::Matches))
                if matches!(d.want, Want::Link { .. }) && matches!(made_as, Strategy::Copy | Strategy::Reflink) =>
            {
                (
                    ActionKind::Conflict,
                    "a file Pumas did not make is in the way (it has the library file's size, but only a copy Pumas records is its own)".to_owned(),
                )
            }
            // Already exactly what we would make, provably (the same inode, or a symlink to the
            // library file), e.g. an apply interrupted before recording.
            (None, Ok(OnDisk::Matches)) => (ActionKind::Keep, String::new()),
            // The app's own config file: Pumas only rewrites its section in it.
            (None, Ok(OnDisk::Ours)) if matches!(d.want, Want::File { .. }) && d.model_id.is_empty() => {
                (ActionKind::Replace, "adds the pumas section".to_owned())
            }
            (None, _) => (
                ActionKind::Conflict,
                "a file Pumas did not make is in the way".to_owned(),
            ),
        };
        actions.push(Action {
            kind,
            strategy: if matches!(d.want, Want::Link { .. }) {
                strategy
            } else {
                Strategy::Symlink
            },
            model_id: d.model_id,
            target: d.target,
            want: Some(d.want),
            recorded: recorded_row,
            reason,
        });
    }
    let present: HashSet<&str> = models.iter().map(|m| m.id.as_str()).collect();
    for row in by_target.values() {
        let target = PathBuf::from(&row.target);
        if seen.contains(target.as_os_str()) {
            continue;
        }
        actions.push(Action {
            kind: ActionKind::Remove,
            model_id: row.model_id.clone(),
            target,
            want: None,
            recorded: Some((*row).clone()),
            strategy: Strategy::from_name(&row.strategy),
            reason: if row.model_id.is_empty() || present.contains(row.model_id.as_str()) {
                "no rule maps it here any more".to_owned()
            } else {
                "the model left the library".to_owned()
            },
        });
    }
    actions.sort_by(|a, b| a.target.as_os_str().cmp(b.target.as_os_str()));
    warnings.sort();
    warnings.dedup();
    Plan { actions, warnings }
}

/// Whether a registry row records the same source as a wanted entry.
fn same_want(row: &LinkRow, want: &Want) -> bool {
    match want {
        Want::Link { source } => Path::new(&row.source) == source,
        Want::Symlink { text } => Path::new(&row.source) == text,
        Want::File { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping;
    use crate::presets;
    use std::collections::BTreeMap;

    fn model(model_type: &str, format: &str) -> Model {
        let files = match format {
            "diffusers" => vec![
                ("model_index.json".to_owned(), "sha256:aa".to_owned()),
                (
                    "unet/diffusion_pytorch_model.safetensors".to_owned(),
                    "sha256:bb".to_owned(),
                ),
            ],
            "gguf" => vec![("tiny-Q4_K_M.gguf".to_owned(), "sha256:cc".to_owned())],
            _ => vec![("weights.safetensors".to_owned(), "sha256:dd".to_owned())],
        };
        Model {
            id: format!("{model_type}/fam/some-model"),
            display_name: "Some Model".to_owned(),
            model_type: model_type.to_owned(),
            family: "fam".to_owned(),
            format: format.to_owned(),
            state: "ready".to_owned(),
            tags: Vec::new(),
            files,
            repo_id: "org/some-model".to_owned(),
            commit: "c0ffee".to_owned(),
            side_files: Vec::new(),
        }
    }

    #[test]
    fn previews_and_side_files_go_where_each_app_reads_them() {
        let mut lora = model("lora", "safetensors");
        lora.side_files = vec![
            ("preview".to_owned(), ".pumas-preview.jpg".to_owned()),
            ("civitai_info".to_owned(), ".pumas-civitai.info".to_owned()),
            ("user_metadata".to_owned(), ".pumas-user-metadata.json".to_owned()),
        ];
        let targets = |kind: &str| {
            let text = format!("kind = \"{kind}\"\nroot = \"/apps/x\"\nstrategy = \"symlink\"\n");
            let config = mapping::parse("x", &text).expect("config");
            let mut warnings = Vec::new();
            let mut out: Vec<(String, String)> = desired(
                &config,
                Path::new("/lib"),
                std::slice::from_ref(&lora),
                &mut warnings,
            )
            .into_iter()
            .map(|d| {
                let source = match d.want {
                    Want::Link { source } => source.display().to_string(),
                    _ => String::new(),
                };
                (d.target.display().to_string(), source)
            })
            .collect();
            out.sort();
            out
        };
        let lib = "/lib/lora/fam/some-model";
        assert_eq!(
            targets("a1111"),
            vec![
                (
                    "/apps/x/models/Lora/weights.civitai.info".to_owned(),
                    format!("{lib}/.pumas-civitai.info")
                ),
                (
                    "/apps/x/models/Lora/weights.json".to_owned(),
                    format!("{lib}/.pumas-user-metadata.json")
                ),
                (
                    "/apps/x/models/Lora/weights.preview.jpg".to_owned(),
                    format!("{lib}/.pumas-preview.jpg")
                ),
                (
                    "/apps/x/models/Lora/weights.safetensors".to_owned(),
                    format!("{lib}/weights.safetensors")
                ),
            ]
        );
        assert_eq!(
            targets("comfyui"),
            vec![
                (
                    "/apps/x/models/loras/weights.preview.jpg".to_owned(),
                    format!("{lib}/.pumas-preview.jpg")
                ),
                (
                    "/apps/x/models/loras/weights.safetensors".to_owned(),
                    format!("{lib}/weights.safetensors")
                ),
            ]
        );
        // An app that shows no previews gets the weights only.
        assert_eq!(targets("fooocus").len(), 1);
    }

    #[test]
    fn every_preset_puts_every_type_where_the_app_looks() {
        // An API app has no folders to check (its own test drives a stand-in of its API).
        for preset in presets::all().into_iter().filter(|p| p.layout != Layout::Api) {
            let text = format!(
                "kind = \"{}\"\nroot = \"/apps/x\"\nstrategy = \"symlink\"\n",
                preset.kind
            );
            let config = mapping::parse("x", &text).expect("preset config");
            for folder in &preset.folders {
                let format = folder.formats.first().copied().unwrap_or("safetensors");
                let format = if folder.extensions == [".gguf"] {
                    "gguf"
                } else {
                    format
                };
                let m = model(folder.model_type, format);
                let mut warnings = Vec::new();
                let wanted = desired(
                    &config,
                    Path::new("/lib"),
                    std::slice::from_ref(&m),
                    &mut warnings,
                );
                assert!(
                    !wanted.is_empty(),
                    "{}: {} ({format}) maps nowhere",
                    preset.kind,
                    folder.model_type
                );
                let expected = match preset.layout {
                    Layout::Folders => Path::new("/apps/x").join(folder.folder),
                    Layout::LmStudio => PathBuf::from("/apps/x/org/some-model"),
                    Layout::HfCache => PathBuf::from("/apps/x/models--org--some-model"),
                    Layout::Api => unreachable!("filtered out above"),
                };
                for d in &wanted {
                    assert!(
                        d.target.starts_with(&expected),
                        "{}: {} went to {} instead of under {}",
                        preset.kind,
                        folder.model_type,
                        d.target.display(),
                        expected.display()
                    );
                }
                // The first folder for a type wins: a later one for the same type with other
                // formats is reached only by those formats.
                if let Some(first) = preset.folders.iter().find(|f| {
                    f.model_type == folder.model_type && (f.formats.is_empty() || f.formats.contains(&format))
                }) {
                    assert_eq!(
                        first.folder, folder.folder,
                        "{}: {}",
                        preset.kind, folder.model_type
                    );
                }
            }
        }
    }

    #[test]
    fn hf_cache_snapshots_point_at_blobs_and_refs_name_the_commit() {
        let config = mapping::parse("hf", "kind = \"hf-cache\"\nroot = \"/cache\"\n").expect("config");
        let mut warnings = Vec::new();
        let wanted = desired(
            &config,
            Path::new("/lib"),
            &[model("checkpoint", "diffusers")],
            &mut warnings,
        );
        let by_target: BTreeMap<String, Want> = wanted
            .into_iter()
            .map(|d| (d.target.display().to_string(), d.want))
            .collect();
        assert_eq!(
            by_target["/cache/models--org--some-model/snapshots/c0ffee/unet/diffusion_pytorch_model.safetensors"],
            Want::Symlink {
                text: PathBuf::from("../../../blobs/bb")
            }
        );
        assert_eq!(
            by_target["/cache/models--org--some-model/blobs/bb"],
            Want::Link {
                source: PathBuf::from(
                    "/lib/checkpoint/fam/some-model/unet/diffusion_pytorch_model.safetensors"
                )
            }
        );
        assert_eq!(
            by_target["/cache/models--org--some-model/refs/main"],
            Want::File {
                content: "c0ffee".to_owned()
            }
        );
    }

    #[test]
    fn apps_are_told_what_they_would_not_see() {
        let config = mapping::parse(
            "c",
            "kind = \"comfyui\"\nroot = \"/c\"\n[[rules]]\ntype = \"diffusion_model\"\nfolder = \"models/checkpoints\"\nextensions = [\"safetensors\"]\n",
        )
        .expect("config");
        let mut warnings = Vec::new();
        let mut m = model("diffusion_model", "safetensors");
        m.files[0].0 = "weights.onnx".to_owned();
        desired(&config, Path::new("/lib"), &[m], &mut warnings);
        let codes: Vec<&str> = warnings.iter().map(|w| w.code.as_str()).collect();
        assert!(codes.contains(&"diffusion_model_in_checkpoints"), "{codes:?}");
        assert!(codes.contains(&"extension_not_loaded"), "{codes:?}");
        let mut downloading = model("lora", "safetensors");
        downloading.state = "downloading".to_owned();
        let mut warnings = Vec::new();
        assert!(desired(&config, Path::new("/lib"), &[downloading], &mut warnings).is_empty());
        assert_eq!(warnings[0].code, "not_ready");
    }
}
