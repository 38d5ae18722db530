//! A Pumas client calling a server of its own process goes through the server's stack in process
//! (crate::local), and to the port again once that server has stopped.

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

#[tokio::test]
async fn a_server_in_this_process_is_called_without_the_network_until_it_stops()
-> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (_health, routes) = pumas_runtime::standard_routes("pumas.test.v1.Nothing")?;
    let stop = pumas_runtime::Shutdown::new();
    let server = tokio::spawn(pumas_runtime::serve(listener, routes, stop.wait()));

    let mut client = HealthClient::new(pumas_runtime::client::connect_lazy(&addr)?);
    // The server registers when its task first runs; until then calls take the port.
    let mut before = pumas_runtime::local::calls();
    for _ in 0..100 {
        before = pumas_runtime::local::calls();
        let answer = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32);
        if pumas_runtime::local::calls() > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(pumas_runtime::local::calls(), before + 1, "answered in process");

    // A caller from elsewhere still reaches it through the port.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut remote = HealthClient::new(channel);
    remote
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    assert_eq!(pumas_runtime::local::calls(), before + 1);

    stop.trigger();
    server.await??;
    let after = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect_err("the server is gone");
    assert_eq!(after.code(), tonic::Code::Unavailable, "{after:?}");
    assert_eq!(
        pumas_runtime::local::calls(),
        before + 1,
        "no in-process call to a stopped server"
    );
    Ok(())
}
