//! Serving before the service is ready: a service whose start takes long (the index rebuilding
//! models.db from 100,000 metadata files) listens at once. Until it is ready, health says
//! NOT_SERVING and every API call is answered at once with `UNAVAILABLE`, a retry delay and what
//! it is doing, instead of hanging in the listen backlog until the caller's deadline.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::ApiError;
use crate::serve::{Limits, ServeError, serve_with_limits, standard_routes};

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

/// What a starting service says it is doing (e.g. "rebuilding models.db: 41,000 of 100,000").
pub type Progress = Arc<dyn Fn() -> String + Send + Sync>;

/// The API service once it exists; before that, `UNAVAILABLE` saying why.
pub struct Gate<S> {
    inner: Arc<OnceLock<S>>,
    backend: &'static str,
    progress: Progress,
}

impl<S> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            backend: self.backend,
            progress: Arc::clone(&self.progress),
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<HttpRequest> for Gate<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        match self.inner.get() {
            Some(service) => {
                let mut service = service.clone();
                Box::pin(async move { service.call(request).await })
            }
            None => {
                let status: tonic::Status = ApiError::Unavailable {
                    backend: self.backend.to_owned(),
                    message: format!("it is starting: {}; try again shortly", (self.progress)()),
                    retry_after: Some(Duration::from_secs(1)),
                }
                .into();
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Serves `S` on `listener` from now on: health and reflection at once, the API (behind the
/// service-token check) once `ready` gives the service. Until then health is NOT_SERVING and API
/// calls get `UNAVAILABLE` with a one-second retry delay and `progress()`. When `ready` fails,
/// the server stops and the error is returned.
pub async fn serve_when_ready<S, E>(
    listener: TcpListener,
    backend: &'static str,
    ready: impl Future<Output = Result<S, E>>,
    progress: Progress,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<Result<(), ServeError>, E>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health, routes) = match standard_routes(S::NAME) {
        Ok(pair) => pair,
        Err(e) => return Ok(Err(e)),
    };
    health.set_not_serving::<Gate<S>>().await;
    let gate = Gate {
        inner: Arc::new(OnceLock::new()),
        backend,
        progress,
    };
    let checked = tonic::service::interceptor::InterceptedService::new(
        gate.clone(),
        crate::service_auth::RequireServiceToken::current(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = serve_with_limits(
        listener,
        routes.add_service(checked),
        async move {
            tokio::select! {
                () = shutdown => {}
                _ = stop_rx => {}
            }
        },
        limits,
    );
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result),
        opened = ready => match opened {
            Ok(service) => {
                let _ = gate.inner.set(service);
                health.set_serving::<Gate<S>>().await;
                tracing::info!(service = S::NAME, "ready: serving its API");
            }
            Err(e) => {
                let _ = stop_tx.send(());
                let _ = server.await;
                return Err(e);
            }
        },
    }
    Ok(server.await)
}
