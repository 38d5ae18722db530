//! The one mapping from domain errors to gRPC statuses.
//!
//! Every service converts its own `thiserror` enum into [`ApiError`], and `ApiError` into
//! `tonic::Status` here, so that every RPC of every service carries the same rich details:
//! always `google.rpc.ErrorInfo` (domain `pumas`, reason from `pumas.common.v1.ErrorReason`),
//! plus `BadRequest`, `ResourceInfo`, `RetryInfo` or `PreconditionFailure` as the code calls for.

use std::collections::HashMap;
use std::time::Duration;

use pumas_proto::common::v1::ErrorReason;

use crate::failure::{Failure, FailureKind};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Pumas error.
pub const ERROR_DOMAIN: &str = "pumas";

/// An error a Pumas RPC returns, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is wrong. `field` is the request field path (e.g. `page_size`).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The named resource does not exist.
    #[error("{resource_type} `{name}` not found")]
    NotFound { resource_type: String, name: String },
    /// The named resource does not exist, with what the caller can do about it.
    #[error("{resource_type} `{name}` not found: {help}")]
    NotFoundHelp {
        resource_type: String,
        name: String,
        help: String,
    },
    /// The named resource exists already.
    #[error("{resource_type} `{name}` already exists")]
    AlreadyExists { resource_type: String, name: String },
    /// The named resource exists already, with what to do instead.
    #[error("{resource_type} `{name}` already exists: {help}")]
    AlreadyExistsHelp {
        resource_type: String,
        name: String,
        help: String,
    },
    /// The system is not in the state the call needs. `kind` is a stable violation type.
    #[error("{message}")]
    FailedPrecondition {
        kind: String,
        subject: String,
        message: String,
    },
    /// A backend this call needs is down or unreachable.
    #[error("the {backend} service is unavailable: {message}")]
    Unavailable {
        backend: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A backend speaks a dependency contract version we do not.
    #[error("the {backend} service speaks dependency contract version {found}, this build speaks {expected}")]
    ContractMismatch {
        backend: String,
        found: u32,
        expected: u32,
    },
    /// A capability that is part of the contract but not built yet.
    #[error("{rpc} is not built yet: it arrives with {capability}")]
    NotImplemented { rpc: String, capability: String },
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Not allowed, e.g. a gated repository without a token.
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit was hit.
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A cursor or position the service no longer keeps (or never had).
    #[error("{field}: {reason}")]
    OutOfRange { field: String, reason: String },
    /// Data failed verification.
    #[error("{0}")]
    DataLoss(String),
    /// A deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The operation was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// A failure inside Pumas. The detail is logged, never sent to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Shorthand for [`ApiError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ApiError::NotFound`].
    pub fn not_found(resource_type: impl Into<String>, name: impl Into<String>) -> Self {
        Self::NotFound {
            resource_type: resource_type.into(),
            name: name.into(),
        }
    }

    /// Shorthand for [`ApiError::Unavailable`] with a retry hint of one second.
    pub fn unavailable(backend: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unavailable {
            backend: backend.into(),
            message: message.into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    /// Shorthand for [`ApiError::NotImplemented`].
    pub fn not_implemented(rpc: impl Into<String>, capability: impl Into<String>) -> Self {
        Self::NotImplemented {
            rpc: rpc.into(),
            capability: capability.into(),
        }
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound { .. } | Self::NotFoundHelp { .. } => Code::NotFound,
            Self::AlreadyExists { .. } | Self::AlreadyExistsHelp { .. } => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Unavailable { .. } | Self::ContractMismatch { .. } => Code::Unavailable,
            Self::NotImplemented { .. } => Code::Unimplemented,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::OutOfRange { .. } => Code::OutOfRange,
            Self::DataLoss(_) => Code::DataLoss,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Cancelled(_) => Code::Cancelled,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The stable `ErrorInfo.reason` for this error.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::InvalidArgument { .. } => ErrorReason::InvalidArgument,
            Self::NotFound { .. } | Self::NotFoundHelp { .. } => ErrorReason::NotFound,
            Self::AlreadyExists { .. } | Self::AlreadyExistsHelp { .. } => ErrorReason::AlreadyExists,
            Self::FailedPrecondition { .. } => ErrorReason::FailedPrecondition,
            Self::Unavailable { .. } => ErrorReason::BackendUnavailable,
            Self::ContractMismatch { .. } => ErrorReason::ContractMismatch,
            Self::NotImplemented { .. } => ErrorReason::NotImplemented,
            Self::Unauthenticated(_) => ErrorReason::Unauthenticated,
            Self::PermissionDenied(_) => ErrorReason::PermissionDenied,
            Self::ResourceExhausted { .. } => ErrorReason::ResourceExhausted,
            Self::OutOfRange { .. } => ErrorReason::OutOfRange,
            Self::DataLoss(_) => ErrorReason::DataLoss,
            Self::DeadlineExceeded(_) => ErrorReason::DeadlineExceeded,
            Self::Cancelled(_) => ErrorReason::Cancelled,
            Self::Internal(_) => ErrorReason::Internal,
        }
    }
}

/// The reason a failure with this gRPC code reports when nothing more specific is known.
pub fn reason_for_code(code: Code) -> ErrorReason {
    match code {
        Code::InvalidArgument => ErrorReason::InvalidArgument,
        Code::NotFound => ErrorReason::NotFound,
        Code::AlreadyExists => ErrorReason::AlreadyExists,
        Code::FailedPrecondition | Code::Aborted => ErrorReason::FailedPrecondition,
        Code::Unavailable => ErrorReason::BackendUnavailable,
        Code::Unimplemented => ErrorReason::NotImplemented,
        Code::Unauthenticated => ErrorReason::Unauthenticated,
        Code::PermissionDenied => ErrorReason::PermissionDenied,
        Code::ResourceExhausted => ErrorReason::ResourceExhausted,
        Code::DataLoss => ErrorReason::DataLoss,
        Code::DeadlineExceeded => ErrorReason::DeadlineExceeded,
        Code::Cancelled => ErrorReason::Cancelled,
        Code::OutOfRange => ErrorReason::OutOfRange,
        Code::Ok | Code::Unknown | Code::Internal => ErrorReason::Internal,
    }
}

/// A failure recorded on a job or a model (`ErrorStatus`), its `reason` spelled as the
/// contract says: the `ErrorReason` name, e.g. `BACKEND_UNAVAILABLE`, never a code name.
pub fn error_status(code: Code, message: impl Into<String>) -> pumas_proto::common::v1::ErrorStatus {
    pumas_proto::common::v1::ErrorStatus {
        code: code as i32,
        reason: reason_name(reason_for_code(code)).to_owned(),
        message: message.into(),
    }
}

impl ApiError {
    /// This error as an `ErrorStatus` (internals hidden, as in a gRPC answer).
    pub fn to_error_status(&self) -> pumas_proto::common::v1::ErrorStatus {
        let message = match self {
            Self::Internal(_) => "internal error; the server log has the details".to_owned(),
            other => other.to_string(),
        };
        pumas_proto::common::v1::ErrorStatus {
            code: self.code() as i32,
            reason: reason_name(self.reason()).to_owned(),
            message,
        }
    }
}

impl FailureKind {
    /// The gRPC code of this kind.
    pub fn code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::OutOfRange => Code::OutOfRange,
            Self::Unavailable => Code::Unavailable,
            Self::DataLoss => Code::DataLoss,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Cancelled => Code::Cancelled,
            Self::Internal => Code::Internal,
        }
    }

    /// The kind of a status another service answered with.
    pub fn of_code(code: Code) -> Self {
        Self::from_code_number(code as i32)
    }
}

