//! Hub and download commands of the terminal client: `hub search`, `download` (with a live
//! progress bar, or `--detach`), `downloads`, `pause`, `resume`, `cancel`.

use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use pumas_proto::fetch::v1::{Download, DownloadState, FileSelection, HubSort};
use pumas_proto::gateway::v1::*;

use crate::client::GatewayArgs;
use crate::library::{explain, parse_type, size_label};

/// `pumas hub ...`.
#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Search the Hugging Face Hub (cached; says when an answer is stale).
    Search(HubSearchArgs),
}

/// Hub sort order.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SortArg {
    Downloads,
    Likes,
    Modified,
    Created,
    Trending,
}

/// Flags of `pumas hub search`.
#[derive(Debug, clap::Args)]
pub struct HubSearchArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Words to look for.
    query: Vec<String>,
    /// Only this author or organisation.
    #[arg(long)]
    author: Option<String>,
    /// Only repositories with this tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only this pipeline, e.g. text-generation.
    #[arg(long)]
    pipeline: Option<String>,
    /// Only this library, e.g. gguf or diffusers.
    #[arg(long)]
    library: Option<String>,
    /// Sort order (default: the hub's).
    #[arg(long, value_enum)]
    sort: Option<SortArg>,
    /// How many results.
    #[arg(long, default_value_t = 20)]
    limit: i32,
    /// Ask the hub even when a fresh cached answer exists.
    #[arg(long)]
    refresh: bool,
}

/// Flags of `pumas download`.
#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Hub repository, `org/name`.
    #[arg(required_unless_present = "update")]
    repo: Option<String>,
    /// Update this library model instead: fetch only its files that changed since its pinned
    /// commit (see `pumas outdated`), keeping the old ones until the new ones are verified.
    #[arg(long, value_name = "MODEL", conflicts_with_all = ["include", "exclude", "quant", "model_type", "family"])]
    update: Option<String>,
    /// Branch, tag or commit (pinned to its commit when the download starts; default main, or
    /// the revision the updated model follows).
    #[arg(long)]
    revision: Option<String>,
    /// Only files matching this glob (repeatable), e.g. '*.safetensors'.
    #[arg(long = "include")]
    include: Vec<String>,
    /// Skip files matching this glob (repeatable).
    #[arg(long = "exclude")]
    exclude: Vec<String>,
    /// For GGUF repositories: the quantization to fetch, e.g. Q4_K_M.
    #[arg(long)]
    quant: Option<String>,
    /// Model type, when detection should not decide.
    #[arg(long = "type")]
    model_type: Option<String>,
    /// Family, when detection should not decide.
    #[arg(long)]
    family: Option<String>,
    /// Priority; higher runs first.
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Return once the download is queued, without following it.
    #[arg(long)]
    detach: bool,
}

/// Flags of `pumas downloads`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Only downloads that are not finished.
    #[arg(long)]
    active: bool,
}

/// Flags of the commands that act on one download.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The download id (from `pumas downloads`).
    download_id: String,
}

