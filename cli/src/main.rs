//! `pumas`: run the suite (`up`), run one role (`serve <role>`), probe health (`healthcheck`),
//! and talk to a running suite through the gateway.

mod apps;
mod client;
mod deps;
mod downloads;
mod hub_updates;
mod library;
mod up;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pumas_runtime::telemetry::{self, TelemetryArgs};
use tokio::net::TcpListener;

/// Pumas: one shared library of AI model files for every app, on one or many machines.
#[derive(Debug, Parser)]
#[command(name = "pumas", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run all four services (gateway, index, fetch, mapper) in one process.
    Up(up::UpArgs),
    /// Run one role in this process (multi-host deployments, one container image for all roles).
    Serve {
        #[command(subcommand)]
        role: Role,
    },
    /// Exit 0 when the gRPC health service at ADDR reports SERVING (for container health checks).
    Healthcheck(client::HealthcheckArgs),
    /// Show the gateway and the state of each backend.
    Status(client::GatewayArgs),
    /// Import model files or folders into the library (with a progress bar).
    Import(library::ImportArgs),
    /// Search the library (and the hub with --hub).
    Search(library::SearchArgs),
    /// Show one model: metadata, files, hashes and why it was classified so.
    Show(library::ShowArgs),
    /// Delete a model from the library.
    Rm(library::RmArgs),
    /// Rescan the library folder: pick up hand-copied models, flag missing ones.
    Reindex(library::ReindexArgs),
    /// What a model needs on a platform with a backend (exit 0 only when resolved).
    Resolve(library::ResolveArgs),
    /// Dependency profiles: list, show, publish, delete.
    Profiles {
        #[command(subcommand)]
        command: deps::ProfilesCommand,
    },
    /// Bind a model to a profile version for a backend (replaces the catalog's bindings).
    Bind(deps::BindArgs),
    /// Remove a binding you made.
    Unbind(deps::UnbindArgs),
    /// A model's dependency bindings in effect (yours and the catalog's), or every model's.
    Bindings(deps::BindingsArgs),
    /// Dependency checks: `pumas deps audit`.
    Deps {
        #[command(subcommand)]
        command: deps::DepsCommand,
    },
    /// The Hugging Face Hub.
    Hub {
        #[command(subcommand)]
        command: downloads::HubCommand,
    },
    /// Download a model from the hub into the library (with a progress bar).
    Download(downloads::DownloadArgs),
    /// Read hub downloads' cards and counters again (license, base models, description, ...).
    Refresh(hub_updates::HubModelsArgs),
    /// Which hub downloads' repositories moved on, and which of their files changed (exit 1
    /// when one is outdated).
    Outdated(hub_updates::HubModelsArgs),
    /// List downloads and their progress.
    Downloads(downloads::ListArgs),
    /// Pause a download, keeping its bytes.
    Pause(downloads::IdArgs),
    /// Resume a paused or failed download from the bytes on disk.
    Resume(downloads::IdArgs),
    /// Cancel a download and remove its partial files.
    Cancel(downloads::IdArgs),
    /// Configured apps on each mapper host and their link state.
    Apps(apps::AppsArgs),
    /// Preview, apply or repair an app's links to the library.
    Map {
        #[command(subcommand)]
        command: apps::MapCommand,
    },
    /// Remove every link Pumas made in an app.
    Unmap(apps::MapArgs),
    /// Move an app's own model files into the library and link them back (asks first).
    Adopt(apps::AdoptArgs),
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The index service: the library on disk and models.db.
    Index {
        /// Address to listen on.
        #[arg(long, env = "PUMAS_LISTEN", default_value = "127.0.0.1:50052")]
        listen: SocketAddr,
        #[command(flatten)]
        config: pumas_index::Config,
        #[command(flatten)]
        common: RoleArgs,
    },
    /// The fetch service: hub search and downloads.
    Fetch {
        /// Address to listen on.
        #[arg(long, env = "PUMAS_LISTEN", default_value = "127.0.0.1:50053")]
        listen: SocketAddr,
        #[command(flatten)]
        config: pumas_fetch::Config,
        #[command(flatten)]
        common: RoleArgs,
    },
    /// The mapper service: links library models into apps on this host.
    Mapper {
        /// Address to listen on.
        #[arg(long, env = "PUMAS_LISTEN", default_value = "127.0.0.1:50054")]
        listen: SocketAddr,
        #[command(flatten)]
        config: pumas_mapper::Config,
        #[command(flatten)]
        common: RoleArgs,
    },
    /// The gateway: the public ModelLibraryService.
    Gateway {
        /// Address to listen on.
        #[arg(long, env = "PUMAS_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        #[command(flatten)]
        config: pumas_gateway::Config,
        #[command(flatten)]
        common: RoleArgs,
    },
}

