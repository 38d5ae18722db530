//! Gateway configuration: flags and environment variables.

use std::str::FromStr;
use std::time::Duration;

/// The name of the mapper that `mapper` fields default to.
pub const LOCAL_MAPPER: &str = "local";

/// A named mapper backend, written `name=host:port` (or just `host:port` for "local").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapperAddr {
    /// Name clients address it by.
    pub name: String,
    /// Address to dial.
    pub address: String,
}

impl FromStr for MapperAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, address) = match s.split_once('=') {
            Some((name, address)) => (name.trim(), address.trim()),
            None => (LOCAL_MAPPER, s.trim()),
        };
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !name_ok {
            return Err(format!(
                "mapper name `{name}` must be letters, digits, '-', '_' or '.'"
            ));
        }
        if address.is_empty() {
            return Err(format!(
                "mapper `{name}` needs an address, e.g. {name}=127.0.0.1:50054"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            address: address.to_owned(),
        })
    }
}

/// Flags of `pumas serve gateway`.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Address of the index service.
    #[arg(long = "index", env = "PUMAS_INDEX_ADDR", default_value = "127.0.0.1:50052")]
    pub index_addr: String,
    /// Address of the fetch service.
    #[arg(long = "fetch", env = "PUMAS_FETCH_ADDR", default_value = "127.0.0.1:50053")]
    pub fetch_addr: String,
    /// A mapper, `name=host:port` (repeatable; a bare address is named "local").
    #[arg(
        long = "mapper",
        env = "PUMAS_MAPPERS",
        value_delimiter = ',',
        default_value = "local=127.0.0.1:50054"
    )]
    pub mappers: Vec<MapperAddr>,
    /// How often backends are checked, in milliseconds.
    #[arg(long, env = "PUMAS_BACKEND_CHECK_MS", default_value_t = 2000)]
    pub backend_check_ms: u64,
    /// API bearer tokens (comma-separated); when any is set, calls without a valid one are
    /// UNAUTHENTICATED. Health and reflection stay open. Flags and environment values are
    /// visible to other users of this machine (the process list): prefer --api-tokens-file.
    #[arg(
        long = "api-token",
        env = "PUMAS_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<pumas_runtime::Secret>,
    /// A file of API bearer tokens, one per line.
    #[arg(long, env = "PUMAS_API_TOKENS_FILE")]
    pub api_tokens_file: Option<std::path::PathBuf>,
    /// Serve the API without client tokens even on a non-loopback address (by default such a
    /// gateway requires one, generating <data root>/launcher-data/secrets/api-token if needed).
    #[arg(long, env = "PUMAS_NO_API_AUTH")]
    pub no_api_auth: bool,
    /// Concurrent-call limit and deadline.
    #[command(flatten)]
    pub limits: pumas_runtime::LimitArgs,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "PUMAS_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Do not serve gRPC-Web (browsers) beside gRPC on the gateway's port.
    #[arg(long, env = "PUMAS_NO_GRPC_WEB")]
    pub no_grpc_web: bool,
    /// Another origin browsers may call the API from over gRPC-Web (CORS), e.g.
    /// http://localhost:5173 (repeatable; comma-separated in the variable). By default only the
    /// gateway's own pages may.
    #[arg(long = "web-origin", env = "PUMAS_WEB_ORIGINS", value_delimiter = ',')]
    pub web_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            index_addr: "127.0.0.1:50052".to_owned(),
            fetch_addr: "127.0.0.1:50053".to_owned(),
            mappers: vec![MapperAddr {
                name: LOCAL_MAPPER.to_owned(),
                address: "127.0.0.1:50054".to_owned(),
            }],
            backend_check_ms: 2000,
            api_tokens: Vec::new(),
            api_tokens_file: None,
            no_api_auth: false,
            limits: pumas_runtime::LimitArgs::default(),
            max_message_bytes: 16 * 1024 * 1024,
            no_grpc_web: false,
            web_origins: Vec::new(),
        }
    }
}

