//! Dependency profiles: versioned, content-hashed sets of requirements per backend and platform,
//! stored as files under `<models>/.profiles/<profile_id>/<version>.json` (so models.db stays
//! derived). Validated on write: a profile with a bad pin or shape is stored as invalid, with its
//! reasons, so that resolution can report `invalid_profile` instead of failing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::catalog::Catalog;
use crate::error::IndexError;
use crate::slug::is_safe_segment;
use crate::vocabulary::valid_selector;
use pumas_proto::names::normalize_package_name as normalize_name;
use pumas_runtime::fsio::write_json_atomic;

/// Folder of profiles under the models root.
pub const PROFILES_DIR: &str = ".profiles";

/// One requirement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// `python_package`, `system` or `binary`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// `==<version>`; empty = unpinned.
    #[serde(default)]
    pub exact_pin: String,
    /// Index URL.
    #[serde(default)]
    pub index_url: String,
    /// Extra index URLs.
    #[serde(default)]
    pub extra_index_urls: Vec<String>,
    /// PEP 508 markers.
    #[serde(default)]
    pub markers: String,
    /// Python version requirement.
    #[serde(default)]
    pub python_requirement: String,
    /// Platform constraints.
    #[serde(default)]
    pub platform_constraints: Vec<String>,
    /// `sha256:<hex>` hashes.
    #[serde(default)]
    pub hashes: Vec<String>,
    /// Where it came from.
    #[serde(default)]
    pub source: String,
}

/// Requirements for one backend on matching platforms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Backend key.
    pub backend_key: String,
    /// Platform selector.
    pub platform_selector: String,
    /// Requirements, sorted by kind then name.
    pub requirements: Vec<Requirement>,
}

/// A validation problem (codes documented in docs/DEPENDENCIES.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// Stable code.
    pub code: String,
    /// Field path.
    pub field: String,
    /// Message.
    pub message: String,
}

/// A stored profile version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Id.
    pub profile_id: String,
    /// Version.
    pub version: String,
    /// `sha256:<hex>` over the canonical content.
    pub content_hash: String,
    /// Environment kind.
    pub environment_kind: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Variants, sorted by backend then selector.
    pub variants: Vec<Variant>,
    /// Valid on write.
    pub valid: bool,
    /// Why not.
    #[serde(default)]
    pub issues: Vec<Issue>,
    /// RFC 3339 time stored.
    pub create_time: String,
    /// Packages every variant must pin exactly (on top of the pin policy's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_packages: Vec<String>,
    /// Where it comes from: `built_in`, `user_catalog`, or empty (stored through the API).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

/// Whether `pin` is an exact PEP 440 pin `==<version>`.
pub fn valid_pin(pin: &str) -> bool {
    let Some(version) = pin.trim().strip_prefix("==") else {
        return false;
    };
    let version = version.trim();
    !version.is_empty()
        && version.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && !version.contains('*')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '-' | '_'))
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn valid_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://")) && !url.contains(char::is_whitespace)
}

