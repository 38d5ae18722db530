//! The link registry (SQLite, one per mapper host): every link the mapper made, so it never
//! touches a file it did not create, plus the change-feed cursor it follows.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pumas_runtime::sqlite::Db;
use sqlx::Row as _;

/// A link the mapper made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRow {
    pub app: String,
    /// Absolute link path.
    pub target: String,
    pub model_id: String,
    /// Absolute library file on this host.
    pub source: String,
    /// What was made (`symlink`, `hardlink`, `reflink`, `copy`, `config_file`).
    pub strategy: String,
    pub created_ms: i64,
    /// `<dev>:<inode>` of what was made, to recognise it later even when its source is gone.
    pub identity: String,
    /// For copies: `sha256:<hex>` of the bytes written, so a copy the user changed in place is
    /// never taken for ours.
    pub sha256: String,
}

/// The registry.
#[derive(Clone)]
pub struct Registry {
    db: Db,
}

impl Registry {
    /// Opens (or creates) `links.sqlite` in `dir`.
    pub async fn open(dir: &Path) -> Result<Self, sqlx::Error> {
        let db = Db::open(&dir.join("links.sqlite"), 4).await?;
        for statement in [
            "CREATE TABLE IF NOT EXISTS links (
                app TEXT NOT NULL,
                target TEXT NOT NULL,
                model_id TEXT NOT NULL,
                source TEXT NOT NULL,
                strategy TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                identity TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (app, target)
            ) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS links_by_model ON links (model_id, app)",
            "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
            // Folders the mapper created in app trees: the only ones it removes when empty.
            "CREATE TABLE IF NOT EXISTS dirs (app TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (app, path)) WITHOUT ROWID",
        ] {
            sqlx::query(statement).execute(db.write()).await?;
        }
        // Registries from before copies recorded their content.
        let columns = sqlx::query("SELECT name FROM pragma_table_info('links')")
            .fetch_all(db.read())
            .await?;
        if !columns.iter().any(|c| c.get::<String, _>(0) == "sha256") {
            sqlx::query("ALTER TABLE links ADD COLUMN sha256 TEXT NOT NULL DEFAULT ''")
                .execute(db.write())
                .await?;
        }
        Ok(Self { db })
    }

    fn row(r: &sqlx::sqlite::SqliteRow) -> LinkRow {
        LinkRow {
            app: r.get("app"),
            target: r.get("target"),
            model_id: r.get("model_id"),
            source: r.get("source"),
            strategy: r.get("strategy"),
            created_ms: r.get("created_ms"),
            identity: r.get("identity"),
            sha256: r.get("sha256"),
        }
    }

    /// Links of one app, by target.
    pub async fn for_app(&self, app: &str) -> Result<Vec<LinkRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM links WHERE app = ? ORDER BY target")
            .bind(app)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(Self::row).collect())
    }

    /// Links of these models (all apps), by model, app and target: one query per 500 ids.
    pub async fn for_models(&self, model_ids: &[String]) -> Result<Vec<LinkRow>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in model_ids.chunks(500) {
            let mut builder = sqlx::QueryBuilder::new("SELECT * FROM links WHERE model_id IN (");
            let mut separated = builder.separated(", ");
            for id in chunk {
                separated.push_bind(id);
            }
            separated.push_unseparated(") ORDER BY model_id, app, target");
            let rows = builder.build().fetch_all(self.db.read()).await?;
            out.extend(rows.iter().map(Self::row));
        }
        Ok(out)
    }

    /// Links of one model (all apps).
    pub async fn for_model(&self, model_id: &str) -> Result<Vec<LinkRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM links WHERE model_id = ? ORDER BY app, target")
            .bind(model_id)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(Self::row).collect())
    }

    /// Every link, by app then target.
    pub async fn all(&self) -> Result<Vec<LinkRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM links ORDER BY app, target")
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(Self::row).collect())
    }

    /// Records links (one transaction, many rows per statement).
    pub async fn put_many(&self, links: &[LinkRow]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        for chunk in links.chunks(500) {
            let mut builder = sqlx::QueryBuilder::new(
                "INSERT OR REPLACE INTO links (app, target, model_id, source, strategy, created_ms, identity, sha256) ",
            );
            builder.push_values(chunk, |mut row, l| {
                row.push_bind(&l.app)
                    .push_bind(&l.target)
                    .push_bind(&l.model_id)
                    .push_bind(&l.source)
                    .push_bind(&l.strategy)
                    .push_bind(l.created_ms)
                    .push_bind(&l.identity)
                    .push_bind(&l.sha256);
            });
            builder.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Forgets links (one transaction, many rows per statement).
    pub async fn remove_many(&self, app: &str, targets: &[String]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        for chunk in targets.chunks(500) {
            let mut builder = sqlx::QueryBuilder::new("DELETE FROM links WHERE app = ");
            builder.push_bind(app).push(" AND target IN (");
            let mut separated = builder.separated(", ");
            for t in chunk {
                separated.push_bind(t);
            }
            separated.push_unseparated(")");
            builder.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Folders the mapper created in an app's tree.
    pub async fn dirs_of(&self, app: &str) -> Result<HashSet<PathBuf>, sqlx::Error> {
        let rows = sqlx::query("SELECT path FROM dirs WHERE app = ?")
            .bind(app)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows
            .iter()
            .map(|r| PathBuf::from(r.get::<String, _>(0)))
            .collect())
    }

    /// Records folders the mapper made in an app's tree and forgets those it removed.
    pub async fn record_dirs(
        &self,
        app: &str,
        made: &[PathBuf],
        removed: &[PathBuf],
    ) -> Result<(), sqlx::Error> {
        if made.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        for d in made {
            sqlx::query("INSERT OR IGNORE INTO dirs (app, path) VALUES (?, ?)")
                .bind(app)
                .bind(d.display().to_string())
                .execute(&mut *tx)
                .await?;
        }
        for d in removed {
            sqlx::query("DELETE FROM dirs WHERE app = ? AND path = ?")
                .bind(app)
                .bind(d.display().to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Model ids an app links to.
    pub async fn models_of(&self, app: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT DISTINCT model_id FROM links WHERE app = ? ORDER BY model_id")
            .bind(app)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A stored value.
    pub async fn get_state(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query("SELECT value FROM state WHERE key = ?")
            .bind(key)
            .fetch_optional(self.db.read())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Stores a value.
    pub async fn set_state(&self, key: &str, value: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(self.db.write())
            .await?;
        Ok(())
    }

    /// Forgets a stored value.
    pub async fn delete_state(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM state WHERE key = ?")
            .bind(key)
            .execute(self.db.write())
            .await?;
        Ok(())
    }
}
