//! Fixtures: tiny model files with realistic headers (tensor names and shapes of the real
//! architectures, zeroed data), written by code, never downloaded.

#![allow(dead_code)]

pub mod server;

#[allow(unused_imports)] // not every test file starts a server
pub use server::Server;

use std::path::{Path, PathBuf};

use pumas_index::inspect::gguf::{self, MetaValue};
use pumas_index::inspect::safetensors;

/// Writes a safetensors file.
pub fn st(path: &Path, tensors: &[(&str, &str, &[u64])], meta: &[(&str, &str)]) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let mut file = std::fs::File::create(path).expect("create");
    safetensors::write(&mut file, tensors, meta).expect("write safetensors");
    path.to_owned()
}

/// Writes a GGUF file.
pub fn gg(path: &Path, meta: &[(&str, MetaValue<'_>)], tensors: &[(&str, &[u64])]) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let mut file = std::fs::File::create(path).expect("create");
    gguf::write(&mut file, meta, tensors).expect("write gguf");
    path.to_owned()
}

/// Writes a JSON file.
pub fn json(path: &Path, value: serde_json::Value) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, serde_json::to_vec_pretty(&value).expect("json")).expect("write json");
    path.to_owned()
}

pub fn sd1_checkpoint(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                "F16",
                &[320, 4, 3, 3],
            ),
            (
                "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                "F16",
                &[320, 768],
            ),
            ("first_stage_model.decoder.conv_in.weight", "F16", &[512, 4, 3, 3]),
            (
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                "F16",
                &[49, 768],
            ),
        ],
        &[],
    )
}

pub fn sd2_checkpoint(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                "F16",
                &[320, 1024],
            ),
            ("first_stage_model.decoder.conv_in.weight", "F16", &[512, 4, 3, 3]),
            (
                "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
                "F16",
                &[30, 1024],
            ),
        ],
        &[],
    )
}

pub fn sdxl_checkpoint(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                "F16",
                &[640, 2048],
            ),
            ("model.diffusion_model.label_emb.0.0.weight", "F16", &[1280, 2816]),
            ("first_stage_model.decoder.conv_in.weight", "F16", &[512, 4, 3, 3]),
            (
                "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                "F16",
                &[49, 768],
            ),
            (
                "conditioner.embedders.1.model.token_embedding.weight",
                "F16",
                &[49, 1280],
            ),
        ],
        &[],
    )
}

pub fn sdxl_unet(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                "BF16",
                &[640, 2048],
            ),
            ("model.diffusion_model.out.2.weight", "BF16", &[4, 320, 3, 3]),
        ],
        &[],
    )
}

pub fn flux_transformer(path: &Path) -> PathBuf {
    st(
        path,
        &[
            ("double_blocks.0.img_attn.qkv.weight", "BF16", &[96, 32]),
            ("single_blocks.0.linear1.weight", "BF16", &[64, 32]),
            ("img_in.weight", "BF16", &[32, 64]),
        ],
        &[],
    )
}

pub fn sd3_transformer(path: &Path) -> PathBuf {
    st(
        path,
        &[
            ("joint_blocks.0.x_block.attn.qkv.weight", "F16", &[96, 32]),
            ("joint_blocks.0.context_block.attn.qkv.weight", "F16", &[96, 32]),
        ],
        &[],
    )
}

pub fn sdxl_lora(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                "F16",
                &[4, 768],
            ),
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                "F16",
                &[4, 1280],
            ),
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight",
                "F16",
                &[4, 2048],
            ),
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight",
                "F16",
                &[640, 4],
            ),
        ],
        &[("ss_base_model_version", "sdxl_base_v1-0")],
    )
}

pub fn sd1_lora(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                "F16",
                &[4, 768],
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
                "F16",
                &[4, 768],
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight",
                "F16",
                &[320, 4],
            ),
        ],
        &[],
    )
}

pub fn flux_lora(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                "BF16",
                &[16, 32],
            ),
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight",
                "BF16",
                &[96, 16],
            ),
        ],
        &[],
    )
}

pub fn vae(path: &Path) -> PathBuf {
    st(
        path,
        &[
            ("encoder.down.0.block.0.conv1.weight", "F32", &[128, 128, 3, 3]),
            ("decoder.conv_in.weight", "F32", &[512, 4, 3, 3]),
            ("quant_conv.weight", "F32", &[8, 8, 1, 1]),
        ],
        &[],
    )
}

