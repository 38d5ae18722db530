//! Attacks on the mapper through its API, with the real binary:
//! - a config sent over the API (`PutMappingConfig`) that targets a folder outside the
//!   operator's `--app-root` allow-list (directly, with `..`, or through a symlink) is refused,
//!   and nothing is written there;
//! - a mapper whose `--library-mount` does not show the library refuses to apply
//!   (FAILED_PRECONDITION naming the mount) instead of reporting success with dangling links;
//! - a copy never claims the user's own file of the same size, adoption never follows a
//!   symlinked folder, and unmap removes only the folders the mapper made.

use std::path::Path;

use anyhow::Context as _;
use pumas_e2e::library::{mapping_job_end, run_mapping, write_lora};
use pumas_e2e::{channel, serve_role};
use pumas_proto::common::v1::JobState;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
use pumas_proto::mapper::v1::{ApplyMappingRequest, PutMappingConfigRequest};

fn comfy(root: &Path) -> String {
    format!(
        "kind = \"comfyui\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
        root.display()
    )
}

/// `pumas up` with these LoRAs imported (name, seed) and the mapper caught up with them; answers
/// the suite, the imported ids, a mapper client and a temp folder for the app.
async fn suite_with_loras(
    loras: &[(&str, u8)],
) -> anyhow::Result<(
    pumas_e2e::Suite,
    Vec<String>,
    MapperServiceClient<pumas_e2e::Channel>,
    tempfile::TempDir,
)> {
    use pumas_e2e::library::{import, mapper_caught_up};
    use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;

    let suite = pumas_e2e::Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let dir = tempfile::tempdir()?;
    let mut ids = Vec::new();
    for (name, seed) in loras {
        let lora = dir.path().join("inbox").join(name);
        write_lora(&lora, *seed)?;
        ids.push(import(&mut gateway, &lora).await?);
    }
    mapper_caught_up(&suite.index, &suite.mapper).await?;
    let mapper = MapperServiceClient::new(channel(&suite.mapper).await?);
    Ok((suite, ids, mapper, dir))
}

