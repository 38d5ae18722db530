//! Mixed load through the gateway, as users run the suite (each service its own process, default
//! settings): many callers at once search with distinct queries, import small files, download
//! from the hub emulator, delete models and start a reindex, while the index is SIGKILLed and
//! started again in the middle. Every call is counted by its status code; afterwards every
//! import and download is checked against the library.
//!
//! Used by `tests/tests/load.rs` (a short run in CI) and `tests/benches/load.rs` (the 60 s run
//! recorded in docs/BENCHMARKS.md).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Channel;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use pumas_proto::common::v1::{ImportMode, JobState, ModelFilter, ModelType};
use pumas_proto::fetch::v1::DownloadState;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::*;
use pumas_proto::index::v1::ItemOutcome;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;

use crate::hub::{HubEmulator, HubFile, HubRepo, fixtures};
use crate::library::{all_models, models_on_disk, temp_files};
use crate::{GATEWAY_SERVICE, INDEX_SERVICE, channel, serve_role, wait_for_health};

/// How a run is shaped.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long the callers call.
    pub duration: Duration,
    /// Callers at once.
    pub callers: usize,
    /// Models in the library before the run (synthetic).
    pub models: usize,
}

/// After the index is serving again, the gateway may answer UNAVAILABLE this much longer
/// (its channel reconnects on the next call) and it still counts as the outage.
pub const RECOVERY_GRACE: Duration = Duration::from_secs(5);

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Calls by operation and status code name.
    pub calls: BTreeMap<(&'static str, String), u64>,
    /// Latencies of successful calls by operation.
    pub latencies: BTreeMap<&'static str, Vec<Duration>>,
    /// INTERNAL answers.
    pub internal: u64,
    /// UNAVAILABLE answers outside the outage (and its grace).
    pub unavailable_outside_outage: u64,
    /// From the kill until the index served again.
    pub outage: Duration,
    /// The last UNAVAILABLE after the index served again, if any.
    pub last_unavailable_after_recovery: Option<Duration>,
    /// Import items reported ADDED, downloads completed, models deleted.
    pub imports_added: usize,
    pub downloads_completed: usize,
    pub downloads_failed: usize,
    pub deletes: usize,
    /// Where the library and the answers disagree.
    pub violations: Vec<String>,
    /// Why the failed downloads failed.
    pub download_failures: Vec<String>,
    /// How long the callers ran.
    pub elapsed: Duration,
}

impl Report {
    /// Calls in all.
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }

    /// A Markdown table: calls by operation and code, with p50/p99 latency of the OK ones.
    pub fn table(&self) -> String {
        let mut ops: Vec<&'static str> = self.calls.keys().map(|(op, _)| *op).collect();
        ops.dedup();
        let codes: Vec<String> = {
            let mut c: Vec<String> = self.calls.keys().map(|(_, code)| code.clone()).collect();
            c.sort();
            c.dedup();
            c
        };
        let mut out = format!("| operation | {} | p50 OK | p99 OK |\n", codes.join(" | "));
        out.push_str(&format!("|---|{}---|---|\n", "---|".repeat(codes.len())));
        for op in ops {
            let cells: Vec<String> = codes
                .iter()
                .map(|c| self.calls.get(&(op, c.clone())).copied().unwrap_or(0).to_string())
                .collect();
            let (p50, p99) = self
                .latencies
                .get(op)
                .map(|l| {
                    let mut l = l.clone();
                    l.sort();
                    let at = |q: f64| {
                        l.get(((l.len() as f64 - 1.0) * q) as usize)
                            .copied()
                            .unwrap_or_default()
                    };
                    (at(0.5), at(0.99))
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "| {op} | {} | {:.1} ms | {:.1} ms |\n",
                cells.join(" | "),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ));
        }
        out
    }
}

/// The outage window: when the index was killed, and when it served again.
#[derive(Default)]
struct Outage {
    killed: Option<Instant>,
    back: Option<Instant>,
}

impl Outage {
    fn covers(&self, at: Instant) -> bool {
        match (self.killed, self.back) {
            (Some(k), Some(b)) => at >= k && at <= b + RECOVERY_GRACE,
            (Some(k), None) => at >= k,
            _ => false,
        }
    }
}

#[derive(Default)]
struct Shared {
    report: Report,
    /// Models that may be deleted (the synthetic ones), and those that were.
    deletable: Vec<String>,
    deleted: HashSet<String>,
    added: Vec<String>,
    downloads: Vec<String>,
}

