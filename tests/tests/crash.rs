//! Crash injection with the real binary and real SIGKILL. `pumas up` is killed at random
//! moments of imports (COPY and MOVE, within one filesystem and across two), download commits,
//! mapper apply and unmap (with ComfyUI's extra_model_paths.yaml) and metadata and binding
//! updates. After each restart the library must hold these invariants:
//!
//! 1. the suite starts and serves;
//! 2. every source file of a MOVE is at its source or in the library, never neither;
//! 3. no model in the library fails verification;
//! 4. models.db equals what the files say (the same models, the same digests);
//! 5. no temp or staging files remain once recovery is done;
//! 6. the user's own sections of the ComfyUI YAML are never lost, and the file never absent.
//!
//! `PUMAS_CRASH_ROUNDS` sets the number of kills (default 50), `PUMAS_CRASH_SEED` replays one
//! run. The test prints its counts.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use pumas_e2e::Channel;
use pumas_e2e::hub::{HubEmulator, HubFile, HubRepo, fixtures, sha256_hex};
use pumas_e2e::library::{all_models, models_on_disk, temp_files};
use pumas_e2e::{Suite, channel};
use pumas_proto::common::v1::{
    DependencyBinding, DependencyProfile, DependencyProfileVariant, ImportMode, ModelState, Requirement,
    RequirementKind,
};
use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
use pumas_proto::fetch::v1::{DownloadState, ListDownloadsRequest, StartDownloadRequest};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::*;
use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
use pumas_proto::mapper::v1::{ApplyMappingRequest, PutMappingConfigRequest, UnmapRequest};

const USER_YAML: &str = "mine:\n  base_path: /data\n  loras: my_loras\n";

/// A tiny deterministic generator (xorshift), so a failing run can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A LoRA-shaped safetensors file of about `kib` KiB whose bytes depend on `seed`.
fn weights(seed: u64, kib: u64) -> Vec<u8> {
    fixtures::safetensors(
        &[(
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight",
            "F16",
            vec![kib * 512],
        )],
        &[("ss_base_model_version", "sdxl_base_v1-0")],
        seed,
    )
}

/// A second filesystem for cross-filesystem MOVEs: /dev/shm when it is one.
fn second_filesystem(work: &Path) -> Option<tempfile::TempDir> {
    use std::os::unix::fs::MetadataExt as _;
    let shm = Path::new("/dev/shm");
    let here = std::fs::metadata(work).ok()?.dev();
    let there = std::fs::metadata(shm).ok()?.dev();
    if here == there {
        return None;
    }
    tempfile::tempdir_in(shm).ok()
}

/// What the test expects of the library, and what it found.
#[derive(Default)]
struct Ledger {
    /// MOVE sources not yet seen in the library: (path, sha256 hex).
    moved: Vec<(PathBuf, String)>,
    /// Models verified intact since they last changed: (id, composite digest).
    verified: HashSet<(String, String)>,
    kills: usize,
    checks: usize,
    violations: Vec<String>,
    by_operation: BTreeMap<&'static str, usize>,
}

impl Ledger {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.violations.push(what());
        }
    }
}

struct Clients {
    index: IndexServiceClient<Channel>,
    fetch: FetchServiceClient<Channel>,
    mapper: MapperServiceClient<Channel>,
}

impl Clients {
    async fn of(suite: &Suite) -> anyhow::Result<Self> {
        Ok(Self {
            index: IndexServiceClient::new(channel(&suite.index).await?),
            fetch: FetchServiceClient::new(channel(&suite.fetch).await?),
            mapper: MapperServiceClient::new(channel(&suite.mapper).await?),
        })
    }
}

