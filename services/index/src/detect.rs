//! Type and family inference from file content: tensor names and shapes, GGUF metadata, configs,
//! and (as weak evidence only) names. Every decision keeps its evidence, a confidence and the
//! runner-up; when nothing real points anywhere the answer is `unknown`, with what was seen.

use serde_json::Value;

pub use crate::inspect::{Facts, format};
use crate::inspect::{gguf, safetensors};
use crate::metadata::{Detection, Evidence};

/// Version of these rules, recorded with every detection.
pub const RULES_VERSION: u32 = 2;

/// The outcome of detection.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Model type (`checkpoint`, `lora`, ..., `unknown`).
    pub model_type: String,
    /// Family (`sdxl`, `llama`, ..., `unknown`).
    pub family: String,
    /// Architecture string when the files declare one.
    pub architecture: String,
    /// Precision (`fp16`, `bf16`, `fp32`, `fp8_e4m3fn`, `mixed`, or empty).
    pub precision: String,
    /// Quantization (GGUF).
    pub quantization: String,
    /// Parameter count when knowable.
    pub parameter_count: Option<u64>,
    /// The record of why.
    pub detection: Detection,
}

#[derive(Clone, Debug)]
struct Candidate {
    model_type: &'static str,
    family: String,
    score: f64,
    evidence: Vec<Evidence>,
}

fn ev(kind: &str, key: &str, value: impl ToString, supports: &str) -> Evidence {
    Evidence {
        kind: kind.to_owned(),
        key: key.to_owned(),
        value: value.to_string(),
        supports: supports.to_owned(),
    }
}

/// Decides type and family.
pub fn detect(facts: &Facts) -> Decision {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut architecture = String::new();
    if let Some(index) = &facts.model_index {
        diffusers_rules(facts, index, &mut candidates, &mut architecture);
    }
    let head_rules_out_llm = facts
        .config
        .as_ref()
        .is_some_and(|config| config_rules(config, &mut candidates, &mut architecture));
    sentence_transformers_rules(facts, &mut candidates);
    if let Some(header) = &facts.gguf {
        gguf_rules(header, facts, &mut candidates, &mut architecture);
    }
    if let Some(header) = &facts.safetensors {
        tensor_rules(header, &mut candidates);
    }
    name_rules(facts, &mut candidates);
    if head_rules_out_llm {
        // The config's head says what the weights are for; decoder-shaped tensor names alone
        // do not make a chat model of a classifier.
        candidates.retain(|c| !(c.model_type == "llm" && c.evidence.iter().all(|e| e.kind == "tensor_key")));
    }

    // Merge candidates that agree, then rank.
    let mut merged: Vec<Candidate> = Vec::new();
    for c in candidates {
        if let Some(m) = merged
            .iter_mut()
            .find(|m| m.model_type == c.model_type && m.family == c.family)
        {
            m.score += c.score * 0.5;
            m.evidence.extend(c.evidence);
        } else {
            merged.push(c);
        }
    }
    // A family-agnostic candidate ("unknown" family) adopts the family of a same-type candidate.
    merged.sort_by(|a, b| b.score.total_cmp(&a.score));
    let (precision, parameter_count) = precision_and_params(facts);
    let quantization = facts
        .gguf
        .as_ref()
        .and_then(gguf::Header::quantization)
        .unwrap_or_default()
        .to_owned();
    let mut best = match merged.first() {
        Some(best) if best.score >= 0.3 => best.clone(),
        _ => Candidate {
            model_type: "unknown",
            family: "unknown".to_owned(),
            score: 0.0,
            evidence: merged.iter().flat_map(|c| c.evidence.clone()).collect(),
        },
    };
    if best.family == "unknown"
        && let Some(same) = merged
            .iter()
            .skip(1)
            .find(|c| c.model_type == best.model_type && c.family != "unknown")
    {
        best.family = same.family.clone();
        best.evidence.extend(same.evidence.clone());
        // The family rests on weaker evidence than the type: say so in the confidence.
        best.score = best.score.min(0.6);
    }
    let runner_up = merged
        .iter()
        .find(|c| c.model_type != best.model_type || c.family != best.family)
        .filter(|_| best.model_type != "unknown");
    Decision {
        model_type: best.model_type.to_owned(),
        family: best.family.clone(),
        architecture,
        precision,
        quantization,
        parameter_count,
        detection: Detection {
            confidence: best.score.min(1.0),
            evidence: best.evidence,
            runner_up: runner_up
                .map(|r| format!("{}/{}", r.model_type, r.family))
                .unwrap_or_default(),
            runner_up_confidence: runner_up.map(|r| r.score.min(1.0)).unwrap_or_default(),
            rules_version: RULES_VERSION,
        },
    }
}

