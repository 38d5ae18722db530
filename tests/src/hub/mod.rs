//! A Hugging Face Hub emulator: the API and resolve semantics the official clients rely on
//! (`shared/HUB-CONTRACT.md`), served over two origins as the real Hub does (hub + a CDN on
//! another port), with knobs to throttle and to inject faults.
//!
//! Every id is derived from the bytes: the git blob sha1 of a small file (its ETag), or the
//! sha256 of an LFS file plus the sha1 of its pointer, the same in tree, siblings and headers.

// Handlers answer errors as whole responses; their size does not matter here.
#![allow(clippy::result_large_err)]

pub mod fixtures;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use serde_json::{Value, json};
use sha1::Digest as _;

/// A token that is valid and approved for gated repositories.
pub const GOOD_TOKEN: &str = "hf_goodtoken";
/// A token that is valid but not approved for gated repositories.
pub const NO_ACCESS_TOKEN: &str = "hf_noaccess";
/// The commit date every repository reports.
const DATE: &str = "2026-01-02T03:04:05.000Z";

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

/// Faults and throttles; tests flip them while the emulator runs. One-shot faults reset
/// themselves after they fire.
#[derive(Debug, Default)]
pub struct Faults {
    /// Cut the next file body after this many bytes (0 = off; one-shot).
    pub cut_after_bytes: AtomicU64,
    /// Stall the next file body after this many bytes until the client gives up (0 = off; one-shot).
    pub stall_after_bytes: AtomicU64,
    /// Corrupt (flip the first byte of) this many next file bodies.
    pub corrupt_next: AtomicU32,
    /// Answer this many next hub-origin requests with 429 and `Retry-After: 1`.
    pub rate_limit_next: AtomicU32,
    /// Answer every hub-origin request with 503.
    pub down: AtomicBool,
    /// Delay every API answer by this many milliseconds.
    pub api_delay_ms: AtomicU64,
    /// Serve every file body at most this fast, per connection (0 = unthrottled).
    pub throttle_bytes_per_second: AtomicU64,
    /// Ignore Range headers (answer 200 with the whole file).
    pub ignore_range: AtomicBool,
    /// Page size cap for lists (0 = 1000).
    pub page_cap: AtomicUsize,
}

fn take_one_shot(value: &AtomicU64) -> u64 {
    value.swap(0, Ordering::SeqCst)
}

fn take_count(value: &AtomicU32) -> bool {
    value
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// One request the emulator answered.
#[derive(Clone, Debug)]
pub struct Logged {
    /// "hub" or "cdn".
    pub origin: &'static str,
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The Range header, if any.
    pub range: Option<String>,
    /// The Authorization header, if any.
    pub authorization: Option<String>,
    /// Status answered.
    pub status: u16,
}

struct Prepared {
    repo: HubRepo,
    commit: String,
    files: BTreeMap<String, PreparedFile>,
}

#[derive(Clone)]
struct PreparedFile {
    data: Bytes,
    lfs: bool,
    sha256: String,
    /// Git blob sha1 of the content (regular) or of the pointer (LFS).
    oid: String,
    pointer_size: usize,
}

struct Emu {
    repos: BTreeMap<String, Prepared>,
    renamed: HashMap<String, String>,
    blobs: HashMap<String, Bytes>,
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
        let mut renamed = HashMap::new();
        if prepared.contains_key("acme/tiny-model") {
            renamed.insert("acme/old-tiny-model".to_owned(), "acme/tiny-model".to_owned());
        }
        let faults = Arc::new(Faults::default());
        let emu = Arc::new(Emu {
            repos: prepared,
            renamed,
            blobs,
            cdn_url: cdn_url.clone(),
            faults: Arc::clone(&faults),
            log: Mutex::new(Vec::new()),
            body_bytes: Arc::new(AtomicU64::new(0)),
        });
        let hub = axum::Router::new()
            .fallback(hub_route)
            .with_state(Arc::clone(&emu));
        let cdn = axum::Router::new()
            .fallback(cdn_route)
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

    /// The commit sha of a repository.
    pub fn commit(&self, repo_id: &str) -> Option<String> {
        self.emu.repos.get(repo_id).map(|r| r.commit.clone())
    }

    /// The sha256 hex of a file.
    pub fn file_sha256(&self, repo_id: &str, path: &str) -> Option<String> {
        self.emu
            .repos
            .get(repo_id)
            .and_then(|r| r.files.get(path))
            .map(|f| f.sha256.clone())
    }

    /// The bytes of a file.
    pub fn file_bytes(&self, repo_id: &str, path: &str) -> Option<Bytes> {
        self.emu
            .repos
            .get(repo_id)
            .and_then(|r| r.files.get(path))
            .map(|f| f.data.clone())
    }
}

// ---------- routing ----------

fn decode(segment: &str) -> String {
    percent_decode(segment)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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

enum Caller {
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

impl Emu {
    fn record(&self, origin: &'static str, method: &Method, uri: &str, headers: &HeaderMap, status: u16) {
        let header_of =
            |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Ok(mut log) = self.log.lock() {
            log.push(Logged {
                origin,
                method: method.to_string(),
                uri: uri.to_owned(),
                range: header_of(header::RANGE),
                authorization: header_of(header::AUTHORIZATION),
                status,
            });
        }
    }

    /// The repository, or the error a client gets for it.
    fn repo_for(&self, id: &str, who: &Caller) -> Result<&Prepared, Response<Body>> {
        if matches!(who, Caller::BadToken) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                None,
                "Invalid credentials in Authorization header",
            ));
        }
        let anonymous = matches!(who, Caller::Anonymous);
        match self.repos.get(id) {
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

    fn resolve_revision<'a>(&self, repo: &'a Prepared, rev: &str) -> Result<&'a str, Response<Body>> {
        if rev == "main" || rev == repo.commit || repo.repo.revisions.iter().any(|r| r == rev) {
            Ok(&repo.commit)
        } else {
            Err(error(
                StatusCode::NOT_FOUND,
                Some("RevisionNotFound"),
                &format!("Invalid rev id: {rev}"),
            ))
        }
    }
}

