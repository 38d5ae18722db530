//! Which files of a repository a download takes: glob patterns, a GGUF quantization, and the
//! safety check every hub file name passes before anything touches the disk.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A file name from the hub that cannot be written safely, and why.
pub fn unsafe_path(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    if path.contains('\0') {
        return Some("contains a NUL byte");
    }
    if path.contains('\\') {
        return Some("contains a backslash");
    }
    if path.starts_with('/') {
        return Some("is absolute");
    }
    if path.split('/').any(|s| s == ".." || s == "." || s.is_empty()) {
        return Some("has an empty, `.` or `..` segment");
    }
    None
}

fn glob_set(patterns: &[String], field: &str) -> Result<Option<GlobSet>, (String, String)> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| {
            (
                field.to_owned(),
                format!("`{pattern}` is not a glob pattern: {e}"),
            )
        })?;
        builder.add(glob);
        // A bare name matches at any depth, as the hub's own tools treat `*.json`.
        if !pattern.contains('/')
            && let Ok(deep) = Glob::new(&format!("**/{pattern}"))
        {
            builder.add(deep);
        }
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| (field.to_owned(), e.to_string()))
}

/// The quantization named in a GGUF file name (`tiny-Q4_K_M.gguf` -> `Q4_K_M`), if any.
pub fn gguf_quantization(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let stem = name.strip_suffix(".gguf")?;
    if name.to_ascii_lowercase().starts_with("mmproj") {
        return None;
    }
    stem.split(['-', '.']).rev().find_map(|token| {
        let upper = token.to_ascii_uppercase();
        let quant = (upper.starts_with('Q') || upper.starts_with("IQ") || upper.starts_with("TQ"))
            && upper.chars().any(|c| c.is_ascii_digit())
            && upper.len() <= 8;
        (quant || matches!(upper.as_str(), "F16" | "F32" | "BF16")).then_some(upper)
    })
}

/// Applies a selection to the repository's file paths. Errors are (field, reason).
pub fn select(
    paths: &[String],
    allow: &[String],
    ignore: &[String],
    quantization: &str,
) -> Result<Vec<String>, (String, String)> {
    let allow_set = glob_set(allow, "selection.allow_patterns")?;
    let ignore_set = glob_set(ignore, "selection.ignore_patterns")?;
    let quant = quantization.trim().to_ascii_uppercase();
    if !quant.is_empty() {
        let available: std::collections::BTreeSet<String> =
            paths.iter().filter_map(|p| gguf_quantization(p)).collect();
        if !available.contains(&quant) {
            return Err((
                "selection.gguf_quantization".to_owned(),
                if available.is_empty() {
                    "this repository has no GGUF files with a quantization in their names".to_owned()
                } else {
                    format!(
                        "no GGUF file with quantization {quant}; available: {}",
                        available.into_iter().collect::<Vec<_>>().join(", ")
                    )
                },
            ));
        }
    }
    let chosen: Vec<String> = paths
        .iter()
        .filter(|p| allow_set.as_ref().is_none_or(|s| s.is_match(p.as_str())))
        .filter(|p| ignore_set.as_ref().is_none_or(|s| !s.is_match(p.as_str())))
        .filter(|p| {
            if quant.is_empty() || !p.ends_with(".gguf") {
                return true;
            }
            let name = p.rsplit('/').next().unwrap_or(p).to_ascii_lowercase();
            name.starts_with("mmproj") || gguf_quantization(p).as_deref() == Some(quant.as_str())
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err((
            "selection".to_owned(),
            "the selection matches no file of this repository".to_owned(),
        ));
    }
    Ok(chosen)
}

/// Small auxiliary files that arrive first, so the model shows up in the index early.
pub fn is_auxiliary(path: &str, size: u64) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    size <= 16 << 20
        && (name.ends_with(".json")
            || name.ends_with(".md")
            || name.ends_with(".txt")
            || name.ends_with(".model")
            || name == ".gitattributes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<String> {
        [
            "README.md",
            "config.json",
            "tiny-Q4_K_M.gguf",
            "tiny-Q8_0.gguf",
            "tiny-F16-00001-of-00002.gguf",
            "tiny-F16-00002-of-00002.gguf",
            "mmproj-tiny-f16.gguf",
            "sub/tokenizer.json",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn refuses_names_that_escape_staging() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\\b",
            "a\0b",
            "a//b",
            "./a",
            "",
        ] {
            assert!(unsafe_path(bad).is_some(), "{bad:?} should be refused");
        }
        assert_eq!(unsafe_path("sub/dir/model.safetensors"), None);
    }

    #[test]
    fn picks_a_quantization_with_its_split_parts_and_mmproj() {
        let chosen = select(&paths(), &[], &[], "f16").expect("selection");
        assert!(chosen.contains(&"tiny-F16-00001-of-00002.gguf".to_owned()));
        assert!(chosen.contains(&"tiny-F16-00002-of-00002.gguf".to_owned()));
        assert!(chosen.contains(&"mmproj-tiny-f16.gguf".to_owned()));
        assert!(!chosen.contains(&"tiny-Q8_0.gguf".to_owned()));
        assert!(chosen.contains(&"README.md".to_owned()));
        let err = select(&paths(), &[], &[], "Q5_K_M").expect_err("unknown quant");
        assert!(err.1.contains("Q4_K_M, Q8_0"), "{}", err.1);
    }

    #[test]
    fn globs_allow_and_ignore_at_any_depth() {
        let chosen = select(&paths(), &["*.json".to_owned()], &["sub/*".to_owned()], "").expect("selection");
        assert_eq!(chosen, vec!["config.json".to_owned()]);
        assert!(select(&paths(), &["[".to_owned()], &[], "").is_err());
        assert!(select(&paths(), &["*.bin".to_owned()], &[], "").is_err());
    }
}