/// Checks a profile's content, sorts it, and computes its content hash. Returns the profile with
/// `valid`/`issues` set; only an unusable id or version is an error (nothing can be stored).
pub fn prepare(mut profile: Profile) -> Result<Profile, IndexError> {
    if !is_safe_segment(&profile.profile_id) {
        return Err(IndexError::invalid(
            "profile.profile_id",
            "must be letters, digits, '-', '_' or '.'",
        ));
    }
    if !is_safe_segment(&profile.version) {
        return Err(IndexError::invalid(
            "profile.version",
            "must be letters, digits, '-', '_' or '.', e.g. \"1\" or \"2024.06\"",
        ));
    }
    let mut issues = Vec::new();
    let mut issue = |code: &str, field: String, message: String| {
        issues.push(Issue {
            code: code.to_owned(),
            field,
            message,
        })
    };
    if profile.environment_kind.trim().is_empty() {
        issue(
            "invalid_profile",
            "environment_kind".into(),
            "name the environment kind, e.g. \"python-venv\"".into(),
        );
    }
    if profile.variants.is_empty() {
        issue(
            "invalid_profile",
            "variants".into(),
            "a profile needs at least one backend variant".into(),
        );
    }
    for (vi, v) in profile.variants.iter_mut().enumerate() {
        if v.platform_selector.is_empty() {
            v.platform_selector = "*".to_owned();
        }
        if v.backend_key.trim().is_empty() {
            issue(
                "invalid_profile",
                format!("variants[{vi}].backend_key"),
                "name the backend, e.g. \"torch-cuda\"".into(),
            );
        }
        if !valid_selector(&v.platform_selector) {
            issue(
                "invalid_profile",
                format!("variants[{vi}].platform_selector"),
                format!(
                    "`{}` is not a platform selector (\"*\", \"linux-*\", \"linux-x86_64-cuda12\")",
                    v.platform_selector
                ),
            );
        }
        for r in v.requirements.iter_mut().filter(|r| r.kind == "python_package") {
            r.name = normalize_name(&r.name);
        }
        v.requirements
            .sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        // The same package twice: one entry when the pins agree, refused when they do not.
        let mut kept: Vec<Requirement> = Vec::with_capacity(v.requirements.len());
        for r in std::mem::take(&mut v.requirements) {
            if let Some(last) = kept.last()
                && last.kind == r.kind
                && last.name == r.name
            {
                if *last == r {
                    continue;
                }
                return Err(IndexError::invalid(
                    format!("profile.variants[{vi}].requirements"),
                    format!(
                        "`{}` is listed twice with different content (pins `{}` and `{}`); keep one",
                        r.name, last.exact_pin, r.exact_pin
                    ),
                ));
            }
            kept.push(r);
        }
        v.requirements = kept;
        for (ri, r) in v.requirements.iter().enumerate() {
            let field = format!("variants[{vi}].requirements[{ri}]");
            if !matches!(r.kind.as_str(), "python_package" | "system" | "binary") {
                issue(
                    "invalid_requirement",
                    format!("{field}.kind"),
                    format!("requirement `{}` has no kind", r.name),
                );
            }
            if !valid_name(&r.name) {
                issue(
                    "invalid_requirement",
                    format!("{field}.name"),
                    format!("`{}` is not a package name", r.name),
                );
            }
            if !r.exact_pin.is_empty() && !valid_pin(&r.exact_pin) {
                issue(
                    "invalid_requirement",
                    format!("{field}.exact_pin"),
                    format!(
                        "`{}` for {} is not an exact pin; write it as ==<version>, e.g. ==2.5.1",
                        r.exact_pin, r.name
                    ),
                );
            }
            for url in std::iter::once(&r.index_url)
                .filter(|u| !u.is_empty())
                .chain(&r.extra_index_urls)
            {
                if !valid_url(url) {
                    issue(
                        "invalid_requirement",
                        format!("{field}.index_url"),
                        format!("`{url}` is not an http(s) URL"),
                    );
                }
            }
            for h in &r.hashes {
                if !crate::hash::is_digest(h) || !h.starts_with("sha256:") {
                    issue(
                        "invalid_requirement",
                        format!("{field}.hashes"),
                        format!("`{h}` is not sha256:<64 hex digits>"),
                    );
                }
            }
        }
    }
    profile
        .variants
        .sort_by(|a, b| (&a.backend_key, &a.platform_selector).cmp(&(&b.backend_key, &b.platform_selector)));
    for name in &mut profile.required_packages {
        *name = normalize_name(name);
    }
    profile.required_packages.sort();
    profile.required_packages.dedup();
    // The hash covers what an environment is built from, in canonical (sorted, normalised)
    // form; the required packages count only when there are any, so older hashes stay.
    let canonical = if profile.required_packages.is_empty() {
        serde_json::to_vec(&(&profile.environment_kind, &profile.variants))
    } else {
        serde_json::to_vec(&(
            &profile.environment_kind,
            &profile.variants,
            &profile.required_packages,
        ))
    }
    .map_err(|e| IndexError::Internal(e.to_string()))?;
    profile.content_hash = format!("sha256:{:x}", Sha256::digest(&canonical));
    profile.valid = issues.is_empty();
    profile.issues = issues;
    Ok(profile)
}

