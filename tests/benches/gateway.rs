//! Gateway benchmarks, recorded in docs/BENCHMARKS.md:
//!
//!   cargo bench -p pumas-e2e --bench gateway -- [--models N] [--root DIR] [--seconds S] [--concurrency C]
//!
//! Serves the index and the gateway on 127.0.0.1 (in this process, real gRPC) over a synthetic
//! library (generated once under --root, shared with the index bench), then measures:
//! 1. SearchModels through the gateway and directly on the index, alternating, side by side;
//! 2. sustained SearchModels load through the gateway from C concurrent callers for S seconds;
//! 3. ResolveModelDependencyRequirements for one model, and the batch form for 1,000 models.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pumas_proto::common::v1::{
    DependencyBinding, DependencyProfile, DependencyProfileVariant, PlatformContext, Requirement,
    RequirementKind,
};
use pumas_proto::gateway::v1 as gw;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::index::v1 as ix;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use tonic::transport::Channel;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    loop {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let models: usize = arg("--models", 100_000);
    let seconds: u64 = arg("--seconds", 10);
    let concurrency: usize = arg("--concurrency", 32);
    let root: PathBuf = arg("--root", PathBuf::from("/tmp/bench100k"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if !root.join("shared-resources/models").exists() {
        let took = pumas_index::synthetic::generate(&root, models).expect("generate the synthetic library");
        println!(
            "generated {models} models in {:.1} s under {}",
            took.as_secs_f64(),
            root.display()
        );
    }
    runtime.block_on(async move {
        let stop = pumas_runtime::Shutdown::new();
        let index_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let index_addr = index_listener.local_addr().expect("addr");
        let index_config = pumas_index::Config { data_root: Some(root.clone()), ..Default::default() };
        tokio::spawn(pumas_index::serve(index_listener, index_config, stop.wait()));
        let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gateway_addr = gateway_listener.local_addr().expect("addr");
        let gateway_config = pumas_gateway::Config {
            index_addr: index_addr.to_string(),
            fetch_addr: "127.0.0.1:9".into(),
            mappers: Vec::new(),
            ..Default::default()
        };
        tokio::spawn(pumas_gateway::serve(gateway_listener, gateway_config, stop.wait()));
        let mut index = IndexServiceClient::new(connect(index_addr).await);
        while index.get_service_info(ix::GetServiceInfoRequest {}).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let gateway_channel = connect(gateway_addr).await;
        let mut gateway = ModelLibraryServiceClient::new(gateway_channel.clone());
        let count = index.get_service_info(ix::GetServiceInfoRequest {}).await.expect("info").into_inner().model_count;
        println!("library: {count} models");

        // 1. Side by side.
        let queries = ["kavomi", "zentul", "porisha", "juggernaut", "pixel art", "sdxl", "qwen coder", "ghib", "lonequi", "turbo"];
        let (mut via_gateway, mut direct) = (Vec::new(), Vec::new());
        for round in 0..3000 {
            let q = queries[round % queries.len()].to_owned();
            let t = Instant::now();
            index.search_models(ix::SearchModelsRequest { query: q.clone(), page_size: 20, ..Default::default() }).await.expect("index search");
            let d = t.elapsed();
            let t = Instant::now();
            gateway.search_models(gw::SearchModelsRequest { query: q, page_size: 20, ..Default::default() }).await.expect("gateway search");
            let g = t.elapsed();
            if round >= 100 {
                direct.push(d);
                via_gateway.push(g);
            }
        }
        let (g50, d50) = (percentile(&mut via_gateway, 0.5), percentile(&mut direct, 0.5));
        println!(
            "SearchModels via gateway p50 {:.3} ms p99 {:.3} ms | index direct p50 {:.3} ms p99 {:.3} ms | gateway adds {:.3} ms p50",
            ms(g50),
            ms(percentile(&mut via_gateway, 0.99)),
            ms(d50),
            ms(percentile(&mut direct, 0.99)),
            ms(g50.saturating_sub(d50))
        );

        // 2. Sustained load.
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let mut client = ModelLibraryServiceClient::new(gateway_channel.clone());
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tasks.push(tokio::spawn(async move {
                let mut i = worker;
                while Instant::now() < until {
                    let q = queries[i % queries.len()].to_owned();
                    i += 1;
                    match client.search_models(gw::SearchModelsRequest { query: q, page_size: 20, ..Default::default() }).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let total = ok.load(Ordering::Relaxed);
        println!(
            "sustained SearchModels via gateway: {:.0} calls/s over {seconds} s with {concurrency} concurrent callers, {} errors",
            total as f64 / seconds as f64,
            failed.load(Ordering::Relaxed)
        );

        // 3. Resolution: a profile, and a binding on 1,000 models.
        let requirement = |name: &str, pin: &str| Requirement { kind: RequirementKind::PythonPackage as i32, name: name.into(), exact_pin: pin.into(), ..Default::default() };
        index
            .put_dependency_profile(ix::PutDependencyProfileRequest {
                profile: Some(DependencyProfile {
                    profile_id: "bench-profile".into(),
                    version: "1".into(),
                    environment_kind: "python-venv".into(),
                    variants: vec![DependencyProfileVariant {
                        backend_key: "torch-cuda".into(),
                        platform_selector: "linux-*".into(),
                        requirements: vec![requirement("torch", "==2.5.1"), requirement("diffusers", "==0.30.0"), requirement("transformers", "==4.44.0")],
                    }],
                    ..Default::default()
                }),
            })
            .await
            .expect("profile");
        let ids: Vec<String> = index
            .list_models(ix::ListModelsRequest { page_size: 1000, ..Default::default() })
            .await
            .expect("list")
            .into_inner()
            .models
            .into_iter()
            .map(|m| m.model_id)
            .collect();
        for id in &ids {
            index
                .put_model_dependency_binding(ix::PutModelDependencyBindingRequest {
                    binding: Some(DependencyBinding {
                        binding_id: String::new(),
                        model_id: id.clone(),
                        profile_id: "bench-profile".into(),
                        profile_version: "1".into(),
                        backend_key: "torch-cuda".into(),
                        platform_selector: "linux-x86_64".into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("bind");
        }
        let platform = Some(PlatformContext { os: "linux".into(), arch: "x86_64".into(), accelerator: "cuda".into(), accelerator_version: "12.4".into(), ..Default::default() });
        let mut one = Vec::new();
        for i in 0..1000 {
            let t = Instant::now();
            gateway
                .resolve_model_dependency_requirements(gw::ResolveModelDependencyRequirementsRequest {
                    model_id: ids[i % ids.len()].clone(),
                    platform_context: platform.clone(),
                    backend_key: "torch-cuda".into(),
                    expected_dependency_contract_version: None,
                })
                .await
                .expect("resolve");
            one.push(t.elapsed());
        }
        let mut batch = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let answer = gateway
                .batch_resolve_model_dependency_requirements(gw::BatchResolveModelDependencyRequirementsRequest {
                    model_ids: ids.clone(),
                    platform_context: platform.clone(),
                    backend_key: "torch-cuda".into(),
                    expected_dependency_contract_version: None,
                })
                .await
                .expect("batch");
            batch.push(t.elapsed());
            assert_eq!(answer.get_ref().items.len(), ids.len());
        }
        println!(
            "ResolveModelDependencyRequirements one model p50 {:.3} ms p99 {:.3} ms | batch of {} p50 {:.1} ms p99 {:.1} ms",
            ms(percentile(&mut one, 0.5)),
            ms(percentile(&mut one, 0.99)),
            ids.len(),
            ms(percentile(&mut batch, 0.5)),
            ms(percentile(&mut batch, 0.99))
        );
        stop.trigger();
    });
}
