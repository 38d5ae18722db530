//! What kind of failure a job or a domain operation met, with no transport in sight.
//!
//! Domains (fetch's downloads, the mapper's jobs) record a [`Failure`]; the API layer turns it
//! into a gRPC status or an `ErrorStatus` with `error`, the one place that knows codes.

use serde::{Deserialize, Serialize};

/// The kinds follow the canonical `google.rpc.Code` set, so every kind has one obvious code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    ResourceExhausted,
    OutOfRange,
    Unavailable,
    DataLoss,
    DeadlineExceeded,
    Cancelled,
    Internal,
}

impl FailureKind {
    /// Every kind, for exhaustive tests.
    pub const ALL: [Self; 13] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::Unauthenticated,
        Self::FailedPrecondition,
        Self::ResourceExhausted,
        Self::OutOfRange,
        Self::Unavailable,
        Self::DataLoss,
        Self::DeadlineExceeded,
        Self::Cancelled,
        Self::Internal,
    ];

    /// The kind of a `google.rpc.Code` number, as records written before kinds existed hold.
    pub fn from_code_number(code: i32) -> Self {
        match code {
            1 => Self::Cancelled,
            3 => Self::InvalidArgument,
            4 => Self::DeadlineExceeded,
            5 => Self::NotFound,
            6 => Self::AlreadyExists,
            7 => Self::PermissionDenied,
            8 => Self::ResourceExhausted,
            9 | 10 => Self::FailedPrecondition,
            11 => Self::OutOfRange,
            14 => Self::Unavailable,
            15 => Self::DataLoss,
            16 => Self::Unauthenticated,
            _ => Self::Internal,
        }
    }
}

/// A failure as a domain records it: what kind, and what happened and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Shorthand for a failure inside Pumas.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Internal, message)
    }
}

/// On disk a failure is `{kind, message}`; older records held `{code, reason, message}`.
#[derive(Deserialize)]
struct StoredFailure {
    #[serde(default)]
    kind: Option<FailureKind>,
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    message: String,
}

impl<'de> Deserialize<'de> for Failure {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredFailure::deserialize(deserializer)?;
        let kind = stored
            .kind
            .or(stored.code.map(FailureKind::from_code_number))
            .unwrap_or(FailureKind::Internal);
        Ok(Self::new(kind, stored.message))
    }
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut s = serializer.serialize_struct("Failure", 2)?;
        s.serialize_field("kind", &self.kind)?;
        s.serialize_field("message", &self.message)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_new_and_old_records() {
        let new: Failure = serde_json::from_str(r#"{"kind":"data_loss","message":"m"}"#).expect("new");
        assert_eq!(new, Failure::new(FailureKind::DataLoss, "m"));
        let old: Failure =
            serde_json::from_str(r#"{"code":14,"reason":"BACKEND_UNAVAILABLE","message":"m"}"#).expect("old");
        assert_eq!(old.kind, FailureKind::Unavailable);
        let round: Failure =
            serde_json::from_str(&serde_json::to_string(&new).expect("json")).expect("round");
        assert_eq!(round, new);
    }
}
