//! Hostile text: whatever a user types in the search box, and whatever a metadata.json or
//! overrides.json holds (they are plain files anyone can edit), the index neither panics nor
//! hands SQLite an expression it cannot parse, nor indexes a record outside its folder.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use pumas_index::library::{Library, Policy};
use pumas_index::metadata::{Metadata, Overrides};
use pumas_index::store::{After, Filter, Order, Record};
use serde_json::{Value, json};

/// One library of 600 synthetic models (enough for the streamed plan above 500 matches),
/// shared by every case, with the runtime that drives it.
fn library() -> &'static (tokio::runtime::Runtime, Arc<Library>, tempfile::TempDir) {
    static LIBRARY: OnceLock<(tokio::runtime::Runtime, Arc<Library>, tempfile::TempDir)> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        pumas_index::synthetic::generate(dir.path(), 600).expect("synthetic library");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let models = dir.path().join("shared-resources/models");
        let library = runtime
            .block_on(pumas_index::open::open(&models, Policy::default()))
            .expect("open the library");
        (runtime, library, dir)
    })
}

/// What users type: search words, operators, quotes, stars, dashes, and anything else.
fn query() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("OR".to_owned()),
        Just("AND".to_owned()),
        Just("NOT".to_owned()),
        Just("-".to_owned()),
        Just("\"".to_owned()),
        Just("*".to_owned()),
        Just("(".to_owned()),
        Just(":".to_owned()),
        Just("NEAR(".to_owned()),
        Just("^".to_owned()),
        Just("llama".to_owned()),
        Just("fts_name:".to_owned()),
        "[a-z0-9_éß]{1,8}\\*?",
        "[ -~]{1,6}",
    ];
    prop_oneof![
        4 => proptest::collection::vec((token, prop_oneof![Just(" "), Just("")]), 0..8)
            .prop_map(|parts| parts.into_iter().map(|(t, sep)| format!("{t}{sep}")).collect()),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Every query the parser accepts runs, in the ranking index (relevance) and as FTS5
    /// (sorted); what it refuses is refused with a reason.
    #[test]
    fn every_built_query_runs(q in query()) {
        let (runtime, library, _) = library();
        match pumas_index::query::parse(&q) {
            Ok(None) => {}
            Ok(Some(parsed)) => {
                for order in [Order::Relevance, Order::Name] {
                    let page = runtime.block_on(library.store().page(Some(&parsed), &Filter::default(), order, &After::Start, 20));
                    prop_assert!(page.is_ok(), "{q:?} -> {:?}: {:?}", parsed.to_fts(), page.err());
                }
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }
}

/// A real metadata.json of the synthetic library, as a template to break.
fn template() -> Value {
    let (_, library, _) = library();
    let runtime = &library_runtime();
    let ids = runtime.block_on(library.store().all_ids()).expect("ids");
    let record = runtime
        .block_on(library.store().get(&ids[0]))
        .expect("get")
        .expect("a record");
    serde_json::to_value(&record.metadata).expect("metadata to JSON")
}

fn library_runtime() -> &'static tokio::runtime::Runtime {
    &library().0
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("../../../etc".to_owned()),
            Just("lora/sdxl/../../x".to_owned()),
            Just(String::new()),
            any::<String>(),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The template with up to five of its fields (or nested fields) replaced by anything.
fn metadata_json() -> impl Strategy<Value = Vec<u8>> {
    let template = template();
    let keys: Vec<String> = template
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    proptest::collection::vec((proptest::sample::select(keys), value()), 0..5).prop_map(move |edits| {
        let mut doc = template.clone();
        for (key, v) in edits {
            doc[key.as_str()] = v;
        }
        serde_json::to_vec(&doc).unwrap_or_default()
    })
}

fn overrides_json() -> impl Strategy<Value = Vec<u8>> {
    let fields = [
        "display_name",
        "model_type",
        "family",
        "tags",
        "description",
        "license",
        "schema_version",
        "x",
    ];
    proptest::collection::vec((proptest::sample::select(fields.to_vec()), value()), 0..5).prop_map(|edits| {
        let mut doc = json!({});
        for (key, v) in edits {
            doc[key] = v;
        }
        serde_json::to_vec(&doc).unwrap_or_default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// A metadata.json and overrides.json of any content decode or are refused, and what
    /// decodes becomes an API record without a panic.
    #[test]
    fn metadata_and_overrides_files_never_panic(meta in metadata_json(), over in overrides_json()) {
        let root = Path::new("/library/models");
        if let Ok(metadata) = serde_json::from_slice::<Metadata>(&meta) {
            let overrides = serde_json::from_slice::<Overrides>(&over).unwrap_or_default();
            let merged = overrides.apply(&metadata);
            let record = Record { metadata: merged, overridden: overrides.overridden_fields() };
            let _ = pumas_index::convert::model(&record, root);
        }
    }
}

/// Hand-broken metadata files in a library: the index starts, indexes only records that sit in
/// their own folder, and says what it skipped.
#[tokio::test]
async fn a_library_of_broken_metadata_files_still_opens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    pumas_index::synthetic::generate(dir.path(), 3)?;
    let models = dir.path().join("shared-resources/models");
    let good = pumas_index::open::open(&models, Policy::default())
        .await?
        .store()
        .all_ids()
        .await?;
    drop(good.clone());
    let source = models.join(&good[0]).join("metadata.json");
    let text = std::fs::read_to_string(&source)?;
    let doc: Value = serde_json::from_str(&text)?;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("lora/sdxl/not-json", b"{ this is not json".to_vec()),
        ("lora/sdxl/empty", Vec::new()),
        (
            "lora/sdxl/wrong-types",
            serde_json::to_vec(&{
                let mut d = doc.clone();
                d["files"] = json!("nope");
                d["total_size"] = json!(-5);
                d
            })?,
        ),
        (
            "lora/sdxl/escapes",
            serde_json::to_vec(&{
                let mut d = doc.clone();
                d["id"] = json!("../../../../etc/passwd");
                d
            })?,
        ),
        (
            "lora/sdxl/claims-another",
            serde_json::to_vec(&{
                let mut d = doc.clone();
                d["id"] = json!(good[1]);
                d
            })?,
        ),
        (
            "lora/sdxl/huge-numbers",
            serde_json::to_vec(&{
                let mut d = doc.clone();
                d["parameter_count"] = json!(u64::MAX);
                d["schema_version"] = json!(u32::MAX);
                d
            })?,
        ),
    ];
    for (id, bytes) in &cases {
        let folder = models.join(id);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("metadata.json"), bytes)?;
    }
    std::fs::remove_file(models.join("models.db"))?;
    let library = pumas_index::open::open(&models, Policy::default()).await?;
    let ids = library.store().all_ids().await?;
    for id in &ids {
        let record = library
            .store()
            .get(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{id} vanished"))?;
        assert_eq!(&record.metadata.id, id, "a record sits in its own folder");
        assert!(
            models.join(id).join("metadata.json").is_file(),
            "{id} has a folder"
        );
    }
    for original in &good {
        assert!(ids.contains(original), "{original} is still indexed: {ids:?}");
    }
    assert!(!ids.iter().any(|i| i.contains("..")), "{ids:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Model ids come from callers: any string is a model, a NOT_FOUND or an INVALID_ARGUMENT,
    /// and never a folder outside the library.
    #[test]
    fn any_model_id_is_answered(id in prop_oneof![
        any::<String>(),
        "[a-z_]{1,8}/[a-z0-9.]{0,8}/[a-z0-9.é/-]{0,12}",
        Just("../../etc/passwd".to_owned()),
        Just("lora/sdxl/..".to_owned()),
        Just("lora//x".to_owned()),
    ]) {
        let (runtime, library, _) = library();
        let _ = pumas_index::slug::slugify(&id);
        let _ = pumas_index::slug::parse_model_id(&id);
        if let Ok(dir) = library.model_dir(&id) {
            prop_assert!(dir.starts_with(library.root()), "{id:?} -> {}", dir.display());
            prop_assert!(!dir.components().any(|c| c == std::path::Component::ParentDir), "{id:?}");
        }
        match runtime.block_on(library.get(&id)) {
            Ok(record) => prop_assert_eq!(record.metadata.id, id),
            Err(pumas_index::error::IndexError::ModelNotFound(_) | pumas_index::error::IndexError::Invalid { .. }) => {}
            Err(other) => prop_assert!(false, "{id:?}: {other}"),
        }
    }
}
