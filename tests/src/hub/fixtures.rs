//! Repositories the emulator serves: small, valid model files built in memory at start.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{HubFile, HubRepo};

/// Deterministic, incompressible bytes (xorshift64), so sizes and hashes are stable per seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A valid safetensors file: `tensors` are (name, dtype, shape); data is noise.
pub fn safetensors(tensors: &[(&str, &str, Vec<u64>)], metadata: &[(&str, &str)], seed: u64) -> Vec<u8> {
    let width = |dtype: &str| match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        header.insert("__metadata__".to_owned(), Value::Object(meta));
    }
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * width(dtype);
        header.insert(
            (*name).to_owned(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset as usize);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&noise(offset as usize, seed));
    out
}

/// A valid GGUF v3 file with one F32 tensor of `elements` values.
pub fn gguf(architecture: &str, name: &str, file_type: u32, elements: u64) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes()); // tensors
    out.extend_from_slice(&6u64.to_le_bytes()); // key/values
    string(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, architecture);
    string(&mut out, "general.name");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, name);
    string(&mut out, "general.file_type");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&file_type.to_le_bytes());
    string(&mut out, &format!("{architecture}.context_length"));
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&4096u32.to_le_bytes());
    string(&mut out, "general.license");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, "apache-2.0");
    string(&mut out, "general.base_model.0.name");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, &format!("{name} base"));
    string(&mut out, "token_embd.weight");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&elements.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // F32
    out.extend_from_slice(&0u64.to_le_bytes()); // offset
    while out.len() % 32 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&noise(elements as usize * 4, elements));
    out
}

fn text(path: &str, body: &str) -> HubFile {
    HubFile::new(path, Bytes::from(body.to_owned()))
}

fn readme(license: &str, tags: &[&str], body: &str) -> String {
    let mut yaml = format!("---\nlicense: {license}\n");
    if !tags.is_empty() {
        yaml.push_str("tags:\n");
        for tag in tags {
            yaml.push_str(&format!("- {tag}\n"));
        }
    }
    format!("{yaml}---\n\n{body}\n")
}

const GITATTRIBUTES: &str = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n";

/// `acme/tiny-model`: a small Llama in safetensors with config, tokenizer, card and a sub folder.
pub fn tiny_model(weights_bytes: u64) -> HubRepo {
    let elements = (weights_bytes / 2).max(64);
    let weights = safetensors(
        &[
            ("model.embed_tokens.weight", "F32", vec![8, 8]),
            ("model.layers.0.mlp.down_proj.weight", "F16", vec![elements]),
        ],
        &[("format", "pt")],
        7,
    );
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "torch_dtype": "float16"
    });
    HubRepo::new("acme/tiny-model")
        .file(text(".gitattributes", GITATTRIBUTES))
        .file(text(
            "README.md",
            &readme("apache-2.0", &["llama", "tiny"], "# Tiny model\nA test model."),
        ))
        .file(text(
            "config.json",
            &serde_json::to_string_pretty(&config).unwrap_or_default(),
        ))
        .file(text(
            "tokenizer.json",
            r#"{"version":"1.0","model":{"type":"BPE","vocab":{}}}"#,
        ))
        .file(text("sub/notes.txt", "notes in a sub folder\n"))
        .file(HubFile::lfs("model.safetensors", Bytes::from(weights)))
        .tags(&["transformers", "safetensors", "llama", "text-generation", "tiny"])
        .pipeline("text-generation")
        .library("transformers")
        .card(json!({"license": "apache-2.0", "tags": ["llama", "tiny"]}))
        .safetensors_summary(json!({"parameters": {"F32": 64, "F16": elements}, "total": 64 + elements}))
        .popularity(1200, 30)
        .revision("v1.0")
}

/// `acme/tiny-gguf`: quantizations of one model, one of them split in two parts, plus an mmproj.
pub fn tiny_gguf() -> HubRepo {
    let quant = |name: &str, ft: u32, elements: u64| {
        HubFile::lfs(name, Bytes::from(gguf("llama", "tiny", ft, elements)))
    };
    HubRepo::new("acme/tiny-gguf")
        .file(text(".gitattributes", GITATTRIBUTES))
        .file(text("README.md", &readme("mit", &["gguf"], "# Tiny GGUF")))
        .file(quant("tiny-Q4_K_M.gguf", 15, 4096))
        .file(quant("tiny-Q8_0.gguf", 7, 8192))
        .file(quant("tiny-F16-00001-of-00002.gguf", 1, 8192))
        .file(quant("tiny-F16-00002-of-00002.gguf", 1, 8192))
        .file(quant("mmproj-tiny-f16.gguf", 1, 1024))
        .tags(&["gguf", "llama", "text-generation"])
        .pipeline("text-generation")
        .library("gguf")
        .card(json!({"license": "mit"}))
        .popularity(5400, 80)
}

/// A repository whose files need an approved token.
pub fn gated_model() -> HubRepo {
    HubRepo::new("acme/gated-model")
        .file(text("README.md", &readme("other", &[], "# Gated")))
        .file(text(
            "config.json",
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama"}"#,
        ))
        .file(HubFile::lfs(
            "model.safetensors",
            Bytes::from(safetensors(&[("w", "F16", vec![512])], &[], 11)),
        ))
        .tags(&["llama"])
        .pipeline("text-generation")
        .library("transformers")
        .gated()
        .popularity(10, 1)
}

/// A private repository: invisible without a valid token.
pub fn private_model() -> HubRepo {
    HubRepo::new("acme/private-model")
        .file(text("config.json", r#"{"model_type":"llama"}"#))
        .private()
}

/// A repository of `files` weight files of `bytes_each` (for parallel and resume tests).
pub fn big_model(id: &str, files: usize, bytes_each: u64) -> HubRepo {
    let mut repo = HubRepo::new(id)
        .file(text(".gitattributes", GITATTRIBUTES))
        .file(text(
            "config.json",
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama"}"#,
        ))
        .tags(&["llama", "safetensors"])
        .pipeline("text-generation")
        .library("transformers")
        .popularity(3, 0);
    for n in 0..files {
        let name = if files == 1 {
            "model.safetensors".to_owned()
        } else {
            format!("model-{:05}-of-{files:05}.safetensors", n + 1)
        };
        let elements = (bytes_each / 2).max(64);
        repo = repo.file(HubFile::lfs(
            &name,
            Bytes::from(safetensors(
                &[(&format!("model.layers.{n}.weight"), "F16", vec![elements])],
                &[],
                100 + n as u64,
            )),
        ));
    }
    repo
}

/// A few unremarkable repositories so searches have something to page through.
pub fn filler(n: usize) -> Vec<HubRepo> {
    (0..n)
        .map(|i| {
            HubRepo::new(&format!("other/tiny-filler-{i}"))
                .file(text("config.json", r#"{"model_type":"bert"}"#))
                .tags(&["bert", "fill-mask"])
                .pipeline("fill-mask")
                .library("transformers")
                .popularity(100 * i as u64, i as u64)
        })
        .collect()
}

/// The standard set: tiny-model (with a 2 MiB weight), tiny-gguf, gated, private, and fillers;
/// `acme/old-tiny-model` is a renamed alias of `acme/tiny-model`.
pub fn standard() -> Vec<HubRepo> {
    let mut repos = vec![tiny_model(2 << 20), tiny_gguf(), gated_model(), private_model()];
    repos.extend(filler(3));
    repos
}
