//! Dependency resolution out of the box, through the gateway only: the built-in catalog binds
//! the usual kinds of models as they are imported (real files, real detection), profiles and
//! bindings are authored through the gateway, the pin policy and its audit, and a user catalog
//! that rebinds models at the next start.

#[path = "../../services/index/tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::Path;

use pumas_e2e::library::import;
use pumas_e2e::*;
use pumas_proto::common::v1::{
    BindingOrigin, DependencyBinding, DependencyProfile, PlatformContext, ProfileOrigin, RequirementKind,
    ValidationState,
};
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::*;
use tonic::Code;
use tonic_types::StatusExt as _;

type Gateway = ModelLibraryServiceClient<Channel>;

const CUDA: &str = "linux-x86_64-cuda12";

fn platform(key: &str) -> Option<PlatformContext> {
    Some(PlatformContext {
        platform_key: key.into(),
        ..Default::default()
    })
}

async fn resolve(
    gateway: &mut Gateway,
    model: &str,
    backend: &str,
) -> anyhow::Result<pumas_proto::common::v1::ModelDependencyRequirements> {
    Ok(gateway
        .resolve_model_dependency_requirements(ResolveModelDependencyRequirementsRequest {
            model_id: model.into(),
            platform_context: platform(CUDA),
            backend_key: backend.into(),
            expected_dependency_contract_version: Some(1),
        })
        .await?
        .into_inner()
        .requirements
        .unwrap_or_default())
}

fn profile(id: &str, version: &str, pins: &[(&str, &str)]) -> DependencyProfile {
    pumas_e2e::library::torch_cuda_profile(id, version, "linux-x86_64-cuda*", pins)
}

async fn publish(gateway: &mut Gateway, p: DependencyProfile) -> Result<DependencyProfile, tonic::Status> {
    Ok(gateway
        .put_dependency_profile(PutDependencyProfileRequest { profile: Some(p) })
        .await?
        .into_inner()
        .profile
        .unwrap_or_default())
}

