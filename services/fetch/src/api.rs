//! `pumas.fetch.v1.FetchService`: translates between proto and the domain, maps errors.

use std::time::SystemTime;

use pumas_proto::common::v1::ServiceInfo;
use pumas_proto::fetch::v1::fetch_service_server::FetchService;
use pumas_proto::fetch::v1::*;
use pumas_runtime::BoxStream;
use tonic::{Request, Response, Status};

use crate::{Config, SERVICE_NAME};

/// The capability that brings the RPCs not built yet.
const CAPABILITY: &str = "the fetch capability (Hugging Face search and resumable, verified downloads)";

/// The fetch service's gRPC face.
pub(crate) struct FetchApi {
    info: ServiceInfo,
    hub_endpoint: String,
    hub_token_configured: bool,
}

impl FetchApi {
    pub(crate) fn new(config: &Config, start_time: SystemTime) -> Self {
        Self {
            info: pumas_runtime::info::service_info("fetch", &[SERVICE_NAME], start_time),
            hub_endpoint: config.hub_endpoint.clone(),
            hub_token_configured: config.hub_token.as_ref().is_some_and(|t| !t.expose().is_empty()),
        }
    }
}

pumas_runtime::service_impl! {
    impl FetchService for FetchApi {
        type WatchDownloadStream = BoxStream<WatchDownloadResponse>;

        #[tracing::instrument(skip_all)]
        async fn get_service_info(
            &self,
            _request: Request<GetServiceInfoRequest>,
        ) -> Result<Response<GetServiceInfoResponse>, Status> {
            Ok(Response::new(GetServiceInfoResponse {
                info: Some(self.info.clone()),
                hub_endpoint: self.hub_endpoint.clone(),
                hub_token_configured: self.hub_token_configured,
            }))
        }
    }
    not_built(SERVICE_NAME, CAPABILITY) {
        search_hub "SearchHub" (SearchHubRequest) -> SearchHubResponse;
        get_hub_model "GetHubModel" (GetHubModelRequest) -> GetHubModelResponse;
        list_hub_files "ListHubFiles" (ListHubFilesRequest) -> ListHubFilesResponse;
        start_download "StartDownload" (StartDownloadRequest) -> StartDownloadResponse;
        get_download "GetDownload" (GetDownloadRequest) -> GetDownloadResponse;
        list_downloads "ListDownloads" (ListDownloadsRequest) -> ListDownloadsResponse;
        watch_download "WatchDownload" (WatchDownloadRequest) -> Self::WatchDownloadStream;
        cancel_download "CancelDownload" (CancelDownloadRequest) -> CancelDownloadResponse;
        pause_download "PauseDownload" (PauseDownloadRequest) -> PauseDownloadResponse;
        resume_download "ResumeDownload" (ResumeDownloadRequest) -> ResumeDownloadResponse;
        set_download_priority "SetDownloadPriority" (SetDownloadPriorityRequest) -> SetDownloadPriorityResponse;
    }
}
