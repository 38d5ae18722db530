//! End-to-end harness: runs the real `pumas` binary as processes on ephemeral loopback ports with
//! a temporary data root, and gives tests gRPC channels to them.
//!
//! The binary is built once per test run (`cargo build --workspace --bins`, a no-op when fresh), from the
//! same target directory and profile as the tests themselves.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub mod certs;
pub mod downloads;
pub mod fakes;
pub mod hub;
pub mod invokeai;
pub mod library;
pub mod load;
pub mod netns;
pub mod reflection;

/// How long a process may take to print its addresses.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Service names by role.
pub const GATEWAY_SERVICE: &str = "pumas.gateway.v1.ModelLibraryService";
pub const INDEX_SERVICE: &str = "pumas.index.v1.IndexService";
pub const FETCH_SERVICE: &str = "pumas.fetch.v1.FetchService";
pub const MAPPER_SERVICE: &str = "pumas.mapper.v1.MapperService";

/// Path of the `pumas` binary, built on first use.
pub fn pumas_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_pumas().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_pumas() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PUMAS_BIN") {
        return Ok(PathBuf::from(bin));
    }
    // target/<profile>/deps/<test exe> -> target/<profile>/pumas
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let mut build = std::process::Command::new(cargo);
    // `--workspace --bins` resolves features as `cargo build --workspace` and `cargo test` do, so
    // it is a no-op after either (`-p pumas` alone resolves them differently and relinks).
    build
        .args(["build", "--quiet", "--workspace", "--bins", "--manifest-path"])
        .arg(&manifest);
    if release {
        build.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        build.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = build.status().context("running cargo build --workspace --bins")?;
    if !status.success() {
        bail!("cargo build --workspace --bins failed: {status}");
    }
    Ok(profile_dir.join("pumas"))
}

/// A running `pumas` process. Killed (SIGKILL) on drop; [`Process::terminate`] stops it
/// gracefully.
pub struct Process {
    child: Child,
    /// Lines the process printed on stdout before it was ready.
    pub banner: Vec<String>,
    /// Where its stderr (logs) goes.
    pub log_path: PathBuf,
}

