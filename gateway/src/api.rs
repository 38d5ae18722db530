//! `pumas.gateway.v1.ModelLibraryService`: translates between proto and the backends.

use std::sync::Arc;
use std::time::SystemTime;

use pumas_proto::common::v1::ServiceInfo;
use pumas_proto::gateway::v1::model_library_service_server::ModelLibraryService;
use pumas_proto::gateway::v1::*;
use pumas_runtime::BoxStream;
use tonic::{Request, Response, Status};

use crate::SERVICE_NAME;
use crate::backends::Backends;

/// The capability that brings the RPCs not built yet.
const CAPABILITY: &str =
    "the gateway capability (merged search, model views, dependency resolution, pass-through operations)";

/// The gateway's gRPC face.
pub(crate) struct GatewayApi {
    info: ServiceInfo,
    backends: Arc<Backends>,
}

impl GatewayApi {
    pub(crate) fn new(backends: Arc<Backends>, start_time: SystemTime) -> Self {
        Self {
            info: pumas_runtime::info::service_info("gateway", &[SERVICE_NAME], start_time),
            backends,
        }
    }
}

pumas_runtime::service_impl! {
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
    }
    not_built(SERVICE_NAME, CAPABILITY) {
        search_models "SearchModels" (SearchModelsRequest) -> SearchModelsResponse;
        list_models "ListModels" (ListModelsRequest) -> ListModelsResponse;
        get_model "GetModel" (GetModelRequest) -> GetModelResponse;
        update_model_metadata "UpdateModelMetadata" (UpdateModelMetadataRequest) -> UpdateModelMetadataResponse;
        delete_model "DeleteModel" (DeleteModelRequest) -> DeleteModelResponse;
        resolve_model_dependency_requirements "ResolveModelDependencyRequirements" (ResolveModelDependencyRequirementsRequest) -> ResolveModelDependencyRequirementsResponse;
        batch_resolve_model_dependency_requirements "BatchResolveModelDependencyRequirements" (BatchResolveModelDependencyRequirementsRequest) -> BatchResolveModelDependencyRequirementsResponse;
        import_models "ImportModels" (ImportModelsRequest) -> ImportModelsResponse;
        reindex "Reindex" (ReindexRequest) -> ReindexResponse;
        get_import_job "GetImportJob" (GetImportJobRequest) -> GetImportJobResponse;
        watch_import_job "WatchImportJob" (WatchImportJobRequest) -> Self::WatchImportJobStream;
        search_hub "SearchHub" (SearchHubRequest) -> SearchHubResponse;
        start_download "StartDownload" (StartDownloadRequest) -> StartDownloadResponse;
        get_download "GetDownload" (GetDownloadRequest) -> GetDownloadResponse;
        list_downloads "ListDownloads" (ListDownloadsRequest) -> ListDownloadsResponse;
        watch_download "WatchDownload" (WatchDownloadRequest) -> Self::WatchDownloadStream;
        cancel_download "CancelDownload" (CancelDownloadRequest) -> CancelDownloadResponse;
        pause_download "PauseDownload" (PauseDownloadRequest) -> PauseDownloadResponse;
        resume_download "ResumeDownload" (ResumeDownloadRequest) -> ResumeDownloadResponse;
        list_apps "ListApps" (ListAppsRequest) -> ListAppsResponse;
        preview_mapping "PreviewMapping" (PreviewMappingRequest) -> PreviewMappingResponse;
        apply_mapping "ApplyMapping" (ApplyMappingRequest) -> ApplyMappingResponse;
        repair_mapping "RepairMapping" (RepairMappingRequest) -> RepairMappingResponse;
        unmap "Unmap" (UnmapRequest) -> UnmapResponse;
        watch_mapping_job "WatchMappingJob" (WatchMappingJobRequest) -> Self::WatchMappingJobStream;
    }
}
