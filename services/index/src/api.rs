//! `pumas.index.v1.IndexService`: translates between proto and the domain, maps errors.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use pumas_proto::DEPENDENCY_CONTRACT_VERSION;
use pumas_proto::common::v1::{ImportMode, ServiceInfo};
use pumas_proto::index::v1::index_service_server::IndexService;
use pumas_proto::index::v1::*;
use pumas_runtime::BoxStream;
use pumas_runtime::stream::{Pace, watch_job};
use tonic::{Request, Response, Status};

use crate::error::IndexError;
use crate::library::Library;
use crate::metadata::Overrides;
use crate::{SERVICE_NAME, convert, import, jobs, paging};

/// Page sizes: default and maximum.
const PAGE_DEFAULT: u32 = 50;
const PAGE_MAX: u32 = 1000;

/// The index service's gRPC face.
pub(crate) struct IndexApi {
    info: ServiceInfo,
    library: Arc<Library>,
}

impl IndexApi {
    pub(crate) fn new(library: Arc<Library>, start_time: SystemTime) -> Self {
        let info = pumas_runtime::info::service_info("index", &[SERVICE_NAME], start_time);
        Self { info, library }
    }

    fn record(&self, r: &crate::store::Record) -> pumas_proto::common::v1::ModelRecord {
        convert::model(r, self.library.root())
    }

    /// The store filter, a library model id among the base models standing for the hub
    /// repository it came from.
    async fn filter(
        &self,
        f: Option<&pumas_proto::common::v1::ModelFilter>,
    ) -> Result<crate::store::Filter, IndexError> {
        let Some(f) = f else { return convert::filter(None) };
        // Every list and search comes through here: copy the filter only when it names a model.
        if !f
            .base_models
            .iter()
            .any(|b| crate::slug::parse_model_id(b).is_some())
        {
            return convert::filter(Some(f));
        }
        let mut f = f.clone();
        for base in &mut f.base_models {
            if crate::slug::parse_model_id(base).is_none() {
                continue;
            }
            let record = self.library.get(base).await?;
            match &record.metadata.source {
                crate::metadata::Source::Hub { repo_id, .. } => *base = repo_id.clone(),
                crate::metadata::Source::Local { .. } => {
                    return Err(IndexError::invalid(
                        "filter.base_models",
                        format!(
                            "{base} was imported from local files: it has no hub repository that models could name as their base"
                        ),
                    ));
                }
            }
        }
        convert::filter(Some(&f))
    }

    /// GetModel's lineage: the library models of each base repository, and the models whose
    /// card names this model's repository as their base.
    async fn fill_lineage(
        &self,
        record: &crate::store::Record,
        model: &mut pumas_proto::common::v1::ModelRecord,
    ) -> Result<(), IndexError> {
        let store = self.library.store();
        if let Some(hub) = &mut model.hub {
            for base in &mut hub.base_models {
                base.model_ids = store.ids_from_repo(&base.repo_id).await?;
            }
        }
        if let crate::metadata::Source::Hub { repo_id, .. } = &record.metadata.source {
            model.derived_model_ids = store
                .ids_tagged(&crate::hub_card::base_model_key(repo_id))
                .await?
                .into_iter()
                .filter(|id| *id != record.metadata.id)
                .collect();
        }
        Ok(())
    }
}

/// Largest preview whose bytes GetModel returns.
const PREVIEW_MAX: u64 = 4 * 1024 * 1024;

/// A preview's bytes, when it is a regular file no larger than [`PREVIEW_MAX`]; a preview that
/// went away or grew costs its bytes only, not the call.
fn read_preview(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if !file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() <= PREVIEW_MAX)
    {
        return Vec::new();
    }
    let mut data = Vec::new();
    match file.take(PREVIEW_MAX).read_to_end(&mut data) {
        Ok(_) => data,
        Err(_) => Vec::new(),
    }
}

fn page_size(n: i32) -> Result<u32, Status> {
    pumas_runtime::error::page_size(n, PAGE_DEFAULT, PAGE_MAX).map_err(Status::from)
}

