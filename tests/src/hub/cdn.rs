//! Files: `resolve` on the hub origin (small files inline, LFS files redirected to the CDN with
//! `X-Linked-*` headers) and the CDN origin's blobs, both honoring one Range and the faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use axum::routing::get;
use bytes::Bytes;

use super::faults::{take_count, take_one_shot};
use super::{Call, Caller, Emu, error, redirect};

/// `resolve` on the hub origin.
pub(super) fn resolve_routes() -> Router<Arc<Emu>> {
    Router::new().route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve_route))
}

/// The CDN origin: LFS blobs by sha256.
pub(super) fn cdn_routes() -> Router<Arc<Emu>> {
    Router::new().route("/repos/{blob}", get(blob_route))
}

async fn resolve_route(
    call: Call,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
) -> Response<Body> {
    let id = format!("{org}/{name}");
    if let Some(new) = call.emu.renamed.get(&id) {
        let location = call.uri.path().replacen(&id, new, 1);
        return redirect(StatusCode::TEMPORARY_REDIRECT, &location);
    }
    resolve(
        &call.emu,
        &id,
        &rev,
        &path,
        &call.method,
        &call.headers,
        &call.who,
    )
}

async fn blob_route(
    State(emu): State<Arc<Emu>>,
    Path(blob): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    let data = emu.blobs.read().ok().and_then(|b| b.get(&blob).cloned());
    match data {
        Some(data) => content(&emu, &data, &method, &headers),
        None => error(StatusCode::NOT_FOUND, None, "NoSuchKey"),
    }
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
    let r = match emu.at(r, rev) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let commit = r.commit.clone();
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