struct Caller {
    gateway: ModelLibraryServiceClient<Channel>,
    shared: Arc<Mutex<Shared>>,
    outage: Arc<Mutex<Outage>>,
    inbox: PathBuf,
    id: usize,
    rng: u64,
    repos: usize,
}

impl Caller {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Counts one call's answer.
    fn count<T>(&self, op: &'static str, started: Instant, result: &Result<T, tonic::Status>) {
        count(&self.shared, &self.outage, op, started, result);
    }

    fn request<T>(message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(Duration::from_secs(10));
        r
    }

    async fn search(&mut self) {
        let words = pumas_index::synthetic::WORDS;
        let mut query = words[self.below(words.len())].to_owned();
        if self.below(2) == 0 {
            query.push(' ');
            query.push_str(words[self.below(words.len())]);
        }
        if self.below(3) == 0 {
            // Typing: a prefix of the last word.
            let keep = query.len() - self.below(3);
            query.truncate(keep.max(1));
        } else {
            query.push(' ');
        }
        let filters = (self.below(4) == 0).then(|| ModelFilter {
            model_types: vec![[ModelType::Lora, ModelType::Checkpoint, ModelType::Llm][self.below(3)] as i32],
            ..Default::default()
        });
        let page_size = [20, 20, 50, 100][self.below(4)];
        let started = Instant::now();
        let result = self
            .gateway
            .search_models(Self::request(SearchModelsRequest {
                query,
                page_size,
                filters,
                ..Default::default()
            }))
            .await;
        self.count("search", started, &result);
    }

    async fn import(&mut self, n: usize) {
        let path = self.inbox.join(format!("load-{}-{n}.safetensors", self.id));
        let seed = ((self.id as u64) << 32) | n as u64;
        let bytes = fixtures::safetensors(
            &[(
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                "F16",
                vec![4096],
            )],
            &[("ss_base_model_version", "sdxl_base_v1-0")],
            seed,
        );
        if std::fs::write(&path, bytes).is_err() {
            return;
        }
        let started = Instant::now();
        let result = self
            .gateway
            .import_models(Self::request(ImportModelsRequest {
                paths: vec![path.display().to_string()],
                mode: ImportMode::Copy as i32,
                ..Default::default()
            }))
            .await;
        self.count("import", started, &result);
        let Some(job_id) = result
            .ok()
            .and_then(|r| r.into_inner().job)
            .and_then(|j| j.status)
            .map(|s| s.job_id)
        else {
            return;
        };
        // Follow the job to its end (a restart of the index forgets it: then the files decide).
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = Instant::now();
            let polled = self
                .gateway
                .get_import_job(Self::request(GetImportJobRequest {
                    job_id: job_id.clone(),
                }))
                .await;
            self.count("import-status", started, &polled);
            let Ok(job) = polled else { return };
            let Some(job) = job.into_inner().job else { return };
            let state = job.status.as_ref().map(|s| s.state).unwrap_or_default();
            if [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
                .iter()
                .any(|s| *s as i32 == state)
            {
                if let Ok(mut shared) = self.shared.lock() {
                    for item in job.results {
                        if item.outcome == ItemOutcome::Added as i32 {
                            shared.report.imports_added += 1;
                            shared.added.push(item.model_id);
                        }
                    }
                }
                return;
            }
        }
    }

    async fn download(&mut self) {
        let repo = format!("acme/load-{}", self.below(self.repos));
        let started = Instant::now();
        let result = self
            .gateway
            .start_download(Self::request(StartDownloadRequest {
                repo_id: repo,
                ..Default::default()
            }))
            .await;
        self.count("download", started, &result);
        if let Ok(r) = result
            && let Some(d) = r.into_inner().download
            && let Ok(mut shared) = self.shared.lock()
        {
            shared.downloads.push(d.download_id);
        }
    }

    async fn delete(&mut self) {
        let pick = self.next();
        let id = {
            let Ok(mut shared) = self.shared.lock() else {
                return;
            };
            if shared.deletable.is_empty() {
                return;
            }
            let at = (pick % shared.deletable.len() as u64) as usize;
            shared.deletable.swap_remove(at)
        };
        let started = Instant::now();
        let result = self
            .gateway
            .delete_model(Self::request(DeleteModelRequest {
                model_id: id.clone(),
                ..Default::default()
            }))
            .await;
        self.count("delete", started, &result);
        if result.is_ok()
            && let Ok(mut shared) = self.shared.lock()
        {
            shared.deleted.insert(id);
            shared.report.deletes += 1;
        }
    }

