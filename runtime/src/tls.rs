//! TLS between hosts (rustls on ring), from PEM files: a service's own certificate, optional
//! mutual TLS (client certificates signed by a given CA), and the certificates a service
//! presents and trusts when it calls other services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The rustls server config a TLS service accepts connections with.
pub type ServerTlsConfig = Arc<rustls::ServerConfig>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: std::io::Error },
    /// Flags that only work together.
    #[error("{0}")]
    Incomplete(String),
    /// A certificate or key file that TLS cannot use, and why.
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
    /// Plain text on an address other hosts can reach, without saying so.
    #[error(
        "refusing to serve unencrypted gRPC on {0}, which other hosts can reach: give --tls-cert and --tls-key, or --plaintext to accept that"
    )]
    PlaintextRefused(SocketAddr),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|reason| TlsError::Read {
        path: path.display().to_string(),
        reason,
    })
}

fn bad(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::BadFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The certificates of a PEM file's bytes `pem` (at least one); `path` names it in errors.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file's bytes.
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| bad(path, format!("holds no usable PEM private key ({e})")))
}

/// Checks that the first certificate of `path` can be a TLS end entity, saying why not in words
/// a person can act on (an X.509 v1 certificate is what `openssl x509 -req` makes on OpenSSL
/// 3.0 when the request carries no extensions).
fn end_entity(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = certificates(path, pem)?;
    if let Err(e) = webpki::EndEntityCert::try_from(&chain[0]) {
        return Err(bad(
            path,
            match e {
                webpki::Error::UnsupportedCertVersion => "is an X.509 version 1 certificate (one made without extensions, as `openssl x509 -req` does on OpenSSL 3.0); TLS here needs version 3: issue it again as docs/DEPLOY.md shows".to_owned(),
                e => format!("is not a certificate TLS can use: {e}"),
            },
        ));
    }
    Ok(chain)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate, its key and whether they belong together, as rustls would take them.
fn identity_error(cert: &Path, key: &Path, e: rustls::Error) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            bad(key, format!("is not the private key of {}", cert.display()))
        }
        e => bad(cert, format!("cannot be used with {}: {e}", key.display())),
    }
}

/// TLS flags of a serving role.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate (chain) this service presents; enables TLS.
    #[arg(long = "tls-cert", env = "PUMAS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", env = "PUMAS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate: callers must present a client certificate it signed (mutual TLS).
    #[arg(long = "tls-client-ca", env = "PUMAS_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve unencrypted gRPC on a non-loopback address (loopback never needs this).
    #[arg(long, env = "PUMAS_PLAINTEXT")]
    pub plaintext: bool,
}

impl ServerTlsArgs {
    /// The server TLS config, None for plain text. Refuses plain text on a non-loopback address
    /// unless --plaintext was given.
    pub fn server_config(&self, listen: SocketAddr) -> Result<Option<ServerTlsConfig>, TlsError> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => {
                if self.tls_client_ca.is_some() {
                    return Err(TlsError::Incomplete(
                        "--tls-client-ca needs --tls-cert and --tls-key".to_owned(),
                    ));
                }
                if !listen.ip().is_loopback() && !self.plaintext {
                    return Err(TlsError::PlaintextRefused(listen));
                }
                return Ok(None);
            }
            _ => {
                return Err(TlsError::Incomplete(
                    "--tls-cert and --tls-key go together".to_owned(),
                ));
            }
        };
        let chain = end_entity(cert, &read(cert)?)?;
        let key_der = private_key(key, &read(key)?)?;
        let versions = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Incomplete(e.to_string()))?;
        let builder = match &self.tls_client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certificates(ca, &read(ca)?)? {
                    roots
                        .add(c)
                        .map_err(|e| bad(ca, format!("is not a usable CA certificate: {e}")))?;
                }
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| bad(ca, format!("cannot check client certificates with it: {e}")))?;
                versions.with_client_cert_verifier(verifier)
            }
            None => versions.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key_der)
            .map_err(|e| identity_error(cert, key, e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// TLS flags for calls to other Pumas services.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA certificate that signed the other services' certificates; calls use TLS.
    #[arg(long = "peer-ca", env = "PUMAS_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// PEM client certificate presented to other services (mutual TLS).
    #[arg(long = "peer-cert", env = "PUMAS_PEER_CERT")]
    pub peer_cert: Option<PathBuf>,
    /// PEM private key of --peer-cert.
    #[arg(long = "peer-key", env = "PUMAS_PEER_KEY")]
    pub peer_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The client TLS config, None when calls stay plain.
    pub fn client_config(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        let Some(ca) = &self.peer_ca else {
            if self.peer_cert.is_some() || self.peer_key.is_some() {
                return Err(TlsError::Incomplete(
                    "--peer-cert and --peer-key need --peer-ca".to_owned(),
                ));
            }
            return Ok(None);
        };
        let ca_pem = read(ca)?;
        certificates(ca, &ca_pem)?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        match (&self.peer_cert, &self.peer_key) {
            (Some(c), Some(k)) => {
                // Checked here, so a bad file stops the role at start naming it (tonic would
                // only say "transport error" for the address it dials).
                let (cert_pem, key_pem) = (read(c)?, read(k)?);
                let chain = end_entity(c, &cert_pem)?;
                rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Incomplete(e.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_client_auth_cert(chain, private_key(k, &key_pem)?)
                    .map_err(|e| identity_error(c, k, e))?;
                config = config.identity(Identity::from_pem(cert_pem, key_pem));
            }
            (None, None) => {}
            _ => {
                return Err(TlsError::Incomplete(
                    "--peer-cert and --peer-key go together".to_owned(),
                ));
            }
        }
        Ok(Some(config))
    }

    /// Makes every channel this process opens to other services use this TLS config.
    pub fn install(&self) -> Result<(), TlsError> {
        if let Some(config) = self.client_config()? {
            let _ = PEER_TLS.set(config);
        }
        Ok(())
    }
}

static PEER_TLS: OnceLock<ClientTlsConfig> = OnceLock::new();
static SERVER_TLS: OnceLock<ServerTlsConfig> = OnceLock::new();

/// Makes every server this process starts use this TLS config.
pub fn install_server(config: ServerTlsConfig) {
    let _ = SERVER_TLS.set(config);
}

/// The process-wide server TLS config, if one was installed.
pub fn server_tls() -> Option<&'static ServerTlsConfig> {
    SERVER_TLS.get()
}

/// The process-wide TLS config for calls to other services, if one was installed.
pub fn peer_tls() -> Option<&'static ClientTlsConfig> {
    PEER_TLS.get()
}

/// How long a caller has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The TLS connections of `listener`: handshakes run concurrently, and one that is refused (no
/// client certificate, one from another CA, plain text, a timeout) is logged with the peer's
/// address, which tonic's own TLS loop does not say. Stops accepting when the stream is dropped.
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: ServerTlsConfig,
) -> tokio_stream::wrappers::ReceiverStream<
    std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::warn!(peer = %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
