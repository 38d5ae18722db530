//! Mapping configs: `<root>/launcher-data/mapping-configs/<app>.toml`, one per app instance.
//! A config names a preset kind and the app's root; its rules (optional) send models to folders
//! before the preset's own folders apply. Every problem is reported with its line and column.
//!
//! ```toml
//! kind = "comfyui"
//! root = "/home/me/ComfyUI"
//! strategy = "auto"            # auto | symlink | hardlink | reflink | copy | config_file
//!
//! [[rules]]                    # optional; first match wins, before the preset
//! type = "lora"
//! family = "sdxl"
//! folder = "models/loras/sdxl"
//! name = "{stem}{ext}"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::presets::{self, Layout, Preset};
use pumas_proto::names;

/// A problem in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, 0 when not tied to one.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// How links are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Auto,
    Symlink,
    Hardlink,
    Reflink,
    Copy,
    ConfigFile,
}

impl Strategy {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "symlink" => Self::Symlink,
            "hardlink" => Self::Hardlink,
            "reflink" => Self::Reflink,
            "copy" => Self::Copy,
            "config_file" | "config-file" => Self::ConfigFile,
            _ => return None,
        })
    }

    /// The registry's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Symlink => "symlink",
            Self::Hardlink => "hardlink",
            Self::Reflink => "reflink",
            Self::Copy => "copy",
            Self::ConfigFile => "config_file",
        }
    }

    /// From the registry's name.
    pub fn from_name(s: &str) -> Self {
        Self::parse(s).unwrap_or(Self::Symlink)
    }

    /// The proto enum value.
    pub fn proto(self) -> i32 {
        use pumas_proto::mapper::v1::LinkStrategy as L;
        (match self {
            Self::Auto => L::Auto,
            Self::Symlink => L::Symlink,
            Self::Hardlink => L::Hardlink,
            Self::Reflink => L::Reflink,
            Self::Copy => L::Copy,
            Self::ConfigFile => L::ConfigFile,
        }) as i32
    }
}

/// One rule: which models go to which folder, named how.
#[derive(Clone, Debug)]
pub struct Rule {
    pub model_type: String,
    pub family: Option<String>,
    pub formats: Vec<String>,
    pub tag: Option<String>,
    /// Folder under the app root ('/'-separated, "" = the root).
    pub folder: String,
    /// File-name template (see [`TEMPLATE_VARS`]); None = the layout's default.
    pub name: Option<String>,
    /// Extensions the app loads there (empty = any).
    pub extensions: Vec<String>,
    /// Older folder names the app still reads (preset rules).
    pub legacy: Vec<String>,
    /// From the preset rather than the user's config.
    pub from_preset: bool,
}

/// A validated config.
#[derive(Clone, Debug)]
pub struct MappingConfig {
    pub app: String,
    pub kind: String,
    /// The app's folder (empty for an API app, which is given no folder).
    pub root: PathBuf,
    /// An API app's base URL, e.g. `http://127.0.0.1:9090` (InvokeAI).
    pub url: Option<String>,
    pub strategy: Strategy,
    pub preset: Preset,
    /// User rules first, then the preset's.
    pub rules: Vec<Rule>,
}

impl MappingConfig {
    /// The layout of its preset.
    pub fn layout(&self) -> Layout {
        self.preset.layout
    }
}

/// Variables of name templates.
pub const TEMPLATE_VARS: &[&str] = &[
    "slug",
    "name",
    "file",
    "stem",
    "ext",
    "path",
    "type",
    "family",
    "publisher",
    "repo",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kind: Spanned<String>,
    #[serde(default)]
    root: Option<Spanned<String>>,
    /// Base URL of an app reached through its API (InvokeAI).
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    strategy: Option<Spanned<String>>,
    /// Apply the preset's folders after the rules (default true).
    #[serde(default)]
    use_preset: Option<bool>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "type")]
    model_type: Spanned<String>,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    format: Option<Spanned<String>>,
    #[serde(default)]
    tag: Option<String>,
    folder: Spanned<String>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    extensions: Option<Vec<String>>,
}

fn position(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) as u32 + 1;
    (line, column)
}

