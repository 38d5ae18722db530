//! Downloads end to end: the real suite (`pumas up`) against the hub emulator, through the
//! gateway. Each test proves one promise of the fetch service with real files on disk.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pumas_e2e::Channel;
use pumas_e2e::downloads::{get_download as get, wait_for_download as wait_for};
use pumas_e2e::hub::{GOOD_TOKEN, HubEmulator, HubFile, HubRepo, NO_ACCESS_TOKEN, fixtures};
use pumas_e2e::library::get_model as model;
use pumas_e2e::{Suite, channel};
use pumas_proto::common::v1::ModelState;
use pumas_proto::fetch::v1::{DownloadState, FileSelection};
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::*;
use tonic::Code;
use tonic_types::StatusExt as _;

type Client = ModelLibraryServiceClient<Channel>;

async fn suite(
    emulator: &HubEmulator,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<(Suite, Client)> {
    let mut args = vec!["--hub-endpoint", emulator.url.as_str(), "--hub-backoff-ms", "20"];
    args.extend_from_slice(extra);
    let suite = Suite::start_with(&args, envs).await?;
    let client = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    Ok((suite, client))
}

fn hub_search(text: &str, page_size: i32, page_token: &str) -> SearchHubRequest {
    SearchHubRequest {
        search: Some(pumas_proto::fetch::v1::SearchHubRequest {
            query: text.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
            ..Default::default()
        }),
    }
}

fn start(repo: &str) -> StartDownloadRequest {
    StartDownloadRequest {
        repo_id: repo.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_download_arrives_in_parallel_parts_verified_and_lands_in_the_library() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let (suite, mut client) = suite(
        &emulator,
        &["--min-part-bytes", "262144", "--connections-per-file", "4"],
        &[],
    )
    .await?;
    let started = client
        .start_download(start("acme/tiny-model"))
        .await?
        .into_inner();
    let id = started.download.context("download")?.download_id;
    let done = wait_for(
        &mut client,
        &id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.bytes_done, done.bytes_total);
    assert!(done.files.iter().all(|f| f.verified), "{:?}", done.files);
    let commit = emulator.commit("acme/tiny-model").context("commit")?;
    assert_eq!(done.commit_sha, commit);

    // The weights came over four ranged connections from the CDN, the small files from the hub.
    let ranged: Vec<_> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.origin == "cdn" && r.method == "GET")
        .collect();
    assert_eq!(ranged.len(), 4, "{ranged:?}");
    assert!(
        ranged.iter().all(|r| r.range.is_some() && r.status == 206),
        "{ranged:?}"
    );

    // The library has it, READY, with the hub's hashes, in its canonical place.
    let record = model(&mut client, &done.model_id).await?;
    assert_eq!(record.state, ModelState::Ready as i32);
    assert_eq!(
        record.model_type,
        pumas_proto::common::v1::ModelType::Llm as i32,
        "{record:?}"
    );
    let weights = record
        .files
        .iter()
        .find(|f| f.path == "model.safetensors")
        .context("weights in the record")?;
    let expected = emulator
        .file_sha256("acme/tiny-model", "model.safetensors")
        .context("sha")?;
    assert_eq!(weights.sha256, format!("sha256:{expected}"));
    let on_disk = suite
        .root()
        .join("shared-resources/models")
        .join(&done.model_id)
        .join("model.safetensors");
    let bytes = std::fs::read(&on_disk).with_context(|| format!("reading {}", on_disk.display()))?;
    assert_eq!(
        Some(bytes.into()),
        emulator.file_bytes("acme/tiny-model", "model.safetensors")
    );
    assert!(
        suite
            .root()
            .join("shared-resources/models")
            .join(&done.model_id)
            .join("sub/notes.txt")
            .exists()
    );
    // The staging directory is gone; the downloads list shows the finished job.
    assert!(
        !suite
            .root()
            .join("launcher-data/cache/downloads")
            .join(&id)
            .exists()
    );
    let listed = client
        .list_downloads(ListDownloadsRequest::default())
        .await?
        .into_inner()
        .downloads;
    assert_eq!(listed.len(), 1);
    // A second start of the same commit after completion is a new, allowed download? No: the
    // library already has it, and the hub search says so.
    let hub = client
        .search_models(SearchModelsRequest {
            query: "tiny-model".to_owned(),
            include_hub: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let hub_hit = hub
        .results
        .iter()
        .find_map(|r| match &r.result {
            Some(search_result::Result::Hub(h))
                if h.summary.as_ref().is_some_and(|s| s.repo_id == "acme/tiny-model") =>
            {
                Some(h.clone())
            }
            _ => None,
        })
        .context("hub result")?;
    assert!(hub_hit.in_library, "{hub_hit:?}");
    Ok(())
}

#[tokio::test]
async fn the_model_is_visible_while_downloading_and_pause_resume_cancel_work() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(vec![
        fixtures::tiny_model(2 << 20),
        fixtures::big_model("acme/big-model", 1, 3 << 20),
    ])
    .await?;
    emulator
        .faults
        .throttle_bytes_per_second
        .store(512 << 10, Ordering::SeqCst);
    let (suite, mut client) = suite(&emulator, &["--checkpoint-bytes", "131072"], &[]).await?;
    let id = client
        .start_download(start("acme/tiny-model"))
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;

    // Early visibility: the small files are in, the weights are not; search and GetModel show it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let model_id = loop {
        let d = get(&mut client, &id).await?;
        if !d.model_id.is_empty() {
            break d.model_id;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the model never appeared in the index: {d:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let early = model(&mut client, &model_id).await?;
    assert_eq!(early.state, ModelState::Downloading as i32, "{early:?}");
    assert_eq!(early.family, "llama", "inferred from config.json: {early:?}");
    let found = client
        .search_models(SearchModelsRequest {
            query: "tiny".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(found.results.iter().any(|r| matches!(&r.result,
        Some(search_result::Result::Local(view)) if view.model.as_ref().is_some_and(|m| m.model_id == model_id))));

    // Pause keeps the bytes; resume continues from them.
    let paused = client
        .pause_download(PauseDownloadRequest {
            download_id: id.clone(),
        })
        .await?
        .into_inner()
        .download
        .context("download")?;
    assert_eq!(paused.state, DownloadState::Paused as i32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = get(&mut client, &id).await?;
    assert_eq!(held.state, DownloadState::Paused as i32);
    let sent_while_paused = emulator.body_bytes_sent();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        emulator.body_bytes_sent(),
        sent_while_paused,
        "bytes moved while paused"
    );
    let err = client
        .pause_download(PauseDownloadRequest {
            download_id: "dl-nope".to_owned(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    client
        .resume_download(ResumeDownloadRequest {
            download_id: id.clone(),
        })
        .await?;
    emulator
        .faults
        .throttle_bytes_per_second
        .store(0, Ordering::SeqCst);
    let done = wait_for(
        &mut client,
        &id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(
        model(&mut client, &done.model_id).await?.state,
        ModelState::Ready as i32
    );
    let err = client
        .resume_download(ResumeDownloadRequest {
            download_id: id.clone(),
        })
        .await
        .expect_err("completed");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Cancel removes the partial files and the model.
    emulator
        .faults
        .throttle_bytes_per_second
        .store(256 << 10, Ordering::SeqCst);
    let big = client
        .start_download(start("acme/big-model"))
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let big_model_id = loop {
        let d = get(&mut client, &big).await?;
        if !d.model_id.is_empty() && d.bytes_done > d.bytes_total / 10 {
            break d.model_id;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no progress: {d:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cancelled = client
        .cancel_download(CancelDownloadRequest {
            download_id: big.clone(),
        })
        .await?
        .into_inner()
        .download
        .context("download")?;
    assert_eq!(cancelled.state, DownloadState::Cancelled as i32);
    assert!(
        !suite
            .root()
            .join("launcher-data/cache/downloads")
            .join(&big)
            .exists()
    );
    let gone = client
        .get_model(GetModelRequest {
            model_id: big_model_id,
            include_chat_template: false,
            include_preview: false,
        })
        .await
        .expect_err("cancelled model");
    assert_eq!(gone.code(), Code::NotFound);
    Ok(())
}

#[tokio::test]
async fn hub_errors_map_to_clear_statuses() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let (_suite, mut client) = suite(&emulator, &["--hub-retries", "2"], &[]).await?;
    let cases: Vec<(StartDownloadRequest, Code, &str)> = vec![
        (start("acme/does-not-exist"), Code::NotFound, "HF_TOKEN"),
        (
            StartDownloadRequest {
                revision: "no-such-branch".to_owned(),
                ..start("acme/tiny-model")
            },
            Code::NotFound,
            "no-such-branch",
        ),
        (start("acme/gated-model"), Code::PermissionDenied, "HF_TOKEN"),
        (start("acme/private-model"), Code::NotFound, "private"),
        (start("not a repo"), Code::InvalidArgument, "org/name"),
        (
            StartDownloadRequest {
                selection: Some(FileSelection {
                    gguf_quantization: "Q5_K_M".to_owned(),
                    ..Default::default()
                }),
                ..start("acme/tiny-gguf")
            },
            Code::InvalidArgument,
            "Q4_K_M",
        ),
        (
            StartDownloadRequest {
                selection: Some(FileSelection {
                    allow_patterns: vec!["*.bin".to_owned()],
                    ..Default::default()
                }),
                ..start("acme/tiny-model")
            },
            Code::InvalidArgument,
            "matches no file",
        ),
    ];
    for (request, code, needle) in cases {
        let repo = request.repo_id.clone();
        let err = client.start_download(request).await.expect_err("must fail");
        assert_eq!(err.code(), code, "{repo}: {}", err.message());
        assert!(err.message().contains(needle), "{repo}: {}", err.message());
    }

    // 429: retried (honoring Retry-After), then RESOURCE_EXHAUSTED.
    emulator.faults.rate_limit_next.store(1, Ordering::SeqCst);
    let ok = client
        .get_download(GetDownloadRequest {
            download_id: "dl-none".to_owned(),
        })
        .await
        .expect_err("unknown download");
    assert_eq!(ok.code(), Code::NotFound);
    let searched = client.search_hub(hub_search("tiny", 0, "")).await?.into_inner();
    assert!(!searched.results.is_empty(), "retried after one 429");
    emulator.faults.rate_limit_next.store(100, Ordering::SeqCst);
    let err = client
        .search_hub(hub_search("other", 0, ""))
        .await
        .expect_err("rate limited");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    emulator.faults.rate_limit_next.store(0, Ordering::SeqCst);

    // Hub down: UNAVAILABLE naming the hub.
    emulator.faults.down.store(true, Ordering::SeqCst);
    let err = client
        .start_download(start("acme/tiny-model"))
        .await
        .expect_err("hub down");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("hub"), "{}", err.message());
    Ok(())
}

#[tokio::test]
async fn a_token_opens_gated_repos_and_never_leaves_the_hub_host() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    // The token from a file (HF_TOKEN_PATH, as the Hub's own tools read it): no secret in the
    // environment or the process list.
    let secrets = tempfile::tempdir()?;
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{GOOD_TOKEN}\n"))?;
    let token_path = token_file.display().to_string();
    let (running, mut client) = suite(&emulator, &[], &[("HF_TOKEN_PATH", &token_path)]).await?;
    let id = client
        .start_download(start("acme/gated-model"))
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    wait_for(
        &mut client,
        &id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    let requests = emulator.requests();
    let hub_with_token = requests
        .iter()
        .filter(|r| r.origin == "hub" && r.authorization.as_deref() == Some(&format!("Bearer {GOOD_TOKEN}")))
        .count();
    assert!(hub_with_token > 0);
    let cdn: Vec<_> = requests.iter().filter(|r| r.origin == "cdn").collect();
    assert!(!cdn.is_empty());
    assert!(
        cdn.iter().all(|r| r.authorization.is_none()),
        "token sent to the CDN: {cdn:?}"
    );
    assert!(
        !running.process.log().contains(GOOD_TOKEN),
        "the token is in the log"
    );
    drop(running);

    // A token without access to the gated repo: PERMISSION_DENIED saying so.
    let (_suite, mut client) = suite(&emulator, &[], &[("HF_TOKEN", NO_ACCESS_TOKEN)]).await?;
    let err = client
        .start_download(start("acme/gated-model"))
        .await
        .expect_err("no access");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("request access"), "{}", err.message());
    Ok(())
}

#[tokio::test]
async fn bad_bytes_are_retried_and_persistent_corruption_fails_without_keeping_anything() -> anyhow::Result<()>
{
    let emulator = HubEmulator::start(vec![fixtures::tiny_model(1 << 20), fixtures::tiny_gguf()]).await?;
    let (suite, mut client) = suite(&emulator, &["--stall-timeout-secs", "1"], &[]).await?;
    // One corrupted body and one stalled connection: both recovered from.
    emulator.faults.corrupt_next.store(1, Ordering::SeqCst);
    emulator.faults.stall_after_bytes.store(100_000, Ordering::SeqCst);
    let id = client
        .start_download(StartDownloadRequest {
            selection: Some(FileSelection {
                ignore_patterns: vec!["*.md".to_owned()],
                ..Default::default()
            }),
            ..start("acme/tiny-model")
        })
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    let done = wait_for(
        &mut client,
        &id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    assert!(done.files.iter().all(|f| f.path != "README.md"));
    assert_eq!(
        emulator.faults.corrupt_next.load(Ordering::SeqCst),
        0,
        "the corruption fired"
    );
    assert_eq!(
        emulator.faults.stall_after_bytes.load(Ordering::SeqCst),
        0,
        "the stall fired"
    );
    let record = model(&mut client, &done.model_id).await?;
    assert_eq!(record.state, ModelState::Ready as i32);

    // Every body corrupted: the job fails with DATA_LOSS, the model shows the error, and no
    // unverified file is in the library.
    emulator.faults.corrupt_next.store(1000, Ordering::SeqCst);
    let id = client
        .start_download(StartDownloadRequest {
            selection: Some(FileSelection {
                gguf_quantization: "Q4_K_M".to_owned(),
                ..Default::default()
            }),
            ..start("acme/tiny-gguf")
        })
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    let failed = wait_for(&mut client, &id, DownloadState::Failed, Duration::from_secs(60)).await?;
    let error = failed.error.context("error")?;
    assert_eq!(error.reason, "DATA_LOSS", "{error:?}");
    assert!(error.message.contains("expected hash"), "{error:?}");
    if !failed.model_id.is_empty() {
        let record = model(&mut client, &failed.model_id).await?;
        assert_eq!(record.state, ModelState::Error as i32);
        let dir = suite
            .root()
            .join("shared-resources/models")
            .join(&failed.model_id);
        assert!(!dir.join("tiny-Q4_K_M.gguf").exists());
    }
    // Resuming after the hub heals finishes it.
    emulator.faults.corrupt_next.store(0, Ordering::SeqCst);
    client
        .resume_download(ResumeDownloadRequest {
            download_id: id.clone(),
        })
        .await?;
    let done = wait_for(
        &mut client,
        &id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    let names: Vec<&str> = done.files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        names.contains(&"tiny-Q4_K_M.gguf") && names.contains(&"mmproj-tiny-f16.gguf"),
        "{names:?}"
    );
    assert!(!names.contains(&"tiny-Q8_0.gguf"), "{names:?}");
    let record = model(&mut client, &done.model_id).await?;
    assert_eq!(record.state, ModelState::Ready as i32);
    assert_eq!(
        record.format,
        pumas_proto::common::v1::ModelFormat::Gguf as i32,
        "{record:?}"
    );
    // What the GGUF says about itself is kept; the hub card's license comes first.
    let embedded = record.embedded.clone().context("embedded metadata")?;
    assert_eq!(embedded.context_length, Some(4096));
    assert_eq!(embedded.base_model, "tiny base");
    assert_eq!(embedded.license, "apache-2.0");
    assert_eq!(
        embedded.values.get("general.name").map(String::as_str),
        Some("tiny")
    );
    assert_eq!(record.license, "mit", "{record:?}");
    // The quant's vision projector came with it, and the record says which file it is.
    assert_eq!(
        record.vision_projector_files,
        vec!["mmproj-tiny-f16.gguf".to_owned()]
    );
    Ok(())
}

#[tokio::test]
async fn unsafe_file_names_from_the_hub_are_refused() -> anyhow::Result<()> {
    let evil = HubRepo::new("acme/evil")
        .file(HubFile::new("config.json", bytes::Bytes::from_static(b"{}")))
        .file(HubFile::new("../escape.txt", bytes::Bytes::from_static(b"owned")));
    let emulator = HubEmulator::start(vec![evil]).await?;
    let (suite, mut client) = suite(&emulator, &[], &[]).await?;
    let err = client
        .start_download(start("acme/evil"))
        .await
        .expect_err("unsafe");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("../escape.txt"), "{}", err.message());
    let downloads = suite.root().join("launcher-data/cache/downloads");
    assert!(!suite.root().join("launcher-data/cache/escape.txt").exists());
    let entries: Vec<_> = std::fs::read_dir(&downloads)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(entries.is_empty(), "nothing staged: {entries:?}");
    Ok(())
}

#[tokio::test]
async fn files_already_in_a_hugging_face_cache_are_adopted_not_downloaded() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let cache = tempfile::tempdir()?;
    let sha = emulator
        .file_sha256("acme/tiny-model", "model.safetensors")
        .context("sha")?;
    let blobs = cache.path().join("models--acme--tiny-model/blobs");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(
        blobs.join(&sha),
        emulator
            .file_bytes("acme/tiny-model", "model.safetensors")
            .context("bytes")?,
    )?;
    let cache_path = cache.path().to_str().context("utf-8")?.to_owned();
    let (_suite, mut client) = suite(&emulator, &[], &[("HF_HUB_CACHE", cache_path.as_str())]).await?;
    let id = client
        .start_download(start("acme/tiny-model"))
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    let done = wait_for(
        &mut client,
        &id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    let cdn = emulator
        .requests()
        .into_iter()
        .filter(|r| r.origin == "cdn")
        .count();
    assert_eq!(cdn, 0, "the weights came from the local cache, not the CDN");
    let record = model(&mut client, &done.model_id).await?;
    assert!(record.files.iter().any(|f| f.sha256 == format!("sha256:{sha}")));
    Ok(())
}

#[tokio::test]
async fn hub_search_is_cached_and_served_stale_when_the_hub_is_down() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let (suite, mut client) = suite(
        &emulator,
        &[
            "--search-cache-ttl-secs",
            "1",
            "--search-stale-grace-ms",
            "200",
            "--hub-retries",
            "1",
        ],
        &[],
    )
    .await?;
    let ask = || hub_search("tiny", 2, "");
    let repos = |r: &SearchHubResponse| -> Vec<String> {
        r.results
            .iter()
            .filter_map(|h| h.summary.as_ref().map(|s| s.repo_id.clone()))
            .collect()
    };
    let first = client.search_hub(ask()).await?.into_inner();
    assert!(!first.from_cache);
    assert_eq!(repos(&first).len(), 2);
    assert!(!first.next_page_token.is_empty(), "page size 2 of 4 results");
    let again = client.search_hub(ask()).await?.into_inner();
    assert!(again.from_cache && !again.stale);
    assert_eq!(repos(&again), repos(&first));
    let second_page = client
        .search_hub(hub_search("tiny", 2, &first.next_page_token))
        .await?
        .into_inner();
    assert!(!repos(&second_page).is_empty());
    assert!(repos(&second_page).iter().all(|m| !repos(&first).contains(m)));
    assert!(suite.root().join("shared-resources/cache/search.sqlite").exists());

    // Past the TTL with the hub down: the stale answer, marked stale.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    emulator.faults.down.store(true, Ordering::SeqCst);
    let stale = client.search_hub(ask()).await?.into_inner();
    assert!(stale.from_cache && stale.stale, "{stale:?}");
    assert_eq!(repos(&stale), repos(&first));
    // Nothing cached for this query: UNAVAILABLE.
    let err = client
        .search_hub(hub_search("never-asked", 0, ""))
        .await
        .expect_err("down");
    assert_eq!(err.code(), Code::Unavailable);

    // Slow hub: the stale answer goes out after the grace period and the refresh lands later.
    emulator.faults.down.store(false, Ordering::SeqCst);
    emulator.faults.api_delay_ms.store(1000, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let slow = client.search_hub(ask()).await?.into_inner();
    assert!(
        slow.stale && started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    emulator.faults.api_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = client.search_hub(ask()).await?.into_inner();
    assert!(
        fresh.from_cache && !fresh.stale,
        "the background refresh updated the cache: {fresh:?}"
    );
    Ok(())
}

async fn pumas(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = tokio::process::Command::new(pumas_e2e::pumas_bin()?)
        .args(args)
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn the_cli_searches_the_hub_downloads_and_lists_downloads() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let (suite, _client) = suite(&emulator, &[], &[]).await?;
    let gw = suite.gateway.as_str();
    let (ok, out, err) = pumas(&["hub", "search", "--gateway", gw, "tiny", "--sort", "downloads"]).await?;
    assert!(ok, "{out}{err}");
    let gguf = out.find("acme/tiny-gguf").context("gguf listed")?;
    let model = out.find("acme/tiny-model").context("model listed")?;
    assert!(gguf < model, "sorted by downloads: {out}");

    let (ok, out, err) = pumas(&["download", "--gateway", gw, "acme/tiny-gguf", "--quant", "q8_0"]).await?;
    assert!(ok, "{out}{err}");
    assert!(out.contains("done: llm/llama/tiny-gguf"), "{out}{err}");
    let (ok, out, _) = pumas(&["downloads", "--gateway", gw]).await?;
    assert!(
        ok && out.contains("completed") && out.contains("acme/tiny-gguf"),
        "{out}"
    );
    let (ok, out, _) = pumas(&["hub", "search", "--gateway", gw, "tiny-gguf"]).await?;
    assert!(ok && out.contains("[in library]"), "{out}");

    let (ok, _, err) = pumas(&["download", "--gateway", gw, "acme/nope"]).await?;
    assert!(
        !ok && err.contains("not found") && err.contains("[NotFound]"),
        "{err}"
    );
    let (ok, _, err) = pumas(&["pause", "--gateway", gw, "dl-unknown"]).await?;
    assert!(!ok && err.contains("dl-unknown"), "{err}");
    Ok(())
}

#[tokio::test]
async fn hub_model_info_and_files_come_from_the_hub_and_an_unreachable_hub_is_unavailable()
-> anyhow::Result<()> {
    use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
    use pumas_proto::fetch::v1::{GetHubModelRequest, ListHubFilesRequest, SearchHubRequest as FetchSearch};
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let (running, _client) = suite(&emulator, &["--hub-retries", "0"], &[]).await?;
    let mut fetch = FetchServiceClient::new(channel(&running.fetch).await?);
    let info = fetch
        .get_hub_model(GetHubModelRequest {
            repo_id: "acme/tiny-model".into(),
            revision: "v1.0".into(),
        })
        .await?
        .into_inner()
        .model
        .context("model")?;
    assert_eq!(Some(info.commit_sha.clone()), emulator.commit("acme/tiny-model"));
    assert_eq!(info.license, "apache-2.0");
    assert!(info.card_data_json.contains("tiny"), "{}", info.card_data_json);
    assert!(info.safetensors_parameter_count.unwrap_or(0) > 0);
    let weights = info
        .files
        .iter()
        .find(|f| f.path == "model.safetensors")
        .context("weights")?;
    let sha = emulator
        .file_sha256("acme/tiny-model", "model.safetensors")
        .context("sha")?;
    assert_eq!(weights.lfs_sha256, format!("sha256:{sha}"));
    let gguf = fetch
        .get_hub_model(GetHubModelRequest {
            repo_id: "acme/tiny-gguf".into(),
            revision: String::new(),
        })
        .await?
        .into_inner()
        .model
        .context("model")?;
    assert_eq!(gguf.gguf_quantizations, vec!["F16", "Q4_K_M", "Q8_0"]);
    let sub = fetch
        .list_hub_files(ListHubFilesRequest {
            repo_id: "acme/tiny-model".into(),
            revision: "main".into(),
            path: "sub".into(),
            recursive: false,
        })
        .await?
        .into_inner();
    let paths: Vec<&str> = sub.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["sub/notes.txt"]);
    let err = fetch
        .list_hub_files(ListHubFilesRequest {
            repo_id: "acme/tiny-model".into(),
            revision: "main".into(),
            path: "../x".into(),
            recursive: false,
        })
        .await
        .expect_err("unsafe path");
    assert_eq!(err.code(), Code::InvalidArgument);

    // The hub keeps failing: after 5 failures in a row the breaker answers at once.
    emulator.faults.down.store(true, Ordering::SeqCst);
    for n in 0..5 {
        let err = fetch
            .search_hub(FetchSearch {
                query: format!("q{n}"),
                ..Default::default()
            })
            .await
            .expect_err("down");
        assert_eq!(err.code(), Code::Unavailable);
    }
    let err = fetch
        .search_hub(FetchSearch {
            query: "q-next".into(),
            ..Default::default()
        })
        .await
        .expect_err("breaker open");
    assert!(err.message().contains("in a row failed"), "{}", err.message());
    drop(running);

    // No hub at all (nothing listens on the endpoint): UNAVAILABLE naming it.
    let no_hub = Suite::start_with(&["--hub-backoff-ms", "20", "--hub-retries", "1"], &[]).await?;
    let mut client = ModelLibraryServiceClient::new(channel(&no_hub.gateway).await?);
    let err = client
        .start_download(start("acme/tiny-model"))
        .await
        .expect_err("no hub");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("127.0.0.1:9"), "{}", err.message());
    Ok(())
}

#[tokio::test]
async fn a_downloaded_model_can_be_exposed_as_a_hugging_face_cache() -> anyhow::Result<()> {
    use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
    use pumas_proto::mapper::v1::{PutMappingConfigRequest, WatchMappingJobRequest};
    let emulator = HubEmulator::start(fixtures::standard()).await?;
    let (suite, mut client) = suite(&emulator, &[], &[]).await?;
    let cache = suite.data_root.path().join("hf-cache");
    let mut mapper = MapperServiceClient::new(channel(&suite.mapper).await?);
    mapper
        .put_mapping_config(PutMappingConfigRequest {
            app: "hf".into(),
            config_toml: format!("kind = \"hf-cache\"\nroot = \"{}\"\n", cache.display()),
        })
        .await?;
    let id = client
        .start_download(start("acme/tiny-model"))
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    wait_for(
        &mut client,
        &id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    // The mapper follows the feed; apply once more to be sure, then look at the layout.
    let job = client
        .apply_mapping(ApplyMappingRequest {
            app: "hf".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .context("job")?;
    let mut stream = mapper
        .watch_mapping_job(WatchMappingJobRequest {
            job_id: job.status.context("status")?.job_id,
        })
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    let commit = emulator.commit("acme/tiny-model").context("commit")?;
    let repo = cache.join("models--acme--tiny-model");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main"))?, commit);
    let snapshot = repo.join("snapshots").join(&commit);
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors"))?,
        emulator
            .file_bytes("acme/tiny-model", "model.safetensors")
            .context("bytes")?
    );
    assert_eq!(
        std::fs::read_to_string(snapshot.join("sub/notes.txt"))?,
        "notes in a sub folder\n"
    );
    let text = std::fs::read_link(snapshot.join("sub/notes.txt"))?;
    assert!(text.starts_with("../../../blobs"), "{}", text.display());
    Ok(())
}

#[tokio::test]
async fn two_quants_of_one_repo_are_two_clearly_named_models() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(vec![fixtures::tiny_gguf()]).await?;
    let (_suite, mut client) = suite(&emulator, &[], &[]).await?;
    // Slow bodies keep the first download running while the next ones are asked for.
    emulator
        .faults
        .throttle_bytes_per_second
        .store(4_000, Ordering::SeqCst);
    let quant = |q: &str| StartDownloadRequest {
        selection: Some(FileSelection {
            gguf_quantization: q.to_owned(),
            ..Default::default()
        }),
        ..start("acme/tiny-gguf")
    };
    let mut ids = Vec::new();
    for (i, q) in ["Q4_K_M", "Q8_0"].into_iter().enumerate() {
        let id = client
            .start_download(quant(q))
            .await?
            .into_inner()
            .download
            .context("download")?
            .download_id;
        ids.push(id);
        if i == 0 {
            // The same files of the same commit again: one download, named as the resource.
            let err = client
                .start_download(quant(q))
                .await
                .expect_err("a second Q4_K_M");
            assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
            let info = err
                .get_error_details()
                .resource_info()
                .cloned()
                .context("resource info")?;
            assert_eq!(info.resource_name, ids[0]);
            assert!(err.message().contains("already downloading"), "{}", err.message());
        }
    }
    emulator
        .faults
        .throttle_bytes_per_second
        .store(0, Ordering::SeqCst);
    let mut models = Vec::new();
    for id in &ids {
        let done = wait_for(&mut client, id, DownloadState::Completed, Duration::from_secs(60)).await?;
        let record = model(&mut client, &done.model_id).await?;
        models.push((record.model_id, record.display_name));
    }
    assert_eq!(
        models,
        [
            (
                "llm/llama/tiny-gguf-q4-k-m".to_owned(),
                "tiny-gguf-Q4_K_M".to_owned()
            ),
            ("llm/llama/tiny-gguf-q8-0".to_owned(), "tiny-gguf-Q8_0".to_owned()),
        ]
    );
    Ok(())
}
