//! Secrets (hub tokens, API tokens) that never show up in logs, spans or `Debug` output.

use std::fmt;

/// A secret string. `Debug` and `Display` print `***`; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The first line of a secret file (trimmed), or `None` when that line is empty: how every
    /// token file (service, API, hub) is read.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Option<Self>> {
        let text = std::fs::read_to_string(path)?;
        let first = text.lines().next().unwrap_or_default().trim();
        Ok((!first.is_empty()).then(|| Self(first.to_owned())))
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let token = Secret::new("hf_abcdef");
        assert_eq!(format!("{token:?} {token}"), "*** ***");
        assert_eq!(token.expose(), "hf_abcdef");
    }
}
