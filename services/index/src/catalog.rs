//! The dependency catalog: profiles and autobinding rules shipped with the binary as data
//! (`services/index/catalog/`), overlaid by the user's own catalog folder
//! (`<data root>/catalog/`, same format). A model nobody bound gets the bindings of the first
//! rule it matches; they are derived on every read, never stored (not in metadata.json, not in
//! models.db), so a catalog upgrade rebinds every such model and a user binding replaces them
//! (docs/DEPENDENCIES.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::metadata::{Binding, Metadata};
use crate::profiles::{Profile, Requirement, Variant};

/// How the ids of catalog bindings begin (reserved: a user binding cannot take one).
pub const BINDING_PREFIX: &str = "catalog-";
/// `origin` of a profile that ships with the binary.
pub const BUILT_IN: &str = "built_in";
/// `origin` of a profile from the user's catalog folder.
pub const USER_CATALOG: &str = "user_catalog";

const BUILT_IN_BACKENDS: &str = include_str!("../catalog/backends.json");
const BUILT_IN_RULES: &str = include_str!("../catalog/autobind.json");
/// Every file of `catalog/profiles/` (a test checks that none is missing).
const BUILT_IN_PROFILES: &[(&str, &str)] = &[
    (
        "diffusers-flux.json",
        include_str!("../catalog/profiles/diffusers-flux.json"),
    ),
    (
        "diffusers-sd.json",
        include_str!("../catalog/profiles/diffusers-sd.json"),
    ),
    (
        "diffusers-sd3.json",
        include_str!("../catalog/profiles/diffusers-sd3.json"),
    ),
    (
        "llama-cpp.json",
        include_str!("../catalog/profiles/llama-cpp.json"),
    ),
    (
        "onnxruntime.json",
        include_str!("../catalog/profiles/onnxruntime.json"),
    ),
    (
        "sentence-transformers.json",
        include_str!("../catalog/profiles/sentence-transformers.json"),
    ),
    (
        "transformers-llm.json",
        include_str!("../catalog/profiles/transformers-llm.json"),
    ),
    (
        "transformers-whisper.json",
        include_str!("../catalog/profiles/transformers-whisper.json"),
    ),
];

/// What one backend installs on the platforms one selector names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendPlatform {
    platform_selector: String,
    #[serde(default)]
    index_url: String,
    /// Python package -> exact pin.
    #[serde(default)]
    packages: BTreeMap<String, String>,
    /// Runtime binaries (not pinned: the pin policy covers Python packages).
    #[serde(default)]
    binaries: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct BackendsFile {
    backends: BTreeMap<String, Vec<BackendPlatform>>,
}

/// A profile file: the stored form's fields, plus the short form (`backends` + `packages`)
/// that expands to one variant per backend platform.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    profile_id: String,
    version: String,
    #[serde(default = "python_venv")]
    environment_kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    backends: Vec<String>,
    #[serde(default)]
    packages: BTreeMap<String, String>,
    #[serde(default)]
    required_packages: Vec<String>,
    #[serde(default)]
    variants: Vec<Variant>,
}

fn python_venv() -> String {
    "python-venv".to_owned()
}

/// Which models a rule takes: every listed condition must hold; a condition holds when the
/// model's value is one of the listed ones (a trailing `*` matches any ending).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    #[serde(default)]
    model_type: Vec<String>,
    #[serde(default)]
    family: Vec<String>,
    #[serde(default)]
    format: Vec<String>,
    #[serde(default)]
    architecture: Vec<String>,
    /// Any of the model's tags (hub library and pipeline tags, e.g. `diffusers`).
    #[serde(default)]
    tags: Vec<String>,
}

/// An autobinding rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable rule id, shown on the bindings it attaches.
    pub rule_id: String,
    when: When,
    /// The profile it binds (its newest version in the catalog).
    pub profile_id: String,
}

#[derive(Debug, Deserialize)]
struct RulesFile {
    rules: Vec<Rule>,
}

/// The catalog in force: built-in and user profiles, and the rules in order.
#[derive(Debug, Default)]
pub struct Catalog {
    profiles: BTreeMap<(String, String), Profile>,
    rules: Vec<Rule>,
}

fn accepts(patterns: &[String], value: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => p == value,
        })
}

