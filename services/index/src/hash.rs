//! One streaming read computes SHA-256 and BLAKE3 together: the reading thread feeds SHA-256,
//! a second thread feeds BLAKE3 from the same buffers, so two cores hash at the speed of one.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use sha2::{Digest as _, Sha256};

/// Read size.
const CHUNK: usize = 1 << 20;

/// The two digests of a file, as recorded (`sha256:<hex>`, `blake3:<hex>`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Digests {
    /// `sha256:<hex>`.
    pub sha256: String,
    /// `blake3:<hex>`.
    pub blake3: String,
}

/// Hashes a file; `progress` is called with the bytes read so far after each chunk and stops the
/// work (an `Interrupted` error) by returning false.
pub fn hash_file(path: &Path, mut progress: impl FnMut(u64) -> bool) -> io::Result<Digests> {
    let mut file = File::open(path)?;
    let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(4);
    let blake = std::thread::spawn(move || {
        let mut hasher = blake3::Hasher::new();
        for chunk in rx {
            hasher.update(&chunk);
        }
        hasher.finalize()
    });
    let mut sha = Sha256::new();
    let mut done = 0u64;
    let result = loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break Ok(());
        }
        buf.truncate(filled);
        sha.update(&buf);
        done += filled as u64;
        if tx.send(Arc::new(buf)).is_err() {
            break Err(io::Error::other("hashing thread stopped"));
        }
        if !progress(done) {
            break Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
    };
    drop(tx);
    let blake = blake
        .join()
        .map_err(|_| io::Error::other("hashing thread panicked"))?;
    result?;
    Ok(Digests {
        sha256: format!("sha256:{:x}", sha.finalize()),
        blake3: format!("blake3:{}", blake.to_hex()),
    })
}

/// The composite digest of a multi-file model: BLAKE3 over `path NUL sha256 LF` for every file
/// in path order. Same files, same digest, wherever they live.
pub fn composite(files: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort();
    let mut hasher = blake3::Hasher::new();
    for (path, sha256) in sorted {
        hasher.update(path.as_bytes());
        hasher.update(b"\0");
        hasher.update(sha256.as_bytes());
        hasher.update(b"\n");
    }
    format!("blake3:{}", hasher.finalize().to_hex())
}

/// Whether `digest` is a well-formed `sha256:<64 hex>` or `blake3:<64 hex>`.
pub fn is_digest(digest: &str) -> bool {
    let hex = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("blake3:"));
    hex.is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_over_several_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").expect("write");
        let d = hash_file(&path, |_| true).expect("hash");
        assert_eq!(
            d.sha256,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.blake3,
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let big = dir.path().join("big");
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &data).expect("write");
        let mut seen = 0;
        let d = hash_file(&big, |n| {
            seen = n;
            true
        })
        .expect("hash");
        assert_eq!(seen, data.len() as u64);
        assert_eq!(d.sha256, format!("sha256:{:x}", Sha256::digest(&data)));
        assert_eq!(d.blake3, format!("blake3:{}", blake3::hash(&data).to_hex()));
    }

    #[test]
    fn digest_syntax() {
        assert!(is_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_digest(&format!("md5:{}", "a".repeat(64))));
        assert!(!is_digest("sha256:xyz"));
    }
}
