//! Attacks on files outside the library, through `pumas up`, each checked against a decoy tree
//! hashed before and after (nothing outside the library may change):
//! - MOVE-importing a file that is not a model (a private key, text files named like weights);
//! - MOVE-importing a file out of the library itself, also through a symlinked data root;
//! - `BeginModelDownload` with a staging path outside fetch's staging area, to rename any
//!   folder into the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use pumas_e2e::library::{import, write_lora};
use pumas_e2e::{Suite, channel};
use pumas_proto::common::v1::ImportMode;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::index::v1::ItemOutcome;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use sha2::Digest as _;

/// Every file under `root` with the sha256 of its bytes.
fn hashes(root: &Path) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path())?;
            out.insert(
                entry.path().to_owned(),
                format!("{:x}", sha2::Sha256::digest(&bytes)),
            );
        }
    }
    Ok(out)
}

/// The reason a MOVE import of `path` is refused, as INVALID_ARGUMENT on the call or on its item;
/// fails the test when it is taken.
async fn refusal(
    gateway: &mut ModelLibraryServiceClient<pumas_e2e::Channel>,
    path: &Path,
) -> anyhow::Result<String> {
    let job = gateway
        .import_models(pumas_proto::gateway::v1::ImportModelsRequest {
            paths: vec![path.display().to_string()],
            mode: ImportMode::Move as i32,
            ..Default::default()
        })
        .await;
    let status = match job {
        Err(status) => status,
        Ok(answer) => {
            let job = answer.into_inner().job.context("job")?;
            let job_id = job.status.context("status")?.job_id;
            let mut stream = gateway
                .watch_import_job(pumas_proto::gateway::v1::WatchImportJobRequest { job_id })
                .await?
                .into_inner();
            let mut last = None;
            while let Some(update) = stream.message().await? {
                last = update.job;
            }
            let items = last.context("no job update")?.results;
            let item = items.first().context("an item")?;
            anyhow::ensure!(
                item.outcome == ItemOutcome::Failed as i32,
                "{} was taken: {item:?}",
                path.display()
            );
            let error = item.error.as_ref().context("error")?;
            anyhow::ensure!(
                error.reason == "INVALID_ARGUMENT",
                "{}: {error:?}",
                path.display()
            );
            return Ok(error.message.clone());
        }
    };
    anyhow::ensure!(
        status.code() == tonic::Code::InvalidArgument,
        "{}: {status:?}",
        path.display()
    );
    Ok(status.message().to_owned())
}

#[tokio::test]
async fn a_move_import_takes_only_models_and_never_from_the_library() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let decoy = tempfile::tempdir()?;
    let key = decoy.path().join("id_rsa_fake");
    std::fs::write(
        &key,
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )?;
    let fake_weights = decoy.path().join("notes.safetensors");
    std::fs::write(&fake_weights, b"dear diary, today I renamed a text file")?;
    let fake_gguf = decoy.path().join("nested").join("model.gguf");
    std::fs::create_dir_all(fake_gguf.parent().context("parent")?)?;
    std::fs::write(&fake_gguf, b"GGUF? no, just text")?;
    let fake_onnx = decoy.path().join("model.onnx");
    std::fs::write(&fake_onnx, b"#!/bin/sh\necho not a model\n")?;
    let before = hashes(decoy.path())?;

    for path in [&key, &fake_weights, &fake_gguf, &fake_onnx] {
        let why = refusal(&mut gateway, path).await?;
        assert!(!why.is_empty(), "{} was refused without a reason", path.display());
    }
    assert_eq!(hashes(decoy.path())?, before, "the decoy tree is untouched");

    // A real model goes in; MOVE-importing its file back out of the library is refused, by its
    // own path and through a symlink to the data root.
    let lora = decoy.path().join("inbox").join("Style.safetensors");
    write_lora(&lora, 7)?;
    let model_id = import(&mut gateway, &lora).await?;
    let models = suite.root().join("shared-resources/models");
    let library_before = hashes(&models.join(&model_id))?;
    let inside = library_before
        .keys()
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"));
    let inside = inside.context("the model's weights")?.clone();
    let alias = decoy.path().join("alias");
    std::os::unix::fs::symlink(suite.root(), &alias)?;
    let through_alias = alias.join(inside.strip_prefix(suite.root())?);
    for path in [&inside, &through_alias] {
        let why = refusal(&mut gateway, path).await?;
        assert!(why.contains("inside the library"), "{}: {why}", path.display());
    }
    assert_eq!(
        hashes(&models.join(&model_id))?,
        library_before,
        "the library's copy is untouched"
    );
    Ok(())
}

