//! A Hugging Face Hub emulator: the API and resolve semantics the official clients rely on
//! (`shared/HUB-CONTRACT.md`), served over two origins as the real Hub does (hub + a CDN on
//! another port), with knobs to throttle and to inject faults.
//!
//! Every id is derived from the bytes: the git blob sha1 of a small file (its ETag), or the
//! sha256 of an LFS file plus the sha1 of its pointer, the same in tree, siblings and headers.
//!
//! One room per job, routed by axum: [`repos`] (what a test declares and the ids served),
//! [`api`] (the JSON API), [`cdn`] (resolve and file bodies), [`faults`] (faults, throttles and
//! the request log). This module starts the two origins and holds the shared HTTP helpers.

// Handlers answer errors as whole responses; their size does not matter here.
#![allow(clippy::result_large_err)]

mod api;
mod cdn;
mod faults;
pub mod fixtures;
mod repos;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use bytes::Bytes;
use serde_json::{Value, json};

pub use faults::{Faults, Logged};
use repos::Prepared;
pub use repos::{HubFile, HubRepo, git_sha1_hex, sha256_hex};

/// A token that is valid and approved for gated repositories.
pub const GOOD_TOKEN: &str = "hf_goodtoken";
/// A token that is valid but not approved for gated repositories.
pub const NO_ACCESS_TOKEN: &str = "hf_noaccess";
/// The commit date every repository reports.
const DATE: &str = "2026-01-02T03:04:05.000Z";

struct Emu {
    /// Each repository at its newest commit.
    repos: std::sync::RwLock<BTreeMap<String, Arc<Prepared>>>,
    /// Earlier commits, by (repository, commit sha), still served by sha as the hub does.
    older: std::sync::RwLock<HashMap<(String, String), Arc<Prepared>>>,
    renamed: HashMap<String, String>,
    blobs: std::sync::RwLock<HashMap<String, Bytes>>,
    cdn_url: String,
    faults: Arc<Faults>,
    log: Mutex<Vec<Logged>>,
    body_bytes: Arc<AtomicU64>,
}

/// A running emulator. Stops when dropped.
pub struct HubEmulator {
    /// The hub origin, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The CDN origin.
    pub cdn_url: String,
    /// Faults and throttles.
    pub faults: Arc<Faults>,
    emu: Arc<Emu>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HubEmulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl HubEmulator {
    /// Serves `repos` on two ephemeral loopback ports; `acme/old-tiny-model` is a renamed alias
    /// of `acme/tiny-model` when that repository is present.
    pub async fn start(repos: Vec<HubRepo>) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0", "127.0.0.1:0", repos).await
    }

