//! What a model file says about itself, kept: a GGUF's `general.*` keys and its architecture's
//! shape (context length, embedding length, blocks, heads, RoPE, tokenizer, chat template), a
//! safetensors `__metadata__` (modelspec, and for LoRAs kohya's `ss_*`: base model, network
//! dim/alpha, output name, the most frequent training tags as trigger words). Everything is
//! bounded: a header can claim anything, the record stays small.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inspect::Facts;
use crate::inspect::gguf;

/// Longest value kept in `values` (longer ones are cut, marked with "…").
const VALUE_MAX: usize = 512;
/// Most raw key/values kept.
const VALUES_MAX: usize = 48;
/// Trigger words kept.
const TRIGGER_WORDS_MAX: usize = 12;

/// The kept embedded metadata of a model (empty when its files say nothing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Embedded {
    /// Raw key/values as the file has them (GGUF `general.*`, safetensors `modelspec.*` and a
    /// few `ss_*`), each cut to 512 bytes, at most 48.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// Context length the model was trained for (`<arch>.context_length`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// Embedding length (`<arch>.embedding_length`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_length: Option<u64>,
    /// Transformer blocks (`<arch>.block_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_count: Option<u64>,
    /// Attention heads (`<arch>.attention.head_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_count: Option<u64>,
    /// Key/value heads (`<arch>.attention.head_count_kv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_count_kv: Option<u64>,
    /// RoPE base frequency (`<arch>.rope.freq_base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_freq_base: Option<f64>,
    /// Tokenizer model (`tokenizer.ggml.model`, e.g. `gpt2`, `llama`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tokenizer_model: String,
    /// The file carries a chat template (`tokenizer.chat_template`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_chat_template: bool,
    /// Author or organisation (`general.author` / `general.organization`, `modelspec.author`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// License as the file states it (`general.license`, `modelspec.license`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub license: String,
    /// Base model: `general.base_model.0.name` / `.repo_url`, kohya's `ss_sd_model_name` or
    /// `ss_base_model_version`, `modelspec.architecture`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_model: String,
    /// A LoRA's most frequent training tags (kohya `ss_tag_frequency`), most frequent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trigger_words: Vec<String>,
    /// LoRA network dim (`ss_network_dim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_dim: Option<u64>,
    /// LoRA network alpha (`ss_network_alpha`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_alpha: Option<f64>,
    /// The name the trainer gave its output (`ss_output_name`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_name: String,
    /// A title or name the file gives itself (`general.name`, `modelspec.title`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// A description the file gives itself (`general.description`, `modelspec.description`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Embedded {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The words a user would search the model by: trigger words, base model, author, license.
    pub fn search_text(&self) -> String {
        let mut words: Vec<&str> = self.trigger_words.iter().map(String::as_str).collect();
        words.extend([
            self.base_model.as_str(),
            self.author.as_str(),
            self.license.as_str(),
        ]);
        words.retain(|w| !w.is_empty());
        words.join(" ")
    }
}

fn cut(value: &str) -> String {
    if value.len() <= VALUE_MAX {
        return value.to_owned();
    }
    let mut end = VALUE_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// What the model's files say about themselves.
pub fn from_facts(facts: &Facts) -> Embedded {
    let mut out = Embedded::default();
    if let Some(h) = &facts.gguf {
        from_gguf(h, &mut out);
    }
    if let Some(h) = &facts.safetensors {
        from_safetensors(&h.metadata, &mut out);
    }
    out
}

fn gguf_text(v: &gguf::Value) -> Option<String> {
    match v {
        gguf::Value::Str(s) => Some(s.clone()),
        gguf::Value::Int(i) => Some(i.to_string()),
        gguf::Value::Float(f) => Some(f.to_string()),
        gguf::Value::Bool(b) => Some(b.to_string()),
        gguf::Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(gguf_text).collect();
            Some(parts.join(", "))
        }
        gguf::Value::SkippedArray(_) => None,
    }
}

