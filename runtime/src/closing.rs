//! Ends open response streams when the server shuts down. A watch stream (a job, a download, the
//! change feed) would otherwise hold its connection open, and graceful shutdown would wait out
//! its whole grace period for it. At shutdown, a stream still open gets its trailers at once:
//! `UNAVAILABLE`, "the server is shutting down", which clients treat as "reconnect". Unary calls
//! in flight finish normally.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

type Closing = Pin<Box<dyn Future<Output = ()> + Send>>;

fn closing(rx: &watch::Receiver<bool>) -> Closing {
    let mut rx = rx.clone();
    Box::pin(async move {
        let _ = rx.wait_for(|closed| *closed).await;
    })
}

/// Tower layer that ends a response body still open when `closed` turns true.
#[derive(Clone, Debug)]
pub struct ClosingLayer {
    closed: watch::Receiver<bool>,
}

impl ClosingLayer {
    /// Bodies end once `closed` holds true.
    pub fn new(closed: watch::Receiver<bool>) -> Self {
        Self { closed }
    }
}

impl<S> tower::Layer<S> for ClosingLayer {
    type Service = ClosingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClosingService {
            inner,
            closed: self.closed.clone(),
        }
    }
}

/// See [`ClosingLayer`].
#[derive(Clone, Debug)]
pub struct ClosingService<S> {
    inner: S,
    closed: watch::Receiver<bool>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ClosingService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ClosingBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let closed = self.closed.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| ClosingBody {
                inner,
                closing: Some(closing(&closed)),
                done: false,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends with UNAVAILABLE trailers when the server shuts down.
    pub struct ClosingBody<B> {
        #[pin]
        inner: B,
        closing: Option<Closing>,
        done: bool,
    }
}

impl<B: Default> Default for ClosingBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            closing: None,
            done: false,
        }
    }
}

impl<B: Body> Body for ClosingBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                *this.done = true;
            }
            return Poll::Ready(frame);
        }
        if let Some(closing) = this.closing.as_mut()
            && closing.as_mut().poll(cx).is_ready()
        {
            *this.done = true;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
            trailers.insert(
                "grpc-message",
                http::HeaderValue::from_static("the server is shutting down; reconnect"),
            );
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
