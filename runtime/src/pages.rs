//! Web pages beside the API on one port: GET and HEAD requests go to a page router, everything
//! else (gRPC and gRPC-Web are POSTs) to the services. gRPC-Web answers a plain HTTP/1.1 GET
//! with 400, so the pages must be routed before it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::ServiceExt as _;

/// Sends GET and HEAD to `router`.
#[derive(Clone)]
pub struct PagesLayer {
    router: axum::Router,
}

impl PagesLayer {
    pub fn new(router: axum::Router) -> Self {
        Self { router }
    }
}

impl<S> tower::Layer<S> for PagesLayer {
    type Service = Pages<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pages {
            router: self.router.clone(),
            inner,
        }
    }
}

/// See [`PagesLayer`].
#[derive(Clone)]
pub struct Pages<S> {
    router: axum::Router,
    inner: S,
}

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Pages<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Boxed<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.method() == http::Method::GET || request.method() == http::Method::HEAD {
            let router = self.router.clone();
            return Box::pin(async move {
                let response: Result<_, Infallible> =
                    router.oneshot(request.map(axum::body::Body::new)).await;
                let response = match response {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok(response.map(tonic::body::Body::new))
            });
        }
        Box::pin(self.inner.call(request))
    }
}
