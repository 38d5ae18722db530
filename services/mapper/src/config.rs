//! Mapper service configuration: flags and environment variables.

use std::path::PathBuf;

use pumas_runtime::DataRoot;

/// Flags of `pumas serve mapper`.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Data root holding launcher-data/mapping-configs (default: $PUMAS_DATA_ROOT, else the
    /// platform data dir).
    #[arg(long, env = "PUMAS_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// Address of the index service (records and the change feed).
    #[arg(long = "index", env = "PUMAS_INDEX_ADDR", default_value = "127.0.0.1:50052")]
    pub index_addr: String,
    /// Where this host sees the library's models directory, when it differs from the index
    /// host's path (a mapper on another host). Default: <data root>/shared-resources/models.
    #[arg(long, env = "PUMAS_LIBRARY_MOUNT")]
    pub library_mount: Option<PathBuf>,
    /// This host's name in link holds reported to the index (default: the hostname).
    #[arg(long, env = "PUMAS_MAPPER_HOST")]
    pub host: Option<String>,
    /// App folders that configs sent over the API (PutMappingConfig) may target (repeatable).
    /// Default: any folder when the mapper listens on loopback (its callers are this machine's
    /// user); none when it listens beyond loopback, where only configs written on disk by the
    /// operator are used.
    #[arg(long = "app-root", env = "PUMAS_APP_ROOTS", value_delimiter = ',')]
    pub app_roots: Vec<PathBuf>,
    /// Concurrent-call limit and deadline (the gateway's, on this backend too).
    #[command(flatten)]
    pub limits: pumas_runtime::LimitArgs,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_root: None,
            index_addr: "127.0.0.1:50052".to_owned(),
            library_mount: None,
            host: None,
            app_roots: Vec::new(),
            limits: pumas_runtime::LimitArgs::default(),
        }
    }
}

impl Config {
    /// The data root this service works on.
    pub fn data_root(&self) -> DataRoot {
        DataRoot::new(self.data_root.clone().unwrap_or_else(DataRoot::default_path))
    }

    /// This host's name.
    pub fn host_name(&self) -> String {
        self.host
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".to_owned())
    }

    /// Where this host sees the library's models directory.
    pub fn library_mount(&self) -> PathBuf {
        self.library_mount
            .clone()
            .unwrap_or_else(|| self.data_root().models_dir())
    }
}
