//! What the hub says about downloads, end to end through `pumas up` and the hub emulator: the
//! card kept with the model, lineage both ways, the license/base-model/pipeline filters, a
//! refresh after the card changed, and `CheckUpdates` / `pumas outdated` after the repository
//! moved on.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use pumas_e2e::downloads::wait_for_download;
use pumas_e2e::hub::{HubEmulator, HubFile, HubRepo, fixtures};
use pumas_e2e::library::get_model;
use pumas_e2e::{Channel, Suite, channel, pumas_bin};
use pumas_proto::common::v1::{BaseModelRelation, ModelFilter};
use pumas_proto::fetch::v1::{DownloadState, FileSelection};
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::*;
use serde_json::json;
use tonic::Code;

type Client = ModelLibraryServiceClient<Channel>;

const README: &str = "---\nlicense: mit\nbase_model: acme/tiny-model\n---\n\n# Tiny GGUF\n\n![sample](./images/sample.png)\n\nQuantised **tiny** weights for [llama.cpp](https://github.com/ggml-org/llama.cpp).\n\n## Files\n";

/// GGUF quants of `acme/tiny-model`, as a quantiser would publish them; `q4_elements` changes
/// the Q4_K_M bytes (a new upload).
fn quants(q4_elements: u64, license: &str, likes: u64) -> HubRepo {
    let quant = |name: &str, ft: u32, elements: u64| {
        HubFile::lfs(name, Bytes::from(fixtures::gguf("llama", "tiny", ft, elements)))
    };
    HubRepo::new("acme/tiny-gguf")
        .file(HubFile::new("README.md", Bytes::from(README.replace("mit", license))))
        .file(HubFile::new("images/sample.png", Bytes::from_static(b"\x89PNG sample")))
        .file(quant("tiny-Q4_K_M.gguf", 15, q4_elements))
        .file(quant("tiny-Q8_0.gguf", 7, 8192))
        .tags(&["gguf", "llama", "text-generation", "base_model:quantized:acme/tiny-model"])
        .pipeline("text-generation")
        .library("gguf")
        .card(json!({"license": license, "base_model": "acme/tiny-model", "language": ["en", "fr"], "datasets": "acme/corpus"}))
        .popularity(5400, likes)
}

