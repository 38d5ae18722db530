//! Following the index's change feed, and telling the index which models each app holds.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::apply::sweep_stale_temps;
use super::library::FeedError;
use super::{Engine, Trigger};
use crate::plan::ActionKind;

impl Engine {
    /// Tells the index which models this app links, so it refuses to delete them.
    pub(super) async fn report_holds(&self, app: &str) {
        let Ok(models) = self.registry.models_of(app).await else {
            return;
        };
        let held = models.into_iter().filter(|m| !m.is_empty()).collect();
        if let Err(err) = self
            .library
            .replace_holds(format!("{}/{app}", self.host), held)
            .await
        {
            tracing::warn!(app, error = %err, "could not report link holds to the index");
        }
    }

    /// The last change-feed cursor applied to every app (0 before the first).
    pub async fn change_cursor(&self) -> u64 {
        self.registry
            .get_state("change_cursor")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    async fn save_cursor(&self, cursor: u64) {
        if let Err(err) = self
            .registry
            .set_state("change_cursor", &cursor.to_string())
            .await
        {
            tracing::warn!(error = %err, "could not save the change cursor");
        }
    }

    /// Follows the index's change feed: a model that becomes ready is linked, a removed one
    /// unlinked, a moved one relinked, in every app whose rules match. Resumes from its cursor;
    /// with none (first start, or a cursor the index no longer keeps) it starts at the index's
    /// head and brings every app up to date once.
    pub async fn follow(self: Arc<Self>) {
        // What a killed mapper left half-written in any app's folders (an unmapped app is not
        // applied again, so it would keep them).
        let dirs: Vec<PathBuf> = self
            .configs()
            .into_iter()
            .filter_map(|c| c.config.ok())
            .flat_map(|c| Self::keep_dirs(&c))
            .collect();
        let _ = tokio::task::spawn_blocking(move || sweep_stale_temps(&dirs)).await;
        loop {
            let saved = self.change_cursor().await;
            let after = if saved > 0 {
                saved
            } else {
                match self.library.head_cursor().await {
                    Ok(cursor) => cursor,
                    Err(err) => {
                        self.following.send_replace(false);
                        tracing::debug!(error = %err, "index not reachable; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            };
            let mut feed = match self.library.watch_changes(after).await {
                Ok(feed) => feed,
                Err(FeedError::Expired) => {
                    tracing::warn!(
                        "the index no longer keeps changes after cursor {after}; re-applying every app"
                    );
                    self.save_cursor(0).await;
                    continue;
                }
                Err(FeedError::Unreachable(message)) => {
                    self.following.send_replace(false);
                    tracing::debug!(error = %message, "change feed not reachable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.following.send_replace(true);
            if saved == 0 {
                // Subscribed first, so nothing between the snapshot and the feed is lost.
                self.apply_all(None).await;
                self.save_cursor(after).await;
            }
            loop {
                let Some(first) = feed.next().await else {
                    break;
                };
                // Gather what arrives together, then apply once.
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
                while let Ok(Some(m)) = tokio::time::timeout_at(deadline, feed.next()).await {
                    batch.push(m);
                }
                let mut scope = HashSet::new();
                for change in &batch {
                    scope.insert(change.model_id.clone());
                    if !change.previous_model_id.is_empty() {
                        scope.insert(change.previous_model_id.clone());
                    }
                }
                let cursor = batch.iter().map(|c| c.cursor).max().unwrap_or(after);
                self.apply_all(Some(&scope)).await;
                self.save_cursor(cursor).await;
            }
            self.following.send_replace(false);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn apply_all(&self, scope: Option<&HashSet<String>>) {
        for c in self.configs() {
            if c.config.is_err() {
                continue;
            }
            match self.apply(&c.app, false, scope, Trigger::Follow).await {
                Ok(o) => {
                    let changed = o.plan.count(ActionKind::Create)
                        + o.plan.count(ActionKind::Replace)
                        + o.plan.count(ActionKind::Remove);
                    if changed > 0 {
                        tracing::info!(app = %c.app, changed, "followed library changes");
                    }
                }
                Err(err) => tracing::warn!(app = %c.app, error = %err, "following library changes failed"),
            }
        }
    }
}
