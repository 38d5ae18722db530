//! The library's words for what a model is: its types (the first level of the tree) and the
//! rule for family names. The domain owns them; `convert` maps them to the proto enums.

use crate::error::IndexError;

/// Every model type, as folder names and metadata spell them.
pub const MODEL_TYPES: &[&str] = &[
    "unknown",
    "checkpoint",
    "diffusion_model",
    "lora",
    "vae",
    "text_encoder",
    "clip_vision",
    "controlnet",
    "embedding",
    "upscaler",
    "llm",
    "text_embedding",
    "audio",
    "vision",
];

/// Whether `name` is a model type of the library.
pub fn is_model_type(name: &str) -> bool {
    MODEL_TYPES.contains(&name)
}

/// Checks a type and a family a caller gives (import, download, overrides); `prefix` is the
/// request path of their fields (`""` or `"overrides."`).
pub fn check_type_and_family(
    prefix: &str,
    model_type: Option<&str>,
    family: Option<&str>,
) -> Result<(), IndexError> {
    if let Some(t) = model_type
        && !is_model_type(t)
    {
        return Err(IndexError::invalid(
            format!("{prefix}model_type"),
            format!("`{t}` is not a model type ({})", MODEL_TYPES.join(", ")),
        ));
    }
    if let Some(f) = family
        && !crate::slug::is_safe_segment(f)
    {
        return Err(IndexError::invalid(
            format!("{prefix}family"),
            format!("`{f}` is not a valid family name (letters, digits, - _ .)"),
        ));
    }
    Ok(())
}
