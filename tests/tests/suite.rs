//! `pumas up` as a user runs it: every service on its own port, health, reflection, contract
//! version, the data root, graceful stop.

use pumas_e2e::reflection::{file_containing_symbol, list_services_v1, list_services_v1alpha};
use pumas_e2e::*;
use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
use pumas_proto::gateway::v1::BackendState;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn reflection_lists_every_service_on_every_port() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    for (addr, service) in [
        (&suite.gateway, GATEWAY_SERVICE),
        (&suite.index, INDEX_SERVICE),
        (&suite.fetch, FETCH_SERVICE),
        (&suite.mapper, MAPPER_SERVICE),
    ] {
        for services in [
            list_services_v1(anonymous_channel(addr).await?).await?,
            list_services_v1alpha(anonymous_channel(addr).await?).await?,
        ] {
            for expected in [
                service,
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ] {
                assert!(
                    services.iter().any(|s| s == expected),
                    "{expected} missing at {addr}: {services:?}"
                );
            }
        }
    }
    // `grpcurl describe` needs the file descriptors; the gateway's file imports the others.
    let files = file_containing_symbol(anonymous_channel(&suite.gateway).await?, GATEWAY_SERVICE).await?;
    assert!(!files.is_empty());
    let files = file_containing_symbol(
        anonymous_channel(&suite.gateway).await?,
        "pumas.common.v1.ModelRecord",
    )
    .await?;
    assert!(!files.is_empty());
    Ok(())
}

#[tokio::test]
async fn health_is_serving_per_service_name() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    for (addr, service) in [
        (&suite.gateway, GATEWAY_SERVICE),
        (&suite.index, INDEX_SERVICE),
        (&suite.fetch, FETCH_SERVICE),
        (&suite.mapper, MAPPER_SERVICE),
    ] {
        assert_eq!(health(addr, service).await?, ServingStatus::Serving, "{service}");
        assert_eq!(
            health(addr, "").await?,
            ServingStatus::Serving,
            "server health at {addr}"
        );
    }
    // A name the server does not serve is NOT_FOUND, as grpc.health.v1 specifies.
    let err = health(&suite.index, GATEWAY_SERVICE)
        .await
        .expect_err("index does not serve the gateway");
    assert_eq!(err.code(), Code::NotFound);
    Ok(())
}

#[tokio::test]
async fn every_service_reports_contract_version_1() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let index = IndexServiceClient::new(channel(&suite.index).await?)
        .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
        .await?
        .into_inner();
    let fetch = FetchServiceClient::new(channel(&suite.fetch).await?)
        .get_service_info(pumas_proto::fetch::v1::GetServiceInfoRequest {})
        .await?
        .into_inner();
    let mapper = MapperServiceClient::new(channel(&suite.mapper).await?)
        .get_service_info(pumas_proto::mapper::v1::GetServiceInfoRequest {})
        .await?
        .into_inner();
    let gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?)
        .get_service_info(pumas_proto::gateway::v1::GetServiceInfoRequest {})
        .await?
        .into_inner();
    for (name, info) in [
        ("index", index.info),
        ("fetch", fetch.info),
        ("mapper", mapper.info),
        ("gateway", gateway.info),
    ] {
        let info = info.expect("service info");
        assert_eq!(info.name, name);
        assert_eq!(info.dependency_contract_version, 1, "{name}");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.start_time.is_some());
    }
    // Service-specific facts are real: the index reports its library under the data root.
    assert_eq!(
        index.library_root,
        suite.root().join("shared-resources/models").display().to_string()
    );
    assert!(!fetch.hub_token_configured);
    assert_eq!(mapper.library_mount, index.library_root);
    // The gateway lists its three backends, all serving, with their addresses.
    let roles: Vec<_> = gateway
        .backends
        .iter()
        .map(|b| (b.role.as_str(), b.address.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("index", suite.index.as_str()),
            ("fetch", suite.fetch.as_str()),
            ("mapper", suite.mapper.as_str())
        ]
    );
    assert!(
        gateway
            .backends
            .iter()
            .all(|b| b.state == BackendState::Serving as i32)
    );
    Ok(())
}

#[tokio::test]
async fn data_root_scheme_is_created() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    for dir in [
        "shared-resources/models",
        "shared-resources/cache",
        "launcher-data/mapping-configs",
        "launcher-data/cache/downloads",
    ] {
        assert!(suite.root().join(dir).is_dir(), "{dir} missing");
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_suite_cleanly() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let gateway = suite.gateway.clone();
    // Open streams at the stop: the mapper follows the index's change feed, and a client
    // watches the feed through the index too.
    let mut feed = pumas_proto::index::v1::index_service_client::IndexServiceClient::new(
        pumas_e2e::channel(&suite.index).await?,
    )
    .watch_changes(pumas_proto::index::v1::WatchChangesRequest::default())
    .await?
    .into_inner();
    let log_path = suite.process.log_path.clone();
    let asked = std::time::Instant::now();
    let status = suite.process.terminate().await?;
    let took = asked.elapsed();
    assert!(status.success(), "pumas up exited with {status}");
    // Nothing listens any more.
    assert!(health(&gateway, "").await.is_err());
    // Streams were ended, not waited out: the stop is quick and quiet.
    assert!(took < std::time::Duration::from_secs(2), "the stop took {took:?}");
    let log = std::fs::read_to_string(&log_path)?;
    assert!(!log.contains("still open"), "{log}");
    assert!(
        !log.lines().any(|l| l.contains("WARN") || l.contains("ERROR")),
        "{log}"
    );
    // The watcher was told to reconnect, not cut off.
    while let Ok(Some(_)) = feed.message().await {}
    Ok(())
}

#[tokio::test]
async fn reflection_advertises_only_what_each_port_serves() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let services = list_services_v1(anonymous_channel(&suite.index).await?).await?;
    for foreign in [GATEWAY_SERVICE, FETCH_SERVICE, MAPPER_SERVICE] {
        assert!(
            !services.iter().any(|s| s == foreign),
            "index advertises {foreign}: {services:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn ctrl_c_stops_the_suite_cleanly() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let status = suite.process.interrupt().await?;
    assert!(status.success(), "pumas up exited with {status} after SIGINT");
    Ok(())
}

#[tokio::test]
async fn healthcheck_and_status_subcommands_report_through_exit_codes() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let bin = pumas_bin()?;
    let run = |args: Vec<String>| {
        let bin = bin.clone();
        async move { tokio::process::Command::new(bin).args(args).output().await }
    };
    let ok = run(vec![
        "healthcheck".into(),
        suite.gateway.clone(),
        GATEWAY_SERVICE.into(),
    ])
    .await?;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("SERVING"));
    // A service name this port does not serve, and a port nothing listens on, both fail.
    let wrong = run(vec![
        "healthcheck".into(),
        suite.gateway.clone(),
        INDEX_SERVICE.into(),
    ])
    .await?;
    assert!(!wrong.status.success());
    let status = run(vec!["status".into(), "--gateway".into(), suite.gateway.clone()]).await?;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("dependency contract v1") && text.contains(&suite.index),
        "{text}"
    );
    let gateway = suite.gateway.clone();
    suite.process.kill().await?;
    let down = run(vec![
        "healthcheck".into(),
        gateway.clone(),
        "--timeout-ms".into(),
        "2000".into(),
    ])
    .await?;
    assert!(!down.status.success());
    let status = run(vec!["status".into(), "--gateway".into(), gateway]).await?;
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("cannot reach the gateway"));
    Ok(())
}
