//! App mapping commands of the terminal client: `apps`, `map preview|apply|repair <app>`,
//! `unmap <app>`. They talk to the gateway, which addresses mappers by name.

use std::process::ExitCode;

use pumas_proto::common::v1::JobState;
use pumas_proto::gateway::v1::*;
use pumas_proto::mapper::v1::{LinkActionKind, MappingJob, MappingPlan};

use crate::client::{GatewayArgs, GatewayClient};
use crate::library::explain;

/// Flags of `pumas apps`.
#[derive(Debug, clap::Args)]
pub struct AppsArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Only this mapper (host); default all.
    #[arg(long, default_value = "")]
    mapper: String,
}

/// `pumas map ...`.
#[derive(Debug, clap::Subcommand)]
pub enum MapCommand {
    /// Show every link apply would create, replace or remove, the conflicts and the warnings.
    Preview(MapArgs),
    /// Make the app's links match the library (idempotent).
    Apply(MapArgs),
    /// Fix broken, dangling and hand-removed links; report what cannot be fixed safely.
    Repair(MapArgs),
}

/// Flags of the map commands and `unmap`.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// App name (its mapping config's file name).
    app: String,
    /// Mapper (host) name; default the local one.
    #[arg(long, default_value = "")]
    mapper: String,
    /// Apply: move foreign files that are in the way aside instead of skipping them.
    #[arg(long)]
    replace_conflicts: bool,
    /// Preview: also list the links that are already right.
    #[arg(long)]
    all: bool,
}

pub async fn apps(args: AppsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.gateway.client()?;
    let mappers = client
        .list_apps(ListAppsRequest { mapper: args.mapper })
        .await
        .map_err(explain)?
        .into_inner()
        .mappers;
    for m in mappers {
        if m.unavailable {
            println!("{}: unavailable ({})", m.mapper, m.reason);
            continue;
        }
        if m.apps.is_empty() {
            println!(
                "{}: no apps configured (write <data root>/launcher-data/mapping-configs/<app>.toml)",
                m.mapper
            );
        }
        for a in m.apps {
            let errors: Vec<String> = a
                .config_errors
                .iter()
                .map(|e| format!("line {}: {}", e.line, e.message))
                .collect();
            if a.unmapped_time.is_some() {
                println!(
                    "{}/{}  {:<9} {}  unmapped (`pumas map apply {}` links it again)",
                    m.mapper, a.name, a.kind, a.root, a.name
                );
            } else if errors.is_empty() {
                println!(
                    "{}/{}  {:<9} {}  {} links, {} broken",
                    m.mapper, a.name, a.kind, a.root, a.link_count, a.broken_count
                );
            } else {
                println!("{}/{}  invalid config: {}", m.mapper, a.name, errors.join("; "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &MappingPlan, verb: &str) {
    for a in &plan.actions {
        let kind = LinkActionKind::try_from(a.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("LINK_ACTION_KIND_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let reason = if a.reason.is_empty() {
            String::new()
        } else {
            format!("  ({})", a.reason)
        };
        println!("{kind:<8} {}{reason}", a.target_path);
    }
    for w in &plan.warnings {
        println!("warning  [{}] {}", w.code, w.message);
    }
    println!(
        "{verb}: {} to create, {} to replace, {} to remove, {} conflicts, {} unchanged",
        plan.create_count, plan.replace_count, plan.remove_count, plan.conflict_count, plan.keep_count
    );
}

async fn follow(
    client: &mut GatewayClient,
    job: Option<MappingJob>,
    mapper: &str,
) -> anyhow::Result<ExitCode> {
    let id = job.and_then(|j| j.status).map(|s| s.job_id).unwrap_or_default();
    let mut stream = client
        .watch_mapping_job(WatchMappingJobRequest {
            job_id: id,
            mapper: mapper.to_owned(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let mut last = MappingJob::default();
    while let Some(update) = stream.message().await.map_err(explain)? {
        if let Some(job) = update.job {
            last = job;
        }
    }
    if let Some(plan) = &last.plan {
        print_plan(plan, "done");
    }
    for w in &last.unresolved {
        eprintln!("unresolved [{}] {}", w.code, w.message);
    }
    let status = last.status.unwrap_or_default();
    if status.state != JobState::Succeeded as i32 {
        eprintln!("failed: {}", status.error.map(|e| e.message).unwrap_or_default());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn map(command: MapCommand) -> anyhow::Result<ExitCode> {
    match command {
        MapCommand::Preview(a) => {
            let mut client = a.gateway.client()?;
            let plan = client
                .preview_mapping(PreviewMappingRequest {
                    app: a.app,
                    mapper: a.mapper,
                    include_unchanged: a.all,
                })
                .await
                .map_err(explain)?
                .into_inner()
                .plan
                .unwrap_or_default();
            print_plan(&plan, "plan");
            Ok(ExitCode::SUCCESS)
        }
        MapCommand::Apply(a) => {
            let mut client = a.gateway.client()?;
            let job = client
                .apply_mapping(ApplyMappingRequest {
                    app: a.app,
                    mapper: a.mapper.clone(),
                    replace_conflicts: a.replace_conflicts,
                    request_id: String::new(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .job;
            follow(&mut client, job, &a.mapper).await
        }
        MapCommand::Repair(a) => {
            let mut client = a.gateway.client()?;
            let job = client
                .repair_mapping(RepairMappingRequest {
                    app: a.app,
                    mapper: a.mapper.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .job;
            follow(&mut client, job, &a.mapper).await
        }
    }
}

pub async fn unmap(a: MapArgs) -> anyhow::Result<ExitCode> {
    let mut client = a.gateway.client()?;
    let job = client
        .unmap(UnmapRequest {
            app: a.app,
            mapper: a.mapper.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .job;
    follow(&mut client, job, &a.mapper).await
}

/// Flags of `pumas adopt`.
#[derive(Debug, clap::Args)]
pub struct AdoptArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// App name.
    app: String,
    /// Mapper (host) name; default the local one.
    #[arg(long, default_value = "")]
    mapper: String,
    /// Adopt without asking.
    #[arg(long, short = 'y')]
    yes: bool,
}

pub async fn adopt(a: AdoptArgs) -> anyhow::Result<ExitCode> {
    let mut client = a.gateway.client()?;
    let preview = client
        .preview_adoption(PreviewAdoptionRequest {
            app: a.app.clone(),
            mapper: a.mapper.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    if preview.candidates.is_empty() {
        println!("{} has no model files of its own to adopt", a.app);
        return Ok(ExitCode::SUCCESS);
    }
    for c in &preview.candidates {
        let what = if !c.existing_model_id.is_empty() {
            format!("already in the library as {}", c.existing_model_id)
        } else if !c.duplicate_paths.is_empty() {
            format!("new; {} identical copies in this app", c.duplicate_paths.len())
        } else {
            "new".to_owned()
        };
        println!(
            "{:>10}  {}  ({what})",
            crate::library::size_label(c.size_bytes),
            c.path
        );
    }
    println!(
        "adopting moves {} files into the library, links them back, and frees {}",
        preview.candidates.len(),
        crate::library::size_label(preview.reclaimable_bytes)
    );
    if !a.yes {
        eprint!("adopt them? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing changed");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let job = client
        .start_adoption(StartAdoptionRequest {
            app: a.app,
            mapper: a.mapper.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .job;
    follow(&mut client, job, &a.mapper).await
}