fn state_label(state: i32) -> String {
    DownloadState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("DOWNLOAD_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "?".to_owned())
}

pub async fn hub(command: HubCommand) -> anyhow::Result<ExitCode> {
    let HubCommand::Search(args) = command;
    let mut client = args.gateway.client()?;
    let response = client
        .search_hub(SearchHubRequest {
            search: Some(pumas_proto::fetch::v1::SearchHubRequest {
                query: args.query.join(" "),
                author: args.author.unwrap_or_default(),
                tags: args.tags,
                pipeline_tag: args.pipeline.unwrap_or_default(),
                library: args.library.unwrap_or_default(),
                sort: match args.sort {
                    None => HubSort::Unspecified,
                    Some(SortArg::Downloads) => HubSort::Downloads,
                    Some(SortArg::Likes) => HubSort::Likes,
                    Some(SortArg::Modified) => HubSort::LastModified,
                    Some(SortArg::Created) => HubSort::CreatedAt,
                    Some(SortArg::Trending) => HubSort::Trending,
                } as i32,
                page_size: args.limit,
                page_token: String::new(),
                refresh: args.refresh,
            }),
        })
        .await
        .map_err(explain)?
        .into_inner();
    if response.stale {
        eprintln!("(the hub is not answering; these results are from the cache and may be out of date)");
    }
    if response.results.is_empty() {
        println!("no hub models match");
    }
    for r in &response.results {
        let Some(s) = &r.summary else { continue };
        let mark = if r.in_library {
            "  [in library]".to_owned()
        } else if let Some(d) = r.download.as_ref().filter(|_| r.downloading) {
            format!("  [downloading {}%]", percent(d))
        } else {
            String::new()
        };
        let gated = if s.gated { "  (gated)" } else { "" };
        println!(
            "{:<50} {:>10} downloads {:>6} likes  {}{gated}{mark}",
            s.repo_id, s.downloads, s.likes, s.pipeline_tag
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn percent(d: &Download) -> u64 {
    (d.bytes_done * 100).checked_div(d.bytes_total).unwrap_or(0)
}

pub async fn download(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.gateway.client()?;
    let download = client
        .start_download(StartDownloadRequest {
            repo_id: args.repo.clone().unwrap_or_default(),
            revision: args.revision.clone().unwrap_or_else(|| {
                if args.update.is_some() {
                    String::new()
                } else {
                    "main".to_owned()
                }
            }),
            selection: Some(FileSelection {
                allow_patterns: args.include.clone(),
                ignore_patterns: args.exclude.clone(),
                gguf_quantization: args.quant.clone().unwrap_or_default(),
            }),
            model_type: args
                .model_type
                .as_deref()
                .map(parse_type)
                .transpose()?
                .unwrap_or(0),
            family: args.family.clone().unwrap_or_default(),
            priority: args.priority,
            request_id: String::new(),
            update_model_id: args.update.clone().unwrap_or_default(),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .download
        .unwrap_or_default();
    println!(
        "download {} of {}@{} ({} files, {})",
        download.download_id,
        download.repo_id,
        &download.commit_sha[..download.commit_sha.len().min(12)],
        download.files.len(),
        size_label(download.bytes_total)
    );
    if args.detach {
        println!("follow it with `pumas downloads`; pause, resume or cancel it by id");
        return Ok(ExitCode::SUCCESS);
    }
    follow(&mut client, &download.download_id).await
}

async fn follow(client: &mut crate::client::GatewayClient, id: &str) -> anyhow::Result<ExitCode> {
    let mut stream = client
        .watch_download(WatchDownloadRequest {
            download_id: id.to_owned(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut last = Download::default();
    while let Some(update) = stream.message().await.map_err(explain)? {
        if let Some(d) = update.download {
            bar.set_length(d.bytes_total);
            bar.set_position(d.bytes_done);
            bar.set_message(state_label(d.state));
            last = d;
        }
    }
    bar.finish_and_clear();
    match DownloadState::try_from(last.state).unwrap_or(DownloadState::Unspecified) {
        DownloadState::Completed => {
            println!("done: {} ({})", last.model_id, size_label(last.bytes_total));
            Ok(ExitCode::SUCCESS)
        }
        DownloadState::Cancelled => {
            eprintln!("cancelled");
            Ok(ExitCode::FAILURE)
        }
        _ => {
            let why = last.error.map(|e| e.message).unwrap_or_default();
            eprintln!("download {id} failed: {why}\nresume it with `pumas resume {id}`");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.gateway.client()?;
    let states = if args.active {
        vec![
            DownloadState::Queued as i32,
            DownloadState::Running as i32,
            DownloadState::Paused as i32,
            DownloadState::Committing as i32,
            DownloadState::Failed as i32,
        ]
    } else {
        Vec::new()
    };
    let downloads = client
        .list_downloads(ListDownloadsRequest {
            states,
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .downloads;
    if downloads.is_empty() {
        println!("no downloads");
    }
    for d in downloads {
        let rate = if d.bytes_per_second > 0.0 {
            format!(" {}/s", size_label(d.bytes_per_second as u64))
        } else {
            String::new()
        };
        let error = d.error.map(|e| format!("  {}", e.message)).unwrap_or_default();
        println!(
            "{}  {:<10} {:>3}% of {:>10}{rate}  {}  {}{error}",
            d.download_id,
            state_label(d.state),
            (d.bytes_done * 100).checked_div(d.bytes_total).unwrap_or(0),
            size_label(d.bytes_total),
            d.repo_id,
            d.model_id,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `pause`, `resume` and `cancel` do.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    Pause,
    Resume,
    Cancel,
}

pub async fn act(args: IdArgs, action: Action) -> anyhow::Result<ExitCode> {
    let mut client = args.gateway.client()?;
    let download_id = args.download_id.clone();
    let download = match action {
        Action::Pause => {
            client
                .pause_download(PauseDownloadRequest { download_id })
                .await
                .map_err(explain)?
                .into_inner()
                .download
        }
        Action::Resume => {
            client
                .resume_download(ResumeDownloadRequest { download_id })
                .await
                .map_err(explain)?
                .into_inner()
                .download
        }
        Action::Cancel => {
            client
                .cancel_download(CancelDownloadRequest { download_id })
                .await
                .map_err(explain)?
                .into_inner()
                .download
        }
    }
    .unwrap_or_default();
    println!("{}  {}", download.download_id, state_label(download.state));
    Ok(ExitCode::SUCCESS)
}
