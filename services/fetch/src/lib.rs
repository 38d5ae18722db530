//! The fetch service: Hugging Face search and resumable, verified, parallel downloads.
//!
//! [`serve`] is what `pumas serve fetch`, `pumas up` and the tests call.

mod api;
pub mod cache;
pub mod card;
pub mod config;
pub mod engine;
pub mod hub;
pub mod select;
pub mod store;

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
    /// Its databases could not be opened.
    #[error("cannot open {path}: {source}")]
    Database { path: String, source: sqlx::Error },
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
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
    let hub = hub::Hub::new(hub::HubSettings {
        endpoint: config.hub_endpoint.clone(),
        token: config.hub_token().map_err(Error::Config)?,
        retries: config.tuning.hub_retries,
        min_backoff: std::time::Duration::from_millis(config.tuning.hub_backoff_ms.max(1)),
        api_timeout: std::time::Duration::from_secs(config.tuning.hub_timeout_secs.max(1)),
    })
    .map_err(Error::Config)?;
    let cache_path = data_root.search_cache_db();
    let cache = cache::SearchCache::open(&cache_path)
        .await
        .map_err(|source| Error::Database {
            path: cache_path.display().to_string(),
            source,
        })?;
    let downloads_dir = data_root.downloads_dir();
    let store = store::Store::open(&downloads_dir)
        .await
        .map_err(|source| Error::Database {
            path: downloads_dir.join("downloads.db").display().to_string(),
            source,
        })?;
    let index = engine::IndexSync::new(
        pumas_proto::index::v1::index_service_client::IndexServiceClient::new(
            pumas_runtime::client::connect_lazy(&config.index_addr)
                .map_err(|e| Error::Config(e.to_string()))?,
        ),
    );
    let engine = engine::Engine::start(
        std::sync::Arc::new(hub),
        store,
        index,
        downloads_dir.clone(),
        config.engine_settings(),
    )
    .await
    .map_err(|source| Error::Database {
        path: downloads_dir.join("downloads.db").display().to_string(),
        source,
    })?;
    let api = api::FetchApi::new(&config, SystemTime::now(), engine, cache);
    tracing::info!(addr = ?listener.local_addr().ok(), hub = %config.hub_endpoint, "fetch service listening");
    pumas_runtime::serve::serve_service(
        listener,
        FetchServiceServer::new(api),
        shutdown,
        config.limits.limits(),
    )
    .await?;
    Ok(())
}