fn at<T>(text: &str, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
    let (line, column) = position(text, spanned.span().start);
    ConfigError {
        line,
        column,
        message: message.into(),
    }
}

/// Why a relative folder or name cannot be used, if it cannot.
pub fn unsafe_relative(path: &str) -> Option<&'static str> {
    if path.starts_with('/') {
        return Some("is absolute; it must be relative to the app root");
    }
    if path.contains('\\') || path.contains('\0') {
        return Some("contains a backslash or NUL");
    }
    if path.split('/').any(|s| s == "..") {
        return Some("leaves the app root (`..`)");
    }
    None
}

fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has a `{` without `}`".to_owned())?;
        let var = &after[..close];
        if !TEMPLATE_VARS.contains(&var) {
            return Err(format!(
                "uses unknown variable `{{{var}}}` (known: {})",
                TEMPLATE_VARS.join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if let Some(why) = unsafe_relative(template) {
        return Err(why.to_owned());
    }
    Ok(())
}

/// Parses and validates a config; `app` is its name (the file stem).
pub fn parse(app: &str, text: &str) -> Result<MappingConfig, Vec<ConfigError>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| position(text, s.start)).unwrap_or((0, 0));
        vec![ConfigError {
            line,
            column,
            message: e.message().trim().to_owned(),
        }]
    })?;
    let mut errors = Vec::new();
    let preset = presets::find(raw.kind.get_ref());
    if preset.is_none() {
        errors.push(at(
            text,
            &raw.kind,
            format!(
                "unknown kind `{}` (known: {})",
                raw.kind.get_ref(),
                presets::kinds().join(", ")
            ),
        ));
    }
    let api = preset.as_ref().is_some_and(|p| p.layout == Layout::Api);
    let root = match &raw.root {
        Some(r) => {
            let root = PathBuf::from(r.get_ref());
            if !root.is_absolute() {
                errors.push(at(text, r, "root must be an absolute path"));
            }
            root
        }
        None if api => PathBuf::new(),
        None => {
            errors.push(ConfigError {
                line: 0,
                column: 0,
                message: "root is missing: the app's folder, an absolute path".to_owned(),
            });
            PathBuf::new()
        }
    };
    let url = match (&raw.url, api) {
        (Some(u), true) => {
            let value = u.get_ref().trim().trim_end_matches('/');
            let ok = (value.starts_with("http://") || value.starts_with("https://"))
                && value
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
            if !ok {
                errors.push(at(
                    text,
                    u,
                    format!("url `{value}` is not an http(s) address like http://127.0.0.1:9090"),
                ));
            }
            Some(value.to_owned())
        }
        (None, true) => {
            errors.push(at(
                text,
                &raw.kind,
                "this app is reached through its API: give its address, e.g. url = \"http://127.0.0.1:9090\"",
            ));
            None
        }
        (Some(u), false) => {
            errors.push(at(
                text,
                u,
                "url is for apps reached through their API (invokeai); this one is given a root",
            ));
            None
        }
        (None, false) => None,
    };
    let strategy = match &raw.strategy {
        None => Strategy::Auto,
        Some(s) => Strategy::parse(s.get_ref()).unwrap_or_else(|| {
            errors.push(at(
                text,
                s,
                format!(
                    "unknown strategy `{}` (auto, symlink, hardlink, reflink, copy, config_file)",
                    s.get_ref()
                ),
            ));
            Strategy::Auto
        }),
    };
    if strategy == Strategy::ConfigFile
        && preset.as_ref().is_some_and(|p| p.kind != "comfyui")
        && let Some(s) = &raw.strategy
    {
        errors.push(at(
            text,
            s,
            "config_file works for ComfyUI (extra_model_paths.yaml) only; use a link strategy",
        ));
    }
    let mut rules = Vec::new();
    for spanned in &raw.rules {
        let r = spanned.get_ref();
        if !names::is_model_type(r.model_type.get_ref()) {
            errors.push(at(
                text,
                &r.model_type,
                format!(
                    "unknown type `{}` (known: {})",
                    r.model_type.get_ref(),
                    names::MODEL_TYPES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(why) = unsafe_relative(r.folder.get_ref()) {
            errors.push(at(
                text,
                &r.folder,
                format!(
                    "folder `{}` {why}: a rule's target must stay inside the app root",
                    r.folder.get_ref()
                ),
            ));
        }
        if let Some(name) = &r.name
            && let Err(why) = check_template(name.get_ref())
        {
            errors.push(at(text, name, format!("name `{}` {why}", name.get_ref())));
        }
        if let Some(format) = &r.format
            && ![
                "safetensors",
                "gguf",
                "diffusers",
                "transformers",
                "pickle",
                "onnx",
                "unknown",
            ]
            .contains(&format.get_ref().as_str())
        {
            errors.push(at(text, format, format!("unknown format `{}`", format.get_ref())));
        }
        rules.push(Rule {
            model_type: r.model_type.get_ref().clone(),
            family: r.family.clone(),
            formats: r.format.iter().map(|f| f.get_ref().clone()).collect(),
            tag: r.tag.clone(),
            folder: r.folder.get_ref().trim_matches('/').to_owned(),
            name: r.name.as_ref().map(|n| n.get_ref().clone()),
            extensions: r
                .extensions
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|e| if e.starts_with('.') { e } else { format!(".{e}") })
                .collect(),
            legacy: Vec::new(),
            from_preset: false,
        });
    }
    let Some(preset) = preset else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    if raw.use_preset.unwrap_or(true) {
        for f in &preset.folders {
            rules.push(Rule {
                model_type: f.model_type.to_owned(),
                family: None,
                formats: f.formats.iter().map(|s| (*s).to_owned()).collect(),
                tag: None,
                folder: f.folder.to_owned(),
                name: None,
                extensions: f.extensions.iter().map(|s| (*s).to_owned()).collect(),
                legacy: f.legacy.iter().map(|s| (*s).to_owned()).collect(),
                from_preset: true,
            });
        }
    }
    Ok(MappingConfig {
        app: app.to_owned(),
        kind: preset.kind.to_owned(),
        root,
        url,
        strategy,
        preset,
        rules,
    })
}

/// Whether `name` can be an app (config file stem).
pub fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The config file of `app` in `dir`.
pub fn path_of(dir: &Path, app: &str) -> PathBuf {
    dir.join(format!("{app}.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_and_a_root_are_enough() {
        let c = parse("comfy", "kind = \"comfyui\"\nroot = \"/srv/ComfyUI\"\n").expect("valid");
        assert_eq!(c.strategy, Strategy::Auto);
        assert!(
            c.rules
                .iter()
                .any(|r| r.model_type == "lora" && r.folder == "models/loras")
        );
    }

    #[test]
    fn errors_carry_line_and_reason() {
        let text = "kind = \"comfyui\"\nroot = \"/srv/c\"\nstrategi = \"symlink\"\n";
        let errors = parse("x", text).expect_err("unknown key");
        assert_eq!(errors[0].line, 3, "{errors:?}");
        assert!(errors[0].message.contains("strategi"), "{errors:?}");

        let text =
            "kind = \"comfyui\"\nroot = \"/srv/c\"\n\n[[rules]]\ntype = \"lora\"\nfolder = \"../outside\"\n";
        let errors = parse("x", text).expect_err("outside root");
        assert_eq!((errors[0].line, errors[0].column), (6, 10), "{errors:?}");
        assert!(errors[0].message.contains("inside the app root"));

        let text = "kind = \"comfyui\"\nroot = \"/srv/c\"\n[[rules]]\ntype = \"lorra\"\nfolder = \"x\"\n";
        let errors = parse("x", text).expect_err("unknown type");
        assert_eq!(errors[0].line, 4);
        assert!(errors[0].message.contains("unknown type `lorra`"));

        let errors = parse("x", "kind = \"paint\"\nroot = \"relative\"\n").expect_err("two errors");
        assert_eq!(errors.len(), 2, "{errors:?}");

        let text = "kind = \"comfyui\"\nroot = \"/c\"\n[[rules]]\ntype = \"lora\"\nfolder = \"l\"\nname = \"{nope}\"\n";
        let errors = parse("x", text).expect_err("template");
        assert!(
            errors[0].message.contains("unknown variable `{nope}`"),
            "{errors:?}"
        );
    }
}
