//! Hashing a file while its parts arrive: the contiguous prefix is read back and fed to
//! SHA-256, BLAKE3 and (for git blobs) SHA-1, so a finished file needs no second full read.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Duration;

use super::part::PartialFile;
use sha1::Digest as _;

/// Hex digests of a whole file.
#[derive(Debug, Default)]
pub struct Digests {
    pub sha256: String,
    pub blake3: String,
    pub git_sha1: String,
}

/// Hashes the file's contiguous prefix as parts write it, until the whole file is hashed.
pub(super) async fn verify_while_arriving(
    target: Arc<PartialFile>,
    git_sha1: bool,
) -> std::io::Result<Digests> {
    let size = target.size;
    struct Hashers {
        sha256: sha2::Sha256,
        blake3: blake3::Hasher,
        sha1: Option<sha1::Sha1>,
    }
    let mut hashers = Hashers {
        sha256: sha2::Sha256::new(),
        blake3: blake3::Hasher::new(),
        sha1: git_sha1.then(|| {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            h
        }),
    };
    let mut hashed = 0u64;
    while hashed < size {
        let notified = target.arrived.notified();
        let prefix = target.contiguous_prefix();
        if prefix > hashed {
            let reader = Arc::clone(&target.file);
            let (from, to) = (hashed, prefix);
            hashers = tokio::task::spawn_blocking(move || -> std::io::Result<Hashers> {
                let mut h = hashers;
                let mut buf = vec![0u8; (4 << 20).min((to - from) as usize)];
                let mut at = from;
                while at < to {
                    let n = ((to - at) as usize).min(buf.len());
                    reader.read_exact_at(&mut buf[..n], at)?;
                    let chunk = &buf[..n];
                    // SHA-256 and BLAKE3 on two threads: the tail of a big file is hashed
                    // after its last byte arrives, and that wait is what the user sees.
                    let Hashers { sha256, blake3, sha1 } = &mut h;
                    std::thread::scope(|scope| {
                        scope.spawn(|| {
                            blake3.update(chunk);
                        });
                        sha256.update(chunk);
                        if let Some(s) = sha1 {
                            s.update(chunk);
                        }
                    });
                    at += n as u64;
                }
                Ok(h)
            })
            .await
            .map_err(std::io::Error::other)??;
            hashed = prefix;
            continue;
        }
        // Wake on the next write, or re-check now and then.
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
    Ok(Digests {
        sha256: format!("{:x}", hashers.sha256.finalize()),
        blake3: hashers.blake3.finalize().to_hex().to_string(),
        git_sha1: hashers
            .sha1
            .map(|s| format!("{:x}", s.finalize()))
            .unwrap_or_default(),
    })
}
