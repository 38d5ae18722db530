//! Long work as jobs: an id, a snapshot anyone can read, a watch channel that streams every
//! change, and a cancel flag the worker checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::error::IndexError;

/// Most finished jobs kept for GetJob/ListJobs.
const KEEP_FINISHED: usize = 200;

/// How many import, reindex and verify jobs run at once, and how many may wait for a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct JobLimits {
    /// Import, reindex and verify jobs working at once (each hashes one file at a time); later
    /// ones wait in QUEUED.
    #[arg(
        long = "max-running-jobs",
        env = "PUMAS_MAX_RUNNING_JOBS",
        default_value_t = 2
    )]
    pub running: usize,
    /// Jobs allowed to wait for a turn; one more is refused with RESOURCE_EXHAUSTED.
    #[arg(
        long = "max-waiting-jobs",
        env = "PUMAS_MAX_WAITING_JOBS",
        default_value_t = 256
    )]
    pub waiting: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            running: 2,
            waiting: 256,
        }
    }
}

/// Kind of job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ImportModels.
    Import,
    /// Reindex.
    Reindex,
    /// VerifyModels.
    Verify,
}

/// Job state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Accepted.
    Queued,
    /// Working.
    Running,
    /// Done.
    Succeeded,
    /// Stopped by an error.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl State {
    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }
}

/// What happened to one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Added to the library.
    Added,
    /// Same content already in the library.
    Duplicate,
    /// Unchanged (reindex) or verified intact (verify).
    Unchanged,
    /// Record updated.
    Updated,
    /// Marked missing.
    Missing,
    /// Hash mismatch.
    Corrupt,
    /// Failed.
    Failed,
}

/// A failure with the code a caller would see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// gRPC code number.
    pub code: i32,
    /// ErrorInfo reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

impl From<&IndexError> for Failure {
    fn from(err: &IndexError) -> Self {
        let mapped = pumas_runtime::ApiError::from(clone_for_report(err));
        let message = match &mapped {
            pumas_runtime::ApiError::Internal(_) => {
                "internal error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        Failure {
            code: mapped.code() as i32,
            reason: pumas_runtime::error::reason_name(mapped.reason()).to_owned(),
            message,
        }
    }
}

/// Errors hold io::Error and sqlx::Error, which do not clone: rebuild an equivalent for reporting.
fn clone_for_report(err: &IndexError) -> IndexError {
    match err {
        IndexError::Invalid { field, reason } => IndexError::invalid(field.clone(), reason.clone()),
        IndexError::ModelNotFound(s) => IndexError::ModelNotFound(s.clone()),
        IndexError::JobNotFound(s) => IndexError::JobNotFound(s.clone()),
        IndexError::ProfileNotFound(s) => IndexError::ProfileNotFound(s.clone()),
        IndexError::BindingNotFound(s) => IndexError::BindingNotFound(s.clone()),
        IndexError::Conflict { what, name, help } => IndexError::Conflict {
            what: what.clone(),
            name: name.clone(),
            help: help.clone(),
        },
        IndexError::Precondition {
            kind,
            subject,
            message,
        } => IndexError::Precondition {
            kind: kind.clone(),
            subject: subject.clone(),
            message: message.clone(),
        },
        IndexError::NoSpace(s) => IndexError::NoSpace(s.clone()),
        IndexError::Busy(s) => IndexError::Busy(s.clone()),
        IndexError::OutOfRange { field, reason } => IndexError::OutOfRange {
            field: field.clone(),
            reason: reason.clone(),
        },
        other => IndexError::Internal(other.to_string()),
    }
}

/// Result for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemResult {
    /// Input path or model id.
    pub source: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Model concerned.
    pub model_id: String,
    /// Failure, for `Failed`.
    pub error: Option<Failure>,
}

/// Everything about a job at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: Kind,
    /// State.
    pub state: State,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes total.
    pub bytes_total: u64,
    /// Items done.
    pub items_done: u64,
    /// Items total.
    pub items_total: u64,
    /// Current item.
    pub current: String,
    /// Per-item results.
    pub results: Vec<ItemResult>,
    /// Job-level failure.
    pub error: Option<Failure>,
    /// Created.
    pub create_time: SystemTime,
    /// Started.
    pub start_time: Option<SystemTime>,
    /// Ended.
    pub end_time: Option<SystemTime>,
    /// Rate estimate (bytes/s).
    pub bytes_per_second: f64,
}

