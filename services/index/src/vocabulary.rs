//! The library's words for what a model is: its types (the first level of the tree, named as
//! the contract names them in `pumas_proto::names`) and the rule for family names, with the one
//! check of both that every write path uses; and the form of platform selectors.

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

/// Whether a platform selector is well formed: `*`, or `os[-arch[-accelerator...]]` where each
/// part is lowercase letters, digits, `_`, `.` or `*`.
pub fn valid_selector(selector: &str) -> bool {
    selector == "*"
        || (!selector.is_empty()
            && selector.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '*'))
            }))
}