/// Puts a ComfyUI config for `app_root` as app `comfy`, with `rest` after the root line.
async fn put_comfy(
    mapper: &mut MapperServiceClient<pumas_e2e::Channel>,
    app_root: &Path,
    rest: &str,
) -> anyhow::Result<()> {
    mapper
        .put_mapping_config(PutMappingConfigRequest {
            app: "comfy".to_owned(),
            config_toml: format!("kind = \"comfyui\"\nroot = \"{}\"\n{rest}", app_root.display()),
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn configs_over_the_api_only_target_allowed_app_folders() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root_arg = dir.path().join("root").display().to_string();
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(&apps)?;
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere)?;
    std::os::unix::fs::symlink(&elsewhere, apps.join("sneaky"))?;
    let apps_arg = apps.display().to_string();
    let args = ["--data-root", root_arg.as_str(), "--app-root", apps_arg.as_str()];
    let (_mapper, addr) = serve_role("mapper", "127.0.0.1:0", &args, dir.path()).await?;
    let mut mapper = MapperServiceClient::new(channel(&addr).await?);

    let put = |app: &str, root: &Path| PutMappingConfigRequest {
        app: app.to_owned(),
        config_toml: comfy(root),
    };
    mapper
        .put_mapping_config(put("inside", &apps.join("ComfyUI")))
        .await?;
    for (app, root) in [
        ("outside", elsewhere.join("ComfyUI")),
        ("dotdot", apps.join("..").join("elsewhere").join("ComfyUI")),
        ("symlink", apps.join("sneaky").join("ComfyUI")),
    ] {
        let err = mapper.put_mapping_config(put(app, &root)).await.expect_err(app);
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{app}: {err:?}");
        assert!(
            err.message().contains("outside the app folders"),
            "{app}: {}",
            err.message()
        );
    }
    let configs = dir.path().join("root/launcher-data/mapping-configs");
    assert!(configs.join("inside.toml").exists());
    for app in ["outside", "dotdot", "symlink"] {
        assert!(!configs.join(format!("{app}.toml")).exists(), "{app} was written");
    }
    assert_eq!(
        std::fs::read_dir(&elsewhere)?.count(),
        0,
        "nothing was written outside"
    );
    Ok(())
}

#[tokio::test]
async fn a_mapper_that_cannot_see_the_library_refuses_to_apply() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.display().to_string();
    let (_index, index_addr) =
        serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir.path()).await?;
    let mut index = IndexServiceClient::new(channel(&index_addr).await?);
    let lora = dir.path().join("inbox").join("Ink.safetensors");
    write_lora(&lora, 3)?;
    let started = index
        .import_models(pumas_proto::index::v1::ImportModelsRequest {
            paths: vec![lora.display().to_string()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let job_id = started.job.and_then(|j| j.status).context("job")?.job_id;
    let mut stream = index
        .watch_job(pumas_proto::index::v1::WatchJobRequest { job_id })
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}

    // The mapper's host sees the library somewhere else, and is told a wrong place.
    let wrong_mount = dir.path().join("not-the-library");
    std::fs::create_dir_all(&wrong_mount)?;
    let mapper_root = dir.path().join("mapper-host").display().to_string();
    let mount_arg = wrong_mount.display().to_string();
    let args = [
        "--data-root",
        mapper_root.as_str(),
        "--index",
        index_addr.as_str(),
        "--library-mount",
        mount_arg.as_str(),
    ];
    let (_mapper, addr) = serve_role("mapper", "127.0.0.1:0", &args, dir.path()).await?;
    let mut mapper = MapperServiceClient::new(channel(&addr).await?);
    let app = dir.path().join("ComfyUI");
    mapper
        .put_mapping_config(PutMappingConfigRequest {
            app: "comfy".to_owned(),
            config_toml: comfy(&app),
        })
        .await?;
    let job = mapper
        .apply_mapping(ApplyMappingRequest {
            app: "comfy".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job;
    let status = mapping_job_end(&mut mapper, job).await?;
    assert_eq!(status.state, JobState::Failed as i32, "{status:?}");
    let error = status.error.context("error")?;
    assert_eq!(error.reason, "FAILED_PRECONDITION", "{error:?}");
    assert!(
        error.message.contains(&mount_arg),
        "names the mount: {}",
        error.message
    );
    let links = walkdir::WalkDir::new(&app)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path_is_symlink())
        .count();
    assert_eq!(links, 0, "no dangling links were made");
    Ok(())
}

#[tokio::test]
async fn a_copy_never_claims_the_users_file_of_the_same_size() -> anyhow::Result<()> {
    let (suite, ids, mut mapper, dir) = suite_with_loras(&[("Glow.safetensors", 11)]).await?;
    let model_id = &ids[0];
    let library_file = walkdir::WalkDir::new(suite.root().join("shared-resources/models").join(model_id))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .context("library weights")?
        .into_path();
    // The user's own file where the copy would go: same size, other bytes.
    let app = dir.path().join("ComfyUI");
    let target = app
        .join("models/loras")
        .join(library_file.file_name().context("name")?);
    std::fs::create_dir_all(target.parent().context("parent")?)?;
    let size = std::fs::metadata(&library_file)?.len() as usize;
    let users = vec![0x5a_u8; size];
    std::fs::write(&target, &users)?;
    put_comfy(&mut mapper, &app, "strategy = \"copy\"\n").await?;
    for request in ["apply", "unmap"] {
        run_mapping(&mut mapper, "comfy", request == "unmap").await?;
        assert_eq!(
            std::fs::read(&target)?,
            users,
            "after {request}, the user's file is as it was"
        );
    }
    Ok(())
}

#[tokio::test]
async fn adoption_never_follows_a_symlinked_folder_out_of_the_app() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root_arg = dir.path().join("root").display().to_string();
    let (_index, index_addr) =
        serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir.path()).await?;
    let args = ["--data-root", root_arg.as_str(), "--index", index_addr.as_str()];
    let (_mapper, addr) = serve_role("mapper", "127.0.0.1:0", &args, dir.path()).await?;
    let mut mapper = MapperServiceClient::new(channel(&addr).await?);
    // The app's lora folder is a symlink to somewhere else that holds a weights file.
    let outside = dir.path().join("someone-elses-models");
    std::fs::create_dir_all(&outside)?;
    let theirs = outside.join("Precious.safetensors");
    write_lora(&theirs, 21)?;
    let before = std::fs::read(&theirs)?;
    let app = dir.path().join("ComfyUI");
    std::fs::create_dir_all(app.join("models"))?;
    std::os::unix::fs::symlink(&outside, app.join("models/loras"))?;
    mapper
        .put_mapping_config(PutMappingConfigRequest {
            app: "comfy".to_owned(),
            config_toml: comfy(&app),
        })
        .await?;
    let preview = mapper
        .preview_adoption(pumas_proto::mapper::v1::PreviewAdoptionRequest {
            app: "comfy".to_owned(),
        })
        .await?
        .into_inner();
    assert!(preview.candidates.is_empty(), "{:?}", preview.candidates);
    let job = mapper
        .start_adoption(pumas_proto::mapper::v1::StartAdoptionRequest {
            app: "comfy".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job;
    mapping_job_end(&mut mapper, job).await?;
    assert_eq!(
        std::fs::read(&theirs)?,
        before,
        "the file behind the symlink is untouched"
    );
    Ok(())
}

#[tokio::test]
async fn unmap_removes_only_the_folders_the_mapper_made() -> anyhow::Result<()> {
    let (_suite, _, mut mapper, dir) = suite_with_loras(&[("Rain.safetensors", 12)]).await?;
    // The user's own (empty) folder, where a rule puts each LoRA into a folder of its own.
    let app = dir.path().join("ComfyUI");
    let users = app.join("models/loras/mine");
    std::fs::create_dir_all(&users)?;
    put_comfy(
        &mut mapper,
        &app,
        "strategy = \"symlink\"\n[[rules]]\ntype = \"lora\"\nfolder = \"models/loras\"\nname = \"mine/{slug}/{file}\"\n",
    )
    .await?;
    run_mapping(&mut mapper, "comfy", false).await?;
    let made: Vec<_> = std::fs::read_dir(&users)?.filter_map(Result::ok).collect();
    assert_eq!(made.len(), 1, "the LoRA's own folder was made in the user's");
    let ours = made[0].path();
    run_mapping(&mut mapper, "comfy", true).await?;
    assert!(!ours.exists(), "the folder the mapper made went with its link");
    assert!(
        users.is_dir(),
        "the user's folder stays, though it is empty again"
    );
    Ok(())
}

#[tokio::test]
async fn unmap_keeps_a_copy_the_user_changed_in_place() -> anyhow::Result<()> {
    use std::io::{Seek as _, Write as _};

    let (_suite, _, mut mapper, dir) =
        suite_with_loras(&[("Kept.safetensors", 13), ("Mine.safetensors", 14)]).await?;
    let app = dir.path().join("ComfyUI");
    put_comfy(&mut mapper, &app, "strategy = \"copy\"\n").await?;
    run_mapping(&mut mapper, "comfy", false).await?;
    let loras = app.join("models/loras");
    let copies: Vec<_> = std::fs::read_dir(&loras)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(copies.len(), 2, "{copies:?}");
    let (mine, untouched) = if copies[0].display().to_string().contains("mine") {
        (copies[0].clone(), copies[1].clone())
    } else {
        (copies[1].clone(), copies[0].clone())
    };
    // The user edits one copy in place: same file, same size, their bytes.
    let mut file = std::fs::OpenOptions::new().write(true).open(&mine)?;
    file.seek(std::io::SeekFrom::End(-4))?;
    file.write_all(b"EDIT")?;
    drop(file);
    let edited = std::fs::read(&mine)?;

    run_mapping(&mut mapper, "comfy", true).await?;
    assert!(!untouched.exists(), "the copy Pumas made went");
    assert_eq!(
        std::fs::read(&mine)?,
        edited,
        "the copy the user changed stays, as they left it"
    );
    Ok(())
}
