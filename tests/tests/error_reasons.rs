//! Every job error that reaches a client names its reason the way the contract says: an
//! `ErrorReason` name (`DATA_LOSS`, `BACKEND_UNAVAILABLE`, ...), never a gRPC code name or a
//! Rust debug name, whichever service recorded it: a failed download, a failed import item, a
//! failed mapping job, a model left in error, a batch item that was not found.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use pumas_e2e::downloads::{start_download, wait_for_download};
use pumas_e2e::hub::{HubEmulator, fixtures};
use pumas_e2e::library::import_items;
use pumas_e2e::{Suite, channel, serve_role};
use pumas_proto::common::v1::{ErrorReason, ErrorStatus, ImportMode, JobState};
use pumas_proto::fetch::v1::DownloadState;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::*;
use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;

fn start(repo: &str) -> StartDownloadRequest {
    StartDownloadRequest {
        repo_id: repo.to_owned(),
        ..Default::default()
    }
}

/// The reason is a contract name, and the one the code calls for.
fn check(what: &str, error: &ErrorStatus, want: &str) {
    let full = format!("ERROR_REASON_{}", error.reason);
    let reason = ErrorReason::from_str_name(&full);
    assert!(
        reason.is_some_and(|r| r != ErrorReason::Unspecified),
        "{what}: `{}` is not an ErrorReason name: {error:?}",
        error.reason
    );
    assert_eq!(error.reason, want, "{what}: {error:?}");
    assert!(!error.message.is_empty(), "{what}: a message a person can act on");
}

#[tokio::test]
async fn job_errors_carry_contract_reasons_through_the_gateway() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let suite = Suite::start_with(&["--hub-endpoint", &emulator.url, "--hub-backoff-ms", "20"], &[]).await?;
    let mut client = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);

    // A download whose bytes never match: DATA_LOSS on the download and on its model.
    emulator.faults.corrupt_next.store(1000, Ordering::SeqCst);
    let id = start_download(&mut client, start("acme/tiny-model")).await?;
    let corrupt = wait_for_download(&mut client, &id, DownloadState::Failed, Duration::from_secs(60)).await?;
    check(
        "corrupt download",
        corrupt.error.as_ref().context("error")?,
        "DATA_LOSS",
    );
    emulator.faults.corrupt_next.store(0, Ordering::SeqCst);

    // A hub that goes down once the download is accepted: BACKEND_UNAVAILABLE, not UNAVAILABLE.
    emulator
        .faults
        .throttle_bytes_per_second
        .store(64 << 10, Ordering::SeqCst);
    let id = start_download(&mut client, start("acme/tiny-gguf")).await?;
    emulator.faults.down.store(true, Ordering::SeqCst);
    emulator.faults.cut_after_bytes.store(1, Ordering::SeqCst);
    let down = wait_for_download(&mut client, &id, DownloadState::Failed, Duration::from_secs(120)).await?;
    check(
        "hub down",
        down.error.as_ref().context("error")?,
        "BACKEND_UNAVAILABLE",
    );
    emulator.faults.down.store(false, Ordering::SeqCst);

    // An import item that is not a model.
    let dir = tempfile::tempdir()?;
    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, b"just some text, not a model")?;
    let items = import_items(&mut client, &text, ImportMode::Copy).await?;
    let item = items.first().context("an item")?;
    check(
        "import of a text file",
        item.error.as_ref().context("error")?,
        "INVALID_ARGUMENT",
    );

    // A batch item that is not found.
    let batch = client
        .batch_resolve_model_dependency_requirements(BatchResolveModelDependencyRequirementsRequest {
            model_ids: vec!["lora/nobody/nothing".to_owned()],
            platform_context: Some(pumas_proto::common::v1::PlatformContext {
                os: "linux".to_owned(),
                arch: "x86_64".to_owned(),
                ..Default::default()
            }),
            backend_key: "torch-cpu".to_owned(),
            expected_dependency_contract_version: None,
        })
        .await?
        .into_inner();
    check(
        "batch item",
        batch
            .items
            .first()
            .and_then(|i| i.error.as_ref())
            .context("error")?,
        "NOT_FOUND",
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_mapping_job_carries_a_contract_reason() -> anyhow::Result<()> {
    // A mapper whose index is not there: the apply job fails, and says why in contract terms.
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.to_str().context("utf-8")?.to_owned();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?;
    let dead_addr = dead.local_addr()?.to_string();
    drop(dead);
    let args = ["--data-root", root_arg.as_str(), "--index", dead_addr.as_str()];
    let (_mapper, addr) = serve_role("mapper", "127.0.0.1:0", &args, dir.path()).await?;
    let mut mapper = MapperServiceClient::new(channel(&addr).await?);
    let app = dir.path().join("comfy");
    mapper
        .put_mapping_config(pumas_proto::mapper::v1::PutMappingConfigRequest {
            app: "comfy".to_owned(),
            config_toml: format!("kind = \"comfyui\"\nroot = \"{}\"\n", app.display()),
        })
        .await?;
    let job = mapper
        .apply_mapping(pumas_proto::mapper::v1::ApplyMappingRequest {
            app: "comfy".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job;
    let status = pumas_e2e::library::mapping_job_end(&mut mapper, job).await?;
    assert_eq!(status.state, JobState::Failed as i32, "{status:?}");
    check(
        "mapping job without an index",
        status.error.as_ref().context("error")?,
        "FAILED_PRECONDITION",
    );
    Ok(())
}