impl When {
    fn matches(&self, m: &Metadata) -> bool {
        accepts(&self.model_type, &m.model_type)
            && accepts(&self.family, &m.family)
            && accepts(&self.format, &m.format)
            && accepts(&self.architecture, &m.architecture)
            && (self.tags.is_empty() || m.tags.iter().any(|t| accepts(&self.tags, t)))
    }
}

/// A catalog file that could not be used, and why (logged; the rest of the catalog works).
#[derive(Debug)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// Why.
    pub message: String,
}

impl Catalog {
    /// The built-in catalog only.
    pub fn built_in() -> Self {
        Self::load(None).0
    }

    /// The built-in catalog overlaid by the user's folder (`backends.json`, `autobind.json`,
    /// `profiles/*.json`), with what could not be used. User backends replace built-in ones by
    /// key, user profiles replace built-in ones by id and version, user rules come first.
    pub fn load(user_dir: Option<&Path>) -> (Self, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut backends: BTreeMap<String, Vec<BackendPlatform>> =
            parse::<BackendsFile>("built-in backends.json", BUILT_IN_BACKENDS, &mut problems)
                .map(|b| b.backends)
                .unwrap_or_default();
        let mut files: Vec<(String, String, &'static str)> = BUILT_IN_PROFILES
            .iter()
            .map(|(name, text)| (format!("built-in profiles/{name}"), (*text).to_owned(), BUILT_IN))
            .collect();
        let mut rules = Vec::new();
        if let Some(dir) = user_dir {
            let file = dir.join("backends.json");
            if let Some(text) = read_optional(&file, &mut problems)
                && let Some(user) = parse::<BackendsFile>(&display(&file), &text, &mut problems)
            {
                backends.extend(user.backends);
            }
            let file = dir.join("autobind.json");
            if let Some(text) = read_optional(&file, &mut problems)
                && let Some(user) = parse::<RulesFile>(&display(&file), &text, &mut problems)
            {
                rules = user.rules;
            }
            let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("profiles"))
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "json"))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            for path in names {
                if let Some(text) = read_optional(&path, &mut problems) {
                    files.push((display(&path), text, USER_CATALOG));
                }
            }
        }
        // The user's rules first, then the built-in ones.
        if let Some(built_in) = parse::<RulesFile>("built-in autobind.json", BUILT_IN_RULES, &mut problems) {
            rules.extend(built_in.rules);
        }
        let mut profiles = BTreeMap::new();
        for (file, text, origin) in files {
            match parse_profile(&text, &backends, origin) {
                Ok(p) => {
                    profiles.insert((p.profile_id.clone(), p.version.clone()), p);
                }
                Err(message) => problems.push(Problem { file, message }),
            }
        }
        for rule in &rules {
            if !profiles.keys().any(|(id, _)| id == &rule.profile_id) {
                problems.push(Problem {
                    file: format!("autobind rule `{}`", rule.rule_id),
                    message: format!(
                        "binds profile `{}`, which the catalog does not have",
                        rule.profile_id
                    ),
                });
            }
        }
        (Self { profiles, rules }, problems)
    }

    /// One catalog profile version.
    pub fn profile(&self, id: &str, version: &str) -> Option<&Profile> {
        self.profiles.get(&(id.to_owned(), version.to_owned()))
    }

    /// Every catalog profile, sorted by id then version.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// The rules in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The newest catalog version of a profile.
    pub fn newest(&self, id: &str) -> Option<&Profile> {
        self.profiles
            .values()
            .filter(|p| p.profile_id == id)
            .max_by(|a, b| crate::profiles::natural(&a.version).cmp(&crate::profiles::natural(&b.version)))
    }

    /// The bindings a model has in effect: the user's own when it has any (or none at all when
    /// it declares it needs none), else those of the first rule it matches.
    pub fn effective_bindings(&self, m: &Metadata) -> Vec<Binding> {
        let own: Vec<Binding> = m
            .dependency_bindings
            .iter()
            .filter(|b| b.catalog_rule.is_empty())
            .cloned()
            .collect();
        if !own.is_empty() || m.declares_no_dependencies {
            return own;
        }
        let Some((rule, profile)) = self
            .rules
            .iter()
            .filter(|r| r.when.matches(m))
            .find_map(|r| self.newest(&r.profile_id).map(|p| (r, p)))
        else {
            return Vec::new();
        };
        let backends: BTreeSet<&str> = profile.variants.iter().map(|v| v.backend_key.as_str()).collect();
        backends
            .into_iter()
            .map(|backend| {
                // Stable across profile versions: a catalog upgrade keeps the binding's id.
                let key = format!("{}\n{}\n{}", m.id, profile.profile_id, backend);
                Binding {
                    binding_id: format!("{BINDING_PREFIX}{}", &blake3::hash(key.as_bytes()).to_hex()[..16]),
                    profile_id: profile.profile_id.clone(),
                    profile_version: profile.version.clone(),
                    backend_key: backend.to_owned(),
                    platform_selector: "*".to_owned(),
                    active: true,
                    catalog_rule: rule.rule_id.clone(),
                }
            })
            .collect()
    }
}

