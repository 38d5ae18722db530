//! Faults and throttles tests flip while the emulator runs, and the log of every request it
//! answered. The hub origin's gate (down, rate limited) and the log are axum middleware.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use axum::middleware::Next;

use super::{Emu, error};

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

pub(super) fn take_one_shot(value: &AtomicU64) -> u64 {
    value.swap(0, Ordering::SeqCst)
}

pub(super) fn take_count(value: &AtomicU32) -> bool {
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
}

fn path_and_query(request: &Request) -> String {
    request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default()
}

/// The hub origin: down or rate limited when a test says so, and every answer logged.
pub(super) async fn hub_gate(State(emu): State<Arc<Emu>>, request: Request, next: Next) -> Response<Body> {
    let (method, uri, headers) = (
        request.method().clone(),
        path_and_query(&request),
        request.headers().clone(),
    );
    let response = if emu.faults.down.load(Ordering::SeqCst) {
        error(StatusCode::SERVICE_UNAVAILABLE, None, "Service Unavailable")
    } else if take_count(&emu.faults.rate_limit_next) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, None, "Too many requests");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else {
        next.run(request).await
    };
    emu.record("hub", &method, &uri, &headers, response.status().as_u16());
    response
}

/// The CDN origin: every answer logged.
pub(super) async fn cdn_log(State(emu): State<Arc<Emu>>, request: Request, next: Next) -> Response<Body> {
    let (method, uri, headers) = (
        request.method().clone(),
        path_and_query(&request),
        request.headers().clone(),
    );
    let response = next.run(request).await;
    emu.record("cdn", &method, &uri, &headers, response.status().as_u16());
    response
}
