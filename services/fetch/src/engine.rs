//! The download engine: schedules jobs by priority, moves bytes over several connections per
//! file with positional writes, verifies every file while it arrives, and hands finished files
//! to the index.
//!
//! Durability: a part's progress is checkpointed (after `sync_data`) once it has
//! `checkpoint_bytes` (2 MiB by default) not yet durable, or a second after the file's last
//! checkpoint, so a crash re-downloads at most one checkpoint per in-flight part. One checkpoint
//! covers every part of the file. Verification
//! hashes the contiguous prefix of a file while its parts arrive, so a finished file needs no
//! second full read.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use futures_util::StreamExt as _;
use pumas_proto::common::v1::{HubSource, ModelFile};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{
    AbortModelDownloadRequest, BeginModelDownloadRequest, CommitModelDownloadRequest,
    CommitModelDownloadResponse, GetModelRequest,
};
use pumas_runtime::client::TracedChannel;
use sha1::Digest as _;
use tokio::sync::{Notify, Semaphore, watch};

use crate::hub::{Hub, HubError};
use crate::select;
use crate::store::{Job, JobError, JobState, Part, Store, now_ms};

/// Engine settings (flags of `pumas serve fetch`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Jobs transferring at once.
    pub max_jobs: usize,
    /// Connections at once, over all files and jobs.
    pub max_connections: usize,
    /// Connections (byte-range parts) per large file.
    pub connections_per_file: usize,
    /// Files smaller than twice this are fetched over one connection.
    pub min_part_bytes: u64,
    /// Progress is made durable every this many bytes per part.
    pub checkpoint_bytes: u64,
    /// A part that receives nothing for this long is restarted.
    pub stall_timeout: Duration,
    /// Attempts per part before the job fails.
    pub part_retries: usize,
    /// Attempts per file when its hash does not match.
    pub verify_attempts: usize,
    /// Aggregate bandwidth cap in bytes per second (0 = none).
    pub bandwidth_limit: u64,
    /// A local Hugging Face hub cache to adopt files from.
    pub hf_cache: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_jobs: 2,
            max_connections: 32,
            connections_per_file: 16,
            min_part_bytes: 8 << 20,
            checkpoint_bytes: 2 << 20,
            stall_timeout: Duration::from_secs(30),
            part_retries: 6,
            verify_attempts: 3,
            bandwidth_limit: 0,
            hf_cache: None,
        }
    }
}

/// Largest byte-range part of a file (unless `min_part_bytes` is larger).
const MAX_PART_BYTES: u64 = 16 << 20;

/// What a running job should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
    Cancel,
}

/// Why a transfer stopped early.
#[derive(Debug)]
enum Stop {
    Paused,
    Cancelled,
    Failed(JobError),
}

impl Stop {
    fn from_control(control: Control) -> Option<Self> {
        match control {
            Control::Run => None,
            Control::Pause => Some(Self::Paused),
            Control::Cancel => Some(Self::Cancelled),
        }
    }
}

fn failure(code: tonic::Code, message: impl Into<String>) -> Stop {
    Stop::Failed(JobError::new(code, message))
}

fn hub_failure(err: HubError) -> Stop {
    let status: tonic::Status = pumas_runtime::ApiError::from(err.clone()).into();
    failure(status.code(), err.to_string())
}

/// One aggregate token bucket shared by every part of every job.
pub struct Limiter {
    rate: u64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Limiter {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            state: tokio::sync::Mutex::new((0.0, Instant::now())),
        }
    }

    async fn acquire(&self, bytes: usize) {
        if self.rate == 0 {
            return;
        }
        let burst = (self.rate as f64 / 10.0).max(bytes as f64);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        state.0 = (state.0 + now.duration_since(state.1).as_secs_f64() * self.rate as f64).min(burst);
        state.1 = now;
        state.0 -= bytes as f64;
        if state.0 < 0.0 {
            // Sleep holding the lock: callers queue up in order, which keeps the cap exact.
            tokio::time::sleep(Duration::from_secs_f64(-state.0 / self.rate as f64)).await;
        }
    }
}

/// A job in memory: its record, its control signal and live progress.
pub struct Live {
    job: Mutex<Job>,
    control: watch::Sender<Control>,
    /// Live bytes on disk per file (ahead of the checkpoints).
    progress: Vec<AtomicU64>,
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Bumped on every state or progress change; watchers wait on it.
    pub changed: watch::Sender<u64>,
    running: AtomicBool,
}

