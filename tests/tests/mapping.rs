//! The mapper on real directory trees: presets, strategies, idempotent apply, conflicts and
//! move-aside, refusal to write outside an app root, change-feed sync, repair, unmap, the
//! ComfyUI config-file strategy, restart catch-up and a different library mount.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use pumas_e2e::Channel;
use pumas_e2e::hub::fixtures;
use pumas_e2e::{Suite, channel, serve_role};
use pumas_proto::common::v1::JobState;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{DeleteModelRequest, GetModelRequest};
use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
use pumas_proto::mapper::v1::*;
use tonic::Code;

type Mapper = MapperServiceClient<Channel>;

use pumas_e2e::library::{import, mapper_caught_up, write_lora};

#[path = "../../services/index/tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

async fn put(mapper: &mut Mapper, app: &str, toml: &str) -> anyhow::Result<()> {
    mapper
        .put_mapping_config(PutMappingConfigRequest {
            app: app.to_owned(),
            config_toml: toml.to_owned(),
        })
        .await?;
    Ok(())
}

/// Runs a mapping job to its end.
async fn finish(mapper: &mut Mapper, job: Option<MappingJob>) -> anyhow::Result<MappingJob> {
    let id = job.and_then(|j| j.status).context("job status")?.job_id;
    let mut stream = mapper
        .watch_mapping_job(WatchMappingJobRequest { job_id: id })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(u) = stream.message().await? {
        last = u.job;
    }
    let job = last.context("job")?;
    let state = job.status.as_ref().map(|s| s.state).unwrap_or_default();
    if state != JobState::Succeeded as i32 {
        bail!("mapping job ended {state}: {:?}", job.status);
    }
    Ok(job)
}

