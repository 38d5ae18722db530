//! The inference table: generated files with realistic headers for every type and family, and
//! what detection must say about them (with evidence, a confidence, and `unknown` when nothing
//! real points anywhere).

mod common;

use std::path::Path;

use common::*;
use pumas_index::detect::{Decision, detect};
use pumas_index::inspect::{facts_for, units_for};

fn decide(path: &Path) -> (Decision, &'static str, usize) {
    let units = units_for(path).expect("units");
    assert_eq!(
        units.len(),
        1,
        "{} should be one library item: {units:?}",
        path.display()
    );
    let facts = facts_for(&units[0]).expect("facts");
    (detect(&facts), facts.format, units[0].files.len())
}

fn check(path: &Path, model_type: &str, family: &str) -> Decision {
    let (decision, _, _) = decide(path);
    assert_eq!(
        (decision.model_type.as_str(), decision.family.as_str()),
        (model_type, family),
        "{}: {:#?}",
        path.display(),
        decision.detection
    );
    assert!(
        !decision.detection.evidence.is_empty(),
        "no evidence for {}",
        path.display()
    );
    assert!(decision.detection.confidence > 0.0 && decision.detection.confidence <= 1.0);
    decision
}

#[test]
fn diffusion_families_from_tensor_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    check(&sd1_checkpoint(&d.join("a.safetensors")), "checkpoint", "sd1");
    check(&sd2_checkpoint(&d.join("b.safetensors")), "checkpoint", "sd2");
    let xl = check(&sdxl_checkpoint(&d.join("c.safetensors")), "checkpoint", "sdxl");
    assert_eq!(xl.precision, "fp16");
    assert!(
        xl.detection
            .evidence
            .iter()
            .any(|e| e.key.ends_with("attn2.to_k.weight") && e.value.contains("2048"))
    );
    check(&sdxl_unet(&d.join("d.safetensors")), "diffusion_model", "sdxl");
    check(
        &flux_transformer(&d.join("e.safetensors")),
        "diffusion_model",
        "flux",
    );
    check(
        &sd3_transformer(&d.join("f.safetensors")),
        "diffusion_model",
        "sd3",
    );
}

#[test]
fn adapters_and_components() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let lora = check(&sdxl_lora(&d.join("detail.safetensors")), "lora", "sdxl");
    assert!(
        lora.detection
            .evidence
            .iter()
            .any(|e| e.key == "ss_base_model_version")
    );
    check(&sd1_lora(&d.join("style.safetensors")), "lora", "sd1");
    check(&flux_lora(&d.join("flux-style.safetensors")), "lora", "flux");
    check(&controlnet_sd1(&d.join("canny.safetensors")), "controlnet", "sd1");
    check(&embedding_sd1(&d.join("easyneg.safetensors")), "embedding", "sd1");
    check(&embedding_sdxl(&d.join("negxl.safetensors")), "embedding", "sdxl");
    check(&upscaler(&d.join("4x-ultra.safetensors")), "upscaler", "esrgan");
    check(&clip_l(&d.join("clip_l.safetensors")), "text_encoder", "clip-l");
    check(&t5(&d.join("t5xxl.safetensors")), "text_encoder", "t5");
    check(
        &clip_vision(&d.join("clip-vit-h.safetensors")),
        "clip_vision",
        "clip",
    );
}

#[test]
fn vae_family_rests_on_the_name_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A 4-channel VAE is the same network for SD1 and SDXL: content says "vae", only the name
    // says which, and the confidence shows it.
    let named = check(&vae(&dir.path().join("sdxl_vae.safetensors")), "vae", "sdxl");
    assert!(named.detection.confidence <= 0.6);
    assert!(named.detection.evidence.iter().any(|e| e.kind == "file_name"));
    let plain = check(&vae(&dir.path().join("vae-ft-mse.safetensors")), "vae", "unknown");
    assert!(
        plain
            .detection
            .evidence
            .iter()
            .any(|e| e.value.contains("4 latent channels"))
    );
}

