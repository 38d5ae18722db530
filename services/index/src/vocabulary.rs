//! The library's words for what a model is: its types (the first level of the tree, named as
//! the contract names them in `pumas_proto::names`) and the rule for family names, with the one
//! check of both that every write path uses.

use crate::error::IndexError;

/// Whether `name` is a model type of the library (the contract's names, `lora`, `llm`, ...).
pub fn is_model_type(name: &str) -> bool {
    pumas_proto::names::is_model_type(name)
}

/// Every model type name, for messages.
pub fn model_type_names() -> String {
    let names: Vec<&str> = pumas_proto::names::MODEL_TYPES.iter().map(|(n, _)| *n).collect();
    names.join(", ")
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
            format!("`{t}` is not a model type ({})", model_type_names()),
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
