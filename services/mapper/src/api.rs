//! `pumas.mapper.v1.MapperService`: translates between proto and the domain, maps errors.

use std::time::SystemTime;

use pumas_proto::common::v1::ServiceInfo;
use pumas_proto::mapper::v1::mapper_service_server::MapperService;
use pumas_proto::mapper::v1::*;
use pumas_runtime::BoxStream;
use tonic::{Request, Response, Status};

use crate::{Config, SERVICE_NAME};

/// The capability that brings the RPCs not built yet.
const CAPABILITY: &str = "the mapper capability (app presets, link apply/preview/repair, change-feed sync)";

/// The mapper service's gRPC face.
pub(crate) struct MapperApi {
    info: ServiceInfo,
    library_mount: String,
}

impl MapperApi {
    pub(crate) fn new(config: &Config, start_time: SystemTime) -> Self {
        Self {
            info: pumas_runtime::info::service_info("mapper", &[SERVICE_NAME], start_time),
            library_mount: config.library_mount().display().to_string(),
        }
    }
}

pumas_runtime::service_impl! {
    impl MapperService for MapperApi {
        type WatchMappingJobStream = BoxStream<WatchMappingJobResponse>;

        #[tracing::instrument(skip_all)]
        async fn get_service_info(
            &self,
            _request: Request<GetServiceInfoRequest>,
        ) -> Result<Response<GetServiceInfoResponse>, Status> {
            Ok(Response::new(GetServiceInfoResponse {
                info: Some(self.info.clone()),
                library_mount: self.library_mount.clone(),
                following_changes: false,
            }))
        }
    }
    not_built(SERVICE_NAME, CAPABILITY) {
        list_apps "ListApps" (ListAppsRequest) -> ListAppsResponse;
        get_app "GetApp" (GetAppRequest) -> GetAppResponse;
        list_presets "ListPresets" (ListPresetsRequest) -> ListPresetsResponse;
        validate_mapping_config "ValidateMappingConfig" (ValidateMappingConfigRequest) -> ValidateMappingConfigResponse;
        put_mapping_config "PutMappingConfig" (PutMappingConfigRequest) -> PutMappingConfigResponse;
        preview_mapping "PreviewMapping" (PreviewMappingRequest) -> PreviewMappingResponse;
        apply_mapping "ApplyMapping" (ApplyMappingRequest) -> ApplyMappingResponse;
        repair_mapping "RepairMapping" (RepairMappingRequest) -> RepairMappingResponse;
        unmap "Unmap" (UnmapRequest) -> UnmapResponse;
        preview_adoption "PreviewAdoption" (PreviewAdoptionRequest) -> PreviewAdoptionResponse;
        start_adoption "StartAdoption" (StartAdoptionRequest) -> StartAdoptionResponse;
        get_mapping_job "GetMappingJob" (GetMappingJobRequest) -> GetMappingJobResponse;
        watch_mapping_job "WatchMappingJob" (WatchMappingJobRequest) -> Self::WatchMappingJobStream;
        list_links "ListLinks" (ListLinksRequest) -> ListLinksResponse;
        get_model_link_states "GetModelLinkStates" (GetModelLinkStatesRequest) -> GetModelLinkStatesResponse;
    }
}
