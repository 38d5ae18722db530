//! Keeping hub downloads in step with the hub: their cards and counters read again
//! (RefreshHubMetadata), and their pinned commits compared with what their revision points to
//! now (CheckUpdates). The fetch service talks to the hub; the index keeps the records.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use pumas_proto::common::v1::{ErrorStatus, ModelRecord, model_source};
use pumas_proto::fetch::v1::HubFile;
use pumas_proto::gateway::v1::*;
use pumas_proto::{fetch, index};
use pumas_runtime::ApiError;
use pumas_runtime::error::error_status;
use tonic::Status;

use crate::api::GatewayApi;

/// Hub calls in flight at once (one per model; the hub's rate limits are per client).
const CONCURRENCY: usize = 4;
/// Models per BatchGetModels call when models are named.
const BATCH: usize = 1000;

/// A hub download's source: repository, revision and pinned commit.
struct Pinned {
    repo_id: String,
    revision: String,
    commit: String,
}

fn pinned(model: &ModelRecord) -> Option<Pinned> {
    match model.source.as_ref()?.source.as_ref()? {
        model_source::Source::Hub(h) => Some(Pinned {
            repo_id: h.repo_id.clone(),
            revision: if h.revision.is_empty() {
                "main".to_owned()
            } else {
                h.revision.clone()
            },
            commit: h.commit_sha.clone(),
        }),
        model_source::Source::Local(_) => None,
    }
}

fn failed(status: &Status) -> ErrorStatus {
    error_status(status.code(), status.message())
}

fn not_from_hub(model_id: &str) -> ErrorStatus {
    error_status(
        tonic::Code::FailedPrecondition,
        format!("{model_id} was imported from local files; only hub downloads can be refreshed or checked"),
    )
}

impl GatewayApi {
    /// The named models (NOT_FOUND for one that does not exist), or every hub download.
    async fn hub_models(&self, model_ids: Vec<String>) -> Result<Vec<ModelRecord>, Status> {
        if !model_ids.is_empty() {
            let mut ids = model_ids;
            ids.sort();
            ids.dedup();
            let mut found = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(BATCH) {
                let answer = self
                    .index()
                    .call(
                        index::v1::BatchGetModelsRequest {
                            model_ids: chunk.to_vec(),
                        },
                        async |mut c, req| c.batch_get_models(req).await,
                    )
                    .await?;
                if let Some(missing) = answer.missing_model_ids.first() {
                    return Err(ApiError::not_found("model", missing.clone()).into());
                }
                found.extend(answer.models);
            }
            return Ok(found);
        }
        let mut models = Vec::new();
        self.each_model(|m| {
            if pinned(&m).is_some() {
                models.push(m);
            }
        })
        .await?;
        Ok(models)
    }

