//! Dependency resolution through the gateway, across real processes: every validation state
//! with its structured errors, determinism, batch, NOT_FOUND and INVALID_ARGUMENT.

use std::path::Path;

use prost::Message as _;
use pumas_e2e::Channel;
use pumas_e2e::*;
use pumas_proto::common::v1::{
    DependencyBinding, DependencyProfile, ImportMode, PlatformContext, ValidationState,
};
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{
    BatchResolveModelDependencyRequirementsRequest, ImportModelsRequest,
    ResolveModelDependencyRequirementsRequest, WatchImportJobRequest,
};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{
    DeleteDependencyProfileRequest, ModelOverrides, PutDependencyProfileRequest,
    PutModelDependencyBindingRequest, UpdateModelMetadataRequest,
};
use tonic::Code;

fn write_checkpoint(path: &Path, width: u64) {
    let header = serde_json::json!({
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": {"dtype": "F16", "shape": [8, width], "data_offsets": [0, 16 * width]},
    });
    let mut json = serde_json::to_vec(&header).expect("json");
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.resize(bytes.len() + 16 * width as usize, 0);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn profile(id: &str, version: &str, pins: &[(&str, &str)]) -> DependencyProfile {
    pumas_e2e::library::torch_cuda_profile(id, version, "linux-*", pins)
}

async fn import(gateway: &mut ModelLibraryServiceClient<Channel>, path: &Path) -> String {
    let job = gateway
        .import_models(ImportModelsRequest {
            paths: vec![path.display().to_string()],
            mode: ImportMode::Copy as i32,
            ..Default::default()
        })
        .await
        .expect("import")
        .into_inner()
        .job
        .expect("job");
    let mut stream = gateway
        .watch_import_job(WatchImportJobRequest {
            job_id: job.status.expect("status").job_id,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(u) = stream.message().await.expect("stream") {
        last = u.job;
    }
    last.expect("job").results[0].model_id.clone()
}

async fn bind(index: &mut IndexServiceClient<Channel>, model: &str, id: &str, profile: &str, version: &str) {
    index
        .put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(DependencyBinding {
                binding_id: id.into(),
                model_id: model.into(),
                profile_id: profile.into(),
                profile_version: version.into(),
                backend_key: "torch-cuda".into(),
                platform_selector: "linux-x86_64".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("bind");
}

fn linux_cuda() -> Option<PlatformContext> {
    Some(PlatformContext {
        os: "linux".into(),
        arch: "x86_64".into(),
        accelerator: "cuda".into(),
        accelerator_version: "12.4".into(),
        python_version: "3.11".into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn every_resolution_state_through_the_gateway() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let mut index = IndexServiceClient::new(channel(&suite.index).await?);
    let inbox = suite.data_root.path().join("inbox");
    let mut models = Vec::new();
    for (i, name) in [
        "resolved",
        "unknown",
        "unpinned",
        "invalid",
        "conflict",
        "elsewhere",
        "none",
    ]
    .iter()
    .enumerate()
    {
        let path = inbox.join(format!("{name}.safetensors"));
        write_checkpoint(&path, 2048 + i as u64 * 8);
        models.push(import(&mut gateway, &path).await);
    }
    for (p, v, pins) in [
        (
            "sdxl",
            "1",
            vec![
                ("torch", "==2.5.1"),
                ("torchvision", "==0.20.1"),
                ("diffusers", "==0.30.0"),
            ],
        ),
        (
            "sdxl",
            "2",
            vec![("torch", "==2.4.0"), ("torchvision", "==0.19.0")],
        ),
        (
            "gone",
            "1",
            vec![("torch", "==2.5.1"), ("torchvision", "==0.20.1")],
        ),
        ("loose", "1", vec![("torch", ""), ("xformers", "")]),
        ("broken", "1", vec![("torch", ">=2")]),
    ] {
        index
            .put_dependency_profile(PutDependencyProfileRequest {
                profile: Some(profile(p, v, &pins)),
            })
            .await?;
    }
    bind(&mut index, &models[0], "b-resolved", "sdxl", "1").await;
    // A binding to a version that no longer exists (bindings to unknown profiles are refused).
    bind(&mut index, &models[1], "b-unknown", "gone", "1").await;
    index
        .delete_dependency_profile(DeleteDependencyProfileRequest {
            profile_id: "gone".into(),
            version: "1".into(),
            force: true,
        })
        .await?;
    bind(&mut index, &models[2], "b-unpinned", "loose", "1").await;
    bind(&mut index, &models[3], "b-invalid", "broken", "1").await;
    bind(&mut index, &models[4], "b-conflict-1", "sdxl", "1").await;
    bind(&mut index, &models[4], "b-conflict-2", "sdxl", "2").await;
    index
        .put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(DependencyBinding {
                binding_id: "b-mac".into(),
                model_id: models[5].clone(),
                profile_id: "sdxl".into(),
                profile_version: "1".into(),
                backend_key: "torch-mps".into(),
                platform_selector: "macos-*".into(),
                ..Default::default()
            }),
        })
        .await?;
    index
        .update_model_metadata(UpdateModelMetadataRequest {
            model_id: models[6].clone(),
            overrides: Some(ModelOverrides {
                declares_no_dependencies: Some(true),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["declares_no_dependencies".into()],
            }),
            request_id: String::new(),
        })
        .await?;

    let resolve = |model: String| {
        let mut gateway = gateway.clone();
        async move {
            gateway
                .resolve_model_dependency_requirements(ResolveModelDependencyRequirementsRequest {
                    model_id: model,
                    platform_context: linux_cuda(),
                    backend_key: "torch-cuda".into(),
                    expected_dependency_contract_version: None,
                })
                .await
                .map(|r| r.into_inner().requirements.expect("requirements"))
        }
    };
    let r = resolve(models[0].clone()).await?;
    assert_eq!(r.dependency_contract_version, 1);
    assert_eq!(r.platform_key, "linux-x86_64-cuda12");
    assert_eq!(r.validation_state, ValidationState::Resolved as i32);
    let g = &r.groups[0];
    assert_eq!(
        (
            g.binding_id.as_str(),
            g.profile_id.as_str(),
            g.environment_kind.as_str()
        ),
        ("b-resolved", "sdxl", "python-venv")
    );
    assert!(g.env_id.starts_with("env-") && g.profile_hash.starts_with("sha256:"));
    assert_eq!(
        g.requirements
            .iter()
            .map(|r| (r.name.as_str(), r.exact_pin.as_str()))
            .collect::<Vec<_>>(),
        [
            ("diffusers", "==0.30.0"),
            ("torch", "==2.5.1"),
            ("torchvision", "==0.20.1")
        ]
    );
    // Same inputs, same bytes.
    assert_eq!(
        resolve(models[0].clone()).await?.encode_to_vec(),
        r.encode_to_vec()
    );

    let expect = [
        (1, ValidationState::UnknownProfile, "unknown_profile"),
        (2, ValidationState::InvalidProfile, "unpinned_dependency"),
        (3, ValidationState::InvalidProfile, "invalid_requirement"),
        (4, ValidationState::ProfileConflict, "profile_conflict"),
    ];
    for (i, state, code) in expect {
        let r = resolve(models[i].clone()).await?;
        assert_eq!(r.validation_state, state as i32, "{}: {r:#?}", models[i]);
        let e = &r.groups[0].validation_errors[0];
        assert_eq!(e.code, code, "{r:#?}");
        assert!(!e.binding_id.is_empty() && !e.message.is_empty());
    }
    let r = resolve(models[2].clone()).await?;
    assert!(r.groups[0].validation_errors[0].message.contains("xformers"));
    let r = resolve(models[5].clone()).await?;
    assert_eq!(r.validation_state, ValidationState::UnknownProfile as i32);
    assert_eq!(r.validation_errors[0].code, "declared_bindings_unresolved");
    let r = resolve(models[6].clone()).await?;
    assert_eq!(r.validation_state, ValidationState::Resolved as i32);
    assert!(r.groups.is_empty());

    // Mistakes.
    let err = resolve("checkpoint/sdxl/nope".into()).await.expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    let err = gateway
        .resolve_model_dependency_requirements(ResolveModelDependencyRequirementsRequest {
            model_id: models[0].clone(),
            platform_context: Some(PlatformContext::default()),
            backend_key: String::new(),
            expected_dependency_contract_version: None,
        })
        .await
        .expect_err("empty platform");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = gateway
        .resolve_model_dependency_requirements(ResolveModelDependencyRequirementsRequest {
            model_id: models[0].clone(),
            platform_context: Some(PlatformContext {
                os: "plan9".into(),
                arch: "x86_64".into(),
                ..Default::default()
            }),
            backend_key: String::new(),
            expected_dependency_contract_version: None,
        })
        .await
        .expect_err("bad os");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("plan9"));

    // Batch: request order, per-item errors.
    let mut ids = models.clone();
    ids.push("lora/sdxl/nope".into());
    let batch = gateway
        .batch_resolve_model_dependency_requirements(BatchResolveModelDependencyRequirementsRequest {
            model_ids: ids.clone(),
            platform_context: linux_cuda(),
            backend_key: "torch-cuda".into(),
            expected_dependency_contract_version: None,
        })
        .await?
        .into_inner();
    assert_eq!(
        batch.items.iter().map(|i| i.model_id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        batch.items[7].error.as_ref().map(|e| e.code),
        Some(Code::NotFound as i32)
    );
    assert_eq!(
        batch.items[0].requirements.as_ref().map(|r| r.validation_state),
        Some(ValidationState::Resolved as i32)
    );
    Ok(())
}
