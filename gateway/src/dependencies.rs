//! Authoring dependency profiles and bindings through the gateway (they live in the index), and
//! the audit of the pin policy over every binding in effect.

use std::collections::BTreeMap;

use pumas_proto::DEPENDENCY_CONTRACT_VERSION;
use pumas_proto::common::v1::{
    DependencyProfile, DependencyProfileVariant, ProfileOrigin, RequirementKind, ValidationError,
    ValidationScope,
};
use pumas_proto::gateway::v1::*;
use pumas_proto::index;
use pumas_runtime::ApiError;
use tonic::Status;

use crate::api::GatewayApi;
use crate::resolve::{Modality, codes, pin_policy};

/// Binding ids an audit finding lists (the count says how many there are).
const FINDING_IDS_SHOWN: usize = 20;
/// Page size of the audit's walks through the index.
const AUDIT_PAGE: i32 = 1000;

/// Refuses a resolution in another contract version than the caller expects.
pub fn check_expected_version(expected: Option<u32>) -> Result<(), Status> {
    match expected {
        Some(v) if v != DEPENDENCY_CONTRACT_VERSION => Err(ApiError::FailedPrecondition {
            kind: "dependency_contract_version".to_owned(),
            subject: format!("expected {v}, served {DEPENDENCY_CONTRACT_VERSION}"),
            message: format!(
                "this gateway speaks dependency contract version {DEPENDENCY_CONTRACT_VERSION}, not the \
                 {v} the request expects; use a client for version {DEPENDENCY_CONTRACT_VERSION}, or a \
                 gateway that speaks {v}"
            ),
        }
        .into()),
        _ => Ok(()),
    }
}

impl GatewayApi {
    /// Walks the whole library, a page of [`AUDIT_PAGE`] models at a time.
    pub(crate) async fn each_model(
        &self,
        mut visit: impl FnMut(pumas_proto::common::v1::ModelRecord),
    ) -> Result<(), Status> {
        let mut page_token = String::new();
        loop {
            let page = self
                .index()
                .call(
                    index::v1::ListModelsRequest {
                        page_size: AUDIT_PAGE,
                        page_token,
                        ..Default::default()
                    },
                    async |mut c, req| c.list_models(req).await,
                )
                .await?;
            page.models.into_iter().for_each(&mut visit);
            if page.next_page_token.is_empty() {
                return Ok(());
            }
            page_token = page.next_page_token;
        }
    }

    pub(crate) async fn put_profile(
        &self,
        r: PutDependencyProfileRequest,
    ) -> Result<PutDependencyProfileResponse, Status> {
        let answer = self
            .index()
            .call(
                index::v1::PutDependencyProfileRequest { profile: r.profile },
                async |mut c, req| c.put_dependency_profile(req).await,
            )
            .await?;
        Ok(PutDependencyProfileResponse {
            profile: answer.profile,
            dependency_contract_version: answer.dependency_contract_version,
        })
    }

    pub(crate) async fn get_profile(
        &self,
        r: GetDependencyProfileRequest,
    ) -> Result<GetDependencyProfileResponse, Status> {
        let answer = self
            .index()
            .call(
                index::v1::GetDependencyProfileRequest {
                    profile_id: r.profile_id,
                    version: r.version,
                },
                async |mut c, req| c.get_dependency_profile(req).await,
            )
            .await?;
        Ok(GetDependencyProfileResponse {
            profile: answer.profile,
            dependency_contract_version: answer.dependency_contract_version,
        })
    }

    pub(crate) async fn list_profiles(
        &self,
        r: ListDependencyProfilesRequest,
    ) -> Result<ListDependencyProfilesResponse, Status> {
        let answer = self
            .index()
            .call(
                index::v1::ListDependencyProfilesRequest {
                    page_size: r.page_size,
                    page_token: r.page_token,
                },
                async |mut c, req| c.list_dependency_profiles(req).await,
            )
            .await?;
        Ok(ListDependencyProfilesResponse {
            profiles: answer.profiles,
            next_page_token: answer.next_page_token,
            dependency_contract_version: answer.dependency_contract_version,
        })
    }

    pub(crate) async fn delete_profile(
        &self,
        r: DeleteDependencyProfileRequest,
    ) -> Result<DeleteDependencyProfileResponse, Status> {
        self.index()
            .call(
                index::v1::DeleteDependencyProfileRequest {
                    profile_id: r.profile_id,
                    version: r.version,
                    force: r.force,
                },
                async |mut c, req| c.delete_dependency_profile(req).await,
            )
            .await?;
        Ok(DeleteDependencyProfileResponse {})
    }

