//! Index service configuration: flags and `PUMAS_*` environment variables.

use std::path::PathBuf;

use pumas_runtime::DataRoot;

use crate::library::Policy;

/// Flags of `pumas serve index`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Config {
    /// Data root holding shared-resources/models (default: $PUMAS_DATA_ROOT, else the platform
    /// data dir, e.g. ~/.local/share/pumas).
    #[arg(long, env = "PUMAS_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// Refuse pickle-based files (.ckpt/.pt/.pth/.bin), which can run code when loaded, instead
    /// of importing them flagged as unsafe.
    #[arg(long, env = "PUMAS_REFUSE_PICKLE")]
    pub refuse_pickle: bool,
    /// Only import from below these directories (repeatable). Default: anywhere this process can
    /// read when the index listens on loopback (its callers are this machine's user); nowhere when
    /// it listens beyond loopback (imports are refused until roots are given).
    #[arg(long = "import-root", env = "PUMAS_IMPORT_ROOTS", value_delimiter = ',')]
    pub import_roots: Vec<PathBuf>,
    /// How many import, reindex and verify jobs work at once and wait.
    #[command(flatten)]
    pub jobs: crate::jobs::JobLimits,
    /// How long the change feed and the hash cache are kept.
    #[command(flatten)]
    pub retention: crate::retention::Retention,
    /// Concurrent-call limit and deadline (the gateway's, on this backend too).
    #[command(flatten)]
    pub limits: pumas_runtime::LimitArgs,
}

impl Config {
    /// The data root this service works on.
    pub fn data_root(&self) -> DataRoot {
        DataRoot::new(self.data_root.clone().unwrap_or_else(DataRoot::default_path))
    }

    /// The library policy these flags describe.
    pub fn policy(&self) -> Policy {
        Policy {
            refuse_pickle: self.refuse_pickle,
            import_roots: self
                .import_roots
                .iter()
                .map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
                .collect(),
            import_roots_required: false,
            download_staging: Some(self.data_root().downloads_dir()),
            job_limits: self.jobs,
            retention: self.retention,
            catalog_dir: Some(self.data_root().catalog_dir()),
        }
    }
}
