//! What model files say about themselves, kept and searchable, through the gateway and the CLI:
//! a LoRA's kohya metadata (trigger words, base model, network) and a GGUF's general.* keys and
//! shape.

#[path = "../../services/index/tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use pumas_e2e::library::{get_model, import};
use pumas_e2e::*;
use pumas_index::inspect::gguf::MetaValue;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{GetModelRequest, SearchModelsRequest};

#[tokio::test]
async fn a_loras_trigger_words_find_it_and_a_ggufs_shape_is_shown() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let inbox = suite.data_root.path().join("inbox");
    let lora = common::st(
        &inbox.join("z-char-v2.safetensors"),
        &[
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight",
                "F16",
                &[640, 4],
            ),
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                "F16",
                &[4, 1280],
            ),
        ],
        &[
            ("ss_base_model_version", "sdxl_base_v1-0"),
            ("ss_sd_model_name", "sd_xl_base_1.0.safetensors"),
            ("ss_network_dim", "16"),
            ("ss_network_alpha", "8"),
            ("ss_output_name", "zchar"),
            (
                "ss_tag_frequency",
                r#"{"10_zchar": {"zcharacter": 50, "red scarf": 31, "solo": 12}}"#,
            ),
            ("modelspec.license", "openrail++"),
        ],
    );
    let lora_id = import(&mut gateway, &lora).await?;
    // The trigger word is nowhere in the name or the file name: only the embedded metadata has it.
    let found = gateway
        .search_models(SearchModelsRequest {
            query: "zcharacter".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let ids: Vec<String> = found
        .results
        .iter()
        .filter_map(|r| match &r.result {
            Some(pumas_proto::gateway::v1::search_result::Result::Local(v)) => {
                v.model.as_ref().map(|m| m.model_id.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ids, std::slice::from_ref(&lora_id));
    let record = get_model(&mut gateway, &lora_id).await?;
    let e = record.embedded.clone().expect("embedded");
    assert_eq!(e.trigger_words, ["zcharacter", "red scarf", "solo"]);
    assert_eq!(e.base_model, "sd_xl_base_1.0.safetensors");
    assert_eq!((e.network_dim, e.network_alpha), (Some(16), Some(8.0)));
    assert_eq!(record.license, "openrail++");

    let gguf = common::gg(
        &inbox.join("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"),
        &[
            ("general.architecture", MetaValue::Str("qwen2")),
            ("general.name", MetaValue::Str("Qwen2.5 0.5B Instruct")),
            ("general.license", MetaValue::Str("apache-2.0")),
            ("general.organization", MetaValue::Str("Qwen")),
            ("general.base_model.0.name", MetaValue::Str("Qwen2.5 0.5B")),
            ("general.file_type", MetaValue::U32(15)),
            ("qwen2.context_length", MetaValue::U32(32768)),
            ("qwen2.embedding_length", MetaValue::U32(896)),
            ("qwen2.block_count", MetaValue::U32(24)),
            ("qwen2.attention.head_count", MetaValue::U32(14)),
            ("qwen2.attention.head_count_kv", MetaValue::U32(2)),
            ("tokenizer.ggml.model", MetaValue::Str("gpt2")),
            (
                "tokenizer.chat_template",
                MetaValue::Str("{% for m in messages %}{{ m.content }}{% endfor %}"),
            ),
        ],
        &[("token_embd.weight", &[64, 32]), ("output_norm.weight", &[64])],
    );
    let gguf_id = import(&mut gateway, &gguf).await?;
    let record = get_model(&mut gateway, &gguf_id).await?;
    let e = record.embedded.clone().expect("embedded");
    assert_eq!(e.context_length, Some(32768));
    assert_eq!(
        (e.embedding_length, e.block_count, e.head_count, e.head_count_kv),
        (Some(896), Some(24), Some(14), Some(2))
    );
    assert_eq!(
        (
            e.author.as_str(),
            e.base_model.as_str(),
            e.tokenizer_model.as_str()
        ),
        ("Qwen", "Qwen2.5 0.5B", "gpt2")
    );
    assert!(e.has_chat_template);
    assert_eq!(record.license, "apache-2.0");

    // The template itself comes on request, read from the file.
    let with_template = gateway
        .get_model(GetModelRequest {
            model_id: gguf_id.clone(),
            include_chat_template: true,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .and_then(|v| v.model)
        .and_then(|m| m.embedded)
        .map(|e| e.chat_template)
        .unwrap_or_default();
    assert_eq!(
        with_template,
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    );
    assert!(
        record
            .embedded
            .as_ref()
            .is_some_and(|e| e.chat_template.is_empty()),
        "not without asking"
    );

    // `pumas show` prints it.
    let out = tokio::process::Command::new(pumas_bin()?)
        .args(["show", "--gateway", &suite.gateway, &gguf_id])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("context       32768") && text.contains("base model    Qwen2.5 0.5B"),
        "{text}"
    );
    assert!(text.contains("gpt2 (with a chat template)"), "{text}");
    assert!(
        !text.contains("{% for m in messages %}"),
        "the template only on request: {text}"
    );
    let out = tokio::process::Command::new(pumas_bin()?)
        .args(["show", "--gateway", &suite.gateway, &gguf_id, "--chat-template"])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  chat template\n    {% for m in messages %}{{ m.content }}{% endfor %}"),
        "{text}"
    );
    Ok(())
}
