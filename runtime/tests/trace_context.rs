//! W3C trace context crosses process boundaries in gRPC metadata: a server span becomes the child
//! of the caller's `traceparent`, and a client call carries the current span's context out.

use std::sync::{Arc, Mutex};

use opentelemetry::trace::TraceContextExt as _;
use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
use pumas_proto::fetch::v1::fetch_service_server::{FetchService, FetchServiceServer};
use pumas_proto::fetch::v1::*;
use pumas_runtime::BoxStream;
use pumas_runtime::telemetry::{self, TelemetryArgs};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Records the trace id of the span its handler runs in, and the `traceparent` it received.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl FetchService for Recorder {
    type WatchDownloadStream = BoxStream<WatchDownloadResponse>;

    async fn get_service_info(
        &self,
        request: Request<GetServiceInfoRequest>,
    ) -> Result<Response<GetServiceInfoResponse>, Status> {
        let header = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let trace_id = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id()
            .to_string();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((trace_id, header));
        }
        Ok(Response::new(GetServiceInfoResponse::default()))
    }

    async fn search_hub(&self, _: Request<SearchHubRequest>) -> Result<Response<SearchHubResponse>, Status> {
        Err(not_faked("SearchHub"))
    }

    async fn get_hub_model(
        &self,
        _: Request<GetHubModelRequest>,
    ) -> Result<Response<GetHubModelResponse>, Status> {
        Err(not_faked("GetHubModel"))
    }

    async fn list_hub_files(
        &self,
        _: Request<ListHubFilesRequest>,
    ) -> Result<Response<ListHubFilesResponse>, Status> {
        Err(not_faked("ListHubFiles"))
    }

    async fn start_download(
        &self,
        _: Request<StartDownloadRequest>,
    ) -> Result<Response<StartDownloadResponse>, Status> {
        Err(not_faked("StartDownload"))
    }

    async fn get_download(
        &self,
        _: Request<GetDownloadRequest>,
    ) -> Result<Response<GetDownloadResponse>, Status> {
        Err(not_faked("GetDownload"))
    }

    async fn list_downloads(
        &self,
        _: Request<ListDownloadsRequest>,
    ) -> Result<Response<ListDownloadsResponse>, Status> {
        Err(not_faked("ListDownloads"))
    }

    async fn watch_download(
        &self,
        _: Request<WatchDownloadRequest>,
    ) -> Result<Response<Self::WatchDownloadStream>, Status> {
        Err(not_faked("WatchDownload"))
    }

    async fn cancel_download(
        &self,
        _: Request<CancelDownloadRequest>,
    ) -> Result<Response<CancelDownloadResponse>, Status> {
        Err(not_faked("CancelDownload"))
    }

    async fn pause_download(
        &self,
        _: Request<PauseDownloadRequest>,
    ) -> Result<Response<PauseDownloadResponse>, Status> {
        Err(not_faked("PauseDownload"))
    }

    async fn resume_download(
        &self,
        _: Request<ResumeDownloadRequest>,
    ) -> Result<Response<ResumeDownloadResponse>, Status> {
        Err(not_faked("ResumeDownload"))
    }

    async fn set_download_priority(
        &self,
        _: Request<SetDownloadPriorityRequest>,
    ) -> Result<Response<SetDownloadPriorityResponse>, Status> {
        Err(not_faked("SetDownloadPriority"))
    }
}

#[tokio::test]
async fn trace_context_flows_in_and_out() -> anyhow::Result<()> {
    let args = TelemetryArgs {
        log_filter: "warn".to_owned(),
        ..Default::default()
    };
    let _guard = telemetry::init("trace-test", &args)?;

    let recorder = Recorder::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (_health, routes) = pumas_runtime::standard_routes("pumas.fetch.v1.FetchService")?;
    let routes = routes.add_service(FetchServiceServer::new(recorder.clone()));
    let stop = pumas_runtime::Shutdown::new();
    let server = tokio::spawn(pumas_runtime::serve(listener, routes, stop.wait()));

    // In: a caller that sends a traceparent by hand; the handler's span joins that trace.
    let sent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut plain = FetchServiceClient::connect(format!("http://{addr}")).await?;
    let mut request = Request::new(GetServiceInfoRequest {});
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{sent_trace}-00f067aa0ba902b7-01").parse()?,
    );
    plain.get_service_info(request).await?;

    // Out: a Pumas client inside a span sends that span's trace to the callee.
    let mut traced = FetchServiceClient::new(pumas_runtime::client::connect_lazy(&addr)?);
    let span = tracing::info_span!("caller");
    let caller_trace = span.context().span().span_context().trace_id().to_string();
    traced
        .get_service_info(GetServiceInfoRequest {})
        .instrument(span)
        .await?;

    let seen = recorder.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].0, sent_trace,
        "server span is a child of the incoming traceparent"
    );
    assert!(
        seen[1].1.contains(&caller_trace),
        "client sent its trace: {:?}",
        seen[1]
    );
    assert_eq!(seen[1].0, caller_trace, "and the server joined it");

    stop.trigger();
    server.await??;
    Ok(())
}

/// What a fake answers for an RPC it does not fake.
fn not_faked(rpc: &str) -> Status {
    pumas_runtime::ApiError::not_implemented(format!("test/{rpc}"), "nothing").into()
}