    pub(crate) async fn refresh_from_hub(
        &self,
        r: RefreshHubMetadataRequest,
    ) -> Result<RefreshHubMetadataResponse, Status> {
        let models = self.hub_models(r.model_ids).await?;
        let mut refreshed: Vec<RefreshedModel> = futures_util::stream::iter(models)
            .map(|model| async move {
                let mut out = RefreshedModel {
                    model_id: model.model_id.clone(),
                    ..Default::default()
                };
                match self.refresh_one(&model).await {
                    Ok(Some(hub)) => out.hub_metadata = Some(hub),
                    Ok(None) => out.error = Some(not_from_hub(&model.model_id)),
                    Err(status) => out.error = Some(failed(&status)),
                }
                out
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        refreshed.sort_by(|a, b| a.model_id.cmp(&b.model_id));
        Ok(RefreshHubMetadataResponse { models: refreshed })
    }

    /// Reads the card at the model's revision and hands it to the index.
    async fn refresh_one(
        &self,
        model: &ModelRecord,
    ) -> Result<Option<pumas_proto::common::v1::HubMetadata>, Status> {
        let Some(source) = pinned(model) else {
            return Ok(None);
        };
        let info = self
            .fetch()
            .call(
                fetch::v1::GetHubModelRequest {
                    repo_id: source.repo_id,
                    revision: source.revision,
                },
                async |mut c, req| c.get_hub_model(req).await,
            )
            .await?;
        let hub_metadata = info.model.and_then(|m| m.hub_metadata).unwrap_or_default();
        let updated = self
            .index()
            .call(
                index::v1::SetHubMetadataRequest {
                    model_id: model.model_id.clone(),
                    hub_metadata: Some(hub_metadata.clone()),
                },
                async |mut c, req| c.set_hub_metadata(req).await,
            )
            .await?;
        Ok(Some(updated.model.and_then(|m| m.hub).unwrap_or(hub_metadata)))
    }

    pub(crate) async fn check_hub_updates(
        &self,
        r: CheckUpdatesRequest,
    ) -> Result<CheckUpdatesResponse, Status> {
        let models = self.hub_models(r.model_ids).await?;
        let mut checks: Vec<ModelUpdateCheck> = futures_util::stream::iter(models)
            .map(|model| async move {
                let mut check = ModelUpdateCheck {
                    model_id: model.model_id.clone(),
                    ..Default::default()
                };
                let Some(source) = pinned(&model) else {
                    check.error = Some(not_from_hub(&model.model_id));
                    return check;
                };
                check.repo_id = source.repo_id.clone();
                check.revision = source.revision.clone();
                check.pinned_commit = source.commit.clone();
                if let Err(status) = self.check_one(&model, &source, &mut check).await {
                    check.error = Some(failed(&status));
                }
                check
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        checks.sort_by(|a, b| a.model_id.cmp(&b.model_id));
        Ok(CheckUpdatesResponse { models: checks })
    }

    async fn tree(
        &self,
        repo_id: &str,
        revision: &str,
    ) -> Result<(String, BTreeMap<String, HubFile>), Status> {
        let listed = self
            .fetch()
            .call(
                fetch::v1::ListHubFilesRequest {
                    repo_id: repo_id.to_owned(),
                    revision: revision.to_owned(),
                    path: String::new(),
                    recursive: true,
                },
                async |mut c, req| c.list_hub_files(req).await,
            )
            .await?;
        Ok((
            listed.commit_sha,
            listed.files.into_iter().map(|f| (f.path.clone(), f)).collect(),
        ))
    }

    /// The revision's commit now, and how the model's files differ there from its pinned commit
    /// (compared by the hub's own ids: LFS sha256, else the git blob id).
    async fn check_one(
        &self,
        model: &ModelRecord,
        source: &Pinned,
        check: &mut ModelUpdateCheck,
    ) -> Result<(), Status> {
        let (current, now) = self.tree(&source.repo_id, &source.revision).await?;
        check.current_commit = current.clone();
        if current == source.commit {
            return Ok(());
        }
        let (_, then) = self.tree(&source.repo_id, &source.commit).await?;
        check.changes = changes(model, &then, &now);
        check.outdated = !check.changes.is_empty();
        Ok(())
    }
}

fn identity(f: &HubFile) -> &str {
    if f.lfs_sha256.is_empty() {
        &f.blob_id
    } else {
        &f.lfs_sha256
    }
}

/// The model's files that changed between two trees of its repository. Files new in the
/// repository count only for a model that holds the whole repository (a quant or a subset did
/// not ask for them).
fn changes(
    model: &ModelRecord,
    then: &BTreeMap<String, HubFile>,
    now: &BTreeMap<String, HubFile>,
) -> Vec<FileChange> {
    // The library keeps a repo file named like one of its own under an escaped name.
    let stored: std::collections::BTreeSet<&str> = model.files.iter().map(|f| f.path.as_str()).collect();
    let held: Vec<&HubFile> = then
        .values()
        .filter(|f| stored.contains(pumas_runtime::layout::stored_path(&f.path).as_str()))
        .collect();
    let mut out = Vec::new();
    for old in &held {
        match now.get(&old.path) {
            None => out.push(FileChange {
                path: old.path.clone(),
                kind: FileChangeKind::Removed as i32,
                old_size_bytes: old.size_bytes,
                new_size_bytes: 0,
            }),
            Some(new) if identity(new) != identity(old) => out.push(FileChange {
                path: old.path.clone(),
                kind: FileChangeKind::Modified as i32,
                old_size_bytes: old.size_bytes,
                new_size_bytes: new.size_bytes,
            }),
            Some(_) => {}
        }
    }
    if held.len() == then.len() {
        out.extend(
            now.values()
                .filter(|f| !then.contains_key(&f.path))
                .map(|f| FileChange {
                    path: f.path.clone(),
                    kind: FileChangeKind::Added as i32,
                    old_size_bytes: 0,
                    new_size_bytes: f.size_bytes,
                }),
        );
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}
