//! What every Pumas service shares, and nothing more:
//!
//! - [`serve`]: bind + serve a set of gRPC routes with `grpc.health.v1`, server reflection
//!   (v1 and v1alpha), a tracing span per call, per-call metrics, limits and graceful shutdown;
//! - [`telemetry`]: `tracing` with an optional OpenTelemetry OTLP exporter and W3C trace context
//!   propagated through gRPC metadata, in (server) and out (clients);
//! - [`metrics`]: per-RPC counts, codes and latencies in the Prometheus format;
//! - [`tls`]: TLS and mutual TLS for servers and for calls between services;
//! - [`service_auth`]: the service token backends require and Pumas clients send;
//! - [`shutdown`]: a future that resolves on SIGINT/SIGTERM, and a handle that fans it out;
//! - [`failure`]: transport-free failure kinds that domains record;
//! - [`error`]: the one mapping from domain errors to `tonic::Status` with rich details;
//! - [`client`]: channels to other Pumas services that carry trace context;
//! - [`local`]: calls between roles of one process, without the network;
//! - [`sqlite`]: the SQLite opener (WAL, busy timeout, many readers and one writer);
//! - [`fsio`]: fsyncing atomic file writes; [`time`]: clock helpers.
//!
//! Domain logic lives in the service that owns it, never here.

pub mod client;
pub mod closing;
pub mod error;
pub mod failure;
pub mod fsio;
pub mod gate;
pub mod info;
pub mod layout;
pub mod local;
pub mod metrics;
pub mod pages;
pub mod secret;
pub mod serve;
pub mod service_auth;
pub mod shutdown;
pub mod sqlite;
pub mod stream;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use error::ApiError;
pub use failure::{Failure, FailureKind};
pub use layout::DataRoot;
pub use secret::Secret;
pub use serve::{GrpcWeb, LimitArgs, Limits, ServeError, serve, serve_with_limits, standard_routes};
pub use shutdown::Shutdown;
pub use stream::BoxStream;
