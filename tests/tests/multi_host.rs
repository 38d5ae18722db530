//! The suite split across hosts, as docs/DEPLOY.md describes: index + fetch on a storage host,
//! a mapper on an app host that sees the library at another path, the gateway on a third host
//! and the hub on a fourth. Each host is a network namespace with its own address (made here,
//! deleted at the end). Through the gateway: an import and a download, links on the app host,
//! the app host going down and coming back (catch-up), and the link between gateway and index
//! cut and restored (UNAVAILABLE, nothing lost, recovery without restarts).
//!
//! Where network namespaces are not allowed, the namespace test says so and skips, and the same
//! scenario runs as separate processes on loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use pumas_e2e::Channel;
use pumas_e2e::library::{import, write_lora};
use pumas_e2e::netns::Lab;
use pumas_e2e::{Process, pumas_bin};
use pumas_proto::common::v1::JobState;
use pumas_proto::fetch::v1::DownloadState;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::*;
use pumas_proto::mapper::v1::LinkState;

type Gateway = ModelLibraryServiceClient<Channel>;

/// Where the hosts live: network namespaces, or loopback.
enum Net {
    Lab(Lab),
    Loopback,
}

impl Net {
    fn address(&self, host: &str) -> anyhow::Result<String> {
        match self {
            Net::Lab(lab) => lab.address(host),
            Net::Loopback => Ok("127.0.0.1".into()),
        }
    }

    fn wrapper(&self, host: &str) -> anyhow::Result<Vec<String>> {
        match self {
            Net::Lab(lab) => lab.wrapper(host),
            Net::Loopback => Ok(Vec::new()),
        }
    }

    fn channel(&self, host: &str, addr: &str) -> anyhow::Result<Channel> {
        match self {
            Net::Lab(lab) => lab.channel(host, addr),
            Net::Loopback => pumas_e2e::lazy_channel(addr),
        }
    }
}

/// Starts `program` on `host`; returns the process and the address it printed.
async fn start(
    net: &Net,
    host: &str,
    extra_wrapper: &[String],
    program: &Path,
    args: &[&str],
    log: PathBuf,
    marker: &str,
) -> anyhow::Result<(Process, String)> {
    let mut wrapper = net.wrapper(host)?;
    wrapper.extend_from_slice(extra_wrapper);
    let process = Process::start_wrapped(&wrapper, program, args, &[], log, |l| l.contains(marker)).await?;
    let addr = process
        .banner
        .iter()
        .find(|l| l.contains(marker))
        .and_then(|l| l.split(marker).nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_owned())
        .ok_or_else(|| anyhow!("no address after {marker:?} in {:?}", process.banner))?;
    Ok((process, addr))
}

