//! The mapper service: makes library models appear where each app on its host looks for them.
//!
//! [`serve`] is what `pumas serve mapper`, `pumas up` and the tests call.

pub mod adopt;
mod api;
mod apptree;
pub mod config;
pub mod engine;
pub mod error;
pub mod invokeai;
pub mod links;
pub mod mapping;
pub mod plan;
pub mod presets;
pub mod registry;

use std::future::Future;
use std::time::SystemTime;

use pumas_proto::mapper::v1::mapper_service_server::MapperServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

pub use pumas_runtime::time::now_ms;

/// The gRPC service name this crate serves.
pub const SERVICE_NAME: &str = "pumas.mapper.v1.MapperService";

/// Why the mapper service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Its directories could not be created.
    #[error("cannot create {path}: {source}")]
    Layout { path: String, source: std::io::Error },
    /// Its link registry could not be opened.
    #[error("cannot open the link registry in {path}: {source}")]
    Registry { path: String, source: sqlx::Error },
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
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
    let state_dir = config.data_root().mapper_state_dir();
    std::fs::create_dir_all(&state_dir).map_err(|source| Error::Layout {
        path: state_dir.display().to_string(),
        source,
    })?;
    let registry = registry::Registry::open(&state_dir)
        .await
        .map_err(|source| Error::Registry {
            path: state_dir.display().to_string(),
            source,
        })?;
    let index = engine::Library::new(
        pumas_proto::index::v1::index_service_client::IndexServiceClient::new(
            pumas_runtime::client::connect_lazy(&config.index_addr)
                .map_err(|e| Error::Config(e.to_string()))?,
        ),
    );
    // Callers beyond this machine are not the user whose app folders these are.
    let app_roots = engine::AppRoots {
        roots: config.app_roots.iter().map(|r| engine::real_path(r)).collect(),
        required: listener.local_addr().is_ok_and(|a| !a.ip().is_loopback()),
    };
    let engine = engine::Engine::new(
        configs_dir,
        config.library_mount(),
        config.host_name(),
        registry,
        index,
        app_roots,
    );
    tokio::spawn(std::sync::Arc::clone(&engine).follow());
    let api = api::MapperApi::new(&config, SystemTime::now(), engine);
    tracing::info!(addr = ?listener.local_addr().ok(), "mapper service listening");
    pumas_runtime::serve::serve_service(
        listener,
        MapperServiceServer::new(api),
        shutdown,
        config.limits.limits(),
    )
    .await?;
    Ok(())
}
