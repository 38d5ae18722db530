//! The store's plans (relevance from the ranking index; sorted exactly up to SORT_PLAN_MAX
//! matches, streaming above it) return every match exactly once across pages, in their
//! documented order, and a relevance page is the exact BM25 top.

use std::collections::BTreeSet;

use pumas_index::metadata::{Detection, FileEntry, Metadata, SCHEMA_VERSION, Source};
use pumas_index::query::{Query, parse};
use pumas_index::store::{After, COUNT_CAP, Filter, Hit, Order, Record, SORT_PLAN_MAX, Store};

fn q(text: &str) -> Query {
    parse(text).expect("parses").expect("not empty")
}

fn record(i: usize) -> Record {
    // Every model mentions "alpha" somewhere; every third has it in its name.
    let name = if i.is_multiple_of(3) {
        format!("alpha model {i:05}")
    } else {
        format!("model {i:05}")
    };
    let model_type = if i.is_multiple_of(2) { "lora" } else { "checkpoint" };
    let id = format!("{model_type}/sdxl/m{i:05}");
    Record {
        metadata: Metadata {
            schema_version: SCHEMA_VERSION,
            id,
            display_name: name,
            model_type: model_type.to_owned(),
            family: "sdxl".to_owned(),
            architecture: String::new(),
            format: "safetensors".to_owned(),
            precision: String::new(),
            quantization: String::new(),
            parameter_count: None,
            files: vec![FileEntry {
                path: "w.safetensors".into(),
                size: i as u64,
                sha256: format!("sha256:{i:064x}"),
                blake3: String::new(),
            }],
            total_size: (i as u64 * 7919) % 10_007,
            composite_digest: String::new(),
            source: Source::Local { path: String::new() },
            tags: if i.is_multiple_of(5) {
                vec!["favourite".into()]
            } else {
                vec![]
            },
            description: "mentions alpha in the description".to_owned(),
            license: String::new(),
            added_time: format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
            updated_time: "2026-01-01T00:00:00Z".into(),
            state: "ready".into(),
            state_reason: String::new(),
            detection: Detection::default(),
            unsafe_format: false,
            dependency_bindings: vec![],
            declares_no_dependencies: false,
            embedded: Default::default(),
            hub: None,
            side_files: Vec::new(),
            download: None,
        },
        overridden: vec![],
    }
}

async fn all_pages(
    store: &Store,
    query: Option<&Query>,
    filter: &Filter,
    order: Order,
) -> (Vec<(String, f64)>, u64) {
    let mut after = After::Start;
    let mut seen = Vec::new();
    let mut total;
    loop {
        let page = store.page(query, filter, order, &after, 97).await.expect("page");
        total = page.total;
        seen.extend(page.rows.iter().map(|(r, s)| (r.metadata.id.clone(), *s)));
        match &page.next {
            Some(next) => after = next.clone(),
            None => break,
        }
    }
    (seen, total)
}

fn assert_unique(seen: &[(String, f64)], expected: u64) {
    let ids: BTreeSet<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "no duplicates across pages");
    assert_eq!(seen.len() as u64, expected, "every match once");
}

