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

/// The layer that wraps every response body of a server in a [`ClosingBody`] that ends once
/// `closed` holds true.
pub fn layer<B>(
    closed: watch::Receiver<bool>,
) -> tower::util::MapResponseLayer<impl Fn(http::Response<B>) -> http::Response<ClosingBody<B>> + Clone> {
    tower::util::MapResponseLayer::new(move |response: http::Response<B>| {
        let closed = closed.clone();
        response.map(|inner| ClosingBody {
            inner,
            closed: Some(closed),
            closing: None,
            done: false,
        })
    })
}

pin_project_lite::pin_project! {
    /// A response body that ends with UNAVAILABLE trailers when the server shuts down.
    pub struct ClosingBody<B> {
        #[pin]
        inner: B,
        // The shutdown signal, turned into a future the first time the body has to wait (a
        // unary answer never does).
        closed: Option<watch::Receiver<bool>>,
        closing: Option<Closing>,
        done: bool,
    }
}

impl<B: Default> Default for ClosingBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            closed: None,
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
        if this.closing.is_none()
            && let Some(mut closed) = this.closed.take()
        {
            *this.closing = Some(Box::pin(async move {
                let _ = closed.wait_for(|closed| *closed).await;
            }));
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