async fn hub_route(State(emu): State<Arc<Emu>>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let response = if emu.faults.down.load(Ordering::SeqCst) {
        error(StatusCode::SERVICE_UNAVAILABLE, None, "Service Unavailable")
    } else if take_count(&emu.faults.rate_limit_next) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, None, "Too many requests");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else {
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        route_hub(&emu, &parts.method, &parts.uri, &parts.headers, &body).await
    };
    emu.record(
        "hub",
        &parts.method,
        &uri,
        &parts.headers,
        response.status().as_u16(),
    );
    response
}

async fn route_hub(
    emu: &Arc<Emu>,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<Body> {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let query = Query::parse(uri.query());
    let who = caller(headers);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    if segments.first() == Some(&"api") && segments.get(1) == Some(&"models") {
        let delay = emu.faults.api_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if segments.len() == 2 || (segments.len() == 3 && segments[2].is_empty()) {
            return search(emu, &query, &host, uri.path(), &who);
        }
        if segments.len() < 4 {
            return error(StatusCode::NOT_FOUND, None, "Not Found");
        }
        let id = format!("{}/{}", decode(segments[2]), decode(segments[3]));
        if let Some(new) = emu.renamed.get(&id) {
            let rest = segments[4..].join("/");
            let location = format!(
                "/api/models/{new}{}{rest}",
                if rest.is_empty() { "" } else { "/" }
            );
            return redirect(StatusCode::TEMPORARY_REDIRECT, &location);
        }
        let repo = match emu.repo_for(&id, &who) {
            Ok(repo) => repo,
            Err(response) => return response,
        };
        let rest: Vec<String> = segments[4..].iter().map(|s| decode(s)).collect();
        return match rest.first().map(String::as_str) {
            None => info(emu, repo, "main", &query),
            Some("revision") if rest.len() == 2 => info(emu, repo, &rest[1], &query),
            Some("tree") if rest.len() >= 2 => {
                tree(emu, repo, &rest[1], &rest[2..].join("/"), &query, &host, uri)
            }
            Some("paths-info") if rest.len() == 2 && method == Method::POST => {
                paths_info(emu, repo, &rest[1], body)
            }
            _ => error(StatusCode::NOT_FOUND, None, "Not Found"),
        };
    }
    if segments.len() >= 5 && segments[2] == "resolve" {
        let id = format!("{}/{}", decode(segments[0]), decode(segments[1]));
        if let Some(new) = emu.renamed.get(&id) {
            let rest = segments[2..].join("/");
            return redirect(StatusCode::TEMPORARY_REDIRECT, &format!("/{new}/{rest}"));
        }
        let rev = decode(segments[3]);
        let path: Vec<String> = segments[4..].iter().map(|s| decode(s)).collect();
        return resolve(emu, &id, &rev, &path.join("/"), method, headers, &who);
    }
    error(StatusCode::NOT_FOUND, None, "Not Found")
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("Redirecting to {location}")));
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn page_cap(emu: &Emu) -> usize {
    match emu.faults.page_cap.load(Ordering::SeqCst) {
        0 => 1000,
        n => n,
    }
}

