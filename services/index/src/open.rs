//! Starting a library: models.db opened (or set aside and rebuilt), imports a crash interrupted
//! rolled back, the index rebuilt from the metadata files when it is new or reconciled with
//! them in the background, and retention pruning started.

use std::path::Path;
use std::sync::{Arc, Weak};

use crate::error::IndexError;
use crate::library::{Library, Policy};
use crate::retention::{self, PRUNE_INTERVAL};

/// Opens the library at `models_dir`, ready to serve.
pub async fn open(models_dir: &Path, policy: Policy) -> Result<Arc<Library>, IndexError> {
    let (library, fresh) = Library::open_store(models_dir, policy).await?;
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
        let report = crate::reindex::reindex(&library, None).await?;
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
            match crate::reindex::reindex(&reconcile, None).await {
                Ok(r) if r.added + r.updated + r.missing > 0 => {
                    tracing::info!(
                        added = r.added,
                        updated = r.updated,
                        missing = r.missing,
                        "reconciled models.db with the files"
                    )
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "reconcile at start failed; run a reindex"),
            }
        });
    }
    spawn_pruning(&library);
    Ok(library)
}

/// Prunes now and then every [`PRUNE_INTERVAL`], until the library is dropped.
fn spawn_pruning(library: &Arc<Library>) {
    let weak: Weak<Library> = Arc::downgrade(library);
    tokio::spawn(async move {
        loop {
            let Some(library) = weak.upgrade() else { return };
            if let Err(err) = retention::prune(library.store(), library.policy.retention).await {
                tracing::warn!(error = %err, "pruning by retention failed; trying again in an hour");
            }
            drop(library);
            tokio::time::sleep(PRUNE_INTERVAL).await;
        }
    });
}
