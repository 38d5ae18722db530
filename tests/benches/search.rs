//! Search as a user meets it: through `pumas up` (gateway -> index, mapper attached, default
//! settings), on a library shaped like a real mixed one (issue 15's workload:
//! `<Family>-<Variant>-<Size>-<quant>-<serial>` names, 30 % "instruct", half LLMs).
//!
//! cargo bench -p pumas-e2e --bench search -- --root /tmp/catalog100k --models 100000
//!
//! Options: `--seconds N` (throughput runs, default 10), `--callers N` (default 32),
//! `--rebuild` (delete models.db first, to time the rebuild at start). The library is generated
//! the first time and reused. Prints Markdown tables for docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pumas_index::synthetic::{
    CATALOG_FAMILIES, CATALOG_QUANTS, CATALOG_SIZES, CATALOG_VARIANTS, catalog_name,
};
use pumas_proto::common::v1::{ModelFilter, ModelOrder, ModelType};
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{GetServiceInfoRequest, ListModelsRequest, SearchModelsRequest};
use tonic::transport::Channel;

type Gateway = ModelLibraryServiceClient<Channel>;

struct Args {
    root: PathBuf,
    models: usize,
    seconds: u64,
    callers: usize,
    rebuild: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        root: std::env::temp_dir().join("pumas-catalog-100k"),
        models: 100_000,
        seconds: 10,
        callers: 32,
        rebuild: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().context("a value after the option");
        match a.as_str() {
            "--root" => out.root = PathBuf::from(value()?),
            "--models" => out.models = value()?.parse()?,
            "--seconds" => out.seconds = value()?.parse()?,
            "--callers" => out.callers = value()?.parse()?,
            "--rebuild" => out.rebuild = true,
            "--bench" => {}
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Peak and current resident memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The n-th query of a stream in which no query repeats: exact names, serials (a rare word),
/// family/variant/size/quant combinations (broad to narrow) and misses, in turn.
fn distinct_query(n: usize, models: usize) -> String {
    let k = n / 4;
    match n % 4 {
        0 => catalog_name((k * 7_919) % models).0,
        1 => format!("{:06}", (k * 104_729) % models),
        2 => {
            let f = CATALOG_FAMILIES[k % CATALOG_FAMILIES.len()];
            let v = CATALOG_VARIANTS[(k / 10) % CATALOG_VARIANTS.len()];
            let s = CATALOG_SIZES[(k / 100) % CATALOG_SIZES.len()];
            let q = CATALOG_QUANTS[(k / 900) % CATALOG_QUANTS.len()];
            match (k / 6_300) % 3 {
                0 => format!("{f} {v} {s} {q}"),
                1 => format!("{v} {s} {q} {f}"),
                _ => format!("{q} {f} {s} {v}"),
            }
        }
        _ => format!("zq{k}xv"),
    }
}

async fn search(gateway: &mut Gateway, query: String, page_size: i32) -> Result<usize, tonic::Status> {
    let answer = gateway
        .search_models(SearchModelsRequest {
            query,
            page_size,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(answer.results.len())
}

/// p50/p99 of one caller over these queries (each sent once: none is answered from a cache).
async fn latencies(
    gateway: &mut Gateway,
    queries: Vec<String>,
    page_size: i32,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let mut times = Vec::with_capacity(queries.len());
    let mut hits = 0;
    for q in queries {
        let t = Instant::now();
        hits += search(gateway, q, page_size).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        hits / times.len().max(1),
    ))
}

async fn throughput(
    addr: &str,
    callers: usize,
    seconds: u64,
    page_size: i32,
    models: usize,
    offset: usize,
) -> anyhow::Result<(f64, u64, Duration, Duration)> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..callers {
        let mut gateway = ModelLibraryServiceClient::new(pumas_e2e::anonymous_channel(addr).await?);
        let (next, errors) = (Arc::clone(&next), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize + offset;
                let t = Instant::now();
                if search(&mut gateway, distinct_query(n, models), page_size)
                    .await
                    .is_err()
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                times.push(t.elapsed());
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = started.elapsed();
    all.sort();
    Ok((
        all.len() as f64 / elapsed.as_secs_f64(),
        errors.load(Ordering::Relaxed),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    ))
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let models_dir = args.root.join("shared-resources/models");
    if !models_dir.exists() {
        let took = pumas_index::synthetic::generate_catalog(&args.root, args.models)?;
        eprintln!("generated {} models in {:.1} s", args.models, took.as_secs_f64());
    }
    if args.rebuild {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(models_dir.join(format!("models.db{suffix}")));
        }
    }
    let root = args.root.display().to_string();
    let log = std::env::temp_dir().join("pumas-search-bench-up.log");
    pumas_e2e::pumas_bin()?; // built first: its build is not the start's time
    let started = Instant::now();
    let up = pumas_e2e::Process::up(
        &["--data-root", &root, "--hub-endpoint", "http://127.0.0.1:9"],
        &[],
        log,
    )
    .await?;
    let gateway_addr = up.banner_address("gateway")?;
    let mut gateway = ModelLibraryServiceClient::new(pumas_e2e::anonymous_channel(&gateway_addr).await?);
    // Ready when a search answers (the index may be rebuilding models.db).
    loop {
        match search(&mut gateway, "warmup".into(), 1).await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => anyhow::bail!("{s:?}"),
        }
    }
    let ready = started.elapsed();
    // Measured once the start's reconcile of models.db with the files is done (it reads every
    // metadata.json: seconds of a core at 100,000 models), as a user's steady state.
    let log_path = up.log_path.clone();
    let reconciled = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("reconciled models.db") || l.contains("rebuilt models.db"))
        {
            break line.to_owned();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "no reconcile in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "start: {}\n",
        reconciled.split("INFO").nth(1).unwrap_or(&reconciled).trim()
    );
    // A load (start or rebuild) ends with the relevance index's segments merged into one in the
    // background: measured after that too.
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("merged the relevance index") || started.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = up.pid()?;
    println!(
        "`pumas up` answered searches {:.1} s after it was started{}\n",
        ready.as_secs_f64(),
        if args.rebuild {
            " (models.db rebuilt from the metadata files)"
        } else {
            ""
        }
    );

    // The floor: a call the gateway answers itself.
    let mut pings = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        gateway.get_service_info(GetServiceInfoRequest {}).await?;
        pings.push(t.elapsed());
    }
    pings.sort();
    let floor = percentile(&pings, 0.5);

