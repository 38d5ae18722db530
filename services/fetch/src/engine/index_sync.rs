//! Telling the index about a download: the early record once the small files are in, the
//! commit once every file is verified, and the abort of a failed or cancelled one. The only
//! room of the engine that speaks gRPC; everything else sees [`Failure`]s.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use pumas_proto::common::v1::{HubMetadata, HubSource, ModelFile, ModelRecord, ModelState};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{
    AbortModelDownloadRequest, BeginModelDownloadRequest, CommitModelDownloadRequest, GetModelRequest,
    ModelUpdate,
};
use pumas_runtime::client::TracedChannel;
use pumas_runtime::{Failure, FailureKind};

use super::{Engine, Live, Stop};
use crate::store::{Job, JobFile, JobState};

/// The index as the engine uses it.
#[derive(Clone)]
pub struct IndexSync {
    client: IndexServiceClient<TracedChannel>,
}

impl IndexSync {
    pub fn new(client: IndexServiceClient<TracedChannel>) -> Self {
        Self { client }
    }

    /// Registers the model (state downloading) and answers its id.
    async fn begin(&self, job: &Job, endpoint: &str, staging: String) -> Result<String, Failure> {
        let request = BeginModelDownloadRequest {
            download_id: job.id.clone(),
            source: Some(HubSource {
                endpoint: endpoint.to_owned(),
                repo_id: job.repo_id.clone(),
                revision: job.revision.clone(),
                commit_sha: job.commit_sha.clone(),
                selection_label: job.selection.quantization.clone(),
                whole_repository: job.whole_repository,
            }),
            staging_path: staging,
            expected_files: job.files.iter().map(expected_file).collect(),
            model_type: job.model_type,
            family: job.family.clone(),
            tags: job.tags.clone(),
            license: job.license.clone(),
            selection_label: job.selection.quantization.clone(),
            hub_metadata: hex::decode(&job.hub_metadata)
                .ok()
                .and_then(|b| <HubMetadata as prost::Message>::decode(b.as_slice()).ok()),
        };
        let response = self.client.clone().begin_model_download(request).await;
        let model = response.map_err(|s| Failure::from_status(&s))?.into_inner().model;
        Ok(model.map(|m| m.model_id).unwrap_or_default())
    }