#[test]
fn gguf_llms_and_their_quantization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let llama = check(
        &gguf_llm(&d.join("llama-3-8b.Q4_K_M.gguf"), "llama", "Meta Llama 3 8B", 15),
        "llm",
        "llama",
    );
    assert_eq!(llama.quantization, "Q4_K_M");
    assert_eq!(llama.architecture, "llama");
    assert!(llama.parameter_count.is_some_and(|n| n > 0));
    check(
        &gguf_llm(&d.join("mistral.gguf"), "llama", "Mistral 7B Instruct", 7),
        "llm",
        "mistral",
    );
    check(
        &gguf_llm(&d.join("qwen.gguf"), "qwen2", "Qwen2.5 7B", 15),
        "llm",
        "qwen",
    );
    check(
        &gguf_llm(&d.join("gemma.gguf"), "gemma2", "Gemma 2 9B", 15),
        "llm",
        "gemma",
    );
    check(
        &gguf_llm(&d.join("phi.gguf"), "phi3", "Phi 3 mini", 15),
        "llm",
        "phi",
    );
    check(
        &gguf_llm(&d.join("nomic.gguf"), "nomic-bert", "nomic embed", 1),
        "text_embedding",
        "bert",
    );
    check(
        &gguf_llm(&d.join("flux-q8.gguf"), "flux", "flux1-dev", 7),
        "diffusion_model",
        "flux",
    );
}

#[test]
fn transformers_folders_by_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for (mt, arch, ty, family) in [
        ("llama", "LlamaForCausalLM", "llm", "llama"),
        ("mistral", "MistralForCausalLM", "llm", "mistral"),
        ("qwen2", "Qwen2ForCausalLM", "llm", "qwen"),
        ("gemma2", "Gemma2ForCausalLM", "llm", "gemma"),
        ("phi3", "Phi3ForCausalLM", "llm", "phi"),
        ("bert", "BertModel", "text_embedding", "bert"),
        ("whisper", "WhisperForConditionalGeneration", "audio", "whisper"),
        ("qwen3", "Qwen3Model", "text_embedding", "qwen"),
        ("vits", "VitsModel", "tts", "unknown"),
    ] {
        let folder = transformers_folder(&d.join(mt), mt, arch);
        let (decision, format, files) = decide(&folder);
        assert_eq!(
            (decision.model_type.as_str(), decision.family.as_str()),
            (ty, family),
            "{mt}"
        );
        assert_eq!(format, "transformers");
        assert_eq!(decision.architecture, arch);
        assert_eq!(files, 3, "config, tokenizer config and weights are one item");
    }
}

#[test]
fn diffusers_pipelines_and_sharded_sets_are_one_item() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (decision, format, files) = decide(&diffusers_sdxl(&dir.path().join("sdxl-base")));
    assert_eq!(
        (decision.model_type.as_str(), decision.family.as_str(), format),
        ("checkpoint", "sdxl", "diffusers")
    );
    assert_eq!(files, 5);

    let shards = sharded(&dir.path().join("shards"));
    // Naming any shard imports the whole set with its index.
    let units = units_for(&shards[1]).expect("units");
    assert_eq!(units.len(), 1);
    let names: Vec<&str> = units[0].files.iter().map(|f| f.relative.as_str()).collect();
    assert_eq!(
        names,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    let facts = facts_for(&units[0]).expect("facts");
    assert_eq!(
        facts.safetensors.as_ref().map(|h| h.tensors.len()),
        Some(2),
        "tensors of both shards"
    );

    // A missing shard is an error, not a partial model.
    std::fs::remove_file(&shards[1]).expect("rm");
    let err = units_for(&shards[0]).expect_err("incomplete set");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn gguf_with_mmproj_is_one_item_in_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("llava");
    gguf_llm(&d.join("llava-v1.6.Q4_K_M.gguf"), "llama", "llava", 15);
    gguf_llm(&d.join("mmproj-model-f16.gguf"), "clip", "clip", 1);
    let units = units_for(&d).expect("units");
    assert_eq!(units.len(), 1, "{units:?}");
    assert_eq!(units[0].files.len(), 2);
    let facts = facts_for(&units[0]).expect("facts");
    assert_eq!(detect(&facts).model_type, "llm");
}

