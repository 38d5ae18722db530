//! TLS between hosts: every service serves TLS from certificate files, with optional mutual
//! TLS; the gateway calls its backends over mutual TLS; plain text on a reachable address must
//! be asked for.

use std::time::Duration;

use anyhow::Context as _;
use pumas_e2e::certs::{self, Certs};
use pumas_e2e::serve_role;
use pumas_proto::gateway::v1::SearchModelsRequest;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn pem(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(path)?)
}

/// A TLS channel trusting `ca`, presenting `identity` when given.
async fn tls_channel(
    addr: &str,
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(ca)?));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(pem(cert)?, pem(key)?));
    }
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    Ok(endpoint.connect().await?)
}

async fn healthy(channel: Channel) -> anyhow::Result<i32> {
    Ok(HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status)
}

fn arg(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_configured_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c: Certs = certs::make(&dir.path().join("certs"))?;
    let root = arg(&dir.path().join("root"));
    let (_index, index_addr) = serve_role(
        "index",
        "127.0.0.1:0",
        &[
            "--data-root",
            &root,
            "--tls-cert",
            &arg(&c.server_cert),
            "--tls-key",
            &arg(&c.server_key),
            "--tls-client-ca",
            &arg(&c.ca),
        ],
        dir.path(),
    )
    .await?;

    // A client with a certificate from the CA: served.
    let ok = tls_channel(&index_addr, &c.ca, Some((&c.client_cert, &c.client_key))).await?;
    assert_eq!(healthy(ok).await?, 1, "SERVING");
    // No client certificate: refused.
    let no_cert = match tls_channel(&index_addr, &c.ca, None).await {
        Ok(channel) => healthy(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(no_cert, "a client without a certificate got through");
    // A certificate from another CA: refused.
    let other = match tls_channel(
        &index_addr,
        &c.ca,
        Some((&c.other_client_cert, &c.other_client_key)),
    )
    .await
    {
        Ok(channel) => healthy(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(other, "a client with another CA's certificate got through");
    // Plain text: refused.
    let plain = pumas_e2e::health(&index_addr, "").await;
    assert!(plain.is_err(), "plain text was served");

    // The gateway calls the index over mutual TLS and serves its own API over TLS with a token.
    let (_gateway, gateway_addr) = serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            &index_addr,
            "--fetch",
            "127.0.0.1:9",
            "--mapper",
            "local=127.0.0.1:9",
            "--api-token",
            "s3cret",
            "--backend-check-ms",
            "100",
            "--tls-cert",
            &arg(&c.server_cert),
            "--tls-key",
            &arg(&c.server_key),
            "--peer-ca",
            &arg(&c.ca),
            "--peer-cert",
            &arg(&c.client_cert),
            "--peer-key",
            &arg(&c.client_key),
        ],
        dir.path(),
    )
    .await?;
    let channel = tls_channel(&gateway_addr, &c.ca, None).await?;
    let mut gateway = ModelLibraryServiceClient::new(channel);
    let mut request = tonic::Request::new(SearchModelsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().context("header")?);
    let answer = gateway.search_models(request).await?.into_inner();
    assert_eq!(
        answer.results.len(),
        0,
        "an empty library, reached through mutual TLS"
    );
    let err = gateway
        .search_models(SearchModelsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    Ok(())
}

#[tokio::test]
async fn plain_text_on_a_reachable_address_must_be_asked_for() -> anyhow::Result<()> {
    let out = tokio::process::Command::new(pumas_e2e::pumas_bin()?)
        .args(["serve", "index", "--listen", "0.0.0.0:0", "--data-root"])
        .arg(tempfile::tempdir()?.path())
        .output()
        .await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve unencrypted gRPC") && err.contains("--plaintext"),
        "{err}"
    );
    Ok(())
}
