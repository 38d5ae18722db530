//! A repository's card as the library keeps it: the front matter the hub parsed (`cardData`),
//! the base models with how this repository derives from them, the first paragraph of the
//! README as the description, the gated flag and the counters with the time they were read.

use pumas_proto::common::v1::{BaseModel, BaseModelRelation, HubMetadata};
use serde_json::Value;

use crate::hub::HubModel;

/// The README bytes read for a description: a card's first paragraph is near its top.
pub const README_PREFIX_BYTES: u64 = 64 * 1024;
const MAX_DESCRIPTION: usize = 1000;
/// Largest card image taken along as a preview.
pub const MAX_IMAGE_BYTES: u64 = 16 * 1024 * 1024;
const IMAGE_EXTENSIONS: &[&str] = &[".png", ".jpg", ".jpeg", ".webp", ".gif"];

/// The README without its front matter.
fn body(readme: &str) -> &str {
    let text = readme.trim_start_matches('\u{feff}');
    match text.strip_prefix("---") {
        Some(rest) => match rest.find("\n---") {
            Some(end) => rest[end + 4..].split_once('\n').map_or("", |(_, after)| after),
            None => "",
        },
        None => text,
    }
}

/// The repository path of the card's first image (`![..](path)` or `<img src="path">`), when it
/// points into the repository itself: a relative path, or this repository's `resolve`/`blob`
/// URL on any host. Images elsewhere are never fetched.
pub fn first_image(readme: &str, repo_id: &str) -> Option<String> {
    let text = body(readme);
    let markdown = text.find("![").and_then(|i| {
        let rest = &text[i..];
        let open = rest.find("](")? + 2;
        let close = rest[open..].find(')')? + open;
        Some((i, rest[open..close].split_whitespace().next()?.to_owned()))
    });
    let html = text.to_ascii_lowercase().find("<img").and_then(|i| {
        let rest = &text[i..];
        let src = rest.to_ascii_lowercase().find("src=")? + 4;
        let quote = rest[src..].chars().next()?;
        let (start, end) = if quote == '"' || quote == '\'' {
            let end = rest[src + 1..].find(quote)? + src + 1;
            (src + 1, end)
        } else {
            let end = rest[src..].find(|c: char| c.is_whitespace() || c == '>')? + src;
            (src, end)
        };
        Some((i, rest[start..end].to_owned()))
    });
    let url = match (markdown, html) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a.1
            } else {
                b.1
            }
        }
        (Some(a), None) | (None, Some(a)) => a.1,
        (None, None) => return None,
    };
    let path = if url.contains("://") {
        let marker = format!("/{repo_id}/");
        let after = &url[url.find(&marker)? + marker.len()..];
        let (kind, rest) = after.split_once('/')?;
        if kind != "resolve" && kind != "blob" {
            return None;
        }
        rest.split_once('/')?.1.split(['?', '#']).next()?.to_owned()
    } else {
        url.split(['?', '#']).next()?.trim_start_matches("./").to_owned()
    };
    let lower = path.to_ascii_lowercase();
    let safe = !path.is_empty()
        && !path.starts_with('/')
        && !path.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    (safe && IMAGE_EXTENSIONS.iter().any(|e| lower.ends_with(e))).then_some(path)
}

/// A front matter value that may be one string or a list of them.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.trim().to_owned()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(|s| s.trim().to_owned()))
            .collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

fn relation_named(name: &str) -> BaseModelRelation {
    match name.trim().to_ascii_lowercase().as_str() {
        "finetune" | "fine-tune" | "finetuned" => BaseModelRelation::Finetune,
        "quantized" | "quantised" => BaseModelRelation::Quantized,
        "adapter" | "lora" => BaseModelRelation::Adapter,
        "merge" | "merged" => BaseModelRelation::Merge,
        _ => BaseModelRelation::Unspecified,
    }
}