#[test]
fn unknown_stays_unknown_with_its_evidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let odd = st(
        &dir.path().join("mystery.safetensors"),
        &[("foo.bar", "F32", &[4])],
        &[],
    );
    let (decision, _, _) = decide(&odd);
    assert_eq!(
        (decision.model_type.as_str(), decision.family.as_str()),
        ("unknown", "unknown")
    );
    // A name alone does not make a type.
    let named = st(
        &dir.path().join("cool_lora_sdxl.safetensors"),
        &[("foo.bar", "F32", &[4])],
        &[],
    );
    let (decision, _, _) = decide(&named);
    assert_eq!(decision.model_type, "unknown");
    assert!(
        decision.detection.evidence.iter().any(|e| e.kind == "file_name"),
        "{:?}",
        decision.detection
    );
    // Pickle files are not parsed; they are flagged and stay unknown unless content says more.
    let pickle = dir.path().join("old.ckpt");
    std::fs::write(&pickle, b"\x80\x02}q\x00.").expect("write");
    let units = units_for(&pickle).expect("units");
    assert!(pumas_index::inspect::is_unsafe(&units[0]));
    let facts = facts_for(&units[0]).expect("facts");
    assert_eq!(facts.format, "pickle");
}

#[test]
fn malformed_headers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.safetensors");
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\":");
    std::fs::write(&bad, &bytes).expect("write");
    let units = units_for(&bad).expect("units");
    let err = facts_for(&units[0]).expect_err("malformed");
    assert!(err.to_string().contains("not a valid safetensors file"), "{err}");
    let bad_gguf = dir.path().join("bad.gguf");
    std::fs::write(&bad_gguf, b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff").expect("write");
    let units = units_for(&bad_gguf).expect("units");
    assert!(facts_for(&units[0]).is_err());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    std::fs::write(empty.join("readme.txt"), b"hi").expect("write");
    assert!(
        units_for(&empty)
            .expect_err("no models")
            .to_string()
            .contains("no model files")
    );
}

#[test]
fn split_gguf_and_vision_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("split");
    gguf_llm(
        &d.join("qwen2.5-72b-Q4_K_M-00001-of-00002.gguf"),
        "qwen2",
        "Qwen2.5 72B",
        15,
    );
    gg(
        &d.join("qwen2.5-72b-Q4_K_M-00002-of-00002.gguf"),
        &[("split.no", pumas_index::inspect::gguf::MetaValue::U32(1))],
        &[("blk.1.attn_q.weight", &[64, 64])],
    );
    // Naming the second part imports the whole split set as one model.
    let units = units_for(&d.join("qwen2.5-72b-Q4_K_M-00002-of-00002.gguf")).expect("units");
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].files.len(), 2);
    assert_eq!(units[0].name, "qwen2.5-72b-Q4_K_M");
    let facts = facts_for(&units[0]).expect("facts");
    let decision = detect(&facts);
    assert_eq!(
        (decision.model_type.as_str(), decision.family.as_str()),
        ("llm", "qwen")
    );
    assert_eq!(
        decision.parameter_count,
        Some(64 * 32 + 64 + 64 * 64),
        "tensors of both parts"
    );

    let vit = transformers_folder(&dir.path().join("vit-base"), "vit", "ViTForImageClassification");
    let (decision, _, _) = decide(&vit);
    assert_eq!(decision.model_type, "vision");
}