impl Config {
    /// The call limits, with gRPC-Web unless turned off; an origin that is not a valid header
    /// value is refused.
    pub fn serve_limits(&self) -> Result<pumas_runtime::Limits, String> {
        let mut limits = self.limits.limits();
        if !self.no_grpc_web {
            let allowed_origins = self
                .web_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/'))
                .filter(|o| !o.is_empty())
                .map(|o| {
                    if !(o.starts_with("http://") || o.starts_with("https://")) {
                        return Err(format!(
                            "--web-origin `{o}` is not an origin like http://host:port"
                        ));
                    }
                    http::HeaderValue::from_str(o)
                        .map_err(|_| format!("--web-origin `{o}` is not a valid origin"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            limits.grpc_web = Some(pumas_runtime::GrpcWeb {
                allowed_origins,
                pages: None,
            });
        }
        Ok(limits)
    }

    /// Turns client auth on for a gateway that listens on `ip` when it is not loopback and no
    /// token is configured (unless `no_api_auth`): the token is read from, or generated into,
    /// `token_file` (0600). Answers the file and the token when it was generated now, so the
    /// caller can show it once.
    pub fn require_auth_off_loopback(
        &mut self,
        ip: std::net::IpAddr,
        token_file: &std::path::Path,
    ) -> std::io::Result<Option<(std::path::PathBuf, pumas_runtime::Secret)>> {
        if ip.is_loopback()
            || self.no_api_auth
            || !self.api_tokens.is_empty()
            || self.api_tokens_file.is_some()
        {
            return Ok(None);
        }
        let (token, created) = pumas_runtime::service_auth::read_or_create(token_file)?;
        self.api_tokens_file = Some(token_file.to_owned());
        Ok(created.then(|| (token_file.to_owned(), token)))
    }

    /// The interval between backend checks (at least 50 ms).
    pub fn backend_check_interval(&self) -> Duration {
        Duration::from_millis(self.backend_check_ms.max(50))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_beyond_loopback_requires_a_generated_token_unless_told_not_to() -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("secrets").join("api-token");
        let lan: std::net::IpAddr = "192.168.1.20".parse().map_err(std::io::Error::other)?;
        let loopback: std::net::IpAddr = "127.0.0.1".parse().map_err(std::io::Error::other)?;

        let mut on_loopback = Config::default();
        assert!(on_loopback.require_auth_off_loopback(loopback, &file)?.is_none());
        assert!(on_loopback.api_tokens_file.is_none() && !file.exists());

        let mut opted_out = Config {
            no_api_auth: true,
            ..Config::default()
        };
        assert!(opted_out.require_auth_off_loopback(lan, &file)?.is_none());
        assert!(opted_out.api_tokens_file.is_none() && !file.exists());

        let mut on_lan = Config::default();
        let (path, token) = on_lan.require_auth_off_loopback(lan, &file)?.expect("generated");
        assert_eq!(path, file);
        assert_eq!(on_lan.api_tokens_file.as_deref(), Some(file.as_path()));
        assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
        let auth = crate::auth::BearerAuth::load(&[], on_lan.api_tokens_file.as_deref())
            .map_err(std::io::Error::other)?;
        assert!(auth.enabled());
        // Shown once: a restart reuses the file and shows nothing.
        let mut again = Config::default();
        assert!(again.require_auth_off_loopback(lan, &file)?.is_none());
        assert_eq!(again.api_tokens_file.as_deref(), Some(file.as_path()));
        assert!(!token.expose().is_empty());
        Ok(())
    }

    #[test]
    fn mapper_addresses_parse() {
        assert_eq!(
            "studio=10.0.0.2:50054".parse::<MapperAddr>(),
            Ok(MapperAddr {
                name: "studio".into(),
                address: "10.0.0.2:50054".into()
            })
        );
        assert_eq!(
            "127.0.0.1:1".parse::<MapperAddr>().map(|m| m.name),
            Ok("local".to_owned())
        );
        assert!("bad name=1.2.3.4:5".parse::<MapperAddr>().is_err());
        assert!("x=".parse::<MapperAddr>().is_err());
    }
}
