//! The index service through its gRPC API, served in-process on 127.0.0.1:0 with a temporary
//! data root: import, duplicates, search and paging, overrides, delete, the change feed,
//! rebuild from disk, missing and restored files, crash recovery, and every bad input.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use pumas_proto::common::v1::{ImportMode, JobState, ModelFilter, ModelOrder, ModelState, ModelType};
use pumas_proto::index::v1::*;
use tonic::Code;
use tonic_types::StatusExt as _;

fn added_id(job: &Job) -> String {
    let r = &job.results[0];
    assert_eq!(r.outcome, ItemOutcome::Added as i32, "{job:#?}");
    r.model_id.clone()
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{:x}",
        sha2::Sha256::digest(std::fs::read(path).expect("read"))
    )
}

#[tokio::test]
async fn import_places_hashes_and_describes_a_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = sdxl_lora(&tmp.path().join("inbox/Detail Tweaker XL.safetensors"));
    let mut server = Server::start(&tmp.path().join("root"), Default::default()).await;
    let job = server.import(&[&source], ImportMode::Copy).await;
    assert_eq!(
        job.status.as_ref().map(|s| s.state),
        Some(JobState::Succeeded as i32)
    );
    let progress = job
        .status
        .as_ref()
        .and_then(|s| s.progress.clone())
        .expect("progress");
    assert_eq!(
        progress.bytes_done,
        std::fs::metadata(&source).expect("meta").len()
    );
    let id = added_id(&job);
    assert_eq!(id, "lora/sdxl/detail-tweaker-xl");

    let model = server.get(&id).await;
    assert_eq!(model.model_type, ModelType::Lora as i32);
    assert_eq!(model.state, ModelState::Ready as i32);
    assert_eq!(model.display_name, "Detail Tweaker XL");
    assert_eq!(model.files.len(), 1);
    assert_eq!(model.files[0].sha256, sha256_of(&source));
    assert!(model.files[0].blake3.starts_with("blake3:"));
    assert!(model.detection.as_ref().is_some_and(|d| !d.evidence.is_empty()));
    // Canonical layout on disk, metadata.json beside the weights; the source stays (copy).
    let dir = server.models().join(&id);
    assert!(dir.join("Detail Tweaker XL.safetensors").is_file());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).expect("read")).expect("json");
    assert_eq!(meta["schema_version"], 1);
    assert_eq!(meta["id"], id.as_str());
    assert!(source.is_file());
    // Lookup by either recorded hash.
    for digest in [model.files[0].sha256.clone(), model.files[0].blake3.clone()] {
        let found = server
            .client
            .find_models_by_hash(FindModelsByHashRequest { digest })
            .await
            .expect("find")
            .into_inner();
        assert_eq!(
            found
                .models
                .iter()
                .map(|m| m.model_id.as_str())
                .collect::<Vec<_>>(),
            [id.as_str()]
        );
    }

    // The same bytes again (under another name) are a duplicate: nothing stored.
    let copy = tmp.path().join("inbox/copy-of-detail.safetensors");
    std::fs::copy(&source, &copy).expect("copy");
    let again = server.import(&[&copy], ImportMode::Copy).await;
    assert_eq!(again.results[0].outcome, ItemOutcome::Duplicate as i32);
    assert_eq!(again.results[0].model_id, id);
    let listed = server
        .client
        .list_models(ListModelsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_size, 1);
    server.stop().await;
}

