//! `pumas.gateway.v1.ModelLibraryService`: aggregates the backends. Local search and views come
//! from the index; hub results from fetch (search still answers when fetch is down, and says so);
//! operations pass through to their owners with deadlines and the owners' error details intact.

use std::sync::Arc;
use std::time::SystemTime;

use pumas_proto::DEPENDENCY_CONTRACT_VERSION;
use pumas_proto::common::v1::ServiceInfo;
use pumas_proto::gateway::v1::model_library_service_server::ModelLibraryService;
use pumas_proto::gateway::v1::*;
use pumas_proto::{fetch, index, mapper};
use pumas_runtime::{ApiError, BoxStream};
use tonic::{Request, Response, Status};

use crate::SERVICE_NAME;
use crate::backends::Backends;
use crate::config::LOCAL_MAPPER;
use crate::passthrough::BackendClient;

type IndexClient = index::v1::index_service_client::IndexServiceClient<pumas_runtime::client::TracedChannel>;
type FetchClient = fetch::v1::fetch_service_client::FetchServiceClient<pumas_runtime::client::TracedChannel>;
type MapperClient =
    mapper::v1::mapper_service_client::MapperServiceClient<pumas_runtime::client::TracedChannel>;

/// The gateway's gRPC face.
pub(crate) struct GatewayApi {
    info: ServiceInfo,
    backends: Arc<Backends>,
    /// The apps each mapper last reported, so that while it is down the projection can still
    /// say "unknown" per app rather than only per host.
    known_apps: std::sync::RwLock<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
}

impl GatewayApi {
    pub(crate) fn new(backends: Arc<Backends>, start_time: SystemTime) -> Self {
        Self {
            info: pumas_runtime::info::service_info("gateway", &[SERVICE_NAME], start_time),
            backends,
            known_apps: Default::default(),
        }
    }

    pub(crate) fn index(&self) -> BackendClient<IndexClient> {
        BackendClient::new("index", self.backends.index.clone())
    }

    pub(crate) fn fetch(&self) -> BackendClient<FetchClient> {
        BackendClient::new("fetch", self.backends.fetch.clone())
    }

    /// The named mapper (the local one when `name` is empty), or NOT_FOUND listing the others.
    fn mapper(&self, name: &str) -> Result<BackendClient<MapperClient>, Status> {
        let name = if name.is_empty() { LOCAL_MAPPER } else { name };
        self.backends
            .mappers
            .get(name)
            .map(|c| BackendClient::new("mapper", c.clone()))
            .ok_or_else(|| {
                let known: Vec<&str> = self.backends.mappers.keys().map(String::as_str).collect();
                Status::from(ApiError::NotFound {
                    resource_type: "mapper".to_owned(),
                    name: format!("{name} (configured: {})", known.join(", ")),
                })
            })
    }
}

impl GatewayApi {
    /// Resolves models in request order from one GetDependencyData call.
    async fn resolve_many(
        &self,
        model_ids: Vec<String>,
        platform: &str,
        backend: &str,
    ) -> Result<Vec<BatchResolveItem>, Status> {
        let data = self
            .index()
            .call(
                index::v1::GetDependencyDataRequest {
                    model_ids: model_ids.clone(),
                },
                async |mut c, req| c.get_dependency_data(req).await,
            )
            .await?;
        if data.dependency_contract_version != DEPENDENCY_CONTRACT_VERSION {
            return Err(ApiError::ContractMismatch {
                backend: "index".to_owned(),
                found: data.dependency_contract_version,
                expected: DEPENDENCY_CONTRACT_VERSION,
            }
            .into());
        }
        let profiles: std::collections::BTreeMap<String, pumas_proto::common::v1::DependencyProfile> = data
            .profiles
            .into_iter()
            .map(|p| (format!("{}@{}", p.profile_id, p.version), p))
            .collect();
        let by_id: std::collections::BTreeMap<String, index::v1::ModelDependencyData> = data
            .models
            .into_iter()
            .filter_map(|m| m.model.as_ref().map(|r| r.model_id.clone()).map(|id| (id, m)))
            .collect();
        Ok(model_ids
            .into_iter()
            .map(|id| match by_id.get(&id) {
                Some(m) => {
                    let input = crate::resolve::Input {
                        model_id: &id,
                        declares_no_dependencies: m
                            .model
                            .as_ref()
                            .is_some_and(|r| r.declares_no_dependencies),
                        model_type: m
                            .model
                            .as_ref()
                            .and_then(|r| pumas_proto::names::model_type(r.model_type))
                            .unwrap_or("unknown"),
                        bindings: &m.bindings,
                        profiles: &profiles,
                    };
                    BatchResolveItem {
                        requirements: Some(crate::resolve::resolve(&input, platform, backend)),
                        model_id: id,
                        error: None,
                    }
                }
                None => BatchResolveItem {
                    error: Some(pumas_runtime::error::error_status(
                        tonic::Code::NotFound,
                        format!("model `{id}` not found"),
                    )),
                    model_id: id,
                    requirements: None,
                },
            })
            .collect())
    }

