//! Library fixtures shared by end-to-end tests: model files and imports through the gateway.

use std::path::Path;

use crate::Channel;
use anyhow::{Context as _, bail};
use pumas_proto::common::v1::ImportMode;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{ImportModelsRequest, WatchImportJobRequest};
use pumas_proto::index::v1::JobItemResult;

/// Writes a small SDXL LoRA (realistic tensor names) whose bytes depend on `seed`.
pub fn write_lora(path: &Path, seed: u8) -> anyhow::Result<()> {
    let header = serde_json::json!({
        "__metadata__": {"ss_base_model_version": "sdxl_base_v1-0", "seed": seed.to_string()},
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": {"dtype": "F16", "shape": [4, 1280], "data_offsets": [0, 10240]},
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": {"dtype": "F16", "shape": [640, 4], "data_offsets": [10240, 15360]},
    });
    let mut json = serde_json::to_vec(&header)?;
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.resize(bytes.len() + 15360, seed);
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Imports `path` with `mode` through the gateway, waits for the job and returns its items.
pub async fn import_items(
    gateway: &mut ModelLibraryServiceClient<Channel>,
    path: &Path,
    mode: ImportMode,
) -> anyhow::Result<Vec<JobItemResult>> {
    let job = gateway
        .import_models(ImportModelsRequest {
            paths: vec![path.display().to_string()],
            mode: mode as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .context("job")?;
    let mut stream = gateway
        .watch_import_job(WatchImportJobRequest {
            job_id: job.status.context("status")?.job_id,
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await? {
        last = update.job;
    }
    Ok(last.context("no job update")?.results)
}

/// Imports `path` (copying it) through the gateway, waits for the job and returns the model id.
pub async fn import(gateway: &mut ModelLibraryServiceClient<Channel>, path: &Path) -> anyhow::Result<String> {
    let results = import_items(gateway, path, ImportMode::Copy).await?;
    let result = results.first().context("no import result")?;
    if result.model_id.is_empty() {
        bail!("import of {} gave no model: {results:?}", path.display());
    }
    Ok(result.model_id.clone())
}

/// Waits until the mapper at `mapper` has applied every change the index at `index` has made
/// so far (its feed cursor has reached the index's head), so a test can tell what the mapper
/// did on its own from what a call does next.
pub async fn mapper_caught_up(index: &str, mapper: &str) -> anyhow::Result<()> {
    use pumas_proto::index::v1::index_service_client::IndexServiceClient;
    use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
    let head = IndexServiceClient::new(crate::channel(index).await?)
        .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
        .await?
        .into_inner()
        .change_cursor;
    let mut mapper = MapperServiceClient::new(crate::channel(mapper).await?);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let info = mapper
            .get_service_info(pumas_proto::mapper::v1::GetServiceInfoRequest {})
            .await?
            .into_inner();
        if info.following_changes && info.change_cursor >= head {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the mapper did not catch up with the index's change feed: at {} of {head} (following: {})",
                info.change_cursor,
                info.following_changes
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every model the index lists: id -> (composite digest, sha256 of each file, state).
pub async fn all_models(
    index: &mut pumas_proto::index::v1::index_service_client::IndexServiceClient<Channel>,
) -> anyhow::Result<std::collections::BTreeMap<String, (String, Vec<String>, i32)>> {
    let mut out = std::collections::BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = index
            .list_models(pumas_proto::index::v1::ListModelsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for m in page.models {
            let files = m
                .files
                .iter()
                .map(|f| f.sha256.trim_start_matches("sha256:").to_owned())
                .collect();
            out.insert(m.model_id.clone(), (m.composite_digest.clone(), files, m.state));
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Every model folder on disk: id -> composite digest from its metadata.json.
pub fn models_on_disk(models: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let visible = |p: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    for kind in visible(models) {
        for family in visible(&kind) {
            for model in visible(&family) {
                let Ok(text) = std::fs::read(model.join("metadata.json")) else {
                    continue;
                };
                let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&text) else {
                    continue;
                };
                let id = doc["id"].as_str().unwrap_or_default().to_owned();
                let digest = doc["composite_digest"].as_str().unwrap_or_default().to_owned();
                out.insert(id, digest);
            }
        }
    }
    out
}

/// Files named like a temp file of ours anywhere below `dir`.
pub fn temp_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with(".pumas-tmp") || name.ends_with(".pumas-tmp") {
            out.push(path.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            temp_files(&path, out);
        }
    }
}

/// Watches a mapping job on a mapper until it ends (at most a minute) and answers its final
/// status, whatever state it ended in.
pub async fn mapping_job_end(
    mapper: &mut pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient<Channel>,
    job: Option<pumas_proto::mapper::v1::MappingJob>,
) -> anyhow::Result<pumas_proto::common::v1::JobStatus> {
    let job_id = job.and_then(|j| j.status).context("a job with a status")?.job_id;
    let mut stream = mapper
        .watch_mapping_job(pumas_proto::mapper::v1::WatchMappingJobRequest { job_id })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(update) =
        tokio::time::timeout(std::time::Duration::from_secs(60), stream.message()).await??
    {
        last = update.job;
    }
    last.and_then(|j| j.status).context("no final status")
}

/// Applies (`unmap` false) or unmaps (`unmap` true) an app on a mapper and waits for the job's
/// end; answers its final status.
pub async fn run_mapping(
    mapper: &mut pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient<Channel>,
    app: &str,
    unmap: bool,
) -> anyhow::Result<pumas_proto::common::v1::JobStatus> {
    let job = if unmap {
        mapper
            .unmap(pumas_proto::mapper::v1::UnmapRequest {
                app: app.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .job
    } else {
        mapper
            .apply_mapping(pumas_proto::mapper::v1::ApplyMappingRequest {
                app: app.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .job
    };
    mapping_job_end(mapper, job).await
}

/// A python-venv profile with one `torch-cuda` variant on `selector` pinning `pins`
/// (name, exact pin; an empty pin is unpinned).
pub fn torch_cuda_profile(
    id: &str,
    version: &str,
    selector: &str,
    pins: &[(&str, &str)],
) -> pumas_proto::common::v1::DependencyProfile {
    use pumas_proto::common::v1::{
        DependencyProfile, DependencyProfileVariant, Requirement, RequirementKind,
    };
    DependencyProfile {
        profile_id: id.into(),
        version: version.into(),
        environment_kind: "python-venv".into(),
        variants: vec![DependencyProfileVariant {
            backend_key: "torch-cuda".into(),
            platform_selector: selector.into(),
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
        ..Default::default()
    }
}

/// One model's record through the gateway's GetModel.
pub async fn get_model(
    gateway: &mut ModelLibraryServiceClient<Channel>,
    id: &str,
) -> anyhow::Result<pumas_proto::common::v1::ModelRecord> {
    gateway
        .get_model(pumas_proto::gateway::v1::GetModelRequest {
            model_id: id.to_owned(),
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .and_then(|v| v.model)
        .with_context(|| format!("no model {id} in the answer"))
}