/// A running job, as its worker sees it.
#[derive(Clone)]
pub struct Handle {
    tx: watch::Sender<Snapshot>,
    cancel: Arc<AtomicBool>,
    /// Wakes a job waiting for its turn when it is cancelled.
    wake: Arc<Notify>,
}

impl Handle {
    /// Updates the snapshot (and wakes watchers).
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.tx.send_modify(|s| {
            f(s);
            if let Some(start) = s.start_time
                && let Ok(elapsed) = SystemTime::now().duration_since(start)
                && elapsed.as_secs_f64() > 0.0
            {
                s.bytes_per_second = s.bytes_done as f64 / elapsed.as_secs_f64();
            }
        });
    }

    /// A receiver of every update.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    /// Whether cancellation was asked for.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The cancel flag, for blocking workers.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Marks the job running.
    pub fn start(&self) {
        self.update(|s| {
            s.state = State::Running;
            s.start_time = Some(SystemTime::now());
        });
    }

    /// Marks the job finished (`Cancelled` if it was asked to stop, else `state`).
    pub fn finish(&self, state: State, error: Option<Failure>) {
        let state = if self.cancelled() && state == State::Succeeded {
            State::Cancelled
        } else {
            state
        };
        self.update(|s| {
            s.state = state;
            s.error = error;
            s.current.clear();
            s.end_time = Some(SystemTime::now());
        });
    }
}

/// All jobs of this process.
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<String, Handle>>,
    by_request: Mutex<BTreeMap<String, String>>,
    /// One permit per job allowed to work at once.
    turns: Arc<Semaphore>,
    limits: JobLimits,
}

impl Default for Jobs {
    fn default() -> Self {
        Self::new(JobLimits::default())
    }
}

impl Jobs {
    /// No jobs yet, with these limits.
    pub fn new(limits: JobLimits) -> Self {
        let limits = JobLimits {
            running: limits.running.max(1),
            waiting: limits.waiting,
        };
        Self {
            next: AtomicU64::new(0),
            jobs: Mutex::default(),
            by_request: Mutex::default(),
            turns: Arc::new(Semaphore::new(limits.running)),
            limits,
        }
    }

