//! Optional bearer-token auth on the public API. Tokens are compared by their SHA-256 in
//! constant time; they are never logged. Health and reflection stay open (this interceptor wraps
//! only ModelLibraryService).

use std::path::Path;
use std::sync::Arc;

use pumas_runtime::secret::WatchedFile;
use pumas_runtime::{ApiError, Secret};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The accepted tokens: the ones given at start, and the lines of a tokens file, read again
/// whenever the file changes (rotation without a restart). No tokens at all = auth off.
#[derive(Clone, Default)]
pub struct BearerAuth {
    fixed: Arc<Vec<[u8; 32]>>,
    file: Option<Arc<WatchedFile<Vec<[u8; 32]>>>>,
}

/// The digests of a tokens file's lines (one token per line, `#` comments).
fn read_tokens(path: &Path) -> std::io::Result<Vec<[u8; 32]>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(digest)
        .collect())
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BearerAuth({} tokens, file: {})",
            self.fixed.len(),
            self.file.is_some()
        )
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl BearerAuth {
    /// Tokens from the environment/flags and from a file (one per line, `#` comments), which is
    /// read now (an unreadable file is an error at start) and again whenever it changes.
    pub fn load(tokens: &[Secret], file: Option<&Path>) -> Result<Self, String> {
        let fixed: Vec<[u8; 32]> = tokens
            .iter()
            .map(|t| t.expose().trim())
            .filter(|t| !t.is_empty())
            .map(digest)
            .collect();
        let file = match file {
            Some(path) => {
                Some(Arc::new(WatchedFile::open(path, read_tokens).map_err(|e| {
                    format!("cannot read the tokens file {}: {e}", path.display())
                })?))
            }
            None => None,
        };
        Ok(Self {
            fixed: Arc::new(fixed),
            file,
        })
    }

    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        !self.fixed.is_empty() || self.file.is_some()
    }

    fn accepts(&self, token: &str) -> bool {
        let candidate = digest(token);
        let from_file = self.file.as_ref().map(|f| f.current()).unwrap_or_default();
        // Look at every token, whatever matches, so timing says nothing.
        let mut matched = subtle::Choice::from(0);
        for d in self.fixed.iter().chain(from_file.iter()) {
            matched |= d.ct_eq(&candidate);
        }
        bool::from(matched)
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.enabled() {
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match presented {
            Some(token) if self.accepts(token.trim()) => Ok(request),
            Some(_) => Err(ApiError::Unauthenticated("the bearer token is not valid for this gateway".to_owned()).into()),
            None => Err(ApiError::Unauthenticated(
                "this gateway needs a bearer token: send `authorization: Bearer <token>` (pumas: --token or PUMAS_API_TOKEN)".to_owned(),
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    #[test]
    fn a_rotated_tokens_file_takes_effect_without_a_restart() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tokens");
        std::fs::write(&file, "old-token-0123456789\n")?;
        let auth = BearerAuth::load(&[], Some(&file))?;
        assert!(auth.accepts("old-token-0123456789"));
        std::fs::write(&file, "# rotated\nnew-token-0123456789\n")?;
        // Make the change visible even on a filesystem with coarse timestamps.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)?
            .set_modified(later)?;
        std::thread::sleep(pumas_runtime::secret::RECHECK);
        assert!(auth.accepts("new-token-0123456789"));
        assert!(!auth.accepts("old-token-0123456789"));
        // A file that disappears mid-rotation keeps the last tokens, never opens the gateway.
        std::fs::remove_file(&file)?;
        std::thread::sleep(pumas_runtime::secret::RECHECK);
        assert!(auth.enabled() && auth.accepts("new-token-0123456789"));
        assert!(!auth.accepts(""));
        Ok(())
    }

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = tonic::Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().expect("header"));
        }
        auth.call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn tokens_are_checked() {
        let mut off = BearerAuth::default();
        assert_eq!(call(&mut off, None), Ok(()));
        let mut on = BearerAuth::load(&[Secret::new("s3cret"), Secret::new("other")], None).expect("load");
        assert_eq!(call(&mut on, Some("Bearer s3cret")), Ok(()));
        assert_eq!(call(&mut on, Some("Bearer other")), Ok(()));
        assert_eq!(
            call(&mut on, Some("Bearer wrong")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(call(&mut on, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            call(&mut on, Some("Basic s3cret")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(format!("{on:?}"), "BearerAuth(2 tokens, file: false)");
    }
}
