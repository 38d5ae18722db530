//! Concurrent writers through `pumas up` with its default settings, the way a UI or a script
//! calls it: every job's answer must match the library afterwards (an item reported ADDED is
//! there, a FAILED item left nothing behind), and concurrent metadata updates are all kept.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, bail};
use pumas_e2e::library::{import_items, write_lora};
use pumas_e2e::{Suite, channel};
use pumas_proto::common::v1::ImportMode;
use pumas_proto::gateway::v1::UpdateModelMetadataRequest;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::{GetModelRequest, ItemOutcome, ModelOverrides};

/// Calls sent at once (the number a user saw fail before).
const AT_ONCE: usize = 26;

/// Model folders (`<type>/<family>/<slug>` holding a metadata.json) under the models root.
fn model_folders(models: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for t in std::fs::read_dir(models)?.flatten().filter(|e| e.path().is_dir()) {
        let type_name = t.file_name().to_string_lossy().into_owned();
        if type_name.starts_with('.') {
            continue;
        }
        for f in std::fs::read_dir(t.path())?.flatten() {
            for s in std::fs::read_dir(f.path())?.flatten() {
                if s.path().join("metadata.json").is_file() {
                    out.insert(format!(
                        "{type_name}/{}/{}",
                        f.file_name().to_string_lossy(),
                        s.file_name().to_string_lossy()
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn twenty_six_imports_at_once_all_end_consistent_with_the_library() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let mut index = IndexServiceClient::new(channel(&suite.index).await?);
    let sources = suite.data_root.path().join("incoming");
    let models = suite.root().join("shared-resources").join("models");
    let mut expected_added = 0;
    let mut all_added: BTreeSet<String> = BTreeSet::new();

    for round in 0..2u8 {
        // Every file has its own bytes, but they share one name (so one slug is contended);
        // two of them have the same bytes as another (a DUPLICATE, never a second copy); half
        // are MOVEs.
        let mut calls = Vec::new();
        for n in 0..AT_ONCE {
            let seed = if n >= AT_ONCE - 2 { 1 } else { n as u8 + 1 } + round * 100;
            let path = sources.join(format!("r{round}-{n}")).join("style.safetensors");
            write_lora(&path, seed)?;
            let mode = if n % 2 == 0 {
                ImportMode::Move
            } else {
                ImportMode::Copy
            };
            calls.push((path, mode));
        }
        let mut tasks = Vec::new();
        for (path, mode) in &calls {
            let (mut gateway, path, mode) = (gateway.clone(), path.clone(), *mode);
            tasks.push(tokio::spawn(async move {
                import_items(&mut gateway, &path, mode).await
            }));
        }
        let mut added = 0;
        let mut duplicates = 0;
        for ((path, mode), task) in calls.iter().zip(tasks) {
            let items = task.await??;
            let [item] = items.as_slice() else {
                bail!("one item per call expected: {items:?}");
            };
            match ItemOutcome::try_from(item.outcome) {
                Ok(ItemOutcome::Added) => {
                    added += 1;
                    let got = index
                        .get_model(GetModelRequest {
                            model_id: item.model_id.clone(),
                            include_chat_template: false,
                            include_preview: false,
                        })
                        .await
                        .with_context(|| {
                            format!("{} reported ADDED but is not in the index", item.model_id)
                        })?;
                    assert!(got.into_inner().model.is_some());
                    assert!(
                        all_added.insert(item.model_id.clone()),
                        "two items got the id {}",
                        item.model_id
                    );
                    if *mode == ImportMode::Move {
                        assert!(!path.exists(), "a MOVE that was added left its source");
                    }
                }
                Ok(ItemOutcome::Duplicate) => {
                    duplicates += 1;
                    assert!(path.exists(), "a duplicate's source must stay where it was");
                }
                other => bail!("item for {} ended {other:?}: {:?}", path.display(), item.error),
            }
        }
        assert_eq!(
            added,
            AT_ONCE - 2,
            "round {round}: every distinct file is added once"
        );
        assert_eq!(duplicates, 2, "round {round}: identical bytes are one model");
        expected_added += added;
    }

    // The library on disk and the index agree with what the jobs answered.
    let on_disk = model_folders(&models)?;
    assert_eq!(on_disk.len(), expected_added, "folders: {on_disk:?}");
    assert_eq!(
        on_disk, all_added,
        "the folders are exactly the models reported ADDED"
    );
    let staging = models.join(".staging");
    let leftovers: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "staging keeps {leftovers:?}");
    let log = suite.process.log();
    assert!(
        !log.contains("database is locked"),
        "the log shows SQLITE_BUSY:\n{log}"
    );
    println!(
        "{} imports at once x 2 rounds: {expected_added} added, 4 duplicates, 0 failed",
        AT_ONCE
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_metadata_updates_to_one_model_are_all_kept() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let mut gateway = ModelLibraryServiceClient::new(channel(&suite.gateway).await?);
    let path = suite.data_root.path().join("in").join("one.safetensors");
    write_lora(&path, 7)?;
    let id = pumas_e2e::library::import(&mut gateway, &path).await?;

    // Each call sets a different field; read-modify-write without a lock would drop some.
    let update = |overrides: ModelOverrides, field: &str| UpdateModelMetadataRequest {
        update: Some(pumas_proto::index::v1::UpdateModelMetadataRequest {
            model_id: id.clone(),
            overrides: Some(overrides),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![field.to_owned()],
            }),
            request_id: String::new(),
        }),
    };
    let requests = vec![
        update(
            ModelOverrides {
                description: Some("kept description".to_owned()),
                ..Default::default()
            },
            "description",
        ),
        update(
            ModelOverrides {
                tags: vec!["kept-tag".to_owned()],
                ..Default::default()
            },
            "tags",
        ),
        update(
            ModelOverrides {
                license: Some("kept-license".to_owned()),
                ..Default::default()
            },
            "license",
        ),
        update(
            ModelOverrides {
                display_name: Some("Kept Name".to_owned()),
                ..Default::default()
            },
            "display_name",
        ),
    ];
    for _ in 0..5 {
        let mut tasks = Vec::new();
        for request in requests.clone() {
            let mut client = gateway.clone();
            tasks.push(tokio::spawn(async move {
                client.update_model_metadata(request).await
            }));
        }
        for task in tasks {
            task.await??;
        }
    }
    let mut index = IndexServiceClient::new(channel(&suite.index).await?);
    let model = index
        .get_model(GetModelRequest {
            model_id: id.clone(),
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .context("model")?;
    assert_eq!(model.description, "kept description");
    assert!(model.tags.contains(&"kept-tag".to_owned()), "{:?}", model.tags);
    assert_eq!(model.license, "kept-license");
    assert_eq!(model.display_name, "Kept Name");
    Ok(())
}
