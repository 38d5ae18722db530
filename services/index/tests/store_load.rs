//! A rebuild of models.db loads its models in bulk (digests written at the end, the relevance
//! index fed behind): every model is found by its digests after it, a write during it wins
//! over what it staged, and one that never ended is made anew at the next start.

use std::path::{Path, PathBuf};

use pumas_index::library::{Library, Policy, read_metadata};
use pumas_index::store::{Record, Store};

/// A generated library of `n` models: its models folder and each model's folder.
fn library(root: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    pumas_index::synthetic::generate_catalog(root, n).expect("generate");
    let models = root.join("shared-resources/models");
    let dirs = walk(&models, 3);
    assert_eq!(dirs.len(), n);
    (models, dirs)
}

/// Folders `depth` levels below `dir` (`<type>/<family>/<slug>`).
fn walk(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut here: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    here.sort();
    if depth == 1 {
        return here;
    }
    here.iter().flat_map(|d| walk(d, depth - 1)).collect()
}

fn record(dir: &Path) -> Record {
    Record {
        metadata: read_metadata(dir).expect("metadata.json"),
        overridden: Vec::new(),
    }
}

/// Every digest a model is found by: each file's and the composite.
fn digests(record: &Record) -> Vec<String> {
    let m = &record.metadata;
    m.files
        .iter()
        .flat_map(|f| [f.sha256.clone(), f.blake3.clone()])
        .chain([m.composite_digest.clone()])
        .filter(|d| !d.is_empty())
        .collect()
}

async fn found_by(store: &Store, digest: &str) -> Vec<String> {
    store
        .find_by_digest(digest)
        .await
        .expect("find_by_digest")
        .into_iter()
        .map(|r| r.metadata.id)
        .collect()
}

#[tokio::test]
async fn after_a_rebuild_of_several_batches_every_model_is_found_by_its_digests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // More than two batches of a thousand, so digests of several batches wait for the end.
    let (models, dirs) = library(tmp.path(), 2_300);
    let library = pumas_index::open::open(&models, Policy::default())
        .await
        .expect("open rebuilds models.db");
    let store = library.store();
    assert_eq!(store.count().await.expect("count"), 2_300);
    assert!(!store.load_interrupted().await.expect("user_version"));
    for dir in dirs.iter().step_by(97).chain(dirs.last()) {
        let record = record(dir);
        let all = digests(&record);
        assert_eq!(all.len(), 3, "sha256, blake3 and the composite digest");
        for digest in all {
            assert_eq!(
                found_by(store, &digest).await,
                vec![record.metadata.id.clone()],
                "{digest}"
            );
        }
    }
    store.close().await;
}

#[tokio::test]
async fn a_write_during_a_load_wins_over_the_digests_it_staged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, dirs) = library(tmp.path(), 3);
    let [a, b, c] = [0, 1, 2].map(|i| record(&dirs[i]));
    let store = Store::open(&tmp.path().join("loading.db")).await.expect("open");
    store
        .load_many(&[a.clone(), b.clone(), c.clone()])
        .await
        .expect("load");
    // During the load: `a` is written again with a new file digest, `b` is deleted.
    let mut newer = a.clone();
    newer.metadata.files[0].sha256 = format!("sha256:{}", "ab".repeat(32));
    store.upsert(&newer).await.expect("upsert");
    assert!(store.remove(&b.metadata.id).await.expect("remove"));
    store.publish_loaded(true).await.expect("the load ends");

    assert_eq!(
        found_by(&store, &newer.metadata.files[0].sha256).await,
        vec![a.metadata.id.clone()]
    );
    assert!(
        found_by(&store, &a.metadata.files[0].sha256).await.is_empty(),
        "the digest the load staged for `a` went with its rewrite"
    );
    assert!(found_by(&store, &b.metadata.files[0].sha256).await.is_empty());
    for digest in digests(&c) {
        assert_eq!(found_by(&store, &digest).await, vec![c.metadata.id.clone()]);
    }
    assert!(!store.load_interrupted().await.expect("user_version"));
    let name = pumas_index::query::parse(&c.metadata.display_name)
        .expect("parses")
        .expect("not empty");
    let (hits, count) = store
        .ranking()
        .top(&name, &Default::default(), None, 10, 100)
        .expect("search");
    assert_eq!(count, 1, "the relevance index took the loaded models in");
    assert_eq!(hits.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_load_that_never_ended_is_made_anew_at_the_next_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (models, dirs) = library(tmp.path(), 3);
    // A rebuild killed after its first batch: models in, digests only staged.
    let store = Store::open(&models.join("models.db")).await.expect("open");
    store.load_many(&[record(&dirs[0])]).await.expect("load");
    assert!(store.load_interrupted().await.expect("user_version"));
    store.close().await;

    let (library, fresh) = Library::open_store(&models, Policy::default())
        .await
        .expect("open");
    assert!(fresh, "models.db is made anew");
    assert_eq!(library.store().count().await.expect("count"), 0);
    library.store().close().await;
    drop(library);

    let library = pumas_index::open::open(&models, Policy::default())
        .await
        .expect("open rebuilds models.db");
    assert_eq!(library.store().count().await.expect("count"), 3);
    for dir in &dirs {
        let record = record(dir);
        for digest in digests(&record) {
            assert_eq!(
                found_by(library.store(), &digest).await,
                vec![record.metadata.id.clone()]
            );
        }
    }
    library.store().close().await;
}