fn path(root: &Path, id: &str, version: &str) -> PathBuf {
    root.join(PROFILES_DIR).join(id).join(format!("{version}.json"))
}

/// Stores a profile version. Versions are immutable, the catalog's included: the same content
/// again is a no-op; other content under an existing version is ALREADY_EXISTS.
pub fn put(root: &Path, catalog: &Catalog, profile: Profile) -> Result<Profile, IndexError> {
    let mut profile = prepare(profile)?;
    let existing = match catalog.profile(&profile.profile_id, &profile.version) {
        Some(p) => Some(p.clone()),
        None => read_stored(root, &profile.profile_id, &profile.version)?,
    };
    if let Some(existing) = existing {
        if existing.content_hash == profile.content_hash {
            return Ok(existing);
        }
        return Err(IndexError::Conflict {
            what: "dependency profile version".to_owned(),
            name: format!("{}@{}", profile.profile_id, profile.version),
            help: "versions are immutable: publish a new version".to_owned(),
        });
    }
    let file = path(root, &profile.profile_id, &profile.version);
    profile.create_time = crate::metadata::now_rfc3339();
    profile.origin = String::new();
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io("creating the profiles folder", e))?;
        // What a killed write left here (a profile version is written once, so only now).
        let _ = pumas_runtime::fsio::remove_stale_temps(dir);
    }
    write_json_atomic(&file, &profile)
        .map_err(|e| IndexError::io(format!("writing {}", file.display()), e))?;
    Ok(profile)
}

/// Deletes a profile version stored through the API. Catalog versions cannot be deleted (edit
/// the user catalog instead). Whether models still bind it is the caller's check.
pub fn delete(root: &Path, catalog: &Catalog, id: &str, version: &str) -> Result<(), IndexError> {
    if let Some(p) = catalog.profile(id, version) {
        return Err(IndexError::Precondition {
            kind: "catalog_profile".to_owned(),
            subject: format!("{id}@{version}"),
            message: format!(
                "dependency profile `{id}@{version}` comes from the {} catalog and cannot be deleted; \
                 publish a new version, or override it in the user catalog folder",
                if p.origin == crate::catalog::USER_CATALOG {
                    "user"
                } else {
                    "built-in"
                }
            ),
        });
    }
    if read_stored(root, id, version)?.is_none() {
        return Err(IndexError::ProfileNotFound(format!("{id}@{version}")));
    }
    let file = path(root, id, version);
    std::fs::remove_file(&file).map_err(|e| IndexError::io(format!("deleting {}", file.display()), e))?;
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir(dir); // only when it was the last version
    }
    Ok(())
}

/// One version, if the catalog or the store has it.
pub fn read(root: &Path, catalog: &Catalog, id: &str, version: &str) -> Result<Option<Profile>, IndexError> {
    match catalog.profile(id, version) {
        Some(p) => Ok(Some(p.clone())),
        None => read_stored(root, id, version),
    }
}

fn read_stored(root: &Path, id: &str, version: &str) -> Result<Option<Profile>, IndexError> {
    if !is_safe_segment(id) || !is_safe_segment(version) {
        return Ok(None);
    }
    let file = path(root, id, version);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| IndexError::Internal(format!("{} is not a valid profile: {e}", file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IndexError::io(format!("reading {}", file.display()), e)),
    }
}

