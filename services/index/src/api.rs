//! `pumas.index.v1.IndexService`: translates between proto and the domain, maps errors.

use std::time::SystemTime;

use pumas_proto::common::v1::ServiceInfo;
use pumas_proto::index::v1::index_service_server::IndexService;
use pumas_proto::index::v1::*;
use pumas_runtime::{BoxStream, DataRoot};
use tonic::{Request, Response, Status};

use crate::SERVICE_NAME;

/// The capability that brings the RPCs not built yet.
const CAPABILITY: &str =
    "the index capability (library on disk, import, search, dependency profiles, change feed)";

/// The index service's gRPC face.
pub(crate) struct IndexApi {
    info: ServiceInfo,
    data_root: DataRoot,
}

impl IndexApi {
    pub(crate) fn new(data_root: DataRoot, start_time: SystemTime) -> Self {
        let info = pumas_runtime::info::service_info("index", &[SERVICE_NAME], start_time);
        Self { info, data_root }
    }
}

pumas_runtime::service_impl! {
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
            library_root: self.data_root.models_dir().display().to_string(),
            model_count: 0,
        }))
    }

}
    not_built(SERVICE_NAME, CAPABILITY) {
        list_models "ListModels" (ListModelsRequest) -> ListModelsResponse;
        search_models "SearchModels" (SearchModelsRequest) -> SearchModelsResponse;
        get_model "GetModel" (GetModelRequest) -> GetModelResponse;
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