fn import_mode(value: i32) -> Result<import::Mode, IndexError> {
    Ok(match ImportMode::try_from(value) {
        Ok(ImportMode::Unspecified | ImportMode::Copy) => import::Mode::Copy,
        Ok(ImportMode::Move) => import::Mode::Move,
        Ok(ImportMode::Hardlink) => import::Mode::Hardlink,
        Ok(ImportMode::Reflink) => import::Mode::Reflink,
        Err(_) => {
            return Err(IndexError::invalid(
                "mode",
                format!("{value} is not an import mode"),
            ));
        }
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Streams a job's snapshots until it ends.
/// A stream fed by a task through a bounded channel.
fn async_stream<T, F, Fut>(body: F) -> tokio_stream::wrappers::ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl IndexService for IndexApi {
    type WatchJobStream = BoxStream<WatchJobResponse>;
    type WatchChangesStream = BoxStream<WatchChangesResponse>;

    #[tracing::instrument(skip_all)]
    async fn get_service_info(
        &self,
        _request: Request<GetServiceInfoRequest>,
    ) -> Result<Response<GetServiceInfoResponse>, Status> {
        Ok(Response::new(GetServiceInfoResponse {
            info: Some(self.info.clone()),
            library_root: self.library.root().display().to_string(),
            model_count: self.library.store().count().await?,
            change_cursor: self.library.store().head_cursor().await?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let filter = self.filter(r.filter.as_ref()).await?;
        let order = convert::order(r.order_by, false)?;
        let qhash = paging::query_hash(&("list", &filter, order));
        let after = paging::decode(&r.page_token, &qhash)?;
        let page = self
            .library
            .store()
            .page(None, &filter, order, &after, limit)
            .await?;
        Ok(Response::new(ListModelsResponse {
            models: page.rows.iter().map(|(rec, _)| self.record(rec)).collect(),
            total_size_capped: page.total_capped(),
            next_page_token: page
                .next
                .as_ref()
                .map(|n| paging::encode(n, &qhash))
                .unwrap_or_default(),
            total_size: page.total,
        }))
    }

    #[tracing::instrument(skip_all, fields(query = %request.get_ref().query))]
    async fn search_models(
        &self,
        request: Request<SearchModelsRequest>,
    ) -> Result<Response<SearchModelsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let filter = self.filter(r.filter.as_ref()).await?;
        let query = crate::query::parse(&r.query).map_err(|reason| IndexError::invalid("query", reason))?;
        let order = convert::order(r.order_by, query.is_some())?;
        let qhash = paging::query_hash(&("search", &query, &filter, order));
        let after = paging::decode(&r.page_token, &qhash)?;
        let page = self
            .library
            .store()
            .page(query.as_ref(), &filter, order, &after, limit)
            .await?;
        Ok(Response::new(SearchModelsResponse {
            hits: page
                .rows
                .iter()
                .map(|(rec, score)| SearchHit {
                    model: Some(self.record(rec)),
                    score: *score,
                    matched_fields: Vec::new(),
                })
                .collect(),
            total_size_capped: page.total_capped(),
            next_page_token: page
                .next
                .as_ref()
                .map(|n| paging::encode(n, &qhash))
                .unwrap_or_default(),
            total_size: page.total,
        }))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn get_model(
        &self,
        request: Request<GetModelRequest>,
    ) -> Result<Response<GetModelResponse>, Status> {
        let r = request.into_inner();
        let record = self.library.get(&r.model_id).await?;
        let mut model = self.record(&record);
        self.fill_lineage(&record, &mut model).await?;
        if r.include_chat_template {
            let dir = self.library.model_dir(&record.metadata.id)?;
            let files = record.metadata.files.clone();
            let template = tokio::task::spawn_blocking(move || crate::embedded::chat_template(&dir, &files))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            if let Some(template) = template {
                model.embedded.get_or_insert_default().chat_template = template;
            }
        }
        if r.include_preview
            && let Some(side) = model.side_files.iter_mut().find(|s| s.role == "preview")
        {
            let path = self.library.model_dir(&record.metadata.id)?.join(&side.path);
            side.data = tokio::task::spawn_blocking(move || read_preview(&path))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(GetModelResponse { model: Some(model) }))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_get_models(
        &self,
        request: Request<BatchGetModelsRequest>,
    ) -> Result<Response<BatchGetModelsResponse>, Status> {
        let ids = request.into_inner().model_ids;
        if ids.len() > PAGE_MAX as usize {
            return Err(IndexError::invalid("model_ids", format!("at most {PAGE_MAX} ids per call")).into());
        }
        let mut response = BatchGetModelsResponse::default();
        for id in ids {
            match self.library.store().get(&id).await? {
                Some(r) => response.models.push(self.record(&r)),
                None => response.missing_model_ids.push(id),
            }
        }
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn find_models_by_hash(
        &self,
        request: Request<FindModelsByHashRequest>,
    ) -> Result<Response<FindModelsByHashResponse>, Status> {
        let digest = request.into_inner().digest.to_ascii_lowercase();
        if !crate::hash::is_digest(&digest) {
            return Err(IndexError::invalid(
                "digest",
                "must be sha256:<64 hex digits> or blake3:<64 hex digits>",
            )
            .into());
        }
        let found = self.library.store().find_by_digest(&digest).await?;
        Ok(Response::new(FindModelsByHashResponse {
            models: found.iter().map(|r| self.record(r)).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn update_model_metadata(
        &self,
        request: Request<UpdateModelMetadataRequest>,
    ) -> Result<Response<UpdateModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let o = r.overrides.unwrap_or_default();
        let fields = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if fields.is_empty() {
            return Err(IndexError::invalid(
                "update_mask",
                "name the fields to update, e.g. [\"display_name\", \"tags\"]",
            )
            .into());
        }
        let model_type = match o.model_type {
            None => None,
            Some(v) => Some(
                pumas_proto::names::model_type(v)
                    .ok_or_else(|| {
                        IndexError::invalid("overrides.model_type", format!("{v} is not a model type"))
                    })?
                    .to_owned(),
            ),
        };
        let changes = Overrides {
            schema_version: crate::metadata::SCHEMA_VERSION,
            display_name: o.display_name,
            model_type,
            family: o.family,
            tags: fields.iter().any(|f| f == "tags").then_some(o.tags),
            description: o.description,
            license: o.license,
            declares_no_dependencies: o.declares_no_dependencies,
        };
        let record = self
            .library
            .update_overrides(&r.model_id, &changes, &fields)
            .await?;
        Ok(Response::new(UpdateModelMetadataResponse {
            model: Some(self.record(&record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn delete_model(
        &self,
        request: Request<DeleteModelRequest>,
    ) -> Result<Response<DeleteModelResponse>, Status> {
        let r = request.into_inner();
        let freed_bytes = self.library.delete(&r.model_id, r.force).await?;
        Ok(Response::new(DeleteModelResponse { freed_bytes }))
    }

    #[tracing::instrument(skip_all, fields(paths = request.get_ref().paths.len()))]
    async fn import_models(
        &self,
        request: Request<ImportModelsRequest>,
    ) -> Result<Response<ImportModelsResponse>, Status> {
        let r = request.into_inner();
        let model_type = match r.model_type {
            0 => None,
            v => Some(
                pumas_proto::names::model_type(v)
                    .ok_or_else(|| IndexError::invalid("model_type", format!("{v} is not a model type")))?
                    .to_owned(),
            ),
        };
        let req = import::Request {
            paths: r.paths.iter().map(PathBuf::from).collect(),
            mode: import_mode(r.mode)?,
            model_type,
            family: non_empty(&r.family),
            display_name: non_empty(&r.display_name),
            tags: r.tags,
        };
        let (handle, created) = self.library.jobs.create(jobs::Kind::Import, &r.request_id)?;
        if created {
            let library = Arc::clone(&self.library);
            let req_for_plan = req.clone();
            let units = tokio::task::spawn_blocking(move || import::plan(&library, &req_for_plan))
                .await
                .map_err(|e| Status::internal(e.to_string()));
            let units = match units {
                Ok(Ok(units)) => units,
                Ok(Err(err)) => {
                    handle.finish(jobs::State::Failed, Some((&err).into()));
                    return Err(err.into());
                }
                Err(status) => return Err(status),
            };
            tokio::spawn(import::run(Arc::clone(&self.library), handle.clone(), req, units));
        }
        Ok(Response::new(ImportModelsResponse {
            job: Some(convert::job(&handle.snapshot())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn reindex(&self, request: Request<ReindexRequest>) -> Result<Response<ReindexResponse>, Status> {
        let (handle, created) = self
            .library
            .jobs
            .create(jobs::Kind::Reindex, &request.get_ref().request_id)?;
        if created {
            let library = Arc::clone(&self.library);
            let h = handle.clone();
            tokio::spawn(async move {
                let Some(_turn) = library.jobs.turn(&h).await else {
                    return;
                };
                h.start();
                match crate::reindex::reindex(&library, Some(&h)).await {
                    Ok(_) => h.finish(jobs::State::Succeeded, None),
                    Err(err) => h.finish(jobs::State::Failed, Some((&err).into())),
                }
            });
        }
        Ok(Response::new(ReindexResponse {
            job: Some(convert::job(&handle.snapshot())),
        }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        let s = self.library.jobs.get(&request.get_ref().job_id)?;
        Ok(Response::new(GetJobResponse {
            job: Some(convert::job(&s)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)? as usize;
        let all = self.library.jobs.list();
        let start = if r.page_token.is_empty() {
            0
        } else {
            all.iter()
                .position(|s| s.id == r.page_token)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    IndexError::invalid(
                        "page_token",
                        "is not a token this service issued; start again without it",
                    )
                })?
        };
        let page: Vec<_> = all.iter().skip(start).take(limit).collect();
        let next = if start + page.len() < all.len() {
            page.last().map(|s| s.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListJobsResponse {
            jobs: page.iter().map(|s| convert::job(s)).collect(),
            next_page_token: next,
        }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let rx = self.library.jobs.watch(&request.get_ref().job_id)?;
        let stream = watch_job(rx, Pace::default(), |s: &jobs::Snapshot| {
            (
                WatchJobResponse {
                    job: Some(convert::job(s)),
                },
                s.state.is_final(),
            )
        });
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let s = self.library.jobs.cancel(&request.get_ref().job_id)?;
        Ok(Response::new(CancelJobResponse {
            job: Some(convert::job(&s)),
        }))
    }

    #[tracing::instrument(skip_all, fields(after = request.get_ref().after_cursor))]
    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let r = request.into_inner();
        let library = Arc::clone(&self.library);
        // Subscribe before reading the backlog so nothing falls between the two.
        let mut live = library.subscribe();
        let floor = library.store().change_floor().await?;
        if r.after_cursor != 0 && r.after_cursor < floor {
            return Err(IndexError::OutOfRange {
                field: "after_cursor".to_owned(),
                reason: format!(
                    "events after cursor {} are no longer kept (the feed now starts after {floor}); \
                     read the library again (ListModels) and follow from GetServiceInfo's change_cursor",
                    r.after_cursor
                ),
            }
            .into());
        }
        let mut cursor = if r.after_cursor == 0 {
            library.store().head_cursor().await?
        } else {
            r.after_cursor
        };
        let include = r.include_models;
        let stream = async_stream(move |tx| async move {
            let send = |c: crate::store::Change| {
                let library = Arc::clone(&library);
                let tx = tx.clone();
                async move {
                    let model = if include && c.kind != "removed" {
                        library
                            .store()
                            .get(&c.model_id)
                            .await
                            .ok()
                            .flatten()
                            .map(|r| convert::model(&r, library.root()))
                    } else {
                        None
                    };
                    tx.send(Ok(convert::change(&c, model))).await.is_ok()
                }
            };
            loop {
                // Backlog from the database.
                loop {
                    let batch = match library.store().changes_after(cursor, 500).await {
                        Ok(batch) => batch,
                        Err(err) => {
                            let _ = tx.send(Err(err.into())).await;
                            return;
                        }
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for c in batch {
                        cursor = c.cursor;
                        if !send(c).await {
                            return;
                        }
                    }
                }
                // Live tail; on lag, go back to the database.
                loop {
                    match live.recv().await {
                        Ok(c) if c.cursor <= cursor => {}
                        Ok(c) => {
                            cursor = c.cursor;
                            if !send(c).await {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(holder = %request.get_ref().holder))]
    async fn replace_link_holds(
        &self,
        request: Request<ReplaceLinkHoldsRequest>,
    ) -> Result<Response<ReplaceLinkHoldsResponse>, Status> {
        let r = request.into_inner();
        if r.holder.is_empty() {
            return Err(
                IndexError::invalid("holder", "name the holder, e.g. \"workstation/comfyui\"").into(),
            );
        }
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for id in r.model_ids {
            if self.library.store().get(&id).await?.is_some() {
                known.push(id)
            } else {
                unknown.push(id)
            }
        }
        self.library.store().replace_link_holds(&r.holder, &known).await?;
        Ok(Response::new(ReplaceLinkHoldsResponse {
            unknown_model_ids: unknown,
        }))
    }

    #[tracing::instrument(skip_all, fields(models = request.get_ref().model_ids.len()))]
    async fn verify_models(
        &self,
        request: Request<VerifyModelsRequest>,
    ) -> Result<Response<VerifyModelsResponse>, Status> {
        let r = request.into_inner();
        for id in &r.model_ids {
            self.library.get(id).await?;
        }
        let (handle, created) = self.library.jobs.create(jobs::Kind::Verify, &r.request_id)?;
        if created {
            tokio::spawn(crate::verify::run(
                Arc::clone(&self.library),
                handle.clone(),
                r.model_ids,
            ));
        }
        Ok(Response::new(VerifyModelsResponse {
            job: Some(convert::job(&handle.snapshot())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn put_dependency_profile(
        &self,
        request: Request<PutDependencyProfileRequest>,
    ) -> Result<Response<PutDependencyProfileResponse>, Status> {
        let profile = request
            .into_inner()
            .profile
            .ok_or_else(|| IndexError::invalid("profile", "is required"))?;
        let root = self.library.root().to_owned();
        let catalog = std::sync::Arc::clone(self.library.store().catalog());
        // One write at a time: two callers publishing one new version with different content
        // must not both hear OK (the second is ALREADY_EXISTS), nor race a delete.
        let _commit = self.library.commit().await;
        let stored = tokio::task::spawn_blocking(move || {
            crate::profiles::put(&root, &catalog, convert::profile_from(profile))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(PutDependencyProfileResponse {
            profile: Some(convert::profile(&stored)),
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all, fields(profile_id = %request.get_ref().profile_id))]
    async fn get_dependency_profile(
        &self,
        request: Request<GetDependencyProfileRequest>,
    ) -> Result<Response<GetDependencyProfileResponse>, Status> {
        let r = request.into_inner();
        let root = self.library.root();
        let catalog = self.library.store().catalog();
        let found = if r.version.is_empty() {
            crate::profiles::latest(root, catalog, &r.profile_id)?
        } else {
            crate::profiles::read(root, catalog, &r.profile_id, &r.version)?
        };
        let name = if r.version.is_empty() {
            r.profile_id.clone()
        } else {
            format!("{}@{}", r.profile_id, r.version)
        };
        let profile = found.ok_or(IndexError::ProfileNotFound(name))?;
        Ok(Response::new(GetDependencyProfileResponse {
            profile: Some(convert::profile(&profile)),
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_dependency_profiles(
        &self,
        request: Request<ListDependencyProfilesRequest>,
    ) -> Result<Response<ListDependencyProfilesResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)? as usize;
        let all = crate::profiles::list(self.library.root(), self.library.store().catalog())?;
        let start = if r.page_token.is_empty() {
            0
        } else {
            all.iter()
                .position(|p| format!("{}@{}", p.profile_id, p.version) == r.page_token)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    IndexError::invalid(
                        "page_token",
                        "is not a token this service issued; start again without it",
                    )
                })?
        };
        let page: Vec<_> = all.iter().skip(start).take(limit).collect();
        let next = if start + page.len() < all.len() {
            page.last()
                .map(|p| format!("{}@{}", p.profile_id, p.version))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListDependencyProfilesResponse {
            profiles: page.iter().map(|p| convert::profile(p)).collect(),
            next_page_token: next,
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all, fields(profile_id = %request.get_ref().profile_id))]
    async fn delete_dependency_profile(
        &self,
        request: Request<DeleteDependencyProfileRequest>,
    ) -> Result<Response<DeleteDependencyProfileResponse>, Status> {
        let r = request.into_inner();
        if r.profile_id.is_empty() {
            return Err(IndexError::invalid("profile_id", "name the profile to delete").into());
        }
        if r.version.is_empty() {
            return Err(IndexError::invalid("version", "name the version to delete, e.g. \"1\"").into());
        }
        self.library
            .delete_profile(&r.profile_id, &r.version, r.force)
            .await?;
        Ok(Response::new(DeleteDependencyProfileResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn put_model_dependency_binding(
        &self,
        request: Request<PutModelDependencyBindingRequest>,
    ) -> Result<Response<PutModelDependencyBindingResponse>, Status> {
        let binding = request
            .into_inner()
            .binding
            .ok_or_else(|| IndexError::invalid("binding", "is required"))?;
        let model_id = binding.model_id.clone();
        if model_id.is_empty() {
            return Err(
                IndexError::invalid("binding.model_id", "name the model the binding belongs to").into(),
            );
        }
        let (_, stored) = self
            .library
            .put_binding(&model_id, convert::binding_from(binding))
            .await?;
        Ok(Response::new(PutModelDependencyBindingResponse {
            binding: Some(convert::binding(&model_id, &stored)),
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_model_dependency_bindings(
        &self,
        request: Request<ListModelDependencyBindingsRequest>,
    ) -> Result<Response<ListModelDependencyBindingsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let mut bindings = Vec::new();
        let mut next_page_token = String::new();
        if r.model_id.is_empty() {
            let page = self
                .library
                .store()
                .bindings_after(&r.page_token, limit + 1)
                .await?;
            for (i, (binding_id, model_id)) in page.iter().enumerate() {
                if i == limit as usize {
                    next_page_token = bindings
                        .last()
                        .map(|b: &pumas_proto::common::v1::DependencyBinding| b.binding_id.clone())
                        .unwrap_or_default();
                    break;
                }
                if let Some(rec) = self.library.store().get(model_id).await?
                    && let Some(b) = rec
                        .metadata
                        .dependency_bindings
                        .iter()
                        .find(|b| &b.binding_id == binding_id)
                {
                    bindings.push(convert::binding(model_id, b));
                }
            }
        } else {
            let rec = self.library.get(&r.model_id).await?;
            bindings = rec
                .metadata
                .dependency_bindings
                .iter()
                .map(|b| convert::binding(&r.model_id, b))
                .collect();
        }
        Ok(Response::new(ListModelDependencyBindingsResponse {
            bindings,
            next_page_token,
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all, fields(binding_id = %request.get_ref().binding_id))]
    async fn delete_model_dependency_binding(
        &self,
        request: Request<DeleteModelDependencyBindingRequest>,
    ) -> Result<Response<DeleteModelDependencyBindingResponse>, Status> {
        self.library.delete_binding(&request.get_ref().binding_id).await?;
        Ok(Response::new(DeleteModelDependencyBindingResponse {}))
    }

    #[tracing::instrument(skip_all, fields(models = request.get_ref().model_ids.len()))]
    async fn get_dependency_data(
        &self,
        request: Request<GetDependencyDataRequest>,
    ) -> Result<Response<GetDependencyDataResponse>, Status> {
        let ids = request.into_inner().model_ids;
        if ids.len() > PAGE_MAX as usize {
            return Err(IndexError::invalid("model_ids", format!("at most {PAGE_MAX} ids per call")).into());
        }
        let mut response = GetDependencyDataResponse {
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
            ..Default::default()
        };
        let mut wanted: std::collections::BTreeSet<(String, String)> = Default::default();
        for id in ids {
            match self.library.store().get(&id).await? {
                Some(rec) => {
                    for b in &rec.metadata.dependency_bindings {
                        wanted.insert((b.profile_id.clone(), b.profile_version.clone()));
                    }
                    let bindings = rec
                        .metadata
                        .dependency_bindings
                        .iter()
                        .map(|b| convert::binding(&id, b))
                        .collect();
                    response.models.push(ModelDependencyData {
                        model: Some(self.record(&rec)),
                        bindings,
                    });
                }
                None => response.missing_model_ids.push(id),
            }
        }
        for (profile_id, version) in wanted {
            match crate::profiles::read(
                self.library.root(),
                self.library.store().catalog(),
                &profile_id,
                &version,
            )? {
                Some(p) => response.profiles.push(convert::profile(&p)),
                None => response
                    .missing_profiles
                    .push(MissingProfile { profile_id, version }),
            }
        }
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn begin_model_download(
        &self,
        request: Request<BeginModelDownloadRequest>,
    ) -> Result<Response<BeginModelDownloadResponse>, Status> {
        let r = request.into_inner();
        let source = r.source.unwrap_or_default();
        let model_type = match r.model_type {
            0 => None,
            v => Some(
                pumas_proto::names::model_type(v)
                    .ok_or_else(|| IndexError::invalid("model_type", format!("{v} is not a model type")))?
                    .to_owned(),
            ),
        };
        let record = self
            .library
            .begin_download(crate::download::Begin {
                download_id: r.download_id,
                endpoint: source.endpoint,
                repo_id: source.repo_id,
                revision: source.revision,
                commit_sha: source.commit_sha,
                whole_repository: source.whole_repository,
                staging: PathBuf::from(r.staging_path),
                expected: r.expected_files.iter().map(convert::file_entry).collect(),
                model_type,
                family: non_empty(&r.family),
                tags: r.tags,
                license: r.license,
                selection_label: r.selection_label,
                hub: r.hub_metadata.as_ref().map(crate::hub_card::HubCard::from_proto),
            })
            .await?;
        Ok(Response::new(BeginModelDownloadResponse {
            model: Some(self.record(&record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn commit_model_download(
        &self,
        request: Request<CommitModelDownloadRequest>,
    ) -> Result<Response<CommitModelDownloadResponse>, Status> {
        let r = request.into_inner();
        let files = r.files.iter().map(convert::file_entry).collect();
        let record = match r.update {
            Some(update) => {
                self.library
                    .commit_update(crate::download::Update {
                        download_id: r.download_id,
                        model_id: update.model_id,
                        staging: PathBuf::from(update.staging_path),
                        commit_sha: update.commit_sha,
                        files,
                        removed: update.removed_paths,
                    })
                    .await?
            }
            None => self.library.commit_download(&r.download_id, files).await?,
        };
        Ok(Response::new(CommitModelDownloadResponse {
            model: Some(self.record(&record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn set_hub_metadata(
        &self,
        request: Request<SetHubMetadataRequest>,
    ) -> Result<Response<SetHubMetadataResponse>, Status> {
        let r = request.into_inner();
        let card = crate::hub_card::HubCard::from_proto(&r.hub_metadata.unwrap_or_default());
        let record = self.library.set_hub_card(&r.model_id, card).await?;
        let mut model = self.record(&record);
        self.fill_lineage(&record, &mut model).await?;
        Ok(Response::new(SetHubMetadataResponse { model: Some(model) }))
    }

    #[tracing::instrument(skip_all, fields(download = %request.get_ref().download_id))]
    async fn abort_model_download(
        &self,
        request: Request<AbortModelDownloadRequest>,
    ) -> Result<Response<AbortModelDownloadResponse>, Status> {
        let r = request.into_inner();
        self.library
            .abort_download(&r.download_id, r.remove, &r.reason)
            .await?;
        Ok(Response::new(AbortModelDownloadResponse {}))
    }
}
