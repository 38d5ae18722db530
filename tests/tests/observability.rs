//! Operators' view of a running role: per-RPC metrics in the Prometheus format (counts by status
//! code, latency histograms) at `--metrics-listen`, and JSON log lines that carry the trace id of
//! the call they belong to.

use anyhow::{Context as _, anyhow};
use pumas_e2e::{channel, serve_role};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{GetModelRequest, GetServiceInfoRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET http://addr/path` over HTTP/1.1: (status line, body).
async fn http_get(addr: &str, path: &str) -> anyhow::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no header end in {response:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

#[tokio::test]
async fn metrics_count_calls_by_code_and_json_logs_carry_the_trace_id() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let (index, addr) = serve_role(
        "index",
        "127.0.0.1:0",
        &[
            "--data-root",
            &root.display().to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log",
            "info,tower_http=debug",
        ],
        dir.path(),
    )
    .await?;
    let metrics_addr = index
        .banner
        .iter()
        .find_map(|line| line.split("metrics on http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .ok_or_else(|| anyhow!("no metrics address in {:?}", index.banner))?
        .to_owned();

    let mut client = IndexServiceClient::new(channel(&addr).await?);
    for _ in 0..2 {
        client.get_service_info(GetServiceInfoRequest::default()).await?;
    }
    let mut missing = tonic::Request::new(GetModelRequest {
        model_id: "lora/sdxl/not-here".into(),
        include_chat_template: false,
        include_preview: false,
    });
    missing.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-b7ad6b7169203331-01")
            .parse()
            .context("header")?,
    );
    let err = client.get_model(missing).await.expect_err("an unknown id");
    assert_eq!(err.code(), tonic::Code::NotFound);

    let (status, text) = http_get(&metrics_addr, "/metrics").await?;
    assert!(status.contains("200"), "{status}");
    for want in [
        r#"grpc_server_handled_total{grpc_service="pumas.index.v1.IndexService",grpc_method="GetServiceInfo",grpc_code="OK"} 2"#,
        r#"grpc_server_handled_total{grpc_service="pumas.index.v1.IndexService",grpc_method="GetModel",grpc_code="NOT_FOUND"} 1"#,
        r#"grpc_server_handling_seconds_count{grpc_service="pumas.index.v1.IndexService",grpc_method="GetServiceInfo"} 2"#,
        "# TYPE grpc_server_handling_seconds histogram",
        "grpc_server_in_flight",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    let (status, _) = http_get(&metrics_addr, "/nothing").await?;
    assert!(status.contains("404"), "{status}");

    // Every log line is one JSON object; the lines of the traced call name its trace id.
    let log = std::fs::read_to_string(&index.log_path)?;
    let mut traced = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if value["span"]["trace_id"] == TRACE_ID {
            assert_eq!(
                value["span"]["rpc.method"], "/pumas.index.v1.IndexService/GetModel",
                "{line}"
            );
            traced += 1;
        }
    }
    assert!(traced > 0, "no log line carries the trace id:\n{log}");
    Ok(())
}