    /// Hub results with what the library knows of them: already in it (same repo at the same
    /// commit), or downloading (a live download of that repo). Each lookup is best effort: when
    /// the index or fetch cannot say, the flags stay false.
    async fn hub_results(&self, summaries: Vec<fetch::v1::HubModelSummary>) -> Vec<HubSearchResult> {
        let live_states = [
            fetch::v1::DownloadState::Queued as i32,
            fetch::v1::DownloadState::Running as i32,
            fetch::v1::DownloadState::Paused as i32,
            fetch::v1::DownloadState::Committing as i32,
        ];
        let live_downloads = fetch::v1::ListDownloadsRequest {
            states: live_states.to_vec(),
            page_size: 1000,
            page_token: String::new(),
        };
        let downloads = self
            .fetch()
            .call(live_downloads, async |mut c, req| c.list_downloads(req).await)
            .await
            .map(|r| r.downloads)
            .unwrap_or_default();
        let lookups = summaries.iter().map(|summary| {
            let index = self.index();
            let filter = pumas_proto::common::v1::ModelFilter {
                repo_id: summary.repo_id.clone(),
                ..Default::default()
            };
            async move {
                let request = index::v1::ListModelsRequest {
                    filter: Some(filter),
                    page_size: 50,
                    ..Default::default()
                };
                index
                    .call(request, async |mut c, req| c.list_models(req).await)
                    .await
                    .map(|r| r.models)
                    .unwrap_or_default()
            }
        });
        let local = futures_util::future::join_all(lookups).await;
        summaries
            .into_iter()
            .zip(local)
            .map(|(summary, models)| {
                let hub_source = |m: &pumas_proto::common::v1::ModelRecord| match m
                    .source
                    .as_ref()
                    .and_then(|s| s.source.as_ref())
                {
                    Some(pumas_proto::common::v1::model_source::Source::Hub(h)) => h.clone(),
                    _ => Default::default(),
                };
                let at_hub_commit = |m: &pumas_proto::common::v1::ModelRecord| {
                    summary.sha.is_empty() || hub_source(m).commit_sha == summary.sha
                };
                let same_commit = models.iter().find(|m| at_hub_commit(m));
                let library_selections = models
                    .iter()
                    .map(|m| {
                        let h = hub_source(m);
                        LibrarySelection {
                            model_id: m.model_id.clone(),
                            selection_label: h.selection_label,
                            whole_repository: h.whole_repository,
                            commit_sha: h.commit_sha,
                            at_hub_commit: at_hub_commit(m),
                        }
                    })
                    .collect();
                let download = downloads.iter().find(|d| d.repo_id == summary.repo_id).cloned();
                HubSearchResult {
                    in_library: same_commit.is_some(),
                    library_model_id: same_commit
                        .or(models.first())
                        .map(|m| m.model_id.clone())
                        .or_else(|| {
                            download
                                .as_ref()
                                .map(|d| d.model_id.clone())
                                .filter(|id| !id.is_empty())
                        })
                        .unwrap_or_default(),
                    downloading: download.is_some(),
                    download,
                    summary: Some(summary),
                    library_selections,
                }
            })
            .collect()
    }

