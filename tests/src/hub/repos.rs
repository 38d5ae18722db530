//! The emulator's repositories: what a test declares ([`HubRepo`], [`HubFile`]) and what the
//! emulator serves from it, with every id derived from the bytes (git blob sha1 of a small file
//! or of an LFS pointer, sha256 of LFS content, a commit sha over them all).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{Value, json};
use sha1::Digest as _;

use super::{Caller, Emu, error, redirect};

/// One file of a repository.
#[derive(Clone, Debug)]
pub struct HubFile {
    /// Path in the repository.
    pub path: String,
    /// Content.
    pub data: Bytes,
    /// Stored with Git LFS (served through the CDN).
    pub lfs: bool,
}

impl HubFile {
    /// A regular (non-LFS) file.
    pub fn new(path: &str, data: Bytes) -> Self {
        Self {
            path: path.to_owned(),
            data,
            lfs: false,
        }
    }

    /// An LFS file.
    pub fn lfs(path: &str, data: Bytes) -> Self {
        Self {
            path: path.to_owned(),
            data,
            lfs: true,
        }
    }
}

/// A repository and its listing fields.
#[derive(Clone, Debug)]
pub struct HubRepo {
    /// "org/name".
    pub id: String,
    /// Files at its only commit.
    pub files: Vec<HubFile>,
    /// Gated ("manual").
    pub gated: bool,
    /// Private.
    pub private: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// Pipeline tag.
    pub pipeline_tag: String,
    /// Library name.
    pub library_name: String,
    /// Card data.
    pub card_data: Value,
    /// The hub's safetensors summary.
    pub safetensors: Option<Value>,
    /// Downloads.
    pub downloads: u64,
    /// Likes.
    pub likes: u64,
    /// Branch and tag names besides "main" (all point at the one commit).
    pub revisions: Vec<String>,
}

impl HubRepo {
    /// An empty public repository.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            files: Vec::new(),
            gated: false,
            private: false,
            tags: Vec::new(),
            pipeline_tag: String::new(),
            library_name: String::new(),
            card_data: json!({}),
            safetensors: None,
            downloads: 0,
            likes: 0,
            revisions: Vec::new(),
        }
    }
    /// Adds a file.
    pub fn file(mut self, file: HubFile) -> Self {
        self.files.push(file);
        self
    }
    /// Sets the tags.
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self
    }
    /// Sets the pipeline tag.
    pub fn pipeline(mut self, tag: &str) -> Self {
        self.pipeline_tag = tag.to_owned();
        self
    }
    /// Sets the library.
    pub fn library(mut self, name: &str) -> Self {
        self.library_name = name.to_owned();
        self
    }
    /// Sets the card data.
    pub fn card(mut self, card: Value) -> Self {
        self.card_data = card;
        self
    }
    /// Sets the safetensors summary.
    pub fn safetensors_summary(mut self, summary: Value) -> Self {
        self.safetensors = Some(summary);
        self
    }
    /// Sets downloads and likes.
    pub fn popularity(mut self, downloads: u64, likes: u64) -> Self {
        self.downloads = downloads;
        self.likes = likes;
        self
    }
    /// Adds a branch or tag name.
    pub fn revision(mut self, name: &str) -> Self {
        self.revisions.push(name.to_owned());
        self
    }
    /// Marks it gated.
    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }
    /// Marks it private.
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }
}

pub(super) struct Prepared {
    pub(super) repo: HubRepo,
    pub(super) commit: String,
    pub(super) files: BTreeMap<String, PreparedFile>,
}

#[derive(Clone)]
pub(super) struct PreparedFile {
    pub(super) data: Bytes,
    pub(super) lfs: bool,
    pub(super) sha256: String,
    /// Git blob sha1 of the content (regular) or of the pointer (LFS).
    pub(super) oid: String,
    pub(super) pointer_size: usize,
}

/// `sha256` hex of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(data))
}

/// Git blob sha1 hex of bytes (the hub's ETag of a regular file).
pub fn git_sha1_hex(data: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", data.len()).as_bytes());
    hasher.update(data);
    format!("{:x}", hasher.finalize())
}

fn pointer(sha256: &str, size: usize) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// Ids for every repository, and the LFS blobs by sha256 (what the CDN serves).
pub(super) fn prepare(repos: Vec<HubRepo>) -> (BTreeMap<String, Prepared>, HashMap<String, Bytes>) {
    let mut prepared = BTreeMap::new();
    let mut blobs = HashMap::new();
    for repo in repos {
        let mut files = BTreeMap::new();
        let mut commit = sha1::Sha1::new();
        commit.update(repo.id.as_bytes());
        for file in &repo.files {
            let sha256 = sha256_hex(&file.data);
            let (oid, pointer_size) = if file.lfs {
                let p = pointer(&sha256, file.data.len());
                blobs.insert(sha256.clone(), file.data.clone());
                (git_sha1_hex(p.as_bytes()), p.len())
            } else {
                (git_sha1_hex(&file.data), 0)
            };
            commit.update(file.path.as_bytes());
            commit.update(oid.as_bytes());
            files.insert(
                file.path.clone(),
                PreparedFile {
                    data: file.data.clone(),
                    lfs: file.lfs,
                    sha256,
                    oid,
                    pointer_size,
                },
            );
        }
        let commit = format!("{:x}", commit.finalize());
        prepared.insert(repo.id.clone(), Prepared { repo, commit, files });
    }
    (prepared, blobs)
}

impl Emu {
    /// The repository `id` as `who` may see it; a renamed one answers a redirect to the same
    /// path under its new name.
    pub(super) fn lookup(&self, id: &str, who: &Caller, uri: &Uri) -> Result<Arc<Prepared>, Response<Body>> {
        if let Some(new) = self.renamed.get(id) {
            let location = uri.path().replacen(id, new, 1);
            return Err(redirect(StatusCode::TEMPORARY_REDIRECT, &location));
        }
        self.repo_for(id, who)
    }

    /// The repository, or the error a client gets for it.
    pub(super) fn repo_for(&self, id: &str, who: &Caller) -> Result<Arc<Prepared>, Response<Body>> {
        if matches!(who, Caller::BadToken) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                None,
                "Invalid credentials in Authorization header",
            ));
        }
        let anonymous = matches!(who, Caller::Anonymous);
        let found = self.repos.read().ok().and_then(|r| r.get(id).cloned());
        match found {
            Some(repo) if !(repo.repo.private && anonymous) => Ok(repo),
            _ => Err(error(
                if anonymous {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::NOT_FOUND
                },
                Some("RepoNotFound"),
                "Repository Not Found",
            )),
        }
    }

    /// The repository as it was at `rev`: its current commit for a branch or tag name (they
    /// all follow the newest commit) or that commit's sha, an earlier commit by its sha.
    pub(super) fn at(&self, repo: Arc<Prepared>, rev: &str) -> Result<Arc<Prepared>, Response<Body>> {
        if rev == "main" || rev == repo.commit || repo.repo.revisions.iter().any(|r| r == rev) {
            return Ok(repo);
        }
        let older = self
            .older
            .read()
            .ok()
            .and_then(|o| o.get(&(repo.repo.id.clone(), rev.to_owned())).cloned());
        older.ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                Some("RevisionNotFound"),
                &format!("Invalid rev id: {rev}"),
            )
        })
    }
}
