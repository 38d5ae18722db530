//! A stand-in index for tests that need one behaving in a way the real one does not: another
//! dependency contract version, or a GetModel that takes its time.

use std::time::Duration;

use pumas_proto::index::v1::index_service_server::{IndexService, IndexServiceServer};
use pumas_proto::index::v1::*;
use pumas_runtime::{BoxStream, Shutdown};
use tonic::{Request, Response, Status};

use crate::INDEX_SERVICE;

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct FakeIndex {
    /// The dependency contract version it reports.
    pub contract_version: u32,
    /// How long GetModel takes before it answers NOT_FOUND.
    pub get_model_delay: Duration,
}

impl Default for FakeIndex {
    fn default() -> Self {
        Self {
            contract_version: pumas_proto::DEPENDENCY_CONTRACT_VERSION,
            get_model_delay: Duration::ZERO,
        }
    }
}

/// A running fake.
pub struct RunningFake {
    /// Its address.
    pub addr: String,
    stop: Shutdown,
    task: tokio::task::JoinHandle<Result<(), pumas_runtime::ServeError>>,
}

impl RunningFake {
    /// Stops it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.trigger();
        self.task.await??;
        Ok(())
    }
}

impl FakeIndex {
    /// Serves it on 127.0.0.1:0.
    pub async fn start(self) -> anyhow::Result<RunningFake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (_health, routes) = pumas_runtime::standard_routes(INDEX_SERVICE)?;
        let routes = routes.add_service(IndexServiceServer::new(self));
        let stop = Shutdown::new();
        let task = tokio::spawn(pumas_runtime::serve(listener, routes, stop.wait()));
        Ok(RunningFake { addr, stop, task })
    }
}

#[tonic::async_trait]
impl IndexService for FakeIndex {
    type WatchJobStream = BoxStream<WatchJobResponse>;
    type WatchChangesStream = BoxStream<WatchChangesResponse>;

    async fn get_service_info(
        &self,
        _request: Request<GetServiceInfoRequest>,
    ) -> Result<Response<GetServiceInfoResponse>, Status> {
        let mut info =
            pumas_runtime::info::service_info("index", &[INDEX_SERVICE], std::time::SystemTime::now());
        info.dependency_contract_version = self.contract_version;
        Ok(Response::new(GetServiceInfoResponse {
            info: Some(info),
            ..Default::default()
        }))
    }

    async fn get_model(
        &self,
        request: Request<GetModelRequest>,
    ) -> Result<Response<GetModelResponse>, Status> {
        tokio::time::sleep(self.get_model_delay).await;
        Err(pumas_runtime::ApiError::not_found("model", request.into_inner().model_id).into())
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Err(crate::fakes::not_faked("ListModels"))
    }

    async fn search_models(
        &self,
        _: Request<SearchModelsRequest>,
    ) -> Result<Response<SearchModelsResponse>, Status> {
        Err(crate::fakes::not_faked("SearchModels"))
    }

    async fn batch_get_models(
        &self,
        _: Request<BatchGetModelsRequest>,
    ) -> Result<Response<BatchGetModelsResponse>, Status> {
        Err(crate::fakes::not_faked("BatchGetModels"))
    }

    async fn find_models_by_hash(
        &self,
        _: Request<FindModelsByHashRequest>,
    ) -> Result<Response<FindModelsByHashResponse>, Status> {
        Err(crate::fakes::not_faked("FindModelsByHash"))
    }

    async fn update_model_metadata(
        &self,
        _: Request<UpdateModelMetadataRequest>,
    ) -> Result<Response<UpdateModelMetadataResponse>, Status> {
        Err(crate::fakes::not_faked("UpdateModelMetadata"))
    }

    async fn delete_model(
        &self,
        _: Request<DeleteModelRequest>,
    ) -> Result<Response<DeleteModelResponse>, Status> {
        Err(crate::fakes::not_faked("DeleteModel"))
    }

    async fn import_models(
        &self,
        _: Request<ImportModelsRequest>,
    ) -> Result<Response<ImportModelsResponse>, Status> {
        Err(crate::fakes::not_faked("ImportModels"))
    }

    async fn reindex(&self, _: Request<ReindexRequest>) -> Result<Response<ReindexResponse>, Status> {
        Err(crate::fakes::not_faked("Reindex"))
    }

    async fn verify_models(
        &self,
        _: Request<VerifyModelsRequest>,
    ) -> Result<Response<VerifyModelsResponse>, Status> {
        Err(crate::fakes::not_faked("VerifyModels"))
    }

