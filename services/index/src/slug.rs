//! Model slugs and ids: lowercase, safe characters, never a path that escapes the library.

/// Longest slug we make (bytes); long names are cut at a character boundary.
const MAX_SLUG: usize = 96;

/// A slug from a display name: lowercase letters and digits (any script), runs of anything else
/// become one `-`; never empty, never `.` or `..`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    let mut dash = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if dash && !slug.is_empty() {
                slug.push('-');
            }
            dash = false;
            if slug.len() + c.len_utf8() > MAX_SLUG {
                break;
            }
            slug.push(c);
        } else {
            dash = true;
        }
    }
    if slug.is_empty() { "model".to_owned() } else { slug }
}

/// Whether `segment` is a safe path segment of a model id (what [`slugify`] makes, or a type or
/// family name): no separators, no dots-only, no control characters.
pub fn is_safe_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 255
        && segment != "."
        && segment != ".."
        && !segment.starts_with('.')
        && segment
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Splits and checks a model id `<type>/<family>/<slug>`.
pub fn parse_model_id(id: &str) -> Option<(&str, &str, &str)> {
    let mut parts = id.split('/');
    let (t, f, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ![t, f, s].iter().all(|p| is_safe_segment(p)) {
        return None;
    }
    Some((t, f, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe_and_readable() {
        assert_eq!(
            slugify("Juggernaut XL v9 (RunDiffusion)"),
            "juggernaut-xl-v9-rundiffusion"
        );
        assert_eq!(slugify("../../etc/passwd"), "etc-passwd");
        assert_eq!(slugify("   "), "model");
        assert_eq!(slugify("Ünïcødé 模型"), "ünïcødé-模型");
        assert!(slugify(&"x".repeat(500)).len() <= MAX_SLUG);
    }

    #[test]
    fn ids_must_be_three_safe_segments() {
        assert_eq!(
            parse_model_id("lora/sdxl/detail"),
            Some(("lora", "sdxl", "detail"))
        );
        assert!(parse_model_id("lora/sdxl").is_none());
        assert!(parse_model_id("lora/../detail").is_none());
        assert!(parse_model_id("lora/sdxl/a/b").is_none());
        assert!(parse_model_id("/sdxl/x").is_none());
        assert!(parse_model_id("lora/sdxl/.hidden").is_none());
    }
}
