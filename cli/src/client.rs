//! Client subcommands: they talk to a running suite.

use std::process::ExitCode;
use std::time::Duration;

use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{BackendState, GetServiceInfoRequest};
use pumas_runtime::client::connect_lazy;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Where the gateway is, and how to talk to it.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Gateway address.
    #[arg(long, env = "PUMAS_GATEWAY", default_value = "127.0.0.1:50051")]
    pub gateway: String,
    /// API bearer token, when the gateway requires one. A flag or environment value is visible
    /// to other users of this machine: prefer --token-file.
    #[arg(long, env = "PUMAS_API_TOKEN", hide_env_values = true)]
    pub token: Option<pumas_runtime::Secret>,
    /// File whose first line is the API token (e.g. the gateway's generated
    /// <data root>/launcher-data/secrets/api-token).
    #[arg(long, env = "PUMAS_API_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// TLS to the gateway (its CA, and a client certificate for mutual TLS).
    #[command(flatten)]
    pub tls: pumas_runtime::tls::ClientTlsArgs,
}

/// Adds trace context and the bearer token to every call.
#[derive(Clone)]
pub struct Outgoing {
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Outgoing {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = pumas_runtime::telemetry::TraceContextInjector.call(request)?;
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A client of the gateway.
pub type GatewayClient = ModelLibraryServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Outgoing>,
>;

impl GatewayArgs {
    /// A client that reaches the gateway with these settings.
    pub fn client(&self) -> anyhow::Result<GatewayClient> {
        self.tls.install()?;
        let secret = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(
                pumas_runtime::Secret::from_file(path)
                    .map_err(|e| anyhow::anyhow!("cannot read the API token file {}: {e}", path.display()))?
                    .ok_or_else(|| anyhow::anyhow!("the API token file {} is empty", path.display()))?,
            ),
            (None, None) => None,
        };
        let encrypted = self.gateway.starts_with("https://") || pumas_runtime::tls::peer_tls().is_some();
        if secret.is_some() && !encrypted && !is_loopback(&self.gateway) {
            anyhow::bail!(
                "refusing to send the API token in plain text to {}: give the gateway's CA (--peer-ca) \
                 or an https:// address, or reach it over loopback (an SSH tunnel)",
                self.gateway
            );
        }
        let token = match secret {
            Some(t) => Some(format!("Bearer {}", t.expose()).parse().map_err(|_| {
                anyhow::anyhow!("the API token contains characters that cannot be sent in a header")
            })?),
            None => None,
        };
        let channel = pumas_runtime::client::channel_lazy(&self.gateway)?;
        Ok(ModelLibraryServiceClient::with_interceptor(
            channel,
            Outgoing { token },
        ))
    }
}

/// Whether `address` (`host:port`, or a URI) names this machine's loopback.
fn is_loopback(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_addresses() {
        for a in [
            "127.0.0.1:50051",
            "localhost:1",
            "[::1]:50051",
            "http://127.0.0.1:9/",
            "127.0.0.2:1",
        ] {
            assert!(super::is_loopback(a), "{a}");
        }
        for a in [
            "10.0.0.5:50051",
            "gpu-box:50051",
            "http://example.com:80",
            "[fe80::1]:5",
        ] {
            assert!(!super::is_loopback(a), "{a}");
        }
    }
}

/// Flags of `pumas healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Address of the service, e.g. 127.0.0.1:50051.
    addr: String,
    /// Service name to check, e.g. pumas.gateway.v1.ModelLibraryService ("" = the whole server).
    #[arg(default_value = "")]
    service: String,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// TLS to the service.
    #[command(flatten)]
    tls: pumas_runtime::tls::ClientTlsArgs,
}

pub async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    args.tls.install()?;
    let channel = connect_lazy(&args.addr)?;
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: args.service.clone(),
    };
    let shown = if args.service.is_empty() {
        "server"
    } else {
        args.service.as_str()
    };
    let answer = tokio::time::timeout(Duration::from_millis(args.timeout_ms), client.check(request)).await;
    match answer {
        Err(_) => {
            eprintln!(
                "{shown} at {}: no answer within {} ms",
                args.addr, args.timeout_ms
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(status)) => {
            eprintln!(
                "{shown} at {}: {} ({:?})",
                args.addr,
                status.message(),
                status.code()
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Ok(response)) => {
            let status =
                ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
            println!("{shown} at {}: {}", args.addr, status.as_str_name());
            Ok(if status == ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

pub async fn status(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.client()?;
    let info = client.get_service_info(GetServiceInfoRequest {}).await.map_err(|status| {
        anyhow::anyhow!(
            "cannot reach the gateway at {}: {} (start the suite with `pumas up`, or point --gateway / PUMAS_GATEWAY at it)",
            args.gateway,
            status.message()
        )
    })?;
    let info = info.into_inner();
    if let Some(gateway) = &info.info {
        println!(
            "gateway  {}  version {}  dependency contract v{}",
            args.gateway, gateway.version, gateway.dependency_contract_version
        );
    }
    let mut all_serving = true;
    for backend in &info.backends {
        let state = BackendState::try_from(backend.state).unwrap_or(BackendState::Unspecified);
        all_serving &= state == BackendState::Serving;
        let state_name = state
            .as_str_name()
            .trim_start_matches("BACKEND_STATE_")
            .to_lowercase();
        let reason = if backend.reason.is_empty() {
            String::new()
        } else {
            format!("  ({})", backend.reason)
        };
        println!(
            "  {:<7} {:<10} {:<22} {state_name}{reason}",
            backend.role, backend.name, backend.address
        );
    }
    Ok(if all_serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