fn precision_and_params(facts: &Facts) -> (String, Option<u64>) {
    if let Some(h) = &facts.safetensors {
        let counts = h.dtype_counts();
        let total: u64 = counts.values().sum();
        let precision = counts
            .iter()
            .max_by_key(|(_, n)| **n)
            .filter(|(_, n)| total > 0 && **n as f64 / total as f64 >= 0.9)
            .map(|(dtype, _)| match dtype.as_str() {
                "F16" => "fp16".to_owned(),
                "BF16" => "bf16".to_owned(),
                "F32" => "fp32".to_owned(),
                "F64" => "fp64".to_owned(),
                "F8_E4M3" => "fp8_e4m3fn".to_owned(),
                "F8_E5M2" => "fp8_e5m2".to_owned(),
                other => other.to_lowercase(),
            })
            .unwrap_or_else(|| {
                if total > 0 {
                    "mixed".to_owned()
                } else {
                    String::new()
                }
            });
        return (precision, Some(h.parameter_count()));
    }
    if let Some(g) = &facts.gguf {
        return (String::new(), Some(g.parameter_count()));
    }
    (String::new(), None)
}

fn any_key(h: &safetensors::Header, prefix: &str) -> Option<String> {
    // Tensors are sorted by name: the first name >= prefix is the only one to check.
    let i = h.tensors.partition_point(|t| t.name.as_str() < prefix);
    h.tensors
        .get(i)
        .filter(|t| t.name.starts_with(prefix))
        .map(|t| t.name.clone())
}

fn key_containing(h: &safetensors::Header, needle: &str) -> Option<String> {
    h.tensors
        .iter()
        .find(|t| t.name.contains(needle))
        .map(|t| t.name.clone())
}

/// Families of SD-style UNets by the cross-attention context width.
fn unet_family_by_context(h: &safetensors::Header, prefix: &str) -> Option<(String, Evidence)> {
    let attn = h.tensors.iter().find(|t| {
        t.name.starts_with(prefix) && t.name.ends_with("attn2.to_k.weight") && t.shape.len() == 2
    })?;
    let context = attn.shape[1];
    let family = match context {
        768 => "sd1",
        1024 => "sd2",
        2048 => "sdxl",
        _ => return None,
    };
    Some((
        family.to_owned(),
        ev(
            "tensor_shape",
            &attn.name,
            format!("{:?}", attn.shape),
            &format!("family={family}"),
        ),
    ))
}

