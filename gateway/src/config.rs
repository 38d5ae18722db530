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
    /// UNAUTHENTICATED. Health and reflection stay open.
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
    /// Concurrent-call limit and deadline.
    #[command(flatten)]
    pub limits: pumas_runtime::LimitArgs,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "PUMAS_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
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
            limits: pumas_runtime::LimitArgs::default(),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Config {
    /// The interval between backend checks (at least 50 ms).
    pub fn backend_check_interval(&self) -> Duration {
        Duration::from_millis(self.backend_check_ms.max(50))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
