//! Which models bind a profile version (their own bindings or the catalog's).

use sqlx::Row as _;

use super::Store;
use crate::error::IndexError;

impl Store {
    /// Up to `limit` models (sorted) whose own bindings name `profile_id@version` (catalog
    /// bindings name catalog profiles, which cannot be deleted). A scan of the records: for an
    /// occasional check (deleting a profile), not a hot path.
    pub async fn models_binding(
        &self,
        profile_id: &str,
        version: &str,
        limit: u32,
    ) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query(
            "SELECT DISTINCT m.id FROM models m, json_each(m.record, '$.metadata.dependency_bindings') b
             WHERE json_extract(b.value, '$.profile_id') = ? AND json_extract(b.value, '$.profile_version') = ?
             ORDER BY m.id LIMIT ?",
        )
        .bind(profile_id)
        .bind(version)
        .bind(i64::from(limit))
        .fetch_all(self.db.read())
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
