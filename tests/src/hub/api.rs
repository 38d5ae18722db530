//! The hub's JSON API as the official clients call it: search (`/api/models`), model info (at
//! a revision), the file tree and `paths-info`, with the hub's cursor paging in `Link` headers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use super::repos::{HubRepo, Prepared, PreparedFile, git_sha1_hex};
use super::{Call, Caller, DATE, Emu, Query, error, json_response};

/// The API routes of the hub origin.
pub(super) fn routes() -> Router<Arc<Emu>> {
    Router::new()
        .route("/api/models", get(search_route))
        .route("/api/models/", get(search_route))
        .route("/api/models/{org}/{name}", get(info_route))
        .route("/api/models/{org}/{name}/revision/{rev}", get(info_at_route))
        .route("/api/models/{org}/{name}/tree/{rev}", get(tree_root_route))
        .route("/api/models/{org}/{name}/tree/{rev}/{*under}", get(tree_route))
        .route(
            "/api/models/{org}/{name}/paths-info/{rev}",
            post(paths_info_route),
        )
}

impl Call {
    /// Waits the configured API delay, then finds the repository.
    async fn repo(&self, org: &str, name: &str) -> Result<Arc<Prepared>, Response<Body>> {
        let delay = self.emu.faults.api_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        self.emu.lookup(&format!("{org}/{name}"), &self.who, &self.uri)
    }
}

async fn search_route(call: Call) -> Response<Body> {
    let delay = call.emu.faults.api_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    search(&call.emu, &call.query, &call.host, call.uri.path(), &call.who)
}

async fn info_route(call: Call, Path((org, name)): Path<(String, String)>) -> Response<Body> {
    match call.repo(&org, &name).await {
        Ok(repo) => info(&call.emu, repo, "main", &call.query),
        Err(response) => response,
    }
}

async fn info_at_route(call: Call, Path((org, name, rev)): Path<(String, String, String)>) -> Response<Body> {
    match call.repo(&org, &name).await {
        Ok(repo) => info(&call.emu, repo, &rev, &call.query),
        Err(response) => response,
    }
}

async fn tree_root_route(
    call: Call,
    Path((org, name, rev)): Path<(String, String, String)>,
) -> Response<Body> {
    match call.repo(&org, &name).await {
        Ok(repo) => tree(&call, repo, &rev, ""),
        Err(response) => response,
    }
}

async fn tree_route(
    call: Call,
    Path((org, name, rev, under)): Path<(String, String, String, String)>,
) -> Response<Body> {
    match call.repo(&org, &name).await {
        Ok(repo) => tree(&call, repo, &rev, &under),
        Err(response) => response,
    }
}

async fn paths_info_route(
    call: Call,
    Path((org, name, rev)): Path<(String, String, String)>,
    body: Bytes,
) -> Response<Body> {
    match call.repo(&org, &name).await {
        Ok(repo) => paths_info(&call.emu, repo, &rev, &body),
        Err(response) => response,
    }
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
    let all: Vec<Arc<Prepared>> = emu
        .repos
        .read()
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default();
    let mut hits: Vec<&Prepared> = all
        .iter()
        .map(|r| &**r)
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

fn info(emu: &Emu, r: Arc<Prepared>, rev: &str, query: &Query) -> Response<Body> {
    let r = match emu.at(r, rev) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let commit = r.commit.clone();
    let blobs = query.flag("blobs");
    let mut item = list_item(&r, true);
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

pub(super) fn tree_entry(path: &str, f: &PreparedFile) -> Value {
    let mut entry = json!({"type": "file", "oid": f.oid, "size": f.data.len(), "path": path});
    if f.lfs {
        entry["lfs"] = json!({"oid": f.sha256, "size": f.data.len(), "pointerSize": f.pointer_size});
    }
    entry
}

fn tree(call: &Call, r: Arc<Prepared>, rev: &str, under: &str) -> Response<Body> {
    let (emu, query) = (&*call.emu, &call.query);
    let r = match emu.at(r, rev) {
        Ok(r) => r,
        Err(response) => return response,
    };
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
    let (items, next) = page(&entries, emu, query, &call.host, call.uri.path(), None);
    let mut response = json_response(&Value::Array(items));
    if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn paths_info(emu: &Emu, r: Arc<Prepared>, rev: &str, body: &Bytes) -> Response<Body> {
    let r = match emu.at(r, rev) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let form = Query::parse(std::str::from_utf8(body).ok());
    let entries: Vec<Value> = form
        .all("paths")
        .into_iter()
        .filter_map(|p| r.files.get(p).map(|f| tree_entry(p, f)))
        .collect();
    json_response(&Value::Array(entries))
}
