//! Verify: re-read every file of the chosen models (never the hash cache) and compare with the
//! recorded SHA-256, so silent corruption is found and flagged instead of served.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::IndexError;
use crate::hash;
use crate::jobs::{Handle, ItemResult, Outcome, State};
use crate::library::{Library, read_metadata};
use crate::metadata::now_rfc3339;

/// Runs a verify job over `model_ids` (all models when empty).
pub async fn run(library: Arc<Library>, handle: Handle, model_ids: Vec<String>) {
    let Some(_turn) = library.jobs.turn(&handle).await else {
        return;
    };
    handle.start();
    let ids = if model_ids.is_empty() {
        match library.store().all_ids().await {
            Ok(ids) => ids,
            Err(err) => return handle.finish(State::Failed, Some((&err).into())),
        }
    } else {
        model_ids
    };
    let mut total = 0;
    for id in &ids {
        if let Ok(Some(r)) = library.store().get(id).await {
            total += r.metadata.total_size;
        }
    }
    handle.update(|s| {
        s.bytes_total = total;
        s.items_total = ids.len() as u64;
    });
    for id in ids {
        if handle.cancelled() {
            break;
        }
        handle.update(|s| s.current.clone_from(&id));
        let result = verify_one(&library, &handle, &id).await;
        let item = match result {
            Ok(outcome) => ItemResult {
                source: id.clone(),
                outcome,
                model_id: id,
                error: None,
            },
            Err(err) => ItemResult {
                source: id.clone(),
                outcome: Outcome::Failed,
                model_id: id,
                error: Some((&err).into()),
            },
        };
        handle.update(|s| {
            s.results.push(item);
            s.items_done += 1;
        });
    }
    handle.finish(State::Succeeded, None);
}

async fn verify_one(library: &Library, handle: &Handle, id: &str) -> Result<Outcome, IndexError> {
    let record = library.get(id).await?;
    let dir = library.model_dir(id)?;
    let mut problems = Vec::new();
    let mut missing = 0;
    for f in &record.metadata.files {
        let path = dir.join(&f.path);
        if !path.is_file() {
            missing += 1;
            problems.push(format!("{} is missing", f.path));
            continue;
        }
        let cancel = handle.cancel_flag();
        let progress = handle.clone();
        let base = handle.snapshot().bytes_done;
        let digests = tokio::task::spawn_blocking(move || {
            hash::hash_file(&path, |done| {
                progress.update(|s| s.bytes_done = base + done);
                !cancel.load(Ordering::Relaxed)
            })
        })
        .await
        .map_err(|e| IndexError::Internal(e.to_string()))?
        .map_err(|e| IndexError::io(format!("reading {}", f.path), e))?;
        if !f.sha256.is_empty() && digests.sha256 != f.sha256 {
            problems.push(format!(
                "{} does not match its recorded SHA-256 (silent corruption)",
                f.path
            ));
        }
    }
    if problems.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    // Read again under the commit: a change made while the files were hashed is kept.
    let mut commit = library.commit().await;
    if library.store().get(id).await?.is_none() {
        return Err(IndexError::ModelNotFound(id.to_owned()));
    }
    let mut metadata = read_metadata(&dir)?;
    let outcome = if missing == record.metadata.files.len() {
        Outcome::Missing
    } else {
        Outcome::Corrupt
    };
    metadata.state = if outcome == Outcome::Missing {
        "missing"
    } else {
        "error"
    }
    .to_owned();
    metadata.state_reason = problems.join("; ");
    metadata.updated_time = now_rfc3339();
    library.write_and_index(&mut commit, &metadata).await?;
    library.publish("updated", id, "").await?;
    Ok(outcome)
}