async fn apply(mapper: &mut Mapper, app: &str, replace_conflicts: bool) -> anyhow::Result<MappingJob> {
    let job = mapper
        .apply_mapping(ApplyMappingRequest {
            app: app.to_owned(),
            replace_conflicts,
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job;
    finish(mapper, job).await
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        _ => false,
    }
}

#[tokio::test]
async fn apps_see_library_models_in_their_layouts_and_follow_the_library() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let mut mapper = MapperServiceClient::new(channel(&suite.mapper).await?);
    let tmp = suite.data_root.path();
    let library = suite.root().join("shared-resources/models");

    let lora = import(&mut gateway, &{
        let p = tmp.join("inbox/Detail Tweaker XL.safetensors");
        write_lora(&p, 1)?;
        p
    })
    .await?;
    assert_eq!(lora, "lora/sdxl/detail-tweaker-xl");
    let gguf_path = tmp.join("inbox2/tiny-Q4_K_M.gguf");
    std::fs::create_dir_all(gguf_path.parent().context("parent")?)?;
    std::fs::write(&gguf_path, fixtures::gguf("llama", "tiny", 15, 4096))?;
    let llm = import(&mut gateway, &gguf_path).await?;
    assert!(llm.starts_with("llm/llama/"), "{llm}");
    // What the mapper does on its own with these imports is done before any app exists.
    mapper_caught_up(&suite.index, &suite.mapper).await?;

    // Config errors come back with their line.
    let err = mapper
        .put_mapping_config(PutMappingConfigRequest {
            app: "bad".into(),
            config_toml:
                "kind = \"comfyui\"\nroot = \"/x\"\n[[rules]]\ntype = \"lora\"\nfolder = \"../../etc\"\n"
                    .into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("line 5"), "{}", err.message());

    let comfy = tmp.join("ComfyUI");
    std::fs::create_dir_all(comfy.join("models/clip"))?; // a legacy folder
    put(
        &mut mapper,
        "comfy",
        &format!("kind = \"comfyui\"\nroot = \"{}\"\n", comfy.display()),
    )
    .await?;
    let lms = tmp.join("lmstudio");
    put(
        &mut mapper,
        "lms",
        &format!(
            "kind = \"lmstudio\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
            lms.display()
        ),
    )
    .await?;

    // Preview is a dry run that says what apply will do.
    let plan = mapper
        .preview_mapping(PreviewMappingRequest {
            app: "comfy".into(),
            include_unchanged: false,
        })
        .await?
        .into_inner()
        .plan
        .context("plan")?;
    let target = comfy.join("models/loras/Detail Tweaker XL.safetensors");
    assert_eq!(plan.create_count, 1, "{plan:?}");
    assert_eq!(plan.actions[0].target_path, target.display().to_string());
    assert!(
        plan.warnings.iter().any(|w| w.code == "legacy_folder"),
        "{:?}",
        plan.warnings
    );
    assert!(!target.exists(), "preview changed nothing");

    // Apply makes it true (auto = hardlink on the same filesystem) and is idempotent.
    let job = apply(&mut mapper, "comfy", false).await?;
    assert_eq!(job.plan.context("plan")?.create_count, 1);
    let source = library.join(&lora).join("Detail Tweaker XL.safetensors");
    assert!(same_inode(&target, &source), "hardlinked into the library");
    let again = apply(&mut mapper, "comfy", false).await?.plan.context("plan")?;
    assert_eq!(
        (again.create_count, again.replace_count, again.remove_count),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(again.keep_count, 1);

    // LM Studio: exactly <publisher>/<repo>/<file>, as a relative symlink.
    apply(&mut mapper, "lms", false).await?;
    let slug = llm.rsplit('/').next().context("slug")?;
    let lms_link = lms.join("llama").join(slug).join("tiny-Q4_K_M.gguf");
    let text = std::fs::read_link(&lms_link).with_context(|| format!("{}", lms_link.display()))?;
    assert!(text.is_relative(), "{}", text.display());
    assert_eq!(
        std::fs::canonicalize(&lms_link)?,
        std::fs::canonicalize(library.join(&llm).join("tiny-Q4_K_M.gguf"))?
    );

    // A moved model (new family, so a new id) is relinked: the old link goes, the new one comes.
    let moved = gateway
        .update_model_metadata(pumas_proto::gateway::v1::UpdateModelMetadataRequest {
            update: Some(pumas_proto::index::v1::UpdateModelMetadataRequest {
                model_id: llm.clone(),
                overrides: Some(pumas_proto::index::v1::ModelOverrides {
                    family: Some("tinyllama".into()),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["family".into()],
                }),
                request_id: String::new(),
            }),
        })
        .await?
        .into_inner()
        .model
        .context("model")?;
    assert!(moved.model_id.starts_with("llm/tinyllama/"), "{}", moved.model_id);
    let relinked = lms.join("tinyllama").join(slug).join("tiny-Q4_K_M.gguf");
    wait_until("the moved model relinked", || {
        relinked.exists() && std::fs::symlink_metadata(&lms_link).is_err()
    })
    .await?;

    // The gateway shows the link state per app.
    let view = gateway
        .get_model(GetModelRequest {
            model_id: lora.clone(),
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .context("view")?;
    let comfy_state = view
        .link_states
        .iter()
        .find(|s| s.app == "comfy")
        .context("comfy link state")?;
    assert_eq!(comfy_state.state, LinkState::Linked as i32, "{view:?}");

    // The change feed: a new model is linked with no call from anyone.
    let second = tmp.join("inbox3/Second Lora.safetensors");
    write_lora(&second, 2)?;
    let second_id = import(&mut gateway, &second).await?;
    let second_target = comfy.join("models/loras/Second Lora.safetensors");
    wait_until("the new LoRA linked", || second_target.exists()).await?;

    // A model with links cannot be deleted without force; forced, its links go away.
    let err = gateway
        .delete_model(DeleteModelRequest {
            model_id: second_id.clone(),
            force: false,
            request_id: String::new(),
        })
        .await
        .expect_err("linked");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    gateway
        .delete_model(DeleteModelRequest {
            model_id: second_id,
            force: true,
            request_id: String::new(),
        })
        .await?;
    wait_until("the deleted model unlinked", || {
        std::fs::symlink_metadata(&second_target).is_err()
    })
    .await?;

    // A foreign file in the way is a conflict, left alone; with replace it is moved aside.
    let third = tmp.join("inbox4/Third.safetensors");
    write_lora(&third, 3)?;
    let foreign = comfy.join("models/loras/Third.safetensors");
    std::fs::write(&foreign, b"the user's own file")?;
    let third_id = import(&mut gateway, &third).await?;
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    assert_eq!(std::fs::read(&foreign)?, b"the user's own file");
    let job = apply(&mut mapper, "comfy", false).await?;
    assert!(
        job.unresolved.iter().any(|w| w.code == "conflict"),
        "{:?}",
        job.unresolved
    );
    assert_eq!(std::fs::read(&foreign)?, b"the user's own file");
    apply(&mut mapper, "comfy", true).await?;
    assert_eq!(
        std::fs::read(comfy.join("models/loras/Third.safetensors.pumas-aside"))?,
        b"the user's own file"
    );
    assert!(same_inode(
        &foreign,
        &library.join(&third_id).join("Third.safetensors")
    ));

    // Repair: a link removed by hand comes back; a dangling link into the library that the
    // mapper did not make is reported and left alone.
    std::fs::remove_file(&target)?;
    let dangling = comfy.join("models/loras/gone.safetensors");
    std::os::unix::fs::symlink(library.join("lora/sdxl/gone/gone.safetensors"), &dangling)?;
    let job = mapper
        .repair_mapping(RepairMappingRequest {
            app: "comfy".into(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job;
    let repaired = finish(&mut mapper, job).await?;
    assert!(same_inode(&target, &source), "relinked");
    assert!(
        std::fs::symlink_metadata(&dangling).is_ok(),
        "a dangling link the mapper did not make is left alone"
    );
    assert!(
        repaired
            .unresolved
            .iter()
            .any(|w| w.code == "unknown_dangling_link" && w.path == dangling.display().to_string()),
        "and reported: {:?}",
        repaired.unresolved
    );
    std::fs::remove_file(&dangling)?;

    // Unmap removes only what the mapper made.
    let job = mapper
        .unmap(UnmapRequest {
            app: "comfy".into(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job;
    finish(&mut mapper, job).await?;
    assert!(!target.exists() && !foreign.exists());
    assert!(comfy.join("models/loras/Third.safetensors.pumas-aside").exists());
    let apps = mapper.list_apps(ListAppsRequest {}).await?.into_inner().apps;
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["comfy", "lms"]);
    assert_eq!(apps[0].link_count, 0);
    Ok(())
}

#[tokio::test]
async fn nothing_is_written_outside_an_app_root() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let mut mapper = MapperServiceClient::new(channel(&suite.mapper).await?);
    let tmp = suite.data_root.path();
    let lora = tmp.join("inbox/Planted.safetensors");
    write_lora(&lora, 4)?;
    import(&mut gateway, &lora).await?;
    // The app tree has a planted symlink where the LoRA folder should be.
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&outside)?;
    let app = tmp.join("forge");
    std::fs::create_dir_all(app.join("models"))?;
    std::os::unix::fs::symlink(&outside, app.join("models/Lora"))?;
    put(
        &mut mapper,
        "forge",
        &format!("kind = \"forge\"\nroot = \"{}\"\n", app.display()),
    )
    .await?;
    let job = apply(&mut mapper, "forge", true).await?;
    assert!(
        job.unresolved
            .iter()
            .any(|w| w.message.contains("symlink inside the app tree")),
        "{:?}",
        job.unresolved
    );
    assert_eq!(
        std::fs::read_dir(&outside)?.count(),
        0,
        "nothing written through the planted link"
    );
    // A rule cannot name a folder outside the root.
    let err = mapper
        .put_mapping_config(PutMappingConfigRequest {
            app: "forge".into(),
            config_toml: format!(
                "kind = \"forge\"\nroot = \"{}\"\n[[rules]]\ntype = \"lora\"\nfolder = \"/etc\"\n",
                app.display()
            ),
        })
        .await
        .expect_err("absolute folder");
    assert_eq!(err.code(), Code::InvalidArgument);
    Ok(())
}

#[tokio::test]
async fn comfyui_can_read_the_library_through_extra_model_paths() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut mapper = MapperServiceClient::new(channel(&suite.mapper).await?);
    let comfy = suite.data_root.path().join("ComfyUI");
    std::fs::create_dir_all(&comfy)?;
    // A diffusers SDXL pipeline and a single-file SDXL checkpoint in the library.
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let inbox = suite.data_root.path().join("inbox");
    let pipeline = import(
        &mut gateway,
        &common::diffusers_sdxl(&inbox.join("sdxl-base-pipeline")),
    )
    .await?;
    let single = import(
        &mut gateway,
        &common::sdxl_checkpoint(&inbox.join("juggernaut-xl.safetensors")),
    )
    .await?;
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    let yaml = comfy.join("extra_model_paths.yaml");
    std::fs::write(&yaml, "mine:\n  base_path: /data\n  loras: my_loras\n")?;
    put(
        &mut mapper,
        "comfy",
        &format!(
            "kind = \"comfyui\"\nroot = \"{}\"\nstrategy = \"config_file\"\n",
            comfy.display()
        ),
    )
    .await?;
    apply(&mut mapper, "comfy", false).await?;
    let text = std::fs::read_to_string(&yaml)?;
    assert!(
        text.starts_with("mine:\n  base_path: /data\n  loras: my_loras\n"),
        "{text}"
    );
    let library = suite.root().join("shared-resources/models");
    assert!(
        text.contains(&format!("pumas:\n  base_path: {}\n", library.display())),
        "{text}"
    );
    assert!(text.contains("  loras: lora\n") && text.contains("  text_encoders: text_encoder\n"));
    // What ComfyUI makes of it, by its own rules: each value is one path per line under
    // base_path; `checkpoints` folders are scanned recursively for weights; `diffusers` folders
    // are walked for model_index.json.
    let seen = comfy_pumas_paths(&text);
    let weights: Vec<PathBuf> = seen
        .get("checkpoints")
        .into_iter()
        .flatten()
        .flat_map(|dir| walk(dir))
        .filter(|f| f.extension().is_some_and(|e| e == "safetensors" || e == "ckpt"))
        .collect();
    let pipeline_dir = library.join(&pipeline);
    assert!(
        weights.iter().all(|w| !w.starts_with(&pipeline_dir)),
        "pipeline parts listed as checkpoints: {weights:?}\n{text}"
    );
    assert!(
        weights.iter().any(|w| w.starts_with(library.join(&single))),
        "{weights:?}\n{text}"
    );
    let pipelines: Vec<PathBuf> = seen
        .get("diffusers")
        .into_iter()
        .flatten()
        .flat_map(|dir| walk(dir))
        .filter(|f| f.file_name().is_some_and(|n| n == "model_index.json"))
        .collect();
    assert_eq!(pipelines, [pipeline_dir.join("model_index.json")], "{text}");
    // A pipeline imported later into a family that had none (sd1, whose folder the section
    // gave whole): the mapper follows the feed and rewrites the section from the whole library.
    let sd1 = import(
        &mut gateway,
        &common::sd1_checkpoint(&inbox.join("dreamshaper-8.safetensors")),
    )
    .await?;
    let later_dir = common::diffusers_sdxl(&inbox.join("sd15-pipeline"));
    std::fs::write(later_dir.join("README.txt"), "another pipeline")?;
    let job = gateway
        .import_models(pumas_proto::gateway::v1::ImportModelsRequest {
            paths: vec![later_dir.display().to_string()],
            family: "sd1".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .context("job")?;
    let mut updates = gateway
        .watch_import_job(pumas_proto::gateway::v1::WatchImportJobRequest {
            job_id: job.status.context("status")?.job_id,
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(u) = updates.message().await? {
        last = u.job;
    }
    let later = last.context("job")?.results[0].model_id.clone();
    assert!(later.starts_with("checkpoint/sd1/"), "{later}");
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    let text = std::fs::read_to_string(&yaml)?;
    let seen = comfy_pumas_paths(&text);
    let weights: Vec<PathBuf> = seen
        .get("checkpoints")
        .into_iter()
        .flatten()
        .flat_map(|dir| walk(dir))
        .collect();
    assert!(
        weights.iter().all(|w| !w.starts_with(library.join(&later))),
        "{weights:?}\n{text}"
    );
    for kept in [&single, &sd1] {
        assert!(
            weights.iter().any(|w| w.starts_with(library.join(kept))),
            "{kept}: {weights:?}\n{text}"
        );
    }
    let pipelines: Vec<PathBuf> = seen
        .get("diffusers")
        .into_iter()
        .flatten()
        .flat_map(|dir| walk(dir))
        .filter(|f| f.ends_with("model_index.json"))
        .collect();
    assert_eq!(pipelines.len(), 2, "{text}");
    let again = apply(&mut mapper, "comfy", false).await?.plan.context("plan")?;
    assert_eq!(again.create_count + again.replace_count, 0, "{again:?}");
    let job = mapper
        .unmap(UnmapRequest {
            app: "comfy".into(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job;
    finish(&mut mapper, job).await?;
    assert_eq!(
        std::fs::read_to_string(&yaml)?,
        "mine:\n  base_path: /data\n  loras: my_loras\n"
    );
    // A config_file strategy for another app kind is refused with its line.
    let err = mapper
        .validate_mapping_config(ValidateMappingConfigRequest {
            config_toml: "kind = \"forge\"\nroot = \"/x\"\nstrategy = \"config_file\"\n".into(),
        })
        .await?
        .into_inner();
    assert!(!err.valid && err.errors[0].line == 3, "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_restarted_mapper_catches_up_and_translates_a_different_library_mount() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.to_str().context("utf-8")?.to_owned();
    let (_index, index_addr) =
        serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir.path()).await?;
    // The mapper host sees the library at another path (as a bind mount would show it).
    let mount = dir.path().join("mnt-models");
    std::fs::create_dir_all(root.join("shared-resources/models"))?;
    std::os::unix::fs::symlink(root.join("shared-resources/models"), &mount)?;
    let mapper_root = dir.path().join("mapper-host");
    let mapper_root_arg = mapper_root.to_str().context("utf-8")?.to_owned();
    let mount_arg = mount.to_str().context("utf-8")?.to_owned();
    let mapper_args = [
        "--data-root",
        mapper_root_arg.as_str(),
        "--index",
        index_addr.as_str(),
        "--library-mount",
        mount_arg.as_str(),
        "--host",
        "app-host",
    ];
    let (mapper_process, mapper_addr) = serve_role("mapper", "127.0.0.1:0", &mapper_args, dir.path()).await?;
    let mut mapper = MapperServiceClient::new(channel(&mapper_addr).await?);
    let app = dir.path().join("a1111");
    put(
        &mut mapper,
        "sd",
        &format!(
            "kind = \"a1111\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
            app.display()
        ),
    )
    .await?;
    let mut index =
        pumas_proto::index::v1::index_service_client::IndexServiceClient::new(channel(&index_addr).await?);
    let import_one = |name: &str, seed: u8| -> anyhow::Result<PathBuf> {
        let p = dir.path().join(format!("inbox-{seed}")).join(name);
        write_lora(&p, seed)?;
        Ok(p)
    };
    let first = import_one("First.safetensors", 5)?;
    index
        .import_models(pumas_proto::index::v1::ImportModelsRequest {
            paths: vec![first.display().to_string()],
            ..Default::default()
        })
        .await?;
    let first_link = app.join("models/Lora/First.safetensors");
    wait_until("the first LoRA linked", || first_link.exists()).await?;
    let text = std::fs::read_link(&first_link)?;
    let absolute = if text.is_absolute() {
        text.clone()
    } else {
        first_link.parent().context("parent")?.join(&text)
    };
    assert!(
        absolute.components().any(|c| c.as_os_str() == "mnt-models"),
        "the link goes through this host's mount: {}",
        text.display()
    );

    // Mapper down while the library changes; on restart it catches up from its cursor.
    mapper_process.kill().await?;
    let second = import_one("Second.safetensors", 6)?;
    index
        .import_models(pumas_proto::index::v1::ImportModelsRequest {
            paths: vec![second.display().to_string()],
            ..Default::default()
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second_link = app.join("models/Lora/Second.safetensors");
    assert!(!second_link.exists());
    let (_mapper_process, _) = serve_role("mapper", "127.0.0.1:0", &mapper_args, dir.path()).await?;
    wait_until("catch-up after restart", || second_link.exists()).await?;
    assert!(first_link.exists());
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
async fn the_cli_lists_apps_previews_applies_and_unmaps() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let gw = suite.gateway.as_str();
    let mut gateway = ModelLibraryServiceClient::new(channel(gw).await?);
    let lora = suite.data_root.path().join("inbox/Cli Lora.safetensors");
    write_lora(&lora, 9)?;
    import(&mut gateway, &lora).await?;
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    let fooocus = suite.data_root.path().join("Fooocus");
    let configs = suite.root().join("launcher-data/mapping-configs");
    std::fs::write(
        configs.join("fooocus.toml"),
        format!(
            "kind = \"fooocus\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
            fooocus.display()
        ),
    )?;
    std::fs::write(configs.join("broken.toml"), "kind = \"fooocus\"\nroot = 3\n")?;
    let (ok, out, err) = pumas(&["apps", "--gateway", gw]).await?;
    assert!(ok, "{out}{err}");
    assert!(out.contains("local/fooocus  fooocus"), "{out}");
    assert!(out.contains("local/broken  invalid config: line 2"), "{out}");
    let (ok, out, _) = pumas(&["map", "preview", "--gateway", gw, "fooocus"]).await?;
    assert!(
        ok && out.contains("create") && out.contains("models/loras/Cli Lora.safetensors"),
        "{out}"
    );
    let (ok, out, err) = pumas(&["map", "apply", "--gateway", gw, "fooocus"]).await?;
    assert!(ok, "{out}{err}");
    assert!(fooocus.join("models/loras/Cli Lora.safetensors").exists());
    let (ok, out, _) = pumas(&["map", "apply", "--gateway", gw, "fooocus"]).await?;
    assert!(
        ok && out.contains("0 to create, 0 to replace, 0 to remove"),
        "{out}"
    );
    let (ok, _, err) = pumas(&["map", "apply", "--gateway", gw, "nope"]).await?;
    assert!(!ok && err.contains("configured apps: broken, fooocus"), "{err}");
    let (ok, out, err) = pumas(&["unmap", "--gateway", gw, "fooocus"]).await?;
    assert!(ok, "{out}{err}");
    assert!(!fooocus.join("models/loras/Cli Lora.safetensors").exists());
    // Unmapped stays unmapped: a library change does not link the app again. The follower
    // applies apps in name order, so once "witness" has the new model, "fooocus" was passed.
    let witness = suite.data_root.path().join("Witness");
    std::fs::write(
        configs.join("witness.toml"),
        format!("kind = \"fooocus\"\nroot = \"{}\"\n", witness.display()),
    )?;
    let later = suite.data_root.path().join("inbox/Later Lora.safetensors");
    write_lora(&later, 10)?;
    import(&mut gateway, &later).await?;
    let seen = witness.join("models/loras/Later Lora.safetensors");
    wait_until("the feed to link the new model", || seen.exists()).await?;
    assert!(!fooocus.join("models/loras/Later Lora.safetensors").exists());
    let (ok, out, _) = pumas(&["apps", "--gateway", gw]).await?;
    assert!(
        ok && out.contains("local/fooocus  fooocus") && out.contains("unmapped"),
        "{out}"
    );
    // ...until the next explicit apply.
    let (ok, out, err) = pumas(&["map", "apply", "--gateway", gw, "fooocus"]).await?;
    assert!(ok, "{out}{err}");
    assert!(fooocus.join("models/loras/Later Lora.safetensors").exists());
    assert!(fooocus.join("models/loras/Cli Lora.safetensors").exists());
    Ok(())
}

#[tokio::test]
async fn adoption_moves_an_apps_own_files_into_the_library_and_links_them_back() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let tmp = suite.data_root.path();
    let library = suite.root().join("shared-resources/models");
    // Already in the library.
    let known = tmp.join("inbox/Known.safetensors");
    write_lora(&known, 11)?;
    let known_id = import(&mut gateway, &known).await?;
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    // A ComfyUI install with its own files: one new LoRA (twice) and a copy of the known one.
    let comfy = tmp.join("ComfyUI");
    let own = comfy.join("models/loras/Own.safetensors");
    write_lora(&own, 12)?;
    let own_copy = comfy.join("models/loras/old/Own copy.safetensors");
    std::fs::create_dir_all(own_copy.parent().context("parent")?)?;
    std::fs::copy(&own, &own_copy)?;
    let known_copy = comfy.join("models/loras/Known (1).safetensors");
    std::fs::copy(&known, &known_copy)?;
    // And a Forge install with the same new LoRA.
    let forge = tmp.join("forge");
    let forge_own = forge.join("models/Lora/Own.safetensors");
    std::fs::create_dir_all(forge_own.parent().context("parent")?)?;
    std::fs::copy(&own, &forge_own)?;
    let size = std::fs::metadata(&own)?.len();

    let configs = suite.root().join("launcher-data/mapping-configs");
    std::fs::write(
        configs.join("comfy.toml"),
        format!("kind = \"comfyui\"\nroot = \"{}\"\n", comfy.display()),
    )?;
    std::fs::write(
        configs.join("forge.toml"),
        format!("kind = \"forge\"\nroot = \"{}\"\n", forge.display()),
    )?;

    let preview = gateway
        .preview_adoption(pumas_proto::gateway::v1::PreviewAdoptionRequest {
            app: "comfy".into(),
            mapper: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(preview.candidates.len(), 3, "{preview:?}");
    assert_eq!(
        preview.reclaimable_bytes,
        2 * size,
        "the duplicate and the known copy"
    );
    let known_candidate = preview
        .candidates
        .iter()
        .find(|c| c.path == known_copy.display().to_string())
        .context("known copy listed")?;
    assert_eq!(known_candidate.existing_model_id, known_id);

    let (ok, out, err) = pumas(&["adopt", "--yes", "--gateway", &suite.gateway, "comfy"]).await?;
    assert!(ok, "{out}{err}");
    // One copy of the new LoRA is in the library; the app sees it through a link.
    let own_link = comfy.join("models/loras/Own.safetensors");
    let own_in_library = library.join("lora/sdxl/own/Own.safetensors");
    assert!(own_in_library.is_file(), "{out}");
    assert!(same_inode(&own_link, &own_in_library));
    assert!(!own_copy.exists(), "the duplicate is gone");
    assert!(!known_copy.exists(), "the copy of the known model is gone");
    assert!(same_inode(
        &comfy.join("models/loras/Known.safetensors"),
        &library.join(&known_id).join("Known.safetensors")
    ));

    // Identical files in two apps become one.
    let (ok, out, err) = pumas(&["adopt", "--yes", "--gateway", &suite.gateway, "forge"]).await?;
    assert!(ok, "{out}{err}");
    assert!(same_inode(&forge_own, &own_in_library), "{out}");
    Ok(())
}

#[tokio::test]
async fn a_mapper_behind_the_retained_change_feed_gets_out_of_range_and_maps_everything_again()
-> anyhow::Result<()> {
    use pumas_proto::index::v1::index_service_client::IndexServiceClient;
    use pumas_proto::index::v1::{GetServiceInfoRequest, ImportModelsRequest, WatchChangesRequest};
    let dir = tempfile::tempdir()?;
    let root_arg = dir.path().join("root").to_str().context("utf-8")?.to_owned();
    // The index keeps only the two newest events; it prunes when it starts.
    let index_args = ["--data-root", root_arg.as_str(), "--change-feed-max-events", "2"];
    let (index_process, index_addr) = serve_role("index", "127.0.0.1:0", &index_args, dir.path()).await?;
    // The mapper on the same data root, as `pumas up` runs it.
    let mapper_root = root_arg.clone();
    let mapper_args = |index: &str| {
        [
            "--data-root".to_owned(),
            mapper_root.clone(),
            "--index".to_owned(),
            index.to_owned(),
        ]
    };
    let args = mapper_args(&index_addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mapper_process, mapper_addr) = serve_role("mapper", "127.0.0.1:0", &args, dir.path()).await?;
    let mut mapper = MapperServiceClient::new(channel(&mapper_addr).await?);
    let app = dir.path().join("a1111");
    put(
        &mut mapper,
        "sd",
        &format!(
            "kind = \"a1111\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
            app.display()
        ),
    )
    .await?;
    let import_one = |index: &mut IndexServiceClient<Channel>, name: &str, seed: u8| {
        let p = dir.path().join(format!("inbox-{seed}")).join(name);
        let mut index = index.clone();
        async move {
            write_lora(&p, seed)?;
            let started = index
                .import_models(ImportModelsRequest {
                    paths: vec![p.display().to_string()],
                    ..Default::default()
                })
                .await?
                .into_inner();
            // Its change events are in the feed once the job has ended.
            let job_id = started.job.and_then(|j| j.status).context("job")?.job_id;
            let mut stream = index
                .watch_job(pumas_proto::index::v1::WatchJobRequest { job_id })
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            anyhow::Ok(())
        }
    };
    let mut index = IndexServiceClient::new(channel(&index_addr).await?);
    import_one(&mut index, "First.safetensors", 11).await?;
    let first_link = app.join("models/Lora/First.safetensors");
    wait_until("the first LoRA linked", || first_link.exists())
        .await
        .with_context(|| format!("mapper log:\n{}", mapper_process.log()))?;
    mapper_caught_up(&index_addr, &mapper_addr).await?;
    let seen = index
        .get_service_info(GetServiceInfoRequest {})
        .await?
        .into_inner()
        .change_cursor;

    // The mapper is away while three more models arrive; the index restarts and prunes.
    mapper_process.kill().await?;
    for (n, name) in ["Second", "Third", "Fourth"].iter().enumerate() {
        import_one(&mut index, &format!("{name}.safetensors"), 12 + n as u8).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while index
        .get_service_info(GetServiceInfoRequest {})
        .await?
        .into_inner()
        .model_count
        < 4
    {
        if tokio::time::Instant::now() > deadline {
            bail!("the imports did not land");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    index_process.terminate().await?;
    let (_index_process, index_addr) = serve_role("index", "127.0.0.1:0", &index_args, dir.path()).await?;
    let mut index = IndexServiceClient::new(channel(&index_addr).await?);

    // The feed no longer holds what came after the mapper's cursor: OUT_OF_RANGE, saying why.
    let err = index
        .watch_changes(WatchChangesRequest {
            after_cursor: seen,
            include_models: false,
        })
        .await
        .err()
        .context("an old cursor is refused")?;
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("no longer kept"), "{}", err.message());
    let details = tonic_types::StatusExt::get_error_details(&err);
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("OUT_OF_RANGE")
    );
    // The newest cursor still follows.
    let head = index
        .get_service_info(GetServiceInfoRequest {})
        .await?
        .into_inner()
        .change_cursor;
    index
        .watch_changes(WatchChangesRequest {
            after_cursor: head,
            include_models: false,
        })
        .await?;

    // The mapper comes back, is told it is too far behind, and maps the whole library again.
    let args = mapper_args(&index_addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mapper_process, mapper_addr) = serve_role("mapper", "127.0.0.1:0", &args, dir.path()).await?;
    for name in ["First", "Second", "Third", "Fourth"] {
        let link = app.join(format!("models/Lora/{name}.safetensors"));
        wait_until(&format!("{name} linked after the re-read"), || link.exists()).await?;
    }
    mapper_caught_up(&index_addr, &mapper_addr).await?;
    assert!(
        mapper_process.log().contains("no longer keeps changes"),
        "{}",
        mapper_process.log()
    );
    Ok(())
}

/// The paths ComfyUI reads from the `pumas` section of an extra_model_paths.yaml: per key, each
/// line of its value joined to base_path (ComfyUI's load_extra_path_config).
fn comfy_pumas_paths(text: &str) -> std::collections::BTreeMap<String, Vec<PathBuf>> {
    let mut out: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    let section = text.split("pumas:\n").nth(1).unwrap_or_default();
    let mut base = PathBuf::new();
    let mut block: Option<String> = None;
    for line in section.lines().take_while(|l| !l.starts_with('#')) {
        if let Some(path) = line.strip_prefix("    ")
            && let Some(key) = &block
        {
            out.entry(key.clone()).or_default().push(base.join(path.trim()));
            continue;
        }
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        block = None;
        match (key, value) {
            ("base_path", v) => base = PathBuf::from(v),
            (k, "|") => block = Some(k.to_owned()),
            (k, v) => out.entry(k.to_owned()).or_default().push(base.join(v)),
        }
    }
    out
}

/// Every file below `dir`, following links as ComfyUI's os.walk(followlinks=True) does.
fn walk(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

#[tokio::test]
async fn previews_and_civitai_side_files_come_with_an_import_and_land_where_a1111_reads_them()
-> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let inbox = suite.data_root.path().join("inbox");
    let lora = inbox.join("Detail Slider.safetensors");
    write_lora(&lora, 21)?;
    let png = b"\x89PNG\r\n\x1a\n preview bytes".to_vec();
    std::fs::write(inbox.join("Detail Slider.preview.png"), &png)?;
    std::fs::write(
        inbox.join("Detail Slider.civitai.info"),
        br#"{"trainedWords": ["detailed"]}"#,
    )?;
    std::fs::write(
        inbox.join("Detail Slider.json"),
        br#"{"activation text": "detailed"}"#,
    )?;
    // A preview of another model beside it is not this one's.
    std::fs::write(inbox.join("Other.preview.png"), b"other")?;
    let id = import(&mut gateway, &lora).await?;
    let model = gateway
        .get_model(GetModelRequest {
            model_id: id.clone(),
            include_chat_template: false,
            include_preview: true,
        })
        .await?
        .into_inner()
        .model
        .and_then(|v| v.model)
        .context("model")?;
    let sides: Vec<(String, String, String)> = model
        .side_files
        .iter()
        .map(|s| (s.role.clone(), s.path.clone(), s.media_type.clone()))
        .collect();
    assert_eq!(
        sides,
        vec![
            (
                "preview".to_owned(),
                ".pumas-preview.png".to_owned(),
                "image/png".to_owned()
            ),
            (
                "civitai_info".to_owned(),
                ".pumas-civitai.info".to_owned(),
                "application/json".to_owned()
            ),
            (
                "user_metadata".to_owned(),
                ".pumas-user-metadata.json".to_owned(),
                "application/json".to_owned()
            ),
        ]
    );
    assert_eq!(
        model.side_files[0].data, png,
        "GetModel gives the preview's bytes when asked"
    );
    assert!(model.side_files[1].data.is_empty());
    // Side files are not weights: the model's files and digest are the LoRA's alone.
    assert_eq!(model.files.len(), 1, "{:?}", model.files);
    // The copy import left the originals in place.
    assert!(inbox.join("Detail Slider.preview.png").exists());

    // An A1111 app shows them beside the LoRA, by its own names.
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    let mut mapper = MapperServiceClient::new(channel(&suite.mapper).await?);
    let a1111 = suite.data_root.path().join("sd-webui");
    put(
        &mut mapper,
        "a1111",
        &format!(
            "kind = \"a1111\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
            a1111.display()
        ),
    )
    .await?;
    apply(&mut mapper, "a1111", false).await?;
    let loras = a1111.join("models/Lora");
    assert_eq!(std::fs::read(loras.join("Detail Slider.preview.png"))?, png);
    assert!(loras.join("Detail Slider.civitai.info").exists());
    assert!(loras.join("Detail Slider.json").exists());
    assert!(loras.join("Detail Slider.safetensors").exists());
    // Unmapping takes them away with the model's link.
    let job = mapper
        .unmap(UnmapRequest {
            app: "a1111".to_owned(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job;
    finish(&mut mapper, job).await?;
    assert!(!loras.join("Detail Slider.preview.png").exists());
    assert!(!loras.join("Detail Slider.json").exists());
    Ok(())
}

#[tokio::test]
async fn invokeai_installs_library_models_in_place_through_its_model_manager_api() -> anyhow::Result<()> {
    let invoke = pumas_e2e::invokeai::InvokeAi::start().await?;
    invoke.install_by_hand("/home/me/invokeai/models/my-own.safetensors");
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let mut mapper = MapperServiceClient::new(channel(&suite.mapper).await?);
    let inbox = suite.data_root.path().join("inbox");
    let lora = inbox.join("Invoke Detail.safetensors");
    write_lora(&lora, 31)?;
    let first = import(&mut gateway, &lora).await?;
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    let models = suite.root().join("shared-resources/models");
    let first_path = models
        .join(&first)
        .join("Invoke Detail.safetensors")
        .display()
        .to_string();

    // A config without the API's address is refused with the reason.
    let err = put(&mut mapper, "invoke", "kind = \"invokeai\"\n")
        .await
        .expect_err("no url");
    let status = err.downcast_ref::<tonic::Status>().context("status")?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("url"), "{}", status.message());
    put(
        &mut mapper,
        "invoke",
        &format!("kind = \"invokeai\"\nurl = \"{}\"\n", invoke.url),
    )
    .await?;

    // The preview says what would be installed, by its library path.
    let plan = mapper
        .preview_mapping(PreviewMappingRequest {
            app: "invoke".into(),
            include_unchanged: false,
        })
        .await?
        .into_inner()
        .plan
        .context("plan")?;
    assert_eq!(plan.create_count, 1, "{plan:?}");
    assert_eq!(plan.actions[0].target_path, format!("invokeai:{first_path}"));

    // Apply installs it in place (InvokeAI points at the library file; nothing is copied).
    apply(&mut mapper, "invoke", false).await?;
    assert_eq!(
        invoke.paths(),
        vec![
            "/home/me/invokeai/models/my-own.safetensors".to_owned(),
            first_path.clone()
        ]
    );
    assert!(
        invoke
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v2/models/install/")),
        "the install job was followed to its end"
    );
    // Applying again changes nothing.
    let again = apply(&mut mapper, "invoke", false).await?;
    assert_eq!(again.plan.map(|p| p.create_count), Some(0));

    // The change feed installs what arrives in the library.
    let second_file = inbox.join("Invoke Film.safetensors");
    write_lora(&second_file, 32)?;
    let second = import(&mut gateway, &second_file).await?;
    let second_path = models
        .join(&second)
        .join("Invoke Film.safetensors")
        .display()
        .to_string();
    wait_until("the feed to install the new model", || {
        invoke.paths().contains(&second_path)
    })
    .await?;

    // An installed model is held: the library refuses to delete it while the app has it.
    let err = gateway
        .delete_model(DeleteModelRequest {
            model_id: first.clone(),
            force: false,
            request_id: String::new(),
        })
        .await
        .expect_err("held by the app");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Unmap deletes what the mapper installed, and only that.
    let job = mapper
        .unmap(UnmapRequest {
            app: "invoke".into(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job;
    finish(&mut mapper, job).await?;
    assert_eq!(
        invoke.paths(),
        vec!["/home/me/invokeai/models/my-own.safetensors".to_owned()]
    );
    assert!(
        std::path::Path::new(&first_path).exists(),
        "in-place files stay in the library"
    );

    // InvokeAI not running: UNAVAILABLE, naming it.
    let url = invoke.url.clone();
    drop(invoke);
    let err = mapper
        .preview_mapping(PreviewMappingRequest {
            app: "invoke".into(),
            include_unchanged: false,
        })
        .await
        .expect_err("InvokeAI is down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&url) && err.message().contains("running"),
        "{}",
        err.message()
    );
    Ok(())
}
