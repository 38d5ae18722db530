//! Merged search: hub results say whether the library already has them (same repo at the same
//! commit) or is downloading them.

use pumas_e2e::fakes::FakeFetch;
use pumas_e2e::*;
use pumas_index::metadata::{Detection, FileEntry, Metadata, SCHEMA_VERSION, Source};
use pumas_proto::fetch::v1::{Download, DownloadState, HubModelSummary, SearchHubRequest as FetchSearch};
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{HubResultsState, SearchHubRequest, SearchModelsRequest, search_result};

fn hub_model(models_dir: &std::path::Path, id: &str, repo: &str, commit: &str) {
    let dir = models_dir.join(id);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("w.safetensors"), [0u8; 16]).expect("weights");
    let metadata = Metadata {
        schema_version: SCHEMA_VERSION,
        id: id.into(),
        display_name: "In Library Lora".into(),
        model_type: "lora".into(),
        family: "sdxl".into(),
        architecture: String::new(),
        format: "safetensors".into(),
        precision: String::new(),
        quantization: String::new(),
        parameter_count: None,
        files: vec![FileEntry {
            path: "w.safetensors".into(),
            size: 16,
            sha256: format!("sha256:{:064}", 1),
            blake3: String::new(),
        }],
        total_size: 16,
        composite_digest: String::new(),
        source: Source::Hub {
            endpoint: "https://huggingface.co".into(),
            repo_id: repo.into(),
            revision: "main".into(),
            commit_sha: commit.into(),
            selection_label: String::new(),
            whole_repository: true,
        },
        tags: vec![],
        description: String::new(),
        license: String::new(),
        added_time: "2026-11-24T00:00:00Z".into(),
        updated_time: "2026-11-24T00:00:00Z".into(),
        state: "ready".into(),
        state_reason: String::new(),
        detection: Detection::default(),
        unsafe_format: false,
        dependency_bindings: vec![],
        declares_no_dependencies: false,
        embedded: Default::default(),
        hub: None,
        side_files: Vec::new(),
        download: None,
    };
    std::fs::write(
        dir.join("metadata.json"),
        serde_json::to_vec(&metadata).expect("json"),
    )
    .expect("metadata");
}

#[tokio::test]
async fn hub_results_carry_in_library_and_downloading_flags() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    hub_model(
        &root.join("shared-resources/models"),
        "lora/sdxl/in-library-lora",
        "org/in-lib",
        "abc123",
    );
    let root_arg = root.to_str().unwrap_or_default().to_owned();
    let (_index, index_addr) =
        serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir.path()).await?;
    let summary = |repo: &str, sha: &str| HubModelSummary {
        repo_id: repo.into(),
        sha: sha.into(),
        ..Default::default()
    };
    let fetch = FakeFetch {
        hub_models: vec![
            summary("org/in-lib", "abc123"),
            summary("org/downloading", "def456"),
            summary("org/elsewhere", "999"),
        ],
        downloads: vec![Download {
            download_id: "dl-1".into(),
            repo_id: "org/downloading".into(),
            state: DownloadState::Running as i32,
            bytes_done: 10,
            bytes_total: 100,
            model_id: "lora/sdxl/downloading".into(),
            ..Default::default()
        }],
    }
    .start()
    .await?;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let mapper_arg = format!("local={dead}");
    let (_gateway, gateway_addr) = serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            &index_addr,
            "--fetch",
            &fetch.addr,
            "--mapper",
            &mapper_arg,
        ],
        dir.path(),
    )
    .await?;
    let mut client = ModelLibraryServiceClient::new(channel(&gateway_addr).await?);

    let answer = client
        .search_models(SearchModelsRequest {
            query: "library lora".into(),
            include_hub: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(answer.hub_results_state, HubResultsState::Included as i32);
    let mut local = 0;
    let mut hub = Vec::new();
    for r in answer.results {
        match r.result {
            Some(search_result::Result::Local(_)) => local += 1,
            Some(search_result::Result::Hub(h)) => hub.push(h),
            None => {}
        }
    }
    assert_eq!(local, 1);
    let flags: Vec<(String, bool, String, bool)> = hub
        .iter()
        .map(|h| {
            (
                h.summary.as_ref().map(|s| s.repo_id.clone()).unwrap_or_default(),
                h.in_library,
                h.library_model_id.clone(),
                h.downloading,
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (
                "org/in-lib".to_owned(),
                true,
                "lora/sdxl/in-library-lora".to_owned(),
                false
            ),
            (
                "org/downloading".to_owned(),
                false,
                "lora/sdxl/downloading".to_owned(),
                true
            ),
            ("org/elsewhere".to_owned(), false, String::new(), false),
        ]
    );
    assert_eq!(
        hub[1].download.as_ref().map(|d| d.bytes_done),
        Some(10),
        "download progress comes along"
    );

    // The hub-only call carries the same flags.
    let answer = client
        .search_hub(SearchHubRequest {
            search: Some(FetchSearch {
                query: "x".into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    assert!(answer.results[0].in_library && answer.results[1].downloading);
    fetch.stop().await?;
    Ok(())
}
