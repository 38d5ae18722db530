//! The library as the mapper sees it, read from the index: models, hashes, imports, link holds
//! and the change feed. The only room of the mapper that speaks gRPC; the rest sees [`Model`]s
//! and [`MapperError`]s.

use std::collections::HashSet;

use pumas_proto::common::v1 as common;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{
    BatchGetModelsRequest, FindModelsByHashRequest, GetServiceInfoRequest, ImportModelsRequest,
    ListModelsRequest, ReplaceLinkHoldsRequest, WatchChangesRequest, WatchChangesResponse, WatchJobRequest,
};
use pumas_runtime::client::TracedChannel;

use crate::error::{MapperError, Result};
use crate::plan::Model;

/// The index, for the mapper.
#[derive(Clone)]
pub struct Library {
    client: IndexServiceClient<TracedChannel>,
}

/// Why the change feed could not be followed from a cursor.
pub enum FeedError {
    /// The index no longer keeps changes after this cursor.
    Expired,
    /// The index cannot be reached (or answered something else).
    Unreachable(String),
}

/// One change of the feed: the models it touches.
pub struct Change {
    pub cursor: u64,
    pub model_id: String,
    pub previous_model_id: String,
}

/// An open change feed.
pub struct Feed {
    stream: tonic::Streaming<WatchChangesResponse>,
}

impl Feed {
    /// The next change, or `None` when the feed ended or broke.
    pub async fn next(&mut self) -> Option<Change> {
        let m = self.stream.message().await.ok()??;
        Some(Change {
            cursor: m.cursor,
            model_id: m.model_id,
            previous_model_id: m.previous_model_id,
        })
    }
}

fn unreachable(status: tonic::Status) -> MapperError {
    MapperError::IndexUnreachable(status.message().to_owned())
}

impl Library {
    pub fn new(client: IndexServiceClient<TracedChannel>) -> Self {
        Self { client }
    }

    /// Every model of the library.
    pub async fn all_models(&self) -> Result<Vec<Model>> {
        let mut index = self.client.clone();
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let request = ListModelsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            };
            let page = index
                .list_models(request)
                .await
                .map_err(unreachable)?
                .into_inner();
            out.extend(page.models.iter().map(model_from));
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    /// These models (the ones the library still has).
    pub async fn some_models(&self, ids: &HashSet<String>) -> Result<Vec<Model>> {
        let mut index = self.client.clone();
        let mut out = Vec::new();
        let ids: Vec<String> = ids.iter().cloned().collect();
        for chunk in ids.chunks(500) {
            let request = BatchGetModelsRequest {
                model_ids: chunk.to_vec(),
            };
            let page = index
                .batch_get_models(request)
                .await
                .map_err(unreachable)?
                .into_inner();
            out.extend(page.models.iter().map(model_from));
        }
        Ok(out)
    }

    /// The id of a library model with this content, or an empty string.
    pub async fn model_with_hash(&self, sha256: &str) -> Result<String> {
        let request = FindModelsByHashRequest {
            digest: sha256.to_owned(),
        };
        let found = self
            .client
            .clone()
            .find_models_by_hash(request)
            .await
            .map_err(unreachable)?;
        Ok(found
            .into_inner()
            .models
            .into_iter()
            .next()
            .map(|m| m.model_id)
            .unwrap_or_default())
    }

    /// Moves a file into the library and waits for the import; answers why the library did
    /// not take it, if it did not.
    pub async fn import_by_move(&self, path: &std::path::Path) -> Result<Option<String>> {
        let mut index = self.client.clone();
        let request = ImportModelsRequest {
            paths: vec![path.display().to_string()],
            mode: common::ImportMode::Move as i32,
            ..Default::default()
        };
        let started = index
            .import_models(request)
            .await
            .map_err(unreachable)?
            .into_inner();
        let job_id = started
            .job
            .and_then(|j| j.status)
            .map(|s| s.job_id)
            .unwrap_or_default();
        let mut stream = index
            .watch_job(WatchJobRequest { job_id })
            .await
            .map_err(unreachable)?
            .into_inner();
        let mut last = None;
        while let Ok(Some(update)) = stream.message().await {
            last = update.job;
        }
        Ok(last
            .as_ref()
            .and_then(|j| j.results.first())
            .and_then(|r| r.error.as_ref())
            .map(|e| e.message.clone()))
    }

    /// Tells the index which models `holder` links, so it refuses to delete them.
    pub async fn replace_holds(&self, holder: String, model_ids: Vec<String>) -> Result<()> {
        let request = ReplaceLinkHoldsRequest { holder, model_ids };
        self.client
            .clone()
            .replace_link_holds(request)
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    /// The index's newest change cursor.
    pub async fn head_cursor(&self) -> Result<u64> {
        let info = self
            .client
            .clone()
            .get_service_info(GetServiceInfoRequest {})
            .await;
        Ok(info.map_err(unreachable)?.into_inner().change_cursor)
    }

    /// The change feed after `cursor`.
    pub async fn watch_changes(&self, after_cursor: u64) -> std::result::Result<Feed, FeedError> {
        let request = WatchChangesRequest {
            after_cursor,
            include_models: false,
        };
        match self.client.clone().watch_changes(request).await {
            Ok(s) => Ok(Feed {
                stream: s.into_inner(),
            }),
            Err(status) if status.code() == tonic::Code::OutOfRange => Err(FeedError::Expired),
            Err(status) => Err(FeedError::Unreachable(status.message().to_owned())),
        }
    }
}

fn model_from(record: &common::ModelRecord) -> Model {
    use pumas_proto::names;
    let unknown = |name: Option<&'static str>| name.unwrap_or("unknown").to_owned();
    let (repo_id, commit) = match record.source.as_ref().and_then(|s| s.source.as_ref()) {
        Some(common::model_source::Source::Hub(h)) => (h.repo_id.clone(), h.commit_sha.clone()),
        _ => (String::new(), String::new()),
    };
    Model {
        id: record.model_id.clone(),
        display_name: record.display_name.clone(),
        model_type: unknown(names::model_type(record.model_type)),
        family: record.family.clone(),
        format: unknown(names::format(record.format)),
        state: unknown(names::state(record.state)),
        tags: record.tags.clone(),
        files: record
            .files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect(),
        repo_id,
        commit,
        side_files: record
            .side_files
            .iter()
            .map(|s| (s.role.clone(), s.path.clone()))
            .collect(),
    }
}