fn from_gguf(h: &gguf::Header, out: &mut Embedded) {
    let get = |key: &str| h.metadata.get(key);
    let text = |key: &str| {
        get(key)
            .and_then(gguf::Value::as_str)
            .map(cut)
            .unwrap_or_default()
    };
    let count = |key: &str| {
        get(key)
            .and_then(gguf::Value::as_int)
            .and_then(|i| u64::try_from(i).ok())
    };
    for (key, value) in h.metadata.iter().filter(|(k, _)| k.starts_with("general.")) {
        if out.values.len() >= VALUES_MAX {
            break;
        }
        if let Some(v) = gguf_text(value) {
            out.values.insert(key.clone(), cut(&v));
        }
    }
    let arch = h.architecture().unwrap_or_default();
    out.context_length = count(&format!("{arch}.context_length"));
    out.embedding_length = count(&format!("{arch}.embedding_length"));
    out.block_count = count(&format!("{arch}.block_count"));
    out.head_count = count(&format!("{arch}.attention.head_count"));
    out.head_count_kv = count(&format!("{arch}.attention.head_count_kv"));
    out.rope_freq_base = match get(&format!("{arch}.rope.freq_base")) {
        Some(gguf::Value::Float(f)) => Some(*f),
        Some(gguf::Value::Int(i)) => Some(*i as f64),
        _ => None,
    };
    out.tokenizer_model = text("tokenizer.ggml.model");
    out.has_chat_template = get("tokenizer.chat_template").is_some();
    out.title = text("general.name");
    out.description = text("general.description");
    out.license = text("general.license");
    out.author = [text("general.author"), text("general.organization")]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    out.base_model = [
        text("general.base_model.0.name"),
        text("general.base_model.0.repo_url"),
        text("general.source.repo_url"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or_default();
}

/// The safetensors keys kept as raw values besides `modelspec.*`.
const KOHYA_KEPT: &[&str] = &[
    "ss_base_model_version",
    "ss_sd_model_name",
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_output_name",
    "ss_resolution",
    "ss_num_train_images",
    "ss_training_comment",
];

fn from_safetensors(meta: &BTreeMap<String, String>, out: &mut Embedded) {
    let text = |key: &str| meta.get(key).map(|v| cut(v.trim())).unwrap_or_default();
    for (key, value) in meta
        .iter()
        .filter(|(k, _)| k.starts_with("modelspec.") || KOHYA_KEPT.contains(&k.as_str()))
    {
        if out.values.len() >= VALUES_MAX {
            break;
        }
        // A thumbnail is a data URL of many kilobytes: not metadata a person reads.
        if key == "modelspec.thumbnail" {
            continue;
        }
        out.values.insert(key.clone(), cut(value));
    }
    out.title = text("modelspec.title");
    out.description = text("modelspec.description");
    out.license = text("modelspec.license");
    out.author = text("modelspec.author");
    out.base_model = [
        text("ss_sd_model_name"),
        text("ss_base_model_version"),
        text("modelspec.architecture"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or_default();
    out.network_dim = meta.get("ss_network_dim").and_then(|v| v.trim().parse().ok());
    out.network_alpha = meta.get("ss_network_alpha").and_then(|v| v.trim().parse().ok());
    out.output_name = text("ss_output_name");
    out.trigger_words = meta
        .get("ss_tag_frequency")
        .map(|v| trigger_words(v))
        .unwrap_or_default();
}

/// The most frequent tags over every dataset folder of kohya's `ss_tag_frequency`
/// (`{"<n>_<folder>": {"tag": count, ...}, ...}`), most frequent first, ties by name.
fn trigger_words(json: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(folders)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for tags in folders.values() {
        if let serde_json::Value::Object(tags) = tags {
            for (tag, n) in tags {
                let tag = tag.trim();
                if !tag.is_empty() && tag.len() <= 64 {
                    *counts.entry(tag.to_owned()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
    }
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(TRIGGER_WORDS_MAX)
        .map(|(t, _)| t)
        .collect()
}

/// Longest chat template returned.
const CHAT_TEMPLATE_MAX: usize = 64 * 1024;

/// The chat template of a model's GGUF (its first GGUF that is not a vision projector), read
/// from the file: templates are kilobytes of Jinja, so they are not kept in the record.
pub fn chat_template(dir: &std::path::Path, files: &[crate::metadata::FileEntry]) -> Option<String> {
    let file = files.iter().find(|f| {
        let name = f.path.rsplit('/').next().unwrap_or(&f.path);
        name.ends_with(".gguf") && !name.starts_with("mmproj")
    })?;
    let path = dir.join(&file.path);
    let size = std::fs::metadata(&path).ok()?.len();
    let reader = std::io::BufReader::new(std::fs::File::open(&path).ok()?);
    let header = gguf::parse(reader, size).ok()?;
    let template = header.metadata.get("tokenizer.chat_template")?.as_str()?;
    let mut end = template.len().min(CHAT_TEMPLATE_MAX);
    while !template.is_char_boundary(end) {
        end -= 1;
    }
    Some(template[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_trigger_words_are_the_most_frequent_tags_over_every_folder() {
        let json = r#"{"10_mychar": {"mychar": 40, "1girl": 35, "smile": 3},
                       "5_style": {"mychar": 10, "watercolor": 20, "smile": 30}}"#;
        assert_eq!(trigger_words(json), ["mychar", "1girl", "smile", "watercolor"]);
        assert!(trigger_words("not json").is_empty());
        let many: String = format!(
            "{{\"1_x\": {{{}}}}}",
            (0..100)
                .map(|i| format!("\"t{i:03}\": {i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(trigger_words(&many).len(), TRIGGER_WORDS_MAX);
    }

    #[test]
    fn safetensors_metadata_is_kept_bounded() {
        let meta: BTreeMap<String, String> = [
            ("ss_tag_frequency", r#"{"1_a": {"zelda": 9, "hyrule": 4}}"#),
            ("ss_sd_model_name", "sd_xl_base_1.0.safetensors"),
            ("ss_network_dim", "32"),
            ("ss_network_alpha", "16.0"),
            ("ss_output_name", "zelda-xl"),
            ("modelspec.license", "CreativeML Open RAIL++-M"),
            ("modelspec.thumbnail", "data:image/png;base64,AAAA"),
            ("modelspec.description", &"x".repeat(5000)),
            ("unrelated", "dropped"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut e = Embedded::default();
        from_safetensors(&meta, &mut e);
        assert_eq!(e.trigger_words, ["zelda", "hyrule"]);
        assert_eq!(e.base_model, "sd_xl_base_1.0.safetensors");
        assert_eq!((e.network_dim, e.network_alpha), (Some(32), Some(16.0)));
        assert_eq!(e.output_name, "zelda-xl");
        assert_eq!(e.license, "CreativeML Open RAIL++-M");
        assert!(e.description.len() <= VALUE_MAX + 3 && e.description.ends_with('…'));
        assert!(!e.values.contains_key("modelspec.thumbnail") && !e.values.contains_key("unrelated"));
        assert!(e.search_text().contains("zelda") && e.search_text().contains("sd_xl_base"));
    }
}
