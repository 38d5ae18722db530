//! Index service configuration: flags and `PUMAS_*` environment variables.

use std::path::PathBuf;

use pumas_runtime::DataRoot;

/// Flags of `pumas serve index`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Config {
    /// Data root holding shared-resources/models (default: $PUMAS_DATA_ROOT, else the platform
    /// data dir, e.g. ~/.local/share/pumas).
    #[arg(long, env = "PUMAS_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
}

impl Config {
    /// The data root this service works on.
    pub fn data_root(&self) -> DataRoot {
        DataRoot::new(self.data_root.clone().unwrap_or_else(DataRoot::default_path))
    }
}