impl Live {
    fn new(job: Job) -> Arc<Self> {
        let progress = job.files.iter().map(|f| AtomicU64::new(f.done())).collect();
        Arc::new(Self {
            job: Mutex::new(job),
            control: watch::channel(Control::Run).0,
            progress,
            samples: Mutex::new(VecDeque::new()),
            changed: watch::channel(0).0,
            running: AtomicBool::new(false),
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A copy of the record with live progress.
    pub fn snapshot(&self) -> Snapshot {
        let mut job = self
            .job
            .lock()
            .map(|j| j.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let live: Vec<u64> = self.progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        let bytes_done: u64 = job
            .files
            .iter()
            .zip(&live)
            .map(|(f, l)| if f.verified { f.size } else { (*l).min(f.size) })
            .sum();
        let mut rate = 0.0;
        if let Ok(mut samples) = self.samples.lock() {
            let now = Instant::now();
            samples.push_back((now, bytes_done));
            while samples.len() > 2
                && samples
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(5))
            {
                samples.pop_front();
            }
            if let (Some((t0, b0)), Some((t1, b1))) = (samples.front(), samples.back()) {
                let dt = t1.duration_since(*t0).as_secs_f64();
                if dt > 0.2 {
                    rate = b1.saturating_sub(*b0) as f64 / dt;
                }
            }
        }
        if job.state != JobState::Running {
            rate = 0.0;
        }
        for (f, l) in job.files.iter_mut().zip(&live) {
            if !f.verified {
                // Report live bytes through the first part's counter.
                let checkpointed = f.done();
                if *l > checkpointed
                    && let Some(p) = f.parts.first_mut()
                {
                    p.done += *l - checkpointed;
                }
            }
        }
        Snapshot {
            job,
            bytes_done,
            bytes_per_second: rate,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Job)) -> Job {
        let mut job = self.job.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut job);
        job.updated_ms = now_ms();
        job.clone()
    }
}

/// A job with live progress.
pub struct Snapshot {
    pub job: Job,
    pub bytes_done: u64,
    pub bytes_per_second: f64,
}

/// The engine.
pub struct Engine {
    pub hub: Arc<Hub>,
    pub store: Store,
    index: IndexServiceClient<TracedChannel>,
    dir: PathBuf,
    settings: Settings,
    jobs: Mutex<HashMap<String, Arc<Live>>>,
    wake: Notify,
    connections: Arc<Semaphore>,
    limiter: Limiter,
}

impl Engine {
    /// Loads the jobs of `store`, re-queues the ones a stop interrupted and starts scheduling.
    pub async fn start(
        hub: Arc<Hub>,
        store: Store,
        index: IndexServiceClient<TracedChannel>,
        dir: PathBuf,
        settings: Settings,
    ) -> Result<Arc<Self>, sqlx::Error> {
        let keep_since = crate::store::now_ms() - crate::store::KEEP_FINISHED_DAYS * 24 * 3600 * 1000;
        let pruned = store
            .prune_finished(keep_since, crate::store::KEEP_FINISHED_JOBS)
            .await?;
        if pruned > 0 {
            tracing::info!(pruned, "forgot finished downloads past their retention");
        }
        let mut jobs = HashMap::new();
        for mut job in store.all().await? {
            if matches!(job.state, JobState::Running | JobState::Committing) {
                job.state = JobState::Queued;
                store.save(&job).await?;
                let parts: Vec<String> = job
                    .files
                    .iter()
                    .flat_map(|f| f.parts.iter().filter(|p| p.done > 0 && p.done < p.end - p.start))
                    .map(|p| format!("{}+{}", p.start, p.done))
                    .collect();
                tracing::info!(
                    download_id = %job.id,
                    repo_id = %job.repo_id,
                    bytes_durable = job.bytes_done(),
                    bytes_total = job.bytes_total(),
                    resumed_parts = %parts.join(","),
                    "resuming a download a stop interrupted, from the bytes already on disk"
                );
            }
            jobs.insert(job.id.clone(), Live::new(job));
        }
        let engine = Arc::new(Self {
            hub,
            store,
            index,
            dir,
            connections: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            limiter: Limiter::new(settings.bandwidth_limit),
            settings,
            jobs: Mutex::new(jobs),
            wake: Notify::new(),
        });
        let scheduler = Arc::clone(&engine);
        tokio::spawn(async move { scheduler.schedule().await });
        Ok(engine)
    }

    /// Where a job's files are assembled.
    pub fn staging(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The live job.
    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.jobs.lock().ok()?.get(id).cloned()
    }

    /// Every job, newest first.
    pub fn all(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<Arc<Live>> = self
            .jobs
            .lock()
            .map(|j| j.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|l| {
            let job = l.job.lock().unwrap_or_else(|e| e.into_inner());
            (std::cmp::Reverse(job.created_ms), job.id.clone())
        });
        all
    }

    /// Adds a new job and wakes the scheduler.
    pub async fn add(&self, job: Job) -> Result<Arc<Live>, sqlx::Error> {
        self.store.save(&job).await?;
        let live = Live::new(job.clone());
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job.id.clone(), Arc::clone(&live));
        }
        self.wake.notify_one();
        Ok(live)
    }

    async fn save(&self, live: &Live, f: impl FnOnce(&mut Job)) -> Job {
        let job = live.update(f);
        if let Err(err) = self.store.save(&job).await {
            tracing::error!(error = %err, download = %job.id, "saving the download record failed");
        }
        live.bump();
        job
    }

    /// Pauses a job (keeps its bytes).
    pub async fn pause(&self, live: &Arc<Live>) -> Job {
        live.control.send_replace(Control::Pause);
        self.save(live, |j| {
            if matches!(j.state, JobState::Queued | JobState::Running) {
                j.state = JobState::Paused;
            }
        })
        .await
    }

