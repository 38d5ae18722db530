//! Both query plans of the store (exact sort/rank up to SORT_PLAN_MAX matches, streaming above
//! it) return every match exactly once across pages, in their documented order.

use std::collections::BTreeSet;

use pumas_index::metadata::{Detection, FileEntry, Metadata, SCHEMA_VERSION, Source};
use pumas_index::store::{After, COUNT_CAP, Filter, Order, Record, SORT_PLAN_MAX, Store};

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
            download: None,
        },
        overridden: vec![],
    }
}

async fn all_pages(
    store: &Store,
    fts: Option<&str>,
    filter: &Filter,
    order: Order,
) -> (Vec<(String, f64)>, u64) {
    let mut after = After::Start;
    let mut seen = Vec::new();
    let mut total;
    loop {
        let page = store.page(fts, filter, order, &after, 97).await.expect("page");
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

    // Streaming relevance: all n match, name matches (every third) come first.
    let (seen, total) = all_pages(&store, Some("\"alpha\""), &Filter::default(), Order::Relevance).await;
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

    // Exact ranking: a query with few matches (only names with "alpha" and a 000 suffix).
    let (seen, total) = all_pages(
        &store,
        Some("\"alpha\" \"model\""),
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
    let (seen, _) = all_pages(&store, Some("\"alpha\""), &Filter::default(), Order::AddedDesc).await;
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
    let ask = || store.page(Some("\"alpha\""), &filter, Order::Relevance, &start, 50);
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
