//! The index service: owns the model library on disk and `models.db`.
//!
//! [`serve`] is what `pumas serve index`, `pumas up` and the tests call. The domain lives in
//! [`library`] (files + index), [`import`], [`reindex`], [`inspect`] and [`detect`]; [`api`]
//! only translates.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
pub mod catalog;
pub mod config;
pub mod convert;
pub mod detect;
pub mod download;
pub mod embedded;
pub mod error;
pub mod hash;
pub mod hub_card;
pub mod import;
pub mod inspect;
pub mod jobs;
pub mod library;
pub mod metadata;
pub mod open;
pub mod paging;
pub mod profiles;
pub mod query;
pub mod reindex;
pub mod retention;
pub mod slug;
pub mod store;
pub mod synthetic;
pub mod verify;
pub mod vocabulary;

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
    /// The library could not be opened.
    #[error("cannot open the library: {0}")]
    Library(#[from] error::IndexError),
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
    let mut policy = config.policy();
    // Callers beyond this machine are not the user whose files these are: they import only
    // from roots the operator names.
    policy.import_roots_required = listener.local_addr().is_ok_and(|a| !a.ip().is_loopback());
    // Listening at once: while models.db is opened (and rebuilt, which takes seconds at 100,000
    // models), callers get UNAVAILABLE with a retry delay and the rebuild's count, not a hang.
    tracing::info!(addr = ?listener.local_addr().ok(), library = %data_root.models_dir().display(), "index service listening");
    let progress = open::StartProgress::new(std::sync::Mutex::new("opening models.db".to_owned()));
    let opened: std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<library::Library>>> = Default::default();
    let ready = {
        let (progress, opened) = (progress.clone(), std::sync::Arc::clone(&opened));
        async move {
            let library = open::open_reporting(&data_root.models_dir(), policy, &progress).await?;
            let _ = opened.set(std::sync::Arc::clone(&library));
            let api = api::IndexApi::new(library, SystemTime::now());
            Ok::<_, Error>(IndexServiceServer::new(api))
        }
    };
    let said: pumas_runtime::gate::Progress =
        std::sync::Arc::new(move || progress.lock().map(|p| p.clone()).unwrap_or_default());
    let served = pumas_runtime::gate::serve_when_ready(
        listener,
        "index",
        ready,
        said,
        shutdown,
        config.limits.limits(),
    )
    .await?;
    if let Some(library) = opened.get() {
        library.store().close().await;
    }
    served?;
    Ok(())
}
