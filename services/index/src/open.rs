//! Starting a library: models.db opened (or set aside and rebuilt), imports a crash interrupted
//! rolled back, the index rebuilt from the metadata files when it is new or reconciled with
//! them in the background, and retention pruning started.

use std::path::Path;
use std::sync::{Arc, Weak};

use crate::error::IndexError;
use crate::library::{Library, Policy};
use crate::retention::{self, PRUNE_INTERVAL};

/// What the start is doing, in words, for callers that arrive before it is done.
pub type StartProgress = Arc<std::sync::Mutex<String>>;

/// Opens the library at `models_dir`, ready to serve.
pub async fn open(models_dir: &Path, policy: Policy) -> Result<Arc<Library>, IndexError> {
    open_reporting(models_dir, policy, &StartProgress::default()).await
}

/// [`open`], saying in `progress` what it is doing (the rebuild's count as it goes).
pub async fn open_reporting(
    models_dir: &Path,
    policy: Policy,
    progress: &StartProgress,
) -> Result<Arc<Library>, IndexError> {
    let say = |what: String| {
        if let Ok(mut p) = progress.lock() {
            *p = what;
        }
    };
    say("opening models.db".to_owned());
    let (library, fresh) = Library::open_store(models_dir, policy).await?;
    say("rolling back imports a crash interrupted".to_owned());
    let recovered = {
        let root = library.root().to_owned();
        tokio::task::spawn_blocking(move || crate::import::recover(&root))
            .await
            .map_err(|e| IndexError::Internal(e.to_string()))??
    };
    if recovered > 0 {
        tracing::warn!(recovered, "rolled back imports interrupted by a crash");
    }
    if fresh || library.store().count().await? == 0 {
        let rebuilt_at = pumas_runtime::time::now_us() as u64;
        // The rebuild runs as a reindex job, so its count can be told to callers meanwhile.
        let (job, _) = library.jobs.create(crate::jobs::Kind::Reindex, "")?;
        job.start();
        let mut counts = job.subscribe();
        let progress = Arc::clone(progress);
        let reporter = tokio::spawn(async move {
            loop {
                let (done, total) = {
                    let s = counts.borrow_and_update();
                    (s.items_done, s.items_total)
                };
                if let Ok(mut p) = progress.lock() {
                    *p = format!("rebuilding models.db from the metadata files: {done} of {total} models");
                }
                if counts.changed().await.is_err() {
                    return;
                }
            }
        });
        let report = crate::reindex::reindex(&library, Some(&job)).await;
        job.finish(
            if report.is_ok() {
                crate::jobs::State::Succeeded
            } else {
                crate::jobs::State::Failed
            },
            report.as_ref().err().map(crate::jobs::Failure::from),
        );
        reporter.abort();
        let report = report?;
        if report.seen > 0 {
            tracing::info!(models = report.seen, "rebuilt models.db from the metadata files");
            // A feed reader of the old file may be behind this moment, and those events are
            // gone with it: it must start over (OUT_OF_RANGE), not wait for them.
            library.store().raise_change_floor(rebuilt_at).await?;
        }
    } else {
        // Reconcile in the background: whatever a crash left between the files and the index (a
        // folder placed but not indexed, a record whose files went away) is put right while the
        // service already answers.
        let reconcile = Arc::clone(&library);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match crate::reindex::reindex(&reconcile, None).await {
                Ok(r) => tracing::info!(
                    models = r.seen,
                    added = r.added,
                    updated = r.updated,
                    missing = r.missing,
                    seconds = started.elapsed().as_secs_f64(),
                    "reconciled models.db with the files"
                ),
                Err(err) => tracing::warn!(error = %err, "reconcile at start failed; run a reindex"),
            }
        });
    }
    // The first pruning runs before the library serves, so a feed reader that comes back after
    // a restart meets the floor it will keep meeting (OUT_OF_RANGE), not a feed pruned under it.
    say("pruning by retention".to_owned());
    prune(&library).await;
    spawn_pruning(&library);
    Ok(library)
}

async fn prune(library: &Library) {
    if let Err(err) = retention::prune(library.store(), library.policy.retention).await {
        tracing::warn!(error = %err, "pruning by retention failed; trying again in an hour");
    }
}

/// Prunes every [`PRUNE_INTERVAL`], until the library is dropped.
fn spawn_pruning(library: &Arc<Library>) {
    let weak: Weak<Library> = Arc::downgrade(library);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PRUNE_INTERVAL).await;
            let Some(library) = weak.upgrade() else { return };
            prune(&library).await;
        }
    });
}
