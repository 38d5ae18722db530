//! Index benchmarks, recorded in docs/BENCHMARKS.md:
//!
//!   cargo bench -p pumas-index --bench library -- [--models N] [--queries Q] [--root DIR] [--hash-gib G]
//!
//! 1. generates a synthetic library of N models on disk (valid metadata.json, a tiny weight file
//!    each; `--root` keeps it for reuse),
//! 2. rebuilds models.db from the files (time, peak RSS),
//! 3. serves the index on 127.0.0.1:0 and measures SearchModels and filtered ListModels through
//!    gRPC (p50 / p99 over Q calls),
//! 4. with `--hash-gib G`: hashes a G GiB file (SHA-256 + BLAKE3, one read) and runs `sha256sum`
//!    on the same file, side by side.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pumas_proto::common::v1::{ModelFilter, ModelType};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{ListModelsRequest, SearchModelsRequest};

struct Args {
    models: usize,
    queries: usize,
    root: Option<PathBuf>,
    hash_gib: u64,
}

fn args() -> Args {
    let mut a = Args {
        models: 100_000,
        queries: 2000,
        root: None,
        hash_gib: 0,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--models" => a.models = value.parse().expect("--models N"),
            "--queries" => a.queries = value.parse().expect("--queries N"),
            "--root" => a.root = Some(PathBuf::from(value)),
            "--hash-gib" => a.hash_gib = value.parse().expect("--hash-gib G"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: 0 kB");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, samples: &mut [Duration]) {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    println!(
        "{name:<44} p50 {:>8.3} ms   p99 {:>8.3} ms   ({} calls)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.len()
    );
}

fn hash_bench(dir: &Path, gib: u64) {
    let path = dir.join("hash-bench.bin");
    let size = gib << 30;
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut rng = pumas_index::synthetic::Lcg(7);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            for chunk in block.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_value().to_le_bytes());
            }
            f.write_all(&block).expect("write");
        }
    }
    // Warm the page cache for both runs alike.
    let _ = std::process::Command::new("cat")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status();
    let start = Instant::now();
    let ours = pumas_index::hash::hash_file(&path, |_| true).expect("hash");
    let ours_time = start.elapsed();
    let start = Instant::now();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum");
    let theirs_time = start.elapsed();
    let theirs = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        ours.sha256,
        format!("sha256:{theirs}"),
        "same digest as sha256sum"
    );
    let mbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    println!(
        "hash {gib} GiB: pumas sha256+blake3 {:.0} MB/s ({:.2} s), sha256sum {:.0} MB/s ({:.2} s), ratio {:.2}x",
        mbps(ours_time),
        ours_time.as_secs_f64(),
        mbps(theirs_time),
        theirs_time.as_secs_f64(),
        theirs_time.as_secs_f64() / ours_time.as_secs_f64()
    );
    let _ = std::fs::remove_file(&path);
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = args.root.clone().unwrap_or_else(|| tmp.path().join("root"));
    let models_dir = root.join("shared-resources/models");
    if args.hash_gib > 0 {
        hash_bench(tmp.path(), args.hash_gib);
    }
    if !models_dir.exists() {
        let took =
            pumas_index::synthetic::generate(&root, args.models).expect("generate the synthetic library");
        println!(
            "generated {} models in {:.1} s under {}",
            args.models,
            took.as_secs_f64(),
            root.display()
        );
    }
    for name in ["models.db", "models.db-wal", "models.db-shm"] {
        let _ = std::fs::remove_file(models_dir.join(name));
    }
    runtime.block_on(async {
        let start = Instant::now();
        let library = pumas_index::open::open(&models_dir, Default::default())
            .await
            .expect("open");
        let rebuilt = start.elapsed();
        let count = library.store().count().await.expect("count");
        library.store().close().await;
        drop(library);
        println!(
            "rebuild of models.db from {count} metadata files: {:.2} s, peak RSS {:.0} MiB",
            rebuilt.as_secs_f64(),
            rss_mib()
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = pumas_runtime::Shutdown::new();
        let config = pumas_index::Config {
            data_root: Some(root.clone()),
            ..Default::default()
        };
        let server = tokio::spawn(pumas_index::serve(listener, config, stop.wait()));
        let mut client = loop {
            match IndexServiceClient::connect(format!("http://{addr}")).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        // Specific: what a user types to find one model (a made-up name word, typed partly).
        let specific = [
            "kavomi",
            "zentul",
            "porisha",
            "lonequi",
            "darbelfi",
            "gorhu",
            "ixjo",
            "stekavo",
            "mira",
            "tulpo juggernaut",
        ];
        // Broad: words that match 5-20% of this synthetic library.
        let broad = [
            "juggernaut",
            "pixel art",
            "llama instruct",
            "ghib",
            "sdxl",
            "qwen coder",
            "detail tweaker",
            "mistral",
            "epic realism",
            "turbo",
        ];
        for (label, queries) in [
            ("specific (type-ahead of a name)", specific),
            ("broad (5-20% of the library match)", broad),
        ] {
            for q in queries {
                let _ = client
                    .search_models(SearchModelsRequest {
                        query: q.into(),
                        page_size: 20,
                        ..Default::default()
                    })
                    .await;
            }
            let mut samples = Vec::with_capacity(args.queries);
            let mut matched = 0u64;
            for i in 0..args.queries {
                let q = queries[i % queries.len()];
                let t = Instant::now();
                let answer = client
                    .search_models(SearchModelsRequest {
                        query: q.into(),
                        page_size: 20,
                        ..Default::default()
                    })
                    .await
                    .expect("search");
                samples.push(t.elapsed());
                matched += answer.get_ref().total_size;
            }
            report(
                &format!(
                    "SearchModels {label}, avg {} matches",
                    matched / args.queries as u64
                ),
                &mut samples,
            );
        }
        let mut samples = Vec::with_capacity(args.queries);
        for i in 0..args.queries {
            let filter = ModelFilter {
                model_types: vec![if i % 2 == 0 {
                    ModelType::Lora as i32
                } else {
                    ModelType::Llm as i32
                }],
                tags: if i % 3 == 0 {
                    vec!["favourite".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            };
            let t = Instant::now();
            client
                .list_models(ListModelsRequest {
                    filter: Some(filter),
                    page_size: 50,
                    ..Default::default()
                })
                .await
                .expect("list");
            samples.push(t.elapsed());
        }
        report("ListModels (type filter, some tag filters, 50)", &mut samples);
        stop.trigger();
        let _ = server.await;
    });
    println!(
        "peak RSS of the bench process (index in-process): {:.0} MiB",
        rss_mib()
    );
}
