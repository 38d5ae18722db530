//! Dependency commands of the terminal client: profiles (list, show, put, rm), bindings (bind,
//! unbind, bindings) and the pin-policy audit. They talk to the gateway, like any other client.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use pumas_proto::common::v1::{BindingOrigin, DependencyBinding, DependencyProfile, ProfileOrigin};
use pumas_proto::gateway::v1::*;

use crate::client::GatewayArgs;
use crate::library::explain;

/// `pumas profiles ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ProfilesCommand {
    /// Every profile version: built-in, from the user catalog, and published.
    List(GatewayArgs),
    /// One profile version with its variants and pins (the newest when no @VERSION).
    Show {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// PROFILE or PROFILE@VERSION.
        profile: String,
    },
    /// Publish a profile version from a JSON file (the catalog's format, docs/DEPENDENCIES.md).
    Put {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// The profile file.
        file: PathBuf,
    },
    /// Delete a published profile version.
    Rm {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// PROFILE@VERSION.
        profile: String,
        /// Delete even when models bind it (they then resolve as unknown_profile).
        #[arg(long)]
        force: bool,
    },
}

/// Flags of `pumas bind`.
#[derive(Debug, clap::Args)]
pub struct BindArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Model id.
    model_id: String,
    /// PROFILE@VERSION.
    profile: String,
    /// Backend key, e.g. torch-cuda, llama-cpp.
    #[arg(long)]
    backend: String,
    /// Platform selector: "*" (default), linux-*, linux-x86_64-cuda12.
    #[arg(long, default_value = "*")]
    platform: String,
}

/// Flags of `pumas unbind`.
#[derive(Debug, clap::Args)]
pub struct UnbindArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Binding id (see `pumas bindings MODEL`).
    binding_id: String,
}

/// Flags of `pumas bindings`.
#[derive(Debug, clap::Args)]
pub struct BindingsArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Model id (default: every model).
    model_id: Option<String>,
}

/// `pumas deps ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DepsCommand {
    /// Bindings whose profiles break the pin policy, with pins to fill in (exit 1 when any).
    Audit(GatewayArgs),
}

fn split_ref(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('@') {
        Some((id, version)) if !id.is_empty() && !version.is_empty() => {
            Ok((id.to_owned(), version.to_owned()))
        }
        _ => anyhow::bail!("`{text}` is not PROFILE@VERSION (e.g. diffusers-sd@1)"),
    }
}

fn origin(p: &DependencyProfile) -> &'static str {
    match ProfileOrigin::try_from(p.origin) {
        Ok(ProfileOrigin::BuiltIn) => "built-in",
        Ok(ProfileOrigin::UserCatalog) => "user catalog",
        _ => "published",
    }
}