/// A profile file in either form (what `pumas profiles put` sends): the short form expanded
/// with the built-in backends, prepared as the index would store it.
pub fn parse_profile_file(text: &str) -> Result<Profile, String> {
    let backends = serde_json::from_str::<BackendsFile>(BUILT_IN_BACKENDS)
        .map(|b| b.backends)
        .map_err(|e| format!("built-in backends.json: {e}"))?;
    parse_profile(text, &backends, "")
}

/// A catalog file's JSON, or `None` with the problem noted.
fn parse<T: serde::de::DeserializeOwned>(file: &str, text: &str, problems: &mut Vec<Problem>) -> Option<T> {
    serde_json::from_str(text)
        .map_err(|e| {
            problems.push(Problem {
                file: file.to_owned(),
                message: e.to_string(),
            })
        })
        .ok()
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn read_optional(path: &Path, problems: &mut Vec<Problem>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            problems.push(Problem {
                file: display(path),
                message: e.to_string(),
            });
            None
        }
    }
}

/// A profile file expanded and prepared (sorted, validated, hashed) like a stored one.
fn parse_profile(
    text: &str,
    backends: &BTreeMap<String, Vec<BackendPlatform>>,
    origin: &str,
) -> Result<Profile, String> {
    let file: ProfileFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut variants = file.variants;
    for backend in &file.backends {
        let platforms = backends
            .get(backend)
            .ok_or_else(|| format!("backend `{backend}` is not in backends.json"))?;
        for platform in platforms {
            let mut requirements: Vec<Requirement> = platform
                .packages
                .iter()
                .map(|(name, pin)| python(name, pin, &platform.index_url))
                .collect();
            requirements.extend(file.packages.iter().map(|(name, pin)| python(name, pin, "")));
            requirements.extend(platform.binaries.iter().map(|name| Requirement {
                kind: "binary".to_owned(),
                name: name.clone(),
                source: "catalog".to_owned(),
                ..Default::default()
            }));
            variants.push(Variant {
                backend_key: backend.clone(),
                platform_selector: platform.platform_selector.clone(),
                requirements,
            });
        }
    }
    let mut profile = crate::profiles::prepare(Profile {
        profile_id: file.profile_id,
        version: file.version,
        environment_kind: file.environment_kind,
        description: file.description,
        variants,
        required_packages: file.required_packages,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    profile.origin = origin.to_owned();
    Ok(profile)
}

fn python(name: &str, pin: &str, index_url: &str) -> Requirement {
    Requirement {
        kind: "python_package".to_owned(),
        name: name.to_owned(),
        exact_pin: pin.to_owned(),
        index_url: index_url.to_owned(),
        source: "catalog".to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_file_is_embedded_valid_and_pinned() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog/profiles");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("catalog/profiles")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = BUILT_IN_PROFILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(
            on_disk, embedded,
            "list every catalog/profiles file in BUILT_IN_PROFILES"
        );
        let (catalog, problems) = Catalog::load(None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(catalog.profiles().count(), BUILT_IN_PROFILES.len());
        for p in catalog.profiles() {
            assert!(p.valid, "{}: {:?}", p.profile_id, p.issues);
            for v in &p.variants {
                for r in v.requirements.iter().filter(|r| r.kind == "python_package") {
                    assert!(
                        crate::profiles::valid_pin(&r.exact_pin),
                        "{} {}",
                        p.profile_id,
                        r.name
                    );
                }
                if v.backend_key.starts_with("torch-") {
                    assert!(
                        v.requirements.iter().any(|r| r.name == "torch"),
                        "{}",
                        p.profile_id
                    );
                }
            }
        }
        for rule in catalog.rules() {
            assert!(catalog.newest(&rule.profile_id).is_some(), "{}", rule.rule_id);
        }
    }

    fn model(model_type: &str, family: &str, format: &str) -> Metadata {
        let mut m = crate::synthetic::sample_metadata();
        m.id = format!("{model_type}/{family}/x");
        m.model_type = model_type.to_owned();
        m.family = family.to_owned();
        m.format = format.to_owned();
        m.dependency_bindings.clear();
        m.declares_no_dependencies = false;
        m
    }

    #[test]
    fn rules_bind_by_kind_and_a_user_binding_replaces_them() {
        let catalog = Catalog::built_in();
        let profile_of = |m: &Metadata| {
            let b = catalog.effective_bindings(m);
            b.first().map(|b| b.profile_id.clone()).unwrap_or_default()
        };
        assert_eq!(
            profile_of(&model("checkpoint", "sdxl", "safetensors")),
            "diffusers-sd"
        );
        assert_eq!(
            profile_of(&model("lora", "flux", "safetensors")),
            "diffusers-flux"
        );
        assert_eq!(profile_of(&model("llm", "llama", "gguf")), "llama-cpp");
        assert_eq!(
            profile_of(&model("llm", "qwen", "transformers")),
            "transformers-llm"
        );
        assert_eq!(
            profile_of(&model("text_embedding", "bert", "transformers")),
            "sentence-transformers"
        );
        assert_eq!(
            profile_of(&model("audio", "whisper", "transformers")),
            "transformers-whisper"
        );
        assert_eq!(profile_of(&model("checkpoint", "unknown", "safetensors")), "");
        let sdxl = model("checkpoint", "sdxl", "safetensors");
        let bound = catalog.effective_bindings(&sdxl);
        let backends: Vec<&str> = bound.iter().map(|b| b.backend_key.as_str()).collect();
        assert_eq!(backends, ["torch-cpu", "torch-cuda", "torch-mps", "torch-rocm"]);
        assert!(
            bound
                .iter()
                .all(|b| b.catalog_rule == "stable-diffusion" && b.active)
        );
        assert_eq!(catalog.effective_bindings(&sdxl), bound, "ids are stable");

        let mut own = sdxl.clone();
        own.dependency_bindings = bound.clone();
        own.dependency_bindings.push(Binding {
            binding_id: "mine".into(),
            profile_id: "my-profile".into(),
            profile_version: "1".into(),
            backend_key: "torch-cuda".into(),
            platform_selector: "*".into(),
            active: true,
            catalog_rule: String::new(),
        });
        let kept = catalog.effective_bindings(&own);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].binding_id, "mine");
        let mut none = sdxl;
        none.declares_no_dependencies = true;
        assert!(catalog.effective_bindings(&none).is_empty());
    }

    #[test]
    fn a_user_catalog_overrides_by_id_and_version_and_its_rules_come_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("profiles")).expect("mkdir");
        std::fs::write(
            dir.path().join("profiles/mine.json"),
            r#"{"profile_id": "llama-cpp", "version": "1", "backends": ["llama-cpp"],
                "packages": {"numpy": "==2.3.5"}}"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join("autobind.json"),
            r#"{"rules": [{"rule_id": "all-checkpoints-gguf", "when": {"model_type": ["checkpoint"]},
                "profile_id": "llama-cpp"}]}"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("profiles/broken.json"), "{ not json").expect("write");
        let (catalog, problems) = Catalog::load(Some(dir.path()));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].file.ends_with("broken.json"));
        let p = catalog.profile("llama-cpp", "1").expect("overridden");
        assert_eq!(p.origin, USER_CATALOG);
        assert!(p.variants[0].requirements.iter().any(|r| r.name == "numpy"));
        let b = catalog.effective_bindings(&model("checkpoint", "sdxl", "safetensors"));
        assert_eq!(b[0].catalog_rule, "all-checkpoints-gguf");
    }
}
