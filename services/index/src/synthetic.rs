//! A synthetic library for benchmarks and anyone reproducing them: N models, each a
//! `<type>/<family>/<slug>/` folder with a valid `metadata.json` and a tiny weight file. Names mix
//! common words (so broad queries match 5-20% of the library) with a made-up word per model (so
//! specific queries match a handful).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::metadata::{Detection, FileEntry, Metadata, SCHEMA_VERSION, Source};

pub const WORDS: &[&str] = &[
    "juggernaut",
    "dreamshaper",
    "realistic",
    "vision",
    "anime",
    "pixel",
    "art",
    "detail",
    "tweaker",
    "portrait",
    "cinematic",
    "photon",
    "epic",
    "realism",
    "turbo",
    "lightning",
    "hyper",
    "ghibli",
    "watercolor",
    "sketch",
    "llama",
    "mistral",
    "qwen",
    "gemma",
    "phi",
    "instruct",
    "chat",
    "coder",
    "base",
    "uncensored",
];
/// Syllables of the made-up word each model name carries, so that specific searches match a
/// handful of models, as names do in a real library.
pub const SYLLABLES: &[&str] = &[
    "ka", "vo", "mi", "ra", "zen", "tul", "po", "ri", "sha", "lo", "ne", "qui", "dar", "bel", "fi", "gor",
    "hu", "ix", "jo", "ste",
];
pub const KINDS: &[(&str, &str)] = &[
    ("checkpoint", "sdxl"),
    ("checkpoint", "sd1"),
    ("lora", "sdxl"),
    ("lora", "flux"),
    ("lora", "sd1"),
    ("vae", "sdxl"),
    ("controlnet", "sd1"),
    ("embedding", "sd1"),
    ("llm", "llama"),
    ("llm", "qwen"),
    ("llm", "mistral"),
    ("text_encoder", "t5"),
    ("diffusion_model", "flux"),
    ("upscaler", "esrgan"),
];

/// A deterministic pseudo-random sequence (no rand crate needed for a bench).
pub struct Lcg(pub u64);
impl Lcg {
    /// The next value.
    pub fn next_value(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// A pseudo-random item.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_value() as usize) % items.len()]
    }
}

/// What differs between two synthetic models.
struct Made<'a> {
    id: String,
    name: String,
    model_type: &'a str,
    family: &'a str,
    format: &'a str,
    file: String,
    size: u64,
    serial: usize,
    n: usize,
}

/// One ready synthetic record, for unit tests.
#[cfg(test)]
pub(crate) fn sample_metadata() -> Metadata {
    record(Made {
        id: "checkpoint/sdxl/sample".to_owned(),
        name: "Sample".to_owned(),
        model_type: "checkpoint",
        family: "sdxl",
        format: "safetensors",
        file: "sample.safetensors".to_owned(),
        size: 1024,
        serial: 1,
        n: 1,
    })
}

/// A ready synthetic record with one small weight file; the generators set the rest.
fn record(m: Made<'_>) -> Metadata {
    Metadata {
        schema_version: SCHEMA_VERSION,
        id: m.id,
        display_name: m.name,
        model_type: m.model_type.to_owned(),
        family: m.family.to_owned(),
        architecture: String::new(),
        format: m.format.to_owned(),
        precision: String::new(),
        quantization: String::new(),
        parameter_count: Some(m.size * 4),
        files: vec![FileEntry {
            path: m.file,
            size: m.size,
            sha256: format!("sha256:{:064x}", m.serial),
            blake3: format!("blake3:{:064x}", m.serial),
        }],
        total_size: m.size,
        composite_digest: format!("blake3:{:064x}", m.serial + m.n),
        source: Source::Local {
            path: format!("/synthetic/{}", m.serial),
        },
        tags: Vec::new(),
        description: String::new(),
        license: "apache-2.0".to_owned(),
        added_time: "2026-11-24T00:00:00Z".to_owned(),
        updated_time: "2026-11-24T00:00:00Z".to_owned(),
        state: "ready".to_owned(),
        state_reason: String::new(),
        detection: Detection {
            confidence: 0.9,
            evidence: Vec::new(),
            runner_up: String::new(),
            runner_up_confidence: 0.0,
            rules_version: 1,
        },
        unsafe_format: false,
        dependency_bindings: Vec::new(),
        declares_no_dependencies: false,
        embedded: Default::default(),
        hub: None,
        side_files: Vec::new(),
        download: None,
    }
}

/// Writes a synthetic model's folder under `models`: its weight file (zeros of its size) and
/// metadata.json.
fn write_model(models: &Path, metadata: &Metadata) -> std::io::Result<()> {
    let dir = models.join(&metadata.id);
    std::fs::create_dir_all(&dir)?;
    for f in &metadata.files {
        std::fs::write(dir.join(&f.path), vec![0u8; f.size as usize])?;
    }
    std::fs::write(
        dir.join("metadata.json"),
        serde_json::to_vec_pretty(metadata).map_err(std::io::Error::other)?,
    )
}

