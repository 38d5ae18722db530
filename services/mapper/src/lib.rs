//! The mapper service: makes library models appear where each app on its host looks for them.
//!
//! [`serve`] is what `pumas serve mapper`, `pumas up` and the tests call.

mod api;
pub mod config;

use std::future::Future;
use std::time::SystemTime;

use pumas_proto::mapper::v1::mapper_service_server::MapperServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

/// The gRPC service name this crate serves.
pub const SERVICE_NAME: &str = "pumas.mapper.v1.MapperService";

/// Why the mapper service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Its directories could not be created.
    #[error("cannot create {path}: {source}")]
    Layout { path: String, source: std::io::Error },
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] pumas_runtime::ServeError),
}

/// Serves the mapper API, health and reflection on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let configs_dir = config.data_root().mapping_configs_dir();
    std::fs::create_dir_all(&configs_dir).map_err(|source| Error::Layout {
        path: configs_dir.display().to_string(),
        source,
    })?;
    let api = api::MapperApi::new(&config, SystemTime::now());
    let (health, routes) = pumas_runtime::standard_routes(SERVICE_NAME)?;
    health.set_serving::<MapperServiceServer<api::MapperApi>>().await;
    let routes = routes.add_service(MapperServiceServer::new(api));
    tracing::info!(addr = ?listener.local_addr().ok(), "mapper service listening");
    pumas_runtime::serve(listener, routes, shutdown).await?;
    Ok(())
}