/// What the hub says about `info`; `readme` is the start of its README.md, when it has one.
pub fn hub_metadata(info: &HubModel, readme: Option<&str>, read_time: prost_types::Timestamp) -> HubMetadata {
    let card = info.card_data.clone().unwrap_or(Value::Null);
    let field = |name: &str| card.get(name);
    let text = |name: &str| strings(field(name)).into_iter().next().unwrap_or_default();
    let mut tags = strings(field("tags"));
    tags.extend(info.tags.iter().cloned());
    tags.sort();
    tags.dedup();
    HubMetadata {
        license: text("license"),
        base_models: base_models(info, &card),
        pipeline_tag: info
            .pipeline_tag
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| text("pipeline_tag")),
        library_name: info
            .library_name
            .clone()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| text("library_name")),
        languages: strings(field("language")),
        datasets: strings(field("datasets")),
        tags,
        description: readme.map(first_paragraph).unwrap_or_default(),
        gated: info.is_gated(),
        downloads: info.downloads,
        likes: info.likes,
        read_time: Some(read_time),
        image_path: String::new(),
    }
}

/// The card's `base_model` (one or a list) with its `base_model_relation`; else the hub's own
/// `base_model:<relation>:<repo>` tags. Where neither says how, the shape decides: several bases
/// are a merge, GGUF is a quant, a PEFT/LoRA repository an adapter, anything else a fine-tune.
fn base_models(info: &HubModel, card: &Value) -> Vec<BaseModel> {
    let declared = relation_named(
        card.get("base_model_relation")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let mut bases: Vec<(String, BaseModelRelation)> = strings(card.get("base_model"))
        .into_iter()
        .map(|repo| (repo, declared))
        .collect();
    for tag in &info.tags {
        let Some(rest) = tag.strip_prefix("base_model:") else {
            continue;
        };
        let (relation, repo) = match rest.split_once(':') {
            Some((relation, repo)) => (relation_named(relation), repo),
            None => (BaseModelRelation::Unspecified, rest),
        };
        match bases.iter_mut().find(|(r, _)| r.eq_ignore_ascii_case(repo)) {
            Some(known) if known.1 == BaseModelRelation::Unspecified => known.1 = relation,
            Some(_) => {}
            None => bases.push((repo.to_owned(), relation)),
        }
    }
    bases.retain(|(repo, _)| repo.split('/').count() == 2 && !repo.contains(char::is_whitespace));
    let has = |needle: &str| {
        info.tags.iter().any(|t| t.eq_ignore_ascii_case(needle))
            || info
                .library_name
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(needle))
    };
    let inferred = if bases.len() > 1 {
        BaseModelRelation::Merge
    } else if has("gguf") || has("gptq") || has("awq") || has("exl2") {
        BaseModelRelation::Quantized
    } else if has("peft") || has("lora") {
        BaseModelRelation::Adapter
    } else {
        BaseModelRelation::Finetune
    };
    bases
        .into_iter()
        .take(32)
        .map(|(repo_id, relation)| BaseModel {
            repo_id,
            relation: if relation == BaseModelRelation::Unspecified {
                inferred as i32
            } else {
                relation as i32
            },
            model_ids: Vec::new(),
        })
        .collect()
}

/// The first paragraph of prose in a README: after the front matter, skipping headings, HTML,
/// images, badges, tables, quotes and code; inline links keep their text. At most 1,000 bytes.
pub fn first_paragraph(readme: &str) -> String {
    let body = body(readme);
    let mut paragraph: Vec<String> = Vec::new();
    let mut in_code = false;
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
            if !paragraph.is_empty() {
                break;
            }
            continue;
        }
        let skip = in_code
            || trimmed.starts_with('#')
            || trimmed.starts_with('<')
            || trimmed.starts_with('|')
            || trimmed.starts_with('>')
            || trimmed.starts_with("![")
            || trimmed.starts_with("[![")
            || trimmed.starts_with("---")
            || trimmed.starts_with("===");
        if trimmed.is_empty() || skip {
            if !paragraph.is_empty() {
                break;
            }
            continue;
        }
        paragraph.push(without_links(trimmed));
    }
    let text = paragraph.join(" ");
    let mut end = text.len().min(MAX_DESCRIPTION);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim().to_owned()
}

