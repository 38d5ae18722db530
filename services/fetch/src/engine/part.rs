//! One byte range of a file over one connection: retries with backoff, a stall watchdog, the
//! bandwidth cap, positional writes and durable checkpoints. [`PartialFile`] is the file being
//! written, shared by its part workers and its verifier.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::BackoffBuilder as _;
use futures_util::StreamExt as _;
use pumas_runtime::FailureKind;
use tokio::sync::Notify;

use super::{Engine, Live, Stop, failure, hub_failure};
use crate::hub::HubError;
use crate::store::Part;

impl Engine {
    /// Fetches one byte range with retries, a stall watchdog, the bandwidth cap and checkpoints.
    pub(super) async fn transfer_part(
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
                        FailureKind::Unavailable,
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
                    return Err(RangeError::Retry(format!("connection lost: {}", e.without_url())));
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
            .map_err(|e| RangeError::Stop(failure(FailureKind::Internal, format!("write task: {e}"))))?
            .map_err(|e| {
                RangeError::Stop(failure(
                    FailureKind::ResourceExhausted,
                    format!("writing downloaded bytes: {e}"),
                ))
            })?;
        pending.position += n;
        target.written[pending.part_index].fetch_add(n, Ordering::SeqCst);
        live.progress[target.index].fetch_add(n, Ordering::Relaxed);
        target.arrived.notify_waiters();
        Ok(())
    }
}

/// A file being downloaded, shared by its part workers and its verifier: the open partial
/// file, its planned parts, the bytes written per part, what of them is durable, and a wake-up
/// for the verifier.
pub(super) struct PartialFile {
    /// Index of the file in its job.
    pub(super) index: usize,
    pub(super) file: Arc<std::fs::File>,
    pub(super) size: u64,
    /// The byte ranges, in file order.
    parts: Vec<Part>,
    /// Bytes written per part, from its start (ahead of `durable`).
    written: Vec<AtomicU64>,
    /// Bytes per part that are synced and recorded in the job store.
    durable: Vec<AtomicU64>,
    pub(super) arrived: Notify,
    last_checkpoint: std::sync::Mutex<std::time::Instant>,
    /// One checkpoint of the file at a time (the others find their bytes covered).
    checkpointing: tokio::sync::Mutex<()>,
}

impl PartialFile {
    pub(super) fn new(index: usize, file: std::fs::File, size: u64, parts: &[Part]) -> Self {
        Self {
            index,
            file: Arc::new(file),
            size,
            parts: parts.to_vec(),
            written: parts.iter().map(|p| AtomicU64::new(p.done)).collect(),
            durable: parts.iter().map(|p| AtomicU64::new(p.done)).collect(),
            arrived: Notify::new(),
            last_checkpoint: std::sync::Mutex::new(std::time::Instant::now()),
            checkpointing: tokio::sync::Mutex::new(()),
        }
    }

    fn written(&self, part_index: usize) -> u64 {
        self.written[part_index].load(Ordering::SeqCst)
    }

    /// Bytes from the start of the file that are all written (what the verifier may hash).
    pub(super) fn contiguous_prefix(&self) -> u64 {
        let mut end = 0;
        for (n, p) in self.parts.iter().enumerate() {
            let done = self.written(n);
            end = p.start + done;
            if done < p.end - p.start {
                break;
            }
        }
        end
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
