//! A job in memory: its record, its control signal, and progress ahead of the checkpoints.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pumas_runtime::time::now_ms;
use tokio::sync::watch;

use super::Control;
use crate::store::{Job, JobState};

/// A job in memory: its record, its control signal and live progress.
pub struct Live {
    pub(super) job: Mutex<Job>,
    pub(super) control: watch::Sender<Control>,
    /// Live bytes on disk per file (ahead of the checkpoints).
    pub(super) progress: Vec<AtomicU64>,
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Bumped on every state or progress change; watchers wait on it.
    pub changed: watch::Sender<u64>,
    pub(super) running: AtomicBool,
}

impl Live {
    pub(super) fn new(job: Job) -> Arc<Self> {
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

    pub(super) fn bump(&self) {
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

    pub(super) fn update(&self, f: impl FnOnce(&mut Job)) -> Job {
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