    /// Resumes a paused or failed job from its bytes on disk.
    pub async fn resume(&self, live: &Arc<Live>) -> Job {
        live.control.send_replace(Control::Run);
        let job = self
            .save(live, |j| {
                j.state = JobState::Queued;
                j.error = None;
            })
            .await;
        self.wake.notify_one();
        job
    }

    /// Changes a job's priority.
    pub async fn set_priority(&self, live: &Arc<Live>, priority: i32) -> Job {
        let job = self.save(live, |j| j.priority = priority).await;
        self.wake.notify_one();
        job
    }

    /// Cancels a job: stops it, removes its partial files and its model from the index.
    pub async fn cancel(self: &Arc<Self>, live: &Arc<Live>) -> Job {
        live.control.send_replace(Control::Cancel);
        if !live.running.load(Ordering::SeqCst) {
            self.finish_cancel(live).await;
        } else {
            // The running task sees the signal and finishes the cancel; wait for it briefly.
            let mut changed = live.changed.subscribe();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while live.running.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(100), changed.changed()).await;
            }
        }
        live.snapshot().job
    }

    async fn finish_cancel(&self, live: &Arc<Live>) {
        let id = live.snapshot().job.id;
        let staging = self.staging(&id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staging)).await;
        let mut index = self.index.clone();
        if let Err(status) = index
            .abort_model_download(AbortModelDownloadRequest {
                download_id: id.clone(),
                remove: true,
                reason: "cancelled".to_owned(),
            })
            .await
            && status.code() != tonic::Code::NotFound
        {
            tracing::warn!(download = %id, error = %status.message(), "the index could not drop the cancelled model");
        }
        self.save(live, |j| {
            j.state = JobState::Cancelled;
            for f in &mut j.files {
                f.parts.clear();
                f.verified = false;
            }
        })
        .await;
        for p in &live.progress {
            p.store(0, Ordering::Relaxed);
        }
    }

    async fn schedule(self: Arc<Self>) {
        loop {
            let running = self
                .all()
                .iter()
                .filter(|l| l.running.load(Ordering::SeqCst))
                .count();
            let mut queued: Vec<(i32, i64, Arc<Live>)> = self
                .all()
                .into_iter()
                .filter(|l| !l.running.load(Ordering::SeqCst))
                .filter_map(|l| {
                    let job = l.job.lock().ok()?.clone();
                    (job.state == JobState::Queued).then_some((job.priority, job.created_ms, Arc::clone(&l)))
                })
                .collect();
            queued.sort_by_key(|(priority, created, _)| (std::cmp::Reverse(*priority), *created));
            for (_, _, live) in queued
                .into_iter()
                .take(self.settings.max_jobs.saturating_sub(running))
            {
                live.running.store(true, Ordering::SeqCst);
                let engine = Arc::clone(&self);
                tokio::spawn(async move {
                    engine.run(&live).await;
                    live.running.store(false, Ordering::SeqCst);
                    live.bump();
                    engine.wake.notify_one();
                });
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }

    #[tracing::instrument(skip_all, fields(download = %live.snapshot().job.id))]
    async fn run(self: &Arc<Self>, live: &Arc<Live>) {
        if *live.control.borrow() != Control::Run {
            return;
        }
        self.save(live, |j| j.state = JobState::Running).await;
        let outcome = match self.transfer(live).await {
            Ok(()) => self.commit(live).await,
            Err(stop) => Err(stop),
        };
        match outcome {
            Ok(()) => {}
            Err(Stop::Paused) => {
                self.save(live, |j| j.state = JobState::Paused).await;
            }
            Err(Stop::Cancelled) => self.finish_cancel(live).await,
            Err(Stop::Failed(error)) => {
                tracing::warn!(code = %error.reason, error = %error.message, "download failed");
                let id = live.snapshot().job.id;
                let mut index = self.index.clone();
                let _ = index
                    .abort_model_download(AbortModelDownloadRequest {
                        download_id: id,
                        remove: false,
                        reason: error.message.clone(),
                    })
                    .await;
                self.save(live, |j| {
                    j.state = JobState::Failed;
                    j.error = Some(error);
                })
                .await;
            }
        }
    }

    /// Fetches every file: small ones first (then the index learns of the model), then the rest.
    async fn transfer(self: &Arc<Self>, live: &Arc<Live>) -> Result<(), Stop> {
        let job = live.snapshot().job;
        let (small, large): (Vec<usize>, Vec<usize>) = (0..job.files.len())
            .partition(|&i| !job.files[i].lfs || select::is_auxiliary(&job.files[i].path, job.files[i].size));
        self.fetch_files(live, small).await?;
        if !live.snapshot().job.announced {
            self.announce(live).await;
        }
        self.fetch_files(live, large).await
    }

    async fn fetch_files(self: &Arc<Self>, live: &Arc<Live>, files: Vec<usize>) -> Result<(), Stop> {
        let mut set = tokio::task::JoinSet::new();
        for index in files {
            let engine = Arc::clone(self);
            let live = Arc::clone(live);
            set.spawn(async move { engine.fetch_file(&live, index).await });
        }
        let mut first: Option<Stop> = None;
        while let Some(result) = set.join_next().await {
            let result = result.unwrap_or_else(|e| {
                Err(failure(
                    tonic::Code::Internal,
                    format!("download task failed: {e}"),
                ))
            });
            if let Err(stop) = result
                && first.is_none()
            {
                // One file failing stops its siblings: the job fails (resumably) as a whole.
                if matches!(stop, Stop::Failed(_)) {
                    live.control.send_replace(Control::Pause);
                }
                first = Some(stop);
            }
        }
        match first {
            Some(stop) => {
                if matches!(stop, Stop::Failed(_)) {
                    live.control.send_replace(Control::Run);
                }
                Err(stop)
            }
            None => Ok(()),
        }
    }

    /// Tells the index about the model as soon as its small files are in.
    async fn announce(&self, live: &Arc<Live>) {
        let job = live.snapshot().job;
        let request = BeginModelDownloadRequest {
            download_id: job.id.clone(),
            source: Some(HubSource {
                endpoint: self.hub.endpoint().to_owned(),
                repo_id: job.repo_id.clone(),
                revision: job.revision.clone(),
                commit_sha: job.commit_sha.clone(),
            }),
            staging_path: self.staging(&job.id).display().to_string(),
            expected_files: job
                .files
                .iter()
                .map(|f| ModelFile {
                    path: f.path.clone(),
                    size_bytes: f.size,
                    sha256: if f.verified {
                        f.sha256.clone()
                    } else if f.expected.starts_with("sha256:") {
                        f.expected.clone()
                    } else {
                        String::new()
                    },
                    blake3: f.blake3.clone(),
                })
                .collect(),
            model_type: job.model_type,
            family: job.family.clone(),
            tags: job.tags.clone(),
            license: job.license.clone(),
        };
        let mut index = self.index.clone();
        match index.begin_model_download(request).await {
            Ok(response) => {
                let model_id = response
                    .into_inner()
                    .model
                    .map(|m| m.model_id)
                    .unwrap_or_default();
                self.save(live, |j| {
                    j.announced = true;
                    j.model_id = model_id;
                })
                .await;
            }
            // Not fatal: the model shows up at commit instead.
            Err(status) => {
                tracing::warn!(error = %status.message(), "the index did not take the early record")
            }
        }
    }

    async fn commit(&self, live: &Arc<Live>) -> Result<(), Stop> {
        let job = self.save(live, |j| j.state = JobState::Committing).await;
        if !job.announced {
            self.announce(live).await;
        }
        let request = CommitModelDownloadRequest {
            download_id: job.id.clone(),
            files: job
                .files
                .iter()
                .map(|f| ModelFile {
                    path: f.path.clone(),
                    size_bytes: f.size,
                    sha256: f.sha256.clone(),
                    blake3: f.blake3.clone(),
                })
                .collect(),
        };
        let mut index = self.index.clone();
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_times(5)
            .build();
        let mut interrupted = false;
        let response = loop {
            match index.commit_model_download(request.clone()).await {
                Ok(r) => break r.into_inner(),
                // A commit the index finished before the answer was lost (it restarted, the
                // connection broke): the model is there, ready, with these very files.
                Err(status) if interrupted && status.code() == tonic::Code::NotFound => {
                    match self.committed_before(&job).await {
                        Some(model) => break CommitModelDownloadResponse { model: Some(model) },
                        None => {
                            return Err(failure(
                                status.code(),
                                format!("the index refused the finished download: {}", status.message()),
                            ));
                        }
                    }
                }
                // The call may not have reached the index, or its answer was lost: try again.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                    ) =>
                {
                    interrupted = true;
                    match delays.next() {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => {
                            return Err(failure(
                                tonic::Code::Unavailable,
                                format!(
                                    "the files are downloaded and verified, but the index is unavailable ({}); resume the download to commit them",
                                    status.message()
                                ),
                            ));
                        }
                    }
                }
                Err(status) => {
                    return Err(failure(
                        status.code(),
                        format!("the index refused the finished download: {}", status.message()),
                    ));
                }
            }
        };
        let model_id = response.model.map(|m| m.model_id).unwrap_or_default();
        let staging = self.staging(&job.id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staging)).await;
        self.save(live, |j| {
            j.state = JobState::Completed;
            j.model_id = model_id;
        })
        .await;
        Ok(())
    }

    /// The model of `job` if the index already committed it: ready, with the job's files.
    async fn committed_before(&self, job: &Job) -> Option<pumas_proto::common::v1::ModelRecord> {
        if job.model_id.is_empty() {
            return None;
        }
        let mut index = self.index.clone();
        let model = index
            .get_model(GetModelRequest {
                model_id: job.model_id.clone(),
            })
            .await
            .ok()?
            .into_inner()
            .model?;
        let ready = model.state == pumas_proto::common::v1::ModelState::Ready as i32;
        let same_files = model.files.len() == job.files.len()
            && job.files.iter().all(|f| {
                model
                    .files
                    .iter()
                    .any(|m| m.path == f.path && m.sha256 == f.sha256)
            });
        (ready && same_files).then_some(model)
    }

    fn control_stop(live: &Live) -> Option<Stop> {
        Stop::from_control(*live.control.borrow())
    }

    /// Fetches and verifies one file.
    async fn fetch_file(self: &Arc<Self>, live: &Arc<Live>, index: usize) -> Result<(), Stop> {
        let job = live.snapshot().job;
        let file = job.files[index].clone();
        if file.verified {
            return Ok(());
        }
        let staging = self.staging(&job.id);
        let partial = staging.join(format!("{}.pumas-part", file.path));
        let final_path = staging.join(&file.path);
        if let Some(parent) = partial.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                failure(
                    tonic::Code::Internal,
                    format!("creating {}: {e}", parent.display()),
                )
            })?;
        }
        let mut adopted = false;
        if file.parts.is_empty() && self.adopt(&job.repo_id, &file, &partial) {
            let size = file.size;
            self.save(live, |j| {
                j.files[index].parts = vec![Part {
                    start: 0,
                    end: size,
                    done: size,
                }];
                j.files[index].adopted = true;
            })
            .await;
            live.progress[index].store(size, Ordering::Relaxed);
            adopted = true;
        }
        let mut url: Option<String> = None;
        for attempt in 1..=self.settings.verify_attempts.max(1) {
            if let Some(stop) = Self::control_stop(live) {
                return Err(stop);
            }
            let parts = self.plan_parts(live, index).await;
            let needs_bytes = parts.iter().any(|p| p.done < p.end - p.start);
            if needs_bytes && url.is_none() {
                // The resolved location (the CDN for LFS files) is reused by every part.
                let resolved = self
                    .hub
                    .resolve(&job.repo_id, &job.commit_sha, &file.path)
                    .await
                    .map_err(hub_failure)?;
                url = Some(resolved.url);
            }
            let digests = self
                .transfer_file(live, index, &partial, url.as_deref().unwrap_or_default(), parts)
                .await?;
            let expected = file.expected.split_once(':').map(|(_, h)| h).unwrap_or_default();
            let actual = if file.expected.starts_with("sha1:") {
                &digests.git_sha1
            } else {
                &digests.sha256
            };
            if actual == expected {
                std::fs::rename(&partial, &final_path).map_err(|e| {
                    failure(
                        tonic::Code::Internal,
                        format!("renaming {}: {e}", partial.display()),
                    )
                })?;
                let (sha256, blake3) = (
                    format!("sha256:{}", digests.sha256),
                    format!("blake3:{}", digests.blake3),
                );
                self.save(live, |j| {
                    let f = &mut j.files[index];
                    f.verified = true;
                    f.sha256 = sha256;
                    f.blake3 = blake3;
                })
                .await;
                live.progress[index].store(file.size, Ordering::Relaxed);
                return Ok(());
            }
            tracing::warn!(
                file = %file.path,
                attempt,
                adopted,
                expected = %file.expected,
                actual = %actual,
                "downloaded bytes do not match the hub's hash; discarding them"
            );
            adopted = false;
            let _ = std::fs::remove_file(&partial);
            self.save(live, |j| {
                j.files[index].parts.clear();
                j.files[index].adopted = false;
            })
            .await;
            live.progress[index].store(0, Ordering::Relaxed);
        }
        Err(failure(
            tonic::Code::DataLoss,
            format!(
                "{} did not match its expected hash {} after {} attempts; nothing unverified was kept",
                file.path, file.expected, self.settings.verify_attempts
            ),
        ))
    }

    /// The parts of a file: kept from the record (resume), or planned now.
    async fn plan_parts(&self, live: &Arc<Live>, index: usize) -> Vec<Part> {
        let file = live.snapshot().job.files[index].clone();
        if !file.parts.is_empty() {
            return file.parts;
        }
        let size = file.size;
        let min = self.settings.min_part_bytes.max(1);
        let count = if size >= 2 * min {
            // A large file gets more parts than connections, fetched in order, so its
            // contiguous prefix (what the verifier can hash) grows while the rest arrives.
            // A whole number of rounds over the connections, so no lone part runs at the end
            // on one connection while the others sit idle.
            let connections = self.settings.connections_per_file.max(1) as u64;
            let part = (size / connections).clamp(min, min.max(MAX_PART_BYTES));
            let count = size.div_ceil(part).max(1);
            if count > connections {
                count.div_ceil(connections) * connections
            } else {
                count
            }
        } else {
            1
        };
        let step = size.div_ceil(count).max(1);
        let parts: Vec<Part> = (0..count)
            .map(|n| Part {
                start: (n * step).min(size),
                end: ((n + 1) * step).min(size),
                done: 0,
            })
            .filter(|p| p.end > p.start || size == 0)
            .collect();
        let saved = parts.clone();
        self.save(live, |j| j.files[index].parts = saved).await;
        parts
    }

    /// Runs a file's parts and its verifier; returns the digests of the whole file.
    async fn transfer_file(
        self: &Arc<Self>,
        live: &Arc<Live>,
        index: usize,
        partial: &Path,
        url: &str,
        parts: Vec<Part>,
    ) -> Result<Digests, Stop> {
        let size = live.snapshot().job.files[index].size;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(|e| {
                failure(
                    tonic::Code::Internal,
                    format!("opening {}: {e}", partial.display()),
                )
            })?;
        file.set_len(size).map_err(|e| {
            failure(
                tonic::Code::ResourceExhausted,
                format!("reserving {size} bytes for {}: {e}", partial.display()),
            )
        })?;
        let target = Arc::new(PartialFile::new(index, file, &parts));
        let (file, written, arrived) = (
            Arc::clone(&target.file),
            Arc::clone(&target.written),
            Arc::clone(&target.arrived),
        );
        live.progress[index].store(parts.iter().map(|p| p.done).sum(), Ordering::Relaxed);
        let git_sha1 = live.snapshot().job.files[index].expected.starts_with("sha1:");
        let verifier = tokio::spawn(verify_while_arriving(
            Arc::clone(&file),
            parts.clone(),
            Arc::clone(&written),
            Arc::clone(&arrived),
            size,
            git_sha1,
        ));
        // `connections_per_file` workers take the parts in file order, so early parts finish
        // first and the verifier hashes while later ones arrive.
        let pending: Arc<Vec<(usize, Part)>> = Arc::new(
            parts
                .iter()
                .cloned()
                .enumerate()
                .filter(|(_, p)| p.done < p.end - p.start)
                .collect(),
        );
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..self.settings.connections_per_file.clamp(1, pending.len().max(1)) {
            let engine = Arc::clone(self);
            let live = Arc::clone(live);
            let target = Arc::clone(&target);
            let url = url.to_owned();
            let pending = Arc::clone(&pending);
            let next = Arc::clone(&next);
            set.spawn(async move {
                while let Some((n, part)) = pending.get(next.fetch_add(1, Ordering::SeqCst)).cloned() {
                    engine.transfer_part(&live, &target, n, part, &url).await?;
                }
                Ok(())
            });
        }
        let mut first: Option<Stop> = None;
        while let Some(result) = set.join_next().await {
            let result = result
                .unwrap_or_else(|e| Err(failure(tonic::Code::Internal, format!("part task failed: {e}"))));
            if let Err(stop) = result
                && first.is_none()
            {
                first = Some(stop);
                set.abort_all();
            }
        }
        if let Some(stop) = first {
            verifier.abort();
            return Err(stop);
        }
        file.sync_all().map_err(|e| {
            failure(
                tonic::Code::Internal,
                format!("syncing {}: {e}", partial.display()),
            )
        })?;
        arrived.notify_waiters();
        verifier
            .await
            .map_err(|e| failure(tonic::Code::Internal, format!("verifier failed: {e}")))?
            .map_err(|e| {
                failure(
                    tonic::Code::Internal,
                    format!("reading {} to verify it: {e}", partial.display()),
                )
            })
    }

    /// Fetches one byte range with retries, a stall watchdog, the bandwidth cap and checkpoints.
    async fn transfer_part(
        &self,
        live: &Arc<Live>,
        target: &PartialFile,
        part_index: usize,
        part: Part,
        url: &str,
    ) -> Result<(), Stop> {
        let length = part.end - part.start;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.settings.part_retries)
            .with_jitter()
            .build();
        loop {
            if target.written(part_index) >= length {
                break;
            }
            if let Some(stop) = Self::control_stop(live) {
                return Err(stop);
            }
            let error = match self.stream_range(live, target, part_index, &part, url).await {
                Ok(()) => continue,
                Err(RangeError::Stop(stop)) => {
                    self.checkpoint(live, target, part_index, true).await;
                    return Err(stop);
                }
                Err(RangeError::Retry(message)) => message,
                Err(RangeError::Fatal(err)) => return Err(hub_failure(err)),
            };
            self.checkpoint(live, target, part_index, true).await;
            match delays.next() {
                Some(delay) => {
                    tracing::debug!(part = part_index, %error, ?delay, "retrying a part");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(failure(
                        tonic::Code::Unavailable,
                        format!(
                            "a part of the file kept failing after {} retries: {error}; resume the download to continue from the bytes on disk",
                            self.settings.part_retries
                        ),
                    ));
                }
            }
        }
        self.checkpoint(live, target, part_index, true).await;
        Ok(())
    }

    /// Makes the file's written bytes durable and records them, when this part has
    /// `checkpoint_bytes` not yet durable or the file's last checkpoint is older than
    /// [`CHECKPOINT_INTERVAL`] (or always, with `force`). One `sync_data` covers every part of
    /// the file, so parts checkpoint together instead of each paying for its own.
    async fn checkpoint(&self, live: &Arc<Live>, target: &PartialFile, part_index: usize, force: bool) {
        let due = |target: &PartialFile| {
            let pending = target.written(part_index) - target.durable[part_index].load(Ordering::SeqCst);
            pending > 0
                && (force
                    || pending >= self.settings.checkpoint_bytes
                    || target.since_checkpoint() >= CHECKPOINT_INTERVAL)
        };
        if !due(target) {
            return;
        }
        let _one_at_a_time = target.checkpointing.lock().await;
        // Another part's checkpoint may have covered this one while it waited.
        if !due(target) {
            return;
        }
        let snapshot: Vec<u64> = target.written.iter().map(|w| w.load(Ordering::SeqCst)).collect();
        let sync = Arc::clone(&target.file);
        if !matches!(
            tokio::task::spawn_blocking(move || sync.sync_data()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        for (durable, done) in target.durable.iter().zip(&snapshot) {
            durable.fetch_max(*done, Ordering::SeqCst);
        }
        target.mark_checkpoint();
        let file_index = target.index;
        self.save(live, |j| {
            for (p, done) in j.files[file_index].parts.iter_mut().zip(&snapshot) {
                p.done = p.done.max(*done);
            }
        })
        .await;
    }

    /// One GET of the rest of a part.
    async fn stream_range(
        &self,
        live: &Arc<Live>,
        target: &PartialFile,
        part_index: usize,
        part: &Part,
        url: &str,
    ) -> Result<(), RangeError> {
        let _permit = self
            .connections
            .acquire()
            .await
            .map_err(|_| RangeError::Retry("shutting down".to_owned()))?;
        let length = part.end - part.start;
        let from = part.start + target.written(part_index);
        let whole = from == 0 && part.end == live.snapshot().job.files[target.index].size;
        let response = match self
            .hub
            .get_range(url, from, if whole { None } else { Some(part.end) })
            .await
        {
            Ok(r) => r,
            Err(err) if err.retryable() => return Err(RangeError::Retry(err.to_string())),
            Err(err) => return Err(RangeError::Fatal(err)),
        };
        // A server that ignores Range answers 200 from byte 0: skip to where this part stands.
        let mut skip = if response.status() == reqwest::StatusCode::OK {
            from
        } else {
            0
        };
        let mut control = live.control.subscribe();
        let mut stream = response.bytes_stream();
        let mut pending = Pending {
            buffer: Vec::with_capacity(1 << 20),
            position: from,
            part_index,
        };
        // Small writes relative to the checkpoint keep what a crash loses near one checkpoint.
        let flush_at = (self.settings.checkpoint_bytes / 4).clamp(64 << 10, 1 << 20) as usize;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.settings.stall_timeout, stream.next()) => next,
                _ = control.changed() => {
                    self.flush(live, target, &mut pending).await?;
                    match Stop::from_control(*control.borrow()) {
                        Some(stop) => return Err(RangeError::Stop(stop)),
                        None => continue,
                    }
                }
            };
            let chunk = match next {
                Err(_) => {
                    self.flush(live, target, &mut pending).await?;
                    return Err(RangeError::Retry(format!(
                        "no data for {} s (stalled)",
                        self.settings.stall_timeout.as_secs()
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    self.flush(live, target, &mut pending).await?;
                    return Err(RangeError::Retry(format!("connection lost: {e}")));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            let mut chunk = &chunk[..];
            if skip > 0 {
                let n = (skip as usize).min(chunk.len());
                chunk = &chunk[n..];
                skip -= n as u64;
            }
            let room = (part.end - pending.position - pending.buffer.len() as u64) as usize;
            let chunk = &chunk[..chunk.len().min(room)];
            self.limiter.acquire(chunk.len()).await;
            pending.buffer.extend_from_slice(chunk);
            if pending.buffer.len() >= flush_at || pending.position + pending.buffer.len() as u64 >= part.end
            {
                self.flush(live, target, &mut pending).await?;
                self.checkpoint(live, target, part_index, false).await;
            }
            if pending.position >= part.end {
                return Ok(());
            }
        }
        self.flush(live, target, &mut pending).await?;
        if target.written(part_index) < length {
            return Err(RangeError::Retry("the body ended early".to_owned()));
        }
        Ok(())
    }

    /// Writes a part's buffered bytes at their place in the file (not yet durable).
    async fn flush(
        &self,
        live: &Arc<Live>,
        target: &PartialFile,
        pending: &mut Pending,
    ) -> Result<(), RangeError> {
        if pending.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut pending.buffer, Vec::with_capacity(1 << 20));
        let at = pending.position;
        let file = Arc::clone(&target.file);
        let n = data.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, at))
            .await
            .map_err(|e| RangeError::Stop(failure(tonic::Code::Internal, format!("write task: {e}"))))?
            .map_err(|e| {
                RangeError::Stop(failure(
                    tonic::Code::ResourceExhausted,
                    format!("writing downloaded bytes: {e}"),
                ))
            })?;
        pending.position += n;
        target.written[pending.part_index].fetch_add(n, Ordering::SeqCst);
        live.progress[target.index].fetch_add(n, Ordering::Relaxed);
        target.arrived.notify_waiters();
        Ok(())
    }

    /// Takes a file from a local Hugging Face cache when a blob with its hash is there
    /// (verified like a download before it counts).
    fn adopt(&self, repo_id: &str, file: &crate::store::JobFile, partial: &Path) -> bool {
        let Some(cache) = &self.settings.hf_cache else {
            return false;
        };
        let Some((_, digest)) = file.expected.split_once(':') else {
            return false;
        };
        let own = cache
            .join(format!("models--{}", repo_id.replace('/', "--")))
            .join("blobs")
            .join(digest);
        let mut candidates = vec![own];
        if let Ok(entries) = std::fs::read_dir(cache) {
            for entry in entries.flatten().take(10_000) {
                candidates.push(entry.path().join("blobs").join(digest));
            }
        }
        for candidate in candidates {
            let Ok(meta) = std::fs::metadata(&candidate) else {
                continue;
            };
            if !meta.is_file() || meta.len() != file.size {
                continue;
            }
            let _ = std::fs::remove_file(partial);
            if std::fs::hard_link(&candidate, partial).is_ok() || std::fs::copy(&candidate, partial).is_ok() {
                tracing::info!(file = %file.path, from = %candidate.display(), "adopted from the local Hugging Face cache");
                return true;
            }
        }
        false
    }
}