#[tokio::test]
async fn exact_and_streaming_plans_page_completely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("models.db")).await.expect("open");
    let n = 3 * SORT_PLAN_MAX as usize;
    let records: Vec<Record> = (0..n).map(record).collect();
    store.upsert_many(&records).await.expect("insert");

    // Relevance over every model: all n match, name matches (every third) come first.
    let (seen, total) = all_pages(&store, Some(&q("alpha ")), &Filter::default(), Order::Relevance).await;
    assert_eq!(total, COUNT_CAP, "counting stops at the cap");
    assert_unique(&seen, n as u64);
    let name_hits = n.div_ceil(3);
    assert!(
        seen[..name_hits]
            .iter()
            .all(|(id, _)| id[id.len() - 5..].parse::<usize>().unwrap_or(1) % 3 == 0),
        "name matches first"
    );
    assert!(seen[..name_hits].iter().all(|(_, s)| *s > seen[name_hits].1));

    // Two words and a filter.
    let (seen, total) = all_pages(
        &store,
        Some(&q("alpha model ")),
        &Filter {
            tags: vec!["favourite".into()],
            ..Default::default()
        },
        Order::Relevance,
    )
    .await;
    assert!(total <= SORT_PLAN_MAX);
    assert_unique(&seen, total);
    assert!(seen.windows(2).all(|w| w[0].1 >= w[1].1), "best score first");

    // Streaming list with a filter, by name and by size.
    let lora = Filter {
        types: vec!["lora".into()],
        ..Default::default()
    };
    let (seen, total) = all_pages(&store, None, &lora, Order::Name).await;
    assert_eq!(total, COUNT_CAP);
    assert_unique(&seen, (n / 2) as u64);
    assert!(seen.iter().all(|(id, _)| id.starts_with("lora/")));
    let (seen, _) = all_pages(&store, None, &lora, Order::SizeDesc).await;
    assert_unique(&seen, (n / 2) as u64);
    let sizes: Vec<u64> = {
        let mut v = Vec::new();
        for (id, _) in &seen {
            v.push(
                store
                    .get(id)
                    .await
                    .expect("get")
                    .expect("exists")
                    .metadata
                    .total_size,
            );
        }
        v
    };
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "largest first");
    // Search with an explicit order streams too.
    let (seen, _) = all_pages(&store, Some(&q("alpha ")), &Filter::default(), Order::AddedDesc).await;
    assert_unique(&seen, n as u64);
    store.close().await;
}

#[tokio::test]
async fn a_repeated_page_comes_from_the_cache_until_a_write_changes_the_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("models.db")).await.expect("open");
    store
        .upsert_many(&(0..10).map(record).collect::<Vec<_>>())
        .await
        .expect("insert");
    let (filter, start) = (Filter::default(), After::Start);
    let query = q("alpha ");
    let ask = || store.page(Some(&query), &filter, Order::Relevance, &start, 50);
    let first = ask().await.expect("page");
    let again = ask().await.expect("page");
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "the same page, not a second query"
    );
    assert_eq!(first.total, 10, "every record mentions alpha");

    // A write: the next answer is fresh and sees it.
    store.upsert(&record(12)).await.expect("insert");
    let fresh = ask().await.expect("page");
    assert!(!std::sync::Arc::ptr_eq(&first, &fresh));
    assert_eq!(fresh.total, 11);
    // A removal too.
    assert!(store.remove("lora/sdxl/m00012").await.expect("remove"));
    assert_eq!(ask().await.expect("page").total, 10);
}

/// A model of the catalog's shape with text of varied length, so scores differ.
fn catalog_record(i: usize) -> Record {
    const FAMILIES: [&str; 6] = ["Llama", "Mistral", "Qwen", "Gemma", "Phi", "Baichuan"];
    const VARIANTS: [&str; 4] = ["Instruct", "Base", "Chat", "Coder"];
    const TYPES: [&str; 4] = ["llm", "llm", "diffusion", "embedding"];
    let mut seed = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = |n: usize| {
        seed ^= seed >> 29;
        seed = seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (seed >> 33) as usize % n
    };
    let family = FAMILIES[next(FAMILIES.len())];
    let variant = VARIANTS[next(VARIANTS.len())];
    let model_type = TYPES[next(TYPES.len())];
    let mut r = record(i);
    let m = &mut r.metadata;
    m.display_name = format!("{family}-{variant}-{}B-Q4_K_M-{i:06}", 1 + next(70));
    m.id = format!("{model_type}/{}/m{i:06}", family.to_lowercase());
    m.model_type = model_type.to_owned();
    m.family = family.to_lowercase();
    m.tags = vec![variant.to_lowercase(), "q4_k_m".to_owned()];
    let filler = ["weights", "trained", "instruct", "tuned", "chat", "model"];
    m.description = (0..next(12))
        .map(|_| filler[next(filler.len())])
        .collect::<Vec<_>>()
        .join(" ");
    r
}

