//! The hub's JSON is input from the network: whatever a hub (or something posing as one)
//! answers for search, model info and tree listings, decoding and file selection never panic,
//! and no file name that could leave the download folder is ever called safe.

use proptest::prelude::*;
use pumas_fetch::hub::{HubModel, TreeEntry};
use pumas_fetch::select::{gguf_quantization, is_auxiliary, select, unsafe_path};
use serde_json::{Value, json};

/// Strings a hub might send: real-looking names, traversal attempts, odd characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model-Q4_K_M.gguf".to_owned()),
        Just("../../.ssh/authorized_keys".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("a//b".to_owned()),
        Just("sub/./x.safetensors".to_owned()),
        Just("mmproj-F16.gguf".to_owned()),
        Just("dir\\..\\x".to_owned()),
        Just("0123456789abcdef0123456789abcdef01234567".to_owned()),
        "[a-zA-Z0-9_./\\\\-]{0,40}",
        any::<String>(),
    ]
}

/// Any JSON value, a few levels deep, biased towards what hub fields hold.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field that is usually of the right type and sometimes of any other.
fn field(right: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![4 => right, 1 => value()].boxed()
}

fn model() -> impl Strategy<Value = Value> {
    (
        field(text().prop_map(Value::from)),
        field(text().prop_map(Value::from)),
        field(prop_oneof![
            Just(json!(false)),
            Just(json!("auto")),
            Just(json!("manual"))
        ]),
        field(any::<u64>().prop_map(Value::from)),
        field(proptest::collection::vec(text(), 0..4).prop_map(|v| json!(v))),
        field(
            proptest::collection::vec(text().prop_map(|p| json!({ "rfilename": p })), 0..6)
                .prop_map(Value::Array),
        ),
        field(text().prop_map(Value::from)),
        field(value()),
    )
        .prop_map(
            |(id, sha, gated, downloads, tags, siblings, modified, safetensors)| {
                json!({
                    "id": id, "sha": sha, "gated": gated, "downloads": downloads, "tags": tags,
                    "siblings": siblings, "lastModified": modified, "safetensors": safetensors,
                })
            },
        )
}

fn tree_entry() -> impl Strategy<Value = Value> {
    (
        field(prop_oneof![Just(json!("file")), Just(json!("directory"))]),
        field(text().prop_map(Value::from)),
        field(text().prop_map(Value::from)),
        field(any::<u64>().prop_map(Value::from)),
        proptest::option::of(field(
            (text(), any::<u64>()).prop_map(|(oid, size)| json!({ "oid": oid, "size": size })),
        )),
    )
        .prop_map(|(kind, path, oid, size, lfs)| {
            let mut entry = json!({ "type": kind, "path": path, "oid": oid, "size": size });
            if let Some(lfs) = lfs {
                entry["lfs"] = lfs;
            }
            entry
        })
}

/// What the download path does with a listing: every name is checked, then selected.
fn plan(paths: &[String], quant_from: Option<&String>) {
    for p in paths {
        if unsafe_path(p).is_none() {
            assert!(
                !p.starts_with('/') && !p.contains('\\') && !p.contains('\0'),
                "{p:?} called safe"
            );
            assert!(
                p.split('/').all(|s| s != ".." && s != "." && !s.is_empty()),
                "{p:?} called safe"
            );
        }
        let _ = gguf_quantization(p);
        let _ = is_auxiliary(p, 1 << 20);
    }
    let quant = quant_from.and_then(|p| gguf_quantization(p)).unwrap_or_default();
    let _ = select(
        paths,
        &["*.gguf".to_owned(), "**/*.json".to_owned()],
        &["*.bin".to_owned()],
        &quant,
    );
    let _ = select(paths, &[], &[], "");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn search_answers_never_panic(models in proptest::collection::vec(model(), 0..4)) {
        let body = serde_json::to_vec(&models).unwrap_or_default();
        if let Ok(models) = serde_json::from_slice::<Vec<HubModel>>(&body) {
            for m in &models {
                let _ = m.is_gated();
                let paths: Vec<String> = m.siblings.iter().map(|s| s.rfilename.clone()).collect();
                plan(&paths, paths.first());
            }
        }
    }

    #[test]
    fn model_info_never_panics(model in model()) {
        let body = serde_json::to_vec(&model).unwrap_or_default();
        if let Ok(m) = serde_json::from_slice::<HubModel>(&body) {
            let _ = m.is_gated();
            let paths: Vec<String> = m.siblings.iter().map(|s| s.rfilename.clone()).collect();
            plan(&paths, paths.last());
        }
    }

    #[test]
    fn tree_listings_never_panic(entries in proptest::collection::vec(tree_entry(), 0..8)) {
        let body = serde_json::to_vec(&entries).unwrap_or_default();
        if let Ok(entries) = serde_json::from_slice::<Vec<TreeEntry>>(&body) {
            let paths: Vec<String> = entries.iter().filter(|e| e.kind == "file").map(|e| e.path.clone()).collect();
            plan(&paths, paths.first());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<Vec<HubModel>>(&body);
        let _ = serde_json::from_slice::<HubModel>(&body);
        let _ = serde_json::from_slice::<Vec<TreeEntry>>(&body);
    }
}
