//! The `ServiceInfo` every service answers in `GetServiceInfo`.

use std::time::SystemTime;

use pumas_proto::DEPENDENCY_CONTRACT_VERSION;
use pumas_proto::common::v1::ServiceInfo;

/// Version of this build (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the `ServiceInfo` of a service that started at `start_time`.
pub fn service_info(name: &str, api_services: &[&str], start_time: SystemTime) -> ServiceInfo {
    ServiceInfo {
        name: name.to_owned(),
        version: VERSION.to_owned(),
        dependency_contract_version: DEPENDENCY_CONTRACT_VERSION,
        api_services: api_services.iter().map(|s| (*s).to_owned()).collect(),
        start_time: Some(start_time.into()),
        hostname: hostname(),
    }
}

/// This machine's host name, best effort (empty when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}