/// Flags every serving role shares: TLS in and out, metrics.
#[derive(Clone, Debug, clap::Args)]
struct RoleArgs {
    #[command(flatten)]
    tls: pumas_runtime::tls::ServerTlsArgs,
    #[command(flatten)]
    peers: pumas_runtime::tls::ClientTlsArgs,
    #[command(flatten)]
    metrics: pumas_runtime::metrics::MetricsArgs,
    /// File with the service token the suite's services share (first line; keep it 0600; made,
    /// random, when missing). A backend requires it from every caller of its API; every role
    /// sends it. A backend on a non-loopback address needs it, or --tls-client-ca (mutual TLS),
    /// to start. Give every host the same file.
    #[arg(long, env = "PUMAS_SERVICE_TOKEN_FILE")]
    service_token_file: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Up(_) | Command::Serve { .. }) {
        tune_malloc();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pumas: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pumas: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so the
/// big buffers of a rebuild (models.db and its relevance index at 100,000 models) are later
/// taken from, and kept in, its heaps: `pumas up` held 300 MiB after one. A fixed threshold
/// (glibc's default, 128 KiB) gives every large block back to the system when it is freed: the
/// peak stays under 185 MiB, with no cap on arenas (two arenas, the former fix, cost a quarter
/// of the rebuild's speed and of searches/s; docs/BENCHMARKS.md). glibc reads the setting only
/// when a process starts, so a serving role starts itself again, once, with it set (same pid,
/// same arguments), unless the user set it. When that fails, it runs as it is.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
        if std::env::var_os(VAR).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        // Only returns when the exec failed.
        let _failed = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env(VAR, "131072")
            .exec();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => {
            let guard = telemetry::init("pumas", &cli.telemetry)?;
            let result = up::run(args).await;
            guard.shutdown();
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::Serve { role } => {
            let guard = telemetry::init(&format!("pumas-{}", role.name()), &cli.telemetry)?;
            let result = serve_role(role).await;
            guard.shutdown();
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::Healthcheck(args) => client::healthcheck(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Import(args) => library::import(args).await,
        Command::Search(args) => library::search(args).await,
        Command::Show(args) => library::show(args).await,
        Command::Rm(args) => library::rm(args).await,
        Command::Reindex(args) => library::reindex(args).await,
        Command::Resolve(args) => library::resolve(args).await,
        Command::Profiles { command } => deps::profiles(command).await,
        Command::Bind(args) => deps::bind(args).await,
        Command::Unbind(args) => deps::unbind(args).await,
        Command::Bindings(args) => deps::bindings(args).await,
        Command::Deps { command } => deps::deps(command).await,
        Command::Hub { command } => downloads::hub(command).await,
        Command::Download(args) => downloads::download(args).await,
        Command::Downloads(args) => downloads::list(args).await,
        Command::Refresh(args) => hub_updates::refresh(args).await,
        Command::Outdated(args) => hub_updates::outdated(args).await,
        Command::Pause(args) => downloads::act(args, downloads::Action::Pause).await,
        Command::Resume(args) => downloads::act(args, downloads::Action::Resume).await,
        Command::Cancel(args) => downloads::act(args, downloads::Action::Cancel).await,
        Command::Apps(args) => apps::apps(args).await,
        Command::Map { command } => apps::map(command).await,
        Command::Unmap(args) => apps::unmap(args).await,
        Command::Adopt(args) => apps::adopt(args).await,
    }
}

impl Role {
    fn name(&self) -> &'static str {
        match self {
            Role::Index { .. } => "index",
            Role::Fetch { .. } => "fetch",
            Role::Mapper { .. } => "mapper",
            Role::Gateway { .. } => "gateway",
        }
    }
}

async fn bind(role: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        anyhow::anyhow!(
            "{role}: cannot listen on {addr}: {err} (is another pumas running? pick another address or port)"
        )
    })
}