#[tokio::test]
async fn modes_move_hardlink_and_folders() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inbox = tmp.path().join("inbox");
    let moved = sdxl_checkpoint(&inbox.join("juggernaut.safetensors"));
    let linked = flux_transformer(&inbox.join("flux1-dev.safetensors"));
    let folder = transformers_folder(&inbox.join("Qwen2.5-0.5B"), "qwen2", "Qwen2ForCausalLM");
    let mut server = Server::start(&tmp.path().join("root"), Default::default()).await;

    let job = server.import(&[&moved], ImportMode::Move).await;
    let id = added_id(&job);
    assert_eq!(id, "checkpoint/sdxl/juggernaut");
    assert!(!moved.exists(), "move removes the source");

    let inode_before = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&linked).expect("meta"));
    let job = server.import(&[&linked], ImportMode::Hardlink).await;
    let id = added_id(&job);
    assert_eq!(id, "diffusion_model/flux/flux1-dev");
    let placed = server.models().join(&id).join("flux1-dev.safetensors");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&placed).expect("meta")),
        inode_before
    );

    let job = server.import(&[&folder], ImportMode::Copy).await;
    let id = added_id(&job);
    assert_eq!(id, "llm/qwen/qwen2-5-0-5b");
    let model = server.get(&id).await;
    assert_eq!(model.files.len(), 3);
    assert!(model.composite_digest.starts_with("blake3:"));
    assert_eq!(model.architecture, "Qwen2ForCausalLM");
    server.stop().await;
}

#[tokio::test]
async fn search_filters_and_pages() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inbox = tmp.path().join("inbox");
    let mut paths = Vec::new();
    for i in 0..7 {
        paths.push(gguf_llm(
            &inbox.join(format!("llama-variant-{i}.Q4_K_M.gguf")),
            "llama",
            &format!("Llama Variant {i}"),
            15,
        ));
    }
    paths.push(sdxl_lora(&inbox.join("Pixel Art XL.safetensors")));
    paths.push(flux_lora(&inbox.join("Ghibli Flux Style.safetensors")));
    paths.push(clip_l(&inbox.join("模型 编码器.safetensors")));
    let mut server = Server::start(&tmp.path().join("root"), Default::default()).await;
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let job = server.import(&refs, ImportMode::Copy).await;
    assert!(
        job.results.iter().all(|r| r.outcome == ItemOutcome::Added as i32),
        "{job:#?}"
    );

    // Type-ahead: a prefix of the last word matches.
    let hits = server.search("pix", None, 0, "").await.expect("search");
    assert_eq!(hits.hits.len(), 1);
    assert_eq!(
        hits.hits[0].model.as_ref().map(|m| m.model_id.as_str()),
        Some("lora/sdxl/pixel-art-xl")
    );
    // Family, and a filter on type.
    let filter = ModelFilter {
        model_types: vec![ModelType::Lora as i32],
        ..Default::default()
    };
    let hits = server.search("flux", Some(filter), 0, "").await.expect("search");
    assert_eq!(hits.total_size, 1);
    // Unicode names are found by their words.
    let hits = server.search("模型", None, 0, "").await.expect("search");
    assert_eq!(hits.total_size, 1, "{hits:?}");

    // Paging: 7 llamas in pages of 3, every one exactly once, best match first.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = server.search("llama", None, 3, &token).await.expect("page");
        assert_eq!(page.total_size, 7);
        seen.extend(
            page.hits
                .iter()
                .map(|h| h.model.as_ref().map(|m| m.model_id.clone()).unwrap_or_default()),
        );
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "{seen:?}");

    // A token replayed with another filter is refused, with the field named.
    let first = server.search("llama", None, 3, "").await.expect("page");
    let filter = ModelFilter {
        families: vec!["qwen".into()],
        ..Default::default()
    };
    let err = server
        .search("llama", Some(filter), 3, &first.next_page_token)
        .await
        .expect_err("replayed token");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .map(|b| b.field_violations[0].field.clone()),
        Some("page_token".into())
    );
    // Malformed queries and page sizes are INVALID_ARGUMENT, never INTERNAL.
    for (query, size) in [("\"unclosed", 0), ("OR llama", 0), ("llama", -1)] {
        let err = server.search(query, None, size, "").await.expect_err("bad input");
        assert_eq!(err.code(), Code::InvalidArgument, "{query}: {}", err.message());
    }
    // Hostile FTS syntax is just words.
    server
        .search("a:b NEAR(x y) ^z", None, 0, "")
        .await
        .expect("quoted away");

    // List with a size order and a filter.
    let listed = server
        .client
        .list_models(ListModelsRequest {
            filter: Some(ModelFilter {
                families: vec!["llama".into()],
                ..Default::default()
            }),
            order_by: ModelOrder::SizeDesc as i32,
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.models.len(), 7);
    server.stop().await;
}