    /// Creates a job, or returns the one created earlier for the same `request_id`. Refuses a new
    /// job with [`IndexError::Busy`] when `limits.waiting` jobs already wait for a turn.
    pub fn create(&self, kind: Kind, request_id: &str) -> Result<(Handle, bool), IndexError> {
        if !request_id.is_empty()
            && let Ok(map) = self.by_request.lock()
            && let Some(id) = map.get(request_id)
            && let Some(existing) = self.handle(id)
        {
            return Ok((existing, false));
        }
        let waiting = self
            .jobs
            .lock()
            .map(|jobs| {
                jobs.values()
                    .filter(|h| h.tx.borrow().state == State::Queued)
                    .count()
            })
            .unwrap_or(0);
        if waiting >= self.limits.waiting {
            return Err(IndexError::Busy(format!(
                "{waiting} jobs already wait for one of {} turns; try again when one ends",
                self.limits.running
            )));
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let id = format!("job-{stamp:x}-{seq}");
        let (tx, _) = watch::channel(Snapshot {
            id: id.clone(),
            kind,
            state: State::Queued,
            bytes_done: 0,
            bytes_total: 0,
            items_done: 0,
            items_total: 0,
            current: String::new(),
            results: Vec::new(),
            error: None,
            create_time: SystemTime::now(),
            start_time: None,
            end_time: None,
            bytes_per_second: 0.0,
        });
        let handle = Handle {
            tx,
            cancel: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(Notify::new()),
        };
        let mut forgotten = Vec::new();
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id.clone(), handle.clone());
            // Forget the oldest finished jobs beyond the limit.
            let finished: Vec<String> = jobs
                .iter()
                .filter(|(_, h)| h.tx.borrow().state.is_final())
                .map(|(id, _)| id.clone())
                .collect();
            for old in finished.iter().take(finished.len().saturating_sub(KEEP_FINISHED)) {
                jobs.remove(old);
                forgotten.push(old.clone());
            }
        }
        if let Ok(mut map) = self.by_request.lock() {
            if !forgotten.is_empty() {
                map.retain(|_, job| !forgotten.contains(job));
            }
            if !request_id.is_empty() {
                map.insert(request_id.to_owned(), id);
            }
        }
        Ok((handle, true))
    }

    /// Waits until the job may work, in the order jobs asked. Hold the permit while working.
    /// A job cancelled while it waits is finished as `Cancelled` and gets `None`.
    pub async fn turn(&self, handle: &Handle) -> Option<OwnedSemaphorePermit> {
        loop {
            if handle.cancelled() {
                handle.finish(State::Cancelled, None);
                return None;
            }
            tokio::select! {
                permit = Arc::clone(&self.turns).acquire_owned() => {
                    let permit = permit.ok()?;
                    if handle.cancelled() {
                        handle.finish(State::Cancelled, None);
                        return None;
                    }
                    return Some(permit);
                }
                () = handle.wake.notified() => {}
            }
        }
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        self.jobs.lock().ok()?.get(id).cloned()
    }

    /// A job's snapshot.
    pub fn get(&self, id: &str) -> Result<Snapshot, IndexError> {
        self.handle(id)
            .map(|h| h.tx.borrow().clone())
            .ok_or_else(|| IndexError::JobNotFound(id.to_owned()))
    }

    /// A receiver of a job's snapshots.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<Snapshot>, IndexError> {
        self.handle(id)
            .map(|h| h.tx.subscribe())
            .ok_or_else(|| IndexError::JobNotFound(id.to_owned()))
    }

    /// Asks a job to stop.
    pub fn cancel(&self, id: &str) -> Result<Snapshot, IndexError> {
        let handle = self
            .handle(id)
            .ok_or_else(|| IndexError::JobNotFound(id.to_owned()))?;
        let snapshot = handle.tx.borrow().clone();
        if snapshot.state.is_final() {
            return Err(IndexError::Precondition {
                kind: "JOB_FINISHED".to_owned(),
                subject: id.to_owned(),
                message: format!("job {id} already ended ({:?}); nothing to cancel", snapshot.state),
            });
        }
        handle.cancel.store(true, Ordering::Relaxed);
        handle.wake.notify_one();
        Ok(handle.tx.borrow().clone())
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<Snapshot> {
        let mut all: Vec<Snapshot> = self
            .jobs
            .lock()
            .map(|j| j.values().map(|h| h.tx.borrow().clone()).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| b.create_time.cmp(&a.create_time).then(b.id.cmp(&a.id)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_wait_for_a_turn_and_the_queue_is_bounded() {
        let jobs = Arc::new(Jobs::new(JobLimits {
            running: 1,
            waiting: 1,
        }));
        let (first, _) = jobs.create(Kind::Import, "").expect("first job");
        let working = jobs.turn(&first).await.expect("a free turn");
        first.start();

        // One job may wait; the next is refused with a message that says why.
        let (second, _) = jobs.create(Kind::Import, "retry-1").expect("second job waits");
        let refused = jobs.create(Kind::Verify, "").err().expect("third job refused");
        assert!(matches!(&refused, IndexError::Busy(m) if m.contains("1 jobs already wait")));
        // Asking again with the same request id answers the waiting job, even with the queue full.
        let (again, created) = jobs.create(Kind::Import, "retry-1").expect("the same job");
        assert!(!created);
        assert_eq!(again.snapshot().id, second.snapshot().id);

        // The waiting job does not start while the first one works; cancelling it ends it.
        let waiter = {
            let jobs = Arc::clone(&jobs);
            let second = second.clone();
            tokio::spawn(async move { jobs.turn(&second).await.is_some() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(second.snapshot().state, State::Queued);
        jobs.cancel(&second.snapshot().id).expect("cancel a waiting job");
        assert!(!waiter.await.expect("join"), "a cancelled job gets no turn");
        assert_eq!(second.snapshot().state, State::Cancelled);

        // A turn frees when the working job lets go of it.
        let (third, _) = jobs.create(Kind::Reindex, "").expect("room again");
        let next = {
            let jobs = Arc::clone(&jobs);
            let third = third.clone();
            tokio::spawn(async move { jobs.turn(&third).await.is_some() })
        };
        first.finish(State::Succeeded, None);
        drop(working);
        assert!(next.await.expect("join"), "the next job gets the freed turn");
    }
}
