//! Serving a service: health, reflection, a span per call, graceful shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;

use crate::telemetry::server_span;

/// How long in-flight calls (and open watch streams) get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not load the descriptor sets (a build defect).
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The routes every service starts from: `grpc.health.v1.Health` and server reflection (v1 and
/// v1alpha, because grpcio-reflection clients speak only v1alpha). Reflection advertises exactly
/// what this server serves: `api_service`, health and reflection (the descriptor set holds every
/// Pumas package, so without the list the index would advertise the gateway's service too).
/// Add the service's own API to the returned routes, and mark it serving on the returned reporter.
pub fn standard_routes(api_service: &str) -> Result<(HealthReporter, Routes), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pumas_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(api_service)
            .with_service_name(HEALTH_SERVICE)
            .with_service_name(REFLECTION_V1)
            .with_service_name(REFLECTION_V1ALPHA)
    };
    let v1 = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let v1alpha = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let routes = Routes::new(health).add_service(v1).add_service(v1alpha);
    Ok((reporter, routes))
}

/// gRPC health service name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// Server reflection v1 service name.
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// Server reflection v1alpha service name.
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Limits a server applies to every call.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Calls handled at once across all connections; more are refused with RESOURCE_EXHAUSTED
    /// (shed, not queued). None = unlimited.
    pub max_concurrent_calls: Option<usize>,
    /// Deadline of a call (unary calls and the start of streams); a caller's shorter one wins.
    pub default_timeout: Option<Duration>,
    /// Also serve gRPC-Web (browsers), on the same port over HTTP/1.1 and HTTP/2.
    pub grpc_web: Option<GrpcWeb>,
}

/// gRPC-Web on a server: the browser's way in, with the same auth, limits and tracing as gRPC
/// (the translation sits outside them, so every call is a gRPC call by the time they see it).
#[derive(Clone, Default)]
pub struct GrpcWeb {
    /// Origins other than the server's own that browsers may call from (CORS), e.g.
    /// `http://localhost:5173`. Empty: same-origin only (the UI the gateway serves itself).
    pub allowed_origins: Vec<http::HeaderValue>,
    /// Pages served on GET and HEAD (the gateway's web UI).
    pub pages: Option<axum::Router>,
}

impl std::fmt::Debug for GrpcWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcWeb")
            .field("allowed_origins", &self.allowed_origins)
            .field("pages", &self.pages.is_some())
            .finish()
    }
}

impl GrpcWeb {
    /// The CORS layer: the listed origins only, the headers gRPC-Web sends and reads.
    fn cors(&self) -> Option<tower_http::cors::CorsLayer> {
        use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
        if self.allowed_origins.is_empty() {
            return None;
        }
        let name = HeaderName::from_static;
        Some(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::AllowOrigin::list(self.allowed_origins.clone()))
                .allow_methods([http::Method::POST, http::Method::OPTIONS])
                .allow_headers([
                    CONTENT_TYPE,
                    AUTHORIZATION,
                    name("x-grpc-web"),
                    name("x-user-agent"),
                    name("grpc-timeout"),
                    name("connect-protocol-version"),
                    name("connect-timeout-ms"),
                ])
                .expose_headers([
                    name("grpc-status"),
                    name("grpc-message"),
                    name("grpc-status-details-bin"),
                ])
                .max_age(Duration::from_secs(600)),
        )
    }
}

/// The call limits as flags, the same on every service and on `pumas up`, so a backend sheds
/// and times out calls exactly as the gateway in front of it does.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct LimitArgs {
    /// Calls handled at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "PUMAS_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,
    /// Deadline of a call, in milliseconds (a caller's shorter deadline wins).
    #[arg(long, env = "PUMAS_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub request_timeout_ms: u64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 1024,
            request_timeout_ms: 60_000,
        }
    }
}

impl LimitArgs {
    /// The limits these flags ask for (zero counts as one).
    pub fn limits(&self) -> Limits {
        Limits {
            max_concurrent_calls: Some(self.max_concurrent_calls.max(1)),
            default_timeout: Some(Duration::from_millis(self.request_timeout_ms.max(1))),
            grpc_web: None,
        }
    }
}

/// Serves `routes` on an already bound `listener` until `shutdown` resolves, then lets in-flight
/// calls finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_limits(listener, routes, shutdown, Limits::default()).await
}

/// Serves one API service on `listener` with health (SERVING from the start), reflection, limits
/// and graceful shutdown: the whole serving part of a backend's `serve`. The API (not health or
/// reflection) requires the installed service token, when there is one.
pub async fn serve_service<S>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<(), ServeError>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health, routes) = standard_routes(S::NAME)?;
    health.set_serving::<S>().await;
    let checked = tonic::service::interceptor::InterceptedService::new(
        service,
        crate::service_auth::RequireServiceToken::current(),
    );
    serve_with_limits(listener, routes.add_service(checked), shutdown, limits).await
}