    async fn get_job(&self, _: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        Err(crate::fakes::not_faked("GetJob"))
    }

    async fn list_jobs(&self, _: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        Err(crate::fakes::not_faked("ListJobs"))
    }

    async fn watch_job(&self, _: Request<WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        Err(crate::fakes::not_faked("WatchJob"))
    }

    async fn cancel_job(&self, _: Request<CancelJobRequest>) -> Result<Response<CancelJobResponse>, Status> {
        Err(crate::fakes::not_faked("CancelJob"))
    }

    async fn watch_changes(
        &self,
        _: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        Err(crate::fakes::not_faked("WatchChanges"))
    }

    async fn put_dependency_profile(
        &self,
        _: Request<PutDependencyProfileRequest>,
    ) -> Result<Response<PutDependencyProfileResponse>, Status> {
        Err(crate::fakes::not_faked("PutDependencyProfile"))
    }

    async fn delete_dependency_profile(
        &self,
        _: Request<DeleteDependencyProfileRequest>,
    ) -> Result<Response<DeleteDependencyProfileResponse>, Status> {
        Err(crate::fakes::not_faked("DeleteDependencyProfile"))
    }

    async fn get_dependency_profile(
        &self,
        _: Request<GetDependencyProfileRequest>,
    ) -> Result<Response<GetDependencyProfileResponse>, Status> {
        Err(crate::fakes::not_faked("GetDependencyProfile"))
    }

    async fn list_dependency_profiles(
        &self,
        _: Request<ListDependencyProfilesRequest>,
    ) -> Result<Response<ListDependencyProfilesResponse>, Status> {
        Err(crate::fakes::not_faked("ListDependencyProfiles"))
    }

    async fn put_model_dependency_binding(
        &self,
        _: Request<PutModelDependencyBindingRequest>,
    ) -> Result<Response<PutModelDependencyBindingResponse>, Status> {
        Err(crate::fakes::not_faked("PutModelDependencyBinding"))
    }

    async fn list_model_dependency_bindings(
        &self,
        _: Request<ListModelDependencyBindingsRequest>,
    ) -> Result<Response<ListModelDependencyBindingsResponse>, Status> {
        Err(crate::fakes::not_faked("ListModelDependencyBindings"))
    }

    async fn delete_model_dependency_binding(
        &self,
        _: Request<DeleteModelDependencyBindingRequest>,
    ) -> Result<Response<DeleteModelDependencyBindingResponse>, Status> {
        Err(crate::fakes::not_faked("DeleteModelDependencyBinding"))
    }

    async fn get_dependency_data(
        &self,
        _: Request<GetDependencyDataRequest>,
    ) -> Result<Response<GetDependencyDataResponse>, Status> {
        Err(crate::fakes::not_faked("GetDependencyData"))
    }

    async fn begin_model_download(
        &self,
        _: Request<BeginModelDownloadRequest>,
    ) -> Result<Response<BeginModelDownloadResponse>, Status> {
        Err(crate::fakes::not_faked("BeginModelDownload"))
    }

    async fn commit_model_download(
        &self,
        _: Request<CommitModelDownloadRequest>,
    ) -> Result<Response<CommitModelDownloadResponse>, Status> {
        Err(crate::fakes::not_faked("CommitModelDownload"))
    }

    async fn abort_model_download(
        &self,
        _: Request<AbortModelDownloadRequest>,
    ) -> Result<Response<AbortModelDownloadResponse>, Status> {
        Err(crate::fakes::not_faked("AbortModelDownload"))
    }

    async fn set_hub_metadata(
        &self,
        _: Request<SetHubMetadataRequest>,
    ) -> Result<Response<SetHubMetadataResponse>, Status> {
        Err(crate::fakes::not_faked("SetHubMetadata"))
    }

    async fn replace_link_holds(
        &self,
        _: Request<ReplaceLinkHoldsRequest>,
    ) -> Result<Response<ReplaceLinkHoldsResponse>, Status> {
        Err(crate::fakes::not_faked("ReplaceLinkHolds"))
    }
}

/// A stand-in fetch service that answers hub searches and download lists from fixed data.
#[derive(Clone, Debug, Default)]
pub struct FakeFetch {
    /// What SearchHub returns.
    pub hub_models: Vec<pumas_proto::fetch::v1::HubModelSummary>,
    /// What ListDownloads returns.
    pub downloads: Vec<pumas_proto::fetch::v1::Download>,
}