/// `[text](url)` becomes `text`; emphasis markers go.
fn without_links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace("**", "").replace("__", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_paragraph_skips_front_matter_headings_and_badges() {
        let readme = "---\nlicense: mit\ntags:\n- x\n---\n\n# Title\n\n[![badge](b.svg)](x)\n<img src=a.png>\n\nA **small** model, see [the paper](https://x).\nSecond line.\n\nMore text.\n";
        assert_eq!(
            first_paragraph(readme),
            "A small model, see the paper. Second line."
        );
        assert_eq!(first_paragraph("# Only a heading\n"), "");
        assert_eq!(first_paragraph("---\nlicense: mit\n"), "");
        assert!(first_paragraph(&"word ".repeat(1000)).len() <= MAX_DESCRIPTION);
    }

    #[test]
    fn the_first_image_is_taken_only_from_the_repository_itself() {
        let md = "---\nlicense: mit\n---\n# T\n![sample](./images/sample.png)\n<img src=\"other.png\">";
        assert_eq!(first_image(md, "acme/x").as_deref(), Some("images/sample.png"));
        let html =
            "<img src=\"https://huggingface.co/acme/x/resolve/main/preview.webp?download=true\" width=300>";
        assert_eq!(first_image(html, "acme/x").as_deref(), Some("preview.webp"));
        // Another repository's image, another host's, a path that climbs out, no image at all.
        assert_eq!(
            first_image(
                "![a](https://huggingface.co/other/y/resolve/main/a.png)",
                "acme/x"
            ),
            None
        );
        assert_eq!(first_image("![a](https://cdn.example/a.png)", "acme/x"), None);
        assert_eq!(first_image("![a](../a.png)", "acme/x"), None);
        assert_eq!(first_image("![a](notes.txt)", "acme/x"), None);
        assert_eq!(first_image("just text", "acme/x"), None);
    }

    #[test]
    fn base_models_come_with_their_relation() {
        let info = |tags: &[&str], card: Value, library: &str| HubModel {
            id: "acme/x".to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            card_data: Some(card),
            library_name: Some(library.to_owned()),
            ..Default::default()
        };
        let relation = |m: &HubModel| {
            let card = m.card_data.clone().unwrap_or(Value::Null);
            base_models(m, &card)
                .iter()
                .map(|b| (b.repo_id.clone(), b.relation))
                .collect::<Vec<_>>()
        };
        // Declared by the card.
        let m = info(
            &[],
            json!({"base_model": "org/base", "base_model_relation": "adapter"}),
            "",
        );
        assert_eq!(
            relation(&m),
            vec![("org/base".to_owned(), BaseModelRelation::Adapter as i32)]
        );
        // From the hub's tags.
        let m = info(
            &["base_model:quantized:org/base", "base_model:org/base"],
            json!({}),
            "",
        );
        assert_eq!(
            relation(&m),
            vec![("org/base".to_owned(), BaseModelRelation::Quantized as i32)]
        );
        // Inferred from the shape.
        let m = info(&["gguf"], json!({"base_model": ["org/base"]}), "gguf");
        assert_eq!(
            relation(&m),
            vec![("org/base".to_owned(), BaseModelRelation::Quantized as i32)]
        );
        let m = info(&[], json!({"base_model": ["org/a", "org/b"]}), "transformers");
        assert!(
            relation(&m)
                .iter()
                .all(|(_, r)| *r == BaseModelRelation::Merge as i32)
        );
        let m = info(&[], json!({"base_model": "not a repo"}), "");
        assert!(relation(&m).is_empty());
    }
}