/// A file being downloaded, shared by its part workers and its verifier: the open partial
/// file, the bytes written per part, what of them is durable, and a wake-up for the verifier.
struct PartialFile {
    /// Index of the file in its job.
    index: usize,
    file: Arc<std::fs::File>,
    /// Bytes written per part, from its start (ahead of `durable`).
    written: Arc<Vec<AtomicU64>>,
    /// Bytes per part that are synced and recorded in the job store.
    durable: Vec<AtomicU64>,
    arrived: Arc<Notify>,
    last_checkpoint: std::sync::Mutex<std::time::Instant>,
    /// One checkpoint of the file at a time (the others find their bytes covered).
    checkpointing: tokio::sync::Mutex<()>,
}

impl PartialFile {
    fn new(index: usize, file: std::fs::File, parts: &[Part]) -> Self {
        Self {
            index,
            file: Arc::new(file),
            written: Arc::new(parts.iter().map(|p| AtomicU64::new(p.done)).collect()),
            durable: parts.iter().map(|p| AtomicU64::new(p.done)).collect(),
            arrived: Arc::new(Notify::new()),
            last_checkpoint: std::sync::Mutex::new(std::time::Instant::now()),
            checkpointing: tokio::sync::Mutex::new(()),
        }
    }

    fn written(&self, part_index: usize) -> u64 {
        self.written[part_index].load(Ordering::SeqCst)
    }