/// Shows a generated API token once, where it is kept, and how clients use it.
fn announce_api_token(path: &std::path::Path, token: &pumas_runtime::Secret) {
    println!(
        "pumas gateway: this gateway listens beyond loopback, so it requires an API token; one was generated\n  \
         token  {}\n  kept in  {} (0600)\n  clients send `authorization: Bearer <token>`; the CLI reads PUMAS_API_TOKEN or --token-file",
        token.expose(),
        path.display()
    );
}

async fn serve_role(role: Role) -> anyhow::Result<()> {
    let name = role.name();
    let shutdown = pumas_runtime::shutdown::os_signal();
    let (listen, common) = match &role {
        Role::Index { listen, common, .. }
        | Role::Fetch { listen, common, .. }
        | Role::Mapper { listen, common, .. }
        | Role::Gateway { listen, common, .. } => (*listen, common.clone()),
    };
    if let Some(config) = common.tls.server_config(listen)? {
        pumas_runtime::tls::install_server(config);
    }
    common.peers.install()?;
    if let Some(path) = &common.service_token_file {
        pumas_runtime::service_auth::install_file(path).map_err(|e| {
            anyhow::anyhow!(
                "{name}: cannot read the service token file {}: {e}",
                path.display()
            )
        })?;
    }
    let backend = !matches!(role, Role::Gateway { .. });
    if backend
        && !listen.ip().is_loopback()
        && common.service_token_file.is_none()
        && common.tls.tls_client_ca.is_none()
    {
        anyhow::bail!(
            "{name}: refusing to listen on {listen} with no way to tell the suite's services from anyone else: \
             give --service-token-file (the same file on every host) or --tls-client-ca (mutual TLS), \
             or listen on a loopback address"
        );
    }
    let mut role = role;
    if let Role::Gateway { config, .. } = &mut role {
        let token_file =
            pumas_runtime::DataRoot::new(pumas_runtime::DataRoot::default_path()).api_token_file();
        if let Some((path, token)) = config
            .require_auth_off_loopback(listen.ip(), &token_file)
            .map_err(|e| {
                anyhow::anyhow!(
                    "gateway: cannot set up the API token in {}: {e}",
                    token_file.display()
                )
            })?
        {
            announce_api_token(&path, &token);
        }
    }
    if let Some(metrics) = common.metrics.metrics_listen {
        let local = pumas_runtime::metrics::serve_metrics(metrics)
            .await
            .map_err(|err| anyhow::anyhow!("{name}: cannot serve metrics on {metrics}: {err}"))?;
        println!("pumas {name} metrics on http://{local}/metrics");
    }
    let (listener, addr) = (bind(name, listen).await?, listen);
    let local = listener.local_addr().unwrap_or(addr);
    println!("pumas {name} listening on {local}");
    match role {
        Role::Index { config, .. } => pumas_index::serve(listener, config, shutdown).await?,
        Role::Fetch { config, .. } => pumas_fetch::serve(listener, config, shutdown).await?,
        Role::Mapper { config, .. } => pumas_mapper::serve(listener, config, shutdown).await?,
        Role::Gateway { config, .. } => pumas_gateway::serve(listener, config, shutdown).await?,
    }
    Ok(())
}
