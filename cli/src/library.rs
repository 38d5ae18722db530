//! Library commands of the terminal client: import, search, show, rm, reindex. They talk to the
//! gateway, like any other client.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use pumas_proto::common::v1::{ImportMode, JobState, ModelFilter, ModelRecord, ModelState, ModelType};
use pumas_proto::gateway::v1::*;
use pumas_proto::index::v1::{ItemOutcome, Job};

use crate::client::GatewayArgs;

type Client = crate::client::GatewayClient;

fn client(args: &GatewayArgs) -> anyhow::Result<Client> {
    args.client()
}

/// A gRPC error as a person reads it.
pub(crate) fn explain(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt as _;
    let mut text = status.message().to_owned();
    if let Some(bad) = status.get_error_details().bad_request() {
        for v in &bad.field_violations {
            if !text.contains(&v.description) {
                text.push_str(&format!(" ({}: {})", v.field, v.description));
            }
        }
    }
    if status.code() == tonic::Code::Unavailable && text.contains("tcp connect") {
        text.push_str(" — is the suite running? Start it with `pumas up`.");
    }
    anyhow::anyhow!("{text} [{:?}]", status.code())
}

pub(crate) fn parse_type(name: &str) -> anyhow::Result<i32> {
    let wanted = format!("MODEL_TYPE_{}", name.to_ascii_uppercase().replace('-', "_"));
    ModelType::from_str_name(&wanted)
        .map(|t| t as i32)
        .ok_or_else(|| anyhow::anyhow!("`{name}` is not a model type (checkpoint, diffusion_model, lora, vae, text_encoder, clip_vision, controlnet, embedding, upscaler, llm, text_embedding, audio, vision)"))
}

fn type_label(value: i32) -> String {
    ModelType::try_from(value)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("MODEL_TYPE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "?".to_owned())
}

fn state_label(value: i32) -> String {
    ModelState::try_from(value)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("MODEL_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "?".to_owned())
}

pub(crate) fn size_label(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// How imported files are placed.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ModeArg {
    /// Copy the bytes.
    Copy,
    /// Move the files into the library.
    Move,
    /// Hard-link (same filesystem).
    Hardlink,
    /// Copy-on-write clone where supported.
    Reflink,
}

/// Flags of `pumas import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Files or directories to import.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// How to place the files.
    #[arg(long, value_enum, default_value = "copy")]
    mode: ModeArg,
    /// Model type, when detection should not decide.
    #[arg(long = "type")]
    model_type: Option<String>,
    /// Family, when detection should not decide.
    #[arg(long)]
    family: Option<String>,
    /// Display name (one model only).
    #[arg(long)]
    name: Option<String>,
    /// Tags to add (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Return once the job is accepted, without waiting.
    #[arg(long)]
    detach: bool,
}

pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.gateway)?;
    let mut paths = Vec::new();
    for p in &args.paths {
        let abs = std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))?;
        paths.push(abs.display().to_string());
    }
    let request = ImportModelsRequest {
        paths,
        mode: match args.mode {
            ModeArg::Copy => ImportMode::Copy,
            ModeArg::Move => ImportMode::Move,
            ModeArg::Hardlink => ImportMode::Hardlink,
            ModeArg::Reflink => ImportMode::Reflink,
        } as i32,
        model_type: args
            .model_type
            .as_deref()
            .map(parse_type)
            .transpose()?
            .unwrap_or(0),
        family: args.family.clone().unwrap_or_default(),
        display_name: args.name.clone().unwrap_or_default(),
        tags: args.tags.clone(),
        request_id: String::new(),
    };
    let job = client
        .import_models(request)
        .await
        .map_err(explain)?
        .into_inner()
        .job
        .unwrap_or_default();
    let job_id = job.status.as_ref().map(|s| s.job_id.clone()).unwrap_or_default();
    if args.detach {
        println!("import job {job_id} started");
        return Ok(ExitCode::SUCCESS);
    }
    let job = follow(&mut client, &job_id, "importing").await?;
    Ok(report(&job))
}