/// Writes N models under `<root>/shared-resources/models`. Returns the time it took.
pub fn generate(root: &Path, n: usize) -> std::io::Result<Duration> {
    let start = Instant::now();
    let models = root.join("shared-resources/models");
    let mut rng = Lcg(42);
    for i in 0..n {
        let (model_type, family) = *rng.pick(KINDS);
        let coined: String = (0..3).map(|_| *rng.pick(SYLLABLES)).collect();
        let name = format!(
            "{} {coined} {} {} v{}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            family,
            i % 97
        );
        let slug = format!("{}-{i}", name.to_lowercase().replace(' ', "-"));
        let id = format!("{model_type}/{family}/{slug}");
        let weights = format!("{slug}.safetensors");
        let size = 16 + (i as u64 % 64);
        let metadata = Metadata {
            precision: "fp16".to_owned(),
            tags: vec![
                rng.pick(WORDS).to_string(),
                rng.pick(&["favourite", "nsfw", "sfw", "test"]).to_string(),
            ],
            description: format!("synthetic model {i} for benchmarks"),
            ..record(Made {
                id,
                name,
                model_type,
                family,
                format: "safetensors",
                file: weights,
                size,
                serial: i,
                n,
            })
        };
        write_model(&models, &metadata)?;
    }
    Ok(start.elapsed())
}

/// Families of the catalog-shaped library ([`generate_catalog`]).
pub const CATALOG_FAMILIES: &[&str] = &[
    "llama", "mistral", "qwen", "gemma", "phi", "baichuan", "yi", "falcon", "deepseek", "olmo",
];
/// Variants: "instruct" is three in ten.
pub const CATALOG_VARIANTS: &[&str] = &[
    "instruct",
    "instruct",
    "instruct",
    "base",
    "chat",
    "coder",
    "math",
    "vision",
    "uncensored",
    "abliterated",
];
/// Sizes.
pub const CATALOG_SIZES: &[&str] = &["0.5b", "1b", "3b", "7b", "8b", "13b", "14b", "32b", "70b"];
/// Quantisations.
pub const CATALOG_QUANTS: &[&str] = &["q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "iq4_xs", "q3_k_s"];
/// Types by share: half LLMs, a fifth diffusion, the rest embedding, audio and vision.
const CATALOG_TYPES: &[&str] = &[
    "llm",
    "llm",
    "llm",
    "llm",
    "llm",
    "checkpoint",
    "lora",
    "text_embedding",
    "audio",
    "vision",
];

/// The name of catalog model `i`: `<Family>-<Variant>-<Size>-<quant>-<6-digit serial>`, e.g.
/// `Mistral-Instruct-7B-Q4_K_M-004242` (what benchmarks search for, deterministically).
pub fn catalog_name(i: usize) -> (String, &'static str, &'static str, &'static str, &'static str) {
    let mut rng = Lcg(i as u64 * 7919 + 13);
    let family = *rng.pick(CATALOG_FAMILIES);
    let variant = *rng.pick(CATALOG_VARIANTS);
    let size = *rng.pick(CATALOG_SIZES);
    let quant = *rng.pick(CATALOG_QUANTS);
    let title = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    (
        format!(
            "{}-{}-{}-{}-{i:06}",
            title(family),
            title(variant),
            size.to_uppercase(),
            quant.to_uppercase()
        ),
        family,
        variant,
        size,
        quant,
    )
}

/// Writes N models shaped like a real mixed library (issue 15's workload) under
/// `<root>/shared-resources/models`: catalog names ([`catalog_name`]), tags = variant, quant and
/// size, about 1.4 KB of metadata.json each. Returns the time it took.
pub fn generate_catalog(root: &Path, n: usize) -> std::io::Result<Duration> {
    let start = Instant::now();
    let models = root.join("shared-resources/models");
    for i in 0..n {
        let (name, family, variant, size_word, quant) = catalog_name(i);
        let model_type = CATALOG_TYPES[i % CATALOG_TYPES.len()];
        let slug = name.to_lowercase().replace('.', "-");
        let id = format!("{model_type}/{family}/{slug}");
        let (format, weights) = if model_type == "llm" {
            ("gguf", format!("{slug}.gguf"))
        } else {
            ("safetensors", format!("{slug}.safetensors"))
        };
        let size = 16 + (i as u64 % 64);
        let metadata = Metadata {
            architecture: format!("{family}ForCausalLM"),
            precision: if quant == "f16" { "fp16" } else { "" }.to_owned(),
            quantization: quant.to_owned(),
            tags: vec![variant.to_owned(), quant.to_owned(), size_word.to_owned()],
            description: format!(
                "{name}: a {size_word} {family} {variant} model quantised as {quant}, generated for benchmarks so that search, list and memory figures are measured on a library shaped like a real one."
            ),
            ..record(Made {
                id,
                name: name.clone(),
                model_type,
                family,
                format,
                file: weights,
                size,
                serial: i,
                n,
            })
        };
        write_model(&models, &metadata)?;
    }
    Ok(start.elapsed())
}