    /// Adds each mapper's link state to views; a mapper that cannot answer is listed as
    /// unavailable and its state is UNKNOWN.
    async fn with_link_states(&self, mut views: Vec<ModelView>) -> Vec<ModelView> {
        if views.is_empty() {
            return views;
        }
        let ids: Vec<String> = views
            .iter()
            .filter_map(|v| v.model.as_ref().map(|m| m.model_id.clone()))
            .collect();
        let calls = self.backends.mappers.iter().map(|(name, client)| {
            let mapper = BackendClient::new("mapper", client.clone());
            let request = mapper::v1::GetModelLinkStatesRequest {
                model_ids: ids.clone(),
            };
            async move {
                let answer = mapper
                    .call(request, async |mut c, req| c.get_model_link_states(req).await)
                    .await;
                (name.clone(), answer)
            }
        });
        for (name, answer) in futures_util::future::join_all(calls).await {
            match answer {
                Ok(answer) => {
                    let apps: std::collections::BTreeSet<String> = answer
                        .models
                        .iter()
                        .flat_map(|m| m.apps.iter().map(|a| a.app.clone()))
                        .collect();
                    if !apps.is_empty()
                        && let Ok(mut known) = self.known_apps.write()
                    {
                        known.insert(name.clone(), apps);
                    }
                    for states in answer.models {
                        if let Some(view) = views
                            .iter_mut()
                            .find(|v| v.model.as_ref().is_some_and(|m| m.model_id == states.model_id))
                        {
                            for app in states.apps {
                                view.link_states.push(ModelLinkState {
                                    mapper: name.clone(),
                                    app: app.app,
                                    state: app.state,
                                    target_paths: app.target_paths,
                                });
                            }
                        }
                    }
                }
                Err(_) => {
                    // One UNKNOWN per app last seen on that host; an empty app name when it
                    // has never answered.
                    let apps: Vec<String> = self
                        .known_apps
                        .read()
                        .ok()
                        .and_then(|known| known.get(&name).map(|a| a.iter().cloned().collect()))
                        .unwrap_or_else(|| vec![String::new()]);
                    for view in &mut views {
                        view.unavailable_mappers.push(name.clone());
                        for app in &apps {
                            view.link_states.push(ModelLinkState {
                                mapper: name.clone(),
                                app: app.clone(),
                                state: mapper::v1::LinkState::Unknown as i32,
                                target_paths: Vec::new(),
                            });
                        }
                    }
                }
            }
        }
        views
    }
}

/// A model view from an index record. Link states come from the mappers once they report them.
fn view(model: pumas_proto::common::v1::ModelRecord) -> ModelView {
    ModelView {
        model: Some(model),
        link_states: Vec::new(),
        unavailable_mappers: Vec::new(),
        dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
    }
}

#[tonic::async_trait]
impl ModelLibraryService for GatewayApi {
    type WatchImportJobStream = BoxStream<WatchImportJobResponse>;
    type WatchDownloadStream = BoxStream<WatchDownloadResponse>;
    type WatchMappingJobStream = BoxStream<WatchMappingJobResponse>;

    #[tracing::instrument(skip_all)]
    async fn get_service_info(
        &self,
        _request: Request<GetServiceInfoRequest>,
    ) -> Result<Response<GetServiceInfoResponse>, Status> {
        Ok(Response::new(GetServiceInfoResponse {
            info: Some(self.info.clone()),
            backends: self.backends.status(),
        }))
    }

