//! The index service's errors, and their one mapping to API errors.

use pumas_runtime::ApiError;

/// Everything that can go wrong in the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A request field is wrong.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// No such model.
    #[error("model `{0}` not found")]
    ModelNotFound(String),
    /// No such job.
    #[error("job `{0}` not found")]
    JobNotFound(String),
    /// No such profile.
    #[error("dependency profile `{0}` not found")]
    ProfileNotFound(String),
    /// No such binding.
    #[error("dependency binding `{0}` not found")]
    BindingNotFound(String),
    /// The same id exists with other content; `help` (may be empty) says what to do instead.
    #[error("{what} `{name}` already exists with different content{}", if help.is_empty() { String::new() } else { format!(": {help}") })]
    Conflict {
        what: String,
        name: String,
        help: String,
    },
    /// The operation needs another state.
    #[error("{message}")]
    Precondition {
        kind: String,
        subject: String,
        message: String,
    },
    /// Not enough disk space.
    #[error("not enough disk space: {0}")]
    NoSpace(String),
    /// A cursor older than what the index keeps.
    #[error("{field}: {reason}")]
    OutOfRange { field: String, reason: String },
    /// Too many jobs already wait; try again after one ends.
    #[error("{0}")]
    Busy(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// Anything else that is our fault.
    #[error("{0}")]
    Internal(String),
    /// Files failed verification or do not match what was promised.
    #[error("{0}")]
    DataLoss(String),
}

impl IndexError {
    /// Shorthand for [`IndexError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(err: IndexError) -> Self {
        match err {
            IndexError::Invalid { field, reason } => ApiError::InvalidArgument { field, reason },
            IndexError::ModelNotFound(id) => ApiError::not_found("model", id),
            IndexError::JobNotFound(id) => ApiError::not_found("job", id),
            IndexError::ProfileNotFound(id) => ApiError::not_found("dependency profile", id),
            IndexError::BindingNotFound(id) => ApiError::not_found("dependency binding", id),
            IndexError::Conflict { what, name, help } if help.is_empty() => ApiError::AlreadyExists {
                resource_type: what,
                name,
            },
            IndexError::Conflict { what, name, help } => ApiError::AlreadyExistsHelp {
                resource_type: what,
                name,
                help,
            },
            IndexError::Precondition {
                kind,
                subject,
                message,
            } => ApiError::FailedPrecondition {
                kind,
                subject,
                message,
            },
            IndexError::NoSpace(message) => ApiError::ResourceExhausted {
                message,
                retry_after: None,
            },
            IndexError::OutOfRange { field, reason } => ApiError::OutOfRange { field, reason },
            IndexError::Busy(message) => ApiError::ResourceExhausted {
                message,
                retry_after: Some(std::time::Duration::from_secs(5)),
            },
            IndexError::Db(e) => ApiError::Internal(format!("database: {e}")),
            IndexError::Io { context, source } => ApiError::Internal(format!("{context}: {source}")),
            IndexError::Internal(message) => ApiError::Internal(message),
            IndexError::DataLoss(message) => ApiError::DataLoss(message),
        }
    }
}

impl From<IndexError> for tonic::Status {
    fn from(err: IndexError) -> Self {
        ApiError::from(err).into()
    }
}