    /// Commits the verified files and answers the model id. A call that may not have reached
    /// the index, or whose answer was lost, is retried; a commit the index finished before its
    /// answer was lost is recognized as done.
    async fn commit(&self, job: &Job, staging: String) -> Result<String, Failure> {
        let request = CommitModelDownloadRequest {
            download_id: job.id.clone(),
            files: job.files.iter().map(verified_file).collect(),
            update: job.update.as_ref().map(|u| ModelUpdate {
                model_id: u.model_id.clone(),
                staging_path: staging,
                commit_sha: job.commit_sha.clone(),
                removed_paths: u.removed.clone(),
            }),
        };
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_times(5)
            .build();
        let mut interrupted = false;
        loop {
            let status = match self.client.clone().commit_model_download(request.clone()).await {
                Ok(r) => return Ok(r.into_inner().model.map(|m| m.model_id).unwrap_or_default()),
                Err(status) => status,
            };
            let kind = FailureKind::of_code(status.code());
            let refused = || {
                Failure::new(
                    kind,
                    format!("the index refused the finished download: {}", status.message()),
                )
            };
            // Unknown and Cancelled come from a connection that broke mid-call.
            let transient = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            );
            if interrupted && kind == FailureKind::NotFound {
                // The index restarted or the connection broke after it committed: the model
                // is there, ready, with these very files.
                return match self.committed_before(job).await {
                    Some(model) => Ok(model.model_id),
                    None => Err(refused()),
                };
            }
            if !transient {
                return Err(refused());
            }
            interrupted = true;
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    return Err(Failure::new(
                        FailureKind::Unavailable,
                        format!(
                            "the files are downloaded and verified, but the index is unavailable ({}); resume the download to commit them",
                            status.message()
                        ),
                    ));
                }
            }
        }
    }

    /// A library model, as the index has it.
    pub async fn model(&self, model_id: &str) -> Result<ModelRecord, tonic::Status> {
        let request = GetModelRequest {
            model_id: model_id.to_owned(),
            include_chat_template: false,
            include_preview: false,
        };
        let model = self.client.clone().get_model(request).await?.into_inner().model;
        model.ok_or_else(|| tonic::Status::not_found(format!("model {model_id}")))
    }

    /// Marks the download failed in the index, or removes its model (`remove`).
    pub async fn abort(&self, download_id: &str, remove: bool, reason: &str) -> Result<(), Failure> {
        let request = AbortModelDownloadRequest {
            download_id: download_id.to_owned(),
            remove,
            reason: reason.to_owned(),
        };
        self.client
            .clone()
            .abort_model_download(request)
            .await
            .map(|_| ())
            .map_err(|s| Failure::from_status(&s))
    }

    /// The model of `job` if the index already committed it: ready, with the job's files.
    async fn committed_before(&self, job: &Job) -> Option<ModelRecord> {
        if job.model_id.is_empty() {
            return None;
        }
        let request = GetModelRequest {
            model_id: job.model_id.clone(),
            include_chat_template: false,
            include_preview: false,
        };
        let model = self
            .client
            .clone()
            .get_model(request)
            .await
            .ok()?
            .into_inner()
            .model?;
        let ready = model.state == ModelState::Ready as i32;
        // An update holds the job's files among the model's others.
        let same_files = (job.update.is_some() || model.files.len() == job.files.len())
            && job.files.iter().all(|f| {
                model
                    .files
                    .iter()
                    // The library keeps a reserved name escaped (`metadata.json` as `_metadata.json`).
                    .any(|m| m.path == pumas_runtime::layout::stored_path(&f.path) && m.sha256 == f.sha256)
            });
        (ready && same_files).then_some(model)
    }
}

/// A file as the early record announces it: the hash known so far (LFS files know theirs).
fn expected_file(f: &JobFile) -> ModelFile {
    let sha256 = if f.verified {
        f.sha256.clone()
    } else if f.expected.starts_with("sha256:") {
        f.expected.clone()
    } else {
        String::new()
    };
    ModelFile {
        path: f.path.clone(),
        size_bytes: f.size,
        sha256,
        blake3: f.blake3.clone(),
    }
}

fn verified_file(f: &JobFile) -> ModelFile {
    ModelFile {
        path: f.path.clone(),
        size_bytes: f.size,
        sha256: f.sha256.clone(),
        blake3: f.blake3.clone(),
    }
}

impl Engine {
    /// Tells the index about the model as soon as its small files are in. Not fatal when the
    /// index does not take it: the model shows up at commit instead.
    pub(super) async fn announce(&self, live: &Arc<Live>) {
        let job = live.snapshot().job;
        let staging = self.staging(&job.id).display().to_string();
        match self.index.begin(&job, self.hub.endpoint(), staging).await {
            Ok(model_id) => {
                self.save(live, |j| {
                    j.announced = true;
                    j.model_id = model_id;
                })
                .await;
            }
            Err(failure) => {
                tracing::warn!(error = %failure.message, "the index did not take the early record")
            }
        }
    }

    /// Hands the verified files to the index, then drops the staging folder.
    pub(super) async fn commit(&self, live: &Arc<Live>) -> Result<(), Stop> {
        let job = self.save(live, |j| j.state = JobState::Committing).await;
        // An update's model is there already: nothing to announce.
        if !job.announced && job.update.is_none() {
            self.announce(live).await;
        }
        let job = live.snapshot().job;
        let staging = self.staging(&job.id);
        let model_id = self
            .index
            .commit(&job, staging.display().to_string())
            .await
            .map_err(Stop::Failed)?;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staging)).await;
        self.save(live, |j| {
            j.state = JobState::Completed;
            j.model_id = model_id;
        })
        .await;
        Ok(())
    }
}
