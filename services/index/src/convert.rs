//! Between the domain (metadata strings, store types, job snapshots) and the proto messages.

use pumas_proto::common::v1 as common;
use pumas_proto::index::v1 as api;
use pumas_proto::names;

use crate::jobs::{self, Snapshot};
use crate::metadata::Source;
use crate::store::{Change, Filter, Order, Record};

fn type_value(name: &str) -> i32 {
    names::model_type_value(name).unwrap_or(common::ModelType::Unknown as i32)
}

fn timestamp(rfc3339: &str) -> Option<prost_types::Timestamp> {
    rfc3339.parse().ok()
}

/// A file entry from its proto.
pub fn file_entry(f: &common::ModelFile) -> crate::metadata::FileEntry {
    crate::metadata::FileEntry {
        path: f.path.clone(),
        size: f.size_bytes,
        sha256: f.sha256.clone(),
        blake3: f.blake3.clone(),
    }
}

/// The proto view of a record.
pub fn model(record: &Record, library_root: &std::path::Path) -> common::ModelRecord {
    let m = &record.metadata;
    let source = match &m.source {
        Source::Local { path } => common::model_source::Source::Local(common::LocalSource {
            original_path: path.clone(),
        }),
        Source::Hub {
            endpoint,
            repo_id,
            revision,
            commit_sha,
            selection_label,
            whole_repository,
        } => common::model_source::Source::Hub(common::HubSource {
            endpoint: endpoint.clone(),
            repo_id: repo_id.clone(),
            revision: revision.clone(),
            commit_sha: commit_sha.clone(),
            selection_label: selection_label.clone(),
            whole_repository: *whole_repository,
        }),
    };
    common::ModelRecord {
        model_id: m.id.clone(),
        display_name: m.display_name.clone(),
        model_type: type_value(&m.model_type),
        family: m.family.clone(),
        architecture: m.architecture.clone(),
        format: names::format_value(&m.format).unwrap_or(0),
        precision: m.precision.clone(),
        quantization: m.quantization.clone(),
        parameter_count: m.parameter_count,
        files: m
            .files
            .iter()
            .map(|f| common::ModelFile {
                path: f.path.clone(),
                size_bytes: f.size,
                sha256: f.sha256.clone(),
                blake3: f.blake3.clone(),
            })
            .collect(),
        total_size_bytes: m.total_size,
        composite_digest: m.composite_digest.clone(),
        source: Some(common::ModelSource { source: Some(source) }),
        tags: m.tags.clone(),
        description: m.description.clone(),
        license: m.license.clone(),
        added_time: timestamp(&m.added_time),
        updated_time: timestamp(&m.updated_time),
        state: names::state_value(&m.state).unwrap_or(0),
        state_reason: m.state_reason.clone(),
        detection: Some(common::Detection {
            confidence: m.detection.confidence,
            evidence: m
                .detection
                .evidence
                .iter()
                .map(|e| common::DetectionEvidence {
                    kind: e.kind.clone(),
                    key: e.key.clone(),
                    value: e.value.clone(),
                    supports: e.supports.clone(),
                })
                .collect(),
            runner_up: m.detection.runner_up.clone(),
            runner_up_confidence: m.detection.runner_up_confidence,
            rules_version: m.detection.rules_version,
        }),
        unsafe_format: m.unsafe_format,
        dependency_bindings: m
            .dependency_bindings
            .iter()
            .filter(|b| b.active)
            .map(|b| common::DependencyBindingRef {
                binding_id: b.binding_id.clone(),
                profile_id: b.profile_id.clone(),
                profile_version: b.profile_version.clone(),
                backend_key: b.backend_key.clone(),
                platform_selector: b.platform_selector.clone(),
                origin: binding_origin(b),
            })
            .collect(),
        overridden_fields: record.overridden.clone(),
        library_path: library_root.join(&m.id).display().to_string(),
        declares_no_dependencies: m.declares_no_dependencies,
        embedded: (!m.embedded.is_empty()).then(|| embedded(&m.embedded)),
        hub: m.hub.as_ref().map(crate::hub_card::HubCard::to_proto),
        derived_model_ids: Vec::new(),
        vision_projector_files: vision_projectors(m),
        side_files: m
            .side_files
            .iter()
            .map(|s| common::SideFile {
                role: s.role.clone(),
                path: s.path.clone(),
                size_bytes: s.size,
                media_type: s.media_type().to_owned(),
                data: Vec::new(),
            })
            .collect(),
    }
}

