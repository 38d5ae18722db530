//! Fetch service configuration: flags and environment variables.

use std::path::PathBuf;

use pumas_runtime::secret::SecretSource;
use pumas_runtime::{DataRoot, Secret};

/// The public Hugging Face Hub.
pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";

/// Flags of `pumas serve fetch`.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Data root (default: $PUMAS_DATA_ROOT, else the platform data dir).
    #[arg(long, env = "PUMAS_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// Address of the index service, which receives finished downloads.
    #[arg(long = "index", env = "PUMAS_INDEX_ADDR", default_value = "127.0.0.1:50052")]
    pub index_addr: String,
    /// Hugging Face compatible hub endpoint (HF_ENDPOINT, as the Hub's own tools read it).
    #[arg(long, env = "HF_ENDPOINT", default_value = DEFAULT_HUB_ENDPOINT)]
    pub hub_endpoint: String,
    /// Hub token (HF_TOKEN). Sent only to the hub host; never logged or returned. A flag or
    /// environment value is visible to other users of this machine: prefer --hub-token-file.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hub_token: Option<Secret>,
    /// File whose first line is the hub token (HF_TOKEN_PATH, as the Hub's own tools read it);
    /// used when no --hub-token is given.
    #[arg(long, env = "HF_TOKEN_PATH")]
    pub hub_token_file: Option<PathBuf>,
    /// Cache, retry and transfer tuning.
    #[command(flatten)]
    pub tuning: Tuning,
    /// Concurrent-call limit and deadline (the gateway's, on this backend too).
    #[command(flatten)]
    pub limits: pumas_runtime::LimitArgs,
}

/// Cache, retry and transfer tuning of the fetch service (also flags of `pumas up`).
#[derive(Clone, Debug, clap::Args)]
pub struct Tuning {
    /// How long a cached hub search answer counts as fresh, in seconds.
    #[arg(long, env = "PUMAS_SEARCH_CACHE_TTL_SECS", default_value_t = 600)]
    pub search_cache_ttl_secs: u64,
    /// With a stale cache entry, wait this long for the hub before serving the stale answer
    /// (the refresh goes on in the background), in milliseconds.
    #[arg(long, env = "PUMAS_SEARCH_STALE_GRACE_MS", default_value_t = 1500)]
    pub search_stale_grace_ms: u64,
    /// Retries of a failed hub call (429, 5xx, network), with jittered exponential backoff.
    #[arg(long, env = "PUMAS_HUB_RETRIES", default_value_t = 4)]
    pub hub_retries: usize,
    /// First backoff delay between hub retries, in milliseconds.
    #[arg(long, env = "PUMAS_HUB_BACKOFF_MS", default_value_t = 250)]
    pub hub_backoff_ms: u64,
    /// Timeout of one hub API call (not of file bodies), in seconds.
    #[arg(long, env = "PUMAS_HUB_TIMEOUT_SECS", default_value_t = 20)]
    pub hub_timeout_secs: u64,
    /// Downloads transferring at once; the rest wait in priority order.
    #[arg(long, env = "PUMAS_MAX_DOWNLOADS", default_value_t = 2)]
    pub max_downloads: usize,
    /// Connections at once over all downloads.
    #[arg(long, env = "PUMAS_MAX_CONNECTIONS", default_value_t = 32)]
    pub max_connections: usize,
    /// Byte-range connections per large file.
    #[arg(long, env = "PUMAS_CONNECTIONS_PER_FILE", default_value_t = 16)]
    pub connections_per_file: usize,
    /// Smallest byte-range part, in bytes; smaller files use one connection.
    #[arg(long, env = "PUMAS_MIN_PART_BYTES", default_value_t = 8 << 20)]
    pub min_part_bytes: u64,
    /// Progress is made durable once a part has this many bytes not yet durable (and at least
    /// every second): at most this much is fetched again per in-flight part after a crash.
    #[arg(long, env = "PUMAS_CHECKPOINT_BYTES", default_value_t = 2 << 20)]
    pub checkpoint_bytes: u64,
    /// A connection that receives nothing for this long is restarted, in seconds.
    #[arg(long, env = "PUMAS_STALL_TIMEOUT_SECS", default_value_t = 30)]
    pub stall_timeout_secs: u64,
    /// Attempts per byte-range part before the download fails (it stays resumable).
    #[arg(long, env = "PUMAS_PART_RETRIES", default_value_t = 6)]
    pub part_retries: usize,
    /// Aggregate bandwidth cap for all downloads, in bytes per second (0 = none).
    #[arg(long, env = "PUMAS_BANDWIDTH_LIMIT", default_value_t = 0)]
    pub bandwidth_limit: u64,
    /// A Hugging Face hub cache whose blobs are adopted instead of downloaded (default
    /// $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). "none" disables it.
    #[arg(long, env = "HF_HUB_CACHE")]
    pub hf_cache: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_root: None,
            index_addr: "127.0.0.1:50052".to_owned(),
            hub_endpoint: DEFAULT_HUB_ENDPOINT.to_owned(),
            hub_token: None,
            hub_token_file: None,
            tuning: Tuning::default(),
            limits: pumas_runtime::LimitArgs::default(),
        }
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            search_cache_ttl_secs: 600,
            search_stale_grace_ms: 1500,
            hub_retries: 4,
            hub_backoff_ms: 250,
            hub_timeout_secs: 20,
            max_downloads: 2,
            max_connections: 32,
            connections_per_file: 16,
            min_part_bytes: 8 << 20,
            checkpoint_bytes: 2 << 20,
            stall_timeout_secs: 30,
            part_retries: 6,
            bandwidth_limit: 0,
            hf_cache: None,
        }
    }
}

