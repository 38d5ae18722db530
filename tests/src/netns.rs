//! Hosts for multi-host tests: one network namespace per host, each with its own address on a
//! bridge that lives in a namespace of its own, so the machine's own network is never touched.
//! Needs root and iproute2; [`Lab::unavailable`] says why not when they are missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::Channel;
use anyhow::{Context as _, anyhow, bail};
use tonic::transport::Endpoint;

/// The network of one test: namespaces named `<prefix>-<host>` and a `<prefix>-sw` switch.
pub struct Lab {
    prefix: String,
    hosts: Vec<(String, String)>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    /// Why network namespaces cannot be used here, or None when they can.
    pub fn unavailable() -> Option<String> {
        static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = format!("pumas-probe-{}-{n}", std::process::id());
        match ip(&["netns", "add", &probe]) {
            Ok(()) => {
                let _ = ip(&["netns", "del", &probe]);
                None
            }
            Err(err) => Some(format!("{err:#}")),
        }
    }

    /// Creates one namespace per host, addressed 10.77.0.1, .2, ... in order, on one bridge.
    pub fn create(hosts: &[&str]) -> anyhow::Result<Lab> {
        let prefix = format!("pm{}", std::process::id());
        let mut lab = Lab {
            prefix: prefix.clone(),
            hosts: Vec::new(),
        };
        let switch = format!("{prefix}-sw");
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("{prefix}-{host}");
            let address = format!("10.77.0.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            lab.hosts.push((host.to_string(), address.clone()));
            let port = format!("p{i}");
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn namespace(&self, host: &str) -> anyhow::Result<String> {
        self.hosts
            .iter()
            .any(|(h, _)| h == host)
            .then(|| format!("{}-{host}", self.prefix))
            .ok_or_else(|| anyhow!("no host {host}"))
    }

    /// The address of `host`.
    pub fn address(&self, host: &str) -> anyhow::Result<String> {
        self.hosts
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| anyhow!("no host {host}"))
    }

    /// The command prefix that runs a program on `host`.
    pub fn wrapper(&self, host: &str) -> anyhow::Result<Vec<String>> {
        Ok(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace(host)?,
        ])
    }

    /// Silently drops everything `from` sends to `to`, as a cut cable would (no resets, no
    /// errors: connections just stop answering).
    pub fn cut(&self, from: &str, to: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.namespace(from)?,
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.address(to)?),
        ])
    }

    /// Undoes [`Lab::cut`].
    pub fn restore(&self, from: &str, to: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.namespace(from)?,
            "route",
            "del",
            "blackhole",
            &format!("{}/32", self.address(to)?),
        ])
    }

    /// A lazily connected gRPC channel to `addr` whose connections are made from inside `host`'s
    /// namespace (the test itself stays in the machine's own).
    pub fn channel(&self, host: &str, addr: &str) -> anyhow::Result<Channel> {
        let netns = PathBuf::from("/run/netns").join(self.namespace(host)?);
        let target: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
        let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let netns = netns.clone();
            async move {
                let stream = tokio::task::spawn_blocking(move || connect_from(&netns, target))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        Ok(crate::with_service_token(
            Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(3))
                .connect_with_connector_lazy(connector),
        ))
    }
}

/// Connects a socket made inside the namespace at `netns`: a short-lived thread joins the
/// namespace (setns applies to the calling thread only) and makes it.
fn connect_from(netns: &std::path::Path, target: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.to_owned();
    let stream = std::thread::spawn(move || -> std::io::Result<std::net::TcpStream> {
        let file = std::fs::File::open(&netns)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
    })
    .join()
    .map_err(|_| std::io::Error::other("connect thread panicked"))??;
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    tokio::net::TcpStream::from_std(stream)
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth, and with it the other end.
        for (host, _) in &self.hosts {
            let _ = ip(&["netns", "del", &format!("{}-{host}", self.prefix)]);
        }
        let _ = ip(&["netns", "del", &format!("{}-sw", self.prefix)]);
    }
}
