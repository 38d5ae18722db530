//! Optional bearer-token auth on the public API. Tokens are compared by their SHA-256 in
//! constant time; they are never logged. Health and reflection stay open (this interceptor wraps
//! only ModelLibraryService).

use std::path::Path;
use std::sync::Arc;

use pumas_runtime::{ApiError, Secret};
use sha2::{Digest as _, Sha256};

/// The accepted tokens (empty = auth off).
#[derive(Clone, Default)]
pub struct BearerAuth {
    digests: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerAuth({} tokens)", self.digests.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl BearerAuth {
    /// Tokens from the environment/flags and from a file (one per line, `#` comments).
    pub fn load(tokens: &[Secret], file: Option<&Path>) -> Result<Self, String> {
        let mut all: Vec<String> = tokens
            .iter()
            .map(|t| t.expose().trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the tokens file {}: {e}", file.display()))?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        Ok(Self {
            digests: Arc::new(all.iter().map(|t| digest(t)).collect()),
        })
    }

    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    fn accepts(&self, token: &str) -> bool {
        let candidate = digest(token);
        // Look at every token and every byte, whatever matches, so timing says nothing.
        let mut matched = 0u8;
        for d in self.digests.iter() {
            let diff = d
                .iter()
                .zip(candidate.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            matched |= u8::from(diff == 0);
        }
        matched == 1
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
        assert_eq!(format!("{on:?}"), "BearerAuth(2 tokens)");
    }
}
