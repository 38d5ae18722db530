//! The one way Pumas opens a SQLite file: WAL, a busy timeout, foreign keys, and two pools —
//! many readers and exactly one writer.
//!
//! Why one writer: with several connections that may write, a transaction that reads before it
//! writes (`SELECT MAX(cursor)` then `INSERT`) can fail at once with `SQLITE_BUSY_SNAPSHOT`
//! when another connection committed in between; SQLite's busy handler cannot help there. With a
//! single write connection, writes of one process queue in the pool (fairly, with no error) and
//! readers never wait for them (WAL). Write transactions still start with `BEGIN IMMEDIATE`, so
//! a second process on the same file waits on the busy timeout instead of failing mid-way.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

/// How long a connection waits for a lock held by another process before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A SQLite database with a pool of readers and a single writer.
#[derive(Clone, Debug)]
pub struct Db {
    read: SqlitePool,
    write: SqlitePool,
}

impl Db {
    /// Opens (creating if needed) the database at `path` with `readers` read connections.
    pub async fn open(path: &Path, readers: u32) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // The writer first: it creates the file and switches it to WAL before any reader opens.
        // No ping before each acquire (sqlx's default): a local file's connection does not go
        // stale, and the ping is a round trip to the connection's thread on every query.
        // Never recycled either: a file's connection does not wear out, and a writer's temporary
        // tables (a bulk load's staging) live as long as its connection.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self { read, write })
    }

    /// The pool for queries that only read.
    pub fn read(&self) -> &SqlitePool {
        &self.read
    }

    /// The single connection every write goes through (single statements or transactions).
    pub fn write(&self) -> &SqlitePool {
        &self.write
    }

    /// A write transaction (`BEGIN IMMEDIATE` on the writer).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Whether an error means another process holds the database (not that the file is bad).
pub fn is_locked(err: &sqlx::Error) -> bool {
    let text = err.to_string();
    text.contains("locked") || text.contains("busy")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read-then-write transactions from many tasks at once: each one commits, none sees BUSY.
    #[tokio::test]
    async fn concurrent_read_then_write_transactions_all_commit() -> Result<(), sqlx::Error> {
        let dir = tempfile::tempdir().map_err(sqlx::Error::Io)?;
        let db = Db::open(&dir.path().join("t.db"), 4).await?;
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .execute(db.write())
            .await?;
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin_write().await?;
                let (last,): (Option<i64>,) =
                    sqlx::query_as("SELECT MAX(n) FROM t").fetch_one(&mut *tx).await?;
                tokio::task::yield_now().await;
                sqlx::query("INSERT INTO t (n) VALUES (?)")
                    .bind(last.unwrap_or(0) + 1)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }));
        }
        for task in tasks {
            task.await.map_err(|e| sqlx::Error::Protocol(e.to_string()))??;
        }
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
            .fetch_one(db.read())
            .await?;
        assert_eq!(count, 32);
        Ok(())
    }
}
