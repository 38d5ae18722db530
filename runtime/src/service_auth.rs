//! Service-to-service authentication. Every backend (index, fetch, mapper) checks a shared
//! service token on every RPC of its API; health and reflection stay open. Every Pumas client
//! channel ([`crate::client::connect_lazy`]) sends the token this process was given. With mutual
//! TLS the TLS handshake proves the caller instead, and the token is optional.
//!
//! The token travels in its own header, [`HEADER`], never in `authorization`, so the gateway's
//! client tokens and the service token never stand in for each other.

use std::io::{self, Read as _, Write as _};
use std::path::Path;
use std::sync::RwLock;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::secret::SecretSource;
use crate::{ApiError, Secret};

/// The metadata key that carries the service token.
pub const HEADER: &str = "x-pumas-service-token";

static TOKEN: RwLock<SecretSource> = RwLock::new(SecretSource::None);

/// Makes `token` the one this process sends to, and requires from, other Pumas services.
pub fn install(token: Secret) {
    if let Ok(mut slot) = TOKEN.write() {
        *slot = SecretSource::Fixed(token);
    }
}

/// Makes the token file at `path` (created when missing, as [`read_or_create`]) the source of
/// the service token; it is read again when it changes, so a rotated token takes effect
/// without a restart (rotate every role's file, then the old token stops working).
pub fn install_file(path: &Path) -> io::Result<bool> {
    let (_, created) = read_or_create(path)?;
    let source = SecretSource::file(path)?;
    if let Ok(mut slot) = TOKEN.write() {
        *slot = source;
    }
    Ok(created)
}

/// The token this process sends and requires, if any.
pub fn token() -> Option<Secret> {
    TOKEN.read().ok().and_then(|t| t.current())
}

fn configured() -> bool {
    TOKEN.read().is_ok_and(|t| t.is_configured())
}

/// Reads a token file (the first line, trimmed).
pub fn read(path: &Path) -> io::Result<Secret> {
    match Secret::from_file(path)? {
        Some(token) if token.expose().len() >= 16 => Ok(token),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no token of at least 16 characters", path.display()),
        )),
    }
}

/// Reads the token file at `path`, creating it first (a random token, mode 0600, in a 0700
/// folder) when it does not exist. Answers the token and whether it was created now.
pub fn read_or_create(path: &Path) -> io::Result<(Secret, bool)> {
    if path.exists() {
        return read(path).map(|t| (t, false));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let token = random_token()?;
    let mut temp = crate::fsio::temp_file_in(dir)?;
    std::fs::set_permissions(temp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    temp.write_all(format!("{token}\n").as_bytes())?;
    temp.as_file().sync_all()?;
    match temp.persist_noclobber(path) {
        Ok(_) => {}
        // Another process made it first: theirs wins.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return read(path).map(|t| (t, false)),
        Err(e) => return Err(e.error),
    }
    crate::fsio::sync_dir(dir)?;
    Ok((Secret::new(token), true))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// 32 random bytes from the kernel, as 64 hex characters.
fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The check a backend puts in front of its API: the caller must send this process's service
/// token (as it is now: a token file is followed). Without an installed token (a backend on
/// loopback for tests and development, or one that relies on mutual TLS) every caller passes.
#[derive(Clone)]
pub struct RequireServiceToken {
    enabled: bool,
}

impl RequireServiceToken {
    /// The check for the token installed now.
    pub fn current() -> Self {
        Self {
            enabled: configured(),
        }
    }

    /// Whether callers must present a token.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

impl tonic::service::Interceptor for RequireServiceToken {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.enabled {
            return Ok(request);
        }
        // An empty token file accepts nobody.
        let want: Option<[u8; 32]> = token().map(|t| Sha256::digest(t.expose().as_bytes()).into());
        let given = request.metadata().get(HEADER).and_then(|v| v.to_str().ok());
        let ok = given.zip(want).is_some_and(|(token, want)| {
            let got: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
            bool::from(got.ct_eq(&want))
        });
        if ok {
            return Ok(request);
        }
        let why = if given.is_some() { "a wrong" } else { "no" };
        Err(ApiError::Unauthenticated(format!(
            "this is a Pumas backend and the call carried {why} service token; clients call the \
             gateway, and Pumas services send the token from their --service-token-file (pumas up \
             keeps it in <data root>/launcher-data/secrets/service-token) as `{HEADER}`"
        ))
        .into())
    }
}

/// Adds the installed service token to an outgoing request.
pub(crate) fn attach(request: &mut tonic::Request<()>) {
    if let Some(token) = token()
        && let Ok(value) = token.expose().parse()
    {
        request.metadata_mut().insert(HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_is_private_and_read_back() -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("secrets").join("service-token");
        let (made, created) = read_or_create(&path)?;
        assert!(created);
        assert_eq!(made.expose().len(), 64);
        assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dir.path().join("secrets"))?
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let (again, created) = read_or_create(&path)?;
        assert!(!created);
        assert_eq!(again, made);
        Ok(())
    }
}
