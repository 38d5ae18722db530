//! `pumas.fetch.v1.FetchService`: translates between proto and the domain, maps errors.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pumas_proto::common::v1::ServiceInfo;
use pumas_proto::fetch::v1::fetch_service_server::FetchService;
use pumas_proto::fetch::v1::*;
use pumas_runtime::stream::{Pace, watch_job};
use pumas_runtime::{ApiError, BoxStream, Failure};
use sha1::Digest as _;
use tonic::{Request, Response, Status};

use crate::cache::SearchCache;
use crate::engine::{Engine, Live, Snapshot};
use crate::hub::{HubError, HubModel, SearchQuery};
use crate::select;
use crate::store::{Job, JobFile, JobState, Selection};
use crate::{Config, SERVICE_NAME};
use pumas_runtime::time::now_ms;

/// The fetch service's gRPC face.
pub(crate) struct FetchApi {
    info: ServiceInfo,
    engine: Arc<Engine>,
    cache: SearchCache,
    ttl: Duration,
    stale_grace: Duration,
}

impl FetchApi {
    pub(crate) fn new(
        config: &Config,
        start_time: SystemTime,
        engine: Arc<Engine>,
        cache: SearchCache,
    ) -> Self {
        Self {
            info: pumas_runtime::info::service_info("fetch", &[SERVICE_NAME], start_time),
            engine,
            cache,
            ttl: Duration::from_secs(config.tuning.search_cache_ttl_secs),
            stale_grace: Duration::from_millis(config.tuning.search_stale_grace_ms),
        }
    }

    fn live(&self, id: &str) -> Result<Arc<Live>, ApiError> {
        if id.is_empty() {
            return Err(ApiError::invalid("download_id", "is empty"));
        }
        self.engine
            .get(id)
            .ok_or_else(|| ApiError::not_found("download", id))
    }
}

fn check_repo_id(repo_id: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if parts.len() == 2 && parts.iter().all(|p| ok_part(p)) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "repo_id",
            format!("`{repo_id}` is not a hub repository id (`org/name`, letters, digits, `-`, `_`, `.`)"),
        ))
    }
}

fn revision_or_main(revision: &str) -> &str {
    if revision.is_empty() { "main" } else { revision }
}

fn timestamp(text: Option<&str>) -> Option<prost_types::Timestamp> {
    text.and_then(|t| t.parse::<prost_types::Timestamp>().ok())
}

fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn summary(model: &HubModel) -> HubModelSummary {
    HubModelSummary {
        repo_id: model.id.clone(),
        author: model
            .author
            .clone()
            .unwrap_or_else(|| model.id.split('/').next().unwrap_or_default().to_owned()),
        sha: model.sha.clone().unwrap_or_default(),
        pipeline_tag: model.pipeline_tag.clone().unwrap_or_default(),
        library: model.library_name.clone().unwrap_or_default(),
        tags: model.tags.clone(),
        downloads: model.downloads,
        likes: model.likes,
        last_modified_time: timestamp(model.last_modified.as_deref()),
        gated: model.is_gated(),
        private: model.private,
    }
}

fn sort_key(sort: i32) -> Result<Option<&'static str>, ApiError> {
    Ok(match HubSort::try_from(sort) {
        Ok(HubSort::Unspecified) => None,
        Ok(HubSort::Downloads) => Some("downloads"),
        Ok(HubSort::Likes) => Some("likes"),
        Ok(HubSort::LastModified) => Some("lastModified"),
        Ok(HubSort::CreatedAt) => Some("createdAt"),
        Ok(HubSort::Trending) => Some("trendingScore"),
        Err(_) => return Err(ApiError::invalid("sort", format!("unknown sort value {sort}"))),
    })
}

/// A cached search page.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedPage {
    models: Vec<HubModel>,
    next_cursor: Option<String>,
}

const PAGE_TOKEN_PREFIX: &str = "hub1.";