fn tensor_rules(h: &safetensors::Header, out: &mut Vec<Candidate>) {
    let mut add = |model_type: &'static str, family: &str, score: f64, evidence: Vec<Evidence>| {
        out.push(Candidate {
            model_type,
            family: family.to_owned(),
            score,
            evidence,
        });
    };

    // LoRA / LyCORIS adapters.
    let lora_key = [
        "lora_up.weight",
        "lora_down.weight",
        "lora_A.weight",
        "lora_B.weight",
        ".hada_w1_a",
        ".lokr_w1",
    ]
    .iter()
    .find_map(|needle| key_containing(h, needle));
    if let Some(key) = lora_key {
        let mut evidence = vec![ev("tensor_key", &key, "present", "type=lora")];
        let base = h
            .metadata
            .get("ss_base_model_version")
            .map(String::as_str)
            .unwrap_or_default();
        let family = if let Some(k) =
            key_containing(h, "double_blocks").or_else(|| key_containing(h, "single_transformer_blocks"))
        {
            evidence.push(ev("tensor_key", &k, "present", "family=flux"));
            "flux"
        } else if let Some(k) = key_containing(h, "joint_blocks")
            .or_else(|| key_containing(h, "transformer_blocks.0.attn.add_q_proj"))
        {
            evidence.push(ev("tensor_key", &k, "present", "family=sd3"));
            "sd3"
        } else if let Some(k) = any_key(h, "lora_te2_").or_else(|| key_containing(h, "add_embedding")) {
            evidence.push(ev("tensor_key", &k, "present", "family=sdxl"));
            "sdxl"
        } else if let Some(k) = any_key(h, "lora_te_").or_else(|| any_key(h, "lora_unet_")) {
            // SD1 and SD2 LoRAs differ by the text encoder width on the attention projections.
            let width = h
                .tensors
                .iter()
                .find(|t| t.name.contains("attn2_to_k.lora_down") && t.shape.len() == 2)
                .map(|t| t.shape[1]);
            let family = match width {
                Some(1024) => "sd2",
                _ => "sd1",
            };
            evidence.push(ev(
                "tensor_key",
                &k,
                format!("attn2 context width {width:?}"),
                &format!("family={family}"),
            ));
            family
        } else if let Some(k) = key_containing(h, "self_attn.q_proj") {
            evidence.push(ev("tensor_key", &k, "present", "family=llm adapter"));
            "unknown"
        } else {
            "unknown"
        };
        if !base.is_empty() {
            evidence.push(ev(
                "safetensors_metadata",
                "ss_base_model_version",
                base,
                &format!("family={family}"),
            ));
        }
        add("lora", family, 0.95, evidence);
        return;
    }

    // Textual-inversion embeddings.
    if let Some(t) = h
        .tensor("emb_params")
        .or_else(|| h.tensors.iter().find(|t| t.name.starts_with("string_to_param")))
    {
        let width = t.shape.last().copied().unwrap_or_default();
        let family = match width {
            768 => "sd1",
            1024 => "sd2",
            _ => "unknown",
        };
        add(
            "embedding",
            family,
            0.9,
            vec![ev(
                "tensor_shape",
                &t.name,
                format!("{:?}", t.shape),
                &format!("type=embedding family={family}"),
            )],
        );
        return;
    }
    if let (Some(g), Some(l)) = (h.tensor("clip_g"), h.tensor("clip_l")) {
        add(
            "embedding",
            "sdxl",
            0.9,
            vec![
                ev(
                    "tensor_key",
                    &g.name,
                    format!("{:?}", g.shape),
                    "type=embedding family=sdxl",
                ),
                ev(
                    "tensor_key",
                    &l.name,
                    format!("{:?}", l.shape),
                    "type=embedding family=sdxl",
                ),
            ],
        );
        return;
    }

    // Full SD-style checkpoints and bare UNets.
    let unet = any_key(h, "model.diffusion_model.");
    let vae = any_key(h, "first_stage_model.");
    if let Some(unet_key) = &unet {
        let mut evidence = vec![ev("tensor_key", unet_key, "present", "diffusion backbone")];
        let family = if let Some(k) = any_key(h, "model.diffusion_model.double_blocks.") {
            evidence.push(ev("tensor_key", &k, "present", "family=flux"));
            "flux".to_owned()
        } else if let Some(k) = any_key(h, "model.diffusion_model.joint_blocks.") {
            evidence.push(ev("tensor_key", &k, "present", "family=sd3"));
            "sd3".to_owned()
        } else if let Some((family, e)) = unet_family_by_context(h, "model.diffusion_model.") {
            evidence.push(e);
            family
        } else {
            "unknown".to_owned()
        };
        if let Some(k) = any_key(h, "conditioner.embedders.1.") {
            evidence.push(ev("tensor_key", &k, "present", "family=sdxl (two text encoders)"));
        } else if let Some(k) = any_key(h, "cond_stage_model.") {
            evidence.push(ev("tensor_key", &k, "present", "text encoder bundled"));
        }
        match &vae {
            Some(vae_key) => {
                evidence.push(ev(
                    "tensor_key",
                    vae_key,
                    "present",
                    "type=checkpoint (VAE bundled)",
                ));
                add("checkpoint", &family, 0.95, evidence);
            }
            None => {
                evidence.push(ev(
                    "tensor_key",
                    "first_stage_model.*",
                    "absent",
                    "type=diffusion_model",
                ));
                add("diffusion_model", &family, 0.85, evidence);
                add("checkpoint", &family, 0.4, Vec::new());
            }
        }
        return;
    }

    // Flux / SD3 transformers without the ComfyUI prefix.
    if let Some(k) = any_key(h, "double_blocks.").or_else(|| any_key(h, "transformer_blocks.0.ff_context")) {
        let family = if k.starts_with("double_blocks.") || any_key(h, "single_transformer_blocks.").is_some()
        {
            "flux"
        } else {
            "sd3"
        };
        add(
            "diffusion_model",
            family,
            0.9,
            vec![ev(
                "tensor_key",
                &k,
                "present",
                &format!("type=diffusion_model family={family}"),
            )],
        );
        return;
    }
    if let Some(k) = any_key(h, "joint_blocks.") {
        add(
            "diffusion_model",
            "sd3",
            0.9,
            vec![ev("tensor_key", &k, "present", "type=diffusion_model family=sd3")],
        );
        return;
    }

    // ControlNet (original and diffusers layouts).
    if let Some(k) = any_key(h, "control_model.")
        .or_else(|| any_key(h, "controlnet_cond_embedding."))
        .or_else(|| any_key(h, "input_hint_block."))
    {
        let mut evidence = vec![ev("tensor_key", &k, "present", "type=controlnet")];
        let family = unet_family_by_context(h, "control_model.")
            .or_else(|| unet_family_by_context(h, ""))
            .map(|(f, e)| {
                evidence.push(e);
                f
            })
            .unwrap_or_else(|| "unknown".to_owned());
        add("controlnet", &family, 0.95, evidence);
        return;
    }

    // Diffusers-layout UNet.
    if let (Some(k), Some(_)) = (any_key(h, "down_blocks."), any_key(h, "time_embedding.")) {
        let mut evidence = vec![ev(
            "tensor_key",
            &k,
            "present",
            "type=diffusion_model (diffusers UNet)",
        )];
        let family = unet_family_by_context(h, "").map(|(f, e)| {
            evidence.push(e);
            f
        });
        add(
            "diffusion_model",
            family.as_deref().unwrap_or("unknown"),
            0.85,
            evidence,
        );
        return;
    }

    // VAE.
    if let (Some(enc), Some(dec)) = (any_key(h, "encoder.down"), any_key(h, "decoder.")) {
        let conv_in = h.tensor("decoder.conv_in.weight");
        let latent = conv_in.and_then(|t| t.shape.get(1).copied());
        let mut evidence = vec![
            ev("tensor_key", &enc, "present", "type=vae"),
            ev("tensor_key", &dec, "present", "type=vae"),
        ];
        let family = match latent {
            Some(16) => {
                evidence.push(ev(
                    "tensor_shape",
                    "decoder.conv_in.weight",
                    "16 latent channels",
                    "family=flux or sd3",
                ));
                "unknown"
            }
            Some(4) => {
                evidence.push(ev(
                    "tensor_shape",
                    "decoder.conv_in.weight",
                    "4 latent channels",
                    "family=sd1, sd2 or sdxl",
                ));
                "unknown"
            }
            _ => "unknown",
        };
        add("vae", family, 0.9, evidence);
        return;
    }

    // Upscalers (ESRGAN family).
    if let Some(k) = any_key(h, "RRDB_trunk.")
        .or_else(|| any_key(h, "body.0.rdb1."))
        .or_else(|| any_key(h, "conv_first."))
    {
        add(
            "upscaler",
            "esrgan",
            0.85,
            vec![ev("tensor_key", &k, "present", "type=upscaler family=esrgan")],
        );
        return;
    }

    // Text and vision encoders.
    let text = any_key(h, "text_model.encoder.layers.0.").or_else(|| any_key(h, "text_model.embeddings."));
    let vision = any_key(h, "vision_model.encoder.layers.0.");
    if let (Some(k), None) = (&vision, &text) {
        add(
            "clip_vision",
            "clip",
            0.9,
            vec![ev("tensor_key", k, "present", "type=clip_vision")],
        );
        return;
    }
    if let Some(k) = &text {
        let width = h
            .tensor("text_model.final_layer_norm.weight")
            .and_then(|t| t.shape.first().copied());
        let family = match width {
            Some(768) => "clip-l",
            Some(1280) => "clip-g",
            Some(1024) => "clip-h",
            _ => "clip",
        };
        add(
            "text_encoder",
            family,
            0.9,
            vec![ev(
                "tensor_key",
                k,
                format!("hidden width {width:?}"),
                &format!("type=text_encoder family={family}"),
            )],
        );
        return;
    }
    if let (Some(k), Some(_)) = (
        any_key(h, "encoder.block.0.layer.0.SelfAttention."),
        h.tensor("shared.weight")
            .or_else(|| h.tensor("encoder.embed_tokens.weight")),
    ) {
        add(
            "text_encoder",
            "t5",
            0.9,
            vec![ev("tensor_key", &k, "present", "type=text_encoder family=t5")],
        );
        return;
    }

    // Language and other transformers weights without a config.
    if let Some(k) = any_key(h, "model.encoder.conv1.") {
        add(
            "audio",
            "whisper",
            0.85,
            vec![ev("tensor_key", &k, "present", "type=audio family=whisper")],
        );
        return;
    }
    if let Some(k) = any_key(h, "embeddings.word_embeddings.").or_else(|| any_key(h, "bert.embeddings.")) {
        add(
            "text_embedding",
            "bert",
            0.8,
            vec![ev("tensor_key", &k, "present", "type=text_embedding family=bert")],
        );
        return;
    }
    if let Some(k) =
        any_key(h, "model.layers.0.self_attn.q_proj").or_else(|| any_key(h, "model.embed_tokens."))
    {
        add(
            "llm",
            "unknown",
            0.7,
            vec![ev(
                "tensor_key",
                &k,
                "present",
                "type=llm (decoder-only transformer)",
            )],
        );
    }
}

