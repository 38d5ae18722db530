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

/// Where a secret comes from: nowhere, a value given at start, or a file that is looked at again
/// (at most once a second) so a rotated token takes effect without a restart.
#[derive(Clone, Debug, Default)]
pub enum SecretSource {
    /// No secret configured.
    #[default]
    None,
    /// A value given at start (a flag or the environment).
    Fixed(Secret),
    /// A token file (its first line), re-read when it changes.
    File(std::sync::Arc<WatchedFile<Option<Secret>>>),
}

impl SecretSource {
    /// A token file, read now (an unreadable file is an error at start).
    pub fn file(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self::File(std::sync::Arc::new(WatchedFile::open(
            path,
            Secret::from_file,
        )?)))
    }

    /// Whether a secret is configured (a file counts even while it is empty).
    pub fn is_configured(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The secret now.
    pub fn current(&self) -> Option<Secret> {
        match self {
            Self::None => None,
            Self::Fixed(s) => Some(s.clone()),
            Self::File(f) => f.current().as_ref().clone(),
        }
    }
}

/// How often a [`WatchedFile`] looks at its file for a change.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A file read again when it changes: its modification time is looked at once a second at
/// most (not on every call), and the file is parsed again when that time moved. A file that
/// cannot be read or parsed any more keeps what was read before, with a warning: a rotation
/// half-done must neither drop every token nor open a door.
pub struct WatchedFile<T> {
    path: std::path::PathBuf,
    parse: fn(&std::path::Path) -> std::io::Result<T>,
    seen: std::sync::RwLock<(Option<std::time::SystemTime>, std::sync::Arc<T>)>,
    looked: std::sync::Mutex<std::time::Instant>,
}

impl<T> fmt::Debug for WatchedFile<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WatchedFile({})", self.path.display())
    }
}

impl<T> WatchedFile<T> {
    /// Reads `path` with `parse` now (an error at start is the caller's to report).
    pub fn open(
        path: &std::path::Path,
        parse: fn(&std::path::Path) -> std::io::Result<T>,
    ) -> std::io::Result<Self> {
        let modified = std::fs::metadata(path)?.modified().ok();
        let value = parse(path)?;
        Ok(Self {
            path: path.to_owned(),
            parse,
            seen: std::sync::RwLock::new((modified, std::sync::Arc::new(value))),
            looked: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    /// What the file holds now (as last read).
    pub fn current(&self) -> std::sync::Arc<T> {
        let due = self.looked.lock().is_ok_and(|mut at| {
            let due = at.elapsed() >= RECHECK;
            if due {
                *at = std::time::Instant::now();
            }
            due
        });
        if due {
            let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if self.seen.read().is_ok_and(|s| s.0 != modified) {
                match (self.parse)(&self.path) {
                    Ok(value) => {
                        if let Ok(mut s) = self.seen.write() {
                            *s = (modified, std::sync::Arc::new(value));
                        }
                        tracing::info!(file = %self.path.display(), "the file changed: using what it holds now");
                    }
                    Err(e) => {
                        tracing::warn!(file = %self.path.display(), error = %e, "the file cannot be read; keeping what it held before")
                    }
                }
            }
        }
        match self.seen.read() {
            Ok(s) => std::sync::Arc::clone(&s.1),
            Err(poisoned) => std::sync::Arc::clone(&poisoned.get_ref().1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_again_when_it_changes() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n")?;
        let source = SecretSource::file(&path)?;
        assert_eq!(
            source.current().map(|s| s.expose().to_owned()).as_deref(),
            Some("first-token")
        );
        // Rotated: another file renamed over it (how tools replace secrets), with a later mtime.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second-token\n")?;
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&next)?
            .set_modified(later)?;
        std::fs::rename(&next, &path)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while source.current().map(|s| s.expose().to_owned()).as_deref() != Some("second-token") {
            assert!(
                std::time::Instant::now() < deadline,
                "the new token was never read"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Gone: the last token stays in use.
        std::fs::remove_file(&path)?;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(
            source.current().map(|s| s.expose().to_owned()).as_deref(),
            Some("second-token")
        );
        Ok(())
    }

    #[test]
    fn never_printed() {
        let token = Secret::new("hf_abcdef");
        assert_eq!(format!("{token:?} {token}"), "*** ***");
        assert_eq!(token.expose(), "hf_abcdef");
    }
}