#[tokio::test]
async fn sigkill_at_random_points_leaves_a_library_that_starts_and_repairs_itself() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("PUMAS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("PUMAS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
                | 1
        });
    println!("crash injection: {rounds} rounds, PUMAS_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    // Hub repositories, each with its own bytes, for the download rounds.
    let repos: Vec<HubRepo> = (0..rounds / 5 + 1)
        .map(|n| {
            HubRepo::new(&format!("acme/crash-{n}"))
                .file(HubFile::new(
                    "config.json",
                    Bytes::from_static(b"{\"model_type\":\"llama\"}"),
                ))
                .file(HubFile::lfs(
                    "model-00001-of-00002.safetensors",
                    Bytes::from(weights(10_000 + n as u64 * 2, 768)),
                ))
                .file(HubFile::lfs(
                    "model-00002-of-00002.safetensors",
                    Bytes::from(weights(10_001 + n as u64 * 2, 768)),
                ))
        })
        .collect();
    let emulator = HubEmulator::start(repos).await?;
    let mut suite = Suite::start_with(&["--hub-endpoint", &emulator.url], &[]).await?;
    let tmp = suite.data_root.path().to_owned();
    let work = tmp.join("work");
    std::fs::create_dir_all(&work)?;
    let other_fs = second_filesystem(&work);
    match &other_fs {
        Some(dir) => println!("cross-filesystem MOVEs from {}", dir.path().display()),
        None => println!(
            "no second filesystem here (/dev/shm is missing or on the same device): cross-filesystem MOVEs are not exercised"
        ),
    }

    // Two apps: ComfyUI through its YAML (the user already has a section of their own) and
    // A1111 through symlinks.
    let comfy = tmp.join("apps/ComfyUI");
    std::fs::create_dir_all(&comfy)?;
    let yaml = comfy.join("extra_model_paths.yaml");
    std::fs::write(&yaml, USER_YAML)?;
    let a1111 = tmp.join("apps/a1111");
    let app_roots = [comfy.clone(), a1111.clone()];
    {
        let mut c = Clients::of(&suite).await?;
        for (app, kind, root, strategy) in [
            ("comfy", "comfyui", &comfy, "config_file"),
            ("sd", "a1111", &a1111, "symlink"),
        ] {
            c.mapper
                .put_mapping_config(PutMappingConfigRequest {
                    app: app.into(),
                    config_toml: format!(
                        "kind = \"{kind}\"\nroot = \"{}\"\nstrategy = \"{strategy}\"\n",
                        root.display()
                    ),
                })
                .await?;
        }
        c.index
            .put_dependency_profile(PutDependencyProfileRequest {
                profile: Some(DependencyProfile {
                    profile_id: "crash".into(),
                    version: "1".into(),
                    environment_kind: "python-venv".into(),
                    variants: vec![DependencyProfileVariant {
                        backend_key: "torch-cuda".into(),
                        platform_selector: "linux-*".into(),
                        requirements: vec![Requirement {
                            kind: RequirementKind::PythonPackage as i32,
                            name: "torch".into(),
                            exact_pin: "==2.5.1".into(),
                            ..Default::default()
                        }],
                    }],
                    ..Default::default()
                }),
            })
            .await?;
    }

    let mut ledger = Ledger::default();
    let mut next_seed = 1u64;
    for round in 0..rounds {
        let c = Clients::of(&suite).await?;
        let operation = match round % 6 {
            0 => "import-copy",
            1 => "import-move",
            2 if other_fs.is_some() => "import-move-across-filesystems",
            2 => "import-move-folder",
            3 => "download",
            4 => "mapper-apply-unmap",
            _ => "metadata-and-bindings",
        };
        *ledger.by_operation.entry(operation).or_default() += 1;
        let mut tasks = tokio::task::JoinSet::new();
        match operation {
            "import-copy" | "import-move" | "import-move-across-filesystems" | "import-move-folder" => {
                let base = match operation {
                    "import-move-across-filesystems" => other_fs
                        .as_ref()
                        .map(|d| d.path().to_owned())
                        .unwrap_or(work.clone()),
                    _ => work.clone(),
                };
                let dir = base.join(format!("round-{round}"));
                std::fs::create_dir_all(&dir)?;
                let mut paths = Vec::new();
                for n in 0..3 {
                    let bytes = weights(next_seed, 256 + rng.below(1024));
                    next_seed += 1;
                    let path = dir.join(format!("lora-{round}-{n}.safetensors"));
                    std::fs::write(&path, &bytes)?;
                    if operation != "import-copy" {
                        ledger.moved.push((path.clone(), sha256_hex(&bytes)));
                    }
                    paths.push(path);
                }
                let mode = if operation == "import-copy" {
                    ImportMode::Copy
                } else {
                    ImportMode::Move
                };
                let requests: Vec<Vec<String>> = if operation == "import-move-folder" {
                    vec![vec![dir.display().to_string()]]
                } else {
                    paths.iter().map(|p| vec![p.display().to_string()]).collect()
                };
                for paths in requests {
                    let mut index = c.index.clone();
                    tasks.spawn(async move {
                        let _ = index
                            .import_models(ImportModelsRequest {
                                paths,
                                mode: mode as i32,
                                ..Default::default()
                            })
                            .await;
                    });
                }
            }
            "download" => {
                let mut fetch = c.fetch.clone();
                let repo = format!("acme/crash-{}", round / 6 % (rounds / 5 + 1));
                tasks.spawn(async move {
                    let _ = fetch
                        .start_download(StartDownloadRequest {
                            repo_id: repo,
                            ..Default::default()
                        })
                        .await;
                });
            }
            "mapper-apply-unmap" => {
                for app in ["comfy", "sd"] {
                    let mut mapper = c.mapper.clone();
                    let unmap = rng.below(3) == 0;
                    tasks.spawn(async move {
                        if unmap {
                            let _ = mapper
                                .unmap(UnmapRequest {
                                    app: app.into(),
                                    request_id: String::new(),
                                })
                                .await;
                        } else {
                            let _ = mapper
                                .apply_mapping(ApplyMappingRequest {
                                    app: app.into(),
                                    replace_conflicts: false,
                                    request_id: String::new(),
                                })
                                .await;
                        }
                    });
                }
            }
            _ => {
                let ids = all_models(&mut c.index.clone())
                    .await?
                    .into_keys()
                    .collect::<Vec<_>>();
                for n in 0..ids.len().min(4) {
                    let id = ids[rng.below(ids.len() as u64) as usize].clone();
                    let mut index = c.index.clone();
                    let tag = format!("round-{round}-{n}");
                    tasks.spawn(async move {
                        let _ = index
                            .update_model_metadata(UpdateModelMetadataRequest {
                                model_id: id.clone(),
                                overrides: Some(ModelOverrides {
                                    tags: vec![tag.clone()],
                                    description: Some(format!("edited in {tag}")),
                                    ..Default::default()
                                }),
                                update_mask: Some(prost_types::FieldMask {
                                    paths: vec!["tags".into(), "description".into()],
                                }),
                                request_id: String::new(),
                            })
                            .await;
                        let _ = index
                            .put_model_dependency_binding(PutModelDependencyBindingRequest {
                                binding: Some(DependencyBinding {
                                    binding_id: format!("b-{tag}"),
                                    model_id: id,
                                    profile_id: "crash".into(),
                                    profile_version: "1".into(),
                                    backend_key: "torch-cuda".into(),
                                    platform_selector: "linux-*".into(),
                                    ..Default::default()
                                }),
                            })
                            .await;
                    });
                }
            }
        }
        // Mostly within the first few tens of milliseconds, where the work is; sometimes later.
        let delay = if rng.below(4) == 0 {
            rng.below(400)
        } else {
            rng.below(60)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        suite = suite
            .kill_and_restart()
            .await
            .with_context(|| format!("restart after round {round} ({operation})"))?;
        ledger.kills += 1;
        tasks.abort_all();
        // Every tenth round (and the last) verifies the whole library again, the others what
        // changed since it was last verified.
        let verify_all = round % 10 == 9 || round + 1 == rounds;
        check(
            &suite,
            &mut ledger,
            &app_roots,
            &yaml,
            round,
            operation,
            verify_all,
        )
        .await
        .with_context(|| format!("checking after round {round} ({operation})"))?;
    }
    println!(
        "crash injection: {} kills ({:?}), {} invariants checked, {} violations",
        ledger.kills,
        ledger.by_operation,
        ledger.checks,
        ledger.violations.len()
    );
    if !ledger.violations.is_empty() {
        bail!(
            "violations (replay with PUMAS_CRASH_SEED={seed}):\n{}\nlog:\n{}",
            ledger.violations.join("\n"),
            suite.process.log()
        );
    }
    Ok(())
}

async fn check(
    suite: &Suite,
    ledger: &mut Ledger,
    app_roots: &[PathBuf],
    yaml: &Path,
    round: usize,
    operation: &str,
    verify_all: bool,
) -> anyhow::Result<()> {
    let at = format!("round {round} ({operation})");
    let mut c = Clients::of(suite).await?;
    // 1. It serves (the restart waited for the gateway's health; the index answers too).
    let info = c.index.get_service_info(GetServiceInfoRequest {}).await;
    ledger.check(info.is_ok(), || {
        format!("{at}: the index does not answer: {info:?}")
    });

    // Downloads resumed after the kill go on in the background: let them end first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let active = c
            .fetch
            .list_downloads(ListDownloadsRequest {
                states: vec![
                    DownloadState::Queued as i32,
                    DownloadState::Running as i32,
                    DownloadState::Committing as i32,
                ],
                ..Default::default()
            })
            .await?
            .into_inner()
            .downloads
            .len();
        if active == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{at}: downloads still running after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 4. models.db equals the files (the reconcile at start may still be running: wait for it).
    let models_dir = suite.root().join("shared-resources/models");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = all_models(&mut c.index).await?;
        let on_disk = models_on_disk(&models_dir);
        let same = listed.len() == on_disk.len()
            && listed
                .iter()
                .all(|(id, (digest, _, _))| on_disk.get(id) == Some(digest));
        if same || tokio::time::Instant::now() > deadline {
            ledger.check(same, || {
                let only_db: Vec<_> = listed.keys().filter(|k| !on_disk.contains_key(*k)).collect();
                let only_disk: Vec<_> = on_disk.keys().filter(|k| !listed.contains_key(*k)).collect();
                format!("{at}: models.db differs from the files: only in the database {only_db:?}, only on disk {only_disk:?}")
            });
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // 2. Every MOVE source is at its source or in the library.
    let in_library: HashSet<&String> = listed.values().flat_map(|(_, files, _)| files.iter()).collect();
    let mut still_outside = Vec::new();
    for (path, sha) in std::mem::take(&mut ledger.moved) {
        let at_source = std::fs::read(&path).is_ok_and(|b| sha256_hex(&b) == sha);
        let placed = in_library.contains(&sha);
        ledger.check(at_source || placed, || {
            format!(
                "{at}: {} is neither at its source nor in the library",
                path.display()
            )
        });
        if !placed {
            still_outside.push((path, sha));
        }
    }
    ledger.moved = still_outside;

    // 3. No model fails verification (the ready ones; a download may be partial by design).
    let ready: Vec<String> = listed
        .iter()
        .filter(|(_, (_, _, state))| *state == ModelState::Ready as i32)
        .filter(|(id, (digest, _, _))| {
            verify_all || !ledger.verified.contains(&((*id).clone(), digest.clone()))
        })
        .map(|(id, _)| id.clone())
        .collect();
    if !ready.is_empty() {
        let job = c
            .index
            .verify_models(VerifyModelsRequest {
                model_ids: ready.clone(),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .job
            .and_then(|j| j.status)
            .context("verify job")?
            .job_id;
        let mut stream = c
            .index
            .watch_job(WatchJobRequest { job_id: job })
            .await?
            .into_inner();
        let mut last = None;
        while let Some(update) = stream.message().await? {
            last = update.job;
        }
        let results = last.context("verify result")?.results;
        for r in &results {
            let intact = r.outcome == ItemOutcome::Unchanged as i32;
            ledger.check(intact, || {
                format!("{at}: {} fails verification: {r:?}", r.model_id)
            });
            if intact && let Some((digest, _, _)) = listed.get(&r.model_id) {
                ledger.verified.insert((r.model_id.clone(), digest.clone()));
            }
        }
        ledger.check(results.len() == ready.len(), || {
            format!("{at}: verified {} of {} models", results.len(), ready.len())
        });
    }
    // 5. No temp or staging files once recovery is done. The mapper may still be catching up
    // with the feed (writing a link or the YAML right now, a temp file of its own): wait first.
    let mapper_caught_up = pumas_e2e::library::mapper_caught_up(&suite.index, &suite.mapper)
        .await
        .is_ok();
    // A temp file of a write still in flight (a change that reached the feed after the head
    // was read) is gone within moments; one a killed process left behind never goes.
    let mut temps = Vec::new();
    for _ in 0..30 {
        temps.clear();
        temp_files(&suite.root(), &mut temps);
        for root in app_roots {
            temp_files(root, &mut temps);
        }
        if temps.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let staging: Vec<_> = std::fs::read_dir(models_dir.join(".staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    ledger.check(temps.is_empty() && staging.is_empty(), || {
        format!("{at}: left behind: temp files {temps:?}, staging {staging:?}")
    });

    // 6. The user's ComfyUI YAML is never absent and keeps their section.
    let text = std::fs::read_to_string(yaml).unwrap_or_default();
    ledger.check(text.starts_with(USER_YAML), || {
        format!("{at}: the ComfyUI YAML lost the user's section: {text:?}")
    });

    // Links the mapper made resolve into the library (once it has caught up).
    if mapper_caught_up {
        let mut dangling = Vec::new();
        let mut seen = BTreeSet::new();
        links(&app_roots[1], &mut dangling, &mut seen);
        ledger.check(dangling.is_empty(), || {
            format!("{at}: dangling links {dangling:?}")
        });
    }
    Ok(())
}

fn links(dir: &Path, dangling: &mut Vec<PathBuf>, seen: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_symlink() {
            if std::fs::metadata(&path).is_err() {
                dangling.push(path);
            }
        } else if kind.is_dir() && seen.insert(path.clone()) {
            links(&path, dangling, seen);
        }
    }
}

#[tokio::test]
async fn an_index_rebuilding_models_db_answers_at_once_with_unavailable_and_its_progress()
-> anyhow::Result<()> {
    use pumas_proto::index::v1::index_service_client::IndexServiceClient;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_types::StatusExt as _;

    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    // Big enough that the rebuild of a new models.db takes a while in a debug build.
    pumas_index::synthetic::generate(&root, 20_000)?;
    let root_arg = root.display().to_string();
    let (index, addr) =
        pumas_e2e::serve_role_listening("index", "127.0.0.1:0", &["--data-root", &root_arg], dir.path())
            .await?;
    let mut client = IndexServiceClient::new(pumas_e2e::channel(&addr).await?);
    let asked = std::time::Instant::now();
    let answer = client
        .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
        .await;
    let waited = asked.elapsed();
    let status = answer.expect_err("the library is still being rebuilt");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        waited < std::time::Duration::from_secs(2),
        "answered at once, not after the rebuild ({waited:?})"
    );
    assert!(
        status.message().contains("rebuilding models.db") || status.message().contains("opening"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay),
        Some(std::time::Duration::from_secs(1))
    );
    assert_eq!(
        pumas_e2e::health(&addr, "pumas.index.v1.IndexService").await?,
        ServingStatus::NotServing
    );
    // Then it serves, with every model.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match client
            .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
            .await
        {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::Unavailable => {
                anyhow::ensure!(std::time::Instant::now() < deadline, "never ready: {s:?}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(s) => anyhow::bail!("{s:?}"),
        }
    }
    assert_eq!(
        pumas_e2e::health(&addr, "pumas.index.v1.IndexService").await?,
        ServingStatus::Serving
    );
    let listed = client
        .list_models(pumas_proto::index::v1::ListModelsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.total_size_capped, "{listed:?}");
    assert!(
        !index.log().contains("ERROR"),
        "no error logged per caller:\n{}",
        index.log()
    );
    Ok(())
}
