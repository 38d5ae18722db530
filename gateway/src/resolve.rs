//! Dependency resolution (contract version 1): model -> bindings that apply to the caller's
//! platform and backend -> each binding's profile -> the requirements of the matching variant,
//! with a state per group, a top-level state (the worst), and structured errors. Pure logic: the
//! gateway feeds it what the index returns. It never installs anything.

use std::collections::BTreeMap;

use pumas_proto::DEPENDENCY_CONTRACT_VERSION;
use pumas_proto::common::v1::{
    BindingOrigin, DependencyBinding, DependencyProfile, ModelDependencyRequirements, PlatformContext,
    Requirement, RequirementGroup, RequirementKind, ValidationError, ValidationScope, ValidationState,
};
use pumas_proto::names::normalize_package_name as normalize;
use sha2::{Digest as _, Sha256};

/// Stable error codes (documented in docs/DEPENDENCIES.md).
pub mod codes {
    pub const DECLARED_BINDINGS_UNRESOLVED: &str = "declared_bindings_unresolved";
    pub const UNKNOWN_PROFILE: &str = "unknown_profile";
    pub const UNPINNED_DEPENDENCY: &str = "unpinned_dependency";
    pub const INVALID_REQUIREMENT: &str = "invalid_requirement";
    pub const INVALID_PROFILE: &str = "invalid_profile";
    pub const NO_MATCHING_VARIANT: &str = "no_matching_variant";
    pub const PROFILE_CONFLICT: &str = "profile_conflict";
    pub const NO_BINDINGS: &str = "no_bindings";
    pub const MODALITY_RESOLUTION_UNKNOWN: &str = "modality_resolution_unknown";
}

/// What a model takes in or puts out, as far as the pin policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modality {
    /// Images (diffusion checkpoints and their parts, vision models): torchvision.
    Image,
    /// Audio: torchaudio.
    Audio,
    /// Text (LLMs, text embeddings, text encoders): torch alone.
    Text,
    /// Not known (the model's type is unknown).
    Unknown,
}

impl Modality {
    /// The modality of a model type name (`checkpoint`, `audio`, `llm`, ...).
    pub fn of_model_type(model_type: &str) -> Self {
        match model_type {
            "checkpoint" | "diffusion_model" | "lora" | "vae" | "controlnet" | "embedding" | "upscaler"
            | "clip_vision" | "vision" | "vision_language" => Self::Image,
            "audio" | "tts" => Self::Audio,
            "llm" | "text_embedding" | "text_encoder" | "reranker" => Self::Text,
            _ => Self::Unknown,
        }
    }

    /// Its name in messages and audits.
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Text => "text",
            Self::Unknown => "unknown",
        }
    }
}