    /// Serves `repos` on the given addresses.
    pub async fn start_on(hub_addr: &str, cdn_addr: &str, repos: Vec<HubRepo>) -> anyhow::Result<Self> {
        let hub_listener = tokio::net::TcpListener::bind(hub_addr).await?;
        let cdn_listener = tokio::net::TcpListener::bind(cdn_addr).await?;
        let url = format!("http://{}", hub_listener.local_addr()?);
        let cdn_url = format!("http://{}", cdn_listener.local_addr()?);
        let (prepared, blobs) = repos::prepare(repos);
        let mut renamed = HashMap::new();
        if prepared.contains_key("acme/tiny-model") {
            renamed.insert("acme/old-tiny-model".to_owned(), "acme/tiny-model".to_owned());
        }
        let faults = Arc::new(Faults::default());
        let emu = Arc::new(Emu {
            repos: std::sync::RwLock::new(prepared.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
            older: Default::default(),
            renamed,
            blobs: std::sync::RwLock::new(blobs),
            cdn_url: cdn_url.clone(),
            faults: Arc::clone(&faults),
            log: Mutex::new(Vec::new()),
            body_bytes: Arc::new(AtomicU64::new(0)),
        });
        let hub = axum::Router::new()
            .merge(api::routes())
            .merge(cdn::resolve_routes())
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&emu),
                faults::hub_gate,
            ))
            .with_state(Arc::clone(&emu));
        let cdn = axum::Router::new()
            .merge(cdn::cdn_routes())
            .fallback(no_such_key)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&emu),
                faults::cdn_log,
            ))
            .with_state(Arc::clone(&emu));
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(hub_listener, hub).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(cdn_listener, cdn).await;
            }),
        ];
        Ok(Self {
            url,
            cdn_url,
            faults,
            emu,
            tasks,
        })
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.emu.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Forgets the request log and the byte counter.
    pub fn reset_log(&self) {
        if let Ok(mut log) = self.emu.log.lock() {
            log.clear();
        }
        self.emu.body_bytes.store(0, Ordering::SeqCst);
    }

    /// File body bytes sent so far (both origins).
    pub fn body_bytes_sent(&self) -> u64 {
        self.emu.body_bytes.load(Ordering::SeqCst)
    }

    fn current(&self, repo_id: &str) -> Option<Arc<Prepared>> {
        self.emu.repos.read().ok()?.get(repo_id).cloned()
    }

    /// The newest commit sha of a repository.
    pub fn commit(&self, repo_id: &str) -> Option<String> {
        self.current(repo_id).map(|r| r.commit.clone())
    }

    /// The sha256 hex of a file at the newest commit.
    pub fn file_sha256(&self, repo_id: &str, path: &str) -> Option<String> {
        self.current(repo_id)
            .and_then(|r| r.files.get(path).map(|f| f.sha256.clone()))
    }

    /// The bytes of a file at the newest commit.
    pub fn file_bytes(&self, repo_id: &str, path: &str) -> Option<Bytes> {
        self.current(repo_id)
            .and_then(|r| r.files.get(path).map(|f| f.data.clone()))
    }

    /// Pushes a new commit: `repo` (same id) becomes what every branch and tag points to, and
    /// the commit it replaces stays reachable by its sha. Answers the new commit sha.
    pub fn push(&self, repo: HubRepo) -> anyhow::Result<String> {
        let id = repo.id.clone();
        let (prepared, blobs) = repos::prepare(vec![repo]);
        let new = prepared
            .into_values()
            .next()
            .map(Arc::new)
            .ok_or_else(|| anyhow::anyhow!("nothing to push"))?;
        let commit = new.commit.clone();
        self.emu
            .blobs
            .write()
            .map_err(|_| anyhow::anyhow!("blobs lock"))?
            .extend(blobs);
        let old = self
            .emu
            .repos
            .write()
            .map_err(|_| anyhow::anyhow!("repos lock"))?
            .insert(id.clone(), new);
        if let Some(old) = old {
            self.emu
                .older
                .write()
                .map_err(|_| anyhow::anyhow!("history lock"))?
                .insert((id, old.commit.clone()), old);
        }
        Ok(commit)
    }
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(json!({ "error": message }).to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(code) = code {
        headers.insert(
            "x-error-code",
            HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("")),
        );
    }
    if let Ok(v) = HeaderValue::from_str(message) {
        headers.insert("x-error-message", v);
    }
    response
}

fn json_response(value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) enum Caller {
    Anonymous,
    Token { approved: bool },
    BadToken,
}

fn caller(headers: &HeaderMap) -> Caller {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Caller::Anonymous;
    };
    match value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        Some(GOOD_TOKEN) => Caller::Token { approved: true },
        Some(NO_ACCESS_TOKEN) => Caller::Token { approved: false },
        _ => Caller::BadToken,
    }
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("Redirecting to {location}")));
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, None, "Not Found")
}

async fn no_such_key() -> Response<Body> {
    error(StatusCode::NOT_FOUND, None, "NoSuchKey")
}

/// What every handler wants to know about a request: the emulator, who calls, the query, the
/// host it was sent to (for absolute `Link`s), the URI, method and headers.
pub(super) struct Call {
    emu: Arc<Emu>,
    who: Caller,
    query: Query,
    host: String,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<Emu>> for Call {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, emu: &Arc<Emu>) -> Result<Self, Infallible> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
            .to_owned();
        Ok(Self {
            emu: Arc::clone(emu),
            who: caller(&parts.headers),
            query: Query::parse(parts.uri.query()),
            host,
            uri: parts.uri.clone(),
            method: parts.method.clone(),
            headers: parts.headers.clone(),
        })
    }
}