/// Paging: the slice at `cursor`, and the absolute `Link` to the next page when there is one.
fn page<T: Clone>(
    items: &[T],
    emu: &Emu,
    query: &Query,
    host: &str,
    path: &str,
    limit: Option<usize>,
) -> (Vec<T>, Option<String>) {
    let start: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
        .min(items.len());
    let size = limit.unwrap_or(usize::MAX).min(page_cap(emu));
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.0.iter().filter(|(k, _)| k != "cursor") {
            serializer.append_pair(k, v);
        }
        serializer.append_pair("cursor", &end.to_string());
        format!("<http://{host}{path}?{}>; rel=\"next\"", serializer.finish())
    });
    (items[start..end].to_vec(), next)
}

fn search(emu: &Emu, query: &Query, host: &str, path: &str, who: &Caller) -> Response<Body> {
    if matches!(who, Caller::BadToken) {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "Invalid credentials in Authorization header",
        );
    }
    let text = query.get("search").unwrap_or("").to_lowercase();
    let author = query.get("author");
    let filters = query.all("filter");
    let pipeline = query.get("pipeline_tag");
    let library = query.get("library");
    let mut hits: Vec<&Prepared> = emu
        .repos
        .values()
        .filter(|r| !r.repo.private || !matches!(who, Caller::Anonymous))
        .filter(|r| r.repo.id.to_lowercase().contains(&text))
        .filter(|r| author.is_none_or(|a| r.repo.id.split('/').next() == Some(a)))
        .filter(|r| {
            filters.iter().all(|f| {
                r.repo.tags.iter().any(|t| t == f) || r.repo.pipeline_tag == *f || r.repo.library_name == *f
            })
        })
        .filter(|r| pipeline.is_none_or(|p| r.repo.pipeline_tag == p))
        .filter(|r| library.is_none_or(|l| r.repo.library_name == l || r.repo.tags.iter().any(|t| t == l)))
        .collect();
    match query.get("sort") {
        Some("downloads") => hits.sort_by_key(|r| std::cmp::Reverse(r.repo.downloads)),
        Some("likes") => hits.sort_by_key(|r| std::cmp::Reverse(r.repo.likes)),
        _ => hits.sort_by(|a, b| {
            (b.repo.downloads + b.repo.likes * 10).cmp(&(a.repo.downloads + a.repo.likes * 10))
        }),
    }
    let limit = query.get("limit").and_then(|l| l.parse().ok());
    let full = query.flag("full");
    let items: Vec<Value> = hits.iter().map(|r| list_item(r, full)).collect();
    let (items, next) = page(&items, emu, query, host, path, limit);
    let mut response = json_response(&Value::Array(items));
    if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn gated_value(repo: &HubRepo) -> Value {
    if repo.gated { json!("manual") } else { json!(false) }
}

fn list_item(r: &Prepared, full: bool) -> Value {
    let repo = &r.repo;
    let mut item = json!({
        "_id": &r.commit[..24],
        "id": repo.id,
        "modelId": repo.id,
        "likes": repo.likes,
        "downloads": repo.downloads,
        "trendingScore": repo.likes,
        "private": repo.private,
        "tags": repo.tags,
        "createdAt": DATE,
    });
    if !repo.pipeline_tag.is_empty() {
        item["pipeline_tag"] = json!(repo.pipeline_tag);
    }
    if !repo.library_name.is_empty() {
        item["library_name"] = json!(repo.library_name);
    }
    if full {
        item["author"] = json!(repo.id.split('/').next().unwrap_or(""));
        item["sha"] = json!(r.commit);
        item["lastModified"] = json!(DATE);
        item["gated"] = gated_value(repo);
        item["disabled"] = json!(false);
        item["siblings"] = Value::Array(r.files.keys().map(|p| json!({ "rfilename": p })).collect());
    }
    item
}

