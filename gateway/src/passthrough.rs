//! Calls to backends: deadlines, and errors that keep the owner's details or, when the backend
//! cannot be reached, say which backend is down.

use std::time::Duration;

use pumas_runtime::ApiError;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Deadline for a unary call to a backend.
pub const UNARY_DEADLINE: Duration = Duration::from_secs(30);

/// A request to a backend with the gateway's deadline.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(UNARY_DEADLINE);
    request
}

/// Maps a backend's answer: a status the backend produced itself (it carries Pumas ErrorInfo)
/// passes through untouched; a transport failure becomes UNAVAILABLE naming the backend.
pub fn backend_error(backend: &str, status: Status) -> Status {
    if status.get_error_details().error_info().is_some() {
        return status;
    }
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled => ApiError::unavailable(
            backend,
            format!(
                "the {backend} service cannot be reached ({}); check that it is running and that the gateway's --{backend} address points at it",
                status.message()
            ),
        )
        .into(),
        Code::DeadlineExceeded => ApiError::DeadlineExceeded(format!(
            "the {backend} service did not answer within {}s: {}",
            UNARY_DEADLINE.as_secs(),
            status.message()
        ))
        .into(),
        _ => status,
    }
}