    fn since_checkpoint(&self) -> Duration {
        self.last_checkpoint
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    fn mark_checkpoint(&self) {
        if let Ok(mut t) = self.last_checkpoint.lock() {
            *t = std::time::Instant::now();
        }
    }
}

/// Bytes of one part received but not yet written.
struct Pending {
    buffer: Vec<u8>,
    /// File offset where `buffer` goes.
    position: u64,
    part_index: usize,
}

/// A part checkpoints at least this often while bytes arrive (with `checkpoint_bytes`).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

enum RangeError {
    Stop(Stop),
    Retry(String),
    Fatal(HubError),
}

/// Hex digests of a whole file.
#[derive(Debug, Default)]
pub struct Digests {
    pub sha256: String,
    pub blake3: String,
    pub git_sha1: String,
}

/// Hashes the file's contiguous prefix as parts write it, until the whole file is hashed.
async fn verify_while_arriving(
    file: Arc<std::fs::File>,
    parts: Vec<Part>,
    written: Arc<Vec<AtomicU64>>,
    arrived: Arc<Notify>,
    size: u64,
    git_sha1: bool,
) -> std::io::Result<Digests> {
    struct Hashers {
        sha256: sha2::Sha256,
        blake3: blake3::Hasher,
        sha1: Option<sha1::Sha1>,
    }
    let mut hashers = Hashers {
        sha256: sha2::Sha256::new(),
        blake3: blake3::Hasher::new(),
        sha1: git_sha1.then(|| {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            h
        }),
    };
    let mut hashed = 0u64;
    while hashed < size {
        let notified = arrived.notified();
        let prefix = {
            let mut end = 0;
            for (n, p) in parts.iter().enumerate() {
                let done = written[n].load(Ordering::SeqCst);
                end = p.start + done;
                if done < p.end - p.start {
                    break;
                }
            }
            end
        };
        if prefix > hashed {
            let reader = Arc::clone(&file);
            let (from, to) = (hashed, prefix);
            hashers = tokio::task::spawn_blocking(move || -> std::io::Result<Hashers> {
                let mut h = hashers;
                let mut buf = vec![0u8; (4 << 20).min((to - from) as usize)];
                let mut at = from;
                while at < to {
                    let n = ((to - at) as usize).min(buf.len());
                    reader.read_exact_at(&mut buf[..n], at)?;
                    let chunk = &buf[..n];
                    // SHA-256 and BLAKE3 on two threads: the tail of a big file is hashed
                    // after its last byte arrives, and that wait is what the user sees.
                    let Hashers { sha256, blake3, sha1 } = &mut h;
                    std::thread::scope(|scope| {
                        scope.spawn(|| {
                            blake3.update(chunk);
                        });
                        sha256.update(chunk);
                        if let Some(s) = sha1 {
                            s.update(chunk);
                        }
                    });
                    at += n as u64;
                }
                Ok(h)
            })
            .await
            .map_err(std::io::Error::other)??;
            hashed = prefix;
            continue;
        }
        // Wake on the next write, or re-check now and then.
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
    Ok(Digests {
        sha256: format!("{:x}", hashers.sha256.finalize()),
        blake3: hashers.blake3.finalize().to_hex().to_string(),
        git_sha1: hashers
            .sha1
            .map(|s| format!("{:x}", s.finalize()))
            .unwrap_or_default(),
    })
}