fn info(emu: &Emu, r: &Prepared, rev: &str, query: &Query) -> Response<Body> {
    let commit = match emu.resolve_revision(r, rev) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let blobs = query.flag("blobs");
    let mut item = list_item(r, true);
    item["sha"] = json!(commit);
    item["cardData"] = r.repo.card_data.clone();
    item["spaces"] = json!([]);
    item["usedStorage"] = json!(r.files.values().map(|f| f.data.len() as u64).sum::<u64>());
    if let Some(summary) = &r.repo.safetensors {
        item["safetensors"] = summary.clone();
    }
    item["siblings"] = Value::Array(
        r.files
            .iter()
            .map(|(path, f)| {
                let mut s = json!({ "rfilename": path });
                if blobs {
                    s["blobId"] = json!(f.oid);
                    s["size"] = json!(f.data.len());
                    if f.lfs {
                        s["lfs"] =
                            json!({"sha256": f.sha256, "size": f.data.len(), "pointerSize": f.pointer_size});
                    }
                }
                s
            })
            .collect(),
    );
    json_response(&item)
}

fn tree_entry(path: &str, f: &PreparedFile) -> Value {
    let mut entry = json!({"type": "file", "oid": f.oid, "size": f.data.len(), "path": path});
    if f.lfs {
        entry["lfs"] = json!({"oid": f.sha256, "size": f.data.len(), "pointerSize": f.pointer_size});
    }
    entry
}