    let n = args.models;
    let names: Vec<String> = (0..300).map(|i| catalog_name((i * 331 + 17) % n).0).collect();
    let serials: Vec<String> = (0..300).map(|i| format!("{:06}", (i * 677 + 5) % n)).collect();
    let misses: Vec<String> = (0..300).map(|i| format!("qx{i}zzv")).collect();
    let mut broad = Vec::new();
    for f in CATALOG_FAMILIES {
        for v in ["instruct", "chat", "base"] {
            broad.push(format!("{f} {v}"));
        }
    }
    // One broad word, in ways of writing it that the page cache keys apart and the search does
    // not (letter case): every call ranks the same ~30,000 matches afresh.
    let one_word: Vec<String> = (0..128u32)
        .map(|bits| {
            "instruct "
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits >> (i % 8) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    let broad_100: Vec<String> = CATALOG_FAMILIES
        .iter()
        .flat_map(|f| CATALOG_SIZES.iter().map(move |s| format!("{f} {s}")))
        .take(60)
        .collect();
    println!(
        "| uncached, one caller, through the gateway | page | p50 | p99 | p50 minus the floor | results |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| floor: GetServiceInfo (answered by the gateway) | - | {} | {} | - | - |",
        ms(floor),
        ms(percentile(&pings, 0.99))
    );
    for (what, queries, page) in [
        ("exact name (1 match)", names.clone(), 20),
        ("serial, a rare word (1 match)", serials, 20),
        ("miss (0 matches)", misses, 20),
        (
            "broad: one word, `instruct` (about 30,000 matches)",
            one_word.clone(),
            20,
        ),
        ("broad: one word, `instruct`, page 100", one_word, 100),
        ("broad: family + variant (about 3,000 matches)", broad, 20),
        ("broad: family + size (about 1,100 matches)", broad_100, 100),
        (
            "exact name, page 100",
            names.iter().map(|s| format!("{s} ")).collect(),
            100,
        ),
        (
            "4 words: family variant size quant",
            (0..300).map(|i| distinct_query(4 * i + 2, n)).collect(),
            20,
        ),
    ] {
        let (p50, p99, hits) = latencies(&mut gateway, queries, page).await?;
        println!(
            "| {what} | {page} | {} | {} | {} | {hits} |",
            ms(p50),
            ms(p99),
            ms(p50.saturating_sub(floor))
        );
    }

    println!(
        "\n| sustained, {} callers, all-distinct queries | page | searches/s | errors | p50 | p99 |",
        args.callers
    );
    println!("|---|---|---|---|---|---|");
    for (page, offset) in [(20, 0), (100, 10_000_000)] {
        let (rate, errors, p50, p99) =
            throughput(&gateway_addr, args.callers, args.seconds, page, n, offset).await?;
        println!(
            "| exact names, serials, 4-word combinations, misses | {page} | {rate:.0} | {errors} | {} | {} |",
            ms(p50),
            ms(p99)
        );
    }

    // Memory: walk the whole library with several sorts and filters.
    let (_, before) = memory(pid);
    let walks: Vec<(ModelOrder, ModelFilter)> = vec![
        (ModelOrder::Name, ModelFilter::default()),
        (ModelOrder::SizeDesc, ModelFilter::default()),
        (ModelOrder::AddedTimeDesc, ModelFilter::default()),
        (
            ModelOrder::Name,
            ModelFilter {
                model_types: vec![ModelType::Llm as i32],
                ..Default::default()
            },
        ),
        (
            ModelOrder::SizeDesc,
            ModelFilter {
                tags: vec!["instruct".into()],
                ..Default::default()
            },
        ),
    ];
    let mut listed = 0;
    for (order, filter) in walks {
        let mut token = String::new();
        loop {
            let page = gateway
                .list_models(ListModelsRequest {
                    filters: Some(filter.clone()),
                    order_by: order as i32,
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            listed += page.models.len();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    let (peak, after) = memory(pid);
    println!(
        "\nMemory of `pumas up` (all four services in one process): {before:.0} MiB before, {after:.0} MiB after walking the library five times ({listed} models listed, by name, size and date, by type and by tag); peak {peak:.0} MiB over the whole run."
    );
    up.terminate().await?;
    Ok(())
}
