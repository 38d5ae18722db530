//! Calls to backends, all through [`BackendClient`]: the gateway's deadline, a span naming the backend
//! and the RPC, and errors that keep the owner's details or, when the backend cannot be
//! reached, say which backend is down.

use std::time::Duration;

use pumas_runtime::{ApiError, BoxStream};
use tokio_stream::StreamExt as _;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Deadline for a unary call to a backend.
pub const UNARY_DEADLINE: Duration = Duration::from_secs(30);

/// A request to a backend with the gateway's deadline.
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(UNARY_DEADLINE);
    request
}

/// A backend's client with its name, the one way the gateway calls a backend.
#[derive(Clone)]
pub struct BackendClient<C> {
    pub name: &'static str,
    pub client: C,
}

impl<C: Clone> BackendClient<C> {
    pub fn new(name: &'static str, client: C) -> Self {
        Self { name, client }
    }

    /// A unary call with the gateway's deadline; answers the backend's message or a mapped
    /// error. `rpc` picks the client method: `async |mut c, req| c.get_model(req).await`.
    pub async fn call<Req, Resp>(
        &self,
        message: Req,
        rpc: impl AsyncFnOnce(C, tonic::Request<Req>) -> Result<tonic::Response<Resp>, Status>,
    ) -> Result<Resp, Status> {
        let span = tracing::debug_span!("backend call", backend = self.name);
        let answer = tracing::Instrument::instrument(rpc(self.client.clone(), request(message)), span).await;
        answer
            .map(tonic::Response::into_inner)
            .map_err(|status| backend_error(self.name, status))
    }

    /// A server-streaming call (no deadline: it lasts as long as the job), each message mapped
    /// by `map` and the backend's errors mapped as in [`BackendClient::call`].
    pub async fn watch<Req, T, U>(
        &self,
        message: Req,
        rpc: impl AsyncFnOnce(C, tonic::Request<Req>) -> Result<tonic::Response<tonic::Streaming<T>>, Status>,
        map: fn(T) -> U,
    ) -> Result<BoxStream<U>, Status>
    where
        T: Send + 'static,
        U: Send + 'static,
    {
        let name = self.name;
        let stream = rpc(self.client.clone(), tonic::Request::new(message))
            .await
            .map_err(|status| backend_error(name, status))?
            .into_inner();
        Ok(Box::pin(stream.map(move |item| {
            item.map(map).map_err(|status| backend_error(name, status))
        })))
    }
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
