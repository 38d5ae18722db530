//! Which jobs run (by priority, then age, up to `max_jobs`), and one run of a job: transfer,
//! commit, and the state it ends in.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pumas_runtime::FailureKind;

use super::{Control, Engine, Live, Stop, failure};
use crate::select;
use crate::store::JobState;

impl Engine {
    pub(super) async fn schedule(self: Arc<Self>) {
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
                tracing::warn!(kind = ?error.kind, error = %error.message, "download failed");
                let id = live.snapshot().job.id;
                // Best effort: the model's record shows the failure; nothing is removed.
                let _ = self.index.abort(&id, false, &error.message).await;
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
                    FailureKind::Internal,
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
}