fn new_download_id(repo_id: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = sha1::Sha1::new();
    h.update(repo_id.as_bytes());
    h.update(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            .to_le_bytes(),
    );
    h.update(std::process::id().to_le_bytes());
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    format!("dl-{}", &format!("{:x}", h.finalize())[..16])
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        let message = err.to_string();
        match err {
            HubError::RepoNotFound(repo) => ApiError::NotFoundHelp {
                resource_type: "hub repository".to_owned(),
                name: repo,
                help: "check the name; if it is private, configure a token with access (HF_TOKEN or --hub-token)"
                    .to_owned(),
            },
            HubError::RevisionNotFound { repo, revision } => ApiError::NotFound {
                resource_type: "hub revision".to_owned(),
                name: format!("{repo}@{revision}"),
            },
            HubError::EntryNotFound { repo, path } => ApiError::NotFound {
                resource_type: "hub file".to_owned(),
                name: format!("{repo}/{path}"),
            },
            HubError::Gated(_) | HubError::Forbidden(_) => ApiError::PermissionDenied(message),
            HubError::BadToken(_) => ApiError::Unauthenticated(message),
            HubError::RateLimited { retry_after } => ApiError::ResourceExhausted { message, retry_after },
            HubError::Unavailable { .. } => ApiError::Unavailable {
                backend: "hub".to_owned(),
                message,
                retry_after: Some(Duration::from_secs(5)),
            },
            HubError::Protocol(_) => ApiError::Unavailable {
                backend: "hub".to_owned(),
                message,
                retry_after: None,
            },
        }
    }
}

fn state_proto(state: JobState) -> i32 {
    (match state {
        JobState::Queued => DownloadState::Queued,
        JobState::Running => DownloadState::Running,
        JobState::Paused => DownloadState::Paused,
        JobState::Committing => DownloadState::Committing,
        JobState::Completed => DownloadState::Completed,
        JobState::Failed => DownloadState::Failed,
        JobState::Cancelled => DownloadState::Cancelled,
    }) as i32
}

fn state_from_proto(value: i32) -> Option<JobState> {
    Some(match DownloadState::try_from(value).ok()? {
        DownloadState::Queued => JobState::Queued,
        DownloadState::Running => JobState::Running,
        DownloadState::Paused => JobState::Paused,
        DownloadState::Committing => JobState::Committing,
        DownloadState::Completed => JobState::Completed,
        DownloadState::Failed => JobState::Failed,
        DownloadState::Cancelled => JobState::Cancelled,
        DownloadState::Unspecified => return None,
    })
}

fn download_proto(snapshot: &Snapshot) -> Download {
    let job = &snapshot.job;
    let total = job.bytes_total();
    let remaining = total.saturating_sub(snapshot.bytes_done);
    Download {
        download_id: job.id.clone(),
        repo_id: job.repo_id.clone(),
        revision: job.revision.clone(),
        commit_sha: job.commit_sha.clone(),
        state: state_proto(job.state),
        files: job
            .files
            .iter()
            .map(|f| DownloadFile {
                path: f.path.clone(),
                size_bytes: f.size,
                bytes_done: f.done().min(f.size),
                expected_digest: f.expected.clone(),
                verified: f.verified,
            })
            .collect(),
        bytes_done: snapshot.bytes_done,
        bytes_total: total,
        bytes_per_second: snapshot.bytes_per_second,
        eta_seconds: (snapshot.bytes_per_second > 0.0 && job.state == JobState::Running)
            .then(|| remaining as f64 / snapshot.bytes_per_second),
        model_id: job.model_id.clone(),
        priority: job.priority,
        selection: Some(FileSelection {
            allow_patterns: job.selection.allow.clone(),
            ignore_patterns: job.selection.ignore.clone(),
            gguf_quantization: job.selection.quantization.clone(),
        }),
        error: job.error.as_ref().map(Failure::to_error_status),
        create_time: Some(timestamp_ms(job.created_ms)),
        update_time: Some(timestamp_ms(job.updated_ms)),
        model_type: job.model_type,
        family: job.family.clone(),
    }
}