pub async fn profiles(command: ProfilesCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProfilesCommand::List(gateway) => {
            let mut client = gateway.client()?;
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_dependency_profiles(ListDependencyProfilesRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                for p in &page.profiles {
                    let backends: std::collections::BTreeSet<&str> =
                        p.variants.iter().map(|v| v.backend_key.as_str()).collect();
                    println!(
                        "{}@{}  {}{}  [{}]  {}",
                        p.profile_id,
                        p.version,
                        origin(p),
                        if p.valid { "" } else { "  INVALID" },
                        backends.into_iter().collect::<Vec<_>>().join(", "),
                        p.description
                    );
                }
                if page.next_page_token.is_empty() {
                    return Ok(ExitCode::SUCCESS);
                }
                page_token = page.next_page_token;
            }
        }
        ProfilesCommand::Show { gateway, profile } => {
            let (profile_id, version) = match profile.split_once('@') {
                Some((id, v)) => (id.to_owned(), v.to_owned()),
                None => (profile.clone(), String::new()),
            };
            let p = gateway
                .client()?
                .get_dependency_profile(GetDependencyProfileRequest { profile_id, version })
                .await
                .map_err(explain)?
                .into_inner()
                .profile
                .unwrap_or_default();
            print_profile(&p);
            Ok(ExitCode::SUCCESS)
        }
        ProfilesCommand::Put { gateway, file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let parsed = pumas_index::catalog::parse_profile_file(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a profile file: {e}", file.display()))?;
            let p = gateway
                .client()?
                .put_dependency_profile(PutDependencyProfileRequest {
                    profile: Some(pumas_index::convert::profile(&parsed)),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .profile
                .unwrap_or_default();
            print_profile(&p);
            Ok(if p.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ProfilesCommand::Rm {
            gateway,
            profile,
            force,
        } => {
            let (profile_id, version) = split_ref(&profile)?;
            gateway
                .client()?
                .delete_dependency_profile(DeleteDependencyProfileRequest {
                    profile_id,
                    version,
                    force,
                })
                .await
                .map_err(explain)?;
            println!("deleted {profile}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_profile(p: &DependencyProfile) {
    println!(
        "{}@{}  {}  {}",
        p.profile_id,
        p.version,
        origin(p),
        p.content_hash
    );
    if !p.description.is_empty() {
        println!("  {}", p.description);
    }
    println!("  environment: {}", p.environment_kind);
    if !p.required_packages.is_empty() {
        println!("  requires pins of: {}", p.required_packages.join(", "));
    }
    for e in &p.validation_errors {
        println!("  error {} at {}: {}", e.code, e.field, e.message);
    }
    for v in &p.variants {
        println!("  {} on {}", v.backend_key, v.platform_selector);
        for r in &v.requirements {
            let index = if r.index_url.is_empty() {
                String::new()
            } else {
                format!("  --index-url {}", r.index_url)
            };
            println!("    {}{}{index}", r.name, r.exact_pin);
        }
    }
}

fn print_binding(b: &DependencyBinding) {
    let by = match BindingOrigin::try_from(b.origin) {
        Ok(BindingOrigin::Catalog) => format!("catalog rule {}", b.catalog_rule),
        _ => "user".to_owned(),
    };
    println!(
        "{}  {}  {}@{}  backend {}  platform {}  {}{}",
        b.binding_id,
        b.model_id,
        b.profile_id,
        b.profile_version,
        b.backend_key,
        b.platform_selector,
        by,
        if b.active.unwrap_or(true) {
            ""
        } else {
            "  (inactive)"
        }
    );
}

pub async fn bind(args: BindArgs) -> anyhow::Result<ExitCode> {
    let (profile_id, profile_version) = split_ref(&args.profile)?;
    let b = args
        .gateway
        .client()?
        .put_model_dependency_binding(PutModelDependencyBindingRequest {
            binding: Some(DependencyBinding {
                model_id: args.model_id,
                profile_id,
                profile_version,
                backend_key: args.backend,
                platform_selector: args.platform,
                ..Default::default()
            }),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .binding
        .unwrap_or_default();
    print_binding(&b);
    Ok(ExitCode::SUCCESS)
}

pub async fn unbind(args: UnbindArgs) -> anyhow::Result<ExitCode> {
    args.gateway
        .client()?
        .delete_model_dependency_binding(DeleteModelDependencyBindingRequest {
            binding_id: args.binding_id.clone(),
        })
        .await
        .map_err(explain)?;
    println!("removed binding {}", args.binding_id);
    Ok(ExitCode::SUCCESS)
}

pub async fn bindings(args: BindingsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.gateway.client()?;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_model_dependency_bindings(ListModelDependencyBindingsRequest {
                model_id: args.model_id.clone().unwrap_or_default(),
                page_size: 1000,
                page_token,
            })
            .await
            .map_err(explain)?
            .into_inner();
        page.bindings.iter().for_each(print_binding);
        if page.next_page_token.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        page_token = page.next_page_token;
    }
}

pub async fn deps(command: DepsCommand) -> anyhow::Result<ExitCode> {
    let DepsCommand::Audit(gateway) = command;
    let audit = gateway
        .client()?
        .audit_dependencies(AuditDependenciesRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "checked {} bindings: {} findings, {} naming a missing profile",
        audit.checked_binding_count,
        audit.findings.len(),
        audit.unknown_profile_binding_ids.len()
    );
    for f in &audit.findings {
        println!(
            "{}@{}  {} on {}  {} models  ({} bindings, e.g. {})",
            f.profile_id,
            f.profile_version,
            f.backend_key,
            f.platform_selector,
            f.modality,
            f.binding_count,
            f.binding_ids.first().map(String::as_str).unwrap_or("-")
        );
        for e in &f.validation_errors {
            println!("  {}: {}", e.code, e.message);
        }
        for (name, pin) in &f.suggested_pins {
            println!(
                "  add {name}{}",
                if pin.is_empty() {
                    "==<version>".to_owned()
                } else {
                    pin.clone()
                }
            );
        }
    }
    for id in &audit.unknown_profile_binding_ids {
        println!("binding {id} names a profile version that does not exist");
    }
    Ok(
        if audit.findings.is_empty() && audit.unknown_profile_binding_ids.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