pub fn clip_l(path: &Path) -> PathBuf {
    st(
        path,
        &[
            (
                "text_model.encoder.layers.0.self_attn.q_proj.weight",
                "F16",
                &[768, 768],
            ),
            ("text_model.final_layer_norm.weight", "F16", &[768]),
        ],
        &[],
    )
}

pub fn t5(path: &Path) -> PathBuf {
    st(
        path,
        &[
            ("encoder.block.0.layer.0.SelfAttention.q.weight", "F16", &[64, 64]),
            ("shared.weight", "F16", &[100, 64]),
        ],
        &[],
    )
}

pub fn clip_vision(path: &Path) -> PathBuf {
    st(
        path,
        &[(
            "vision_model.encoder.layers.0.self_attn.q_proj.weight",
            "F16",
            &[64, 64],
        )],
        &[],
    )
}

pub fn controlnet_sd1(path: &Path) -> PathBuf {
    st(
        path,
        &[
            ("control_model.input_hint_block.0.weight", "F16", &[16, 3, 3, 3]),
            (
                "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                "F16",
                &[320, 768],
            ),
            ("control_model.zero_convs.0.0.weight", "F16", &[320, 320, 1, 1]),
        ],
        &[],
    )
}

pub fn embedding_sd1(path: &Path) -> PathBuf {
    st(path, &[("emb_params", "F32", &[2, 768])], &[])
}

pub fn embedding_sdxl(path: &Path) -> PathBuf {
    st(
        path,
        &[("clip_g", "F32", &[2, 1280]), ("clip_l", "F32", &[2, 768])],
        &[],
    )
}

pub fn upscaler(path: &Path) -> PathBuf {
    st(
        path,
        &[
            ("conv_first.weight", "F32", &[64, 3, 3, 3]),
            ("RRDB_trunk.0.RDB1.conv1.weight", "F32", &[32, 64, 3, 3]),
        ],
        &[],
    )
}

pub fn gguf_llm(path: &Path, arch: &str, name: &str, file_type: u32) -> PathBuf {
    gg(
        path,
        &[
            ("general.architecture", MetaValue::Str(arch)),
            ("general.name", MetaValue::Str(name)),
            ("general.file_type", MetaValue::U32(file_type)),
            (
                "tokenizer.ggml.tokens",
                MetaValue::Strings(&["<s>", "</s>", "a", "b"]),
            ),
        ],
        &[("token_embd.weight", &[64, 32]), ("output_norm.weight", &[64])],
    )
}

/// A transformers folder: config.json + model.safetensors with decoder-style tensors.
pub fn transformers_folder(dir: &Path, model_type: &str, architecture: &str) -> PathBuf {
    json(
        &dir.join("config.json"),
        serde_json::json!({"model_type": model_type, "architectures": [architecture]}),
    );
    json(
        &dir.join("tokenizer_config.json"),
        serde_json::json!({"model_max_length": 2048}),
    );
    st(
        &dir.join("model.safetensors"),
        &[
            ("model.embed_tokens.weight", "BF16", &[100, 64]),
            ("model.layers.0.self_attn.q_proj.weight", "BF16", &[64, 64]),
        ],
        &[("format", "pt")],
    );
    dir.to_owned()
}

/// A diffusers SDXL pipeline folder.
pub fn diffusers_sdxl(dir: &Path) -> PathBuf {
    json(
        &dir.join("model_index.json"),
        serde_json::json!({"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}),
    );
    json(
        &dir.join("unet/config.json"),
        serde_json::json!({"_class_name": "UNet2DConditionModel", "cross_attention_dim": 2048}),
    );
    st(
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        &[("conv_in.weight", "F16", &[320, 4, 3, 3])],
        &[],
    );
    json(
        &dir.join("vae/config.json"),
        serde_json::json!({"_class_name": "AutoencoderKL"}),
    );
    st(
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        &[("decoder.conv_in.weight", "F16", &[512, 4, 3, 3])],
        &[],
    );
    dir.to_owned()
}

/// A sharded safetensors set with its index (transformers-style names, no config).
pub fn sharded(dir: &Path) -> Vec<PathBuf> {
    let a = st(
        &dir.join("model-00001-of-00002.safetensors"),
        &[("model.layers.0.self_attn.q_proj.weight", "BF16", &[64, 64])],
        &[],
    );
    let b = st(
        &dir.join("model-00002-of-00002.safetensors"),
        &[("model.layers.1.self_attn.q_proj.weight", "BF16", &[64, 64])],
        &[],
    );
    json(
        &dir.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": {"model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
                                           "model.layers.1.self_attn.q_proj.weight": "model-00002-of-00002.safetensors"}}),
    );
    vec![a, b]
}
