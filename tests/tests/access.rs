//! Gateway access control and limits across real processes: bearer tokens (health and
//! reflection stay open), message size, and load shedding with RESOURCE_EXHAUSTED.

use std::time::Duration;

use pumas_e2e::*;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{GetModelRequest, GetServiceInfoRequest, SearchModelsRequest};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

#[tokio::test]
async fn bearer_tokens_limits_and_shedding() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // An index whose GetModel takes three seconds: one such call occupies the gateway's only slot.
    let slow_index = pumas_e2e::fakes::FakeIndex {
        get_model_delay: Duration::from_secs(3),
        ..Default::default()
    }
    .start()
    .await?;
    let hole_addr = slow_index.addr.clone();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let mapper_arg = format!("local={dead}");
    let (_gateway, addr) = serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            &hole_addr,
            "--fetch",
            &dead,
            "--mapper",
            &mapper_arg,
            "--api-token",
            "s3cret,second-token",
            "--max-concurrent-calls",
            "1",
            "--max-message-bytes",
            "4096",
        ],
        dir.path(),
    )
    .await?;
    let mut client = ModelLibraryServiceClient::new(lazy_channel(&addr)?);

    // No token, a wrong token: UNAUTHENTICATED with a message that says what to send.
    let err = client
        .get_service_info(GetServiceInfoRequest {})
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Bearer"), "{}", err.message());
    let err = client
        .get_service_info(with_token(GetServiceInfoRequest {}, "nope"))
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), Code::Unauthenticated);
    // Either configured token works; health and reflection need none.
    client
        .get_service_info(with_token(GetServiceInfoRequest {}, "s3cret"))
        .await?;
    client
        .get_service_info(with_token(GetServiceInfoRequest {}, "second-token"))
        .await?;
    assert_eq!(
        health(&addr, "").await.map_err(|s| anyhow::anyhow!("{s}"))?,
        ServingStatus::NotServing
    );
    let services =
        pumas_e2e::reflection::list_services_v1(pumas_e2e::anonymous_channel(&addr).await?).await?;
    assert!(services.iter().any(|s| s == GATEWAY_SERVICE));

    // A request larger than the limit is refused.
    let big = SearchModelsRequest {
        query: "x".repeat(10_000),
        ..Default::default()
    };
    let err = client
        .search_models(with_token(big, "s3cret"))
        .await
        .expect_err("too big");
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );

    // One call at a time: while one waits on the slow index, the next is shed at once.
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move {
        slow_client
            .get_model(with_token(
                GetModelRequest {
                    model_id: "lora/sdxl/x".into(),
                    include_chat_template: false,
                    include_preview: false,
                },
                "s3cret",
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = client
        .get_service_info(with_token(GetServiceInfoRequest {}, "s3cret"))
        .await
        .expect_err("shed");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let slow = slow.await?.expect_err("the fake has no models");
    assert_eq!(slow.code(), Code::NotFound, "{slow:?}");
    // Capacity is back once it ended.
    client
        .get_service_info(with_token(GetServiceInfoRequest {}, "s3cret"))
        .await?;
    slow_index.stop().await?;
    Ok(())
}
