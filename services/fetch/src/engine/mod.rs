//! The download engine: schedules jobs by priority, moves bytes over several connections per
//! file with positional writes, verifies every file while it arrives, and hands finished files
//! to the index.
//!
//! One room per step of a download:
//! - this module: the engine, its settings and the controls (add, pause, resume, cancel);
//! - [`live`]: a job in memory with live progress; [`schedule`]: which jobs run, and a run;
//! - [`file`]: one file (adopt, plan parts, transfer, verify, rename); [`part`]: one byte range
//!   over one connection, with checkpoints; [`verify`]: hashing while bytes arrive;
//! - [`index_sync`]: telling the index (the only room that speaks gRPC);
//! - [`adopt`]: taking blobs from a local Hugging Face cache; [`limiter`]: the bandwidth cap.
//!
//! Durability: a part's progress is checkpointed (after `sync_data`) once it has
//! `checkpoint_bytes` (2 MiB by default) not yet durable, or a second after the file's last
//! checkpoint, so a crash re-downloads at most one checkpoint per in-flight part. One checkpoint
//! covers every part of the file. Verification hashes the contiguous prefix of a file while its
//! parts arrive, so a finished file needs no second full read.

mod adopt;
mod file;
mod index_sync;
mod limiter;
mod live;
mod part;
mod schedule;
mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pumas_runtime::{Failure, FailureKind};
use tokio::sync::{Notify, Semaphore};

use crate::hub::{Hub, HubError};
use crate::store::{Job, JobState, Store};

use limiter::Limiter;

pub use index_sync::IndexSync;
pub use live::{Live, Snapshot};
pub use verify::Digests;

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
    Failed(Failure),
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

fn failure(kind: FailureKind, message: impl Into<String>) -> Stop {
    Stop::Failed(Failure::new(kind, message))
}

fn hub_failure(err: HubError) -> Stop {
    failure(err.kind(), err.to_string())
}

/// The engine.
pub struct Engine {
    pub hub: Arc<Hub>,
    pub store: Store,
    index: IndexSync,
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
        index: IndexSync,
        dir: PathBuf,
        settings: Settings,
    ) -> Result<Arc<Self>, sqlx::Error> {
        let keep_since = pumas_runtime::time::now_ms() - crate::store::KEEP_FINISHED_DAYS * 24 * 3600 * 1000;
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
    /// A library model, from the index.
    pub async fn library_model(
        &self,
        model_id: &str,
    ) -> Result<pumas_proto::common::v1::ModelRecord, tonic::Status> {
        self.index.model(model_id).await
    }

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
        if let Err(failure) = self.index.abort(&id, true, "cancelled").await
            && failure.kind != FailureKind::NotFound
        {
            tracing::warn!(download = %id, error = %failure.message, "the index could not drop the cancelled model");
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

    fn control_stop(live: &Live) -> Option<Stop> {
        Stop::from_control(*live.control.borrow())
    }
}