impl Failure {
    /// The failure as a job or model record carries it to clients.
    pub fn to_error_status(&self) -> pumas_proto::common::v1::ErrorStatus {
        error_status(self.kind.code(), self.message.clone())
    }

    /// The failure a status from another service stands for, keeping its message.
    pub fn from_status(status: &Status) -> Self {
        Self::new(FailureKind::of_code(status.code()), status.message())
    }
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Self {
        let mut details = ErrorDetails::new();
        details.set_error_info(
            reason_name(reason_for_code(failure.kind.code())),
            ERROR_DOMAIN,
            HashMap::new(),
        );
        Status::with_error_details(failure.kind.code(), failure.message, details)
    }
}

/// `ERROR_REASON_NOT_FOUND` -> `NOT_FOUND`: the name clients see in `ErrorInfo.reason`.
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        let message = match &err {
            ApiError::Internal(detail) => {
                // The caller gets no internals; the log line carries them and the trace id.
                tracing::error!(error = %detail, "internal error");
                "internal error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        match &err {
            ApiError::InvalidArgument { field, reason } | ApiError::OutOfRange { field, reason } => {
                details.add_bad_request_violation(field.clone(), reason.clone());
                metadata.insert("field".to_owned(), field.clone());
            }
            ApiError::NotFound { resource_type, name }
            | ApiError::NotFoundHelp {
                resource_type, name, ..
            }
            | ApiError::AlreadyExists { resource_type, name }
            | ApiError::AlreadyExistsHelp {
                resource_type, name, ..
            } => {
                details.set_resource_info(resource_type.clone(), name.clone(), "", message.clone());
            }
            ApiError::FailedPrecondition {
                kind,
                subject,
                message,
            } => {
                details.add_precondition_failure_violation(kind.clone(), subject.clone(), message.clone());
            }
            ApiError::Unavailable {
                backend, retry_after, ..
            } => {
                details.set_retry_info(*retry_after);
                metadata.insert("backend".to_owned(), backend.clone());
            }
            ApiError::ContractMismatch {
                backend,
                found,
                expected,
            } => {
                metadata.insert("backend".to_owned(), backend.clone());
                metadata.insert("found_version".to_owned(), found.to_string());
                metadata.insert("expected_version".to_owned(), expected.to_string());
            }
            ApiError::ResourceExhausted { retry_after, .. } => {
                details.set_retry_info(*retry_after);
            }
            ApiError::NotImplemented { rpc, capability } => {
                metadata.insert("rpc".to_owned(), rpc.clone());
                metadata.insert("capability".to_owned(), capability.clone());
            }
            ApiError::Unauthenticated(_)
            | ApiError::PermissionDenied(_)
            | ApiError::DataLoss(_)
            | ApiError::DeadlineExceeded(_)
            | ApiError::Cancelled(_)
            | ApiError::Internal(_) => {}
        }
        details.set_error_info(reason_name(err.reason()), ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

/// Checks a `page_size` the AIP way: 0 means `default`, larger than `max` is capped, negative is
/// INVALID_ARGUMENT.
pub fn page_size(requested: i32, default: u32, max: u32) -> Result<u32, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid(
            "page_size",
            "must be zero (server default) or positive",
        )),
        0 => Ok(default),
        n => Ok((n as u32).min(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reports_a_contract_reason() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            let status = error_status(code, "x");
            let full = format!("ERROR_REASON_{}", status.reason);
            assert!(
                ErrorReason::from_str_name(&full).is_some(),
                "{code:?} -> {}",
                status.reason
            );
            assert_ne!(status.reason, "UNSPECIFIED");
        }
        assert_eq!(error_status(Code::Unavailable, "x").reason, "BACKEND_UNAVAILABLE");
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::of_code(kind.code()), kind);
            let reason = Failure::new(kind, "x").to_error_status().reason;
            assert!(
                ErrorReason::from_str_name(&format!("ERROR_REASON_{reason}")).is_some(),
                "{kind:?} -> {reason}"
            );
        }
        assert_eq!(
            ApiError::not_found("model", "x").to_error_status().reason,
            "NOT_FOUND"
        );
    }

    #[test]
    fn invalid_argument_carries_bad_request_and_error_info() {
        let status = Status::from(ApiError::invalid("page_size", "must be positive"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "page_size");
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, "pumas");
    }

    #[test]
    fn internal_hides_detail() {
        let status = Status::from(ApiError::Internal("disk /dev/sda1 on fire".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("sda1"));
    }

    #[test]
    fn unavailable_names_backend_and_retry() {
        let status = Status::from(ApiError::unavailable("index", "connection refused"));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("index"));
        let details = status.get_error_details();
        assert!(details.retry_info().is_some());
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("BACKEND_UNAVAILABLE")
        );
    }

    #[test]
    fn not_implemented_names_capability() {
        let status = Status::from(ApiError::not_implemented(
            "IndexService.ListModels",
            "the index capability",
        ));
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("the index capability"));
    }

    #[test]
    fn page_size_rules() {
        assert_eq!(page_size(0, 50, 1000).ok(), Some(50));
        assert_eq!(page_size(5000, 50, 1000).ok(), Some(1000));
        assert_eq!(page_size(7, 50, 1000).ok(), Some(7));
        assert!(page_size(-1, 50, 1000).is_err());
    }
}