async fn download(client: &mut Client, repo: &str, quant: &str) -> anyhow::Result<String> {
    let started = client
        .start_download(StartDownloadRequest {
            repo_id: repo.to_owned(),
            selection: (!quant.is_empty()).then(|| FileSelection {
                gguf_quantization: quant.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = started.download.context("download")?.download_id;
    let done = wait_for_download(client, &id, DownloadState::Completed, Duration::from_secs(60)).await?;
    Ok(done.model_id)
}

async fn listed(client: &mut Client, filters: ModelFilter) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = client
        .list_models(ListModelsRequest {
            filters: Some(filters.clone()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .models
        .into_iter()
        .filter_map(|v| v.model.map(|m| m.model_id))
        .collect();
    // The ranked path (search) filters the same way.
    let mut searched: Vec<String> = client
        .search_models(SearchModelsRequest {
            query: "tiny".to_owned(),
            filters: Some(filters),
            page_size: 50,
            ..Default::default()
        })
        .await?
        .into_inner()
        .results
        .into_iter()
        .filter_map(|r| match r.result {
            Some(search_result::Result::Local(v)) => v.model.map(|m| m.model_id),
            _ => None,
        })
        .collect();
    ids.sort();
    searched.sort();
    anyhow::ensure!(ids == searched, "list {ids:?} and search {searched:?} disagree");
    Ok(ids)
}

async fn pumas(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = tokio::process::Command::new(pumas_bin()?)
        .args(args)
        .output()
        .await?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test]
async fn hub_cards_lineage_filters_refresh_and_updates() -> anyhow::Result<()> {
    let emulator = HubEmulator::start(vec![fixtures::tiny_model(1 << 16), quants(4096, "mit", 80)]).await?;
    let suite = Suite::start_with(
        &["--hub-endpoint", emulator.url.as_str(), "--hub-backoff-ms", "20"],
        &[],
    )
    .await?;
    let mut client = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let base = download(&mut client, "acme/tiny-model", "").await?;
    let quant = download(&mut client, "acme/tiny-gguf", "Q4_K_M").await?;

    // The card is kept: license, base model with its relation (and where it is in the library),
    // pipeline, languages, datasets, the first paragraph, the counters.
    let q = get_model(&mut client, &quant).await?;
    let hub = q.hub.clone().context("hub metadata")?;
    assert_eq!(hub.license, "mit");
    assert_eq!(q.license, "mit", "the card's license is the model's");
    assert_eq!(hub.pipeline_tag, "text-generation");
    assert_eq!(hub.library_name, "gguf");
    assert_eq!(hub.languages, vec!["en", "fr"]);
    assert_eq!(hub.datasets, vec!["acme/corpus"]);
    assert_eq!((hub.downloads, hub.likes), (5400, 80));
    assert!(hub.read_time.is_some());
    assert_eq!(hub.description, "Quantised tiny weights for llama.cpp.");
    assert_eq!(q.description, hub.description);
    assert_eq!(hub.base_models.len(), 1, "{:?}", hub.base_models);
    assert_eq!(hub.base_models[0].repo_id, "acme/tiny-model");
    assert_eq!(hub.base_models[0].relation, BaseModelRelation::Quantized as i32);
    assert_eq!(hub.base_models[0].model_ids, vec![base.clone()]);
    // The card's image came along with the quant and is its preview.
    assert_eq!(hub.image_path, "images/sample.png");
    let preview: Vec<(String, String)> = q
        .side_files
        .iter()
        .map(|s| (s.role.clone(), s.path.clone()))
        .collect();
    assert_eq!(
        preview,
        vec![("preview".to_owned(), "images/sample.png".to_owned())]
    );
    // What the GGUF says about itself stays beside it.
    assert_eq!(q.embedded.as_ref().and_then(|e| e.context_length), Some(4096));
    // Lineage the other way: the base lists its quant.
    let b = get_model(&mut client, &base).await?;
    assert_eq!(b.derived_model_ids, vec![quant.clone()]);
    assert_eq!(b.hub.as_ref().map(|h| h.license.as_str()), Some("apache-2.0"));

    // The hub's results say which selections the library holds: the quant, the whole repo.
    let hub = client
        .search_models(SearchModelsRequest {
            query: "tiny".to_owned(),
            include_hub: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let hub_result = |repo: &str| {
        hub.results.iter().find_map(|r| match &r.result {
            Some(search_result::Result::Hub(h)) if h.summary.as_ref().is_some_and(|s| s.repo_id == repo) => {
                Some(h.clone())
            }
            _ => None,
        })
    };
    let gguf = hub_result("acme/tiny-gguf").context("hub result for the quants")?;
    assert!(gguf.in_library);
    let held: Vec<(String, String, bool, bool)> = gguf
        .library_selections
        .iter()
        .map(|s| {
            (
                s.model_id.clone(),
                s.selection_label.clone(),
                s.whole_repository,
                s.at_hub_commit,
            )
        })
        .collect();
    assert_eq!(held, vec![(quant.clone(), "Q4_K_M".to_owned(), false, true)]);
    let whole = hub_result("acme/tiny-model").context("hub result for the base")?;
    assert!(
        whole.library_selections.len() == 1 && whole.library_selections[0].whole_repository,
        "{whole:?}"
    );

    // Filters: license (any case), base model by repo or by library id, pipeline tag.
    let by = |f: fn(&mut ModelFilter)| {
        let mut filter = ModelFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(
        listed(&mut client, by(|f| f.licenses = vec!["MIT".into()])).await?,
        vec![quant.clone()]
    );
    assert_eq!(
        listed(
            &mut client,
            by(|f| f.licenses = vec!["apache-2.0".into(), "mit".into()])
        )
        .await?,
        {
            let mut both = vec![base.clone(), quant.clone()];
            both.sort();
            both
        }
    );
    assert_eq!(
        listed(
            &mut client,
            by(|f| f.base_models = vec!["acme/tiny-model".into()])
        )
        .await?,
        vec![quant.clone()]
    );
    let by_library_id = ModelFilter {
        base_models: vec![base.clone()],
        ..Default::default()
    };
    assert_eq!(listed(&mut client, by_library_id).await?, vec![quant.clone()]);
    assert_eq!(
        listed(
            &mut client,
            by(|f| f.pipeline_tags = vec!["text-generation".into()])
        )
        .await?
        .len(),
        2
    );
    assert!(
        listed(&mut client, by(|f| f.licenses = vec!["gpl-3.0".into()]))
            .await?
            .is_empty()
    );

    // Nothing moved: everything is current.
    let checks = client
        .check_updates(CheckUpdatesRequest::default())
        .await?
        .into_inner()
        .models;
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(
        checks
            .iter()
            .all(|c| !c.outdated && c.error.is_none() && c.current_commit == c.pinned_commit),
        "{checks:?}"
    );
    let (code, out) = pumas(&["outdated", "--gateway", &suite.gateway]).await?;
    assert_eq!(code, 0, "{out}");

    // The quantiser re-uploads Q4_K_M and relicenses; the base model gains a file and changes
    // its config.
    emulator.push(quants(4160, "apache-2.0", 95))?;
    let mut moved = fixtures::tiny_model(1 << 16).file(HubFile::new("NOTICE", Bytes::from_static(b"new\n")));
    for f in &mut moved.files {
        if f.path == "config.json" {
            f.data = Bytes::from_static(
                br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8}"#,
            );
        }
    }
    emulator.push(moved)?;
    let checks = client
        .check_updates(CheckUpdatesRequest::default())
        .await?
        .into_inner()
        .models;
    let of = |id: &str| checks.iter().find(|c| c.model_id == id).cloned().context("check");
    let q_check = of(&quant)?;
    assert!(q_check.outdated, "{q_check:?}");
    assert_ne!(q_check.current_commit, q_check.pinned_commit);
    let changed: Vec<(String, i32)> = q_check.changes.iter().map(|c| (c.path.clone(), c.kind)).collect();
    // The card (relicensed) and the weights changed; the Q8_0 file is not this model's.
    assert_eq!(
        changed,
        vec![
            ("README.md".to_owned(), FileChangeKind::Modified as i32),
            ("tiny-Q4_K_M.gguf".to_owned(), FileChangeKind::Modified as i32),
        ]
    );
    let b_check = of(&base)?;
    let changed: Vec<(String, i32)> = b_check.changes.iter().map(|c| (c.path.clone(), c.kind)).collect();
    assert_eq!(
        changed,
        vec![
            ("NOTICE".to_owned(), FileChangeKind::Added as i32),
            ("config.json".to_owned(), FileChangeKind::Modified as i32),
        ]
    );
    let (code, out) = pumas(&["outdated", "--gateway", &suite.gateway, &quant]).await?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("OUTDATED") && out.contains("tiny-Q4_K_M.gguf"),
        "{out}"
    );

    // `download --update` fetches only what changed, into the same model.
    emulator.reset_log();
    let started = client
        .start_download(StartDownloadRequest {
            update_model_id: quant.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .download
        .context("update download")?;
    let fetched: Vec<&str> = started.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(fetched, vec!["README.md", "tiny-Q4_K_M.gguf"]);
    let done = wait_for_download(
        &mut client,
        &started.download_id,
        DownloadState::Completed,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.model_id, quant, "the same model, not a new one");
    let q = get_model(&mut client, &quant).await?;
    let new_q4 = emulator
        .file_sha256("acme/tiny-gguf", "tiny-Q4_K_M.gguf")
        .context("sha")?;
    assert!(
        q.files
            .iter()
            .any(|f| f.path == "tiny-Q4_K_M.gguf" && f.sha256 == format!("sha256:{new_q4}")),
        "{:?}",
        q.files
    );
    assert!(
        q.files.iter().any(|f| f.path == "images/sample.png"),
        "unchanged files stay"
    );
    let on_disk = suite
        .root()
        .join("shared-resources/models")
        .join(&quant)
        .join("tiny-Q4_K_M.gguf");
    assert_eq!(
        Some(bytes::Bytes::from(std::fs::read(&on_disk)?)),
        emulator.file_bytes("acme/tiny-gguf", "tiny-Q4_K_M.gguf")
    );
    let cdn_gets: Vec<String> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.origin == "cdn" && r.method == "GET")
        .map(|r| r.uri)
        .collect();
    assert!(
        !cdn_gets.is_empty() && cdn_gets.iter().all(|u| u.contains(&new_q4)),
        "only the changed weights came over: {cdn_gets:?}"
    );
    let check = client
        .check_updates(CheckUpdatesRequest {
            model_ids: vec![quant.clone()],
        })
        .await?
        .into_inner()
        .models;
    assert!(
        !check[0].outdated && check[0].pinned_commit == check[0].current_commit,
        "{check:?}"
    );
    let err = client
        .start_download(StartDownloadRequest {
            update_model_id: quant.clone(),
            ..Default::default()
        })
        .await
        .expect_err("nothing to update");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already at"), "{}", err.message());
    // The CLI, on the whole-repository model: the new file arrives too.
    let (code, out) = pumas(&["download", "--gateway", &suite.gateway, "--update", &base]).await?;
    assert_eq!(code, 0, "{out}");
    let b = get_model(&mut client, &base).await?;
    assert!(b.files.iter().any(|f| f.path == "NOTICE"), "{:?}", b.files);
    let (code, out) = pumas(&["outdated", "--gateway", &suite.gateway]).await?;
    assert_eq!(code, 0, "{out}");

    // Refresh reads the card again: the new license is the model's and a filter finds it.
    let refreshed = client
        .refresh_hub_metadata(RefreshHubMetadataRequest {
            model_ids: vec![quant.clone()],
        })
        .await?
        .into_inner()
        .models;
    assert_eq!(refreshed.len(), 1);
    assert_eq!(refreshed[0].hub_metadata.as_ref().map(|h| h.likes), Some(95));
    let q = get_model(&mut client, &quant).await?;
    assert_eq!(q.license, "apache-2.0");
    assert_eq!(
        listed(&mut client, by(|f| f.licenses = vec!["apache-2.0".into()]))
            .await?
            .len(),
        2
    );
    let (code, out) = pumas(&["refresh", "--gateway", &suite.gateway]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&base) && out.contains("95 likes"), "{out}");
    let (code, out) = pumas(&["show", "--gateway", &suite.gateway, &quant]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("acme/tiny-model (quantized)") && out.contains(&base),
        "{out}"
    );

    // Errors a user can cause: an unknown model, a model imported from local files.
    let err = client
        .check_updates(CheckUpdatesRequest {
            model_ids: vec!["llm/llama/nope".into()],
        })
        .await
        .expect_err("unknown model");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let inbox = suite.data_root.path().join("inbox");
    pumas_e2e::library::write_lora(&inbox.join("local.safetensors"), 3)?;
    let local = pumas_e2e::library::import(&mut client, &inbox.join("local.safetensors")).await?;
    let refreshed = client
        .refresh_hub_metadata(RefreshHubMetadataRequest {
            model_ids: vec![local.clone()],
        })
        .await?
        .into_inner()
        .models;
    assert_eq!(
        refreshed[0].error.as_ref().map(|e| e.code),
        Some(Code::FailedPrecondition as i32),
        "{refreshed:?}"
    );
    let err = client
        .list_models(ListModelsRequest {
            filters: Some(ModelFilter {
                base_models: vec![local],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("a local model is no base");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    Ok(())
}
