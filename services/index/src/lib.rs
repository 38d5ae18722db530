//! The index service: owns the model library on disk and `models.db`.
//!
//! [`serve`] is what `pumas serve index`, `pumas up` and the tests call.

mod api;
pub mod config;

use std::future::Future;
use std::time::SystemTime;

use pumas_proto::index::v1::index_service_server::IndexServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

/// The gRPC service name this crate serves.
pub const SERVICE_NAME: &str = "pumas.index.v1.IndexService";

/// Why the index service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The library directories could not be created.
    #[error("cannot create the library under {path}: {source}")]
    Layout { path: String, source: std::io::Error },
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] pumas_runtime::ServeError),
}

/// Serves the index API, health and reflection on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let data_root = config.data_root();
    std::fs::create_dir_all(data_root.models_dir()).map_err(|source| Error::Layout {
        path: data_root.models_dir().display().to_string(),
        source,
    })?;
    let api = api::IndexApi::new(data_root, SystemTime::now());
    let (health, routes) = pumas_runtime::standard_routes(SERVICE_NAME)?;
    health.set_serving::<IndexServiceServer<api::IndexApi>>().await;
    let routes = routes.add_service(IndexServiceServer::new(api));
    tracing::info!(addr = ?listener.local_addr().ok(), "index service listening");
    pumas_runtime::serve(listener, routes, shutdown).await?;
    Ok(())
}
