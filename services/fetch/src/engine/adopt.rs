//! Taking a file from a local Hugging Face hub cache instead of the network.

use std::path::Path;

use super::Engine;
use crate::store::JobFile;

impl Engine {
    pub(super) fn adopt(&self, repo_id: &str, file: &JobFile, partial: &Path) -> bool {
        let Some(cache) = &self.settings.hf_cache else {
            return false;
        };
        let Some((_, digest)) = file.expected.split_once(':') else {
            return false;
        };
        let own = cache
            .join(format!("models--{}", repo_id.replace('/', "--")))
            .join("blobs")
            .join(digest);
        let mut candidates = vec![own];
        if let Ok(entries) = std::fs::read_dir(cache) {
            for entry in entries.flatten().take(10_000) {
                candidates.push(entry.path().join("blobs").join(digest));
            }
        }
        for candidate in candidates {
            let Ok(meta) = std::fs::metadata(&candidate) else {
                continue;
            };
            if !meta.is_file() || meta.len() != file.size {
                continue;
            }
            let _ = std::fs::remove_file(partial);
            if std::fs::hard_link(&candidate, partial).is_ok() || std::fs::copy(&candidate, partial).is_ok() {
                tracing::info!(file = %file.path, from = %candidate.display(), "adopted from the local Hugging Face cache");
                return true;
            }
        }
        false
    }
}
