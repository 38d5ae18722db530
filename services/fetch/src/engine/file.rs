//! One file of a job: adopt it from a local cache or plan its parts, transfer them while the
//! verifier hashes, check the hash, and rename the verified file into place.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pumas_runtime::FailureKind;

use super::part::PartialFile;
use super::verify::{Digests, verify_while_arriving};
use super::{Engine, Live, Stop, failure, hub_failure};
use crate::store::Part;

/// Largest byte-range part of a file (unless `min_part_bytes` is larger).
const MAX_PART_BYTES: u64 = 16 << 20;

impl Engine {
    /// Fetches and verifies one file.
    pub(super) async fn fetch_file(self: &Arc<Self>, live: &Arc<Live>, index: usize) -> Result<(), Stop> {
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
                    FailureKind::Internal,
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
                        FailureKind::Internal,
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
            FailureKind::DataLoss,
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
                    FailureKind::Internal,
                    format!("opening {}: {e}", partial.display()),
                )
            })?;
        file.set_len(size).map_err(|e| {
            failure(
                FailureKind::ResourceExhausted,
                format!("reserving {size} bytes for {}: {e}", partial.display()),
            )
        })?;
        let target = Arc::new(PartialFile::new(index, file, size, &parts));
        live.progress[index].store(parts.iter().map(|p| p.done).sum(), Ordering::Relaxed);
        let git_sha1 = live.snapshot().job.files[index].expected.starts_with("sha1:");
        let verifier = tokio::spawn(verify_while_arriving(Arc::clone(&target), git_sha1));
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
                .unwrap_or_else(|e| Err(failure(FailureKind::Internal, format!("part task failed: {e}"))));
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
        target.file.sync_all().map_err(|e| {
            failure(
                FailureKind::Internal,
                format!("syncing {}: {e}", partial.display()),
            )
        })?;
        target.arrived.notify_waiters();
        verifier
            .await
            .map_err(|e| failure(FailureKind::Internal, format!("verifier failed: {e}")))?
            .map_err(|e| {
                failure(
                    FailureKind::Internal,
                    format!("reading {} to verify it: {e}", partial.display()),
                )
            })
    }
}
