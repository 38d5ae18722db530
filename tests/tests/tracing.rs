//! One client call produces spans from the gateway and the index it called, in one trace, with
//! the parent/child relation intact: W3C trace context crosses processes in gRPC metadata and
//! spans reach an OTLP receiver (this test runs one in-process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pumas_e2e::*;
use pumas_proto::gateway::v1::GetModelRequest;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;

#[derive(Clone, Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self
            .spans
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?;
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                        Some(s.clone())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for s in scope.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test]
async fn one_trace_spans_gateway_and_index() -> anyhow::Result<()> {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let otlp = format!("http://{}", listener.local_addr()?);
    let stop = pumas_runtime::Shutdown::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop.wait()),
    );

    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.to_str().unwrap_or_default().to_owned();
    let otlp_args = ["--otlp-endpoint", otlp.as_str()];
    let mut index_args = vec!["--data-root", root_arg.as_str()];
    index_args.extend(otlp_args);
    let (index, index_addr) = serve_role("index", "127.0.0.1:0", &index_args, dir.path()).await?;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let mapper_arg = format!("local={dead}");
    let mut gateway_args = vec![
        "--index",
        index_addr.as_str(),
        "--fetch",
        dead.as_str(),
        "--mapper",
        mapper_arg.as_str(),
    ];
    gateway_args.extend(otlp_args);
    let (gateway, gateway_addr) = serve_role("gateway", "127.0.0.1:0", &gateway_args, dir.path()).await?;

    // The caller starts the trace.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let mut request = tonic::Request::new(GetModelRequest {
        model_id: "lora/sdxl/traced".into(),
        include_chat_template: false,
        include_preview: false,
    });
    request
        .metadata_mut()
        .insert("traceparent", format!("00-{trace_id}-{caller_span}-01").parse()?);
    let err = ModelLibraryServiceClient::new(channel(&gateway_addr).await?)
        .get_model(request)
        .await
        .expect_err("no such model");
    assert_eq!(
        err.code(),
        tonic::Code::NotFound,
        "the call reached the index: {err:?}"
    );

    // Stopping flushes the exporters.
    assert!(gateway.terminate().await?.success());
    assert!(index.terminate().await?.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<Span> = collector
            .spans
            .lock()
            .map(|s| s.iter().filter(|s| s.trace_id == trace_id).cloned().collect())
            .unwrap_or_default();
        let services: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        if services.contains("pumas-gateway") && services.contains("pumas-index")
            || tokio::time::Instant::now() > deadline
        {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gateway_spans: Vec<&Span> = spans.iter().filter(|s| s.service == "pumas-gateway").collect();
    let index_spans: Vec<&Span> = spans.iter().filter(|s| s.service == "pumas-index").collect();
    assert!(
        !gateway_spans.is_empty() && !index_spans.is_empty(),
        "spans of the trace: {spans:#?}"
    );
    // The gateway's server span is the child of the caller's span.
    assert!(
        gateway_spans.iter().any(|s| s.parent_span_id == caller_span),
        "{gateway_spans:#?}"
    );
    // The index's server span is the child of a gateway span.
    let index_server = index_spans
        .iter()
        .find(|s| s.name.contains("IndexService/GetModel"))
        .expect("index server span");
    assert!(
        gateway_spans
            .iter()
            .any(|g| g.span_id == index_server.parent_span_id),
        "index span {index_server:?} has no gateway parent in {gateway_spans:#?}"
    );
    stop.trigger();
    server.await??;
    Ok(())
}