impl FakeFetch {
    /// Serves it on 127.0.0.1:0.
    pub async fn start(self) -> anyhow::Result<RunningFake> {
        use pumas_proto::fetch::v1::fetch_service_server::FetchServiceServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (_health, routes) = pumas_runtime::standard_routes(crate::FETCH_SERVICE)?;
        let routes = routes.add_service(FetchServiceServer::new(self));
        let stop = Shutdown::new();
        let task = tokio::spawn(pumas_runtime::serve(listener, routes, stop.wait()));
        Ok(RunningFake { addr, stop, task })
    }
}

mod fetch_fake {
    use pumas_proto::fetch::v1::fetch_service_server::FetchService;
    use pumas_proto::fetch::v1::*;
    use pumas_runtime::BoxStream;
    use tonic::{Request, Response, Status};

    use super::FakeFetch;

    #[tonic::async_trait]
    impl FetchService for FakeFetch {
        type WatchDownloadStream = BoxStream<WatchDownloadResponse>;

        async fn get_service_info(
            &self,
            _request: Request<GetServiceInfoRequest>,
        ) -> Result<Response<GetServiceInfoResponse>, Status> {
            let info = pumas_runtime::info::service_info(
                "fetch",
                &[crate::FETCH_SERVICE],
                std::time::SystemTime::now(),
            );
            Ok(Response::new(GetServiceInfoResponse {
                info: Some(info),
                ..Default::default()
            }))
        }

        async fn search_hub(
            &self,
            _request: Request<SearchHubRequest>,
        ) -> Result<Response<SearchHubResponse>, Status> {
            Ok(Response::new(SearchHubResponse {
                models: self.hub_models.clone(),
                ..Default::default()
            }))
        }

        async fn list_downloads(
            &self,
            _request: Request<ListDownloadsRequest>,
        ) -> Result<Response<ListDownloadsResponse>, Status> {
            Ok(Response::new(ListDownloadsResponse {
                downloads: self.downloads.clone(),
                next_page_token: String::new(),
            }))
        }

        async fn get_hub_model(
            &self,
            _: Request<GetHubModelRequest>,
        ) -> Result<Response<GetHubModelResponse>, Status> {
            Err(crate::fakes::not_faked("GetHubModel"))
        }

        async fn list_hub_files(
            &self,
            _: Request<ListHubFilesRequest>,
        ) -> Result<Response<ListHubFilesResponse>, Status> {
            Err(crate::fakes::not_faked("ListHubFiles"))
        }

        async fn start_download(
            &self,
            _: Request<StartDownloadRequest>,
        ) -> Result<Response<StartDownloadResponse>, Status> {
            Err(crate::fakes::not_faked("StartDownload"))
        }

        async fn get_download(
            &self,
            _: Request<GetDownloadRequest>,
        ) -> Result<Response<GetDownloadResponse>, Status> {
            Err(crate::fakes::not_faked("GetDownload"))
        }

        async fn watch_download(
            &self,
            _: Request<WatchDownloadRequest>,
        ) -> Result<Response<Self::WatchDownloadStream>, Status> {
            Err(crate::fakes::not_faked("WatchDownload"))
        }

        async fn cancel_download(
            &self,
            _: Request<CancelDownloadRequest>,
        ) -> Result<Response<CancelDownloadResponse>, Status> {
            Err(crate::fakes::not_faked("CancelDownload"))
        }

        async fn pause_download(
            &self,
            _: Request<PauseDownloadRequest>,
        ) -> Result<Response<PauseDownloadResponse>, Status> {
            Err(crate::fakes::not_faked("PauseDownload"))
        }

        async fn resume_download(
            &self,
            _: Request<ResumeDownloadRequest>,
        ) -> Result<Response<ResumeDownloadResponse>, Status> {
            Err(crate::fakes::not_faked("ResumeDownload"))
        }

        async fn set_download_priority(
            &self,
            _: Request<SetDownloadPriorityRequest>,
        ) -> Result<Response<SetDownloadPriorityResponse>, Status> {
            Err(crate::fakes::not_faked("SetDownloadPriority"))
        }
    }
}

/// What a fake answers for an RPC it does not fake: UNIMPLEMENTED, as a real service would
/// for an RPC it does not have.
pub(crate) fn not_faked(rpc: &str) -> tonic::Status {
    pumas_runtime::ApiError::not_implemented(format!("fake/{rpc}"), "nothing").into()
}
