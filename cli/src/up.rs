//! `pumas up`: the whole suite in one process, each service on its own port, talking real gRPC
//! over loopback, on one data root.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use pumas_runtime::{DataRoot, Secret, Shutdown};
use tokio::task::JoinSet;

/// Flags of `pumas up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Data root (default: $PUMAS_DATA_ROOT, else the platform data dir, e.g. ~/.local/share/pumas).
    #[arg(long, env = "PUMAS_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// Address every service binds to.
    #[arg(long, env = "PUMAS_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Gateway port (0 = any free port).
    #[arg(long, env = "PUMAS_GATEWAY_PORT", default_value_t = 50051)]
    gateway_port: u16,
    /// Index port (0 = any free port).
    #[arg(long, env = "PUMAS_INDEX_PORT", default_value_t = 50052)]
    index_port: u16,
    /// Fetch port (0 = any free port).
    #[arg(long, env = "PUMAS_FETCH_PORT", default_value_t = 50053)]
    fetch_port: u16,
    /// Mapper port (0 = any free port).
    #[arg(long, env = "PUMAS_MAPPER_PORT", default_value_t = 50054)]
    mapper_port: u16,
    /// Hugging Face compatible hub endpoint.
    #[arg(long, env = "HF_ENDPOINT", default_value = pumas_fetch::config::DEFAULT_HUB_ENDPOINT)]
    hub_endpoint: String,
    /// Hub token; sent only to the hub host, never logged. A flag or environment value is visible
    /// to other users of this machine: prefer --hub-token-file.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    hub_token: Option<Secret>,
    /// File whose first line is the hub token (HF_TOKEN_PATH); used when no --hub-token is given.
    #[arg(long, env = "HF_TOKEN_PATH")]
    hub_token_file: Option<PathBuf>,
    /// Fetch service tuning (search cache, retries, connections, bandwidth).
    #[command(flatten)]
    fetch_tuning: pumas_fetch::config::Tuning,
    /// Refuse pickle-based model files instead of importing them flagged as unsafe.
    #[arg(long, env = "PUMAS_REFUSE_PICKLE")]
    refuse_pickle: bool,
    /// Only import from below these directories (repeatable; default: anywhere).
    #[arg(long = "import-root", env = "PUMAS_IMPORT_ROOTS", value_delimiter = ',')]
    import_roots: Vec<PathBuf>,
    /// App folders that configs sent over the API may target (repeatable; default: any when
    /// --bind is loopback, none beyond it).
    #[arg(long = "app-root", env = "PUMAS_APP_ROOTS", value_delimiter = ',')]
    app_roots: Vec<PathBuf>,
    /// API bearer tokens for the gateway (comma-separated; off when empty). A flag or environment
    /// value is visible to other users of this machine: prefer --api-tokens-file.
    #[arg(
        long = "api-token",
        env = "PUMAS_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_tokens: Vec<Secret>,
    /// File of API bearer tokens for the gateway, one per line (`#` comments), read again when it
    /// changes: add a new token, move clients over, remove the old one, with no restart.
    #[arg(long, env = "PUMAS_API_TOKENS_FILE")]
    api_tokens_file: Option<PathBuf>,
    /// File with the service token between the suite's services (created 0600 when missing;
    /// default <data root>/launcher-data/secrets/service-token).
    #[arg(long, env = "PUMAS_SERVICE_TOKEN_FILE")]
    service_token_file: Option<PathBuf>,
    /// Serve the gateway without client tokens even when --bind is not loopback (by default it
    /// then requires one, generated into <data root>/launcher-data/secrets/api-token).
    #[arg(long, env = "PUMAS_NO_API_AUTH")]
    no_api_auth: bool,
    /// Another mapper host the gateway aggregates beside this one's, `name=host:port`
    /// (repeatable): apps on other machines, each running `pumas serve mapper`.
    #[arg(long = "mapper", env = "PUMAS_EXTRA_MAPPERS", value_delimiter = ',')]
    extra_mappers: Vec<pumas_gateway::MapperAddr>,
    /// Do not serve gRPC-Web (browsers) beside gRPC on the gateway's port.
    #[arg(long, env = "PUMAS_NO_GRPC_WEB")]
    no_grpc_web: bool,
    /// Another origin browsers may call the gateway from over gRPC-Web (CORS), e.g.
    /// http://localhost:5173 (repeatable; comma-separated in the variable).
    #[arg(long = "web-origin", env = "PUMAS_WEB_ORIGINS", value_delimiter = ',')]
    web_origins: Vec<String>,
    /// How often the gateway checks its backends, in milliseconds.
    #[arg(long, env = "PUMAS_BACKEND_CHECK_MS", default_value_t = 1000)]
    backend_check_ms: u64,
    /// Import, reindex and verify jobs at once and waiting.
    #[command(flatten)]
    index_jobs: pumas_index::jobs::JobLimits,
    /// How long the index keeps its change feed and hash cache.
    #[command(flatten)]
    index_retention: pumas_index::retention::Retention,
    /// Concurrent-call limit and deadline, the same on the gateway and every backend.
    #[command(flatten)]
    limits: pumas_runtime::LimitArgs,
    #[command(flatten)]
    metrics: pumas_runtime::metrics::MetricsArgs,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let root_path = args.data_root.clone().unwrap_or_else(DataRoot::default_path);
    let data_root = DataRoot::new(&root_path);
    data_root
        .create_all()
        .with_context(|| format!("cannot create the data root at {}", root_path.display()))?;

    // The suite's services prove themselves to each other with a token only this user can read,
    // so a direct call to a backend port from anyone else is UNAUTHENTICATED.
    let token_file = args
        .service_token_file
        .clone()
        .unwrap_or_else(|| data_root.service_token_file());
    pumas_runtime::service_auth::install_file(&token_file)
        .with_context(|| format!("cannot set up the service token in {}", token_file.display()))?;

    let listen = |port| SocketAddr::new(args.bind, port);
    let gateway = super::bind("gateway", listen(args.gateway_port)).await?;
    let index = super::bind("index", listen(args.index_port)).await?;
    let fetch = super::bind("fetch", listen(args.fetch_port)).await?;
    let mapper = super::bind("mapper", listen(args.mapper_port)).await?;
    let addr = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string());
    let (gateway_addr, index_addr, fetch_addr, mapper_addr) =
        (addr(&gateway)?, addr(&index)?, addr(&fetch)?, addr(&mapper)?);

    let root = Some(root_path.clone());
    let index_config = pumas_index::Config {
        data_root: root.clone(),
        refuse_pickle: args.refuse_pickle,
        import_roots: args.import_roots.clone(),
        jobs: args.index_jobs,
        retention: args.index_retention,
        limits: args.limits,
    };
    let fetch_config = pumas_fetch::Config {
        data_root: root.clone(),
        index_addr: index_addr.clone(),
        hub_endpoint: args.hub_endpoint.clone(),
        hub_token: args.hub_token.clone(),
        hub_token_file: args.hub_token_file.clone(),
        tuning: args.fetch_tuning.clone(),
        limits: args.limits,
    };
    let mapper_config = pumas_mapper::Config {
        data_root: root.clone(),
        index_addr: index_addr.clone(),
        library_mount: None,
        host: None,
        app_roots: args.app_roots.clone(),
        limits: args.limits,
    };
    let mut names = std::collections::BTreeSet::from([pumas_gateway::config::LOCAL_MAPPER]);
    for m in &args.extra_mappers {
        if !names.insert(m.name.as_str()) {
            anyhow::bail!(
                "--mapper {}={}: the name `{}` is taken (this host's mapper is `{}`); name each mapper host, e.g. --mapper studio=10.0.0.5:50054",
                m.name,
                m.address,
                m.name,
                pumas_gateway::config::LOCAL_MAPPER
            );
        }
    }
    let mut gateway_config = pumas_gateway::Config {
        index_addr: index_addr.clone(),
        fetch_addr: fetch_addr.clone(),
        mappers: std::iter::once(pumas_gateway::MapperAddr {
            name: pumas_gateway::config::LOCAL_MAPPER.to_owned(),
            address: mapper_addr.clone(),
        })
        .chain(args.extra_mappers.iter().cloned())
        .collect(),
        backend_check_ms: args.backend_check_ms,
        api_tokens: args.api_tokens.clone(),
        api_tokens_file: args.api_tokens_file.clone(),
        no_api_auth: args.no_api_auth,
        limits: args.limits,
        no_grpc_web: args.no_grpc_web,
        web_origins: args.web_origins.clone(),
        ..Default::default()
    };
    let api_token_file = data_root.api_token_file();
    if let Some((path, token)) = gateway_config
        .require_auth_off_loopback(args.bind, &api_token_file)
        .with_context(|| format!("cannot set up the API token in {}", api_token_file.display()))?
    {
        super::announce_api_token(&path, &token);
    }

    let shutdown = Shutdown::new();
    let mut tasks = JoinSet::new();
    let s = shutdown.clone();
    tasks.spawn(async move {
        (
            "index",
            pumas_index::serve(index, index_config, s.wait())
                .await
                .map_err(anyhow::Error::from),
        )
    });
    let s = shutdown.clone();
    tasks.spawn(async move {
        (
            "fetch",
            pumas_fetch::serve(fetch, fetch_config, s.wait())
                .await
                .map_err(anyhow::Error::from),
        )
    });
    let s = shutdown.clone();
    tasks.spawn(async move {
        (
            "mapper",
            pumas_mapper::serve(mapper, mapper_config, s.wait())
                .await
                .map_err(anyhow::Error::from),
        )
    });
    let s = shutdown.clone();
    tasks.spawn(async move {
        (
            "gateway",
            pumas_gateway::serve(gateway, gateway_config, s.wait())
                .await
                .map_err(anyhow::Error::from),
        )
    });

    println!("pumas {} is up", pumas_runtime::info::VERSION);
    println!("  data-root  {}", root_path.display());
    println!("  gateway    {gateway_addr}  pumas.gateway.v1.ModelLibraryService");
    println!("  index      {index_addr}  pumas.index.v1.IndexService");
    println!("  fetch      {fetch_addr}  pumas.fetch.v1.FetchService");
    println!("  mapper     {mapper_addr}  pumas.mapper.v1.MapperService");
    if let Some(listen) = args.metrics.metrics_listen {
        let local = pumas_runtime::metrics::serve_metrics(listen)
            .await
            .map_err(|err| anyhow::anyhow!("cannot serve metrics on {listen}: {err}"))?;
        println!("  metrics    http://{local}/metrics");
    }
    wait_for_index(&index_addr).await;
    println!("Stop with Ctrl-C.");

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        () = pumas_runtime::shutdown::os_signal() => {
            tracing::info!("stopping");
        }
        Some(joined) = tasks.join_next() => {
            // A service stopped on its own: that is a failure of the whole suite.
            failure = Some(match joined {
                Ok((name, Ok(()))) => anyhow::anyhow!("the {name} service stopped unexpectedly"),
                Ok((name, Err(err))) => err.context(format!("the {name} service failed")),
                Err(err) => anyhow::anyhow!("a service task panicked: {err}"),
            });
        }
    }
    shutdown.trigger();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((name, Err(err))) = joined {
            tracing::error!(service = name, error = %err, "service stopped with an error");
        }
    }
    match failure {
        Some(err) => Err(err),
        None => {
            println!("pumas stopped");
            Ok(())
        }
    }
}

/// Waits until the index serves its API (it answers UNAVAILABLE while it opens models.db, which
/// takes seconds when it rebuilds a large library), saying what it is doing every few seconds;
/// a failed start ends the wait too (the service's own error stops `pumas up`).
async fn wait_for_index(address: &str) {
    use pumas_proto::index::v1::GetServiceInfoRequest;
    use pumas_proto::index::v1::index_service_client::IndexServiceClient;
    let Ok(channel) = pumas_runtime::client::connect_lazy(address) else {
        return;
    };
    let mut index = IndexServiceClient::new(channel);
    let started = std::time::Instant::now();
    let mut said = std::time::Instant::now();
    loop {
        match index.get_service_info(GetServiceInfoRequest {}).await {
            Ok(_) => return,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                if said.elapsed() >= std::time::Duration::from_secs(3) {
                    println!("  (index: {})", status.message());
                    said = std::time::Instant::now();
                }
                if started.elapsed() > std::time::Duration::from_secs(600) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(_) => return,
        }
    }
}