/// Every version, the catalog's and the stored ones, sorted by id then version.
pub fn list(root: &Path, catalog: &Catalog) -> Result<Vec<Profile>, IndexError> {
    let mut out: std::collections::BTreeMap<(String, String), Profile> = catalog
        .profiles()
        .map(|p| ((p.profile_id.clone(), p.version.clone()), p.clone()))
        .collect();
    let dir = root.join(PROFILES_DIR);
    if let Ok(ids) = std::fs::read_dir(&dir) {
        for id in ids.flatten() {
            let Ok(versions) = std::fs::read_dir(id.path()) else {
                continue;
            };
            let id = id.file_name().to_string_lossy().into_owned();
            for v in versions.flatten() {
                let name = v.file_name().to_string_lossy().into_owned();
                let Some(version) = name.strip_suffix(".json") else {
                    continue;
                };
                let key = (id.clone(), version.to_owned());
                if !out.contains_key(&key)
                    && let Some(p) = read_stored(root, &id, version)?
                {
                    out.insert(key, p);
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

/// The newest version of a profile (by version string in natural order).
pub fn latest(root: &Path, catalog: &Catalog, id: &str) -> Result<Option<Profile>, IndexError> {
    let mut versions: Vec<Profile> = list(root, catalog)?
        .into_iter()
        .filter(|p| p.profile_id == id)
        .collect();
    versions.sort_by_key(|p| natural(&p.version));
    Ok(versions.pop())
}

/// Version strings compared number by number ("1.10" > "1.9").
pub fn natural(version: &str) -> Vec<(u64, String)> {
    version
        .split(['.', '-', '_'])
        .map(|part| (part.parse::<u64>().unwrap_or(0), part.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, pin: &str) -> Requirement {
        Requirement {
            kind: "python_package".into(),
            name: name.into(),
            exact_pin: pin.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_normalised_and_a_package_twice_with_other_pins_is_refused() {
        assert_eq!(normalize_name("Sentence_Transformers"), "sentence-transformers");
        assert_eq!(normalize_name("llama.cpp--python"), "llama-cpp-python");
        let profile = |reqs: Vec<Requirement>| Profile {
            profile_id: "p".into(),
            version: "1".into(),
            environment_kind: "python-venv".into(),
            variants: vec![Variant {
                backend_key: "torch-cpu".into(),
                platform_selector: "*".into(),
                requirements: reqs,
            }],
            ..Default::default()
        };
        let same = prepare(profile(vec![req("Torch", "==2.11.0"), req("torch", "==2.11.0")])).expect("same");
        assert_eq!(same.variants[0].requirements.len(), 1);
        assert_eq!(same.variants[0].requirements[0].name, "torch");
        let err =
            prepare(profile(vec![req("torch", "==2.11.0"), req("TORCH", "==2.10.0")])).expect_err("two pins");
        assert!(err.to_string().contains("`torch` is listed twice"), "{err}");
    }

    #[test]
    fn pins_and_selectors() {
        assert!(valid_pin("==2.5.1"));
        assert!(valid_pin("==2.5.1+cu121"));
        assert!(!valid_pin(">=2.5"));
        assert!(!valid_pin("==2.*"));
        assert!(!valid_pin("2.5.1"));
        assert!(valid_selector("*") && valid_selector("linux-x86_64") && valid_selector("linux-*"));
        assert!(!valid_selector("Linux x86") && !valid_selector(""));
    }

    #[test]
    fn invalid_content_is_kept_with_reasons_and_hash_is_stable() {
        let profile = |pin: &str| Profile {
            profile_id: "diffusers-sdxl".into(),
            version: "1".into(),
            environment_kind: "python-venv".into(),
            variants: vec![Variant {
                backend_key: "torch-cuda".into(),
                platform_selector: "linux-x86_64".into(),
                requirements: vec![req("torch", pin), req("diffusers", "==0.30.0")],
            }],
            ..Default::default()
        };
        let good = prepare(profile("==2.5.1")).expect("prepare");
        assert!(good.valid);
        assert_eq!(good.variants[0].requirements[0].name, "diffusers", "sorted");
        assert_eq!(
            prepare(profile("==2.5.1")).expect("again").content_hash,
            good.content_hash
        );
        let bad = prepare(profile(">=2")).expect("stored anyway");
        assert!(!bad.valid);
        assert_eq!(bad.issues[0].code, "invalid_requirement");
        assert!(bad.issues[0].message.contains("torch"));
        assert!(
            prepare(Profile {
                profile_id: "../x".into(),
                version: "1".into(),
                ..Default::default()
            })
            .is_err()
        );
    }
}