    async fn get(&mut self) {
        let id = {
            let Ok(shared) = self.shared.lock() else { return };
            if shared.deletable.is_empty() {
                return;
            }
            shared.deletable[(self.rng % shared.deletable.len() as u64) as usize].clone()
        };
        self.next();
        let started = Instant::now();
        let result = self
            .gateway
            .get_model(Self::request(GetModelRequest {
                model_id: id,
                include_chat_template: false,
                include_preview: false,
            }))
            .await;
        self.count("get", started, &result);
    }

    async fn run(mut self, until: Instant) {
        let mut imports = 0;
        while Instant::now() < until {
            match self.below(100) {
                0..70 => self.search().await,
                70..80 => {
                    imports += 1;
                    self.import(imports).await;
                }
                80..84 => self.download().await,
                84..92 => self.delete().await,
                _ => self.get().await,
            }
        }
    }
}

/// Counts one call's answer: by operation and code, its latency when OK, and whether an
/// UNAVAILABLE fell outside the outage.
fn count<T>(
    shared: &Mutex<Shared>,
    outage: &Mutex<Outage>,
    op: &'static str,
    started: Instant,
    result: &Result<T, tonic::Status>,
) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    let Ok(mut shared) = shared.lock() else {
        return;
    };
    let report = &mut shared.report;
    *report.calls.entry((op, format!("{code:?}"))).or_default() += 1;
    match code {
        tonic::Code::Ok => report.latencies.entry(op).or_default().push(started.elapsed()),
        tonic::Code::Internal => report.internal += 1,
        tonic::Code::Unavailable => {
            let now = Instant::now();
            let outage = outage
                .lock()
                .map(|o| (o.covers(now), o.back))
                .unwrap_or((false, None));
            if !outage.0 {
                report.unavailable_outside_outage += 1;
            }
            if let Some(back) = outage.1
                && now > back
            {
                let after = now - back;
                report.last_unavailable_after_recovery = Some(
                    report
                        .last_unavailable_after_recovery
                        .map_or(after, |a| a.max(after)),
                );
            }
        }
        _ => {}
    }
}

