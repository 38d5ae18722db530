//! Per-RPC metrics: calls handled by service, method and status code, handling time, calls in
//! flight. Exposed in the Prometheus text format over HTTP (`--metrics-listen`), under the names
//! go-grpc-prometheus uses (`grpc_server_handled_total`, `grpc_server_handling_seconds`), so
//! existing gRPC dashboards and alerts work unchanged.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `--metrics-listen` flag of every serving role.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics (per-RPC counts by status
    /// code, latency histograms, calls in flight). Off when unset.
    #[arg(long = "metrics-listen", env = "PUMAS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    handled: Family<HandledLabels, Counter>,
    seconds: HistogramFamily,
    in_flight: Gauge,
}

fn latency_histogram() -> Histogram {
    // 250 µs .. ~8 s: local calls take well under a millisecond, imports and repairs seconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let handled = Family::<HandledLabels, Counter>::default();
    let seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
    let in_flight = Gauge::default();
    registry.register(
        "grpc_server_handled",
        "gRPC calls completed, by service, method and status code",
        handled.clone(),
    );
    registry.register(
        "grpc_server_handling_seconds",
        "Time from a call's arrival to the end of its response (streams: until they end)",
        seconds.clone(),
    );
    registry.register(
        "grpc_server_in_flight",
        "gRPC calls being handled now",
        in_flight.clone(),
    );
    Metrics {
        registry,
        handled,
        seconds,
        in_flight,
    }
});

/// Every metric of this process in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

/// Serves `GET /metrics` on `listen` in the background; returns the bound address.
pub async fn serve_metrics(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                render(),
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "metrics endpoint stopped");
        }
    });
    Ok(local)
}

/// The name of a gRPC status code as the gRPC spec spells it.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// One call being measured; recorded when dropped (after its response body ended or was
/// abandoned by the client).
struct Call {
    path: String,
    started: Instant,
    code: Option<i32>,
    ended: bool,
}

impl Call {
    fn start(path: &str) -> Self {
        METRICS.in_flight.inc();
        Call {
            path: path.to_owned(),
            started: Instant::now(),
            code: None,
            ended: false,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
        let code = match self.code {
            Some(code) => code,
            // A response that ended without a status is malformed; one cut short was cancelled.
            None if self.ended => 2,
            None => 1,
        };
        // Unknown paths answer UNIMPLEMENTED; folding them keeps a caller's typos (or a
        // scanner) from minting a label set per path.
        let (service, method) = match self.path.trim_start_matches('/').split_once('/') {
            Some((service, method)) if code != 12 => (service.to_owned(), method.to_owned()),
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let labels = MethodLabels {
            grpc_service: service,
            grpc_method: method,
        };
        METRICS.seconds.get_or_create(&labels).observe(elapsed);
        METRICS
            .handled
            .get_or_create(&HandledLabels {
                grpc_service: labels.grpc_service,
                grpc_method: labels.grpc_method,
                grpc_code: code_name(code),
            })
            .inc();
    }
}

/// Tower layer that measures every call of a gRPC server.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// See [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<tower::BoxError>,
    ResBody: Default,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call::start(request.uri().path());
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`MetricsService`].
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<tower::BoxError>,
    ResBody: Default,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        // A layer below refused the call (load shedding, a timeout): answer with the status
        // tonic would have made of the error, so the code is counted too.
        let response = result.unwrap_or_else(|err| tonic::Status::from_error(err.into()).into_http());
        if let Some(call) = call.as_mut() {
            // Errors answered before any message ("trailers-only") carry their status here.
            call.code = grpc_status(response.headers());
        }
        Poll::Ready(Ok(response.map(|inner| MeteredBody { inner, call })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when it ends, with the status from its trailers.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(call)) = (frame.trailers_ref(), this.call.as_mut()) {
                    call.code = grpc_status(trailers).or(call.code);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut() {
                    call.code.get_or_insert(2);
                }
            }
            None => {
                if let Some(mut call) = this.call.take() {
                    call.ended = true;
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_call_is_counted_with_its_code_and_unknown_paths_are_folded() {
        let mut ok = Call::start("/pumas.test.v1.T/Known");
        ok.code = Some(5);
        ok.ended = true;
        drop(ok);
        let mut bogus = Call::start("/random/path-1234");
        bogus.code = Some(12);
        drop(bogus);
        let text = render();
        assert!(
            text.contains(r#"grpc_server_handled_total{grpc_service="pumas.test.v1.T",grpc_method="Known",grpc_code="NOT_FOUND"} 1"#),
            "{text}"
        );
        assert!(!text.contains("path-1234"), "{text}");
        assert!(
            text.contains(r#"grpc_method="unknown",grpc_code="UNIMPLEMENTED""#),
            "{text}"
        );
    }
}