#[tokio::test]
async fn a_download_can_only_be_staged_in_fetchs_own_area() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    // A caller with the service token (the strongest local caller there is) still cannot make
    // the index rename an arbitrary folder into the library.
    let mut index = IndexServiceClient::new(channel(&suite.index).await?);
    let decoy = tempfile::tempdir()?;
    std::fs::write(decoy.path().join("diary.txt"), b"private")?;
    std::fs::write(decoy.path().join("model.safetensors"), b"not even weights")?;
    let before = hashes(decoy.path())?;
    for staging in [
        decoy.path().to_owned(),
        suite.root().join("launcher-data/cache/downloads/../../../../"),
    ] {
        let err = index
            .begin_model_download(pumas_proto::index::v1::BeginModelDownloadRequest {
                download_id: "dl-attack".to_owned(),
                staging_path: staging.display().to_string(),
                source: Some(pumas_proto::common::v1::HubSource {
                    endpoint: "http://127.0.0.1:9".to_owned(),
                    repo_id: "evil/steal".to_owned(),
                    revision: "main".to_owned(),
                    commit_sha: "0".repeat(40),
                    ..Default::default()
                }),
                expected_files: vec![pumas_proto::common::v1::ModelFile {
                    path: "diary.txt".to_owned(),
                    size_bytes: 7,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect_err("a staging path outside fetch's area");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{}: {err:?}",
            staging.display()
        );
        assert!(err.message().contains("staging area"), "{}", err.message());
    }
    assert_eq!(hashes(decoy.path())?, before, "the decoy folder is untouched");
    Ok(())
}

#[tokio::test]
async fn a_data_root_given_through_a_symlink_is_still_never_a_source() -> anyhow::Result<()> {
    // The data root is named through a symlink; the real path of a library file must be refused
    // as a MOVE source just as the symlinked one is.
    let dir = tempfile::tempdir()?;
    let real_root = dir.path().join("real-root");
    std::fs::create_dir_all(&real_root)?;
    let alias = dir.path().join("alias-root");
    std::os::unix::fs::symlink(&real_root, &alias)?;
    let alias_arg = alias.display().to_string();
    let token_file = pumas_e2e::service_token_file().display().to_string();
    let process = pumas_e2e::Process::up(
        &["--data-root", &alias_arg, "--service-token-file", &token_file],
        &[],
        dir.path().join("up.log"),
    )
    .await?;
    let gateway_addr = process.banner_address("gateway")?;
    pumas_e2e::wait_for_health(
        &gateway_addr,
        pumas_e2e::GATEWAY_SERVICE,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
        std::time::Duration::from_secs(30),
    )
    .await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&gateway_addr).await?);
    let lora = dir.path().join("inbox").join("Detail.safetensors");
    write_lora(&lora, 9)?;
    let model_id = import(&mut gateway, &lora).await?;
    let model_dir = real_root.join("shared-resources/models").join(&model_id);
    let before = hashes(&model_dir)?;
    let weights = before
        .keys()
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .context("weights")?
        .clone();
    for path in [weights.clone(), alias.join(weights.strip_prefix(&real_root)?)] {
        let why = refusal(&mut gateway, &path).await?;
        assert!(why.contains("inside the library"), "{}: {why}", path.display());
    }
    assert_eq!(hashes(&model_dir)?, before, "the library's copy is untouched");
    process.terminate().await?;
    Ok(())
}

#[tokio::test]
async fn a_repo_that_ships_the_librarys_file_names_downloads_into_a_correct_model() -> anyhow::Result<()> {
    use pumas_e2e::downloads::{start_download, wait_for_download};
    use pumas_e2e::hub::{HubEmulator, HubFile, HubRepo, fixtures};
    use pumas_proto::fetch::v1::DownloadState;

    // A crafted repo: its own metadata.json claims another model's id, its overrides.json
    // tries to retype it, and a .pumas-import.json poses as an import journal.
    let crafted = br#"{"schema_version":1,"id":"lora/sdxl/someone-elses-model","model_type":"lora"}"#;
    let tiny = fixtures::tiny_model(4096);
    let repo = HubRepo::new("acme/ships-metadata")
        .file(HubFile::new("metadata.json", bytes::Bytes::from_static(crafted)))
        .file(HubFile::new(
            "overrides.json",
            bytes::Bytes::from_static(br#"{"model_type":"vae"}"#),
        ))
        .file(HubFile::new(
            ".pumas-import.json",
            bytes::Bytes::from_static(br#"{"mode":"move"}"#),
        ))
        .file(
            tiny.files
                .iter()
                .find(|f| f.path == "config.json")
                .context("config")?
                .clone(),
        )
        .file(
            tiny.files
                .iter()
                .find(|f| f.path == "model.safetensors")
                .context("weights")?
                .clone(),
        )
        .library("transformers");
    let emulator = HubEmulator::start(vec![repo]).await?;
    let suite = Suite::start_with(&["--hub-endpoint", &emulator.url, "--hub-backoff-ms", "20"], &[]).await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let id = start_download(
        &mut gateway,
        pumas_proto::gateway::v1::StartDownloadRequest {
            repo_id: "acme/ships-metadata".to_owned(),
            ..Default::default()
        },
    )
    .await?;
    let done = wait_for_download(
        &mut gateway,
        &id,
        DownloadState::Completed,
        std::time::Duration::from_secs(60),
    )
    .await?;
    let model = gateway
        .get_model(pumas_proto::gateway::v1::GetModelRequest {
            model_id: done.model_id.clone(),
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .and_then(|v| v.model)
        .context("model")?;
    assert_eq!(
        model.state,
        pumas_proto::common::v1::ModelState::Ready as i32,
        "{model:?}"
    );
    assert_ne!(model.model_id, "lora/sdxl/someone-elses-model");
    assert_eq!(
        model.model_type,
        pumas_proto::common::v1::ModelType::Llm as i32,
        "not retyped: {model:?}"
    );
    let paths: Vec<&str> = model.files.iter().map(|f| f.path.as_str()).collect();
    for kept in [
        "_metadata.json",
        "_overrides.json",
        "_.pumas-import.json",
        "model.safetensors",
    ] {
        assert!(paths.contains(&kept), "{kept} in {paths:?}");
    }
    // The library's own metadata.json is the library's; the repo's bytes are kept as they were.
    let dir = suite.root().join("shared-resources/models").join(&model.model_id);
    let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("metadata.json"))?)?;
    assert_eq!(ours["id"], model.model_id.as_str());
    assert_eq!(std::fs::read(dir.join("_metadata.json"))?, crafted.to_vec());
    assert!(
        !dir.join("overrides.json").exists(),
        "no overrides were made from the repo's file"
    );
    Ok(())
}
