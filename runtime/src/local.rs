//! Calls between roles of one process (`pumas up`) without the network. A server registers its
//! whole call stack (service-token check, readiness gate, limits, tracing, metrics, the closing
//! of streams at shutdown) under the address it listens on; a [`Link`] to that address then
//! hands each request to that stack directly: the same protobuf messages and the same checks,
//! with no HTTP/2 framing, socket or connection task between them. Everything else reaches the
//! role through its port as before: other processes, other hosts, `grpcurl`.
//!
//! Not used with TLS: there, a caller's identity is its client certificate, which only a real
//! connection carries.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::Channel;
use tower::{BoxError, Service, ServiceExt as _};

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

/// A server's call stack, as registered.
pub type LocalService = tower::util::BoxCloneSyncService<HttpRequest, HttpResponse, BoxError>;

static SERVERS: LazyLock<RwLock<HashMap<String, LocalService>>> = LazyLock::new(Default::default);
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Whether calls in this process may skip the network (not with TLS: see the module).
fn enabled() -> bool {
    crate::tls::server_tls().is_none() && crate::tls::peer_tls().is_none()
}

/// Registers the stack of the server listening on `address` until the returned guard drops.
pub fn register(address: String, service: LocalService) -> Option<Registration> {
    if !enabled() {
        return None;
    }
    let mut servers = SERVERS.write().ok()?;
    servers.insert(address.clone(), service);
    Some(Registration { address })
}

/// While it lives, its server answers in-process calls; dropped when the server stops taking
/// calls, so later calls go to the port (and find it closed: UNAVAILABLE).
#[derive(Debug)]
pub struct Registration {
    address: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut servers) = SERVERS.write() {
            servers.remove(&self.address);
        }
    }
}

/// How many calls were answered in process (for tests and diagnostics).
pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

fn lookup(address: &str) -> Option<LocalService> {
    let servers = SERVERS.read().ok()?;
    if servers.is_empty() {
        return None;
    }
    let key = address
        .strip_prefix("http://")
        .unwrap_or(address)
        .trim_end_matches('/');
    servers.get(key).cloned()
}

/// A channel to another role: in process when that role runs in this process, else the
/// network channel.
#[derive(Clone, Debug)]
pub struct Link {
    address: String,
    channel: Channel,
    /// The in-process stack picked when the call was made ready.
    local: Option<LocalService>,
}

impl Link {
    /// A link to `address` over `channel` (used when the role is not in this process).
    pub fn new(address: &str, channel: Channel) -> Self {
        Self {
            address: address.to_owned(),
            channel,
            local: None,
        }
    }
}

impl Service<HttpRequest> for Link {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.local.is_none() {
            self.local = lookup(&self.address);
        }
        if self.local.is_some() {
            return Poll::Ready(Ok(()));
        }
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        match self.local.take() {
            Some(service) => {
                CALLS.fetch_add(1, Ordering::Relaxed);
                Box::pin(call_local(service, request))
            }
            None => {
                let call = self.channel.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
        }
    }
}

/// One call through a registered stack, within the caller's `grpc-timeout` (what the server's
/// transport would enforce).
async fn call_local(service: LocalService, request: HttpRequest) -> Result<HttpResponse, BoxError> {
    let deadline = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout);
    let answer = service.oneshot(request);
    let answer = match deadline {
        Some(deadline) => match tokio::time::timeout(deadline, answer).await {
            Ok(answer) => answer,
            Err(_) => {
                return Ok(
                    tonic::Status::deadline_exceeded("the call's deadline passed before the answer")
                        .into_http(),
                );
            }
        },
        None => answer.await,
    };
    // What the transport server would send for a stack's error: load shedding is "no capacity".
    Ok(answer.unwrap_or_else(|err| {
        if err.is::<tower::timeout::error::Elapsed>() {
            tonic::Status::deadline_exceeded("the call took longer than the server allows").into_http()
        } else if err.is::<tower::load_shed::error::Overloaded>() {
            tonic::Status::resource_exhausted("too many calls at once; try again shortly").into_http()
        } else {
            tonic::Status::unavailable(err.to_string()).into_http()
        }
    }))
}

/// A `grpc-timeout` header's value (`<digits><unit>`, unit one of H M S m u n).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A server's stack as a [`LocalService`].
pub fn boxed<S>(service: S) -> LocalService
where
    S: Service<HttpRequest, Response = HttpResponse> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    tower::util::BoxCloneSyncService::new(service.map_err(Into::into))
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout("10x"), None);
        assert_eq!(grpc_timeout(""), None);
    }
}
