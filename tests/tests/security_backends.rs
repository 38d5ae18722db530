//! Attacks on the backends' ports and on tokens in transit, through the real binary:
//! - a direct call to the index, fetch or mapper port of `pumas up` without the service token
//!   (or with a wrong one) is UNAUTHENTICATED, while health and reflection stay open;
//! - `pumas up` makes its service token private to the user (0600 in a 0700 folder), and a
//!   token rotated in its file is used with no restart (the old one is then refused);
//! - a backend will not listen beyond loopback with no way to authenticate callers;
//! - the CLI will not send an API token in plain text to a gateway beyond loopback.

use std::os::unix::fs::PermissionsExt as _;

use anyhow::Context as _;
use pumas_e2e::reflection::list_services_v1;
use pumas_e2e::{Process, Suite, anonymous_channel, channel, health, pumas_bin};
use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt as _;

fn assert_unauthenticated(what: &str, result: Result<impl std::fmt::Debug, tonic::Status>) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .as_deref(),
        Some("UNAUTHENTICATED"),
        "{what}: {status:?}"
    );
    assert!(
        status.message().contains("service token"),
        "{what}: {}",
        status.message()
    );
}

#[tokio::test]
async fn backend_ports_refuse_callers_without_the_service_token() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    for (role, addr) in [
        ("index", &suite.index),
        ("fetch", &suite.fetch),
        ("mapper", &suite.mapper),
    ] {
        let stranger = anonymous_channel(addr).await?;
        match role {
            "index" => assert_unauthenticated(
                "index without a token",
                IndexServiceClient::new(stranger.clone())
                    .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
                    .await,
            ),
            "fetch" => assert_unauthenticated(
                "fetch without a token",
                FetchServiceClient::new(stranger.clone())
                    .get_service_info(pumas_proto::fetch::v1::GetServiceInfoRequest {})
                    .await,
            ),
            _ => assert_unauthenticated(
                "mapper without a token",
                MapperServiceClient::new(stranger.clone())
                    .get_service_info(pumas_proto::mapper::v1::GetServiceInfoRequest {})
                    .await,
            ),
        }
        // Health and reflection stay open: load balancers and grpcurl need no secret.
        assert_eq!(health(addr, "").await?, ServingStatus::Serving, "{role} health");
        let services = list_services_v1(stranger.clone()).await?;
        assert!(
            services.iter().any(|s| s.starts_with("pumas.")),
            "{role}: {services:?}"
        );
    }

    // The index's import is the dangerous one: a stranger cannot start one.
    let mut stranger = IndexServiceClient::new(anonymous_channel(&suite.index).await?);
    assert_unauthenticated(
        "import without a token",
        stranger
            .import_models(pumas_proto::index::v1::ImportModelsRequest {
                paths: vec!["/etc/hostname".to_owned()],
                ..Default::default()
            })
            .await,
    );

    // A wrong token is refused the same way.
    let wrong = tonic::service::interceptor::InterceptedService::new(
        anonymous_channel(&suite.index).await?,
        |mut r: tonic::Request<()>| {
            r.metadata_mut().insert(
                pumas_runtime::service_auth::HEADER,
                tonic::metadata::MetadataValue::from_static("0123456789abcdef0123456789abcdef"),
            );
            Ok(r)
        },
    );
    assert_unauthenticated(
        "index with a wrong token",
        IndexServiceClient::new(wrong)
            .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
            .await,
    );

    // With the token, the same calls work; and the gateway (which has it) serves.
    let info = IndexServiceClient::new(channel(&suite.index).await?)
        .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
        .await?
        .into_inner();
    assert_eq!(info.info.context("info")?.name, "index");
    Ok(())
}

#[tokio::test]
async fn pumas_up_keeps_its_service_token_private() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.display().to_string();
    let process = Process::up(&["--data-root", &root_arg], &[], dir.path().join("up.log")).await?;
    let file = root.join("launcher-data/secrets/service-token");
    let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let folder = std::fs::metadata(file.parent().context("parent")?)?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(folder, 0o700);
    let token = pumas_runtime::service_auth::read(&file)?;
    assert_eq!(token.expose().len(), 64);
    let index_addr = process.banner_address("index")?;
    assert_unauthenticated(
        "index of a default pumas up, no token",
        IndexServiceClient::new(anonymous_channel(&index_addr).await?)
            .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
            .await,
    );
    let value: tonic::metadata::MetadataValue<_> = token.expose().parse()?;
    let with_token = tonic::service::interceptor::InterceptedService::new(
        anonymous_channel(&index_addr).await?,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert(pumas_runtime::service_auth::HEADER, value.clone());
            Ok(r)
        },
    );
    IndexServiceClient::new(with_token)
        .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
        .await?;

    // Rotation with no restart: a new token renamed over the file is used by every role within
    // a second or so, and the old one stops working.
    let call_with = |token: String| {
        let index_addr = index_addr.clone();
        async move {
            let value: tonic::metadata::MetadataValue<_> = token.parse()?;
            let channel = tonic::service::interceptor::InterceptedService::new(
                anonymous_channel(&index_addr).await?,
                move |mut r: tonic::Request<()>| {
                    r.metadata_mut()
                        .insert(pumas_runtime::service_auth::HEADER, value.clone());
                    Ok(r)
                },
            );
            anyhow::Ok(
                IndexServiceClient::new(channel)
                    .get_service_info(pumas_proto::index::v1::GetServiceInfoRequest {})
                    .await,
            )
        }
    };
    let rotated = "f".repeat(64);
    let next = file.with_extension("new");
    std::fs::write(&next, format!("{rotated}\n"))?;
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600))?;
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(&next)?
        .set_modified(later)?;
    std::fs::rename(&next, &file)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call_with(rotated.clone()).await?.is_err() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the rotated token was never accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_unauthenticated(
        "the token before rotation",
        call_with(token.expose().to_owned()).await?,
    );
    // The gateway sends the new token too: a search through it still reaches the index.
    let gateway_addr = process.banner_address("gateway")?;
    pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient::new(
        anonymous_channel(&gateway_addr).await?,
    )
    .search_models(pumas_proto::gateway::v1::SearchModelsRequest::default())
    .await
    .context("a search through the gateway after the rotation")?;
    process.terminate().await?;
    Ok(())
}

#[tokio::test]
async fn a_backend_will_not_listen_beyond_loopback_without_caller_authentication() -> anyhow::Result<()> {
    for role in ["index", "fetch", "mapper"] {
        let dir = tempfile::tempdir()?;
        // Refused before binding: nothing listens on another address.
        let out = tokio::process::Command::new(pumas_bin()?)
            .args([
                "serve",
                role,
                "--listen",
                "0.0.0.0:0",
                "--plaintext",
                "--data-root",
            ])
            .arg(dir.path())
            .env_remove("PUMAS_SERVICE_TOKEN_FILE")
            .output()
            .await?;
        assert!(!out.status.success(), "{role} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to listen on 0.0.0.0:0") && err.contains("--service-token-file"),
            "{role}: {err}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_cli_will_not_send_a_token_in_plain_text_beyond_loopback() -> anyhow::Result<()> {
    // 192.0.2.1 is TEST-NET-1: the refusal comes before any connection is made.
    let out = tokio::process::Command::new(pumas_bin()?)
        .args(["status", "--gateway", "192.0.2.1:50051"])
        .env("PUMAS_API_TOKEN", "a-secret-that-must-stay-home")
        .output()
        .await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to send the API token in plain text"),
        "{err}"
    );
    assert!(
        !err.contains("a-secret-that-must-stay-home"),
        "the token is never printed: {err}"
    );
    Ok(())
}
