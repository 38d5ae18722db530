//! Fetch service configuration: flags and environment variables.

use std::path::PathBuf;

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
    /// Hub token (HF_TOKEN). Sent only to the hub host; never logged or returned.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hub_token: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_root: None,
            index_addr: "127.0.0.1:50052".to_owned(),
            hub_endpoint: DEFAULT_HUB_ENDPOINT.to_owned(),
            hub_token: None,
        }
    }
}

impl Config {
    /// The data root this service works on.
    pub fn data_root(&self) -> DataRoot {
        DataRoot::new(self.data_root.clone().unwrap_or_else(DataRoot::default_path))
    }
}
