//! TLS between hosts (rustls on ring), from PEM files: a service's own certificate, optional
//! mutual TLS (client certificates signed by a given CA), and the certificates a service
//! presents and trusts when it calls other services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: std::io::Error },
    /// Flags that only work together.
    #[error("{0}")]
    Incomplete(String),
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
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
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
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        match (&self.peer_cert, &self.peer_key) {
            (Some(c), Some(k)) => config = config.identity(Identity::from_pem(read(c)?, read(k)?)),
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
