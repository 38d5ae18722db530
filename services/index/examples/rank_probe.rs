//! The ranking index alone, in process: a breakdown of the search bench (which measures
//! through `pumas up`). Opens a copy of a library's models.db and times `top` for each query.
//!
//! cargo run --release -p pumas-index --example rank_probe -- /path/to/models.db ["query" ...]

use std::time::Instant;

use anyhow::Context as _;
use pumas_index::store::{Filter, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("the path of a models.db (a copy: it is opened for writing)")?;
    let mut queries: Vec<String> = args.collect();
    if queries.is_empty() {
        let name = pumas_index::synthetic::catalog_name(17).0;
        queries = [
            name.as_str(),
            "004242",
            "qx1zzv",
            "instruct ",
            "llama instruct ",
            "llama instruct 7b q4_k_m",
            "q4_k_m ",
        ]
        .map(str::to_owned)
        .to_vec();
    }
    let started = Instant::now();
    let store = Store::open(std::path::Path::new(&path)).await?;
    // The load's segments merge in the background: time the queries after that.
    for _ in 0..100 {
        if store.ranking().segments() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "opened in {:.2} s ({} models ranked, {} segments)",
        started.elapsed().as_secs_f64(),
        store.ranking().len(),
        store.ranking().segments()
    );
    println!("| query | matches (to 501) | p50 of 200 |\n|---|---|---|");
    for text in &queries {
        let query = pumas_index::query::parse(text)
            .map_err(anyhow::Error::msg)?
            .context("an empty query")?;
        let mut times = Vec::with_capacity(200);
        let mut total = 0;
        for _ in 0..200 {
            let t = Instant::now();
            total = store.ranking().top(&query, &Filter::default(), None, 21, 501)?.1;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "| `{text}` | {total} | {:.3} ms |",
            times[100].as_secs_f64() * 1e3
        );
    }
    // Whole pages, as the service asks for them, of distinct queries (none repeats: no cache).
    println!("\n| distinct queries, whole page of 20 | p50 | p90 |\n|---|---|---|");
    let n = store.ranking().len() as usize;
    type MakeQuery<'a> = Box<dyn Fn(usize) -> String + 'a>;
    let kinds: [(&str, MakeQuery<'_>); 3] = [
        (
            "exact name",
            Box::new(|i| pumas_index::synthetic::catalog_name((i * 331 + 17) % n).0),
        ),
        ("serial", Box::new(|i| format!("{:06}", (i * 677 + 5) % n))),
        ("miss", Box::new(|i| format!("qx{i}zzv"))),
    ];
    for (kind, make) in &kinds {
        let mut times = Vec::with_capacity(300);
        for i in 0..300 {
            let query = pumas_index::query::parse(&make(i))
                .map_err(anyhow::Error::msg)?
                .context("an empty query")?;
            let t = Instant::now();
            store
                .page(
                    Some(&query),
                    &Filter::default(),
                    pumas_index::store::Order::Relevance,
                    &pumas_index::store::After::Start,
                    20,
                )
                .await?;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "| {kind} | {:.3} ms | {:.3} ms |",
            times[150].as_secs_f64() * 1e3,
            times[270].as_secs_f64() * 1e3
        );
    }
    Ok(())
}
