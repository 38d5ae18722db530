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

/// A search with the tests' API token, tried again while the index is still opening its
/// library (UNAVAILABLE with a retry delay, for a few milliseconds after it listens).
async fn search_with_token(
    gateway: &mut ModelLibraryServiceClient<Channel>,
) -> anyhow::Result<pumas_proto::gateway::v1::SearchModelsResponse> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = tonic::Request::new(SearchModelsRequest::default());
        request
            .metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().context("header")?);
        match gateway.search_models(request).await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
}

fn arg(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// An index serving mutual TLS: its own certificate and key, and the CA its callers' must come
/// from.
async fn tls_index(
    dir: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: &std::path::Path,
) -> anyhow::Result<(pumas_e2e::Process, String)> {
    let root = arg(&dir.join("root"));
    let (cert, key, client_ca) = (arg(cert), arg(key), arg(client_ca));
    serve_role(
        "index",
        "127.0.0.1:0",
        &[
            "--data-root",
            &root,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &client_ca,
        ],
        dir,
    )
    .await
}

/// A gateway with the API token `s3cret` in front of a TLS index: it serves TLS with `server`
/// (certificate, key) and calls the index with `peer` (CA, client certificate, client key).
async fn tls_gateway(
    dir: &std::path::Path,
    index_addr: &str,
    server: (&std::path::Path, &std::path::Path),
    peer: (&std::path::Path, &std::path::Path, &std::path::Path),
) -> anyhow::Result<(pumas_e2e::Process, String)> {
    let (cert, key) = (arg(server.0), arg(server.1));
    let (ca, client_cert, client_key) = (arg(peer.0), arg(peer.1), arg(peer.2));
    serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            index_addr,
            "--fetch",
            "127.0.0.1:9",
            "--mapper",
            "local=127.0.0.1:9",
            "--api-token",
            "s3cret",
            "--backend-check-ms",
            "100",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--peer-ca",
            &ca,
            "--peer-cert",
            &client_cert,
            "--peer-key",
            &client_key,
        ],
        dir,
    )
    .await
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_configured_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c: Certs = certs::make(&dir.path().join("certs"))?;
    let (_index, index_addr) = tls_index(dir.path(), &c.server_cert, &c.server_key, &c.ca).await?;

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
    let (_gateway, gateway_addr) = tls_gateway(
        dir.path(),
        &index_addr,
        (&c.server_cert, &c.server_key),
        (&c.ca, &c.client_cert, &c.client_key),
    )
    .await?;
    let channel = tls_channel(&gateway_addr, &c.ca, None).await?;
    let mut gateway = ModelLibraryServiceClient::new(channel);
    let answer = search_with_token(&mut gateway).await?;
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

/// Runs the certificate recipe of docs/DEPLOY.md (the block between its `tls-recipe` markers)
/// verbatim with the system's `openssl`, in `dir`.
fn run_deploy_recipe(dir: &std::path::Path) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DEPLOY.md"))?;
    let block = doc
        .split("<!-- tls-recipe: begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- tls-recipe: end -->").next())
        .and_then(|b| b.split("```sh\n").nth(1))
        .and_then(|b| b.split("```").next())
        .context("docs/DEPLOY.md has no tls-recipe block")?;
    std::fs::create_dir_all(dir)?;
    sh(dir, block)
}

fn sh(dir: &std::path::Path, script: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(dir)
        .output()
        .context("running sh (openssl must be installed: .ci/run installs it)")?;
    anyhow::ensure!(
        out.status.success(),
        "the commands failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `pumas serve gateway` with these peer files; answers how it ended and what it said.
async fn gateway_start_with_peer(
    certs: &std::path::Path,
    cert: &str,
    key: &str,
) -> anyhow::Result<(bool, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(pumas_e2e::pumas_bin()?)
            .args([
                "serve",
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--index",
                "127.0.0.1:9",
                "--fetch",
                "127.0.0.1:9",
                "--mapper",
                "local=127.0.0.1:9",
                "--peer-ca",
            ])
            .arg(certs.join("ca.pem"))
            .arg("--peer-cert")
            .arg(certs.join(cert))
            .arg("--peer-key")
            .arg(certs.join(key))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the gateway neither started nor stopped")??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn the_documented_certificates_work_and_unusable_ones_fail_loudly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    run_deploy_recipe(&certs)?;

    // The roles start with exactly what the recipe made, as deploy/systemd/*.env name it.
    let file = |name: &str| certs.join(name);
    let (index, index_addr) = tls_index(
        dir.path(),
        &file("storage.pem"),
        &file("storage.key"),
        &file("ca.pem"),
    )
    .await?;
    let (_gateway, gateway_addr) = tls_gateway(
        dir.path(),
        &index_addr,
        (&file("gateway.pem"), &file("gateway.key")),
        (&file("ca.pem"), &file("client.pem"), &file("client.key")),
    )
    .await?;
    let mut gateway =
        ModelLibraryServiceClient::new(tls_channel(&gateway_addr, &certs.join("ca.pem"), None).await?);
    search_with_token(&mut gateway)
        .await
        .context("the gateway reaches the index over mutual TLS with the documented certificates")?;

    // A caller without a client certificate is refused, and the index says who it was.
    let refused = match tls_channel(&index_addr, &certs.join("ca.pem"), None).await {
        Ok(channel) => healthy(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a caller without a client certificate got in");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !index.log().contains("TLS handshake refused") {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no refusal logged:\n{}",
            index.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = index.log();
    let line = log
        .lines()
        .find(|l| l.contains("TLS handshake refused"))
        .context("refusal line")?;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    // The recipe as it was (no extensions): an X.509 v1 client certificate. A role given it
    // stops at start naming the file and the reason, instead of "transport error".
    sh(
        &certs,
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=old-client -keyout old.key -out old.csr\n\
         openssl x509 -req -in old.csr -CA ca.pem -CAkey ca.key -days 825 -out old.pem",
    )?;
    let (started, said) = gateway_start_with_peer(&certs, "old.pem", "old.key").await?;
    assert!(!started, "the gateway started with a version 1 certificate");
    assert!(said.contains("old.pem") && said.contains("version 1"), "{said}");
    // A key that is not the certificate's: named too.
    let (started, said) = gateway_start_with_peer(&certs, "client.pem", "gateway.key").await?;
    assert!(!started, "the gateway started with another certificate's key");
    assert!(
        said.contains("gateway.key") && said.contains("is not the private key of"),
        "{said}"
    );
    Ok(())
}
