//! What the hub says about a downloaded model (its card's front matter, its first paragraph,
//! its counters), as metadata.json keeps it, and the filter keys it gives: license, base model
//! (lineage) and pipeline tag.

use pumas_proto::common::v1 as common;
use serde::{Deserialize, Serialize};

use crate::metadata::Metadata;

/// At most this many entries per list, and bytes per description (a card is the hub's, not ours:
/// keep what a person reads, not whatever it holds).
const MAX_LIST: usize = 32;
const MAX_DESCRIPTION: usize = 1000;

/// A base model a card names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// `org/name`.
    pub repo_id: String,
    /// `finetune`, `quantized`, `adapter`, `merge`, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub relation: String,
}

/// The hub's word on a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HubCard {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub license: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_models: Vec<BaseModel>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline_tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub library_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub gated: bool,
    #[serde(default)]
    pub downloads: u64,
    #[serde(default)]
    pub likes: u64,
    /// RFC 3339.
    #[serde(default)]
    pub read_time: String,
    /// The card's first image, a file of the repository.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_path: String,
}

const RELATIONS: &[(&str, common::BaseModelRelation)] = &[
    ("finetune", common::BaseModelRelation::Finetune),
    ("quantized", common::BaseModelRelation::Quantized),
    ("adapter", common::BaseModelRelation::Adapter),
    ("merge", common::BaseModelRelation::Merge),
];

fn bounded(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .take(MAX_LIST)
        .collect()
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl HubCard {
    /// From the proto (bounded; relations by name).
    pub fn from_proto(p: &common::HubMetadata) -> Self {
        Self {
            license: p.license.trim().to_owned(),
            base_models: p
                .base_models
                .iter()
                .filter(|b| !b.repo_id.trim().is_empty())
                .take(MAX_LIST)
                .map(|b| BaseModel {
                    repo_id: b.repo_id.trim().to_owned(),
                    relation: RELATIONS
                        .iter()
                        .find(|(_, r)| *r as i32 == b.relation)
                        .map(|(name, _)| (*name).to_owned())
                        .unwrap_or_default(),
                })
                .collect(),
            pipeline_tag: p.pipeline_tag.trim().to_owned(),
            library_name: p.library_name.trim().to_owned(),
            languages: bounded(&p.languages),
            datasets: bounded(&p.datasets),
            tags: bounded(&p.tags),
            description: cut(p.description.trim(), MAX_DESCRIPTION),
            gated: p.gated,
            downloads: p.downloads,
            likes: p.likes,
            read_time: p.read_time.map(|t| t.to_string()).unwrap_or_default(),
            image_path: p.image_path.trim().to_owned(),
        }
    }

    /// The proto view; `model_ids` of each base are left for GetModel to fill.
    pub fn to_proto(&self) -> common::HubMetadata {
        common::HubMetadata {
            license: self.license.clone(),
            base_models: self
                .base_models
                .iter()
                .map(|b| common::BaseModel {
                    repo_id: b.repo_id.clone(),
                    relation: RELATIONS
                        .iter()
                        .find(|(name, _)| *name == b.relation)
                        .map_or(0, |(_, r)| *r as i32),
                    model_ids: Vec::new(),
                })
                .collect(),
            pipeline_tag: self.pipeline_tag.clone(),
            library_name: self.library_name.clone(),
            languages: self.languages.clone(),
            datasets: self.datasets.clone(),
            tags: self.tags.clone(),
            description: self.description.clone(),
            gated: self.gated,
            downloads: self.downloads,
            likes: self.likes,
            read_time: self.read_time.parse().ok(),
            image_path: self.image_path.clone(),
        }
    }
}

/// Filter key of a license.
pub fn license_key(license: &str) -> String {
    format!("license:{}", license.trim().to_lowercase())
}

/// Filter key of a base model repository.
pub fn base_model_key(repo_id: &str) -> String {
    format!("base_model:{}", repo_id.trim().to_lowercase())
}

/// Filter key of a pipeline tag.
pub fn pipeline_key(tag: &str) -> String {
    format!("pipeline_tag:{}", tag.trim().to_lowercase())
}

/// `org/name` of a hub URL such as `https://huggingface.co/Qwen/Qwen2.5-0.5B` (what GGUF's
/// `general.base_model.N.repo_url` holds).
fn repo_of_url(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut parts = rest.trim_end_matches('/').split('/').skip(1);
    let (org, name) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && !org.is_empty() && !name.is_empty()).then(|| format!("{org}/{name}"))
}

/// The filter keys a record gives beside its tags (they share the tag index, in the hub's own
/// vocabulary, so the tag `license:mit` the hub puts on a repo means the same): its license (the
/// user's, else the card's, else the file's), its base models (the card's, and a GGUF's
/// `general.base_model.N.repo_url`) and its pipeline tag.
pub fn filter_keys(m: &Metadata) -> Vec<String> {
    let mut keys = Vec::new();
    let license = [m.license.as_str(), m.embedded.license.as_str()]
        .into_iter()
        .find(|l| !l.trim().is_empty());
    if let Some(license) = license {
        keys.push(license_key(license));
    }
    if let Some(card) = &m.hub {
        keys.extend(card.base_models.iter().map(|b| base_model_key(&b.repo_id)));
        if !card.pipeline_tag.is_empty() {
            keys.push(pipeline_key(&card.pipeline_tag));
        }
    }
    keys.extend(
        m.embedded
            .values
            .iter()
            .filter(|(k, _)| k.starts_with("general.base_model.") && k.ends_with(".repo_url"))
            .filter_map(|(_, v)| repo_of_url(v))
            .map(|r| base_model_key(&r)),
    );
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_url_names_its_repository() {
        assert_eq!(
            repo_of_url("https://huggingface.co/Qwen/Qwen2.5-0.5B").as_deref(),
            Some("Qwen/Qwen2.5-0.5B")
        );
        assert_eq!(repo_of_url("https://huggingface.co/Qwen").as_deref(), None);
        assert_eq!(repo_of_url("https://huggingface.co/a/b/c").as_deref(), None);
    }

    #[test]
    fn relations_survive_the_round_trip_and_lists_are_bounded() {
        let p = common::HubMetadata {
            license: " MIT ".to_owned(),
            base_models: vec![common::BaseModel {
                repo_id: "acme/base".to_owned(),
                relation: common::BaseModelRelation::Quantized as i32,
                model_ids: vec![],
            }],
            tags: (0..100).map(|i| format!("t{i}")).collect(),
            description: "é".repeat(800),
            ..Default::default()
        };
        let card = HubCard::from_proto(&p);
        assert_eq!(card.license, "MIT");
        assert_eq!(card.base_models[0].relation, "quantized");
        assert_eq!(card.tags.len(), MAX_LIST);
        assert!(card.description.len() <= MAX_DESCRIPTION);
        assert_eq!(
            card.to_proto().base_models[0].relation,
            common::BaseModelRelation::Quantized as i32
        );
    }
}