/// [`serve`] with call limits.
pub async fn serve_with_limits(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // A caller's mistake (bad argument, unknown id, no token...) is the caller's outcome, not a
    // server failure: only faults of ours are logged as errors, per call. UNAVAILABLE (a backend
    // down or still starting) is a state, logged once where it changes (the gateway's backend
    // watch, the starting service), not once per caller.
    let classifier = {
        use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};
        [
            GrpcCode::Cancelled,
            GrpcCode::InvalidArgument,
            GrpcCode::NotFound,
            GrpcCode::AlreadyExists,
            GrpcCode::PermissionDenied,
            GrpcCode::ResourceExhausted,
            GrpcCode::FailedPrecondition,
            GrpcCode::Aborted,
            GrpcCode::OutOfRange,
            GrpcCode::Unauthenticated,
            GrpcCode::Unavailable,
        ]
        .into_iter()
        .fold(GrpcErrorsAsFailures::new(), GrpcErrorsAsFailures::with_success)
    };
    let trace = tower_http::trace::TraceLayer::new(tower_http::classify::SharedClassifier::new(classifier))
        .make_span_with(server_span);
    // Load shedding turns "no capacity" into RESOURCE_EXHAUSTED at once (tonic maps
    // tower's Overloaded to that code) instead of queueing without bound.
    let max_calls = limits
        .max_concurrent_calls
        .unwrap_or(tokio::sync::Semaphore::MAX_PERMITS);
    let limit = tower::ServiceBuilder::new()
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max_calls));
    let mut builder = tonic::transport::Server::builder().accept_http1(limits.grpc_web.is_some());
    if let Some(timeout) = limits.default_timeout {
        builder = builder.timeout(timeout);
    }
    // Open streams end at shutdown, so the grace period is for unary calls, not watchers.
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
    let cors = limits.grpc_web.as_ref().and_then(GrpcWeb::cors);
    let web = limits.grpc_web.as_ref().map(|_| tonic_web::GrpcWebLayer::new());
    let pages = limits
        .grpc_web
        .as_ref()
        .and_then(|w| w.pages.clone())
        .map(crate::pages::PagesLayer::new);
    // The same stack for callers in this process (crate::local), minus the transport.
    let local = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<_>| r.map(tonic::body::Body::new))
        .layer(trace.clone())
        .layer(crate::metrics::MetricsLayer)
        .layer(crate::closing::layer(closed_rx.clone()))
        .option_layer(limits.default_timeout.map(tower::timeout::TimeoutLayer::new))
        .layer(limit.clone())
        .service(routes.clone());
    let registration = listener
        .local_addr()
        .ok()
        .and_then(|address| crate::local::register(address.to_string(), crate::local::boxed(local)));
    let router = builder
        .layer(tower::util::option_layer(cors))
        .layer(tower::util::option_layer(pages))
        .layer(tower::util::option_layer(web))
        // gRPC-Web translates tonic's own body type; the layers below wrap it in theirs.
        .layer(tower::util::MapResponseLayer::new(|r: http::Response<_>| {
            r.map(tonic::body::Body::new)
        }))
        .layer(trace)
        .layer(crate::metrics::MetricsLayer)
        .layer(crate::closing::layer(closed_rx))
        .layer(limit)
        .add_routes(routes);
    let stopped = async move {
        let _ = stop_rx.await;
    };
    match crate::tls::server_tls() {
        // Our own accept loop, so a refused handshake is logged with who tried.
        Some(tls) => {
            let incoming = crate::tls::incoming(listener, tls.clone());
            finish(
                router.serve_with_incoming_shutdown(incoming, stopped),
                shutdown,
                (stop_tx, closed_tx, registration),
            )
            .await
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            finish(
                router.serve_with_incoming_shutdown(incoming, stopped),
                shutdown,
                (stop_tx, closed_tx, registration),
            )
            .await
        }
    }
}

/// Runs `server` until `shutdown`, then lets in-flight calls finish for at most
/// [`SHUTDOWN_GRACE`].
async fn finish(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    shutdown: impl Future<Output = ()>,
    (stop_tx, closed_tx, registration): (
        tokio::sync::oneshot::Sender<()>,
        tokio::sync::watch::Sender<bool>,
        Option<crate::local::Registration>,
    ),
) -> Result<(), ServeError> {
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown => {}
    }
    // No new in-process calls from now on, as no new connections.
    drop(registration);
    closed_tx.send_replace(true);
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result.map_err(ServeError::from),
        Err(_) => {
            tracing::warn!("calls still open {SHUTDOWN_GRACE:?} after shutdown; closing them");
            Ok(())
        }
    }
}