#[tokio::test]
async fn overrides_delete_and_the_change_feed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = vae(&tmp.path().join("inbox/vae-ft-mse.safetensors"));
    let mut server = Server::start(&tmp.path().join("root"), Default::default()).await;
    let head = server
        .client
        .get_service_info(GetServiceInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(head.model_count, 0);
    let mut feed = server
        .client
        .watch_changes(WatchChangesRequest {
            after_cursor: 1,
            include_models: true,
        })
        .await
        .expect("watch")
        .into_inner();

    let id = added_id(&server.import(&[&source], ImportMode::Copy).await);
    assert_eq!(id, "vae/unknown/vae-ft-mse");
    // The user says what content could not: the family. The model moves to its canonical place.
    let updated = server
        .client
        .update_model_metadata(UpdateModelMetadataRequest {
            model_id: id.clone(),
            overrides: Some(ModelOverrides {
                family: Some("sd1".into()),
                display_name: Some("MSE VAE".into()),
                tags: vec!["favourite".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["family".into(), "display_name".into(), "tags".into()],
            }),
            request_id: String::new(),
        })
        .await
        .expect("update")
        .into_inner()
        .model
        .expect("model");
    assert_eq!(updated.model_id, "vae/sd1/vae-ft-mse");
    assert_eq!(updated.display_name, "MSE VAE");
    assert_eq!(updated.overridden_fields, ["display_name", "family", "tags"]);
    assert!(
        server
            .models()
            .join("vae/sd1/vae-ft-mse/overrides.json")
            .is_file()
    );
    // Overrides survive a reindex.
    let job = server
        .client
        .reindex(ReindexRequest::default())
        .await
        .expect("reindex")
        .into_inner()
        .job
        .expect("job");
    server.wait(&job.status.expect("status").job_id).await;
    assert_eq!(server.get("vae/sd1/vae-ft-mse").await.display_name, "MSE VAE");
    // Unknown mask paths are the caller's mistake.
    let err = server
        .client
        .update_model_metadata(UpdateModelMetadataRequest {
            model_id: "vae/sd1/vae-ft-mse".into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["files".into()],
            }),
            ..Default::default()
        })
        .await
        .expect_err("bad mask");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Links held by a mapper block deletion unless forced.
    server
        .client
        .replace_link_holds(ReplaceLinkHoldsRequest {
            holder: "host/comfyui".into(),
            model_ids: vec!["vae/sd1/vae-ft-mse".into()],
        })
        .await
        .expect("holds");
    let err = server
        .client
        .delete_model(DeleteModelRequest {
            model_id: "vae/sd1/vae-ft-mse".into(),
            ..Default::default()
        })
        .await
        .expect_err("linked");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("host/comfyui"));
    let freed = server
        .client
        .delete_model(DeleteModelRequest {
            model_id: "vae/sd1/vae-ft-mse".into(),
            force: true,
            ..Default::default()
        })
        .await
        .expect("forced")
        .into_inner();
    assert_eq!(freed.freed_bytes, std::fs::metadata(&source).expect("meta").len());
    assert!(!server.models().join("vae/sd1/vae-ft-mse").exists());
    let err = server
        .client
        .get_model(GetModelRequest {
            model_id: "vae/sd1/vae-ft-mse".into(),
            include_chat_template: false,
            include_preview: false,
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.get_error_details().resource_info().is_some());
    let err = server
        .client
        .get_model(GetModelRequest {
            model_id: "../../etc".into(),
            include_chat_template: false,
            include_preview: false,
        })
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);

    // The feed told the whole story, in order, with cursors that grow.
    let mut events = Vec::new();
    let mut last_cursor = 0;
    while events.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.message())
            .await
            .expect("event in time")
            .expect("stream")
            .expect("event");
        assert!(event.cursor > last_cursor);
        last_cursor = event.cursor;
        events.push((
            ChangeKind::try_from(event.kind).expect("kind"),
            event.model_id,
            event.previous_model_id,
        ));
    }
    assert_eq!(
        events,
        [
            (
                ChangeKind::Added,
                "vae/unknown/vae-ft-mse".to_owned(),
                String::new()
            ),
            (
                ChangeKind::Moved,
                "vae/sd1/vae-ft-mse".to_owned(),
                "vae/unknown/vae-ft-mse".to_owned()
            ),
            (
                ChangeKind::Removed,
                "vae/sd1/vae-ft-mse".to_owned(),
                String::new()
            ),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn models_db_rebuilds_identically_from_the_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inbox = tmp.path().join("inbox");
    let sources = [
        sdxl_lora(&inbox.join("a.safetensors")),
        gguf_llm(&inbox.join("b.gguf"), "qwen2", "Qwen", 15),
        diffusers_sdxl(&inbox.join("c")),
    ];
    let root = tmp.path().join("root");
    let mut server = Server::start(&root, Default::default()).await;
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    server.import(&refs, ImportMode::Copy).await;
    server
        .client
        .update_model_metadata(UpdateModelMetadataRequest {
            model_id: "lora/sdxl/a".into(),
            overrides: Some(ModelOverrides {
                description: Some("mine".into()),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
            request_id: String::new(),
        })
        .await
        .expect("update");
    let before = server
        .client
        .list_models(ListModelsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .models;
    assert_eq!(before.len(), 3);
    server.stop().await;

    for name in ["models.db", "models.db-wal", "models.db-shm"] {
        let _ = std::fs::remove_file(root.join("shared-resources/models").join(name));
    }
    let mut server = Server::start(&root, Default::default()).await;
    let after = server
        .client
        .list_models(ListModelsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .models;
    assert_eq!(after, before, "rebuilt records equal the originals");
    assert_eq!(
        server
            .search("mine", None, 0, "")
            .await
            .expect("search")
            .total_size,
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_files_are_kept_and_restored_and_hand_copies_adopted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = sd1_lora(&tmp.path().join("inbox/style.safetensors"));
    let mut server = Server::start(&tmp.path().join("root"), Default::default()).await;
    let id = added_id(&server.import(&[&source], ImportMode::Copy).await);
    let dir = server.models().join(&id);
    let aside = tmp.path().join("aside");
    std::fs::rename(&dir, &aside).expect("unmount");

    let reindex = |server: &mut Server| {
        let mut client = server.client.clone();
        async move {
            client
                .reindex(ReindexRequest::default())
                .await
                .expect("reindex")
                .into_inner()
                .job
                .expect("job")
                .status
                .expect("status")
                .job_id
        }
    };
    let job = reindex(&mut server).await;
    let job = server.wait(&job).await;
    assert!(
        job.results
            .iter()
            .any(|r| r.outcome == ItemOutcome::Missing as i32),
        "{job:#?}"
    );
    let model = server.get(&id).await;
    assert_eq!(model.state, ModelState::Missing as i32);
    assert!(!model.state_reason.is_empty());

    std::fs::rename(&aside, &dir).expect("remount");
    let job = reindex(&mut server).await;
    server.wait(&job).await;
    assert_eq!(server.get(&id).await.state, ModelState::Ready as i32);

    // A weight file deleted by hand: the model is missing its files, the record stays.
    std::fs::remove_file(dir.join("style.safetensors")).expect("rm");
    let job = reindex(&mut server).await;
    server.wait(&job).await;
    assert_eq!(server.get(&id).await.state, ModelState::Missing as i32);

    // A folder copied into the tree by hand is adopted in place.
    let by_hand = server.models().join("text_encoder/t5/t5-small");
    t5(&by_hand.join("t5.safetensors"));
    let job = reindex(&mut server).await;
    server.wait(&job).await;
    let adopted = server.get("text_encoder/t5/t5-small").await;
    assert_eq!(adopted.files.len(), 1);
    assert!(by_hand.join("metadata.json").is_file());
    server.stop().await;
}

#[tokio::test]
async fn an_import_interrupted_by_a_crash_is_rolled_back_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let models = root.join("shared-resources/models");
    // What a crash in the middle of a move-import leaves: a staging directory with its journal
    // and the moved file, and the source gone.
    let source = tmp.path().join("inbox/precious.safetensors");
    let staging = models.join(".staging/job-1-0");
    sd1_lora(&staging.join("precious.safetensors"));
    std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        staging.join(".pumas-import.json"),
        serde_json::to_vec(&serde_json::json!({"mode": "move", "files": [{"source": source, "relative": "precious.safetensors"}]}))
            .expect("json"),
    )
    .expect("journal");

    let mut server = Server::start(&root, Default::default()).await;
    assert!(source.is_file(), "the moved file is back where it came from");
    assert!(!staging.exists(), "no half-placed model remains");
    let listed = server
        .client
        .list_models(ListModelsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_size, 0);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let allowed = tmp.path().join("allowed");
    std::fs::create_dir_all(&allowed).expect("mkdir");
    let outside = sd1_lora(&tmp.path().join("elsewhere/x.safetensors"));
    let pickle = allowed.join("old.ckpt");
    std::fs::write(&pickle, b"\x80\x02}q\x00.").expect("write");
    let truncated = allowed.join("truncated.safetensors");
    std::fs::write(&truncated, 500u64.to_le_bytes()).expect("write");
    let empty = allowed.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    std::fs::write(empty.join("notes.txt"), b"no models here").expect("write");
    let config = pumas_index::Config {
        refuse_pickle: true,
        import_roots: vec![allowed.clone()],
        ..Default::default()
    };
    let mut server = Server::start(&tmp.path().join("root"), config).await;

    let cases: Vec<(Vec<String>, Code, &str)> = vec![
        (vec![], Code::InvalidArgument, "at least one"),
        (
            vec!["relative/path.safetensors".into()],
            Code::InvalidArgument,
            "absolute",
        ),
        (
            vec![allowed.join("nope.safetensors").display().to_string()],
            Code::InvalidArgument,
            "cannot be read",
        ),
        (
            vec![outside.display().to_string()],
            Code::InvalidArgument,
            "outside",
        ),
        (
            vec![empty.display().to_string()],
            Code::InvalidArgument,
            "no model files",
        ),
        (
            vec![pickle.display().to_string()],
            Code::FailedPrecondition,
            "pickle",
        ),
    ];
    for (paths, code, needle) in cases {
        let err = server
            .client
            .import_models(ImportModelsRequest {
                paths: paths.clone(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{paths:?}: {}", err.message());
        assert!(err.message().contains(needle), "{paths:?}: {}", err.message());
    }
    // A malformed header is found while importing: the item fails with the reason; nothing is stored.
    let job = server.import(&[&truncated], ImportMode::Copy).await;
    assert_eq!(job.results[0].outcome, ItemOutcome::Failed as i32);
    let error = job.results[0].error.clone().expect("error");
    assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
    assert!(error.message.contains("safetensors"), "{error:?}");
    let listed = server
        .client
        .list_models(ListModelsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_size, 0);
    let staging = server.models().join(".staging");
    assert!(!staging.exists() || std::fs::read_dir(&staging).expect("ls").next().is_none());
    // Unknown jobs, unknown digests.
    let err = server
        .client
        .get_job(GetJobRequest {
            job_id: "job-nope".into(),
        })
        .await
        .expect_err("unknown job");
    assert_eq!(err.code(), Code::NotFound);
    let err = server
        .client
        .find_models_by_hash(FindModelsByHashRequest {
            digest: "md5:abc".into(),
        })
        .await
        .expect_err("bad digest");
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

fn profile(version: &str, torch_pin: &str) -> pumas_proto::common::v1::DependencyProfile {
    use pumas_proto::common::v1::{
        DependencyProfile, DependencyProfileVariant, Requirement, RequirementKind,
    };
    let req = |name: &str, pin: &str| Requirement {
        kind: RequirementKind::PythonPackage as i32,
        name: name.into(),
        exact_pin: pin.into(),
        ..Default::default()
    };
    DependencyProfile {
        profile_id: "diffusers-sdxl".into(),
        version: version.into(),
        environment_kind: "python-venv".into(),
        variants: vec![DependencyProfileVariant {
            backend_key: "torch-cuda".into(),
            platform_selector: "linux-x86_64".into(),
            requirements: vec![req("torch", torch_pin), req("diffusers", "==0.30.0")],
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn dependency_profiles_bindings_and_verify() {
    use pumas_proto::common::v1::DependencyBinding;
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = sdxl_checkpoint(&tmp.path().join("inbox/juggernaut.safetensors"));
    let mut server = Server::start(&tmp.path().join("root"), Default::default()).await;
    let c = &mut server.client;

    let stored = c
        .put_dependency_profile(PutDependencyProfileRequest {
            profile: Some(profile("1", "==2.5.1")),
        })
        .await
        .expect("put")
        .into_inner();
    let p = stored.profile.expect("profile");
    assert!(p.valid && p.content_hash.starts_with("sha256:"));
    assert_eq!(stored.dependency_contract_version, 1);
    // Same content again: the same version comes back; other content under it is refused.
    let again = c
        .put_dependency_profile(PutDependencyProfileRequest {
            profile: Some(profile("1", "==2.5.1")),
        })
        .await
        .expect("idempotent");
    assert_eq!(
        again.into_inner().profile.map(|p| p.content_hash),
        Some(p.content_hash.clone())
    );
    let err = c
        .put_dependency_profile(PutDependencyProfileRequest {
            profile: Some(profile("1", "==2.4.0")),
        })
        .await
        .expect_err("immutable");
    assert_eq!(err.code(), Code::AlreadyExists);
    // A bad pin is stored as invalid, with the reason, for resolution to report.
    let bad = c
        .put_dependency_profile(PutDependencyProfileRequest {
            profile: Some(profile("2", ">=2")),
        })
        .await
        .expect("stored")
        .into_inner()
        .profile
        .expect("p");
    assert!(!bad.valid);
    assert_eq!(bad.validation_errors[0].code, "invalid_requirement");
    let mut unusable = profile("3", "==1");
    unusable.profile_id = "../escape".into();
    let err = c
        .put_dependency_profile(PutDependencyProfileRequest {
            profile: Some(unusable),
        })
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let latest = c
        .get_dependency_profile(GetDependencyProfileRequest {
            profile_id: "diffusers-sdxl".into(),
            version: String::new(),
        })
        .await
        .expect("latest")
        .into_inner();
    assert_eq!(latest.profile.map(|p| p.version), Some("2".into()));
    let listed = c
        .list_dependency_profiles(ListDependencyProfilesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let stored: Vec<_> = listed
        .profiles
        .iter()
        .filter(|p| p.origin == pumas_proto::common::v1::ProfileOrigin::Stored as i32)
        .collect();
    assert_eq!(stored.len(), 2);
    assert!(
        listed
            .profiles
            .iter()
            .any(|p| p.origin == pumas_proto::common::v1::ProfileOrigin::BuiltIn as i32),
        "the built-in catalog is listed too"
    );
    let err = c
        .get_dependency_profile(GetDependencyProfileRequest {
            profile_id: "nope".into(),
            version: "1".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);

    let id = added_id(&server.import(&[&source], ImportMode::Copy).await);
    let c = &mut server.client;
    let binding = |profile_id: &str, version: &str| DependencyBinding {
        model_id: id.clone(),
        profile_id: profile_id.into(),
        profile_version: version.into(),
        backend_key: "torch-cuda".into(),
        platform_selector: "linux-x86_64".into(),
        ..Default::default()
    };
    let put = c
        .put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(binding("diffusers-sdxl", "1")),
        })
        .await
        .expect("bind")
        .into_inner();
    let b = put.binding.expect("binding");
    assert!(b.binding_id.starts_with("bind-"));
    assert_eq!(b.active, Some(true), "unset means active");
    let err = c
        .put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(binding("ghost-profile", "9")),
        })
        .await
        .expect_err("a missing profile is refused");
    assert_eq!(err.code(), Code::NotFound);
    // A binding whose profile version is deleted afterwards (forced) names a missing profile.
    let mut ghost = profile("9", "==2.5.1");
    ghost.profile_id = "ghost-profile".into();
    c.put_dependency_profile(PutDependencyProfileRequest { profile: Some(ghost) })
        .await
        .expect("put ghost");
    c.put_model_dependency_binding(PutModelDependencyBindingRequest {
        binding: Some(binding("ghost-profile", "9")),
    })
    .await
    .expect("bind ghost");
    let err = c
        .delete_dependency_profile(DeleteDependencyProfileRequest {
            profile_id: "ghost-profile".into(),
            version: "9".into(),
            force: false,
        })
        .await
        .expect_err("in use");
    assert_eq!(err.code(), Code::FailedPrecondition);
    c.delete_dependency_profile(DeleteDependencyProfileRequest {
        profile_id: "ghost-profile".into(),
        version: "9".into(),
        force: true,
    })
    .await
    .expect("forced delete");
    let model = c
        .get_model(GetModelRequest {
            model_id: id.clone(),
            include_chat_template: false,
            include_preview: false,
        })
        .await
        .expect("get")
        .into_inner()
        .model
        .expect("model");
    assert_eq!(model.dependency_bindings.len(), 2);
    assert!(server.models().join(&id).join("metadata.json").is_file());
    let c = &mut server.client;
    let filtered = c
        .list_models(ListModelsRequest {
            filter: Some(ModelFilter {
                has_dependency_binding: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(filtered.models.len(), 1);
    let all = c
        .list_model_dependency_bindings(ListModelDependencyBindingsRequest::default())
        .await
        .expect("all")
        .into_inner();
    assert_eq!(all.bindings.len(), 2);
    let data = c
        .get_dependency_data(GetDependencyDataRequest {
            model_ids: vec![id.clone(), "lora/sdxl/nope".into()],
        })
        .await
        .expect("data")
        .into_inner();
    assert_eq!(data.models.len(), 1);
    assert_eq!(data.models[0].bindings.len(), 2);
    assert_eq!(data.missing_model_ids, ["lora/sdxl/nope"]);
    assert_eq!(data.profiles.len(), 1);
    assert_eq!(data.missing_profiles.len(), 1);
    assert_eq!(data.missing_profiles[0].profile_id, "ghost-profile");
    // Mistakes.
    let mut no_model = binding("diffusers-sdxl", "1");
    no_model.model_id = "lora/sdxl/nope".into();
    assert_eq!(
        c.put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(no_model)
        })
        .await
        .expect_err("nf")
        .code(),
        Code::NotFound
    );
    let mut bad_selector = binding("diffusers-sdxl", "1");
    bad_selector.platform_selector = "Linux X86".into();
    assert_eq!(
        c.put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(bad_selector)
        })
        .await
        .expect_err("bad")
        .code(),
        Code::InvalidArgument
    );
    c.delete_model_dependency_binding(DeleteModelDependencyBindingRequest {
        binding_id: b.binding_id.clone(),
    })
    .await
    .expect("delete");
    let err = c
        .delete_model_dependency_binding(DeleteModelDependencyBindingRequest {
            binding_id: b.binding_id.clone(),
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);

    // Verify finds silent corruption: same size, other bytes.
    let file = server.models().join(&id).join("juggernaut.safetensors");
    let mut bytes = std::fs::read(&file).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).expect("corrupt");
    let job = server
        .client
        .verify_models(VerifyModelsRequest {
            model_ids: vec![id.clone()],
            request_id: String::new(),
        })
        .await
        .expect("verify")
        .into_inner()
        .job
        .expect("job");
    let job = server.wait(&job.status.expect("status").job_id).await;
    assert_eq!(job.results[0].outcome, ItemOutcome::Corrupt as i32, "{job:#?}");
    let model = server.get(&id).await;
    assert_eq!(model.state, ModelState::Error as i32);
    assert!(model.state_reason.contains("SHA-256"), "{}", model.state_reason);
    server.stop().await;
}

#[tokio::test]
async fn an_unusable_models_db_is_set_aside_and_rebuilt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let source = sd1_lora(&tmp.path().join("inbox/style.safetensors"));
    let mut server = Server::start(&root, Default::default()).await;
    let id = added_id(&server.import(&[&source], ImportMode::Copy).await);
    server.stop().await;
    let db = root.join("shared-resources/models/models.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, b"this is not a SQLite database, it was damaged").expect("damage");
    let mut server = Server::start(&root, Default::default()).await;
    assert_eq!(
        server.get(&id).await.model_id,
        id,
        "rebuilt from the metadata files"
    );
    let aside = std::fs::read_dir(root.join("shared-resources/models"))
        .expect("ls")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("models.db.unusable-"));
    assert!(aside, "the damaged file is kept for inspection");
    server.stop().await;
}

#[tokio::test]
async fn start_reconciles_what_a_crash_left_between_files_and_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let source = sd1_lora(&tmp.path().join("inbox/style.safetensors"));
    let mut server = Server::start(&root, Default::default()).await;
    let id = added_id(&server.import(&[&source], ImportMode::Copy).await);
    server.stop().await;
    // A model folder that reached its place while the index never recorded it (the crash
    // window between the rename and the database write), simulated by a copy made offline.
    let models = root.join("shared-resources/models");
    let copy = models.join("lora/sd1/style-copy");
    std::fs::create_dir_all(&copy).expect("mkdir");
    for entry in std::fs::read_dir(models.join(&id)).expect("ls").flatten() {
        std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
    }
    let mut server = Server::start(&root, Default::default()).await;
    let mut found = None;
    for _ in 0..100 {
        if let Ok(r) = server
            .client
            .get_model(GetModelRequest {
                model_id: "lora/sd1/style-copy".into(),
                include_chat_template: false,
                include_preview: false,
            })
            .await
        {
            found = r.into_inner().model;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = found.expect("indexed by the reconcile at start, without a reindex call");
    assert_eq!(found.state, ModelState::Ready as i32);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_publishers_of_one_profile_version_get_one_ok_and_the_rest_already_exists() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("root"), Default::default()).await;
    let calls = (0..8).map(|i| {
        let mut client = server.client.clone();
        let pin = format!("==2.{i}.0");
        tokio::spawn(async move {
            client
                .put_dependency_profile(PutDependencyProfileRequest {
                    profile: Some(profile("7", &pin)),
                })
                .await
                .map(|r| r.into_inner().profile.expect("profile").content_hash)
        })
    });
    let mut ok = Vec::new();
    for call in calls {
        match call.await.expect("join") {
            Ok(hash) => ok.push(hash),
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one publisher wins: {ok:?}");
    let stored = server
        .client
        .clone()
        .get_dependency_profile(GetDependencyProfileRequest {
            profile_id: "diffusers-sdxl".into(),
            version: "7".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(
        stored.content_hash, ok[0],
        "what is stored is what the winner heard"
    );
    server.stop().await;
}