/// A GGUF model's mmproj files: the vision projector that goes with its language model.
fn vision_projectors(m: &crate::metadata::Metadata) -> Vec<String> {
    if m.format != "gguf" {
        return Vec::new();
    }
    let projectors: Vec<String> = m
        .files
        .iter()
        .filter(|f| {
            let name = f.path.rsplit('/').next().unwrap_or(&f.path).to_ascii_lowercase();
            name.contains("mmproj") && name.ends_with(".gguf")
        })
        .map(|f| f.path.clone())
        .collect();
    // A projector alone is the model itself, not something linked to it.
    let has_language_model = m
        .files
        .iter()
        .any(|f| f.path.ends_with(".gguf") && !projectors.contains(&f.path));
    if has_language_model {
        projectors
    } else {
        Vec::new()
    }
}

/// The proto form of a model's embedded metadata.
fn embedded(e: &crate::embedded::Embedded) -> common::EmbeddedMetadata {
    common::EmbeddedMetadata {
        values: e.values.clone().into_iter().collect(),
        context_length: e.context_length,
        embedding_length: e.embedding_length,
        block_count: e.block_count,
        head_count: e.head_count,
        head_count_kv: e.head_count_kv,
        rope_freq_base: e.rope_freq_base,
        tokenizer_model: e.tokenizer_model.clone(),
        has_chat_template: e.has_chat_template,
        author: e.author.clone(),
        license: e.license.clone(),
        base_model: e.base_model.clone(),
        trigger_words: e.trigger_words.clone(),
        network_dim: e.network_dim,
        network_alpha: e.network_alpha,
        output_name: e.output_name.clone(),
        title: e.title.clone(),
        description: e.description.clone(),
        chat_template: String::new(),
    }
}