#[test]
fn sentence_transformers_folders_are_embeddings_whatever_their_backbone() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Qwen3-Embedding's shape: a causal-LM config inside a sentence-transformers folder.
    let folder = transformers_folder(
        &dir.path().join("Qwen3-Embedding-0.6B"),
        "qwen3",
        "Qwen3ForCausalLM",
    );
    json(
        &folder.join("modules.json"),
        serde_json::json!([{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"}, {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]),
    );
    json(
        &folder.join("config_sentence_transformers.json"),
        serde_json::json!({"prompts": {}}),
    );
    json(
        &folder.join("1_Pooling/config.json"),
        serde_json::json!({"pooling_mode_lasttoken": true}),
    );
    let decision = check(&folder, "text_embedding", "qwen");
    assert!(
        decision
            .detection
            .evidence
            .iter()
            .any(|e| e.supports.contains("sentence-transformers folder"))
    );
    assert_eq!(
        decision.detection.runner_up, "llm/qwen",
        "the causal-LM reading is the runner-up"
    );
}

#[test]
fn classification_heads_are_rerankers_by_their_labels_not_embeddings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_labels = |name: &str, mt: &str, arch: &str, labels: serde_json::Value| {
        let folder = transformers_folder(&dir.path().join(name), mt, arch);
        json(
            &folder.join("config.json"),
            serde_json::json!({"model_type": mt, "architectures": [arch], "id2label": labels}),
        );
        folder
    };
    // A cross-encoder (bge-reranker, ms-marco MiniLM): one label, a relevance score.
    let reranker = with_labels(
        "bge-reranker-base",
        "xlm-roberta",
        "XLMRobertaForSequenceClassification",
        serde_json::json!({"0": "LABEL_0"}),
    );
    check(&reranker, "reranker", "bert");
    // A reward model on a Llama backbone: one score too, and never an embedding model.
    let reward = with_labels(
        "llama-reward",
        "llama",
        "LlamaForSequenceClassification",
        serde_json::json!({"0": "LABEL_0"}),
    );
    check(&reward, "reranker", "llama");
    // A sentiment classifier: several labels, no library type for it.
    let sentiment = with_labels(
        "sentiment",
        "distilbert",
        "DistilBertForSequenceClassification",
        serde_json::json!({"0": "NEGATIVE", "1": "POSITIVE"}),
    );
    let (decision, _, _) = decide(&sentiment);
    assert_eq!(decision.model_type, "unknown", "{:#?}", decision.detection);
}

#[test]
fn vision_language_models_are_their_own_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = transformers_folder(
        &dir.path().join("Qwen2-VL-2B-Instruct"),
        "qwen2_vl",
        "Qwen2VLForConditionalGeneration",
    );
    json(
        &folder.join("config.json"),
        serde_json::json!({"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"], "vision_config": {"depth": 32}}),
    );
    check(&folder, "vision_language", "qwen");
    let llava = transformers_folder(
        &dir.path().join("llava-1.5-7b"),
        "llava",
        "LlavaForConditionalGeneration",
    );
    json(
        &llava.join("config.json"),
        serde_json::json!({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "vision_config": {"model_type": "clip_vision_model"}, "text_config": {"model_type": "llama"}}),
    );
    check(&llava, "vision_language", "llama");
}

#[test]
fn conflicting_evidence_gives_a_low_confidence_and_the_runner_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = transformers_folder(&dir.path().join("odd"), "llama", "UNet2DConditionModel");
    let (decision, _, _) = decide(&folder);
    assert!(decision.detection.confidence < 0.5, "{:#?}", decision.detection);
    let readings = [
        format!("{}/{}", decision.model_type, decision.family),
        decision.detection.runner_up.clone(),
    ];
    assert!(
        readings.contains(&"llm/llama".to_owned())
            && readings.contains(&"diffusion_model/unknown".to_owned()),
        "{readings:?}"
    );
    assert!(decision.detection.runner_up_confidence > 0.0);
}