    #[tracing::instrument(skip_all, fields(query = %request.get_ref().query, include_hub = request.get_ref().include_hub))]
    async fn search_models(
        &self,
        request: Request<SearchModelsRequest>,
    ) -> Result<Response<SearchModelsResponse>, Status> {
        let r = request.into_inner();
        let search = index::v1::SearchModelsRequest {
            query: r.query.clone(),
            filter: r.filters.clone(),
            order_by: r.order_by,
            page_size: r.page_size,
            page_token: r.page_token.clone(),
        };
        let index = self.index();
        let local = index.call(search, async |mut c, req| c.search_models(req).await);
        // Hub results only with the first page: hub paging is the hub's own (SearchHub).
        let want_hub = r.include_hub && r.page_token.is_empty() && !r.query.trim().is_empty();
        let hub = async {
            if !want_hub {
                return None;
            }
            let search = fetch::v1::SearchHubRequest {
                query: r.query.clone(),
                page_size: 20,
                ..Default::default()
            };
            Some(
                self.fetch()
                    .call(search, async |mut c, req| c.search_hub(req).await)
                    .await,
            )
        };
        let (local, hub) = tokio::join!(local, hub);
        let local = local?;
        let scores: Vec<f64> = local.hits.iter().map(|h| h.score).collect();
        let views: Vec<ModelView> = local.hits.into_iter().filter_map(|h| h.model.map(view)).collect();
        // Link states only when asked: a results page needs no call beyond the index.
        let views = if r.include_link_states {
            self.with_link_states(views).await
        } else {
            views
        };
        let mut results: Vec<SearchResult> = views
            .into_iter()
            .zip(scores)
            .map(|(v, score)| SearchResult {
                score,
                result: Some(search_result::Result::Local(v)),
            })
            .collect();
        let (hub_results_state, hub_unavailable_reason) = match hub {
            None => (HubResultsState::Unspecified, String::new()),
            Some(Err(status)) => (HubResultsState::Unavailable, status.message().to_owned()),
            Some(Ok(answer)) => {
                let hub = self.hub_results(answer.models).await;
                for (rank, result) in hub.into_iter().enumerate() {
                    // Hub results rank after local ones, in the hub's order.
                    let score = -(rank as f64) - 1.0;
                    results.push(SearchResult {
                        score,
                        result: Some(search_result::Result::Hub(result)),
                    });
                }
                (
                    if answer.stale {
                        HubResultsState::Stale
                    } else {
                        HubResultsState::Included
                    },
                    String::new(),
                )
            }
        };
        Ok(Response::new(SearchModelsResponse {
            results,
            next_page_token: local.next_page_token,
            hub_results_state: hub_results_state as i32,
            hub_unavailable_reason,
            local_total_size: local.total_size,
            local_total_size_capped: local.total_size_capped,
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let r = request.into_inner();
        let include_link_states = r.include_link_states;
        let answer = self
            .index()
            .call(
                index::v1::ListModelsRequest {
                    filter: r.filters,
                    order_by: r.order_by,
                    page_size: r.page_size,
                    page_token: r.page_token,
                },
                async |mut c, req| c.list_models(req).await,
            )
            .await?;
        let models: Vec<ModelView> = answer.models.into_iter().map(view).collect();
        let models = if include_link_states {
            self.with_link_states(models).await
        } else {
            models
        };
        Ok(Response::new(ListModelsResponse {
            models,
            next_page_token: answer.next_page_token,
            total_size: answer.total_size,
            total_size_capped: answer.total_size_capped,
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn get_model(
        &self,
        request: Request<GetModelRequest>,
    ) -> Result<Response<GetModelResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .index()
            .call(
                index::v1::GetModelRequest {
                    model_id: r.model_id,
                    include_chat_template: r.include_chat_template,
                    include_preview: r.include_preview,
                },
                async |mut c, req| c.get_model(req).await,
            )
            .await?;
        let views = self
            .with_link_states(answer.model.map(view).into_iter().collect())
            .await;
        Ok(Response::new(GetModelResponse {
            model: views.into_iter().next(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_model_metadata(
        &self,
        request: Request<UpdateModelMetadataRequest>,
    ) -> Result<Response<UpdateModelMetadataResponse>, Status> {
        let update = request
            .into_inner()
            .update
            .ok_or_else(|| Status::from(ApiError::invalid("update", "is required")))?;
        let answer = self
            .index()
            .call(update, async |mut c, req| c.update_model_metadata(req).await)
            .await?;
        Ok(Response::new(UpdateModelMetadataResponse { model: answer.model }))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn delete_model(
        &self,
        request: Request<DeleteModelRequest>,
    ) -> Result<Response<DeleteModelResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .index()
            .call(
                index::v1::DeleteModelRequest {
                    model_id: r.model_id,
                    force: r.force,
                    request_id: r.request_id,
                },
                async |mut c, req| c.delete_model(req).await,
            )
            .await?;
        Ok(Response::new(DeleteModelResponse {
            freed_bytes: answer.freed_bytes,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn import_models(
        &self,
        request: Request<ImportModelsRequest>,
    ) -> Result<Response<ImportModelsResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .index()
            .call(
                index::v1::ImportModelsRequest {
                    paths: r.paths,
                    mode: r.mode,
                    model_type: r.model_type,
                    family: r.family,
                    display_name: r.display_name,
                    tags: r.tags,
                    request_id: r.request_id,
                },
                async |mut c, req| c.import_models(req).await,
            )
            .await?;
        Ok(Response::new(ImportModelsResponse { job: answer.job }))
    }

    #[tracing::instrument(skip_all)]
    async fn reindex(&self, request: Request<ReindexRequest>) -> Result<Response<ReindexResponse>, Status> {
        let request_id = request.into_inner().request_id;
        let answer = self
            .index()
            .call(index::v1::ReindexRequest { request_id }, async |mut c, req| {
                c.reindex(req).await
            })
            .await?;
        Ok(Response::new(ReindexResponse { job: answer.job }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn get_import_job(
        &self,
        request: Request<GetImportJobRequest>,
    ) -> Result<Response<GetImportJobResponse>, Status> {
        let job_id = request.into_inner().job_id;
        let answer = self
            .index()
            .call(index::v1::GetJobRequest { job_id }, async |mut c, req| {
                c.get_job(req).await
            })
            .await?;
        Ok(Response::new(GetImportJobResponse { job: answer.job }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn watch_import_job(
        &self,
        request: Request<WatchImportJobRequest>,
    ) -> Result<Response<Self::WatchImportJobStream>, Status> {
        let job_id = request.into_inner().job_id;
        let stream = self
            .index()
            .watch(
                index::v1::WatchJobRequest { job_id },
                async |mut c, req| c.watch_job(req).await,
                |u| WatchImportJobResponse { job: u.job },
            )
            .await?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all)]
    async fn search_hub(
        &self,
        request: Request<SearchHubRequest>,
    ) -> Result<Response<SearchHubResponse>, Status> {
        let search = request.into_inner().search.unwrap_or_default();
        let answer = self
            .fetch()
            .call(search, async |mut c, req| c.search_hub(req).await)
            .await?;
        Ok(Response::new(SearchHubResponse {
            results: self.hub_results(answer.models).await,
            next_page_token: answer.next_page_token,
            from_cache: answer.from_cache,
            stale: answer.stale,
        }))
    }

    #[tracing::instrument(skip_all, fields(repo_id = %request.get_ref().repo_id))]
    async fn start_download(
        &self,
        request: Request<StartDownloadRequest>,
    ) -> Result<Response<StartDownloadResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .fetch()
            .call(
                fetch::v1::StartDownloadRequest {
                    repo_id: r.repo_id,
                    revision: r.revision,
                    selection: r.selection,
                    model_type: r.model_type,
                    family: r.family,
                    priority: r.priority,
                    request_id: r.request_id,
                    update_model_id: r.update_model_id,
                },
                async |mut c, req| c.start_download(req).await,
            )
            .await?;
        Ok(Response::new(StartDownloadResponse {
            download: answer.download,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_download(
        &self,
        request: Request<GetDownloadRequest>,
    ) -> Result<Response<GetDownloadResponse>, Status> {
        let download_id = request.into_inner().download_id;
        let answer = self
            .fetch()
            .call(
                fetch::v1::GetDownloadRequest { download_id },
                async |mut c, req| c.get_download(req).await,
            )
            .await?;
        Ok(Response::new(GetDownloadResponse {
            download: answer.download,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_downloads(
        &self,
        request: Request<ListDownloadsRequest>,
    ) -> Result<Response<ListDownloadsResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .fetch()
            .call(
                fetch::v1::ListDownloadsRequest {
                    states: r.states,
                    page_size: r.page_size,
                    page_token: r.page_token,
                },
                async |mut c, req| c.list_downloads(req).await,
            )
            .await?;
        Ok(Response::new(ListDownloadsResponse {
            downloads: answer.downloads,
            next_page_token: answer.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn watch_download(
        &self,
        request: Request<WatchDownloadRequest>,
    ) -> Result<Response<Self::WatchDownloadStream>, Status> {
        let download_id = request.into_inner().download_id;
        let stream = self
            .fetch()
            .watch(
                fetch::v1::WatchDownloadRequest { download_id },
                async |mut c, req| c.watch_download(req).await,
                |u| WatchDownloadResponse { download: u.download },
            )
            .await?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all)]
    async fn cancel_download(
        &self,
        request: Request<CancelDownloadRequest>,
    ) -> Result<Response<CancelDownloadResponse>, Status> {
        let download_id = request.into_inner().download_id;
        let answer = self
            .fetch()
            .call(
                fetch::v1::CancelDownloadRequest { download_id },
                async |mut c, req| c.cancel_download(req).await,
            )
            .await?;
        Ok(Response::new(CancelDownloadResponse {
            download: answer.download,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn pause_download(
        &self,
        request: Request<PauseDownloadRequest>,
    ) -> Result<Response<PauseDownloadResponse>, Status> {
        let download_id = request.into_inner().download_id;
        let answer = self
            .fetch()
            .call(
                fetch::v1::PauseDownloadRequest { download_id },
                async |mut c, req| c.pause_download(req).await,
            )
            .await?;
        Ok(Response::new(PauseDownloadResponse {
            download: answer.download,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn resume_download(
        &self,
        request: Request<ResumeDownloadRequest>,
    ) -> Result<Response<ResumeDownloadResponse>, Status> {
        let download_id = request.into_inner().download_id;
        let answer = self
            .fetch()
            .call(
                fetch::v1::ResumeDownloadRequest { download_id },
                async |mut c, req| c.resume_download(req).await,
            )
            .await?;
        Ok(Response::new(ResumeDownloadResponse {
            download: answer.download,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_download_priority(
        &self,
        request: Request<SetDownloadPriorityRequest>,
    ) -> Result<Response<SetDownloadPriorityResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .fetch()
            .call(
                fetch::v1::SetDownloadPriorityRequest {
                    download_id: r.download_id,
                    priority: r.priority,
                },
                async |mut c, req| c.set_download_priority(req).await,
            )
            .await?;
        Ok(Response::new(SetDownloadPriorityResponse {
            download: answer.download,
        }))
    }

    #[tracing::instrument(skip_all, fields(repo_id = %request.get_ref().repo_id))]
    async fn get_hub_model(
        &self,
        request: Request<GetHubModelRequest>,
    ) -> Result<Response<GetHubModelResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .fetch()
            .call(
                fetch::v1::GetHubModelRequest {
                    repo_id: r.repo_id,
                    revision: r.revision,
                },
                async |mut c, req| c.get_hub_model(req).await,
            )
            .await?;
        Ok(Response::new(GetHubModelResponse { model: answer.model }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_apps(
        &self,
        request: Request<ListAppsRequest>,
    ) -> Result<Response<ListAppsResponse>, Status> {
        let wanted = request.into_inner().mapper;
        if !wanted.is_empty() {
            self.mapper(&wanted)?;
        }
        let mut mappers = Vec::new();
        for (name, client) in &self.backends.mappers {
            if !wanted.is_empty() && *name != wanted {
                continue;
            }
            let mapper = BackendClient::new("mapper", client.clone());
            let answer = mapper
                .call(mapper::v1::ListAppsRequest {}, async |mut c, req| {
                    c.list_apps(req).await
                })
                .await;
            let entry = match answer {
                Ok(answer) => MapperApps {
                    mapper: name.clone(),
                    apps: answer.apps,
                    unavailable: false,
                    reason: String::new(),
                },
                Err(status) => MapperApps {
                    mapper: name.clone(),
                    apps: Vec::new(),
                    unavailable: true,
                    reason: status.message().to_owned(),
                },
            };
            mappers.push(entry);
        }
        Ok(Response::new(ListAppsResponse { mappers }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn preview_mapping(
        &self,
        request: Request<PreviewMappingRequest>,
    ) -> Result<Response<PreviewMappingResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .mapper(&r.mapper)?
            .call(
                mapper::v1::PreviewMappingRequest {
                    app: r.app,
                    include_unchanged: r.include_unchanged,
                },
                async |mut c, req| c.preview_mapping(req).await,
            )
            .await?;
        Ok(Response::new(PreviewMappingResponse { plan: answer.plan }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn apply_mapping(
        &self,
        request: Request<ApplyMappingRequest>,
    ) -> Result<Response<ApplyMappingResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .mapper(&r.mapper)?
            .call(
                mapper::v1::ApplyMappingRequest {
                    app: r.app,
                    replace_conflicts: r.replace_conflicts,
                    request_id: r.request_id,
                },
                async |mut c, req| c.apply_mapping(req).await,
            )
            .await?;
        Ok(Response::new(ApplyMappingResponse { job: answer.job }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn repair_mapping(
        &self,
        request: Request<RepairMappingRequest>,
    ) -> Result<Response<RepairMappingResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .mapper(&r.mapper)?
            .call(
                mapper::v1::RepairMappingRequest {
                    app: r.app,
                    request_id: String::new(),
                },
                async |mut c, req| c.repair_mapping(req).await,
            )
            .await?;
        Ok(Response::new(RepairMappingResponse { job: answer.job }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn preview_adoption(
        &self,
        request: Request<PreviewAdoptionRequest>,
    ) -> Result<Response<PreviewAdoptionResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .mapper(&r.mapper)?
            .call(
                mapper::v1::PreviewAdoptionRequest { app: r.app },
                async |mut c, req| c.preview_adoption(req).await,
            )
            .await?;
        Ok(Response::new(PreviewAdoptionResponse {
            candidates: answer.candidates,
            reclaimable_bytes: answer.reclaimable_bytes,
        }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn start_adoption(
        &self,
        request: Request<StartAdoptionRequest>,
    ) -> Result<Response<StartAdoptionResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .mapper(&r.mapper)?
            .call(
                mapper::v1::StartAdoptionRequest {
                    app: r.app,
                    request_id: String::new(),
                },
                async |mut c, req| c.start_adoption(req).await,
            )
            .await?;
        Ok(Response::new(StartAdoptionResponse { job: answer.job }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn unmap(&self, request: Request<UnmapRequest>) -> Result<Response<UnmapResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .mapper(&r.mapper)?
            .call(
                mapper::v1::UnmapRequest {
                    app: r.app,
                    request_id: String::new(),
                },
                async |mut c, req| c.unmap(req).await,
            )
            .await?;
        Ok(Response::new(UnmapResponse { job: answer.job }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn watch_mapping_job(
        &self,
        request: Request<WatchMappingJobRequest>,
    ) -> Result<Response<Self::WatchMappingJobStream>, Status> {
        let r = request.into_inner();
        let stream = self
            .mapper(&r.mapper)?
            .watch(
                mapper::v1::WatchMappingJobRequest { job_id: r.job_id },
                async |mut c, req| c.watch_mapping_job(req).await,
                |u| WatchMappingJobResponse { job: u.job },
            )
            .await?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id, backend = %request.get_ref().backend_key))]
    async fn resolve_model_dependency_requirements(
        &self,
        request: Request<ResolveModelDependencyRequirementsRequest>,
    ) -> Result<Response<ResolveModelDependencyRequirementsResponse>, Status> {
        let r = request.into_inner();
        crate::dependencies::check_expected_version(r.expected_dependency_contract_version)?;
        let platform = crate::resolve::platform_key(r.platform_context.as_ref())
            .map_err(|(field, reason)| Status::from(ApiError::invalid(field, reason)))?;
        if r.model_id.is_empty() {
            return Err(ApiError::invalid("model_id", "is required").into());
        }
        let mut items = self
            .resolve_many(vec![r.model_id.clone()], &platform, &r.backend_key)
            .await?;
        match items.pop() {
            Some(BatchResolveItem {
                requirements: Some(requirements),
                ..
            }) => Ok(Response::new(ResolveModelDependencyRequirementsResponse {
                requirements: Some(requirements),
            })),
            _ => Err(ApiError::not_found("model", r.model_id).into()),
        }
    }

    #[tracing::instrument(skip_all, fields(models = request.get_ref().model_ids.len()))]
    async fn batch_resolve_model_dependency_requirements(
        &self,
        request: Request<BatchResolveModelDependencyRequirementsRequest>,
    ) -> Result<Response<BatchResolveModelDependencyRequirementsResponse>, Status> {
        let r = request.into_inner();
        crate::dependencies::check_expected_version(r.expected_dependency_contract_version)?;
        let platform = crate::resolve::platform_key(r.platform_context.as_ref())
            .map_err(|(field, reason)| Status::from(ApiError::invalid(field, reason)))?;
        if r.model_ids.len() > 1000 {
            return Err(ApiError::invalid("model_ids", "at most 1000 models per call").into());
        }
        let items = self.resolve_many(r.model_ids, &platform, &r.backend_key).await?;
        Ok(Response::new(BatchResolveModelDependencyRequirementsResponse {
            items,
            dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn put_dependency_profile(
        &self,
        request: Request<PutDependencyProfileRequest>,
    ) -> Result<Response<PutDependencyProfileResponse>, Status> {
        self.put_profile(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(profile_id = %request.get_ref().profile_id))]
    async fn get_dependency_profile(
        &self,
        request: Request<GetDependencyProfileRequest>,
    ) -> Result<Response<GetDependencyProfileResponse>, Status> {
        self.get_profile(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn list_dependency_profiles(
        &self,
        request: Request<ListDependencyProfilesRequest>,
    ) -> Result<Response<ListDependencyProfilesResponse>, Status> {
        self.list_profiles(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(profile_id = %request.get_ref().profile_id))]
    async fn delete_dependency_profile(
        &self,
        request: Request<DeleteDependencyProfileRequest>,
    ) -> Result<Response<DeleteDependencyProfileResponse>, Status> {
        self.delete_profile(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn put_model_dependency_binding(
        &self,
        request: Request<PutModelDependencyBindingRequest>,
    ) -> Result<Response<PutModelDependencyBindingResponse>, Status> {
        self.put_binding(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn list_model_dependency_bindings(
        &self,
        request: Request<ListModelDependencyBindingsRequest>,
    ) -> Result<Response<ListModelDependencyBindingsResponse>, Status> {
        self.list_bindings(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(binding_id = %request.get_ref().binding_id))]
    async fn delete_model_dependency_binding(
        &self,
        request: Request<DeleteModelDependencyBindingRequest>,
    ) -> Result<Response<DeleteModelDependencyBindingResponse>, Status> {
        self.delete_binding(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn audit_dependencies(
        &self,
        _request: Request<AuditDependenciesRequest>,
    ) -> Result<Response<AuditDependenciesResponse>, Status> {
        self.audit().await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(models = request.get_ref().model_ids.len()))]
    async fn refresh_hub_metadata(
        &self,
        request: Request<RefreshHubMetadataRequest>,
    ) -> Result<Response<RefreshHubMetadataResponse>, Status> {
        self.refresh_from_hub(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(models = request.get_ref().model_ids.len()))]
    async fn check_updates(
        &self,
        request: Request<CheckUpdatesRequest>,
    ) -> Result<Response<CheckUpdatesResponse>, Status> {
        self.check_hub_updates(request.into_inner())
            .await
            .map(Response::new)
    }
}
