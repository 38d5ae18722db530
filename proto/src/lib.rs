//! The Pumas gRPC contracts, generated from `proto/pumas/**/*.proto`.
//!
//! One module per protobuf package (`pumas.index.v1` is [`index::v1`]), plus the encoded file
//! descriptor set that every service registers with server reflection.

#![allow(clippy::all, missing_docs)]

/// `pumas.common.v1`: messages shared by every service.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("pumas.common.v1");
    }
}

/// `pumas.index.v1`: the library and its index.
pub mod index {
    pub mod v1 {
        tonic::include_proto!("pumas.index.v1");
    }
}

/// `pumas.fetch.v1`: hub search and downloads.
pub mod fetch {
    pub mod v1 {
        tonic::include_proto!("pumas.fetch.v1");
    }
}

/// `pumas.mapper.v1`: app layouts and links.
pub mod mapper {
    pub mod v1 {
        tonic::include_proto!("pumas.mapper.v1");
    }
}

/// `pumas.gateway.v1`: the public API.
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("pumas.gateway.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Pumas proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pumas_descriptor");

/// The dependency contract version this build speaks (`pumas.common.v1.DependencyContractVersion`).
pub const DEPENDENCY_CONTRACT_VERSION: u32 = common::v1::DependencyContractVersion::V1 as u32;

/// The names the library uses for the contract's enums: in metadata files, folder names,
/// filters, mapping configs and the CLI (`lora` for `MODEL_TYPE_LORA`). One table per enum, so
/// every service spells them the same.
pub mod names {
    use crate::common::v1::{ModelFormat, ModelState, ModelType};

    /// Every model type, in the order the library lists them.
    pub const MODEL_TYPES: &[(&str, ModelType)] = &[
        ("unknown", ModelType::Unknown),
        ("checkpoint", ModelType::Checkpoint),
        ("diffusion_model", ModelType::DiffusionModel),
        ("lora", ModelType::Lora),
        ("vae", ModelType::Vae),
        ("text_encoder", ModelType::TextEncoder),
        ("clip_vision", ModelType::ClipVision),
        ("controlnet", ModelType::Controlnet),
        ("embedding", ModelType::Embedding),
        ("upscaler", ModelType::Upscaler),
        ("llm", ModelType::Llm),
        ("text_embedding", ModelType::TextEmbedding),
        ("audio", ModelType::Audio),
        ("vision", ModelType::Vision),
        ("reranker", ModelType::Reranker),
        ("vision_language", ModelType::VisionLanguage),
        ("tts", ModelType::Tts),
    ];

    /// Every model format.
    pub const MODEL_FORMATS: &[(&str, ModelFormat)] = &[
        ("unknown", ModelFormat::Unknown),
        ("safetensors", ModelFormat::Safetensors),
        ("gguf", ModelFormat::Gguf),
        ("diffusers", ModelFormat::Diffusers),
        ("transformers", ModelFormat::Transformers),
        ("pickle", ModelFormat::Pickle),
        ("onnx", ModelFormat::Onnx),
    ];

    /// Every model state.
    pub const MODEL_STATES: &[(&str, ModelState)] = &[
        ("ready", ModelState::Ready),
        ("missing", ModelState::Missing),
        ("downloading", ModelState::Downloading),
        ("partial", ModelState::Partial),
        ("error", ModelState::Error),
    ];

    fn name_of<E: Copy + Into<i32>>(table: &[(&'static str, E)], value: i32) -> Option<&'static str> {
        table.iter().find(|(_, e)| (*e).into() == value).map(|(n, _)| *n)
    }

    fn value_of<E: Copy + Into<i32>>(table: &[(&'static str, E)], name: &str) -> Option<i32> {
        table.iter().find(|(n, _)| *n == name).map(|(_, e)| (*e).into())
    }

    /// The name of a `ModelType` value (None for UNSPECIFIED or an unknown number).
    pub fn model_type(value: i32) -> Option<&'static str> {
        name_of(MODEL_TYPES, value)
    }

    /// The `ModelType` value of a name.
    pub fn model_type_value(name: &str) -> Option<i32> {
        value_of(MODEL_TYPES, name)
    }

    /// The name of a `ModelFormat` value.
    pub fn format(value: i32) -> Option<&'static str> {
        name_of(MODEL_FORMATS, value)
    }

    /// The `ModelFormat` value of a name.
    pub fn format_value(name: &str) -> Option<i32> {
        value_of(MODEL_FORMATS, name)
    }

    /// The name of a `ModelState` value.
    pub fn state(value: i32) -> Option<&'static str> {
        name_of(MODEL_STATES, value)
    }

    /// The `ModelState` value of a name.
    pub fn state_value(name: &str) -> Option<i32> {
        value_of(MODEL_STATES, name)
    }

    /// Whether `name` is a model type.
    pub fn is_model_type(name: &str) -> bool {
        model_type_value(name).is_some()
    }

    /// A Python package name the standard way (PEP 503): lowercase, runs of `-`, `_`, `.` as one
    /// `-`, so `Sentence_Transformers` and `sentence-transformers` name one package. Profiles
    /// store names so, and the pin policy compares them so.
    pub fn normalize_package_name(name: &str) -> String {
        let mut out = String::with_capacity(name.len());
        let mut separator = false;
        for c in name.trim().chars() {
            if matches!(c, '-' | '_' | '.') {
                separator = true;
            } else {
                if separator && !out.is_empty() {
                    out.push('-');
                }
                separator = false;
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_enum_value_but_unspecified_has_one_name_that_matches_the_proto_name() {
            for n in 1..=64 {
                if let Ok(t) = ModelType::try_from(n) {
                    let name = model_type(n).expect("a name for every type");
                    assert_eq!(format!("MODEL_TYPE_{}", name.to_uppercase()), t.as_str_name());
                }
                if let Ok(f) = ModelFormat::try_from(n) {
                    let name = format(n).expect("a name for every format");
                    assert_eq!(format!("MODEL_FORMAT_{}", name.to_uppercase()), f.as_str_name());
                }
                if let Ok(s) = ModelState::try_from(n) {
                    let name = state(n).expect("a name for every state");
                    assert_eq!(format!("MODEL_STATE_{}", name.to_uppercase()), s.as_str_name());
                }
            }
            assert_eq!(model_type(0), None);
        }
    }
}
