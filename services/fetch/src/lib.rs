//! The fetch service: Hugging Face search and resumable, verified, parallel downloads.
//!
//! [`serve`] is what `pumas serve fetch`, `pumas up` and the tests call.

mod api;
pub mod config;

use std::future::Future;
use std::time::SystemTime;

use pumas_proto::fetch::v1::fetch_service_server::FetchServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

/// The gRPC service name this crate serves.
pub const SERVICE_NAME: &str = "pumas.fetch.v1.FetchService";

/// Why the fetch service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Its directories could not be created.
    #[error("cannot create {path}: {source}")]
    Layout { path: String, source: std::io::Error },
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] pumas_runtime::ServeError),
}

/// Serves the fetch API, health and reflection on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let data_root = config.data_root();
    for dir in [data_root.cache_dir(), data_root.downloads_dir()] {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Layout {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let api = api::FetchApi::new(&config, SystemTime::now());
    let (health, routes) = pumas_runtime::standard_routes(SERVICE_NAME)?;
    health.set_serving::<FetchServiceServer<api::FetchApi>>().await;
    let routes = routes.add_service(FetchServiceServer::new(api));
    tracing::info!(addr = ?listener.local_addr().ok(), hub = %config.hub_endpoint, "fetch service listening");
    pumas_runtime::serve(listener, routes, shutdown).await?;
    Ok(())
}