/// The store filter of a proto filter; unknown enum numbers are INVALID_ARGUMENT.
pub fn filter(f: Option<&common::ModelFilter>) -> Result<Filter, crate::error::IndexError> {
    let Some(f) = f else { return Ok(Filter::default()) };
    let names_of = |values: &[i32], lookup: fn(i32) -> Option<&'static str>, field: &str| {
        values
            .iter()
            .map(|v| {
                lookup(*v).map(str::to_owned).ok_or_else(|| {
                    crate::error::IndexError::invalid(
                        format!("filter.{field}"),
                        format!("{v} is not a known value"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    if let (Some(min), Some(max)) = (f.min_size_bytes, f.max_size_bytes)
        && min > max
    {
        return Err(crate::error::IndexError::invalid(
            "filter.min_size_bytes",
            "is larger than max_size_bytes",
        ));
    }
    let mut tags = f.tags.clone();
    tags.sort();
    tags.dedup();
    Ok(Filter {
        types: names_of(&f.model_types, names::model_type, "model_types")?,
        families: f.families.clone(),
        formats: names_of(&f.formats, names::format, "formats")?,
        states: names_of(&f.states, names::state, "states")?,
        tags,
        min_size: f.min_size_bytes,
        max_size: f.max_size_bytes,
        has_binding: f.has_dependency_binding,
        repo_id: f.repo_id.clone(),
        licenses: keys(&f.licenses, crate::hub_card::license_key),
        base_models: keys(&f.base_models, crate::hub_card::base_model_key),
        pipeline_tags: keys(&f.pipeline_tags, crate::hub_card::pipeline_key),
    })
}

/// Filter keys of a list of values, sorted, without blanks or repeats.
fn keys(values: &[String], key: fn(&str) -> String) -> Vec<String> {
    let mut out: Vec<String> = values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| key(v))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The store order of a proto order.
pub fn order(value: i32, search: bool) -> Result<Order, crate::error::IndexError> {
    Ok(match common::ModelOrder::try_from(value) {
        Ok(common::ModelOrder::Unspecified) => {
            if search {
                Order::Relevance
            } else {
                Order::Name
            }
        }
        Ok(common::ModelOrder::Relevance) => Order::Relevance,
        Ok(common::ModelOrder::Name) => Order::Name,
        Ok(common::ModelOrder::SizeDesc) => Order::SizeDesc,
        Ok(common::ModelOrder::AddedTimeDesc) => Order::AddedDesc,
        Err(_) => {
            return Err(crate::error::IndexError::invalid(
                "order_by",
                format!("{value} is not a known order"),
            ));
        }
    })
}

/// The proto job of a snapshot.
pub fn job(s: &Snapshot) -> api::Job {
    let state = match s.state {
        jobs::State::Queued => common::JobState::Queued,
        jobs::State::Running => common::JobState::Running,
        jobs::State::Succeeded => common::JobState::Succeeded,
        jobs::State::Failed => common::JobState::Failed,
        jobs::State::Cancelled => common::JobState::Cancelled,
    };
    let kind = match s.kind {
        jobs::Kind::Import => api::JobKind::Import,
        jobs::Kind::Reindex => api::JobKind::Reindex,
        jobs::Kind::Verify => api::JobKind::Verify,
    };
    let failure = |f: &jobs::Failure| common::ErrorStatus {
        code: f.code,
        reason: f.reason.clone(),
        message: f.message.clone(),
    };
    let eta = (s.bytes_per_second > 0.0 && s.bytes_total > s.bytes_done && !s.state.is_final())
        .then(|| (s.bytes_total - s.bytes_done) as f64 / s.bytes_per_second);
    api::Job {
        status: Some(common::JobStatus {
            job_id: s.id.clone(),
            state: state as i32,
            progress: Some(common::Progress {
                bytes_done: s.bytes_done,
                bytes_total: s.bytes_total,
                items_done: s.items_done,
                items_total: s.items_total,
                bytes_per_second: s.bytes_per_second,
                eta_seconds: eta,
                current_item: s.current.clone(),
            }),
            create_time: Some(s.create_time.into()),
            start_time: s.start_time.map(Into::into),
            end_time: s.end_time.map(Into::into),
            error: s.error.as_ref().map(failure),
        }),
        kind: kind as i32,
        results: s
            .results
            .iter()
            .map(|r| api::JobItemResult {
                source: r.source.clone(),
                outcome: match r.outcome {
                    jobs::Outcome::Added => api::ItemOutcome::Added,
                    jobs::Outcome::Duplicate => api::ItemOutcome::Duplicate,
                    jobs::Outcome::Unchanged => api::ItemOutcome::Unchanged,
                    jobs::Outcome::Updated => api::ItemOutcome::Updated,
                    jobs::Outcome::Missing => api::ItemOutcome::Missing,
                    jobs::Outcome::Corrupt => api::ItemOutcome::Corrupt,
                    jobs::Outcome::Failed => api::ItemOutcome::Failed,
                } as i32,
                model_id: r.model_id.clone(),
                error: r.error.as_ref().map(failure),
            })
            .collect(),
    }
}

/// The proto event of a change.
pub fn change(c: &Change, model: Option<common::ModelRecord>) -> api::WatchChangesResponse {
    let kind = match c.kind.as_str() {
        "added" => api::ChangeKind::Added,
        "updated" => api::ChangeKind::Updated,
        "removed" => api::ChangeKind::Removed,
        "moved" => api::ChangeKind::Moved,
        _ => api::ChangeKind::Unspecified,
    };
    api::WatchChangesResponse {
        cursor: c.cursor,
        kind: kind as i32,
        model_id: c.model_id.clone(),
        previous_model_id: c.previous_id.clone(),
        model,
        change_time: Some(prost_types::Timestamp {
            seconds: c.time_ms / 1000,
            nanos: ((c.time_ms % 1000) * 1_000_000) as i32,
        }),
    }
}

/// Proto requirement kind of a stored kind name.
fn requirement_kind(name: &str) -> i32 {
    match name {
        "python_package" => common::RequirementKind::PythonPackage as i32,
        "system" => common::RequirementKind::System as i32,
        "binary" => common::RequirementKind::Binary as i32,
        _ => common::RequirementKind::Unspecified as i32,
    }
}

fn requirement_kind_name(value: i32) -> String {
    match common::RequirementKind::try_from(value) {
        Ok(common::RequirementKind::PythonPackage) => "python_package",
        Ok(common::RequirementKind::System) => "system",
        Ok(common::RequirementKind::Binary) => "binary",
        _ => "",
    }
    .to_owned()
}

/// The stored form of a proto profile (hash and validity are computed on write).
pub fn profile_from(p: common::DependencyProfile) -> crate::profiles::Profile {
    crate::profiles::Profile {
        profile_id: p.profile_id,
        version: p.version,
        content_hash: String::new(),
        environment_kind: p.environment_kind,
        description: p.description,
        variants: p
            .variants
            .into_iter()
            .map(|v| crate::profiles::Variant {
                backend_key: v.backend_key,
                platform_selector: v.platform_selector,
                requirements: v
                    .requirements
                    .into_iter()
                    .map(|r| crate::profiles::Requirement {
                        kind: requirement_kind_name(r.kind),
                        name: r.name,
                        exact_pin: r.exact_pin,
                        index_url: r.index_url,
                        extra_index_urls: r.extra_index_urls,
                        markers: r.markers,
                        python_requirement: r.python_requirement,
                        platform_constraints: r.platform_constraints,
                        hashes: r.hashes,
                        source: r.source,
                    })
                    .collect(),
            })
            .collect(),
        valid: false,
        issues: Vec::new(),
        create_time: String::new(),
        required_packages: p.required_packages,
        origin: String::new(),
    }
}

/// The proto form of a stored profile.
pub fn profile(p: &crate::profiles::Profile) -> common::DependencyProfile {
    common::DependencyProfile {
        profile_id: p.profile_id.clone(),
        version: p.version.clone(),
        content_hash: p.content_hash.clone(),
        environment_kind: p.environment_kind.clone(),
        variants: p
            .variants
            .iter()
            .map(|v| common::DependencyProfileVariant {
                backend_key: v.backend_key.clone(),
                platform_selector: v.platform_selector.clone(),
                requirements: v
                    .requirements
                    .iter()
                    .map(|r| common::Requirement {
                        kind: requirement_kind(&r.kind),
                        name: r.name.clone(),
                        exact_pin: r.exact_pin.clone(),
                        index_url: r.index_url.clone(),
                        extra_index_urls: r.extra_index_urls.clone(),
                        markers: r.markers.clone(),
                        python_requirement: r.python_requirement.clone(),
                        platform_constraints: r.platform_constraints.clone(),
                        hashes: r.hashes.clone(),
                        source: r.source.clone(),
                    })
                    .collect(),
            })
            .collect(),
        valid: p.valid,
        validation_errors: p
            .issues
            .iter()
            .map(|i| common::ValidationError {
                code: i.code.clone(),
                scope: common::ValidationScope::TopLevel as i32,
                binding_id: String::new(),
                field: i.field.clone(),
                message: i.message.clone(),
            })
            .collect(),
        description: p.description.clone(),
        create_time: timestamp(&p.create_time),
        required_packages: p.required_packages.clone(),
        origin: match p.origin.as_str() {
            crate::catalog::BUILT_IN => common::ProfileOrigin::BuiltIn,
            crate::catalog::USER_CATALOG => common::ProfileOrigin::UserCatalog,
            _ => common::ProfileOrigin::Stored,
        } as i32,
    }
}

/// Who attached a binding, in the contract's words.
fn binding_origin(b: &crate::metadata::Binding) -> i32 {
    if b.catalog_rule.is_empty() {
        common::BindingOrigin::User as i32
    } else {
        common::BindingOrigin::Catalog as i32
    }
}

/// The proto form of a stored binding.
pub fn binding(model_id: &str, b: &crate::metadata::Binding) -> common::DependencyBinding {
    common::DependencyBinding {
        binding_id: b.binding_id.clone(),
        model_id: model_id.to_owned(),
        profile_id: b.profile_id.clone(),
        profile_version: b.profile_version.clone(),
        backend_key: b.backend_key.clone(),
        platform_selector: b.platform_selector.clone(),
        active: Some(b.active),
        origin: binding_origin(b),
        catalog_rule: b.catalog_rule.clone(),
    }
}

/// The stored form of a proto binding.
pub fn binding_from(b: common::DependencyBinding) -> crate::metadata::Binding {
    crate::metadata::Binding {
        binding_id: b.binding_id,
        profile_id: b.profile_id,
        profile_version: b.profile_version,
        backend_key: b.backend_key,
        platform_selector: b.platform_selector,
        active: b.active.unwrap_or(true),
        // What a caller puts is theirs; only the catalog attaches catalog bindings.
        catalog_rule: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf_with(files: &[&str]) -> crate::metadata::Metadata {
        let mut m = crate::synthetic::sample_metadata();
        m.format = "gguf".to_owned();
        m.files = files
            .iter()
            .map(|p| crate::metadata::FileEntry {
                path: (*p).to_owned(),
                ..Default::default()
            })
            .collect();
        m
    }

    #[test]
    fn a_gguf_names_its_vision_projector_and_a_projector_alone_names_none() {
        let m = gguf_with(&["llava-Q4_K_M.gguf", "mmproj-model-f16.gguf"]);
        assert_eq!(vision_projectors(&m), vec!["mmproj-model-f16.gguf".to_owned()]);
        assert!(vision_projectors(&gguf_with(&["mmproj-model-f16.gguf"])).is_empty());
        assert!(vision_projectors(&gguf_with(&["model.gguf"])).is_empty());
    }
}
