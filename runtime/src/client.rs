//! Channels from one Pumas service to another.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::ApiError;
use crate::telemetry::TraceContextInjector;

/// A channel that sends the caller's trace context with every call, in process when the callee
/// runs in this process ([`crate::local`]).
pub type TracedChannel = InterceptedService<crate::local::Link, TraceContextInjector>;

/// How long a connection attempt to another service may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an HTTP/2 ping checks that a connection to another service is alive.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection counts as dead.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazily connected channel to `address` (`host:port` or a full `http(s)://` URI). It connects
/// on first use and reconnects by itself after the peer restarts.
pub fn connect_lazy(address: &str) -> Result<TracedChannel, ApiError> {
    Ok(InterceptedService::new(
        crate::local::Link::new(address, channel_lazy(address)?),
        TraceContextInjector,
    ))
}

/// The plain channel behind [`connect_lazy`], for callers that add their own interceptor.
pub fn channel_lazy(address: &str) -> Result<Channel, ApiError> {
    let tls = crate::tls::peer_tls();
    let uri = if address.contains("://") {
        address.to_owned()
    } else if tls.is_some() {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|err| ApiError::invalid("address", format!("`{address}` is not a valid address: {err}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // A peer that vanished without closing (host down, link cut) is noticed within
        // KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT: calls fail UNAVAILABLE instead of waiting
        // for their deadline, and the next call dials afresh.
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|err| ApiError::invalid("address", format!("TLS for `{address}`: {err}")))?;
    }
    Ok(endpoint.connect_lazy())
}
