//! What can go wrong in the mapper's own work, by what the caller can do about it. The API
//! layer turns these into statuses; the domain never sees gRPC.

use std::path::PathBuf;

use crate::mapping::ConfigError;

/// A failure of a mapper operation.
#[derive(Debug, thiserror::Error)]
pub enum MapperError {
    /// The app name is not one a config file can have.
    #[error("`{0}` is not an app name (letters, digits, `-`, `_`, `.`)")]
    BadAppName(String),
    /// No config for this app; `help` says which apps there are, or where a config goes.
    #[error("app `{app}` not found: {help}")]
    UnknownApp { app: String, help: String },
    /// The app's config file does not parse or validate.
    #[error("the mapping config of {app} is invalid: {problems}")]
    InvalidConfig {
        app: String,
        path: PathBuf,
        problems: String,
    },
    /// A config given to store does not validate; nothing was written.
    #[error("the mapping config has {} problem(s)", .0.len())]
    Rejected(Vec<ConfigError>),
    /// A config sent over the API targets a folder this mapper may not write to.
    #[error("{0}")]
    RootNotAllowed(String),
    /// The library mount does not show the library: links made now would all dangle.
    #[error(
        "the library mount {mount} does not show the library ({why}); give this mapper the path where this host sees the index's models folder (--library-mount)"
    )]
    LibraryNotVisible { mount: PathBuf, why: String },
    /// The index could not be asked about the library.
    #[error("the mapper cannot read the library from the index: {0}")]
    IndexUnreachable(String),
    /// The operation does not apply to this kind of app.
    #[error("{0}")]
    NotForThisApp(String),
    /// An app reached through its API (InvokeAI) did not answer, or refused.
    #[error("{0}")]
    AppUnreachable(String),
    /// The link registry failed.
    #[error("link registry: {0}")]
    Registry(#[from] sqlx::Error),
    /// A failure inside the mapper (a file it could not write, a task that died).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = MapperError> = std::result::Result<T, E>;
