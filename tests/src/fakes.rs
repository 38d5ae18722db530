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

pumas_runtime::service_impl! {
    impl IndexService for FakeIndex {
        type WatchJobStream = BoxStream<WatchJobResponse>;
        type WatchChangesStream = BoxStream<WatchChangesResponse>;

        async fn get_service_info(
            &self,
            _request: Request<GetServiceInfoRequest>,
        ) -> Result<Response<GetServiceInfoResponse>, Status> {
            let mut info = pumas_runtime::info::service_info("index", &[INDEX_SERVICE], std::time::SystemTime::now());
            info.dependency_contract_version = self.contract_version;
            Ok(Response::new(GetServiceInfoResponse { info: Some(info), ..Default::default() }))
        }

        async fn get_model(&self, request: Request<GetModelRequest>) -> Result<Response<GetModelResponse>, Status> {
            tokio::time::sleep(self.get_model_delay).await;
            Err(pumas_runtime::ApiError::not_found("model", request.into_inner().model_id).into())
        }
    }
    not_built("fake", "nothing") {
        list_models "ListModels" (ListModelsRequest) -> ListModelsResponse;
        search_models "SearchModels" (SearchModelsRequest) -> SearchModelsResponse;
        batch_get_models "BatchGetModels" (BatchGetModelsRequest) -> BatchGetModelsResponse;
        find_models_by_hash "FindModelsByHash" (FindModelsByHashRequest) -> FindModelsByHashResponse;
        update_model_metadata "UpdateModelMetadata" (UpdateModelMetadataRequest) -> UpdateModelMetadataResponse;
        delete_model "DeleteModel" (DeleteModelRequest) -> DeleteModelResponse;
        import_models "ImportModels" (ImportModelsRequest) -> ImportModelsResponse;
        reindex "Reindex" (ReindexRequest) -> ReindexResponse;
        verify_models "VerifyModels" (VerifyModelsRequest) -> VerifyModelsResponse;
        get_job "GetJob" (GetJobRequest) -> GetJobResponse;
        list_jobs "ListJobs" (ListJobsRequest) -> ListJobsResponse;
        watch_job "WatchJob" (WatchJobRequest) -> Self::WatchJobStream;
        cancel_job "CancelJob" (CancelJobRequest) -> CancelJobResponse;
        watch_changes "WatchChanges" (WatchChangesRequest) -> Self::WatchChangesStream;
        put_dependency_profile "PutDependencyProfile" (PutDependencyProfileRequest) -> PutDependencyProfileResponse;
        get_dependency_profile "GetDependencyProfile" (GetDependencyProfileRequest) -> GetDependencyProfileResponse;
        list_dependency_profiles "ListDependencyProfiles" (ListDependencyProfilesRequest) -> ListDependencyProfilesResponse;
        put_model_dependency_binding "PutModelDependencyBinding" (PutModelDependencyBindingRequest) -> PutModelDependencyBindingResponse;
        list_model_dependency_bindings "ListModelDependencyBindings" (ListModelDependencyBindingsRequest) -> ListModelDependencyBindingsResponse;
        delete_model_dependency_binding "DeleteModelDependencyBinding" (DeleteModelDependencyBindingRequest) -> DeleteModelDependencyBindingResponse;
        get_dependency_data "GetDependencyData" (GetDependencyDataRequest) -> GetDependencyDataResponse;
        begin_model_download "BeginModelDownload" (BeginModelDownloadRequest) -> BeginModelDownloadResponse;
        commit_model_download "CommitModelDownload" (CommitModelDownloadRequest) -> CommitModelDownloadResponse;
        abort_model_download "AbortModelDownload" (AbortModelDownloadRequest) -> AbortModelDownloadResponse;
        replace_link_holds "ReplaceLinkHolds" (ReplaceLinkHoldsRequest) -> ReplaceLinkHoldsResponse;
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

    pumas_runtime::service_impl! {
        impl FetchService for FakeFetch {
            type WatchDownloadStream = BoxStream<WatchDownloadResponse>;

            async fn get_service_info(&self, _request: Request<GetServiceInfoRequest>) -> Result<Response<GetServiceInfoResponse>, Status> {
                let info = pumas_runtime::info::service_info("fetch", &[crate::FETCH_SERVICE], std::time::SystemTime::now());
                Ok(Response::new(GetServiceInfoResponse { info: Some(info), ..Default::default() }))
            }

            async fn search_hub(&self, _request: Request<SearchHubRequest>) -> Result<Response<SearchHubResponse>, Status> {
                Ok(Response::new(SearchHubResponse { models: self.hub_models.clone(), ..Default::default() }))
            }

            async fn list_downloads(&self, _request: Request<ListDownloadsRequest>) -> Result<Response<ListDownloadsResponse>, Status> {
                Ok(Response::new(ListDownloadsResponse { downloads: self.downloads.clone(), next_page_token: String::new() }))
            }
        }
        not_built("fake", "nothing") {
            get_hub_model "GetHubModel" (GetHubModelRequest) -> GetHubModelResponse;
            list_hub_files "ListHubFiles" (ListHubFilesRequest) -> ListHubFilesResponse;
            start_download "StartDownload" (StartDownloadRequest) -> StartDownloadResponse;
            get_download "GetDownload" (GetDownloadRequest) -> GetDownloadResponse;
            watch_download "WatchDownload" (WatchDownloadRequest) -> Self::WatchDownloadStream;
            cancel_download "CancelDownload" (CancelDownloadRequest) -> CancelDownloadResponse;
            pause_download "PauseDownload" (PauseDownloadRequest) -> PauseDownloadResponse;
            resume_download "ResumeDownload" (ResumeDownloadRequest) -> ResumeDownloadResponse;
            set_download_priority "SetDownloadPriority" (SetDownloadPriorityRequest) -> SetDownloadPriorityResponse;
        }
    }
}
