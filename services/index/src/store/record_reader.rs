//! A ranked page's records, read on the calling thread. sqlx runs each SQLite connection on a
//! thread of its own, so every query is a hand-off there and back: two thread wake-ups, about
//! 0.35 ms through `pumas up` on the reference machine, more than the ranking and the read
//! together for a narrow query. These read-only connections answer a handful of rowid lookups
//! in microseconds where the call runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use crate::error::IndexError;

/// Idle connections kept for the next page (more are opened when calls overlap).
const KEEP_IDLE: usize = 4;

/// Read-only connections to models.db, opened on first use.
#[derive(Debug)]
pub(super) struct RecordReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl RecordReader {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Closes the idle connections (a page being read keeps its own until it is done).
    pub(super) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(pumas_runtime::sqlite::BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// The stored JSON of these models by rowid (a rowid with no row is left out: it was removed
    /// since the ranking saw it).
    pub(super) fn records(&self, rowids: &[i64]) -> Result<HashMap<i64, String>, IndexError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open().map_err(read_error)?,
        };
        let found = Self::read(&conn, rowids).map_err(read_error);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < KEEP_IDLE
        {
            idle.push(conn);
        }
        found
    }

    fn read(conn: &Connection, rowids: &[i64]) -> rusqlite::Result<HashMap<i64, String>> {
        // Prepared once per connection: parsing the statement cost as much as the lookup.
        let mut statement = conn.prepare_cached("SELECT record FROM models WHERE rowid = ?1")?;
        let mut out = HashMap::with_capacity(rowids.len());
        // One snapshot for the page: the lookups see the same committed state (one lookup is a
        // snapshot of its own).
        let snapshot = rowids.len() > 1;
        if snapshot {
            conn.prepare_cached("BEGIN")?.execute([])?;
        }
        for &rowid in rowids {
            let mut rows = statement.query([rowid])?;
            if let Some(row) = rows.next()? {
                out.insert(rowid, row.get(0)?);
            }
        }
        drop(statement);
        if snapshot {
            conn.prepare_cached("COMMIT")?.execute([])?;
        }
        Ok(out)
    }
}

fn read_error(err: rusqlite::Error) -> IndexError {
    IndexError::Internal(format!("reading records from models.db: {err}"))
}