fn tree(
    emu: &Emu,
    r: &Prepared,
    rev: &str,
    under: &str,
    query: &Query,
    host: &str,
    uri: &axum::http::Uri,
) -> Response<Body> {
    if let Err(response) = emu.resolve_revision(r, rev) {
        return response;
    }
    let recursive = query.flag("recursive");
    let prefix = if under.is_empty() {
        String::new()
    } else {
        format!("{}/", under.trim_end_matches('/'))
    };
    if !under.is_empty() && !r.files.keys().any(|p| p.starts_with(&prefix)) {
        return error(StatusCode::NOT_FOUND, Some("EntryNotFound"), "Entry not found");
    }
    let mut entries = Vec::new();
    let mut dirs = BTreeSet::new();
    for (path, f) in r.files.iter().filter(|(p, _)| p.starts_with(&prefix)) {
        let rest = &path[prefix.len()..];
        let folders: Vec<&str> = rest.split('/').collect();
        for depth in 1..folders.len() {
            if recursive || depth == 1 {
                dirs.insert(format!("{prefix}{}", folders[..depth].join("/")));
            }
        }
        if recursive || folders.len() == 1 {
            entries.push(tree_entry(path, f));
        }
    }
    for dir in dirs {
        let oid = git_sha1_hex(dir.as_bytes());
        entries.push(json!({"type": "directory", "oid": oid, "size": 0, "path": dir}));
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    let (items, next) = page(&entries, emu, query, host, uri.path(), None);
    let mut response = json_response(&Value::Array(items));
    if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn paths_info(emu: &Emu, r: &Prepared, rev: &str, body: &Bytes) -> Response<Body> {
    if let Err(response) = emu.resolve_revision(r, rev) {
        return response;
    }
    let form = Query::parse(std::str::from_utf8(body).ok());
    let entries: Vec<Value> = form
        .all("paths")
        .into_iter()
        .filter_map(|p| r.files.get(p).map(|f| tree_entry(p, f)))
        .collect();
    json_response(&Value::Array(entries))
}

fn resolve(
    emu: &Emu,
    id: &str,
    rev: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    who: &Caller,
) -> Response<Body> {
    let r = match emu.repo_for(id, who) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let commit = match emu.resolve_revision(r, rev) {
        Ok(c) => c.to_owned(),
        Err(response) => return response,
    };
    if r.repo.gated {
        match who {
            Caller::Anonymous => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    Some("GatedRepo"),
                    &format!(
                        "Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."
                    ),
                );
            }
            Caller::Token { approved: false } => {
                return error(
                    StatusCode::FORBIDDEN,
                    Some("GatedRepo"),
                    &format!("Access to model {id} is restricted and you are not in the authorized list."),
                );
            }
            _ => {}
        }
    }
    let Some(file) = r.files.get(path) else {
        let mut response = error(StatusCode::NOT_FOUND, Some("EntryNotFound"), "Entry not found");
        if let Ok(v) = HeaderValue::from_str(&commit) {
            response.headers_mut().insert("x-repo-commit", v);
        }
        return response;
    };
    let etag = format!("\"{}\"", file.oid);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag || (file.lfs && v.trim_matches('"') == file.sha256))
    {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if file.lfs {
        let name = path.rsplit('/').next().unwrap_or(path);
        let location = format!(
            "{}/repos/{}?response-content-disposition=inline%3B%20filename%3D{}&X-Expires=4102444800",
            emu.cdn_url,
            file.sha256,
            url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
        );
        let mut r = redirect(StatusCode::FOUND, &location);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", file.sha256)) {
            h.insert("x-linked-etag", v);
        }
        h.insert("x-linked-size", HeaderValue::from(file.data.len() as u64));
        r
    } else {
        content(emu, &file.data, method, headers)
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&commit) {
        h.insert("x-repo-commit", v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

async fn cdn_route(State(emu): State<Arc<Emu>>, request: Request<Body>) -> Response<Body> {
    let (parts, _) = request.into_parts();
    let segments: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
    let response = match (
        segments.as_slice(),
        emu.blobs.get(segments.get(1).copied().unwrap_or("")),
    ) {
        (["repos", _], Some(data)) => content(&emu, data, &parts.method, &parts.headers),
        _ => error(StatusCode::NOT_FOUND, None, "NoSuchKey"),
    };
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    emu.record(
        "cdn",
        &parts.method,
        &uri,
        &parts.headers,
        response.status().as_u16(),
    );
    response
}

/// A file body honoring Range (one range), with the configured faults and throttle.
fn content(emu: &Emu, data: &Bytes, method: &Method, headers: &HeaderMap) -> Response<Body> {
    let total = data.len() as u64;
    let range = if emu.faults.ignore_range.load(Ordering::SeqCst) {
        None
    } else {
        headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| parse_range(v, total))
    };
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, total),
        Some(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(None) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let slice = data.slice(start as usize..end as usize);
    let length = slice.len() as u64;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        body_stream(emu, slice)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end.saturating_sub(1)))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` as a half-open range; None when unsatisfiable.
fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?.split(',').next()?.trim();
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (total.saturating_sub(n), total)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            total
        } else {
            (b.parse::<u64>().ok()? + 1).min(total)
        };
        (start, end)
    };
    (start < end && start < total).then_some((start, end))
}

struct BodyState {
    data: Bytes,
    pos: usize,
    started: Instant,
    rate: u64,
    cut: u64,
    stall: u64,
    corrupt: bool,
    counter: Arc<AtomicU64>,
    failed: bool,
}

fn body_stream(emu: &Emu, data: Bytes) -> Body {
    let faults = &emu.faults;
    let state = BodyState {
        data,
        pos: 0,
        started: Instant::now(),
        rate: faults.throttle_bytes_per_second.load(Ordering::SeqCst),
        cut: take_one_shot(&faults.cut_after_bytes),
        stall: take_one_shot(&faults.stall_after_bytes),
        corrupt: take_count(&faults.corrupt_next),
        counter: Arc::clone(&emu.body_bytes),
        failed: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.failed || s.pos >= s.data.len() {
            return None;
        }
        let pos = s.pos as u64;
        if s.cut > 0 && pos >= s.cut {
            s.failed = true;
            return Some((Err(std::io::Error::other("connection cut by the emulator")), s));
        }
        if s.stall > 0 && pos >= s.stall {
            std::future::pending::<()>().await;
        }
        let mut len = (s.data.len() - s.pos).min(64 * 1024) as u64;
        for limit in [s.cut, s.stall] {
            if limit > pos {
                len = len.min(limit - pos);
            }
        }
        if s.rate > 0 {
            let due = Duration::from_secs_f64((pos + len) as f64 / s.rate as f64);
            let elapsed = s.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        let mut chunk = s.data.slice(s.pos..s.pos + len as usize);
        if s.corrupt && s.pos == 0 {
            let mut owned = chunk.to_vec();
            if let Some(b) = owned.first_mut() {
                *b ^= 0xff;
            }
            chunk = Bytes::from(owned);
        }
        s.pos += len as usize;
        s.counter.fetch_add(len, Ordering::SeqCst);
        Some((Ok::<Bytes, std::io::Error>(chunk), s))
    });
    Body::from_stream(stream)
}