impl FetchApi {
    async fn search(&self, request: SearchHubRequest) -> Result<SearchHubResponse, ApiError> {
        let limit = pumas_runtime::error::page_size(request.page_size, 20, 100)?;
        let cursor = if request.page_token.is_empty() {
            None
        } else {
            Some(
                request
                    .page_token
                    .strip_prefix(PAGE_TOKEN_PREFIX)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        ApiError::invalid("page_token", "not a token from a previous SearchHub answer")
                    })?
                    .to_owned(),
            )
        };
        let mut tags = request.tags.clone();
        tags.sort();
        tags.dedup();
        let query = SearchQuery {
            search: request.query.trim().to_owned(),
            author: request.author.trim().to_owned(),
            filters: tags,
            pipeline_tag: request.pipeline_tag.trim().to_owned(),
            library: request.library.trim().to_owned(),
            sort: sort_key(request.sort)?,
            limit,
            cursor,
        };
        // Private results differ with a token, so the key says whether one was used.
        let key = format!("{query:?}|token={}", self.engine.hub.has_token());
        let cached = self
            .cache
            .get(&key)
            .await
            .map_err(|e| ApiError::Internal(format!("search cache: {e}")))?;
        if let Some(entry) = &cached
            && !request.refresh
            && !entry.is_stale(self.ttl)
        {
            return page_response(&entry.body, true, false, entry.fetched_at);
        }
        // Ask the hub in a task of its own: when a stale entry exists and the hub is slow, the
        // stale answer goes out and the refresh still lands in the cache.
        let hub = Arc::clone(&self.engine.hub);
        let cache = self.cache.clone();
        let keep = self.ttl.max(Duration::from_secs(3600)) * 24;
        let refresh_key = key.clone();
        let refresh = tokio::spawn(async move {
            let (models, next_cursor) = hub.search(&query).await?;
            let body = serde_json::to_string(&CachedPage { models, next_cursor })
                .map_err(|e| HubError::Protocol(e.to_string()))?;
            let at = cache.put(&refresh_key, &body, keep).await.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "storing a hub search in the cache failed");
                SystemTime::now()
            });
            Ok::<_, HubError>((body, at))
        });
        let outcome = match &cached {
            Some(_) if !request.refresh => tokio::time::timeout(self.stale_grace, refresh).await.ok(),
            _ => Some(refresh.await),
        };
        match (outcome, cached) {
            (Some(Ok(Ok((body, at)))), _) => page_response(&body, false, false, at),
            (Some(Ok(Err(err))), Some(entry)) if err.retryable() => {
                tracing::warn!(error = %err, "hub search failed; serving the stale cached answer");
                page_response(&entry.body, true, true, entry.fetched_at)
            }
            (None, Some(entry)) => page_response(&entry.body, true, true, entry.fetched_at),
            (Some(Ok(Err(err))), _) => Err(err.into()),
            (Some(Err(join)), _) => Err(ApiError::Internal(format!("hub search task: {join}"))),
            (None, None) => Err(ApiError::Internal(
                "hub search timed out without a cache entry".to_owned(),
            )),
        }
    }

    async fn model_info(&self, repo_id: &str, revision: &str) -> Result<HubModelInfo, ApiError> {
        check_repo_id(repo_id)?;
        let hub = &self.engine.hub;
        let info = hub.model_info(repo_id, revision_or_main(revision)).await?;
        let commit = info
            .sha
            .clone()
            .ok_or_else(|| ApiError::from(HubError::Protocol("model info without sha".to_owned())))?;
        let files = self.files_at(repo_id, &commit, "", true).await?;
        let card = info.card_data.clone().unwrap_or(serde_json::Value::Null);
        let license = card
            .get("license")
            .and_then(|l| l.as_str())
            .unwrap_or_default()
            .to_owned();
        let readme = match files.iter().find(|f| f.path.eq_ignore_ascii_case("README.md")) {
            Some(f) => self.readme(repo_id, &commit, &f.path).await,
            None => None,
        };
        let mut hub_metadata = crate::card::hub_metadata(
            &info,
            readme.as_deref(),
            prost_types::Timestamp::from(SystemTime::now()),
        );
        if let Some(image) = readme
            .as_deref()
            .and_then(|r| crate::card::first_image(r, repo_id))
            && files
                .iter()
                .any(|f| f.path == image && f.size_bytes <= crate::card::MAX_IMAGE_BYTES)
        {
            hub_metadata.image_path = image;
        }
        let mut quantizations: Vec<String> = files
            .iter()
            .filter_map(|f| select::gguf_quantization(&f.path))
            .collect();
        quantizations.sort();
        quantizations.dedup();
        Ok(HubModelInfo {
            summary: Some(summary(&info)),
            commit_sha: commit,
            files,
            card_data_json: if card.is_null() {
                String::new()
            } else {
                card.to_string()
            },
            safetensors_parameter_count: info.safetensors.as_ref().map(|s| s.total),
            safetensors_parameters: info
                .safetensors
                .as_ref()
                .map(|s| s.parameters.clone().into_iter().collect())
                .unwrap_or_default(),
            gguf_quantizations: quantizations,
            license,
            hub_metadata: Some(hub_metadata),
        })
    }

    /// The start of a repository's README, for the card's first paragraph. A README that cannot
    /// be read costs the description only, not the call.
    async fn readme(&self, repo_id: &str, commit: &str, path: &str) -> Option<String> {
        let hub = &self.engine.hub;
        let read = async {
            let resolved = hub.resolve(repo_id, commit, path).await?;
            let mut response = hub.get_range(&resolved.url, 0, None).await?;
            // Read the start only: a card's first paragraph is near its top.
            let mut bytes = Vec::new();
            while (bytes.len() as u64) < crate::card::README_PREFIX_BYTES
                && let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| crate::hub::HubError::Protocol(format!("reading the README: {e}")))?
            {
                bytes.extend_from_slice(&chunk);
            }
            bytes.truncate(crate::card::README_PREFIX_BYTES as usize);
            Ok::<_, crate::hub::HubError>(String::from_utf8_lossy(&bytes).into_owned())
        };
        match read.await {
            Ok(text) => Some(text),
            Err(err) => {
                tracing::debug!(repo = repo_id, error = %err, "the README could not be read; no description");
                None
            }
        }
    }

    async fn files_at(
        &self,
        repo_id: &str,
        commit: &str,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<HubFile>, ApiError> {
        let mut files: Vec<HubFile> = self
            .engine
            .hub
            .tree(repo_id, commit, path, recursive)
            .await?
            .into_iter()
            .filter(|e| e.kind == "file")
            .map(|e| HubFile {
                size_bytes: e.lfs.as_ref().map(|l| l.size).unwrap_or(e.size),
                lfs_sha256: e
                    .lfs
                    .as_ref()
                    .map(|l| format!("sha256:{}", l.oid))
                    .unwrap_or_default(),
                blob_id: e.oid,
                path: e.path,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The library model an update names: a hub download, with its repository and revision.
    async fn model_to_update(&self, request: &StartDownloadRequest) -> Result<ToUpdate, ApiError> {
        let model = self
            .engine
            .library_model(&request.update_model_id)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => ApiError::not_found("model", request.update_model_id.clone()),
                tonic::Code::InvalidArgument => ApiError::invalid("update_model_id", s.message().to_owned()),
                _ => ApiError::Unavailable {
                    backend: "index".to_owned(),
                    message: format!(
                        "the index could not say what {} holds: {}",
                        request.update_model_id,
                        s.message()
                    ),
                    retry_after: None,
                },
            })?;
        let Some(pumas_proto::common::v1::model_source::Source::Hub(hub)) =
            model.source.as_ref().and_then(|s| s.source.clone())
        else {
            return Err(ApiError::FailedPrecondition {
                kind: "NOT_FROM_HUB".to_owned(),
                subject: model.model_id.clone(),
                message: format!(
                    "{} was imported from local files; only hub downloads are updated",
                    model.model_id
                ),
            });
        };
        if !request.repo_id.is_empty() && !request.repo_id.eq_ignore_ascii_case(&hub.repo_id) {
            return Err(ApiError::invalid(
                "repo_id",
                format!(
                    "{} comes from {}, not {}; leave repo_id empty to update it",
                    model.model_id, hub.repo_id, request.repo_id
                ),
            ));
        }
        Ok(ToUpdate {
            model_id: model.model_id,
            repo_id: hub.repo_id,
            revision: if request.revision.is_empty() {
                hub.revision
            } else {
                request.revision.clone()
            },
            pinned: hub.commit_sha,
            held: model.files.into_iter().map(|f| f.path).collect(),
        })
    }

    /// What an update fetches (the model's files that changed, and for a model that holds the
    /// whole repository the new ones) and removes, compared by the hub's own ids.
    async fn update_plan(
        &self,
        u: &ToUpdate,
        current: &[HubFile],
        commit: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let short = |c: &str| c[..c.len().min(12)].to_owned();
        if commit == u.pinned {
            return Err(ApiError::FailedPrecondition {
                kind: "UP_TO_DATE".to_owned(),
                subject: u.model_id.clone(),
                message: format!(
                    "{} is already at {}, where {} points",
                    u.model_id,
                    short(commit),
                    u.revision
                ),
            });
        }
        let then = self.files_at(&u.repo_id, &u.pinned, "", true).await?;
        let id = |f: &HubFile| {
            if f.lfs_sha256.is_empty() {
                f.blob_id.clone()
            } else {
                f.lfs_sha256.clone()
            }
        };
        let now: std::collections::BTreeMap<&str, &HubFile> =
            current.iter().map(|f| (f.path.as_str(), f)).collect();
        let held: Vec<&HubFile> = then
            .iter()
            .filter(|f| u.held.contains(&pumas_runtime::layout::stored_path(&f.path)))
            .collect();
        let mut fetch = Vec::new();
        let mut removed = Vec::new();
        for old in &held {
            match now.get(old.path.as_str()) {
                Some(new) if id(new) != id(old) => fetch.push(old.path.clone()),
                Some(_) => {}
                None => removed.push(old.path.clone()),
            }
        }
        if held.len() == then.len() {
            fetch.extend(
                current
                    .iter()
                    .filter(|f| !then.iter().any(|t| t.path == f.path))
                    .map(|f| f.path.clone()),
            );
        }
        if fetch.is_empty() {
            return Err(ApiError::FailedPrecondition {
                kind: "UP_TO_DATE".to_owned(),
                subject: u.model_id.clone(),
                message: format!(
                    "{} moved from {} to {}, but none of {}'s files changed{}",
                    u.revision,
                    short(&u.pinned),
                    short(commit),
                    u.model_id,
                    if removed.is_empty() {
                        String::new()
                    } else {
                        format!(" (the new commit removed {})", removed.join(", "))
                    }
                ),
            });
        }
        Ok((fetch, removed))
    }

    async fn start(&self, mut request: StartDownloadRequest) -> Result<Download, ApiError> {
        let update = if request.update_model_id.is_empty() {
            None
        } else {
            let u = self.model_to_update(&request).await?;
            request.repo_id.clone_from(&u.repo_id);
            request.revision.clone_from(&u.revision);
            Some(u)
        };
        check_repo_id(&request.repo_id)?;
        if !request.request_id.is_empty()
            && let Some(job) = self
                .engine
                .store
                .by_request_id(&request.request_id)
                .await
                .map_err(|e| ApiError::Internal(format!("download store: {e}")))?
            && let Some(live) = self.engine.get(&job.id)
        {
            return Ok(download_proto(&live.snapshot()));
        }
        let revision = revision_or_main(&request.revision).to_owned();
        let info = self.model_info(&request.repo_id, &revision).await?;
        let selection = request.selection.clone().unwrap_or_default();
        let paths: Vec<String> = info.files.iter().map(|f| f.path.clone()).collect();
        let unsafe_names: Vec<String> = paths
            .iter()
            .filter_map(|p| select::unsafe_path(p).map(|why| format!("`{}` {why}", p.escape_debug())))
            .collect();
        if !unsafe_names.is_empty() {
            return Err(ApiError::invalid(
                "repo_id",
                format!(
                    "the repository lists file names that cannot be written safely, so nothing was downloaded: {}",
                    unsafe_names.join("; ")
                ),
            ));
        }
        let mut chosen = select::select(
            &paths,
            &selection.allow_patterns,
            &selection.ignore_patterns,
            &selection.gguf_quantization,
        )
        .map_err(|(field, reason)| ApiError::invalid(field, reason))?;
        // The card's image comes along whatever the selection: it is the model's preview.
        if let Some(image) = info.hub_metadata.as_ref().map(|h| h.image_path.clone())
            && !image.is_empty()
            && !chosen.contains(&image)
            && update.is_none()
        {
            chosen.push(image);
        }
        let mut removed = Vec::new();
        if let Some(u) = &update {
            (chosen, removed) = self.update_plan(u, &info.files, &info.commit_sha).await?;
        }
        let files: Vec<JobFile> = info
            .files
            .iter()
            .filter(|f| chosen.contains(&f.path))
            .map(|f| JobFile {
                path: f.path.clone(),
                size: f.size_bytes,
                expected: if f.lfs_sha256.is_empty() {
                    format!("sha1:{}", f.blob_id)
                } else {
                    f.lfs_sha256.clone()
                },
                lfs: !f.lfs_sha256.is_empty(),
                parts: Vec::new(),
                verified: false,
                sha256: String::new(),
                blake3: String::new(),
                adopted: false,
            })
            .collect();
        // The same files of the same commit already on their way: one download, not two. Another
        // selection of the repo (another quant) is another download, and another model.
        let wanted: std::collections::BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for live in self.engine.all() {
            let other = live.snapshot().job;
            if other.repo_id == request.repo_id
                && other.commit_sha == info.commit_sha
                && !other.state.is_final()
                && other
                    .files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    == wanted
            {
                return Err(ApiError::AlreadyExistsHelp {
                    resource_type: "download".to_owned(),
                    name: other.id.clone(),
                    help: format!(
                        "the same files of {}@{} are already downloading; watch that download",
                        other.repo_id,
                        &other.commit_sha[..other.commit_sha.len().min(12)]
                    ),
                });
            }
        }
        // Gated repositories show their info to everyone; only the files are refused. Ask now,
        // so the caller hears PERMISSION_DENIED instead of a job that fails later.
        if info.summary.as_ref().is_some_and(|s| s.gated)
            && let Some(first) = files.first()
        {
            self.engine
                .hub
                .resolve(&request.repo_id, &info.commit_sha, &first.path)
                .await?;
        }
        let total: u64 = files.iter().map(|f| f.size).sum();
        let staging_root = self.engine.staging("");
        let available = fs4::available_space(&staging_root).map_err(|e| {
            ApiError::Internal(format!("checking free space in {}: {e}", staging_root.display()))
        })?;
        let margin = 64 << 20;
        if total + margin > available {
            return Err(ApiError::ResourceExhausted {
                message: format!(
                    "{} needs {} bytes but only {} are free in {}; free some space or pick fewer files",
                    request.repo_id,
                    total,
                    available.saturating_sub(margin),
                    staging_root.display()
                ),
                retry_after: None,
            });
        }
        let now = now_ms();
        let mut tags = info.summary.as_ref().map(|s| s.tags.clone()).unwrap_or_default();
        tags.sort();
        tags.dedup();
        let whole_repository = files.len() == info.files.len();
        // An update's model is in the library already: there is no early record to announce.
        let is_update = update.is_some();
        let job = Job {
            id: new_download_id(&request.repo_id),
            request_id: request.request_id.clone(),
            repo_id: request.repo_id.clone(),
            revision,
            commit_sha: info.commit_sha.clone(),
            state: JobState::Queued,
            priority: request.priority,
            selection: Selection {
                allow: selection.allow_patterns.clone(),
                ignore: selection.ignore_patterns.clone(),
                quantization: selection.gguf_quantization.trim().to_ascii_uppercase(),
            },
            model_type: request.model_type,
            family: request.family.trim().to_owned(),
            model_id: update.as_ref().map(|u| u.model_id.clone()).unwrap_or_default(),
            error: None,
            created_ms: now,
            updated_ms: now,
            files,
            tags,
            license: info.license.clone(),
            whole_repository,
            update: update.map(|u| crate::store::JobUpdate {
                model_id: u.model_id,
                removed,
            }),
            hub_metadata: info
                .hub_metadata
                .as_ref()
                .map(|m| hex::encode(prost::Message::encode_to_vec(m)))
                .unwrap_or_default(),
            announced: is_update,
        };
        let live = self
            .engine
            .add(job)
            .await
            .map_err(|e| ApiError::Internal(format!("download store: {e}")))?;
        tracing::info!(repo = %request.repo_id, commit = %info.commit_sha, bytes = total, "download queued");
        Ok(download_proto(&live.snapshot()))
    }
}

/// A library model an update starts from.
struct ToUpdate {
    model_id: String,
    repo_id: String,
    revision: String,
    pinned: String,
    /// Its files, as the library keeps them.
    held: Vec<String>,
}

fn page_response(
    body: &str,
    from_cache: bool,
    stale: bool,
    at: SystemTime,
) -> Result<SearchHubResponse, ApiError> {
    let page: CachedPage =
        serde_json::from_str(body).map_err(|e| ApiError::Internal(format!("cached search page: {e}")))?;
    Ok(SearchHubResponse {
        models: page.models.iter().map(summary).collect(),
        next_page_token: page
            .next_cursor
            .map(|c| format!("{PAGE_TOKEN_PREFIX}{c}"))
            .unwrap_or_default(),
        from_cache,
        stale,
        fetch_time: Some(prost_types::Timestamp::from(at)),
    })
}

fn final_or(job: &Job, action: &str) -> Result<(), ApiError> {
    if job.state.is_final() {
        return Err(ApiError::FailedPrecondition {
            kind: "DOWNLOAD_FINISHED".to_owned(),
            subject: job.id.clone(),
            message: format!(
                "download {} is already {:?}; nothing to {action}",
                job.id, job.state
            )
            .to_lowercase(),
        });
    }
    Ok(())
}

#[tonic::async_trait]
impl FetchService for FetchApi {
    type WatchDownloadStream = BoxStream<WatchDownloadResponse>;

    #[tracing::instrument(skip_all)]
    async fn get_service_info(
        &self,
        _request: Request<GetServiceInfoRequest>,
    ) -> Result<Response<GetServiceInfoResponse>, Status> {
        Ok(Response::new(GetServiceInfoResponse {
            info: Some(self.info.clone()),
            hub_endpoint: self.engine.hub.endpoint().to_owned(),
            hub_token_configured: self.engine.hub.has_token(),
        }))
    }

    #[tracing::instrument(skip_all, fields(query = %request.get_ref().query))]
    async fn search_hub(
        &self,
        request: Request<SearchHubRequest>,
    ) -> Result<Response<SearchHubResponse>, Status> {
        Ok(Response::new(self.search(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(repo = %request.get_ref().repo_id))]
    async fn get_hub_model(
        &self,
        request: Request<GetHubModelRequest>,
    ) -> Result<Response<GetHubModelResponse>, Status> {
        let r = request.into_inner();
        let model = self.model_info(&r.repo_id, &r.revision).await?;
        Ok(Response::new(GetHubModelResponse { model: Some(model) }))
    }

    #[tracing::instrument(skip_all, fields(repo = %request.get_ref().repo_id))]
    async fn list_hub_files(
        &self,
        request: Request<ListHubFilesRequest>,
    ) -> Result<Response<ListHubFilesResponse>, Status> {
        let r = request.into_inner();
        check_repo_id(&r.repo_id)?;
        if !r.path.is_empty() && select::unsafe_path(r.path.trim_end_matches('/')).is_some() {
            return Err(ApiError::invalid(
                "path",
                format!("`{}` is not a folder path in a repository", r.path),
            )
            .into());
        }
        let info = self
            .engine
            .hub
            .model_info(&r.repo_id, revision_or_main(&r.revision))
            .await
            .map_err(ApiError::from)?;
        let commit = info.sha.unwrap_or_default();
        let files = self.files_at(&r.repo_id, &commit, &r.path, r.recursive).await?;
        Ok(Response::new(ListHubFilesResponse {
            commit_sha: commit,
            files,
        }))
    }

    #[tracing::instrument(skip_all, fields(repo = %request.get_ref().repo_id))]
    async fn start_download(
        &self,
        request: Request<StartDownloadRequest>,
    ) -> Result<Response<StartDownloadResponse>, Status> {
        let download = self.start(request.into_inner()).await?;
        Ok(Response::new(StartDownloadResponse {
            download: Some(download),
        }))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn get_download(
        &self,
        request: Request<GetDownloadRequest>,
    ) -> Result<Response<GetDownloadResponse>, Status> {
        let live = self.live(&request.get_ref().download_id)?;
        Ok(Response::new(GetDownloadResponse {
            download: Some(download_proto(&live.snapshot())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_downloads(
        &self,
        request: Request<ListDownloadsRequest>,
    ) -> Result<Response<ListDownloadsResponse>, Status> {
        let r = request.into_inner();
        let size = pumas_runtime::error::page_size(r.page_size, 50, 1000)? as usize;
        let offset: usize = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .strip_prefix("dl.")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    ApiError::invalid("page_token", "not a token from a previous ListDownloads answer")
                })?
        };
        let mut states = Vec::new();
        for s in &r.states {
            states.push(
                state_from_proto(*s)
                    .ok_or_else(|| ApiError::invalid("states", format!("unknown state {s}")))?,
            );
        }
        let all: Vec<Snapshot> = self
            .engine
            .all()
            .iter()
            .map(|l| l.snapshot())
            .filter(|s| states.is_empty() || states.contains(&s.job.state))
            .collect();
        let end = (offset + size).min(all.len());
        let downloads = all
            .get(offset.min(end)..end)
            .unwrap_or_default()
            .iter()
            .map(download_proto)
            .collect();
        Ok(Response::new(ListDownloadsResponse {
            downloads,
            next_page_token: if end < all.len() {
                format!("dl.{end}")
            } else {
                String::new()
            },
        }))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn watch_download(
        &self,
        request: Request<WatchDownloadRequest>,
    ) -> Result<Response<Self::WatchDownloadStream>, Status> {
        let live = self.live(&request.get_ref().download_id)?;
        // Every change, at most ten times a second, and at least twice a second for rate and ETA.
        let pace = Pace {
            heartbeat: Some(Duration::from_millis(500)),
            min_gap: Duration::from_millis(100),
        };
        let stream = watch_job(live.changed.subscribe(), pace, move |_| {
            let snapshot = live.snapshot();
            (
                WatchDownloadResponse {
                    download: Some(download_proto(&snapshot)),
                },
                snapshot.job.state.is_final(),
            )
        });
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn cancel_download(
        &self,
        request: Request<CancelDownloadRequest>,
    ) -> Result<Response<CancelDownloadResponse>, Status> {
        let live = self.live(&request.get_ref().download_id)?;
        let job = live.snapshot().job;
        if matches!(job.state, JobState::Completed | JobState::Cancelled) {
            final_or(&job, "cancel")?;
        }
        self.engine.cancel(&live).await;
        Ok(Response::new(CancelDownloadResponse {
            download: Some(download_proto(&live.snapshot())),
        }))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn pause_download(
        &self,
        request: Request<PauseDownloadRequest>,
    ) -> Result<Response<PauseDownloadResponse>, Status> {
        let live = self.live(&request.get_ref().download_id)?;
        let job = live.snapshot().job;
        final_or(&job, "pause")?;
        if job.state == JobState::Committing {
            return Err(ApiError::FailedPrecondition {
                kind: "DOWNLOAD_COMMITTING".to_owned(),
                subject: job.id.clone(),
                message: format!(
                    "download {} is moving its files into the library; it cannot pause now",
                    job.id
                ),
            }
            .into());
        }
        self.engine.pause(&live).await;
        Ok(Response::new(PauseDownloadResponse {
            download: Some(download_proto(&live.snapshot())),
        }))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn resume_download(
        &self,
        request: Request<ResumeDownloadRequest>,
    ) -> Result<Response<ResumeDownloadResponse>, Status> {
        let live = self.live(&request.get_ref().download_id)?;
        let job = live.snapshot().job;
        if !matches!(job.state, JobState::Paused | JobState::Failed) {
            return Err(ApiError::FailedPrecondition {
                kind: "DOWNLOAD_NOT_RESUMABLE".to_owned(),
                subject: job.id.clone(),
                message: format!(
                    "download {} is {}; only paused or failed downloads resume",
                    job.id,
                    format!("{:?}", job.state).to_lowercase()
                ),
            }
            .into());
        }
        self.engine.resume(&live).await;
        Ok(Response::new(ResumeDownloadResponse {
            download: Some(download_proto(&live.snapshot())),
        }))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn set_download_priority(
        &self,
        request: Request<SetDownloadPriorityRequest>,
    ) -> Result<Response<SetDownloadPriorityResponse>, Status> {
        let r = request.into_inner();
        let live = self.live(&r.download_id)?;
        self.engine.set_priority(&live, r.priority).await;
        Ok(Response::new(SetDownloadPriorityResponse {
            download: Some(download_proto(&live.snapshot())),
        }))
    }
}