/// Families of transformers `model_type` values.
fn transformers_family(model_type: &str) -> Option<(&'static str, &'static str)> {
    let mt = model_type.to_ascii_lowercase();
    Some(match mt.as_str() {
        m if m.starts_with("llama") || m == "codellama" => ("llm", "llama"),
        m if m.starts_with("mistral") || m.starts_with("mixtral") => ("llm", "mistral"),
        m if m.starts_with("qwen") => ("llm", "qwen"),
        m if m.starts_with("gemma") => ("llm", "gemma"),
        m if m.starts_with("phi") => ("llm", "phi"),
        "bert" | "roberta" | "xlm-roberta" | "distilbert" | "nomic_bert" | "mpnet" | "deberta"
        | "deberta-v2" | "electra" => ("text_embedding", "bert"),
        "whisper" => ("audio", "whisper"),
        "wav2vec2" | "hubert" => ("audio", "unknown"),
        "vit" | "dinov2" | "siglip_vision_model" | "convnext" => ("vision", "unknown"),
        "clip_vision_model" => ("clip_vision", "clip"),
        "clip_text_model" => ("text_encoder", "clip"),
        "t5" | "umt5" | "t5encoder" => ("text_encoder", "t5"),
        _ => return None,
    })
}

/// Candidates from config.json. True when its head says the weights are not a generative
/// language model (a classifier, a reranker, a conflicting class), so that tensor names alone
/// do not make one.
fn config_rules(config: &Value, out: &mut Vec<Candidate>, architecture: &mut String) -> bool {
    if let Some(arch) = config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
    {
        *architecture = arch.to_owned();
    }
    if let Some(class) = config.get("_class_name").and_then(Value::as_str) {
        // A diffusers component folder on its own.
        let (model_type, family) = diffusers_class(class).unwrap_or(("unknown", "unknown"));
        if architecture.is_empty() {
            *architecture = class.to_owned();
        }
        if model_type != "unknown" {
            let family = match config.get("cross_attention_dim").and_then(Value::as_u64) {
                Some(768) => "sd1",
                Some(1024) => "sd2",
                Some(2048) => "sdxl",
                _ => family,
            };
            out.push(Candidate {
                model_type,
                family: family.to_owned(),
                score: 0.9,
                evidence: vec![ev(
                    "config_json",
                    "_class_name",
                    class,
                    &format!("type={model_type} family={family}"),
                )],
            });
        }
        return false;
    }
    let Some(mt) = config.get("model_type").and_then(Value::as_str) else {
        return false;
    };
    let evidence = |supports: &str| {
        vec![
            ev("config_json", "model_type", mt, supports),
            ev("config_json", "architectures[0]", architecture.as_str(), supports),
        ]
    };
    // A text-to-speech head, whatever the backbone.
    if architecture.contains("TextToSpeech") || matches!(architecture.as_str(), "VitsModel" | "BarkModel") {
        out.push(Candidate {
            model_type: "tts",
            family: "unknown".to_owned(),
            score: 0.9,
            evidence: evidence("type=tts (a speech synthesis head)"),
        });
        return true;
    }
    // A language model with a vision tower: vision-language.
    if config.get("vision_config").is_some()
        && (architecture.ends_with("ForConditionalGeneration") || architecture.ends_with("ForCausalLM"))
    {
        let text_type = config
            .get("text_config")
            .and_then(|t| t.get("model_type"))
            .and_then(Value::as_str)
            .unwrap_or(mt);
        let family = transformers_family(text_type)
            .or_else(|| transformers_family(mt))
            .map(|(_, f)| f)
            .unwrap_or("unknown");
        out.push(Candidate {
            model_type: "vision_language",
            family: family.to_owned(),
            score: 0.95,
            evidence: evidence(&format!(
                "type=vision_language family={family} (vision_config with a generation head)"
            )),
        });
        return false;
    }
    let Some((model_type, family)) = transformers_family(mt) else {
        out.push(Candidate {
            model_type: "unknown",
            family: "unknown".to_owned(),
            score: 0.0,
            evidence: vec![ev("config_json", "model_type", mt, "no rule for this model_type")],
        });
        return false;
    };
    let head = Head::of(architecture);
    let (model_type, score, why): (&'static str, f64, String) = match head {
        // One output label: a relevance score, the shape of cross-encoder rerankers (and reward
        // models). More labels: a classifier, which the library has no type for.
        Head::SequenceClassification => match label_count(config) {
            Some(1) => (
                "reranker",
                0.9,
                "type=reranker (sequence classification, one label)".to_owned(),
            ),
            n => (
                "unknown",
                0.0,
                format!(
                    "a classifier with {} labels: no library type for classifiers",
                    n.map(|n| n.to_string()).unwrap_or_else(|| "unknown".to_owned())
                ),
            ),
        },
        Head::Generation => (model_type, 0.95, format!("type={model_type} family={family}")),
        // A decoder without its LM head (Qwen3Model, LlamaModel): an embedding model.
        Head::Base if model_type == "llm" => (
            "text_embedding",
            0.95,
            format!("type=text_embedding family={family} (no LM head)"),
        ),
        Head::Base | Head::None => (model_type, 0.95, format!("type={model_type} family={family}")),
        // Another task head (token classification, question answering) on a language model: not
        // a chat model, and no better type: a low confidence says so.
        Head::Task if model_type == "llm" => (
            model_type,
            0.45,
            format!(
                "type=llm family={family}, but with a task head ({architecture}) rather than a generation head"
            ),
        ),
        Head::Task => (model_type, 0.95, format!("type={model_type} family={family}")),
        // model_type and architecture disagree (a diffusers class with model_type llama): say
        // so with a low confidence and both readings.
        Head::Other => {
            if let Some((other_type, other_family)) = diffusers_class(architecture) {
                out.push(Candidate {
                    model_type: other_type,
                    family: other_family.to_owned(),
                    score: 0.45,
                    evidence: vec![ev(
                        "config_json",
                        "architectures[0]",
                        architecture.as_str(),
                        &format!("type={other_type} (conflicts with model_type {mt})"),
                    )],
                });
            }
            (
                model_type,
                0.45,
                format!("type={model_type} family={family} (conflicts with architecture {architecture})"),
            )
        }
    };
    out.push(Candidate {
        model_type,
        family: if model_type == "unknown" {
            "unknown".to_owned()
        } else {
            family.to_owned()
        },
        score,
        evidence: evidence(&why),
    });
    !matches!(head, Head::Generation | Head::Base | Head::None)
}