impl Process {
    /// Starts `pumas <args>` and reads stdout until a line satisfies `ready`.
    pub async fn start(
        args: &[&str],
        envs: &[(&str, &str)],
        log_path: PathBuf,
        ready: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Self> {
        Self::start_wrapped(&[], &pumas_bin()?, args, envs, log_path, ready).await
    }

    /// [`Process::start`] of any `program` behind a wrapper command that ends by running the program it is given
    /// (e.g. `ip netns exec NS` to run in a network namespace); the wrapper must exec, so that
    /// the process id is pumas's own.
    pub async fn start_wrapped(
        wrapper: &[String],
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log_path: PathBuf,
        ready: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(&log_path).context("creating the process log")?;
        let mut command = match wrapper.split_first() {
            Some((wrapper_program, wrapper_args)) => {
                let mut command = Command::new(wrapper_program);
                command.args(wrapper_args).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .env_remove("PUMAS_DATA_ROOT")
            // Never the real hub, a real token or the developer's Hugging Face cache: tests
            // that want a hub pass the emulator's address.
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env_remove("HF_TOKEN")
            .env_remove("HF_HOME")
            .env("HF_HUB_CACHE", "none")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().context("spawning pumas")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        // The timeout is for a silent process: `pumas up` prints the index's progress while it
        // rebuilds a large library, and each line it prints gives it another START_TIMEOUT.
        let read = async {
            loop {
                let Ok(next) = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await else {
                    return Err(());
                };
                match next {
                    Ok(Some(line)) => {
                        let done = ready(&line);
                        banner.push(line);
                        if done {
                            return Ok(Ok::<bool, std::io::Error>(true));
                        }
                    }
                    Ok(None) => return Ok(Ok(false)),
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        let outcome = read.await;
        let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
        match outcome {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("pumas {args:?} exited before it was ready; log:\n{}", log_text()),
            Ok(Err(err)) => bail!("reading pumas stdout: {err}"),
            Err(_) => bail!(
                "pumas {args:?} not ready within {START_TIMEOUT:?}; log:\n{}",
                log_text()
            ),
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            banner,
            log_path,
        })
    }

    /// The process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().ok_or_else(|| anyhow!("process already exited"))
    }

    /// The address `pumas up`'s banner gives for `role` (`gateway`, `index`, `fetch`, `mapper`).
    pub fn banner_address(&self, role: &str) -> anyhow::Result<String> {
        let prefix = format!("  {role}");
        self.banner
            .iter()
            .find_map(|l| {
                l.strip_prefix(prefix.as_str())
                    .filter(|r| r.starts_with(' '))
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_owned)
            })
            .ok_or_else(|| anyhow!("no {role} address in {:?}", self.banner))
    }

    /// `pumas up <extra...>` with every port chosen by the kernel and otherwise its defaults,
    /// with `envs`, logging to `log`; returns once it says how to stop it.
    pub async fn up(extra: &[&str], envs: &[(&str, &str)], log: PathBuf) -> anyhow::Result<Self> {
        let mut args = vec![
            "up",
            "--gateway-port",
            "0",
            "--index-port",
            "0",
            "--fetch-port",
            "0",
            "--mapper-port",
            "0",
        ];
        args.extend_from_slice(extra);
        Self::start(&args, envs, log, |l| l.starts_with("Stop with Ctrl-C")).await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal("TERM").await
    }

    /// Sends SIGINT (what Ctrl-C does) and waits for the exit status.
    pub async fn interrupt(self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal("INT").await
    }

    async fn signal(mut self, name: &str) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid()?;
        let sent = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .await?;
        if !sent.success() {
            bail!("kill -{name} {pid} failed");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .with_context(|| format!("process did not exit within 30 s of SIG{name}"))??;
        Ok(status)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// The whole suite started with `pumas up` on ephemeral ports.
pub struct Suite {
    /// The `pumas up` process.
    pub process: Process,
    /// Gateway address.
    pub gateway: String,
    /// Index address.
    pub index: String,
    /// Fetch address.
    pub fetch: String,
    /// Mapper address.
    pub mapper: String,
    /// The temporary data root (deleted on drop).
    pub data_root: tempfile::TempDir,
    /// Extra `pumas up` flags and environment, kept for a restart.
    extra: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Suite {
    /// Starts `pumas up` on ephemeral ports with a fresh data root and waits until the gateway
    /// reports SERVING.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[], &[]).await
    }

    /// [`Suite::start`] with extra `pumas up` flags and environment variables.
    pub async fn start_with(extra: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let envs = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::launch(tempfile::tempdir()?, extra, envs).await
    }

    /// Kills the suite with SIGKILL (no shutdown, no flush) and starts it again on the same
    /// data root with the same flags; waits until the gateway serves again.
    pub async fn kill_and_restart(self) -> anyhow::Result<Self> {
        let Suite {
            process,
            data_root,
            extra,
            envs,
            ..
        } = self;
        process.kill().await?;
        Self::launch(data_root, extra, envs).await
    }

    async fn launch(
        data_root: tempfile::TempDir,
        extra: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let root = data_root.path().join("root");
        let root_str = root
            .to_str()
            .ok_or_else(|| anyhow!("temp path is not UTF-8"))?
            .to_owned();
        let token_file = service_token_file().to_str().unwrap_or_default().to_owned();
        let mut args = vec![
            "--data-root",
            root_str.as_str(),
            "--service-token-file",
            token_file.as_str(),
            "--backend-check-ms",
            "100",
        ];
        args.extend(extra.iter().map(String::as_str));
        let env_refs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // A restarted suite logs to up-2.log, up-3.log...: the first start's log stays.
        let log = (1..)
            .map(|n| {
                data_root.path().join(if n == 1 {
                    "up.log".to_owned()
                } else {
                    format!("up-{n}.log")
                })
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| data_root.path().join("up.log"));
        let process = Process::up(&args, &env_refs, log).await?;
        let suite = Self {
            gateway: process.banner_address("gateway")?,
            index: process.banner_address("index")?,
            fetch: process.banner_address("fetch")?,
            mapper: process.banner_address("mapper")?,
            process,
            data_root,
            extra,
            envs,
        };
        wait_for_health(
            &suite.gateway,
            GATEWAY_SERVICE,
            ServingStatus::Serving,
            Duration::from_secs(30),
        )
        .await
        .with_context(|| format!("suite log:\n{}", suite.process.log()))?;
        Ok(suite)
    }

    /// The data root the suite runs on.
    pub fn root(&self) -> PathBuf {
        self.data_root.path().join("root")
    }
}

/// Starts `pumas serve <role> --listen <listen> <extra...>` and returns it with its address,
/// once it serves its API.
pub async fn serve_role(
    role: &str,
    listen: &str,
    extra: &[&str],
    log_dir: &Path,
) -> anyhow::Result<(Process, String)> {
    let (process, addr) = serve_role_listening(role, listen, extra, log_dir).await?;
    // The index listens at once and serves its API once models.db is open (UNAVAILABLE until
    // then): wait for that, as a deployment's readiness probe does (over plain text; a TLS
    // index's tests wait their own way).
    if role == "index" && !extra.contains(&"--tls-cert") {
        wait_for_health(
            &addr,
            "pumas.index.v1.IndexService",
            ServingStatus::Serving,
            Duration::from_secs(120),
        )
        .await?;
    }
    Ok((process, addr))
}

/// [`serve_role`], returning as soon as the role listens (before the index is ready).
pub async fn serve_role_listening(
    role: &str,
    listen: &str,
    extra: &[&str],
    log_dir: &Path,
) -> anyhow::Result<(Process, String)> {
    let token_file = service_token_file().to_str().unwrap_or_default().to_owned();
    let mut args = vec![
        "serve",
        role,
        "--listen",
        listen,
        "--service-token-file",
        &token_file,
    ];
    args.extend_from_slice(extra);
    let log = log_dir.join(format!("{role}-{}.log", listen.replace([':', '.'], "_")));
    let process = Process::start(&args, &[], log, |line| line.contains(" listening on ")).await?;
    let addr = process
        .banner
        .iter()
        .find_map(|line| {
            line.rsplit(' ')
                .next()
                .filter(|_| line.contains(" listening on "))
        })
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no address in {:?}", process.banner))?;
    Ok((process, addr))
}

/// A channel of the tests: every call carries the service token of the suites and roles this
/// test process starts ([`service_token_file`]), as the suite's own services do.
pub type Channel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, ServiceToken>;

/// Sends the tests' service token (as `x-pumas-service-token`).
#[derive(Clone, Debug)]
pub struct ServiceToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl ServiceToken {
    fn shared() -> Self {
        static VALUE: OnceLock<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = OnceLock::new();
        let value = VALUE.get_or_init(|| {
            pumas_runtime::service_auth::read(service_token_file())
                .ok()
                .and_then(|t| t.expose().parse().ok())
                .unwrap_or_else(|| tonic::metadata::MetadataValue::from_static("unreadable"))
        });
        Self(value.clone())
    }
}

impl tonic::service::Interceptor for ServiceToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(pumas_runtime::service_auth::HEADER, self.0.clone());
        Ok(request)
    }
}

/// The service token file every suite and role this test process starts is given (0600, in a
/// private temp folder that lives as long as the process).
pub fn service_token_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pumas-e2e-secrets-")
            .tempdir()
            .map(tempfile::TempDir::keep)
            .unwrap_or_else(|_| std::env::temp_dir());
        let path = dir.join("service-token");
        if let Err(err) = pumas_runtime::service_auth::read_or_create(&path) {
            panic!(
                "cannot create the tests' service token in {}: {err}",
                path.display()
            );
        }
        path
    })
}

/// `channel` wrapped with the tests' service token.
pub fn with_service_token(channel: tonic::transport::Channel) -> Channel {
    tonic::service::interceptor::InterceptedService::new(channel, ServiceToken::shared())
}

/// A channel to `addr` (connects now).
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(5));
    Ok(with_service_token(endpoint.connect().await?))
}

/// A channel to `addr` that carries no service token (what a stranger on this machine has).
pub async fn anonymous_channel(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(5));
    Ok(endpoint.connect().await?)
}

/// A lazily connected channel to `addr` (for peers that may be down).
pub fn lazy_channel(addr: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    Ok(with_service_token(endpoint.connect_lazy()))
}

/// The health status of `service` at `addr`, or the gRPC error.
pub async fn health(addr: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = lazy_channel(addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

/// Polls health until `service` at `addr` reports `want`.
pub async fn wait_for_health(
    addr: &str,
    service: &str,
    want: ServingStatus,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match health(addr, service).await {
            Ok(status) if status == want => return Ok(()),
            Ok(status) => last = format!("{status:?}"),
            Err(err) => last = format!("{:?}: {}", err.code(), err.message()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{service} at {addr} did not become {want:?} within {timeout:?}; last: {last}")
}
