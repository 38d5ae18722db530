//! The gateway follows its backends: NOT_SERVING (with the reason) while one is down or speaks
//! another contract version, SERVING again once it is back — without a restart.

use std::time::Duration;

use pumas_e2e::*;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{Backend, BackendState};
use tonic_health::pb::health_check_response::ServingStatus;

const WAIT: Duration = Duration::from_secs(30);

async fn backends(gateway: &str) -> anyhow::Result<Vec<Backend>> {
    Ok(ModelLibraryServiceClient::new(channel(gateway).await?)
        .get_service_info(pumas_proto::gateway::v1::GetServiceInfoRequest {})
        .await?
        .into_inner()
        .backends)
}

async fn start_backends(dir: &std::path::Path) -> anyhow::Result<Vec<(Process, String)>> {
    let root = dir.join("root");
    let root = root.to_str().unwrap_or_default().to_owned();
    let mut started = Vec::new();
    for role in ["index", "fetch", "mapper"] {
        started.push(serve_role(role, "127.0.0.1:0", &["--data-root", &root], dir).await?);
    }
    Ok(started)
}

#[tokio::test]
async fn gateway_goes_not_serving_while_a_backend_is_down_and_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut backends_up = start_backends(dir.path()).await?;
    let index_addr = backends_up[0].1.clone();
    let (fetch_addr, mapper_addr) = (backends_up[1].1.clone(), backends_up[2].1.clone());
    let mapper_arg = format!("local={mapper_addr}");
    let (_gateway, gateway_addr) = serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            &index_addr,
            "--fetch",
            &fetch_addr,
            "--mapper",
            &mapper_arg,
            "--backend-check-ms",
            "100",
        ],
        dir.path(),
    )
    .await?;
    wait_for_health(&gateway_addr, GATEWAY_SERVICE, ServingStatus::Serving, WAIT).await?;

    // Stop the index the hard way.
    let (index, _) = backends_up.remove(0);
    index.kill().await?;
    wait_for_health(&gateway_addr, GATEWAY_SERVICE, ServingStatus::NotServing, WAIT).await?;
    assert_eq!(health(&gateway_addr, "").await?, ServingStatus::NotServing);
    let seen = backends(&gateway_addr).await?;
    let index_state = seen
        .iter()
        .find(|b| b.role == "index")
        .expect("index backend listed");
    assert_eq!(index_state.state, BackendState::Unreachable as i32);
    assert!(!index_state.reason.is_empty(), "the reason is reported");
    // The others are still fine, and the gateway itself still answers.
    assert!(
        seen.iter()
            .filter(|b| b.role != "index")
            .all(|b| b.state == BackendState::Serving as i32)
    );

    // Bring the index back on the same address: the gateway recovers by itself.
    let root = dir.path().join("root");
    let (_index_again, addr_again) = serve_role(
        "index",
        &index_addr,
        &["--data-root", root.to_str().unwrap_or_default()],
        dir.path(),
    )
    .await?;
    assert_eq!(addr_again, index_addr);
    wait_for_health(&gateway_addr, GATEWAY_SERVICE, ServingStatus::Serving, WAIT).await?;
    assert!(
        backends(&gateway_addr)
            .await?
            .iter()
            .all(|b| b.state == BackendState::Serving as i32)
    );
    Ok(())
}

#[tokio::test]
async fn gateway_refuses_a_backend_with_another_contract_version() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = pumas_e2e::fakes::FakeIndex {
        contract_version: 2,
        ..Default::default()
    }
    .start()
    .await?;
    let fake_addr = fake.addr.clone();

    let mut others = Vec::new();
    let root = dir.path().join("root");
    let root = root.to_str().unwrap_or_default().to_owned();
    for role in ["fetch", "mapper"] {
        others.push(serve_role(role, "127.0.0.1:0", &["--data-root", &root], dir.path()).await?);
    }
    let mapper_arg = format!("local={}", others[1].1);
    let (_gateway, gateway_addr) = serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            &fake_addr,
            "--fetch",
            &others[0].1,
            "--mapper",
            &mapper_arg,
            "--backend-check-ms",
            "100",
        ],
        dir.path(),
    )
    .await?;
    // Wait for a check to have happened, then expect NOT_SERVING with the version in the reason.
    let deadline = tokio::time::Instant::now() + WAIT;
    let index = loop {
        let seen = backends(&gateway_addr).await?;
        let index = seen
            .into_iter()
            .find(|b| b.role == "index")
            .expect("index listed");
        if index.state == BackendState::Incompatible as i32 || tokio::time::Instant::now() > deadline {
            break index;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(index.state, BackendState::Incompatible as i32, "{index:?}");
    assert!(index.reason.contains("version 2"), "{}", index.reason);
    assert_eq!(
        health(&gateway_addr, GATEWAY_SERVICE).await?,
        ServingStatus::NotServing
    );

    fake.stop().await?;
    Ok(())
}
