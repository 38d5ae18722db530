//! Which model holds a dependency binding, and which mappers hold links to a model (a held
//! model is not deleted without force).

use sqlx::Row;

use super::Store;
use crate::error::IndexError;

impl Store {
    /// The model that holds a binding.
    pub async fn binding_owner(&self, binding_id: &str) -> Result<Option<String>, IndexError> {
        let row = sqlx::query("SELECT model_id FROM model_bindings WHERE binding_id = ?")
            .bind(binding_id)
            .fetch_optional(self.db.read())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Binding ids after `after` (exclusive) in id order, with their models, at most `limit`.
    pub async fn bindings_after(&self, after: &str, limit: u32) -> Result<Vec<(String, String)>, IndexError> {
        let rows = sqlx::query("SELECT binding_id, model_id FROM model_bindings WHERE binding_id > ? ORDER BY binding_id LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Holders of links to a model.
    pub async fn link_holders(&self, model_id: &str) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query("SELECT holder FROM link_holds WHERE model_id = ? ORDER BY holder")
            .bind(model_id)
            .fetch_all(self.db.read())
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Replaces the models a holder links to.
    pub async fn replace_link_holds(&self, holder: &str, model_ids: &[String]) -> Result<(), IndexError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM link_holds WHERE holder = ?")
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        for id in model_ids {
            sqlx::query("INSERT OR IGNORE INTO link_holds (holder, model_id) VALUES (?, ?)")
                .bind(holder)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes every link hold on a model (forced delete).
    pub async fn clear_link_holds(&self, model_id: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM link_holds WHERE model_id = ?")
            .bind(model_id)
            .execute(self.db.write())
            .await?;
        Ok(())
    }
}