async fn bind(
    gateway: &mut Gateway,
    model: &str,
    profile: &str,
    version: &str,
) -> Result<DependencyBinding, tonic::Status> {
    Ok(gateway
        .put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(DependencyBinding {
                model_id: model.into(),
                profile_id: profile.into(),
                profile_version: version.into(),
                backend_key: "torch-cuda".into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .binding
        .unwrap_or_default())
}

/// Writes one model of each kind the catalog covers; returns (kind, path, backend, profile).
fn usual_models(inbox: &Path) -> Vec<(&'static str, std::path::PathBuf, &'static str, &'static str)> {
    vec![
        (
            "checkpoint",
            common::sdxl_checkpoint(&inbox.join("juggernaut-xl.safetensors")),
            "torch-cuda",
            "diffusers-sd",
        ),
        (
            "diffusion model",
            common::flux_transformer(&inbox.join("flux1-dev.safetensors")),
            "torch-cuda",
            "diffusers-flux",
        ),
        (
            "LoRA",
            common::sdxl_lora(&inbox.join("detail-tweaker-xl.safetensors")),
            "torch-cuda",
            "diffusers-sd",
        ),
        (
            "VAE",
            common::vae(&inbox.join("sdxl-vae.safetensors")),
            "torch-cuda",
            "diffusers-sd",
        ),
        (
            "ControlNet",
            common::controlnet_sd1(&inbox.join("control-canny.safetensors")),
            "torch-cuda",
            "diffusers-sd",
        ),
        (
            "HF LLM",
            common::transformers_folder(&inbox.join("Llama-3.1-8B-Instruct"), "llama", "LlamaForCausalLM"),
            "torch-cuda",
            "transformers-llm",
        ),
        (
            "GGUF LLM",
            common::gguf_llm(
                &inbox.join("Mistral-7B-Instruct-Q4_K_M.gguf"),
                "llama",
                "Mistral 7B Instruct",
                15,
            ),
            "llama-cpp",
            "llama-cpp",
        ),
        (
            "embedding",
            common::transformers_folder(&inbox.join("bge-small-en"), "bert", "BertModel"),
            "torch-cuda",
            "sentence-transformers",
        ),
        (
            "Whisper",
            common::transformers_folder(
                &inbox.join("whisper-small"),
                "whisper",
                "WhisperForConditionalGeneration",
            ),
            "torch-cuda",
            "transformers-whisper",
        ),
    ]
}

#[tokio::test]
async fn the_usual_kinds_resolve_out_of_the_box_and_authoring_works_through_the_gateway() -> anyhow::Result<()>
{
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let inbox = suite.data_root.path().join("inbox");
    let mut ids = Vec::new();
    for (kind, path, backend, expected) in usual_models(&inbox) {
        let id = import(&mut gateway, &path).await?;
        let r = resolve(&mut gateway, &id, backend).await?;
        assert_eq!(
            r.validation_state,
            ValidationState::Resolved as i32,
            "{kind} ({id}): {r:#?}"
        );
        assert_eq!(r.groups.len(), 1, "{kind}: {r:#?}");
        let g = &r.groups[0];
        assert_eq!(g.profile_id, expected, "{kind} ({id})");
        assert!(g.env_id.starts_with("env-"), "{kind}");
        if backend == "torch-cuda" {
            let torch = g
                .requirements
                .iter()
                .find(|r| r.name == "torch")
                .expect("torch pinned");
            assert_eq!(torch.exact_pin, "==2.11.0");
            assert_eq!(
                torch.index_url, "https://download.pytorch.org/whl/cu128",
                "{kind}"
            );
        } else {
            assert!(
                g.requirements
                    .iter()
                    .any(|r| r.name == "llama-cpp-python" && r.exact_pin == "==0.3.36")
            );
            assert!(
                g.requirements
                    .iter()
                    .any(|r| r.kind == RequirementKind::Binary as i32 && r.name == "llama-server")
            );
        }
        ids.push(id);
    }
    let [
        checkpoint,
        _flux,
        lora,
        _vae,
        _controlnet,
        llm,
        _gguf,
        _embedding,
        whisper,
    ] = ids.as_slice()
    else {
        unreachable!("nine kinds")
    };

    // The model view says who attached the bindings.
    let view = gateway
        .get_model(GetModelRequest {
            model_id: checkpoint.clone(),
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .and_then(|v| v.model)
        .expect("model");
    assert_eq!(
        view.dependency_bindings.len(),
        4,
        "one per torch backend: {view:#?}"
    );
    assert!(
        view.dependency_bindings
            .iter()
            .all(|b| b.origin == BindingOrigin::Catalog as i32)
    );

    // Catalog profiles are listed with their origin; a catalog binding cannot be deleted.
    let listed = gateway
        .list_dependency_profiles(ListDependencyProfilesRequest::default())
        .await?
        .into_inner();
    assert!(
        listed
            .profiles
            .iter()
            .any(|p| p.profile_id == "diffusers-sd" && p.origin == ProfileOrigin::BuiltIn as i32)
    );
    let catalog_binding = view.dependency_bindings[0].binding_id.clone();
    let err = gateway
        .delete_model_dependency_binding(DeleteModelDependencyBindingRequest {
            binding_id: catalog_binding,
        })
        .await
        .expect_err("catalog binding");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("attached by the catalog"),
        "{}",
        err.message()
    );

    // 1. A pytorch audio model with exact torch/torchaudio pins resolves; the user binding
    //    replaces the catalog's.
    let audio = publish(
        &mut gateway,
        profile(
            "stable-audio-profile",
            "1",
            &[
                ("torch", "==2.11.0"),
                ("torchaudio", "==2.11.0"),
                ("transformers", "==5.25.0"),
            ],
        ),
    )
    .await?;
    assert!(audio.valid && audio.origin == ProfileOrigin::Stored as i32);
    let mine = bind(&mut gateway, whisper, "stable-audio-profile", "1").await?;
    assert_eq!(mine.origin, BindingOrigin::User as i32);
    let r = resolve(&mut gateway, whisper, "torch-cuda").await?;
    assert_eq!(r.validation_state, ValidationState::Resolved as i32, "{r:#?}");
    assert_eq!(r.groups.len(), 1, "the catalog's binding is gone: {r:#?}");
    assert_eq!(r.groups[0].profile_id, "stable-audio-profile");
    // Re-publishing the version with other content: ALREADY_EXISTS, the resource is the version.
    let err = publish(
        &mut gateway,
        profile(
            "stable-audio-profile",
            "1",
            &[("torch", "==2.10.0"), ("torchaudio", "==2.10.0")],
        ),
    )
    .await
    .expect_err("immutable");
    assert_eq!(err.code(), Code::AlreadyExists);
    let info = err
        .get_error_details()
        .resource_info()
        .cloned()
        .expect("resource info");
    assert_eq!(info.resource_name, "stable-audio-profile@1");
    assert!(
        err.message().contains("publish a new version"),
        "{}",
        err.message()
    );

    // An unknown profile is refused at bind time.
    let err = bind(&mut gateway, llm, "ghost", "1")
        .await
        .expect_err("unknown profile");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("ghost@1"), "{}", err.message());

    // 2. A binding to a profile version that is gone is unknown_profile.
    publish(
        &mut gateway,
        profile(
            "short-lived",
            "1",
            &[("torch", "==2.11.0"), ("transformers", "==5.25.0")],
        ),
    )
    .await?;
    bind(&mut gateway, llm, "short-lived", "1").await?;
    let err = gateway
        .delete_dependency_profile(DeleteDependencyProfileRequest {
            profile_id: "short-lived".into(),
            version: "1".into(),
            force: false,
        })
        .await
        .expect_err("in use");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(llm.as_str()), "{}", err.message());
    gateway
        .delete_dependency_profile(DeleteDependencyProfileRequest {
            profile_id: "short-lived".into(),
            version: "1".into(),
            force: true,
        })
        .await?;
    let r = resolve(&mut gateway, llm, "torch-cuda").await?;
    assert_eq!(
        r.validation_state,
        ValidationState::UnknownProfile as i32,
        "{r:#?}"
    );
    assert_eq!(r.groups[0].validation_errors[0].code, "unknown_profile");

    // 3. A pytorch profile without a torch pin is invalid_profile / unpinned_dependency, and the
    //    top level says so too.
    publish(
        &mut gateway,
        profile(
            "no-torch",
            "1",
            &[("diffusers", "==0.42.1"), ("torchvision", "==0.26.0")],
        ),
    )
    .await?;
    bind(&mut gateway, checkpoint, "no-torch", "1").await?;
    let r = resolve(&mut gateway, checkpoint, "torch-cuda").await?;
    assert_eq!(
        r.validation_state,
        ValidationState::InvalidProfile as i32,
        "{r:#?}"
    );
    let e = &r.groups[0].validation_errors[0];
    assert_eq!(e.code, "unpinned_dependency");
    assert!(
        e.message.contains("torch (a torch backend needs it)"),
        "{}",
        e.message
    );
    assert_eq!(r.validation_errors, r.groups[0].validation_errors);

    // 4. Two bindings whose profiles differ but would build one environment: profile_conflict.
    publish(
        &mut gateway,
        profile(
            "lora-a",
            "1",
            &[("torch", "==2.11.0"), ("torchvision", "==0.26.0")],
        ),
    )
    .await?;
    publish(
        &mut gateway,
        profile(
            "lora-b",
            "1",
            &[("torch", "==2.10.0"), ("torchvision", "==0.25.0")],
        ),
    )
    .await?;
    bind(&mut gateway, lora, "lora-a", "1").await?;
    bind(&mut gateway, lora, "lora-b", "1").await?;
    let r = resolve(&mut gateway, lora, "torch-cuda").await?;
    assert_eq!(
        r.validation_state,
        ValidationState::ProfileConflict as i32,
        "{r:#?}"
    );
    assert!(
        r.groups
            .iter()
            .all(|g| g.validation_errors[0].code == "profile_conflict")
    );

    // A profile nobody binds is audited too, for what holds whatever the model.
    publish(
        &mut gateway,
        profile("loose-unbound", "1", &[("torch", "==2.11.0"), ("xformers", "")]),
    )
    .await?;
    // The audit finds the profile without torch, with the pin to fill in from the catalog.
    let audit = gateway
        .audit_dependencies(AuditDependenciesRequest {})
        .await?
        .into_inner();
    let finding = audit
        .findings
        .iter()
        .find(|f| f.profile_id == "no-torch")
        .expect("no-torch found");
    assert_eq!(finding.modality, "image");
    assert_eq!(
        finding.suggested_pins.get("torch").map(String::as_str),
        Some("==2.11.0")
    );
    assert_eq!(finding.binding_count, 1);
    let loose = audit
        .findings
        .iter()
        .find(|f| f.profile_id == "loose-unbound")
        .expect("unbound profile audited");
    assert_eq!((loose.modality.as_str(), loose.binding_count), ("any", 0));
    assert!(
        loose.validation_errors[0].message.contains("xformers"),
        "{loose:?}"
    );
    assert!(
        audit
            .findings
            .iter()
            .all(|f| !f.profile_id.starts_with("diffusers")),
        "{audit:#?}"
    );

    // A client expecting another contract version is told, not answered in this one.
    let err = gateway
        .resolve_model_dependency_requirements(ResolveModelDependencyRequirementsRequest {
            model_id: checkpoint.clone(),
            platform_context: platform(CUDA),
            backend_key: String::new(),
            expected_dependency_contract_version: Some(2),
        })
        .await
        .expect_err("version");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let violation = &err
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("details")
        .violations[0];
    assert!(
        violation.subject.contains('2') && violation.subject.contains('1'),
        "{violation:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_user_catalog_rebinds_models_at_the_next_start() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let inbox = suite.data_root.path().join("inbox");
    let llm = import(
        &mut gateway,
        &common::transformers_folder(&inbox.join("Qwen2.5-7B"), "qwen2", "Qwen2ForCausalLM"),
    )
    .await?;
    assert_eq!(
        resolve(&mut gateway, &llm, "torch-cuda").await?.groups[0].profile_id,
        "transformers-llm"
    );
    // An upscaler: no built-in rule binds it, so the has-binding filter leaves it out.
    let upscaler = import(
        &mut gateway,
        &common::upscaler(&inbox.join("4x-UltraSharp.safetensors")),
    )
    .await?;
    assert!(!bound_ids(&mut gateway).await?.contains(&upscaler));

    // The user's catalog: a profile in the short form and a rule that comes before the built-in
    // ones.
    let catalog = suite.root().join("catalog");
    std::fs::create_dir_all(catalog.join("profiles"))?;
    std::fs::write(
        catalog.join("profiles/vllm.json"),
        r#"{"profile_id": "vllm", "version": "1", "description": "LLMs served by vLLM",
            "backends": ["torch-cuda"], "packages": {"vllm": "==0.11.0"}}"#,
    )?;
    std::fs::write(
        catalog.join("profiles/spandrel.json"),
        r#"{"profile_id": "spandrel", "version": "1", "backends": ["torch-cuda"],
            "packages": {"spandrel": "==0.4.1"}}"#,
    )?;
    std::fs::write(
        catalog.join("autobind.json"),
        r#"{"rules": [{"rule_id": "llms-on-vllm", "when": {"model_type": ["llm"], "family": ["qwen*"]},
            "profile_id": "vllm"},
            {"rule_id": "upscalers", "when": {"model_type": ["upscaler"]}, "profile_id": "spandrel"}]}"#,
    )?;
    let suite = suite.kill_and_restart().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = resolve(&mut gateway, &llm, "torch-cuda").await?;
        if r.groups.first().is_some_and(|g| g.profile_id == "vllm") {
            assert_eq!(r.validation_state, ValidationState::Resolved as i32, "{r:#?}");
            assert!(
                r.groups[0]
                    .requirements
                    .iter()
                    .any(|q| q.name == "vllm" && q.exact_pin == "==0.11.0")
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not rebound: {r:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let bindings = gateway
        .list_model_dependency_bindings(ListModelDependencyBindingsRequest {
            model_id: llm.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .bindings;
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].catalog_rule, "llms-on-vllm");
    let shown = gateway
        .get_dependency_profile(GetDependencyProfileRequest {
            profile_id: "vllm".into(),
            version: String::new(),
        })
        .await?
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(shown.origin, ProfileOrigin::UserCatalog as i32);
    // The start's reconcile brought the has-binding column in line with the new rule.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !bound_ids(&mut gateway).await?.contains(&upscaler) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upscaler is not listed as bound"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The ids the has-binding filter lists.
async fn bound_ids(gateway: &mut Gateway) -> anyhow::Result<Vec<String>> {
    Ok(gateway
        .list_models(ListModelsRequest {
            filters: Some(pumas_proto::common::v1::ModelFilter {
                has_dependency_binding: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .models
        .into_iter()
        .filter_map(|v| v.model.map(|m| m.model_id))
        .collect())
}