async fn apply(gateway: &mut Gateway, mapper: &str, app: &str) -> anyhow::Result<()> {
    let job = gateway
        .apply_mapping(ApplyMappingRequest {
            app: app.into(),
            mapper: mapper.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .and_then(|j| j.status)
        .context("job")?;
    let mut stream = gateway
        .watch_mapping_job(WatchMappingJobRequest {
            job_id: job.job_id,
            mapper: mapper.into(),
        })
        .await?
        .into_inner();
    let mut state = 0;
    while let Some(update) = stream.message().await? {
        state = update
            .job
            .and_then(|j| j.status)
            .map(|s| s.state)
            .unwrap_or_default();
    }
    if state != JobState::Succeeded as i32 {
        bail!("apply ended in state {state}");
    }
    Ok(())
}

async fn link_state(gateway: &mut Gateway, model_id: &str) -> anyhow::Result<(i32, Vec<String>)> {
    link_state_in(gateway, model_id, "comfy").await
}

async fn link_state_in(
    gateway: &mut Gateway,
    model_id: &str,
    app: &str,
) -> anyhow::Result<(i32, Vec<String>)> {
    let view = gateway
        .get_model(GetModelRequest {
            model_id: model_id.into(),
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .context("no model view")?;
    let state = view
        .link_states
        .iter()
        .find(|s| s.mapper == "app1" && s.app == app)
        .map(|s| s.state)
        .unwrap_or_default();
    Ok((state, view.unavailable_mappers))
}

/// Polls `check` every 100 ms until it returns Some, for at most `limit`.
async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last = format!("{err:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the app host's link at `link` points (relative links resolved lexically: the target
/// only exists in the app host's view).
fn link_target(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    let mut resolved = if target.is_absolute() {
        PathBuf::new()
    } else {
        link.parent()?.to_path_buf()
    };
    for part in target.components() {
        match part {
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            std::path::Component::CurDir => {}
            other => resolved.push(other),
        }
    }
    Some(resolved)
}

/// True when `link` resolves to a file in the mapper's own view (its mount namespace).
fn resolves_on_app_host(net: &Net, mapper_pid: u32, link: &Path) -> bool {
    match net {
        Net::Lab(_) => std::process::Command::new("nsenter")
            .args(["--target", &mapper_pid.to_string(), "--mount", "--", "test", "-f"])
            .arg(link)
            .status()
            .is_ok_and(|s| s.success()),
        Net::Loopback => link.is_file(),
    }
}

/// The documented port on a host of its own (docs/DEPLOY.md); any free port on loopback.
fn fixed_port(net: &Net, port: u16) -> u16 {
    match net {
        Net::Lab(_) => port,
        Net::Loopback => 0,
    }
}

/// An address that stays the same when its process restarts: the documented port on a host
/// of its own, a free port on loopback.
fn stable_addr(net: &Net, host: &str, port: u16) -> anyhow::Result<String> {
    match net {
        Net::Lab(_) => Ok(format!("{}:{port}", net.address(host)?)),
        Net::Loopback => {
            let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            Ok(format!("127.0.0.1:{free}"))
        }
    }
}

async fn scenario(net: Net) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = dir.path();
    let bin = pumas_bin()?;
    let token_file = pumas_e2e::service_token_file().display().to_string();
    let emulator_bin = bin.with_file_name("hub-emulator");
    let storage_root = base.join("storage");
    let library = storage_root.join("shared-resources/models");
    std::fs::create_dir_all(&library)?;
    // The app host sees the library at another path: a bind mount in its own mount namespace
    // (network namespaces), or a symlink (loopback).
    let app_view = base.join("app-host/mnt/pumas-models");
    let comfy = base.join("app-host/ComfyUI");
    let mapper_root = base.join("app-host/pumas");
    std::fs::create_dir_all(mapper_root.join("launcher-data/mapping-configs"))?;
    std::fs::write(
        mapper_root.join("launcher-data/mapping-configs/comfy.toml"),
        format!(
            "kind = \"comfyui\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
            comfy.display()
        ),
    )?;
    std::fs::create_dir_all(&comfy)?;
    // LLMs (the download) go to a Hugging Face cache view on the same host.
    let hf_cache = base.join("app-host/hf-cache");
    std::fs::write(
        mapper_root.join("launcher-data/mapping-configs/hfcache.toml"),
        format!(
            "kind = \"hf-cache\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
            hf_cache.display()
        ),
    )?;
    std::fs::create_dir_all(&hf_cache)?;
    let mapper_wrapper: Vec<String> = match &net {
        Net::Lab(_) => {
            std::fs::create_dir_all(&app_view)?;
            vec![
                "unshare".into(),
                "--mount".into(),
                "--propagation".into(),
                "private".into(),
                "sh".into(),
                "-c".into(),
                r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#.into(),
                "sh".into(),
                library.display().to_string(),
                app_view.display().to_string(),
            ]
        }
        Net::Loopback => {
            std::fs::create_dir_all(app_view.parent().context("parent")?)?;
            std::os::unix::fs::symlink(&library, &app_view)?;
            Vec::new()
        }
    };

    // The hub.
    let hub_ip = net.address("hub")?;
    let (_hub, hub_url) = start(
        &net,
        "hub",
        &[],
        &emulator_bin,
        &["--hub", &format!("{hub_ip}:0"), "--cdn", &format!("{hub_ip}:0")],
        base.join("hub.log"),
        "hub=",
    )
    .await?;

    // The storage host: index and fetch next to the disk.
    let storage_ip = net.address("storage")?;
    let root = storage_root.display().to_string();
    // On a fixed address: the loopback variant restarts it.
    let index_listen = stable_addr(&net, "storage", 50052)?;
    // An index beyond loopback imports only from the roots its operator names.
    let incoming = base.join("incoming");
    std::fs::create_dir_all(&incoming)?;
    let incoming_arg = incoming.display().to_string();
    let index_args = [
        "serve",
        "index",
        "--import-root",
        &incoming_arg,
        "--listen",
        &index_listen,
        "--plaintext",
        "--service-token-file",
        &token_file,
        "--data-root",
        &root,
    ]
    .map(str::to_owned);
    let index_args: Vec<&str> = index_args.iter().map(String::as_str).collect();
    let (index, index_addr) = start(
        &net,
        "storage",
        &[],
        &bin,
        &index_args,
        base.join("index.log"),
        " listening on ",
    )
    .await?;
    let (fetch, fetch_addr) = start(
        &net,
        "storage",
        &[],
        &bin,
        &[
            "serve",
            "fetch",
            "--listen",
            &format!("{storage_ip}:{}", fixed_port(&net, 50053)),
            "--plaintext",
            "--service-token-file",
            &token_file,
            "--data-root",
            &root,
            "--index",
            &index_addr,
            "--hub-endpoint",
            &hub_url,
            "--min-part-bytes",
            "65536",
        ],
        base.join("fetch.log"),
        " listening on ",
    )
    .await?;

    // The app host: a mapper with the library at its own path, on a fixed address (it restarts).
    let mapper_addr = stable_addr(&net, "app", 50054)?;
    let mapper_args = [
        "serve",
        "mapper",
        "--listen",
        &mapper_addr,
        "--plaintext",
        "--service-token-file",
        &token_file,
        "--data-root",
        &mapper_root.display().to_string(),
        "--index",
        &index_addr,
        "--library-mount",
        &app_view.display().to_string(),
        "--host",
        "app1",
    ]
    .map(str::to_owned);
    let mapper_args: Vec<&str> = mapper_args.iter().map(String::as_str).collect();
    let (mapper, _) = start(
        &net,
        "app",
        &mapper_wrapper,
        &bin,
        &mapper_args,
        base.join("mapper.log"),
        " listening on ",
    )
    .await?;

    // The gateway host.
    let gateway_ip = net.address("gateway")?;
    let (gateway_process, gateway_addr) = start(
        &net,
        "gateway",
        &[],
        &bin,
        &[
            "serve",
            "gateway",
            "--no-api-auth",
            "--listen",
            &format!("{gateway_ip}:{}", fixed_port(&net, 50051)),
            "--plaintext",
            "--service-token-file",
            &token_file,
            "--index",
            &index_addr,
            "--fetch",
            &fetch_addr,
            "--mapper",
            &format!("app1={mapper_addr}"),
            "--backend-check-ms",
            "200",
        ],
        base.join("gateway.log"),
        " listening on ",
    )
    .await?;
    let gateway_pid = gateway_process.pid()?;
    let mut gateway = Gateway::new(net.channel("gateway", &gateway_addr)?);

    // An import and a download through the gateway, and links on the app host.
    let first = import(&mut gateway, &base.join("incoming/one.safetensors").tap_write(1)?).await?;
    apply(&mut gateway, "app1", "comfy").await?;
    apply(&mut gateway, "app1", "hfcache").await?;
    let first_link = comfy.join("models/loras/one.safetensors");
    let target = link_target(&first_link).ok_or_else(|| anyhow!("no link at {}", first_link.display()))?;
    assert!(
        target.starts_with(&app_view),
        "{} points outside the app's library view",
        target.display()
    );
    assert!(resolves_on_app_host(&net, mapper.pid()?, &first_link));

    let download = gateway
        .start_download(StartDownloadRequest {
            repo_id: "acme/tiny-model".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .download
        .context("download")?;
    let downloaded = eventually("the download to complete", Duration::from_secs(60), async || {
        let d = gateway
            .get_download(GetDownloadRequest {
                download_id: download.download_id.clone(),
            })
            .await?
            .into_inner()
            .download
            .context("download")?;
        if d.state == DownloadState::Completed as i32 {
            return Ok(Some(d.model_id));
        }
        // Not done: say where it is, so a timeout tells why.
        let state = DownloadState::try_from(d.state).unwrap_or_default();
        let error = d.error.map(|e| e.message).unwrap_or_default();
        let files: Vec<String> = d
            .files
            .iter()
            .map(|f| {
                format!(
                    "{} {}/{} verified={}",
                    f.path, f.bytes_done, f.size_bytes, f.verified
                )
            })
            .collect();
        bail!(
            "{state:?} at {}/{} bytes {error} [{}]",
            d.bytes_done,
            d.bytes_total,
            files.join(", ")
        )
    })
    .await
    .map_err(|err| {
        let log = fetch.log();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        err.context(format!("the fetch service's log ends with:\n{}", tail.join("\n")))
    })?;
    eventually(
        "the downloaded model linked on the app host",
        Duration::from_secs(20),
        async || {
            Ok(
                (link_state_in(&mut gateway, &downloaded, "hfcache").await?.0 == LinkState::Linked as i32)
                    .then_some(()),
            )
        },
    )
    .await?;

    // The app host goes down: the gateway still answers, with the link state unknown.
    let mapper_pid = mapper.pid()?;
    mapper.kill().await?;
    let (state, unavailable) = eventually("link state unknown", Duration::from_secs(20), async || {
        let (state, unavailable) = link_state(&mut gateway, &first).await?;
        if state != LinkState::Unknown as i32 {
            bail!("link state {state}, unavailable mappers {unavailable:?}");
        }
        Ok(Some((state, unavailable)))
    })
    .await?;
    assert_eq!(state, LinkState::Unknown as i32);
    assert_eq!(unavailable, vec!["app1".to_owned()]);
    let hits = gateway
        .search_models(SearchModelsRequest::default())
        .await?
        .into_inner();
    assert_eq!(hits.results.len(), 2, "search answers while the app host is down");
    // A model imported while it is down...
    let second = import(&mut gateway, &base.join("incoming/two.safetensors").tap_write(2)?).await?;
    // ...is linked when it comes back: it catches up from the change feed.
    let (mapper, _) = start(
        &net,
        "app",
        &mapper_wrapper,
        &bin,
        &mapper_args,
        base.join("mapper-2.log"),
        " listening on ",
    )
    .await?;
    assert_ne!(mapper.pid()?, mapper_pid);
    eventually(
        "catch-up after the app host returns",
        Duration::from_secs(30),
        async || Ok((link_state(&mut gateway, &second).await?.0 == LinkState::Linked as i32).then_some(())),
    )
    .await?;
    assert!(resolves_on_app_host(
        &net,
        mapper.pid()?,
        &comfy.join("models/loras/two.safetensors")
    ));

    // The link between gateway and index is cut: UNAVAILABLE naming the index, in seconds.
    let before = model_ids(&mut gateway).await?;
    assert_eq!(before.len(), 3, "{before:?}");
    let (cut, _index) = Cut::start(&net, index, &index_args, base.join("index-2.log")).await?;
    let started = tokio::time::Instant::now();
    let err = eventually(
        "UNAVAILABLE from the gateway",
        Duration::from_secs(40),
        async || {
            let mut request = tonic::Request::new(SearchModelsRequest::default());
            request.set_timeout(Duration::from_secs(30));
            match gateway.search_models(request).await {
                Ok(_) => Ok(None),
                Err(status) => Ok(Some(status)),
            }
        },
    )
    .await?;
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("index"), "{}", err.message());
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(30),
        "took {waited:?}: as long as a deadline"
    );
    // Restored: the same gateway process answers again, and nothing was lost.
    let _index_again = cut.restore(&bin).await?;
    let after = eventually(
        "recovery after the link is restored",
        Duration::from_secs(40),
        async || Ok(Some(model_ids(&mut gateway).await?)),
    )
    .await?;
    assert_eq!(before, after);
    assert_eq!(
        gateway_process.pid()?,
        gateway_pid,
        "the gateway was not restarted"
    );
    let file = library.join(&first).join("one.safetensors");
    assert!(file.is_file(), "{} is gone", file.display());
    Ok(())
}

/// Cuts gateway -> index: a blackhole route on the gateway host (open connections stop
/// answering, new ones time out). Loopback cannot drop packets per host, so there the storage
/// host goes down instead (the index is killed) and comes back on the same address.
enum Cut<'a> {
    Route(&'a Lab),
    Down { index_args: Vec<String>, log: PathBuf },
}

impl<'a> Cut<'a> {
    async fn start(
        net: &'a Net,
        index: Process,
        index_args: &[&str],
        log: PathBuf,
    ) -> anyhow::Result<(Self, Option<Process>)> {
        match net {
            Net::Lab(lab) => {
                lab.cut("gateway", "storage")?;
                Ok((Cut::Route(lab), Some(index)))
            }
            Net::Loopback => {
                index.kill().await?;
                let index_args = index_args.iter().map(|a| a.to_string()).collect();
                Ok((Cut::Down { index_args, log }, None))
            }
        }
    }

    async fn restore(self, bin: &Path) -> anyhow::Result<Option<Process>> {
        match self {
            Cut::Route(lab) => {
                lab.restore("gateway", "storage")?;
                Ok(None)
            }
            Cut::Down { index_args, log } => {
                let args: Vec<&str> = index_args.iter().map(String::as_str).collect();
                let process =
                    Process::start_wrapped(&[], bin, &args, &[], log, |l| l.contains(" listening on "))
                        .await?;
                Ok(Some(process))
            }
        }
    }
}

async fn model_ids(gateway: &mut Gateway) -> anyhow::Result<Vec<String>> {
    let mut request = tonic::Request::new(ListModelsRequest::default());
    request.set_timeout(Duration::from_secs(5));
    let mut ids: Vec<String> = gateway
        .list_models(request)
        .await?
        .into_inner()
        .models
        .into_iter()
        .filter_map(|v| v.model.map(|m| m.model_id))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Writes a LoRA at a path and returns the path.
trait TapWrite {
    fn tap_write(&self, seed: u8) -> anyhow::Result<PathBuf>;
}

impl TapWrite for PathBuf {
    fn tap_write(&self, seed: u8) -> anyhow::Result<PathBuf> {
        write_lora(self, seed)?;
        Ok(self.clone())
    }
}

#[tokio::test]
async fn across_network_namespaces() -> anyhow::Result<()> {
    if let Some(why) = Lab::unavailable() {
        eprintln!(
            "SKIPPED: network namespaces are not available here ({why}); the loopback variant covers the scenario"
        );
        return Ok(());
    }
    let lab = Lab::create(&["hub", "storage", "app", "gateway"])?;
    scenario(Net::Lab(lab)).await
}

#[tokio::test]
async fn loopback_multi_process() -> anyhow::Result<()> {
    if Lab::unavailable().is_none() && std::env::var_os("PUMAS_TEST_LOOPBACK").is_none() {
        eprintln!(
            "SKIPPED: network namespaces are available, so the namespace variant runs; set PUMAS_TEST_LOOPBACK=1 to run this one too"
        );
        return Ok(());
    }
    scenario(Net::Loopback).await
}