/// The head a transformers architecture name ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// No architecture given.
    None,
    /// `...ForCausalLM`, `...ForConditionalGeneration`, `...LMHeadModel`, `...ForMaskedLM`.
    Generation,
    /// `...ForSequenceClassification`.
    SequenceClassification,
    /// `...Model`: the backbone without a head.
    Base,
    /// Another `...For<Task>` head (image classification, token classification, ...).
    Task,
    /// Anything else (another head, or not a transformers class at all).
    Other,
}

impl Head {
    fn of(architecture: &str) -> Self {
        if architecture.is_empty() {
            Self::None
        } else if [
            "ForCausalLM",
            "ForConditionalGeneration",
            "LMHeadModel",
            "ForMaskedLM",
            "ForSpeechSeq2Seq",
        ]
        .iter()
        .any(|s| architecture.ends_with(s))
        {
            Self::Generation
        } else if architecture.ends_with("ForSequenceClassification") {
            Self::SequenceClassification
        } else if diffusers_class(architecture).is_some() {
            Self::Other
        } else if architecture.contains("For") {
            Self::Task
        } else if architecture.ends_with("Model") {
            Self::Base
        } else {
            Self::Other
        }
    }
}

/// Type and family of a diffusers class name.
fn diffusers_class(class: &str) -> Option<(&'static str, &'static str)> {
    Some(match class {
        "ControlNetModel" | "SD3ControlNetModel" | "FluxControlNetModel" => ("controlnet", "unknown"),
        "AutoencoderKL" => ("vae", "unknown"),
        "UNet2DConditionModel" => ("diffusion_model", "unknown"),
        "FluxTransformer2DModel" => ("diffusion_model", "flux"),
        "SD3Transformer2DModel" => ("diffusion_model", "sd3"),
        _ => return None,
    })
}

