//! A download survives SIGKILL of the fetch service: started again on the same data root, it
//! continues from the bytes already on disk, fetching again only what its last checkpoint did
//! not cover. The fetch service runs with its default settings, as users run it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pumas_e2e::hub::{HubEmulator, fixtures};
use pumas_e2e::{channel, serve_role};
use pumas_proto::common::v1::ModelState;
use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
use pumas_proto::fetch::v1::{DownloadState, GetDownloadRequest, StartDownloadRequest};
use pumas_proto::index::v1::GetModelRequest;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;

/// The file's size: 64 MiB in CI (`PUMAS_RESUME_TEST_MIB` sets another, e.g. 256 to measure
/// the case in docs/DOWNLOADS.md).
fn file_bytes() -> u64 {
    std::env::var("PUMAS_RESUME_TEST_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(64)
        << 20
}

/// Parts in flight at once with the default settings: parts of size/16 clamped to 8..16 MiB,
/// taken by 16 connections.
fn parts_in_flight(size: u64) -> u64 {
    let part = (size / 16).clamp(8 << 20, 16 << 20);
    size.div_ceil(part).min(16)
}

/// The default `--checkpoint-bytes`.
const CHECKPOINT: u64 = 2 << 20;
/// Bytes the emulator has written to sockets that the killed process never read.
const IN_TRANSIT: u64 = 4 << 20;

#[tokio::test]
async fn a_download_continues_after_sigkill_from_the_bytes_on_disk() -> anyhow::Result<()> {
    let file_bytes = file_bytes();
    let parts = parts_in_flight(file_bytes);
    let emulator = HubEmulator::start(vec![fixtures::big_model("acme/big-model", 1, file_bytes)]).await?;
    // 4 connections at 1 MiB/s each: the kill lands mid-transfer.
    emulator
        .faults
        .throttle_bytes_per_second
        .store(2 << 20, Ordering::SeqCst);
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.to_str().context("utf-8")?.to_owned();
    let (_index, index_addr) =
        serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir.path()).await?;
    let fetch_args = |index: &str| -> Vec<String> {
        [
            "--data-root",
            &root_arg,
            "--index",
            index,
            "--hub-endpoint",
            &emulator.url,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let args = fetch_args(&index_addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (fetch, fetch_addr) = serve_role("fetch", "127.0.0.1:0", &args, dir.path()).await?;
    let mut client = FetchServiceClient::new(channel(&fetch_addr).await?);
    let id = client
        .start_download(StartDownloadRequest {
            repo_id: "acme/big-model".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = client
            .get_download(GetDownloadRequest {
                download_id: id.clone(),
            })
            .await?
            .into_inner()
            .download
            .context("download")?;
        if d.bytes_done >= file_bytes / 2 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no progress: {d:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    fetch.kill().await?;
    let sent_before_kill = emulator.body_bytes_sent();
    assert!(sent_before_kill < file_bytes, "killed mid-transfer");

    // Start it again on the same data root, unthrottled: the job goes on by itself.
    emulator
        .faults
        .throttle_bytes_per_second
        .store(0, Ordering::SeqCst);
    let (_fetch, fetch_addr) = serve_role("fetch", "127.0.0.1:0", &args, dir.path()).await?;
    let mut client = FetchServiceClient::new(channel(&fetch_addr).await?);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let done = loop {
        let d = client
            .get_download(GetDownloadRequest {
                download_id: id.clone(),
            })
            .await?
            .into_inner()
            .download
            .context("download")?;
        if d.state == DownloadState::Completed as i32 {
            break d;
        }
        if d.state == DownloadState::Failed as i32 || tokio::time::Instant::now() > deadline {
            bail!("download did not complete after the restart: {d:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let total: u64 = done.bytes_total;
    let refetched = emulator.body_bytes_sent().saturating_sub(total);
    let bound = parts * CHECKPOINT + IN_TRANSIT;
    println!(
        "resume after SIGKILL (default settings): {total} bytes, {sent_before_kill} sent before the kill, {refetched} fetched twice (bound {bound} = {parts} parts x {CHECKPOINT} + {IN_TRANSIT} in transit)"
    );
    assert!(
        refetched <= bound,
        "fetched {refetched} bytes twice; a crash may cost at most about one checkpoint per part"
    );
    let mut index = IndexServiceClient::new(channel(&index_addr).await?);
    let record = index
        .get_model(GetModelRequest {
            model_id: done.model_id.clone(),
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .context("model")?;
    assert_eq!(record.state, ModelState::Ready as i32);
    let sha = emulator
        .file_sha256("acme/big-model", "model.safetensors")
        .context("sha")?;
    assert!(record.files.iter().any(|f| f.sha256 == format!("sha256:{sha}")));
    Ok(())
}

/// Starts an index and a fetch service with `extra` fetch flags.
async fn index_and_fetch(
    emulator: &HubEmulator,
    dir: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<(Vec<pumas_e2e::Process>, String)> {
    let root = dir.join("root");
    let root_arg = root.to_str().context("utf-8")?.to_owned();
    let (index, index_addr) = serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir).await?;
    let mut args = vec![
        "--data-root",
        root_arg.as_str(),
        "--index",
        index_addr.as_str(),
        "--hub-endpoint",
        emulator.url.as_str(),
    ];
    args.extend_from_slice(extra);
    let (fetch, fetch_addr) = serve_role("fetch", "127.0.0.1:0", &args, dir).await?;
    Ok((vec![index, fetch], fetch_addr))
}

async fn start(client: &mut FetchServiceClient<pumas_e2e::Channel>, repo: &str) -> anyhow::Result<String> {
    Ok(client
        .start_download(StartDownloadRequest {
            repo_id: repo.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id)
}

#[tokio::test]
async fn queued_downloads_run_by_priority_under_one_bandwidth_cap() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(vec![
        fixtures::big_model("acme/first", 1, 1 << 20),
        fixtures::big_model("acme/low", 1, 1 << 20),
        fixtures::big_model("acme/high", 1, 1 << 20),
    ])
    .await?;
    let dir = tempfile::tempdir()?;
    // One download at a time, all of them sharing 2 MiB/s.
    let (_processes, fetch_addr) = index_and_fetch(
        &emulator,
        dir.path(),
        &["--max-downloads", "1", "--bandwidth-limit", "2097152"],
    )
    .await?;
    let mut client = FetchServiceClient::new(channel(&fetch_addr).await?);
    let started = std::time::Instant::now();
    let first = start(&mut client, "acme/first").await?;
    let low = start(&mut client, "acme/low").await?;
    let high = start(&mut client, "acme/high").await?;
    client
        .set_download_priority(pumas_proto::fetch::v1::SetDownloadPriorityRequest {
            download_id: high.clone(),
            priority: 10,
        })
        .await?;
    let mut finished: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while finished.len() < 3 {
        for id in [&first, &low, &high] {
            let d = client
                .get_download(GetDownloadRequest {
                    download_id: id.clone(),
                })
                .await?
                .into_inner()
                .download
                .context("download")?;
            if d.state == DownloadState::Failed as i32 {
                bail!("{id} failed: {d:?}");
            }
            if d.state == DownloadState::Completed as i32 && !finished.contains(id) {
                finished.push(id.clone());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not all finished: {finished:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        finished,
        vec![first, high, low],
        "the higher priority ran before the older one"
    );
    // 3 MiB through a 2 MiB/s cap (with a burst of a tenth of a second) cannot take under 1.3 s.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1300),
        "the cap was not enforced: {elapsed:?}"
    );
    Ok(())
}