/// What the pin policy finds wrong with one variant's requirements for a model of `modality`:
/// packages that must be pinned exactly and are not (with why), and whether the modality is
/// needed and unknown. The policy: a torch backend (`torch-*`) pins `torch`; on a torch
/// backend, image models pin `torchvision` and audio models `torchaudio`; every package the
/// profile lists in `required_packages` is pinned; no Python package goes unpinned.
pub fn pin_policy(
    requirements: &[Requirement],
    backend: &str,
    modality: Modality,
    required_packages: &[String],
) -> (Vec<(String, &'static str)>, bool) {
    let pinned: std::collections::BTreeSet<String> = requirements
        .iter()
        .filter(|r| r.kind == RequirementKind::PythonPackage as i32 && !r.exact_pin.is_empty())
        .map(|r| normalize(&r.name))
        .collect();
    let mut wanted: Vec<(String, &'static str)> = Vec::new();
    let torch = backend.starts_with("torch-");
    if torch {
        wanted.push(("torch".to_owned(), "a torch backend needs it"));
        match modality {
            Modality::Image => wanted.push(("torchvision".to_owned(), "image models on torch need it")),
            Modality::Audio => wanted.push(("torchaudio".to_owned(), "audio models on torch need it")),
            Modality::Text | Modality::Unknown => {}
        }
    }
    for name in required_packages {
        wanted.push((normalize(name), "the profile requires it"));
    }
    for r in requirements {
        if r.kind == RequirementKind::PythonPackage as i32 && r.exact_pin.is_empty() {
            wanted.push((normalize(&r.name), "every Python package is pinned"));
        }
    }
    let mut missing: Vec<(String, &'static str)> = Vec::new();
    for (name, why) in wanted {
        if !pinned.contains(&name) && !missing.iter().any(|(n, _)| *n == name) {
            missing.push((name, why));
        }
    }
    missing.sort();
    (missing, torch && modality == Modality::Unknown)
}

fn part_ok(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

/// The platform key of a context: `platform_key` as given, or `os-arch[-accelerator<major>]`.
/// Errors name the field, for INVALID_ARGUMENT.
pub fn platform_key(ctx: Option<&PlatformContext>) -> Result<String, (String, String)> {
    let bad = |field: &str, why: String| Err((format!("platform_context.{field}"), why));
    let Some(ctx) = ctx else {
        return Err((
            "platform_context".to_owned(),
            "is required: give platform_key, or os and arch".to_owned(),
        ));
    };
    if !ctx.platform_key.is_empty() {
        let key = ctx.platform_key.trim().to_ascii_lowercase();
        if key.split('-').count() < 2 || !key.split('-').all(part_ok) {
            return bad(
                "platform_key",
                format!(
                    "`{}` is not a platform key like linux-x86_64 or linux-x86_64-cuda12",
                    ctx.platform_key
                ),
            );
        }
        return Ok(key);
    }
    if ctx.os.is_empty() && ctx.arch.is_empty() {
        return Err((
            "platform_context".to_owned(),
            "is empty: give platform_key, or os and arch".to_owned(),
        ));
    }
    let os = match ctx.os.trim().to_ascii_lowercase().as_str() {
        "linux" => "linux",
        "macos" | "darwin" | "mac" => "macos",
        "windows" | "win32" => "windows",
        other => return bad("os", format!("`{other}` is not an OS (linux, macos, windows)")),
    };
    let arch = match ctx.arch.trim().to_ascii_lowercase().as_str() {
        "x86_64" | "amd64" | "x64" => "x86_64",
        "aarch64" | "arm64" => "aarch64",
        other => {
            return bad(
                "arch",
                format!("`{other}` is not an architecture (x86_64, aarch64)"),
            );
        }
    };
    let mut key = format!("{os}-{arch}");
    let accelerator = ctx.accelerator.trim().to_ascii_lowercase();
    match accelerator.as_str() {
        "" | "cpu" | "none" => {}
        "cuda" | "rocm" | "metal" | "xpu" | "vulkan" => {
            key.push('-');
            key.push_str(&accelerator);
            let major = ctx
                .accelerator_version
                .split('.')
                .next()
                .unwrap_or_default()
                .trim();
            if !major.is_empty() {
                if !major.chars().all(|c| c.is_ascii_digit()) {
                    return bad(
                        "accelerator_version",
                        format!("`{}` is not a version like 12.4", ctx.accelerator_version),
                    );
                }
                key.push_str(major);
            }
        }
        other => {
            return bad(
                "accelerator",
                format!("`{other}` is not an accelerator (cuda, rocm, metal, xpu, vulkan, cpu)"),
            );
        }
    }
    Ok(key)
}

/// Whether a selector (`*`, `linux-*`, `linux-x86_64`, `linux-x86_64-cuda*`) matches a platform
/// key. A shorter selector matches every more specific platform.
pub fn selector_matches(selector: &str, key: &str) -> bool {
    if selector.is_empty() || selector == "*" {
        return true;
    }
    let key_parts: Vec<&str> = key.split('-').collect();
    selector
        .split('-')
        .enumerate()
        .all(|(i, sel)| match key_parts.get(i) {
            None => false,
            Some(part) => {
                sel == "*"
                    || sel == *part
                    || sel
                        .strip_suffix('*')
                        .is_some_and(|prefix| part.starts_with(prefix))
            }
        })
}

fn specificity(selector: &str) -> usize {
    if selector == "*" {
        0
    } else {
        selector.split('-').filter(|p| *p != "*").count()
    }
}

fn error(
    code: &str,
    scope: ValidationScope,
    binding_id: &str,
    field: &str,
    message: String,
) -> ValidationError {
    ValidationError {
        code: code.to_owned(),
        scope: scope as i32,
        binding_id: binding_id.to_owned(),
        field: field.to_owned(),
        message,
    }
}

fn worst(a: ValidationState, b: ValidationState) -> ValidationState {
    if (b as i32) > (a as i32) { b } else { a }
}

/// A deterministic id of the environment a group builds.
fn env_id(kind: &str, profile: &DependencyProfile, platform: &str, backend: &str) -> String {
    let text = format!(
        "{kind}\0{}\0{}\0{}\0{platform}\0{backend}",
        profile.profile_id, profile.version, profile.content_hash
    );
    format!("env-{}", &format!("{:x}", Sha256::digest(text.as_bytes()))[..24])
}

/// What resolution needs about one model.
pub struct Input<'a> {
    /// Model id.
    pub model_id: &'a str,
    /// The model declares it needs no bindings.
    pub declares_no_dependencies: bool,
    /// Its model type name (`checkpoint`, `llm`, ...): the modality the pin policy needs.
    pub model_type: &'a str,
    /// All its bindings.
    pub bindings: &'a [DependencyBinding],
    /// Profiles by `id@version` (only those that exist).
    pub profiles: &'a BTreeMap<String, DependencyProfile>,
}

/// Resolves one model for a platform key and backend (empty = every backend).
pub fn resolve(input: &Input<'_>, platform: &str, backend: &str) -> ModelDependencyRequirements {
    let mut out = ModelDependencyRequirements {
        dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        model_id: input.model_id.to_owned(),
        platform_key: platform.to_owned(),
        backend_key: backend.to_owned(),
        validation_state: ValidationState::Resolved as i32,
        ..Default::default()
    };
    let active: Vec<&DependencyBinding> = input
        .bindings
        .iter()
        .filter(|b| b.active.unwrap_or(true))
        .collect();
    let mut applicable: Vec<&DependencyBinding> = active
        .iter()
        .copied()
        .filter(|b| {
            (backend.is_empty() || b.backend_key == backend)
                && selector_matches(&b.platform_selector, platform)
                && (b.origin != BindingOrigin::Catalog as i32
                    || catalog_binding_fits(b, input.profiles, platform))
        })
        .collect();
    applicable.sort_by(|a, b| a.binding_id.cmp(&b.binding_id));

    if applicable.is_empty() {
        if input.declares_no_dependencies && active.is_empty() {
            return out;
        }
        out.validation_state = ValidationState::UnknownProfile as i32;
        let top = ValidationScope::TopLevel;
        out.validation_errors.push(if active.is_empty() {
            error(
                codes::NO_BINDINGS,
                top,
                "",
                "",
                format!(
                    "{} has no dependency bindings; bind it to a profile, or declare that it needs none",
                    input.model_id
                ),
            )
        } else {
            error(
                codes::DECLARED_BINDINGS_UNRESOLVED,
                top,
                "",
                "",
                format!(
                    "{} declares {} binding(s), none for platform {platform}{}",
                    input.model_id,
                    active.len(),
                    if backend.is_empty() {
                        String::new()
                    } else {
                        format!(" and backend {backend}")
                    }
                ),
            )
        });
        return out;
    }

    let mut state = ValidationState::Resolved;
    for b in applicable {
        let group = resolve_binding(
            b,
            input.profiles,
            platform,
            Modality::of_model_type(input.model_type),
        );
        state = worst(
            state,
            ValidationState::try_from(group.validation_state).unwrap_or(ValidationState::Resolved),
        );
        out.groups.push(group);
    }

    // Two bindings that would build the same environment (kind, platform, backend) from
    // different profile content conflict.
    let mut by_target: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, g) in out.groups.iter().enumerate() {
        if g.validation_state == ValidationState::Resolved as i32 {
            by_target
                .entry((g.environment_kind.clone(), g.backend_key.clone()))
                .or_default()
                .push(i);
        }
    }
    for indices in by_target.values() {
        let mut hashes: Vec<&str> = indices
            .iter()
            .map(|i| out.groups[*i].profile_hash.as_str())
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.len() > 1 {
            let names: Vec<String> = indices
                .iter()
                .map(|i| {
                    format!(
                        "{} ({}@{})",
                        out.groups[*i].binding_id, out.groups[*i].profile_id, out.groups[*i].profile_version
                    )
                })
                .collect();
            for i in indices {
                let g = &mut out.groups[*i];
                g.validation_state = ValidationState::ProfileConflict as i32;
                g.env_id.clear();
                g.validation_errors.push(error(
                    codes::PROFILE_CONFLICT,
                    ValidationScope::Binding,
                    &g.binding_id.clone(),
                    "",
                    format!(
                        "bindings {} would build one {} environment from different profiles",
                        names.join(" and "),
                        g.environment_kind
                    ),
                ));
            }
            state = ValidationState::ProfileConflict;
        }
    }
    out.validation_state = state as i32;
    // The top level says why too: the sorted, de-duplicated union of the groups' errors.
    let mut union: Vec<ValidationError> = out
        .groups
        .iter()
        .flat_map(|g| g.validation_errors.iter().cloned())
        .collect();
    union.sort_by(|a, b| {
        (&a.code, &a.binding_id, &a.field, &a.message).cmp(&(&b.code, &b.binding_id, &b.field, &b.message))
    });
    union.dedup();
    out.validation_errors.extend(union);
    out
}

/// A catalog binding covers every platform (`*`) for its backend; it applies only where its
/// profile has a variant for that backend (torch-mps is no answer on Linux). A missing profile
/// still applies, so that it shows as `unknown_profile`.
fn catalog_binding_fits(
    b: &DependencyBinding,
    profiles: &BTreeMap<String, DependencyProfile>,
    platform: &str,
) -> bool {
    profiles
        .get(&format!("{}@{}", b.profile_id, b.profile_version))
        .is_none_or(|p| {
            p.variants
                .iter()
                .any(|v| v.backend_key == b.backend_key && selector_matches(&v.platform_selector, platform))
        })
}

fn resolve_binding(
    b: &DependencyBinding,
    profiles: &BTreeMap<String, DependencyProfile>,
    platform: &str,
    modality: Modality,
) -> RequirementGroup {
    let scope = ValidationScope::Binding;
    let mut group = RequirementGroup {
        binding_id: b.binding_id.clone(),
        profile_id: b.profile_id.clone(),
        profile_version: b.profile_version.clone(),
        backend_key: b.backend_key.clone(),
        platform_selector: b.platform_selector.clone(),
        validation_state: ValidationState::Resolved as i32,
        ..Default::default()
    };
    let Some(profile) = profiles.get(&format!("{}@{}", b.profile_id, b.profile_version)) else {
        group.validation_state = ValidationState::UnknownProfile as i32;
        group.validation_errors.push(error(
            codes::UNKNOWN_PROFILE,
            scope,
            &b.binding_id,
            "profile_id",
            format!(
                "binding {} names profile {}@{}, which does not exist",
                b.binding_id, b.profile_id, b.profile_version
            ),
        ));
        return group;
    };
    group.profile_hash = profile.content_hash.clone();
    group.environment_kind = profile.environment_kind.clone();
    if !profile.valid {
        group.validation_state = ValidationState::InvalidProfile as i32;
        for e in &profile.validation_errors {
            group
                .validation_errors
                .push(error(&e.code, scope, &b.binding_id, &e.field, e.message.clone()));
        }
        return group;
    }
    let variant = profile
        .variants
        .iter()
        .filter(|v| v.backend_key == b.backend_key && selector_matches(&v.platform_selector, platform))
        .max_by_key(|v| specificity(&v.platform_selector));
    let Some(variant) = variant else {
        group.validation_state = ValidationState::InvalidProfile as i32;
        group.validation_errors.push(error(
            codes::NO_MATCHING_VARIANT,
            scope,
            &b.binding_id,
            "variants",
            format!(
                "profile {}@{} has no variant for backend {} on {platform}",
                profile.profile_id, profile.version, b.backend_key
            ),
        ));
        return group;
    };
    let mut requirements: Vec<Requirement> = variant
        .requirements
        .iter()
        .filter(|r| {
            r.platform_constraints.is_empty()
                || r.platform_constraints
                    .iter()
                    .any(|c| selector_matches(c, platform))
        })
        .cloned()
        .collect();
    requirements.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let (unpinned, modality_unknown) = pin_policy(
        &requirements,
        &b.backend_key,
        modality,
        &profile.required_packages,
    );
    if !unpinned.is_empty() {
        group.validation_state = ValidationState::InvalidProfile as i32;
        let named: Vec<String> = unpinned
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        group.validation_errors.push(error(
            codes::UNPINNED_DEPENDENCY,
            scope,
            &b.binding_id,
            "requirements",
            format!(
                "no exact pin for: {} (pin them as ==<version> in profile {}@{}, backend {})",
                named.join(", "),
                profile.profile_id,
                profile.version,
                b.backend_key
            ),
        ));
    }
    if modality_unknown {
        group.validation_state = ValidationState::InvalidProfile as i32;
        group.validation_errors.push(error(
            codes::MODALITY_RESOLUTION_UNKNOWN,
            scope,
            &b.binding_id,
            "model_type",
            "the model's type is unknown, so whether it needs torchvision (images) or torchaudio \
             (audio) on a torch backend cannot be told; set its type (UpdateModelMetadata, model_type)"
                .to_owned(),
        ));
    }
    group.requirements = requirements;
    if group.validation_state == ValidationState::Resolved as i32 {
        group.env_id = env_id(&profile.environment_kind, profile, platform, &b.backend_key);
    }
    group
}

#[cfg(test)]
mod tests {
    use pumas_proto::common::v1::DependencyProfileVariant;

    use super::*;

    #[test]
    fn platform_keys() {
        let ctx = |os: &str, arch: &str, acc: &str, ver: &str| PlatformContext {
            os: os.into(),
            arch: arch.into(),
            accelerator: acc.into(),
            accelerator_version: ver.into(),
            ..Default::default()
        };
        assert_eq!(
            platform_key(Some(&ctx("Linux", "amd64", "", ""))).ok(),
            Some("linux-x86_64".into())
        );
        assert_eq!(
            platform_key(Some(&ctx("linux", "x86_64", "cuda", "12.4"))).ok(),
            Some("linux-x86_64-cuda12".into())
        );
        assert!(platform_key(Some(&ctx("", "", "", ""))).is_err());
        assert!(platform_key(None).is_err());
        assert!(platform_key(Some(&ctx("beos", "x86_64", "", ""))).is_err());
        let direct = PlatformContext {
            platform_key: "linux-aarch64".into(),
            ..Default::default()
        };
        assert_eq!(platform_key(Some(&direct)).ok(), Some("linux-aarch64".into()));
        let bad = PlatformContext {
            platform_key: "Linux X86".into(),
            ..Default::default()
        };
        assert!(platform_key(Some(&bad)).is_err());
    }

    #[test]
    fn selectors() {
        assert!(selector_matches("*", "linux-x86_64"));
        assert!(selector_matches("linux-*", "linux-x86_64-cuda12"));
        assert!(selector_matches("linux-x86_64", "linux-x86_64-cuda12"));
        assert!(selector_matches("linux-x86_64-cuda*", "linux-x86_64-cuda12"));
        assert!(!selector_matches("linux-x86_64-cuda12", "linux-x86_64"));
        assert!(!selector_matches("macos-*", "linux-x86_64"));
    }

    fn profile(id: &str, version: &str, pins: &[(&str, &str)]) -> DependencyProfile {
        DependencyProfile {
            profile_id: id.into(),
            version: version.into(),
            content_hash: format!("sha256:{id}{version}{pins:?}"),
            environment_kind: "python-venv".into(),
            variants: vec![DependencyProfileVariant {
                backend_key: "torch-cuda".into(),
                platform_selector: "linux-*".into(),
                requirements: pins
                    .iter()
                    .map(|(n, p)| Requirement {
                        kind: RequirementKind::PythonPackage as i32,
                        name: (*n).into(),
                        exact_pin: (*p).into(),
                        ..Default::default()
                    })
                    .collect(),
            }],
            valid: true,
            ..Default::default()
        }
    }

    fn binding(id: &str, profile: &str, version: &str) -> DependencyBinding {
        DependencyBinding {
            binding_id: id.into(),
            model_id: "m".into(),
            profile_id: profile.into(),
            profile_version: version.into(),
            backend_key: "torch-cuda".into(),
            platform_selector: "linux-x86_64".into(),
            ..Default::default()
        }
    }

    fn run(
        bindings: &[DependencyBinding],
        profiles: &[DependencyProfile],
        declares_none: bool,
    ) -> ModelDependencyRequirements {
        let map: BTreeMap<String, DependencyProfile> = profiles
            .iter()
            .map(|p| (format!("{}@{}", p.profile_id, p.version), p.clone()))
            .collect();
        resolve(
            &Input {
                model_id: "m",
                declares_no_dependencies: declares_none,
                model_type: "llm",
                bindings,
                profiles: &map,
            },
            "linux-x86_64-cuda12",
            "torch-cuda",
        )
    }

    fn run_typed(model_type: &str, profile: &DependencyProfile) -> ModelDependencyRequirements {
        let map = BTreeMap::from([(
            format!("{}@{}", profile.profile_id, profile.version),
            profile.clone(),
        )]);
        let bindings = [binding("b1", &profile.profile_id, &profile.version)];
        resolve(
            &Input {
                model_id: "m",
                declares_no_dependencies: false,
                model_type,
                bindings: &bindings,
                profiles: &map,
            },
            "linux-x86_64-cuda12",
            "torch-cuda",
        )
    }

    #[test]
    fn the_pin_policy_asks_torch_and_what_the_modality_needs() {
        let torch_only = profile("p", "1", &[("torch", "==2.11.0"), ("diffusers", "==0.42.1")]);
        // Text on torch: torch is enough.
        assert_eq!(
            run_typed("llm", &torch_only).validation_state,
            ValidationState::Resolved as i32
        );
        // Images need torchvision, audio torchaudio; the top level says why.
        for (model_type, missing) in [("checkpoint", "torchvision"), ("audio", "torchaudio")] {
            let r = run_typed(model_type, &torch_only);
            assert_eq!(
                r.validation_state,
                ValidationState::InvalidProfile as i32,
                "{model_type}"
            );
            let e = &r.groups[0].validation_errors[0];
            assert_eq!(e.code, codes::UNPINNED_DEPENDENCY);
            assert!(e.message.contains(missing), "{}", e.message);
            assert_eq!(
                r.validation_errors, r.groups[0].validation_errors,
                "top level = union"
            );
        }
        let image = profile("p", "2", &[("torch", "==2.11.0"), ("torchvision", "==0.26.0")]);
        assert_eq!(
            run_typed("lora", &image).validation_state,
            ValidationState::Resolved as i32
        );
        // No torch pin on a torch backend.
        let no_torch = profile("p", "3", &[("diffusers", "==0.42.1")]);
        let r = run_typed("llm", &no_torch);
        assert!(
            r.groups[0].validation_errors[0]
                .message
                .contains("torch (a torch backend needs it)")
        );
        // Unknown type: the modality cannot be told.
        let r = run_typed("unknown", &image);
        assert_eq!(
            r.groups[0].validation_errors[0].code,
            codes::MODALITY_RESOLUTION_UNKNOWN
        );
        // The profile's own required packages, names normalised.
        let mut required = image.clone();
        required.required_packages = vec!["Sentence_Transformers".into()];
        let r = run_typed("lora", &required);
        assert!(
            r.groups[0].validation_errors[0]
                .message
                .contains("sentence-transformers")
        );
    }

    #[test]
    fn every_state() {
        let good = profile("sdxl", "1", &[("torch", "==2.5.1"), ("diffusers", "==0.30.0")]);
        let r = run(&[binding("b1", "sdxl", "1")], std::slice::from_ref(&good), false);
        assert_eq!(r.validation_state, ValidationState::Resolved as i32);
        assert_eq!(r.groups[0].requirements[0].name, "diffusers", "sorted");
        assert!(r.groups[0].env_id.starts_with("env-"));
        // Determinism.
        assert_eq!(
            r,
            run(&[binding("b1", "sdxl", "1")], std::slice::from_ref(&good), false)
        );

        let r = run(&[binding("b1", "ghost", "1")], &[], false);
        assert_eq!(r.validation_state, ValidationState::UnknownProfile as i32);
        assert_eq!(r.groups[0].validation_errors[0].code, codes::UNKNOWN_PROFILE);

        let unpinned = profile("loose", "1", &[("torch", ""), ("xformers", "")]);
        let r = run(&[binding("b1", "loose", "1")], &[unpinned], false);
        assert_eq!(r.validation_state, ValidationState::InvalidProfile as i32);
        let e = &r.groups[0].validation_errors[0];
        assert_eq!(e.code, codes::UNPINNED_DEPENDENCY);
        assert!(e.message.contains("torch") && e.message.contains("xformers"));
        assert!(r.groups[0].env_id.is_empty());

        let mut invalid = profile("bad", "1", &[("torch", ">=2")]);
        invalid.valid = false;
        invalid.validation_errors = vec![error(
            codes::INVALID_REQUIREMENT,
            ValidationScope::TopLevel,
            "",
            "variants[0].requirements[0].exact_pin",
            "bad pin".into(),
        )];
        let r = run(&[binding("b1", "bad", "1")], &[invalid], false);
        assert_eq!(r.validation_state, ValidationState::InvalidProfile as i32);
        assert_eq!(r.groups[0].validation_errors[0].code, codes::INVALID_REQUIREMENT);
        assert_eq!(r.groups[0].validation_errors[0].binding_id, "b1");

        let other = profile("sdxl", "2", &[("torch", "==2.4.0")]);
        let r = run(
            &[binding("b1", "sdxl", "1"), binding("b2", "sdxl", "2")],
            &[good.clone(), other],
            false,
        );
        assert_eq!(r.validation_state, ValidationState::ProfileConflict as i32);
        assert!(
            r.groups
                .iter()
                .all(|g| g.validation_errors[0].code == codes::PROFILE_CONFLICT)
        );

        // Worst state wins at the top.
        let r = run(
            &[binding("a", "sdxl", "1"), binding("b", "ghost", "1")],
            std::slice::from_ref(&good),
            false,
        );
        assert_eq!(r.validation_state, ValidationState::UnknownProfile as i32);

        // No applicable binding.
        let mut mac = binding("b1", "sdxl", "1");
        mac.platform_selector = "macos-*".into();
        let r = run(&[mac], std::slice::from_ref(&good), false);
        assert_eq!(r.validation_state, ValidationState::UnknownProfile as i32);
        assert_eq!(r.validation_errors[0].code, codes::DECLARED_BINDINGS_UNRESOLVED);
        let r = run(&[], &[], true);
        assert_eq!(r.validation_state, ValidationState::Resolved as i32);
        assert!(r.groups.is_empty());
        let r = run(&[], &[], false);
        assert_eq!(r.validation_state, ValidationState::UnknownProfile as i32);
    }
}
