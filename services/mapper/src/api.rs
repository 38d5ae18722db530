//! `pumas.mapper.v1.MapperService`: translates between proto and the domain, maps errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pumas_proto::common::v1::{self as common, JobState, JobStatus, ServiceInfo};
use pumas_proto::mapper::v1::mapper_service_server::MapperService;
use pumas_proto::mapper::v1::*;
use pumas_runtime::stream::{Pace, watch_job};
use pumas_runtime::{ApiError, BoxStream};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, Outcome, State, Trigger, unmapped_key};
use crate::error::MapperError;
use crate::mapping;
use crate::plan::{self, ActionKind};
use crate::{Config, SERVICE_NAME};

/// A mapping job and its watchers.
struct JobEntry {
    job: Mutex<MappingJob>,
    changed: watch::Sender<u64>,
}

impl From<MapperError> for ApiError {
    fn from(err: MapperError) -> Self {
        let message = err.to_string();
        match err {
            MapperError::BadAppName(_) => ApiError::invalid("app", message),
            MapperError::UnknownApp { app, help } => ApiError::NotFoundHelp {
                resource_type: "app".to_owned(),
                name: app,
                help,
            },
            MapperError::InvalidConfig { path, .. } => ApiError::FailedPrecondition {
                kind: "INVALID_MAPPING_CONFIG".to_owned(),
                subject: path.display().to_string(),
                message,
            },
            MapperError::Rejected(errors) => ApiError::invalid(
                "config_toml",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            MapperError::RootNotAllowed(_) => ApiError::PermissionDenied(message),
            MapperError::LibraryNotVisible { mount, .. } => ApiError::FailedPrecondition {
                kind: "LIBRARY_MOUNT_NOT_VISIBLE".to_owned(),
                subject: mount.display().to_string(),
                message,
            },
            MapperError::IndexUnreachable(_) => ApiError::FailedPrecondition {
                kind: "INDEX_UNREACHABLE".to_owned(),
                subject: "index".to_owned(),
                message,
            },
            MapperError::NotForThisApp(_) => ApiError::FailedPrecondition {
                kind: "NOT_FOR_THIS_APP".to_owned(),
                subject: "app".to_owned(),
                message,
            },
            MapperError::AppUnreachable(_) => ApiError::Unavailable {
                backend: "app".to_owned(),
                message,
                retry_after: None,
            },
            MapperError::Registry(_) | MapperError::Internal(_) => ApiError::Internal(message),
        }
    }
}

impl From<MapperError> for Status {
    fn from(err: MapperError) -> Self {
        ApiError::from(err).into()
    }
}

/// The mapper service's gRPC face.
pub(crate) struct MapperApi {
    info: ServiceInfo,
    engine: Arc<Engine>,
    jobs: Arc<Mutex<HashMap<String, Arc<JobEntry>>>>,
    by_request: Mutex<HashMap<String, String>>,
}

impl MapperApi {
    pub(crate) fn new(_config: &Config, start_time: SystemTime, engine: Arc<Engine>) -> Self {
        Self {
            info: pumas_runtime::info::service_info("mapper", &[SERVICE_NAME], start_time),
            engine,
            jobs: Arc::new(Mutex::new(HashMap::new())),
            by_request: Mutex::new(HashMap::new()),
        }
    }
}

/// Most finished mapping jobs kept for GetMappingJob/WatchMappingJob.
const KEEP_FINISHED: usize = 200;

/// Drops the oldest finished jobs beyond [`KEEP_FINISHED`]; returns their ids.
fn forget_old_jobs(jobs: &mut HashMap<String, Arc<JobEntry>>) -> Vec<String> {
    let finished_state = |e: &JobEntry| {
        e.job
            .lock()
            .ok()
            .and_then(|j| j.status.as_ref().map(|s| s.state))
            .is_some_and(|s| {
                [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
                    .iter()
                    .any(|f| *f as i32 == s)
            })
    };
    let mut finished: Vec<String> = jobs
        .iter()
        .filter(|(_, e)| finished_state(e))
        .map(|(id, _)| id.clone())
        .collect();
    if finished.len() <= KEEP_FINISHED {
        return Vec::new();
    }
    // Ids are `map-<nanoseconds in hex>`: equal lengths sort by time.
    finished.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    finished.truncate(finished.len() - KEEP_FINISHED);
    for id in &finished {
        jobs.remove(id);
    }
    finished
}

fn timestamp_now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn kind_proto(kind: ActionKind) -> i32 {
    (match kind {
        ActionKind::Create => LinkActionKind::Create,
        ActionKind::Replace => LinkActionKind::Replace,
        ActionKind::Remove => LinkActionKind::Remove,
        ActionKind::Keep => LinkActionKind::Keep,
        ActionKind::Conflict => LinkActionKind::Conflict,
    }) as i32
}

fn warning_proto(w: &plan::Warning) -> MappingWarning {
    MappingWarning {
        code: w.code.clone(),
        model_id: w.model_id.clone(),
        path: w.path.clone(),
        message: w.message.clone(),
    }
}

fn plan_proto(app: &str, p: &plan::Plan, include_unchanged: bool) -> MappingPlan {
    MappingPlan {
        app: app.to_owned(),
        actions: p
            .actions
            .iter()
            .filter(|a| include_unchanged || a.kind != ActionKind::Keep)
            .map(|a| LinkAction {
                kind: kind_proto(a.kind),
                model_id: a.model_id.clone(),
                source_path: match &a.want {
                    Some(plan::Want::Link { source }) => source.display().to_string(),
                    Some(plan::Want::Symlink { text }) => text.display().to_string(),
                    _ => a.recorded.as_ref().map(|r| r.source.clone()).unwrap_or_default(),
                },
                target_path: a.target.display().to_string(),
                strategy: a.strategy.proto(),
                reason: a.reason.clone(),
            })
            .collect(),
        warnings: p.warnings.iter().map(warning_proto).collect(),
        create_count: p.count(ActionKind::Create) as u64,
        replace_count: p.count(ActionKind::Replace) as u64,
        remove_count: p.count(ActionKind::Remove) as u64,
        conflict_count: p.count(ActionKind::Conflict) as u64,
        keep_count: p.count(ActionKind::Keep) as u64,
    }
}

fn config_errors(errors: &[mapping::ConfigError]) -> Vec<ConfigError> {
    errors
        .iter()
        .map(|e| ConfigError {
            line: e.line,
            column: e.column,
            message: e.message.clone(),
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Work {
    Apply { replace_conflicts: bool },
    Repair,
    Unmap,
    Adopt,
}

impl MapperApi {
    async fn app_proto(
        &self,
        app: &str,
        config: Result<&mapping::MappingConfig, &[mapping::ConfigError]>,
    ) -> Result<App, ApiError> {
        let links = self
            .engine
            .registry
            .for_app(app)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let last_apply = self.state_time(&format!("last_apply/{app}")).await;
        let unmapped = self.state_time(&unmapped_key(app)).await;
        let broken = links
            .iter()
            .filter(|l| std::fs::symlink_metadata(&l.target).is_ok() && std::fs::metadata(&l.target).is_err())
            .count() as u64;
        Ok(match config {
            Ok(c) => App {
                name: app.to_owned(),
                kind: c.kind.clone(),
                root: c.root.display().to_string(),
                strategy: c.strategy.proto(),
                link_count: links.len() as u64,
                broken_count: broken,
                conflict_count: 0,
                last_apply_time: last_apply,
                config_errors: Vec::new(),
                unmapped_time: unmapped,
            },
            Err(errors) => App {
                name: app.to_owned(),
                link_count: links.len() as u64,
                broken_count: broken,
                last_apply_time: last_apply,
                config_errors: config_errors(errors),
                unmapped_time: unmapped,
                ..Default::default()
            },
        })
    }

    /// A time the registry keeps (milliseconds since the epoch) under `key`.
    async fn state_time(&self, key: &str) -> Option<prost_types::Timestamp> {
        let ms: u64 = self.engine.registry.get_state(key).await.ok()??.parse().ok()?;
        Some(prost_types::Timestamp::from(
            UNIX_EPOCH + Duration::from_millis(ms),
        ))
    }

    /// Starts a mapping job in the background and returns it.
    fn start_job(&self, app: &str, request_id: &str, work: Work) -> Result<MappingJob, ApiError> {
        // Checks the app before accepting the job: NOT_FOUND and invalid configs answer now.
        self.engine.config(app)?;
        if !request_id.is_empty()
            && let Some(existing) = self
                .by_request
                .lock()
                .ok()
                .and_then(|m| m.get(request_id).cloned())
            && let Some(entry) = self.jobs.lock().ok().and_then(|j| j.get(&existing).cloned())
        {
            return Ok(entry.job.lock().map(|j| j.clone()).unwrap_or_default());
        }
        let id = format!(
            "map-{:x}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let job = MappingJob {
            status: Some(JobStatus {
                job_id: id.clone(),
                state: JobState::Running as i32,
                create_time: Some(timestamp_now()),
                start_time: Some(timestamp_now()),
                ..Default::default()
            }),
            app: app.to_owned(),
            ..Default::default()
        };
        let entry = Arc::new(JobEntry {
            job: Mutex::new(job.clone()),
            changed: watch::channel(0).0,
        });
        let mut forgotten = Vec::new();
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id.clone(), Arc::clone(&entry));
            forgotten = forget_old_jobs(&mut jobs);
        }
        if let Ok(mut m) = self.by_request.lock() {
            if !forgotten.is_empty() {
                m.retain(|_, job| !forgotten.contains(job));
            }
            if !request_id.is_empty() {
                m.insert(request_id.to_owned(), id);
            }
        }
        let engine = Arc::clone(&self.engine);
        let app = app.to_owned();
        tokio::spawn(async move {
            let result: Result<Outcome, MapperError> = match work {
                Work::Apply { replace_conflicts } => {
                    engine
                        .apply(&app, replace_conflicts, None, Trigger::Request)
                        .await
                }
                Work::Repair => engine.repair(&app).await,
                Work::Unmap => engine.unmap(&app).await,
                Work::Adopt => engine.adopt(&app).await,
            };
            if let Ok(mut job) = entry.job.lock() {
                let status = job.status.get_or_insert_with(Default::default);
                status.end_time = Some(timestamp_now());
                match result {
                    Ok(outcome) => {
                        let total = outcome.plan.actions.len() as u64;
                        status.state = JobState::Succeeded as i32;
                        status.progress = Some(common::Progress {
                            items_done: total,
                            items_total: total,
                            ..Default::default()
                        });
                        job.plan = Some(plan_proto(&app, &outcome.plan, false));
                        job.unresolved = outcome.unresolved.iter().map(warning_proto).collect();
                    }
                    Err(err) => {
                        let err = ApiError::from(err);
                        status.state = JobState::Failed as i32;
                        if let ApiError::Internal(detail) = &err {
                            tracing::error!(error = %detail, "mapping job failed");
                        }
                        status.error = Some(err.to_error_status());
                    }
                }
            }
            entry.changed.send_modify(|v| *v += 1);
        });
        Ok(job)
    }

    fn job(&self, id: &str) -> Result<Arc<JobEntry>, ApiError> {
        self.jobs
            .lock()
            .ok()
            .and_then(|j| j.get(id).cloned())
            .ok_or_else(|| ApiError::not_found("mapping job", id))
    }
}

fn is_final(job: &MappingJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.state != JobState::Running as i32 && s.state != JobState::Queued as i32)
}

fn link_state_proto(state: State) -> i32 {
    (match state {
        State::Linked => LinkState::Linked,
        State::Conflict => LinkState::Conflict,
        State::Broken => LinkState::Broken,
        State::NotMapped => LinkState::NotMapped,
    }) as i32
}

#[tonic::async_trait]
impl MapperService for MapperApi {
    type WatchMappingJobStream = BoxStream<WatchMappingJobResponse>;

    #[tracing::instrument(skip_all)]
    async fn get_service_info(
        &self,
        _request: Request<GetServiceInfoRequest>,
    ) -> Result<Response<GetServiceInfoResponse>, Status> {
        let change_cursor = self.engine.change_cursor().await;
        Ok(Response::new(GetServiceInfoResponse {
            info: Some(self.info.clone()),
            library_mount: self.engine.mount().display().to_string(),
            following_changes: *self.engine.following.borrow(),
            change_cursor,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_apps(
        &self,
        _request: Request<ListAppsRequest>,
    ) -> Result<Response<ListAppsResponse>, Status> {
        let mut apps = Vec::new();
        for c in self.engine.configs() {
            apps.push(
                self.app_proto(&c.app, c.config.as_ref().map_err(Vec::as_slice))
                    .await?,
            );
        }
        Ok(Response::new(ListAppsResponse { apps }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn get_app(&self, request: Request<GetAppRequest>) -> Result<Response<GetAppResponse>, Status> {
        let app = request.into_inner().app;
        let entry = self
            .engine
            .configs()
            .into_iter()
            .find(|c| c.app == app)
            .ok_or_else(|| {
                self.engine
                    .config(&app)
                    .err()
                    .map(ApiError::from)
                    .unwrap_or_else(|| ApiError::not_found("app", &app))
            })?;
        let proto = self
            .app_proto(&app, entry.config.as_ref().map_err(Vec::as_slice))
            .await?;
        Ok(Response::new(GetAppResponse {
            app: Some(proto),
            config_toml: entry.text,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_presets(
        &self,
        _request: Request<ListPresetsRequest>,
    ) -> Result<Response<ListPresetsResponse>, Status> {
        let presets = crate::presets::all()
            .into_iter()
            .map(|p| Preset {
                kind: p.kind.to_owned(),
                display_name: p.display_name.to_owned(),
                folders: p
                    .folders
                    .iter()
                    .map(|f| PresetFolder {
                        model_type: f.model_type.to_owned(),
                        folder: f.folder.to_owned(),
                        legacy_folders: f.legacy.iter().map(|s| (*s).to_owned()).collect(),
                        extensions: f.extensions.iter().map(|s| (*s).to_owned()).collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListPresetsResponse { presets }))
    }

    #[tracing::instrument(skip_all)]
    async fn validate_mapping_config(
        &self,
        request: Request<ValidateMappingConfigRequest>,
    ) -> Result<Response<ValidateMappingConfigResponse>, Status> {
        let text = request.into_inner().config_toml;
        Ok(Response::new(match mapping::parse("check", &text) {
            Ok(_) => ValidateMappingConfigResponse {
                valid: true,
                errors: Vec::new(),
            },
            Err(errors) => ValidateMappingConfigResponse {
                valid: false,
                errors: config_errors(&errors),
            },
        }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn put_mapping_config(
        &self,
        request: Request<PutMappingConfigRequest>,
    ) -> Result<Response<PutMappingConfigResponse>, Status> {
        let r = request.into_inner();
        match self.engine.put_config(&r.app, &r.config_toml) {
            Ok(config) => Ok(Response::new(PutMappingConfigResponse {
                app: Some(self.app_proto(&r.app, Ok(&config)).await?),
            })),
            Err(err) => Err(err.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn preview_mapping(
        &self,
        request: Request<PreviewMappingRequest>,
    ) -> Result<Response<PreviewMappingResponse>, Status> {
        let r = request.into_inner();
        let plan = self.engine.preview(&r.app).await?;
        Ok(Response::new(PreviewMappingResponse {
            plan: Some(plan_proto(&r.app, &plan, r.include_unchanged)),
        }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn apply_mapping(
        &self,
        request: Request<ApplyMappingRequest>,
    ) -> Result<Response<ApplyMappingResponse>, Status> {
        let r = request.into_inner();
        let job = self.start_job(
            &r.app,
            &r.request_id,
            Work::Apply {
                replace_conflicts: r.replace_conflicts,
            },
        )?;
        Ok(Response::new(ApplyMappingResponse { job: Some(job) }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn repair_mapping(
        &self,
        request: Request<RepairMappingRequest>,
    ) -> Result<Response<RepairMappingResponse>, Status> {
        let r = request.into_inner();
        let job = self.start_job(&r.app, &r.request_id, Work::Repair)?;
        Ok(Response::new(RepairMappingResponse { job: Some(job) }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn unmap(&self, request: Request<UnmapRequest>) -> Result<Response<UnmapResponse>, Status> {
        let r = request.into_inner();
        let job = self.start_job(&r.app, &r.request_id, Work::Unmap)?;
        Ok(Response::new(UnmapResponse { job: Some(job) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_mapping_job(
        &self,
        request: Request<GetMappingJobRequest>,
    ) -> Result<Response<GetMappingJobResponse>, Status> {
        let entry = self.job(&request.get_ref().job_id)?;
        let job = entry.job.lock().map(|j| j.clone()).unwrap_or_default();
        Ok(Response::new(GetMappingJobResponse { job: Some(job) }))
    }

    #[tracing::instrument(skip_all)]
    async fn watch_mapping_job(
        &self,
        request: Request<WatchMappingJobRequest>,
    ) -> Result<Response<Self::WatchMappingJobStream>, Status> {
        let entry = self.job(&request.get_ref().job_id)?;
        let pace = Pace {
            heartbeat: Some(Duration::from_millis(500)),
            min_gap: Duration::ZERO,
        };
        let stream = watch_job(entry.changed.subscribe(), pace, move |_| {
            let job = entry.job.lock().map(|j| j.clone()).unwrap_or_default();
            let done = is_final(&job);
            (WatchMappingJobResponse { job: Some(job) }, done)
        });
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all)]
    async fn list_links(
        &self,
        request: Request<ListLinksRequest>,
    ) -> Result<Response<ListLinksResponse>, Status> {
        let r = request.into_inner();
        let size = pumas_runtime::error::page_size(r.page_size, 500, 10_000)? as usize;
        let offset: usize = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .strip_prefix("ln.")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    ApiError::invalid("page_token", "not a token from a previous ListLinks answer")
                })?
        };
        let rows = if r.model_id.is_empty() {
            self.engine.registry.all().await
        } else {
            self.engine.registry.for_model(&r.model_id).await
        }
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|l| r.app.is_empty() || l.app == r.app)
            .collect();
        let end = (offset + size).min(rows.len());
        let links = rows
            .get(offset.min(end)..end)
            .unwrap_or_default()
            .iter()
            .map(|l| Link {
                app: l.app.clone(),
                model_id: l.model_id.clone(),
                source_path: l.source.clone(),
                target_path: l.target.clone(),
                strategy: mapping::Strategy::from_name(&l.strategy).proto(),
                state: if std::fs::metadata(&l.target).is_ok() {
                    LinkState::Linked
                } else {
                    LinkState::Broken
                } as i32,
                create_time: Some(prost_types::Timestamp::from(
                    UNIX_EPOCH + Duration::from_millis(l.created_ms.max(0) as u64),
                )),
            })
            .collect();
        Ok(Response::new(ListLinksResponse {
            links,
            next_page_token: if end < rows.len() {
                format!("ln.{end}")
            } else {
                String::new()
            },
        }))
    }

    #[tracing::instrument(skip_all, fields(models = request.get_ref().model_ids.len()))]
    async fn get_model_link_states(
        &self,
        request: Request<GetModelLinkStatesRequest>,
    ) -> Result<Response<GetModelLinkStatesResponse>, Status> {
        let ids = request.into_inner().model_ids;
        if ids.len() > 1000 {
            return Err(ApiError::invalid("model_ids", "at most 1000 per call").into());
        }
        let states = self.engine.link_states(&ids).await?;
        let models = states
            .into_iter()
            .map(|(model_id, apps)| ModelLinkStates {
                model_id,
                apps: apps
                    .into_iter()
                    .map(|(app, state, target_paths)| AppLinkState {
                        app,
                        state: link_state_proto(state),
                        target_paths,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(GetModelLinkStatesResponse { models }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn preview_adoption(
        &self,
        request: Request<PreviewAdoptionRequest>,
    ) -> Result<Response<PreviewAdoptionResponse>, Status> {
        let (candidates, reclaimable_bytes) = self.engine.preview_adoption(&request.get_ref().app).await?;
        Ok(Response::new(PreviewAdoptionResponse {
            candidates: candidates
                .into_iter()
                .map(|c| AdoptionCandidate {
                    path: c.path.display().to_string(),
                    size_bytes: c.size,
                    sha256: c.sha256,
                    existing_model_id: c.existing_model_id,
                    duplicate_paths: c.duplicates.iter().map(|p| p.display().to_string()).collect(),
                })
                .collect(),
            reclaimable_bytes,
        }))
    }

    #[tracing::instrument(skip_all, fields(app = %request.get_ref().app))]
    async fn start_adoption(
        &self,
        request: Request<StartAdoptionRequest>,
    ) -> Result<Response<StartAdoptionResponse>, Status> {
        let r = request.into_inner();
        let job = self.start_job(&r.app, &r.request_id, Work::Adopt)?;
        Ok(Response::new(StartAdoptionResponse { job: Some(job) }))
    }
}