/// Runs the load and checks the library afterwards.
pub async fn run(settings: Settings) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.to_str().context("utf-8 path")?.to_owned();
    pumas_index::synthetic::generate(&root, settings.models)?;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let repos = settings.callers.max(4);
    let emulator = HubEmulator::start(
        (0..repos)
            .map(|n| {
                HubRepo::new(&format!("acme/load-{n}"))
                    .file(HubFile::new(
                        "config.json",
                        Bytes::from_static(b"{\"model_type\":\"llama\"}"),
                    ))
                    .file(HubFile::lfs(
                        "model.safetensors",
                        Bytes::from(fixtures::safetensors(
                            &[("model.layers.0.weight", "F16", vec![128 * 1024])],
                            &[],
                            50_000 + n as u64,
                        )),
                    ))
            })
            .collect(),
    )
    .await?;

    // The index on a port chosen now, so it comes back at the same address.
    let index_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.to_string()
    };
    let index_args = ["--data-root", root_arg.as_str()];
    let (index, _) = serve_role("index", &index_addr, &index_args, dir.path()).await?;
    let (_fetch, fetch_addr) = serve_role(
        "fetch",
        "127.0.0.1:0",
        &[
            "--data-root",
            &root_arg,
            "--index",
            &index_addr,
            "--hub-endpoint",
            &emulator.url,
        ],
        dir.path(),
    )
    .await?;
    let (_mapper, mapper_addr) = serve_role(
        "mapper",
        "127.0.0.1:0",
        &["--data-root", &root_arg, "--index", &index_addr],
        dir.path(),
    )
    .await?;
    let (_gateway, gateway_addr) = serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            &index_addr,
            "--fetch",
            &fetch_addr,
            "--mapper",
            &mapper_addr,
        ],
        dir.path(),
    )
    .await?;
    wait_for_health(
        &gateway_addr,
        GATEWAY_SERVICE,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
        Duration::from_secs(60),
    )
    .await?;
    let gateway = ModelLibraryServiceClient::new(channel(&gateway_addr).await?);

    let mut index_client = IndexServiceClient::new(channel(&index_addr).await?);
    let deletable: Vec<String> = all_models(&mut index_client).await?.into_keys().collect();
    let shared = Arc::new(Mutex::new(Shared {
        deletable,
        ..Default::default()
    }));
    let outage = Arc::new(Mutex::new(Outage::default()));
    let started = Instant::now();
    let until = started + settings.duration;
    let mut callers = tokio::task::JoinSet::new();
    for id in 0..settings.callers {
        let caller = Caller {
            gateway: gateway.clone(),
            shared: Arc::clone(&shared),
            outage: Arc::clone(&outage),
            inbox: inbox.clone(),
            id,
            rng: 0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x2545_F491),
            repos,
        };
        callers.spawn(caller.run(until));
    }

    // A reindex a quarter in; the index killed and started again halfway.
    tokio::time::sleep(settings.duration / 4).await;
    {
        let mut gateway = gateway.clone();
        let t = Instant::now();
        let result = gateway.reindex(ReindexRequest::default()).await;
        count(&shared, &outage, "reindex", t, &result);
    }
    tokio::time::sleep(settings.duration / 4).await;
    if let Ok(mut o) = outage.lock() {
        o.killed = Some(Instant::now());
    }
    index.kill().await?;
    let (index, _) = serve_role("index", &index_addr, &index_args, dir.path()).await?;
    wait_for_health(
        &index_addr,
        INDEX_SERVICE,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
        Duration::from_secs(60),
    )
    .await?;
    let back = Instant::now();
    if let Ok(mut o) = outage.lock() {
        o.back = Some(back);
    }
    while callers.join_next().await.is_some() {}
    let elapsed = started.elapsed();

    // Let downloads finish, then check every answer against the library.
    let mut fetch =
        pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient::new(channel(&fetch_addr).await?);
    let deadline = Instant::now() + Duration::from_secs(120);
    let downloads = loop {
        let all = fetch
            .list_downloads(pumas_proto::fetch::v1::ListDownloadsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .downloads;
        let active = all.iter().any(|d| {
            [
                DownloadState::Queued,
                DownloadState::Running,
                DownloadState::Committing,
            ]
            .iter()
            .any(|s| *s as i32 == d.state)
        });
        if !active {
            break all;
        }
        if Instant::now() > deadline {
            bail!("downloads still running two minutes after the load");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut index_client = IndexServiceClient::new(channel(&index_addr).await?);
    let listed = all_models(&mut index_client).await?;
    let on_disk = models_on_disk(&root.join("shared-resources/models"));
    let mut shared = std::mem::take(&mut *shared.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut violations = Vec::new();
    for id in &shared.added {
        if !listed.contains_key(id) && !shared.deleted.contains(id) {
            violations.push(format!(
                "import reported {id} ADDED, but the library does not have it"
            ));
        }
    }
    for d in &downloads {
        if d.state == DownloadState::Completed as i32 {
            shared.report.downloads_completed += 1;
            if !listed.contains_key(&d.model_id) && !shared.deleted.contains(&d.model_id) {
                violations.push(format!(
                    "download {} completed as {}, which the library does not have",
                    d.download_id, d.model_id
                ));
            }
        } else if d.state == DownloadState::Failed as i32 {
            shared.report.downloads_failed += 1;
            shared.report.download_failures.push(format!(
                "{} ({}): {}",
                d.download_id,
                d.repo_id,
                d.error
                    .as_ref()
                    .map(|e| format!("{} {}", e.reason, e.message))
                    .unwrap_or_default()
            ));
            if let Some((_, _, state)) = listed.get(&d.model_id)
                && *state == pumas_proto::common::v1::ModelState::Ready as i32
            {
                violations.push(format!(
                    "download {} failed, yet {} is ready",
                    d.download_id, d.model_id
                ));
            }
        }
    }
    for id in &shared.deleted {
        if listed.contains_key(id) {
            violations.push(format!("{id} was deleted, but the library still lists it"));
        }
    }
    let same = listed.len() == on_disk.len()
        && listed
            .iter()
            .all(|(id, (digest, _, _))| on_disk.get(id) == Some(digest));
    if !same {
        violations.push(format!(
            "models.db ({} models) differs from the files ({} folders)",
            listed.len(),
            on_disk.len()
        ));
    }
    let mut temps = Vec::new();
    temp_files(&root, &mut temps);
    if !temps.is_empty() {
        violations.push(format!("temp files left: {temps:?}"));
    }
    drop(index);
    let mut report = std::mem::take(&mut shared.report);
    report.violations = violations;
    report.elapsed = elapsed;
    report.outage = back - outage.lock().ok().and_then(|o| o.killed).unwrap_or(back);
    Ok(report)
}