    pub(crate) async fn put_binding(
        &self,
        r: PutModelDependencyBindingRequest,
    ) -> Result<PutModelDependencyBindingResponse, Status> {
        let answer = self
            .index()
            .call(
                index::v1::PutModelDependencyBindingRequest { binding: r.binding },
                async |mut c, req| c.put_model_dependency_binding(req).await,
            )
            .await?;
        Ok(PutModelDependencyBindingResponse {
            binding: answer.binding,
            dependency_contract_version: answer.dependency_contract_version,
        })
    }

    pub(crate) async fn list_bindings(
        &self,
        r: ListModelDependencyBindingsRequest,
    ) -> Result<ListModelDependencyBindingsResponse, Status> {
        let answer = self
            .index()
            .call(
                index::v1::ListModelDependencyBindingsRequest {
                    model_id: r.model_id,
                    page_size: r.page_size,
                    page_token: r.page_token,
                },
                async |mut c, req| c.list_model_dependency_bindings(req).await,
            )
            .await?;
        Ok(ListModelDependencyBindingsResponse {
            bindings: answer.bindings,
            next_page_token: answer.next_page_token,
            dependency_contract_version: answer.dependency_contract_version,
        })
    }

    pub(crate) async fn delete_binding(
        &self,
        r: DeleteModelDependencyBindingRequest,
    ) -> Result<DeleteModelDependencyBindingResponse, Status> {
        self.index()
            .call(
                index::v1::DeleteModelDependencyBindingRequest {
                    binding_id: r.binding_id,
                },
                async |mut c, req| c.delete_model_dependency_binding(req).await,
            )
            .await?;
        Ok(DeleteModelDependencyBindingResponse {})
    }

    /// Every profile version, walking the index's pages.
    async fn all_profiles(&self) -> Result<Vec<DependencyProfile>, Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list_profiles(ListDependencyProfilesRequest {
                    page_size: AUDIT_PAGE,
                    page_token,
                })
                .await?;
            out.extend(page.profiles);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// The audit: every active binding in effect against its profile's variants for its backend
    /// and its model's modality, grouped into findings.
    pub(crate) async fn audit(&self) -> Result<AuditDependenciesResponse, Status> {
        let profiles: BTreeMap<String, DependencyProfile> = self
            .all_profiles()
            .await?
            .into_iter()
            .map(|p| (format!("{}@{}", p.profile_id, p.version), p))
            .collect();
        let suggestions = suggested_pins(profiles.values());
        let mut response = AuditDependenciesResponse {
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
            ..Default::default()
        };
        let mut findings = Findings::new();
        // Every model's active bindings in effect (the user's, or the catalog's): the model
        // views carry them, with the model's type, so one walk through the library does.
        self.each_model(|model| {
            let modality = Modality::of_model_type(
                pumas_proto::names::model_type(model.model_type).unwrap_or("unknown"),
            );
            for b in &model.dependency_bindings {
                response.checked_binding_count += 1;
                match profiles.get(&format!("{}@{}", b.profile_id, b.profile_version)) {
                    Some(profile) => audit_binding(
                        &b.binding_id,
                        &b.backend_key,
                        profile,
                        modality,
                        &suggestions,
                        &mut findings,
                    ),
                    None => response.unknown_profile_binding_ids.push(b.binding_id.clone()),
                }
            }
        })
        .await?;
        response.unknown_profile_binding_ids.sort();
        // Profiles nobody binds yet are checked too, for what holds whatever the model: a torch
        // pin on torch backends, the profile's required packages, no unpinned package.
        for profile in profiles.values() {
            for v in &profile.variants {
                let (missing, _) = pin_policy(
                    &v.requirements,
                    &v.backend_key,
                    Modality::Text,
                    &profile.required_packages,
                );
                let seen = findings.keys().any(|(id, version, backend, selector, _)| {
                    *id == profile.profile_id
                        && *version == profile.version
                        && *backend == v.backend_key
                        && *selector == v.platform_selector
                });
                if !missing.is_empty() && !seen {
                    findings.insert(
                        finding_key(profile, v, "any"),
                        new_finding(profile, v, "any", &missing, false, &suggestions),
                    );
                }
            }
        }
        // In key order: profile, version, backend, platform selector, modality.
        response.findings = findings.into_values().collect();
        Ok(response)
    }
}

