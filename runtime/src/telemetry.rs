//! Tracing for every process, OpenTelemetry export when asked, and W3C trace context carried in
//! gRPC metadata so that one trace spans client -> gateway -> backend.
//!
//! Spans always get OpenTelemetry ids (so context propagates and logs can name the trace); they
//! are exported only when an OTLP endpoint is configured.

use std::fmt;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Telemetry flags shared by every role (`PUMAS_*` environment variables work too).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TelemetryArgs {
    /// Log filter in `tracing` syntax, e.g. `info,pumas_index=debug`.
    #[arg(long = "log", env = "PUMAS_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// Log line format.
    #[arg(long, env = "PUMAS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint to export traces to, e.g. http://127.0.0.1:4317. Off when unset.
    #[arg(long, env = "PUMAS_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter `{filter}`: {reason}")]
    Filter { filter: String, reason: String },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    /// A global subscriber was installed already.
    #[error("tracing is already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Keeps the tracer provider alive; flushes pending spans on [`TelemetryGuard::shutdown`] or drop.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Flushes and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(%err, "could not flush traces at shutdown");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber: filtered logs to stderr, OpenTelemetry span ids always, OTLP
/// export when `args.otlp_endpoint` is set. Call it once per process, inside the tokio runtime.
pub fn init(service_name: &str, args: &TelemetryArgs) -> Result<TelemetryGuard, TelemetryError> {
    global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_new(&args.log_filter).map_err(|err| TelemetryError::Filter {
        filter: args.log_filter.clone(),
        reason: err.to_string(),
    })?;

    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let exporting = args.otlp_endpoint.is_some();
    if let Some(endpoint) = &args.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|err| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                reason: err.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("pumas"));

    // The log filter applies to log output only: spans that carry trace context are kept at
    // INFO for OpenTelemetry whatever the log level, so PUMAS_LOG=warn does not break tracing.
    let logs = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel_layer.with_filter(LevelFilter::INFO))
        .try_init()
        .map_err(|err| TelemetryError::AlreadyInitialised(err.to_string()))?;

    Ok(TelemetryGuard {
        provider: exporting.then_some(provider),
    })
}

/// Reads W3C trace context (`traceparent`, `tracestate`) from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes W3C trace context into outgoing gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The span of one incoming gRPC call, child of the caller's trace when it sent `traceparent`.
pub fn server_span<B>(request: &http::Request<B>) -> Span {
    let path = request.uri().path();
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.method = %path,
        trace_id = tracing::field::Empty,
    );
    let parent: Context = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
    // Setting a parent only fails when no OpenTelemetry layer is installed (plain unit tests).
    let _ = span.set_parent(parent);
    // Every log line of the call names its trace, so logs and traces join up.
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// A tonic interceptor that sends the current span's trace context to the callee.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextInjector;

impl tonic::service::Interceptor for TraceContextInjector {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let context = Span::current().context();
        global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        });
        crate::service_auth::attach(&mut request);
        Ok(request)
    }
}