/// Pages of the pruned top-k (block-max WAND) against every match scored without pruning:
/// the same hits, scores and order, for single words, several words, prefixes, OR, NOT and
/// filters, on an index of several segments with deleted documents.
#[tokio::test]
async fn a_relevance_page_is_the_exact_bm25_top_of_every_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("models.db")).await.expect("open");
    let n = 6_000;
    for batch in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let records: Vec<Record> = batch.iter().map(|&i| catalog_record(i)).collect();
        store.upsert_many(&records).await.expect("insert");
    }
    // Rewrites and removals leave deleted documents behind in the segments.
    let rewritten: Vec<Record> = (0..n)
        .step_by(17)
        .map(|i| {
            let mut r = catalog_record(i);
            r.metadata.description.push_str(" instruct instruct");
            r
        })
        .collect();
    store.upsert_many(&rewritten).await.expect("rewrite");
    for i in (5..n).step_by(101) {
        store
            .remove(&catalog_record(i).metadata.id)
            .await
            .expect("remove");
    }

    let llm = Filter {
        types: vec!["llm".into()],
        ..Default::default()
    };
    let cases: [(&str, Filter); 14] = [
        ("instruct ", Filter::default()),
        ("mistral instruct ", Filter::default()),
        // Phrases and several words: candidates from the words and pairs fields, then each
        // phrase checked and scored per column.
        ("trained-instruct ", Filter::default()),
        ("instruct-instruct mistral ", Filter::default()),
        ("mistral-instruct tuned ", Filter::default()),
        ("trained-instr", Filter::default()),
        ("llama instr", Filter::default()),
        ("\"q4 k\" tuned -chat ", llm.clone()),
        ("instr", Filter::default()),
        ("llama OR qwen ", Filter::default()),
        ("q4_k_m instruct ", Filter::default()),
        ("instruct -mistral ", Filter::default()),
        ("instruct ", llm.clone()),
        (
            "chat ",
            Filter {
                tags: vec!["chat".into()],
                min_size: Some(1_000),
                ..Default::default()
            },
        ),
    ];
    for (text, filter) in cases {
        let query = q(text);
        let exact = store.ranking().exhaustive(&query, &filter).expect("exhaustive");
        assert!(exact.len() > 100, "{text:?} is broad: {} matches", exact.len());
        assert!(
            exact.windows(2).any(|w| w[0].score != w[1].score),
            "{text:?}: scores differ"
        );
        // Scores are compared within 1e-4: a sum of column scores differs in its last bits
        // with the order it is added in, and pruning adds in another order.
        let exact_score: std::collections::HashMap<u64, f32> =
            exact.iter().map(|h| (h.rowid, h.score)).collect();
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        let mut after: Option<Hit> = None;
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        for page in 0..5 {
            let (hits, total) = store
                .ranking()
                .top(&query, &filter, after, 20, COUNT_CAP)
                .expect("top");
            assert_eq!(
                total,
                COUNT_CAP.min(exact.len() as u64),
                "{text:?}: counting stops at the cap"
            );
            assert_eq!(hits.len(), 20);
            for (at, hit) in hits.iter().enumerate() {
                let rank = page * 20 + at;
                assert!(seen.insert(hit.rowid), "{text:?}: {hit:?} on two pages");
                assert!(
                    close(exact_score[&hit.rowid], hit.score) && close(hit.score, exact[rank].score),
                    "{text:?}, rank {rank}: {hit:?}, exact {:?}",
                    exact[rank]
                );
            }
            // Every match scoring above this page's last is on this page or an earlier one.
            let last = hits[19].score;
            for h in exact
                .iter()
                .take_while(|h| h.score > last && !close(h.score, last))
            {
                assert!(
                    seen.contains(&h.rowid),
                    "{text:?}: {h:?} is missing by page {page}"
                );
            }
            after = hits.last().copied();
        }
        // Through the store: the first page's scores are the exact top's.
        let first = store
            .page(Some(&query), &filter, Order::Relevance, &After::Start, 20)
            .await
            .expect("page");
        for ((_, score), exact) in first.rows.iter().zip(&exact) {
            assert!(
                close(*score as f32, exact.score),
                "{text:?}: {score} against {exact:?}"
            );
        }
        // Every word of a multi-word query is in every hit; NOT words in none.
        for (record, _) in &first.rows {
            let m = &record.metadata;
            let text_of = format!("{} {} {}", m.display_name, m.tags.join(" "), m.description).to_lowercase();
            match text {
                "mistral instruct " => assert!(text_of.contains("mistral") && text_of.contains("instruct")),
                "instruct -mistral " => assert!(text_of.contains("instruct") && !text_of.contains("mistral")),
                _ => {}
            }
            if !filter.types.is_empty() {
                assert_eq!(m.model_type, "llm");
            }
        }
    }
    store.close().await;
}
