//! The gateway's backends: one client each, and a monitor that checks that every backend is up
//! and speaks our dependency contract version, reflecting the result in the gateway's health.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pumas_proto::DEPENDENCY_CONTRACT_VERSION;
use pumas_proto::common::v1::ServiceInfo;
use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
use pumas_proto::gateway::v1::{Backend, BackendState};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::mapper::v1::mapper_service_client::MapperServiceClient;
use pumas_runtime::ApiError;
use pumas_runtime::client::{TracedChannel, connect_lazy};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::{Config, SERVICE_NAME};

/// How long one backend check may take before the backend counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Clients of every backend, and what the last check found.
pub struct Backends {
    /// The index service.
    pub index: IndexServiceClient<TracedChannel>,
    /// The fetch service.
    pub fetch: FetchServiceClient<TracedChannel>,
    /// Mappers by name.
    pub mappers: BTreeMap<String, MapperServiceClient<TracedChannel>>,
    addresses: Vec<(String, String, String)>,
    status: RwLock<Vec<Backend>>,
}

impl Backends {
    /// Clients for the configured addresses; nothing is dialled until first use.
    pub fn connect(config: &Config) -> Result<Self, ApiError> {
        let mut addresses = vec![
            ("index".to_owned(), "index".to_owned(), config.index_addr.clone()),
            ("fetch".to_owned(), "fetch".to_owned(), config.fetch_addr.clone()),
        ];
        let mut mappers = BTreeMap::new();
        for mapper in &config.mappers {
            if mappers.contains_key(&mapper.name) {
                return Err(ApiError::invalid(
                    "mapper",
                    format!("mapper `{}` is configured twice", mapper.name),
                ));
            }
            mappers.insert(
                mapper.name.clone(),
                MapperServiceClient::new(connect_lazy(&mapper.address)?),
            );
            addresses.push(("mapper".to_owned(), mapper.name.clone(), mapper.address.clone()));
        }
        let status = addresses
            .iter()
            .map(|(role, name, address)| Backend {
                role: role.clone(),
                name: name.clone(),
                address: address.clone(),
                state: BackendState::Unreachable as i32,
                reason: "not checked yet".to_owned(),
                info: None,
            })
            .collect();
        Ok(Self {
            index: IndexServiceClient::new(connect_lazy(&config.index_addr)?),
            fetch: FetchServiceClient::new(connect_lazy(&config.fetch_addr)?),
            mappers,
            addresses,
            status: RwLock::new(status),
        })
    }

    /// What the last check found, index and fetch first, then mappers by name.
    pub fn status(&self) -> Vec<Backend> {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Checks every backend once, concurrently.
    pub async fn probe(&self) -> Vec<Backend> {
        let checks = self.addresses.iter().map(|(role, name, address)| async move {
            let answer = tokio::time::timeout(PROBE_TIMEOUT, self.service_info(role, name)).await;
            let (state, reason, info) = match answer {
                Err(_) => (
                    BackendState::Unreachable,
                    format!("no answer within {PROBE_TIMEOUT:?}"),
                    None,
                ),
                Ok(Err(status)) => (BackendState::Unreachable, describe(&status), None),
                Ok(Ok(info)) if info.dependency_contract_version != DEPENDENCY_CONTRACT_VERSION => (
                    BackendState::Incompatible,
                    format!(
                        "speaks dependency contract version {}, this gateway speaks {}",
                        info.dependency_contract_version, DEPENDENCY_CONTRACT_VERSION
                    ),
                    Some(info),
                ),
                Ok(Ok(info)) => (BackendState::Serving, String::new(), Some(info)),
            };
            Backend {
                role: role.clone(),
                name: name.clone(),
                address: address.clone(),
                state: state as i32,
                reason,
                info,
            }
        });
        let found = futures_util::future::join_all(checks).await;
        if let Ok(mut status) = self.status.write() {
            status.clone_from(&found);
        }
        found
    }

    async fn service_info(&self, role: &str, name: &str) -> Result<ServiceInfo, tonic::Status> {
        let info = match role {
            "index" => {
                let request = pumas_proto::index::v1::GetServiceInfoRequest {};
                self.index
                    .clone()
                    .get_service_info(request)
                    .await?
                    .into_inner()
                    .info
            }
            "fetch" => {
                let request = pumas_proto::fetch::v1::GetServiceInfoRequest {};
                self.fetch
                    .clone()
                    .get_service_info(request)
                    .await?
                    .into_inner()
                    .info
            }
            _ => {
                let mut client = self
                    .mappers
                    .get(name)
                    .cloned()
                    .ok_or_else(|| tonic::Status::not_found(format!("no mapper named {name}")))?;
                let request = pumas_proto::mapper::v1::GetServiceInfoRequest {};
                client.get_service_info(request).await?.into_inner().info
            }
        };
        info.ok_or_else(|| tonic::Status::data_loss("GetServiceInfo answered without info"))
    }
}

/// A short, human reason for a failed check.
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    if text.is_empty() {
        format!("{:?}", status.code())
    } else {
        text
    }
}

/// How long backends may take to come up before the wait is a warning.
const SLOW_START: Duration = Duration::from_secs(60);

/// Checks the backends every `interval` until `stop` resolves, and keeps the gateway's health in
/// step: SERVING while every backend serves our contract version, NOT_SERVING otherwise.
pub async fn monitor(
    backends: Arc<Backends>,
    health: HealthReporter,
    interval: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving: Option<bool> = None;
    // At start, backends that are not serving yet are starting (the index may be rebuilding
    // models.db): said at INFO, and at WARN only if it lasts.
    let started = std::time::Instant::now();
    let mut warned_slow_start = false;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let found = backends.probe().await;
        let down: Vec<String> = found
            .iter()
            .filter(|b| b.state != BackendState::Serving as i32)
            .map(|b| format!("{} ({}) at {}: {}", b.name, b.role, b.address, b.reason))
            .collect();
        let now_serving = down.is_empty();
        if serving != Some(now_serving) {
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(SERVICE_NAME, status).await;
            health.set_service_status("", status).await;
            if now_serving {
                warned_slow_start = true; // started: later outages warn as they happen
                tracing::info!("all backends serving; gateway SERVING");
            } else if serving.is_none() {
                tracing::info!(backends = %down.join("; "), "waiting for backends; gateway NOT_SERVING meanwhile");
            } else {
                tracing::warn!(backends = %down.join("; "), "gateway NOT_SERVING");
            }
            serving = Some(now_serving);
        } else if serving == Some(false) && !warned_slow_start && started.elapsed() > SLOW_START {
            warned_slow_start = true;
            tracing::warn!(backends = %down.join("; "), "backends still not serving {}s after start; gateway NOT_SERVING", SLOW_START.as_secs());
        }
    }
}