/// Audit findings by (profile, version, backend, platform selector, modality).
type Findings = BTreeMap<(String, String, String, String, String), AuditFinding>;

fn finding_key(
    profile: &DependencyProfile,
    v: &DependencyProfileVariant,
    modality: &str,
) -> (String, String, String, String, String) {
    (
        profile.profile_id.clone(),
        profile.version.clone(),
        v.backend_key.clone(),
        v.platform_selector.clone(),
        modality.to_owned(),
    )
}

/// A finding for one variant: what is unpinned (with the suggested pins) and whether the
/// modality is unknown on a torch backend.
fn new_finding(
    profile: &DependencyProfile,
    v: &DependencyProfileVariant,
    modality: &str,
    missing: &[(String, &'static str)],
    modality_unknown: bool,
    suggestions: &BTreeMap<String, String>,
) -> AuditFinding {
    let mut f = AuditFinding {
        profile_id: profile.profile_id.clone(),
        profile_version: profile.version.clone(),
        backend_key: v.backend_key.clone(),
        platform_selector: v.platform_selector.clone(),
        modality: modality.to_owned(),
        suggested_pins: missing
            .iter()
            .map(|(name, _)| (name.clone(), suggestions.get(name).cloned().unwrap_or_default()))
            .collect(),
        ..Default::default()
    };
    if !missing.is_empty() {
        let named: Vec<String> = missing.iter().map(|(n, why)| format!("{n} ({why})")).collect();
        f.validation_errors.push(ValidationError {
            code: codes::UNPINNED_DEPENDENCY.to_owned(),
            scope: ValidationScope::Binding as i32,
            field: "requirements".to_owned(),
            message: format!("no exact pin for: {}", named.join(", ")),
            ..Default::default()
        });
    }
    if modality_unknown {
        f.validation_errors.push(ValidationError {
            code: codes::MODALITY_RESOLUTION_UNKNOWN.to_owned(),
            scope: ValidationScope::Binding as i32,
            field: "model_type".to_owned(),
            message: "models of unknown type are bound to a torch backend; set their type".to_owned(),
            ..Default::default()
        });
    }
    f
}

/// Adds what the pin policy finds in a binding's profile variants (for its backend) to
/// `findings`.
fn audit_binding(
    binding_id: &str,
    backend_key: &str,
    profile: &DependencyProfile,
    modality: Modality,
    suggestions: &BTreeMap<String, String>,
    findings: &mut Findings,
) {
    for v in profile.variants.iter().filter(|v| v.backend_key == backend_key) {
        let (missing, modality_unknown) = pin_policy(
            &v.requirements,
            &v.backend_key,
            modality,
            &profile.required_packages,
        );
        if missing.is_empty() && !modality_unknown {
            continue;
        }
        let finding = findings
            .entry(finding_key(profile, v, modality.name()))
            .or_insert_with(|| {
                new_finding(
                    profile,
                    v,
                    modality.name(),
                    &missing,
                    modality_unknown,
                    suggestions,
                )
            });
        finding.binding_count += 1;
        if finding.binding_ids.len() < FINDING_IDS_SHOWN
            && !finding.binding_ids.iter().any(|id| id == binding_id)
        {
            finding.binding_ids.push(binding_id.to_owned());
            finding.binding_ids.sort();
        }
    }
}

/// The pin to suggest per package: the one the catalog (built-in first) uses most.
fn suggested_pins<'a>(profiles: impl Iterator<Item = &'a DependencyProfile>) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, BTreeMap<String, (u32, u32)>> = BTreeMap::new();
    for p in profiles {
        let built_in = u32::from(p.origin == ProfileOrigin::BuiltIn as i32);
        for r in p.variants.iter().flat_map(|v| &v.requirements) {
            if r.kind == RequirementKind::PythonPackage as i32 && !r.exact_pin.is_empty() {
                let entry = counts
                    .entry(r.name.to_lowercase())
                    .or_default()
                    .entry(r.exact_pin.clone())
                    .or_default();
                entry.0 += built_in;
                entry.1 += 1;
            }
        }
    }
    counts
        .into_iter()
        .filter_map(|(name, pins)| {
            pins.into_iter()
                .max_by_key(|(_, c)| *c)
                .map(|(pin, _)| (name, pin))
        })
        .collect()
}
