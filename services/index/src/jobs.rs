//! Long work as jobs: an id, a snapshot anyone can read, a watch channel that streams every
//! change, and a cancel flag the worker checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::error::IndexError;

/// Most finished jobs kept for GetJob/ListJobs.
const KEEP_FINISHED: usize = 200;

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
        IndexError::Conflict { what, name } => IndexError::Conflict {
            what: what.clone(),
            name: name.clone(),
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
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<String, Handle>>,
    by_request: Mutex<BTreeMap<String, String>>,
}

impl Jobs {
    /// Creates a job, or returns the one created earlier for the same `request_id`.
    pub fn create(&self, kind: Kind, request_id: &str) -> (Handle, bool) {
        if !request_id.is_empty()
            && let Ok(map) = self.by_request.lock()
            && let Some(id) = map.get(request_id)
            && let Some(existing) = self.handle(id)
        {
            return (existing, false);
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
        };
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
            }
        }
        if !request_id.is_empty()
            && let Ok(mut map) = self.by_request.lock()
        {
            map.insert(request_id.to_owned(), id);
        }
        (handle, true)
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