impl Config {
    /// The hub token: --hub-token, else --hub-token-file (its first line, read again when the
    /// file changes, so a rotated token is used without a restart).
    pub fn hub_token(&self) -> Result<SecretSource, String> {
        if let Some(token) = self.hub_token.clone().filter(|t| !t.expose().trim().is_empty()) {
            return Ok(SecretSource::Fixed(token));
        }
        let Some(path) = &self.hub_token_file else {
            return Ok(SecretSource::None);
        };
        SecretSource::file(path)
            .map_err(|e| format!("cannot read the hub token file {}: {e}", path.display()))
    }

    /// The data root this service works on.
    pub fn data_root(&self) -> DataRoot {
        DataRoot::new(self.data_root.clone().unwrap_or_else(DataRoot::default_path))
    }

    /// The Hugging Face cache to adopt from, if any.
    pub fn hf_cache(&self) -> Option<PathBuf> {
        match &self.tuning.hf_cache {
            Some(path) if path.as_os_str() == "none" => None,
            Some(path) => Some(path.clone()),
            None => std::env::var_os("HF_HOME")
                .map(|home| PathBuf::from(home).join("hub"))
                .or_else(|| dirs::home_dir().map(|h| h.join(".cache").join("huggingface").join("hub"))),
        }
    }

    /// Engine settings from the flags.
    pub fn engine_settings(&self) -> crate::engine::Settings {
        let t = &self.tuning;
        crate::engine::Settings {
            max_jobs: t.max_downloads.max(1),
            max_connections: t.max_connections.max(1),
            connections_per_file: t.connections_per_file.max(1),
            min_part_bytes: t.min_part_bytes.max(64 << 10),
            checkpoint_bytes: t.checkpoint_bytes.max(64 << 10),
            stall_timeout: std::time::Duration::from_secs(t.stall_timeout_secs.max(1)),
            part_retries: t.part_retries,
            verify_attempts: 3,
            bandwidth_limit: t.bandwidth_limit,
            hf_cache: self.hf_cache(),
        }
    }
}