/// How many labels a classification head has (`id2label`, else `num_labels`).
fn label_count(config: &Value) -> Option<usize> {
    config
        .get("id2label")
        .and_then(Value::as_object)
        .map(serde_json::Map::len)
        .or_else(|| {
            config
                .get("num_labels")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        })
}

/// A sentence-transformers folder (`modules.json`, `config_sentence_transformers.json`, a
/// pooling module) is an embedding model whatever its backbone: a Qwen3 decoder inside one is
/// an embedder, not a chat model.
fn sentence_transformers_rules(facts: &Facts, out: &mut Vec<Candidate>) {
    let marker = facts.file_names.iter().find(|f| {
        let f = f.as_str();
        f == "modules.json" || f == "config_sentence_transformers.json" || f.contains("_Pooling/")
    });
    let Some(marker) = marker else { return };
    let family = facts
        .config
        .as_ref()
        .and_then(|c| c.get("model_type"))
        .and_then(Value::as_str)
        .and_then(transformers_family)
        .map(|(_, f)| f)
        .unwrap_or("unknown");
    out.push(Candidate {
        model_type: "text_embedding",
        family: family.to_owned(),
        score: 1.2,
        evidence: vec![ev(
            "file",
            marker,
            "sentence-transformers",
            &format!("type=text_embedding family={family} (a sentence-transformers folder)"),
        )],
    });
}

