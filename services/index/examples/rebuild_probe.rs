//! The rebuild of models.db alone, in process: a breakdown of the search bench's `--rebuild`
//! (which measures through `pumas up`). Deletes `<models dir>/models.db` and opens the library,
//! which rebuilds it from the metadata files, then prints how long that took.
//!
//! cargo run --release -p pumas-index --example rebuild_probe -- /path/to/shared-resources/models

use std::time::Instant;

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
        .init();
    let dir = std::env::args()
        .nth(1)
        .context("the models folder of a library (its models.db is deleted and rebuilt)")?;
    let dir = std::path::PathBuf::from(dir);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("models.db{suffix}")));
    }
    let started = Instant::now();
    let library = pumas_index::open::open(&dir, pumas_index::library::Policy::default()).await?;
    println!("rebuilt in {:.2} s", started.elapsed().as_secs_f64());
    library.store().close().await;
    Ok(())
}
