//! `pumas refresh` (read hub downloads' cards and counters again) and `pumas outdated` (which
//! hub downloads' repositories moved on, and which of their files changed).

use std::process::ExitCode;

use pumas_proto::gateway::v1::*;

use crate::client::GatewayArgs;
use crate::library::{explain, size_label};

/// Flags of `pumas refresh` and `pumas outdated`.
#[derive(Debug, clap::Args)]
pub struct HubModelsArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Models to look at (default: every model downloaded from the hub).
    model_ids: Vec<String>,
}

pub async fn refresh(args: HubModelsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.gateway.client()?;
    let answer = client
        .refresh_hub_metadata(RefreshHubMetadataRequest {
            model_ids: args.model_ids,
        })
        .await
        .map_err(explain)?
        .into_inner();
    if answer.models.is_empty() {
        println!("no models were downloaded from the hub");
    }
    let mut failed = false;
    for m in &answer.models {
        match (&m.error, &m.hub_metadata) {
            (Some(e), _) => {
                failed = true;
                println!("{}  failed: {}", m.model_id, e.message);
            }
            (None, Some(hub)) => println!(
                "{}  {}  {} downloads, {} likes",
                m.model_id,
                if hub.license.is_empty() {
                    "no license stated"
                } else {
                    hub.license.as_str()
                },
                hub.downloads,
                hub.likes
            ),
            (None, None) => println!("{}  refreshed", m.model_id),
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Exit 0 when every model is current, 1 when one is outdated or could not be checked.
pub async fn outdated(args: HubModelsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.gateway.client()?;
    let answer = client
        .check_updates(CheckUpdatesRequest {
            model_ids: args.model_ids,
        })
        .await
        .map_err(explain)?
        .into_inner();
    if answer.models.is_empty() {
        println!("no models were downloaded from the hub");
    }
    let short = |sha: &str| sha[..sha.len().min(12)].to_owned();
    let mut attention = false;
    for m in &answer.models {
        if let Some(e) = &m.error {
            attention = true;
            println!("{}  could not check: {}", m.model_id, e.message);
            continue;
        }
        if m.outdated {
            attention = true;
            println!(
                "{}  OUTDATED  {} {} moved {} -> {}",
                m.model_id,
                m.repo_id,
                m.revision,
                short(&m.pinned_commit),
                short(&m.current_commit)
            );
            for c in &m.changes {
                let (kind, size) = match FileChangeKind::try_from(c.kind) {
                    Ok(FileChangeKind::Modified) => (
                        "modified",
                        format!(
                            "{} -> {}",
                            size_label(c.old_size_bytes),
                            size_label(c.new_size_bytes)
                        ),
                    ),
                    Ok(FileChangeKind::Added) => ("added", size_label(c.new_size_bytes)),
                    Ok(FileChangeKind::Removed) => ("removed", size_label(c.old_size_bytes)),
                    _ => ("changed", String::new()),
                };
                println!("    {kind:<9} {:<50} {size}", c.path);
            }
        } else if m.current_commit != m.pinned_commit {
            println!(
                "{}  current  ({} moved to {}, none of this model's files changed)",
                m.model_id,
                m.revision,
                short(&m.current_commit)
            );
        } else {
            println!(
                "{}  current  ({}@{})",
                m.model_id,
                m.repo_id,
                short(&m.pinned_commit)
            );
        }
    }
    Ok(if attention {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