fn diffusers_rules(facts: &Facts, index: &Value, out: &mut Vec<Candidate>, architecture: &mut String) {
    let class = index
        .get("_class_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    *architecture = class.to_owned();
    let mut evidence = vec![ev(
        "model_index_json",
        "_class_name",
        class,
        "type=checkpoint (diffusers pipeline)",
    )];
    let family = if class.contains("Flux") {
        "flux".to_owned()
    } else if class.contains("StableDiffusion3") {
        "sd3".to_owned()
    } else if class.contains("XL") {
        "sdxl".to_owned()
    } else if class.starts_with("StableDiffusion") {
        match facts
            .sub_configs
            .get("unet/config.json")
            .and_then(|c| c.get("cross_attention_dim"))
            .and_then(Value::as_u64)
        {
            Some(1024) => {
                evidence.push(ev(
                    "config_json",
                    "unet/config.json cross_attention_dim",
                    1024,
                    "family=sd2",
                ));
                "sd2".to_owned()
            }
            Some(768) => {
                evidence.push(ev(
                    "config_json",
                    "unet/config.json cross_attention_dim",
                    768,
                    "family=sd1",
                ));
                "sd1".to_owned()
            }
            _ => "unknown".to_owned(),
        }
    } else {
        "unknown".to_owned()
    };
    evidence[0].supports = format!("type=checkpoint family={family}");
    out.push(Candidate {
        model_type: "checkpoint",
        family,
        score: 0.95,
        evidence,
    });
}

fn gguf_rules(h: &gguf::Header, facts: &Facts, out: &mut Vec<Candidate>, architecture: &mut String) {
    let Some(arch) = h.architecture() else {
        out.push(Candidate {
            model_type: "unknown",
            family: "unknown".to_owned(),
            score: 0.0,
            evidence: vec![ev("gguf_metadata", "general.architecture", "absent", "nothing")],
        });
        return;
    };
    *architecture = arch.to_owned();
    let name = h.name().unwrap_or_default().to_ascii_lowercase();
    let (model_type, family) = match arch {
        "llama" if name.contains("mistral") || name.contains("mixtral") => ("llm", "mistral"),
        "llama" | "llama4" | "deci" => ("llm", "llama"),
        "mistral3" => ("llm", "mistral"),
        a if a.starts_with("qwen") => ("llm", "qwen"),
        a if a.starts_with("gemma") => ("llm", "gemma"),
        a if a.starts_with("phi") => ("llm", "phi"),
        "bert" | "nomic-bert" | "jina-bert-v2" | "nomic-bert-moe" => ("text_embedding", "bert"),
        "whisper" => ("audio", "whisper"),
        "clip" => ("vision", "clip"),
        "flux" => ("diffusion_model", "flux"),
        "sd3" => ("diffusion_model", "sd3"),
        "sdxl" => ("diffusion_model", "sdxl"),
        "sd1" => ("diffusion_model", "sd1"),
        "t5" | "t5encoder" => ("text_encoder", "t5"),
        _ => ("llm", "unknown"),
    };
    let mut evidence = vec![ev(
        "gguf_metadata",
        "general.architecture",
        arch,
        &format!("type={model_type} family={family}"),
    )];
    if !name.is_empty() {
        evidence.push(ev(
            "gguf_metadata",
            "general.name",
            h.name().unwrap_or_default(),
            "display name",
        ));
    }
    let score = if family == "unknown" { 0.6 } else { 0.95 };
    out.push(Candidate {
        model_type,
        family: family.to_owned(),
        score,
        evidence,
    });
    // An mmproj beside the main file makes it a vision-language model; still an llm.
    if let Some(mmproj) = facts
        .file_names
        .iter()
        .find(|f| f.to_ascii_lowercase().contains("mmproj"))
    {
        out.push(Candidate {
            model_type,
            family: family.to_owned(),
            score: 0.1,
            evidence: vec![ev("file_name", mmproj, "present", "vision projector (mmproj)")],
        });
    }
}

/// Name hints are weak: they break ties and name families that content cannot tell apart (a
/// 4-channel VAE is the same network for SD1 and SDXL), never decide a type on their own above 0.3.
fn name_rules(facts: &Facts, out: &mut Vec<Candidate>) {
    let name = facts.name.to_ascii_lowercase();
    let words: Vec<&str> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    let family = if has("flux") || name.contains("flux1") {
        Some("flux")
    } else if has("sd3") || name.contains("sd3.5") || name.contains("sd35") {
        Some("sd3")
    } else if has("sdxl") || has("xl") || name.contains("sdxl") {
        Some("sdxl")
    } else if has("sd15") || name.contains("sd1.5") || name.contains("v1-5") || has("sd1") {
        Some("sd1")
    } else if has("sd2") || name.contains("v2-1") || name.contains("sd2.1") {
        Some("sd2")
    } else {
        None
    };
    let model_type = if has("lora") || has("lycoris") {
        Some("lora")
    } else if has("vae") {
        Some("vae")
    } else if has("controlnet") || name.contains("control_") {
        Some("controlnet")
    } else if has("esrgan") || has("upscaler") || name.contains("x4plus") {
        Some("upscaler")
    } else {
        None
    };
    // Family hints attach to whatever type content found; they only create a candidate together
    // with a type hint.
    if let Some(family) = family {
        let types: Vec<&'static str> = out.iter().map(|c| c.model_type).collect();
        for t in types {
            if t != "unknown" {
                out.push(Candidate {
                    model_type: t,
                    family: family.to_owned(),
                    score: 0.2,
                    evidence: vec![ev(
                        "file_name",
                        &facts.name,
                        family,
                        &format!("family={family} (name only)"),
                    )],
                });
            }
        }
    }
    if let Some(t) = model_type {
        out.push(Candidate {
            model_type: t,
            family: family.unwrap_or("unknown").to_owned(),
            score: 0.25,
            evidence: vec![ev("file_name", &facts.name, t, &format!("type={t} (name only)"))],
        });
    }
}
