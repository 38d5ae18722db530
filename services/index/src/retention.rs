//! What the index keeps, and for how long: the change feed and the hash cache are pruned at
//! start and every hour (docs/RELIABILITY.md, "Retention").

use std::time::Duration;

use pumas_runtime::time::now_ms;

use crate::error::IndexError;
use crate::store::{Pruned, Store};

/// How often the index prunes while it runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Retention of the change feed and the hash cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct Retention {
    /// Days of change-feed events kept. A feed reader (a mapper) that was away longer gets
    /// OUT_OF_RANGE and re-reads the library.
    #[arg(
        long = "change-feed-days",
        env = "PUMAS_CHANGE_FEED_DAYS",
        default_value_t = 7
    )]
    pub change_feed_days: u64,
    /// Change-feed events kept at most, newest first.
    #[arg(
        long = "change-feed-max-events",
        env = "PUMAS_CHANGE_FEED_MAX_EVENTS",
        default_value_t = 100_000
    )]
    pub change_feed_max_events: u64,
    /// Days a file's cached hash is kept (an import of the same unchanged file skips hashing).
    #[arg(long = "hash-cache-days", env = "PUMAS_HASH_CACHE_DAYS", default_value_t = 90)]
    pub hash_cache_days: u64,
    /// Cached hashes kept at most, newest first.
    #[arg(
        long = "hash-cache-max-entries",
        env = "PUMAS_HASH_CACHE_MAX_ENTRIES",
        default_value_t = 200_000
    )]
    pub hash_cache_max_entries: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            change_feed_days: 7,
            change_feed_max_events: 100_000,
            hash_cache_days: 90,
            hash_cache_max_entries: 200_000,
        }
    }
}

/// One pruning pass over `store` by `r`.
pub async fn prune(store: &Store, r: Retention) -> Result<Pruned, IndexError> {
    let now = now_ms();
    let since = |days: u64| now.saturating_sub((days.min(1 << 20) as i64).saturating_mul(DAY_MS));
    let pruned = store
        .prune(
            since(r.change_feed_days),
            r.change_feed_max_events,
            since(r.hash_cache_days),
            r.hash_cache_max_entries,
        )
        .await?;
    if pruned != Pruned::default() {
        tracing::info!(
            changes = pruned.changes,
            hashes = pruned.hashes,
            "pruned by retention"
        );
    }
    Ok(pruned)
}
