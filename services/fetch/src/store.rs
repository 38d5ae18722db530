//! Download jobs on disk: `<root>/launcher-data/cache/downloads/downloads.db` (SQLite). A job's
//! row holds everything needed to continue it after a restart, including how many bytes of each
//! part are durably on disk (checkpointed after `sync_data`).

use std::path::Path;

use pumas_runtime::Failure;
use pumas_runtime::sqlite::Db;
use serde::{Deserialize, Serialize};

/// Job states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Committing,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    /// No further transitions except resume (failed).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// A byte range of a file fetched over one connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Part {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Bytes from `start` durably on disk.
    pub done: u64,
}

/// One file of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobFile {
    /// Path in the repository (checked safe).
    pub path: String,
    /// Expected size.
    pub size: u64,
    /// `sha256:<hex>` (LFS) or `sha1:<hex>` (git blob id).
    pub expected: String,
    /// An LFS file (served by the CDN).
    pub lfs: bool,
    /// Parts; empty until the file starts.
    #[serde(default)]
    pub parts: Vec<Part>,
    /// Verified against `expected`.
    #[serde(default)]
    pub verified: bool,
    /// `sha256:<hex>` once verified.
    #[serde(default)]
    pub sha256: String,
    /// `blake3:<hex>` once verified.
    #[serde(default)]
    pub blake3: String,
    /// Taken from a local Hugging Face cache instead of the network.
    #[serde(default)]
    pub adopted: bool,
}

impl JobFile {
    /// Bytes durably on disk.
    pub fn done(&self) -> u64 {
        if self.verified {
            self.size
        } else {
            self.parts.iter().map(|p| p.done).sum()
        }
    }
}

/// What a job takes from the repository.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Selection {
    pub allow: Vec<String>,
    pub ignore: Vec<String>,
    pub quantization: String,
}

/// What an update job changes besides the files it fetches.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobUpdate {
    /// The library model it updates.
    pub model_id: String,
    /// Repository paths the new commit removed from the model.
    pub removed: Vec<String>,
}

/// A download job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub request_id: String,
    pub repo_id: String,
    pub revision: String,
    pub commit_sha: String,
    pub state: JobState,
    pub priority: i32,
    pub selection: Selection,
    pub model_type: i32,
    pub family: String,
    #[serde(default)]
    pub model_id: String,
    #[serde(default)]
    pub error: Option<Failure>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub files: Vec<JobFile>,
    /// Tags and license from the hub, for the index.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub license: String,
    /// Set when the job updates an existing library model to a newer commit.
    #[serde(default)]
    pub update: Option<JobUpdate>,
    /// The selection took every file of the repository.
    #[serde(default)]
    pub whole_repository: bool,
    /// The card as the index keeps it: an encoded `pumas.common.v1.HubMetadata`, hex.
    #[serde(default)]
    pub hub_metadata: String,
    /// The index knows the model (BeginModelDownload answered).
    #[serde(default)]
    pub announced: bool,
}

impl Job {
    /// Bytes durably on disk.
    pub fn bytes_done(&self) -> u64 {
        self.files.iter().map(JobFile::done).sum()
    }

    /// Bytes in total.
    pub fn bytes_total(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

pub use pumas_runtime::time::now_ms;

/// Completed and cancelled downloads are kept this long (failed ones until resumed or cancelled).
pub const KEEP_FINISHED_DAYS: i64 = 30;
/// At most this many completed and cancelled downloads are kept, newest first.
pub const KEEP_FINISHED_JOBS: u64 = 500;

/// The job store.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens (or creates) `downloads.db` in `dir`.
    pub async fn open(dir: &Path) -> Result<Self, sqlx::Error> {
        let db = Db::open(&dir.join("downloads.db"), 4).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS downloads (
                id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                request_id TEXT NOT NULL DEFAULT '',
                state TEXT NOT NULL,
                priority INTEGER NOT NULL,
                body TEXT NOT NULL
            )",
        )
        .execute(db.write())
        .await?;
        sqlx::query("CREATE INDEX IF NOT EXISTS downloads_request ON downloads(request_id)")
            .execute(db.write())
            .await?;
        Ok(Self { db })
    }