/// Streams a job with a progress bar until it ends.
async fn follow(client: &mut Client, job_id: &str, verb: &str) -> anyhow::Result<Job> {
    let mut stream = client
        .watch_import_job(WatchImportJobRequest {
            job_id: job_id.to_owned(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut last = Job::default();
    while let Some(update) = stream.message().await.map_err(explain)? {
        if let Some(job) = update.job {
            if let Some(p) = job.status.as_ref().and_then(|s| s.progress.as_ref()) {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
                let item = p.current_item.rsplit('/').next().unwrap_or_default();
                bar.set_message(format!("{verb} {}/{} {item}", p.items_done, p.items_total));
            }
            last = job;
        }
    }
    bar.finish_and_clear();
    Ok(last)
}

fn report(job: &Job) -> ExitCode {
    let mut failed = false;
    for r in &job.results {
        match ItemOutcome::try_from(r.outcome).unwrap_or(ItemOutcome::Unspecified) {
            ItemOutcome::Added => println!("added      {}  <- {}", r.model_id, r.source),
            ItemOutcome::Duplicate => println!(
                "duplicate  {}  <- {} (same content, nothing stored)",
                r.model_id, r.source
            ),
            ItemOutcome::Updated => println!("updated    {}", r.model_id),
            ItemOutcome::Missing => println!("missing    {}", r.model_id),
            ItemOutcome::Corrupt => println!("corrupt    {}", r.model_id),
            ItemOutcome::Unchanged => {}
            ItemOutcome::Failed | ItemOutcome::Unspecified => {
                failed = true;
                let why = r.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
                eprintln!("failed     {}: {why}", r.source);
            }
        }
    }
    let state = job.status.as_ref().map(|s| s.state).unwrap_or_default();
    if state == JobState::Cancelled as i32 {
        eprintln!("cancelled");
        return ExitCode::FAILURE;
    }
    if failed || state == JobState::Failed as i32 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Flags of `pumas search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Words to look for (empty lists everything).
    query: Vec<String>,
    /// Only this type.
    #[arg(long = "type")]
    model_type: Option<String>,
    /// Only this family.
    #[arg(long)]
    family: Option<String>,
    /// Only models with this tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only models under this license, e.g. apache-2.0 (repeatable: any of them).
    #[arg(long = "license")]
    licenses: Vec<String>,
    /// Only models derived from this base: a hub repo (org/name) or a library model id
    /// (repeatable: any of them).
    #[arg(long = "base-model")]
    base_models: Vec<String>,
    /// Only models with this hub pipeline tag, e.g. text-generation (repeatable: any of them).
    #[arg(long = "pipeline-tag")]
    pipeline_tags: Vec<String>,
    /// How many results.
    #[arg(long, default_value_t = 20)]
    limit: i32,
    /// Include Hugging Face Hub results.
    #[arg(long)]
    hub: bool,
}

pub async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.gateway)?;
    let filters = ModelFilter {
        model_types: args
            .model_type
            .as_deref()
            .map(parse_type)
            .transpose()?
            .into_iter()
            .collect(),
        families: args.family.clone().into_iter().collect(),
        tags: args.tags.clone(),
        licenses: args.licenses.clone(),
        base_models: args.base_models.clone(),
        pipeline_tags: args.pipeline_tags.clone(),
        ..Default::default()
    };
    let answer = client
        .search_models(SearchModelsRequest {
            query: args.query.join(" "),
            page_size: args.limit,
            include_hub: args.hub,
            filters: Some(filters),
            ..Default::default()
        })
        .await
        .map_err(explain)?
        .into_inner();
    if answer.results.is_empty() {
        println!("no models match");
    }
    for result in &answer.results {
        match &result.result {
            Some(search_result::Result::Local(view)) => {
                if let Some(m) = &view.model {
                    let unsafe_flag = if m.unsafe_format { "  [pickle: unsafe]" } else { "" };
                    println!(
                        "{:<48} {:<16} {:>10}  {:<8} {}{unsafe_flag}",
                        m.model_id,
                        type_label(m.model_type),
                        size_label(m.total_size_bytes),
                        state_label(m.state),
                        m.display_name
                    );
                }
            }
            Some(search_result::Result::Hub(hub)) => {
                if let Some(s) = &hub.summary {
                    println!(
                        "hub: {:<43} {:<16} {:>10}  downloads {}",
                        s.repo_id, s.pipeline_tag, "", s.downloads
                    );
                }
            }
            None => {}
        }
    }
    if answer.local_total_size > answer.results.len() as u64 {
        println!(
            "({} of {} local matches; use --limit for more)",
            answer.results.len(),
            answer.local_total_size
        );
    }
    if answer.hub_results_state == HubResultsState::Unavailable as i32 {
        eprintln!("hub results unavailable: {}", answer.hub_unavailable_reason);
    }
    Ok(ExitCode::SUCCESS)
}

/// Flags of `pumas show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Model id, e.g. lora/sdxl/detail-tweaker-xl.
    model_id: String,
    /// Also print the chat template a GGUF carries.
    #[arg(long)]
    chat_template: bool,
}

pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.gateway)?;
    let view = client
        .get_model(GetModelRequest {
            model_id: args.model_id.clone(),
            include_chat_template: args.chat_template,
            include_preview: false,
        })
        .await
        .map_err(explain)?
        .into_inner()
        .model
        .and_then(|v| v.model)
        .unwrap_or_default();
    print_model(&view);
    Ok(ExitCode::SUCCESS)
}

fn print_model(m: &ModelRecord) {
    println!("{}", m.model_id);
    println!("  name          {}", m.display_name);
    println!("  type/family   {} / {}", type_label(m.model_type), m.family);
    if !m.architecture.is_empty() {
        println!("  architecture  {}", m.architecture);
    }
    let format = pumas_proto::common::v1::ModelFormat::try_from(m.format)
        .map(|f| {
            f.as_str_name()
                .trim_start_matches("MODEL_FORMAT_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    println!(
        "  format        {format}{}",
        if m.unsafe_format {
            " (pickle: can run code when loaded)"
        } else {
            ""
        }
    );
    if !m.precision.is_empty() || !m.quantization.is_empty() {
        println!("  precision     {} {}", m.precision, m.quantization);
    }
    if let Some(n) = m.parameter_count {
        println!("  parameters    {n}");
    }
    println!("  size          {}", size_label(m.total_size_bytes));
    println!(
        "  state         {}{}",
        state_label(m.state),
        if m.state_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.state_reason)
        }
    );
    println!("  path          {}", m.library_path);
    if let Some(pumas_proto::common::v1::model_source::Source::Hub(h)) =
        m.source.as_ref().and_then(|s| s.source.as_ref())
    {
        println!(
            "  from          {}@{} ({})",
            h.repo_id,
            &h.commit_sha[..h.commit_sha.len().min(12)],
            h.revision
        );
    }
    if !m.license.is_empty() {
        println!("  license       {}", m.license);
    }
    if !m.description.is_empty() {
        println!("  description   {}", m.description);
    }
    if let Some(hub) = &m.hub {
        print_hub(hub, &m.derived_model_ids);
    }
    if !m.tags.is_empty() {
        println!("  tags          {}", m.tags.join(", "));
    }
    if !m.overridden_fields.is_empty() {
        println!("  your edits    {}", m.overridden_fields.join(", "));
    }
    if let Some(e) = &m.embedded {
        print_embedded(e);
    }
    for s in &m.side_files {
        println!(
            "  {:<13} {}/{} ({})",
            s.role.replace('_', " "),
            m.library_path,
            s.path,
            size_label(s.size_bytes)
        );
    }
    if !m.vision_projector_files.is_empty() {
        println!(
            "  projector     {} (llama.cpp: --mmproj)",
            m.vision_projector_files.join(", ")
        );
    }
    for b in &m.dependency_bindings {
        let by = if b.origin == pumas_proto::common::v1::BindingOrigin::Catalog as i32 {
            "the catalog"
        } else {
            "you"
        };
        println!(
            "  needs         {}@{} on {} ({}, bound by {by})",
            b.profile_id, b.profile_version, b.backend_key, b.platform_selector
        );
    }
    if m.dependency_bindings.is_empty() && m.declares_no_dependencies {
        println!("  needs         nothing (declared)");
    }
    println!("  files");
    for f in &m.files {
        println!(
            "    {:<50} {:>10}  {}",
            f.path,
            size_label(f.size_bytes),
            f.sha256
        );
    }
    if let Some(d) = &m.detection {
        println!(
            "  detection     confidence {:.2}{}",
            d.confidence,
            if d.runner_up.is_empty() {
                String::new()
            } else {
                format!(", runner-up {} ({:.2})", d.runner_up, d.runner_up_confidence)
            }
        );
        for e in &d.evidence {
            println!("    {} {} = {} -> {}", e.kind, e.key, e.value, e.supports);
        }
    }
}

/// What the hub says about the model, and its lineage in the library.
fn print_hub(hub: &pumas_proto::common::v1::HubMetadata, derived: &[String]) {
    let line = |label: &str, value: String| {
        if !value.is_empty() {
            println!("  {label:<13} {value}");
        }
    };
    line("pipeline", hub.pipeline_tag.clone());
    line("library", hub.library_name.clone());
    for b in &hub.base_models {
        let relation = pumas_proto::common::v1::BaseModelRelation::try_from(b.relation)
            .map(|r| {
                r.as_str_name()
                    .trim_start_matches("BASE_MODEL_RELATION_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let here = if b.model_ids.is_empty() {
            String::new()
        } else {
            format!(" — in the library: {}", b.model_ids.join(", "))
        };
        line("base model", format!("{} ({relation}){here}", b.repo_id));
    }
    line("derived", derived.join(", "));
    line("languages", hub.languages.join(", "));
    line("datasets", hub.datasets.join(", "));
    if hub.gated {
        line("gated", "yes: its files need an approved token".to_owned());
    }
    let read = hub
        .read_time
        .map(|t| t.to_string().chars().take(10).collect::<String>())
        .unwrap_or_default();
    line(
        "popularity",
        format!("{} downloads, {} likes (read {read})", hub.downloads, hub.likes),
    );
}

/// What the model's files say about themselves, as `pumas show` prints it.
fn print_embedded(e: &pumas_proto::common::v1::EmbeddedMetadata) {
    let line = |label: &str, value: String| {
        if !value.is_empty() {
            println!("  {label:<13} {value}");
        }
    };
    let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    line("title", e.title.clone());
    line("author", e.author.clone());
    line("license", e.license.clone());
    line("base model", e.base_model.clone());
    line("context", number(e.context_length));
    let shape: Vec<String> = [
        ("embedding", e.embedding_length),
        ("blocks", e.block_count),
        ("heads", e.head_count),
        ("kv heads", e.head_count_kv),
    ]
    .iter()
    .filter_map(|(label, n)| n.map(|n| format!("{label} {n}")))
    .collect();
    line("shape", shape.join(", "));
    line(
        "rope base",
        e.rope_freq_base.map(|f| f.to_string()).unwrap_or_default(),
    );
    line(
        "tokenizer",
        format!(
            "{}{}",
            e.tokenizer_model,
            if e.has_chat_template {
                " (with a chat template)"
            } else {
                ""
            }
        )
        .trim()
        .to_owned(),
    );
    line("triggers", e.trigger_words.join(", "));
    line(
        "network",
        match (e.network_dim, e.network_alpha) {
            (Some(d), Some(a)) => format!("dim {d}, alpha {a}"),
            (Some(d), None) => format!("dim {d}"),
            _ => String::new(),
        },
    );
    line("output name", e.output_name.clone());
    line("about", e.description.clone());
    if !e.chat_template.is_empty() {
        println!("  chat template");
        for l in e.chat_template.lines() {
            println!("    {l}");
        }
    }
}

/// Flags of `pumas rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Model id.
    model_id: String,
    /// Delete even while apps link to it (their links are removed).
    #[arg(long)]
    force: bool,
}

pub async fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.gateway)?;
    let answer = client
        .delete_model(DeleteModelRequest {
            model_id: args.model_id.clone(),
            force: args.force,
            request_id: String::new(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "deleted {} ({} freed)",
        args.model_id,
        size_label(answer.freed_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// Flags of `pumas reindex`.
#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub async fn reindex(args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.gateway)?;
    let job = client
        .reindex(ReindexRequest::default())
        .await
        .map_err(explain)?
        .into_inner()
        .job
        .unwrap_or_default();
    let job_id = job.status.map(|s| s.job_id).unwrap_or_default();
    let job = follow(&mut client, &job_id, "scanning").await?;
    let items = job
        .status
        .as_ref()
        .and_then(|s| s.progress.as_ref())
        .map(|p| p.items_done)
        .unwrap_or_default();
    let code = report(&job);
    println!("reindexed {items} model folders");
    Ok(code)
}

/// Flags of `pumas resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Model id.
    model_id: String,
    /// Platform key, e.g. linux-x86_64 or linux-x86_64-cuda12 (default: this machine, no accelerator).
    #[arg(long)]
    platform: Option<String>,
    /// Backend key, e.g. torch-cuda (default: every backend).
    #[arg(long, default_value = "")]
    backend: String,
}

pub async fn resolve(args: ResolveArgs) -> anyhow::Result<ExitCode> {
    use pumas_proto::common::v1::{PlatformContext, ValidationState};
    let mut client = client(&args.gateway)?;
    let platform_context = match &args.platform {
        Some(key) => PlatformContext {
            platform_key: key.clone(),
            ..Default::default()
        },
        None => PlatformContext {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            ..Default::default()
        },
    };
    let r = client
        .resolve_model_dependency_requirements(ResolveModelDependencyRequirementsRequest {
            model_id: args.model_id.clone(),
            platform_context: Some(platform_context),
            backend_key: args.backend.clone(),
            expected_dependency_contract_version: Some(pumas_proto::DEPENDENCY_CONTRACT_VERSION),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .requirements
        .unwrap_or_default();
    let label = |v: i32| {
        ValidationState::try_from(v)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("VALIDATION_STATE_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    };
    println!(
        "{}  platform {}  backend {}  contract v{}",
        r.model_id,
        r.platform_key,
        if r.backend_key.is_empty() {
            "any"
        } else {
            r.backend_key.as_str()
        },
        r.dependency_contract_version
    );
    println!("state: {}", label(r.validation_state));
    // The top level repeats the groups' errors; they are shown under their group.
    for e in r
        .validation_errors
        .iter()
        .filter(|e| e.scope != pumas_proto::common::v1::ValidationScope::Binding as i32)
    {
        println!("  error {}: {}", e.code, e.message);
    }
    for g in &r.groups {
        println!(
            "binding {}  profile {}@{}  backend {}  {}  {}",
            g.binding_id,
            g.profile_id,
            g.profile_version,
            g.backend_key,
            label(g.validation_state),
            if g.env_id.is_empty() {
                String::new()
            } else {
                format!("env {}", g.env_id)
            }
        );
        for e in &g.validation_errors {
            println!("  error {}: {}", e.code, e.message);
        }
        for req in &g.requirements {
            let index = if req.index_url.is_empty() {
                String::new()
            } else {
                format!("  --index-url {}", req.index_url)
            };
            let markers = if req.markers.is_empty() {
                String::new()
            } else {
                format!(" ; {}", req.markers)
            };
            println!("  {}{}{markers}{index}", req.name, req.exact_pin);
        }
    }
    Ok(if r.validation_state == ValidationState::Resolved as i32 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
