//! The gateway: `pumas.gateway.v1.ModelLibraryService`, the one API applications use. It owns no
//! data; it aggregates the index, fetch and mapper services.
//!
//! [`serve`] is what `pumas serve gateway`, `pumas up` and the tests call.

mod api;
pub mod auth;
pub mod backends;
pub mod config;
mod dependencies;
mod hub_updates;
mod passthrough;
pub mod resolve;
mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use pumas_proto::gateway::v1::model_library_service_server::ModelLibraryServiceServer;
use tokio::net::TcpListener;

pub use config::{Config, MapperAddr};

/// The gRPC service name this crate serves.
pub const SERVICE_NAME: &str = "pumas.gateway.v1.ModelLibraryService";

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend address or the tokens file is unusable.
    #[error("bad gateway configuration: {0}")]
    Address(String),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] pumas_runtime::ServeError),
}

/// Serves the gateway API, health and reflection on `listener` until `shutdown` resolves.
///
/// Health of `pumas.gateway.v1.ModelLibraryService` (and of "") is NOT_SERVING until every backend
/// answers with our dependency contract version, and goes back to NOT_SERVING while one is down or
/// incompatible; a background monitor checks them every `config.backend_check_interval`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let backends = Arc::new(backends::Backends::connect(&config).map_err(|e| Error::Address(e.to_string()))?);
    let (health, routes) = pumas_runtime::standard_routes(SERVICE_NAME)?;
    // Not serving until the first check has seen every backend.
    health
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let monitor_stop = pumas_runtime::Shutdown::new();
    let monitor = tokio::spawn(backends::monitor(
        Arc::clone(&backends),
        health,
        config.backend_check_interval(),
        monitor_stop.wait(),
    ));
    let auth = auth::BearerAuth::load(&config.api_tokens, config.api_tokens_file.as_deref())
        .map_err(Error::Address)?;
    let api = api::GatewayApi::new(Arc::clone(&backends), SystemTime::now());
    let service = ModelLibraryServiceServer::new(api).max_decoding_message_size(config.max_message_bytes);
    let routes = routes.add_service(tonic::service::interceptor::InterceptedService::new(
        service,
        auth.clone(),
    ));
    tracing::info!(addr = ?listener.local_addr().ok(), auth = auth.enabled(), "gateway listening");
    let mut limits = config.serve_limits().map_err(Error::Address)?;
    // The UI speaks gRPC-Web: it is served where gRPC-Web is.
    if let Some(grpc_web) = &mut limits.grpc_web {
        grpc_web.pages = Some(web::router());
    }
    let served = pumas_runtime::serve_with_limits(listener, routes, shutdown, limits).await;
    monitor_stop.trigger();
    let _ = monitor.await;
    served?;
    Ok(())
}