    /// Inserts or replaces a job.
    pub async fn save(&self, job: &Job) -> Result<(), sqlx::Error> {
        let body = serde_json::to_string(job).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let state = serde_json::to_string(&job.state).unwrap_or_default();
        sqlx::query(
            "INSERT INTO downloads (id, seq, request_id, state, priority, body) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, priority = excluded.priority, body = excluded.body",
        )
        .bind(&job.id)
        .bind(job.created_ms)
        .bind(&job.request_id)
        .bind(state.trim_matches('"'))
        .bind(job.priority)
        .bind(body)
        .execute(self.db.write())
        .await?;
        Ok(())
    }

    /// Every job, newest first.
    pub async fn all(&self) -> Result<Vec<Job>, sqlx::Error> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT body FROM downloads ORDER BY seq DESC, id DESC")
            .fetch_all(self.db.read())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(body,)| match serde_json::from_str(&body) {
                Ok(job) => Some(job),
                Err(err) => {
                    tracing::warn!(error = %err, "skipping an unreadable download record");
                    None
                }
            })
            .collect())
    }

    /// Forgets completed and cancelled downloads created before `keep_since_ms` or beyond the
    /// newest `keep_newest` of them; failed ones stay, since they can still be resumed. Returns
    /// how many went.
    pub async fn prune_finished(&self, keep_since_ms: i64, keep_newest: u64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM downloads WHERE state IN ('completed', 'cancelled') AND (seq < ? OR id IN
               (SELECT id FROM downloads WHERE state IN ('completed', 'cancelled')
                ORDER BY seq DESC, id DESC LIMIT -1 OFFSET ?))",
        )
        .bind(keep_since_ms)
        .bind(keep_newest.min(i64::MAX as u64) as i64)
        .execute(self.db.write())
        .await?;
        Ok(done.rows_affected())
    }

    /// The job a request id created, if any.
    pub async fn by_request_id(&self, request_id: &str) -> Result<Option<Job>, sqlx::Error> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT body FROM downloads WHERE request_id = ? LIMIT 1")
                .bind(request_id)
                .fetch_optional(self.db.read())
                .await?;
        Ok(row.and_then(|(body,)| serde_json::from_str(&body).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, state: JobState, created_ms: i64) -> Job {
        Job {
            id: id.to_owned(),
            request_id: String::new(),
            repo_id: "org/repo".to_owned(),
            revision: "main".to_owned(),
            commit_sha: String::new(),
            state,
            priority: 0,
            selection: Selection {
                allow: Vec::new(),
                ignore: Vec::new(),
                quantization: String::new(),
            },
            model_type: 0,
            family: String::new(),
            model_id: String::new(),
            error: None,
            created_ms,
            updated_ms: created_ms,
            files: Vec::new(),
            tags: Vec::new(),
            license: String::new(),
            hub_metadata: String::new(),
            whole_repository: false,
            update: None,
            announced: false,
        }
    }

    #[tokio::test]
    async fn finished_downloads_are_pruned_and_resumable_ones_kept() -> Result<(), sqlx::Error> {
        let dir = tempfile::tempdir().map_err(sqlx::Error::Io)?;
        let store = Store::open(dir.path()).await?;
        let now = now_ms();
        for n in 0..4 {
            store
                .save(&job(&format!("done-{n}"), JobState::Completed, now - 10 + n))
                .await?;
        }
        store.save(&job("old-cancelled", JobState::Cancelled, 1)).await?;
        store.save(&job("old-failed", JobState::Failed, 1)).await?;
        store.save(&job("queued", JobState::Queued, 2)).await?;
        let gone = store.prune_finished(now - 1000, 2).await?;
        assert_eq!(gone, 3, "two oldest completed and the old cancelled one");
        let mut left: Vec<String> = store.all().await?.into_iter().map(|j| j.id).collect();
        left.sort();
        assert_eq!(left, ["done-2", "done-3", "old-failed", "queued"]);
        Ok(())
    }
}
