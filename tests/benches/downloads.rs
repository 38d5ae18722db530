//! Download throughput against the hub emulator over loopback, side by side with curl, aria2c
//! and the official `huggingface_hub` client on the same files in one run.
//!
//! ```sh
//! cargo bench -p pumas-e2e --bench downloads -- [--big-mib 2048] [--throttled-mib 512] \
//!     [--repo-files 20] [--repo-file-mib 32] [--rate-mb 20]
//! ```
//!
//! Needs `curl`; `aria2c` (Debian `aria2`) and `.venv/bin/python` with `huggingface_hub` are
//! used when present. Prints a Markdown table for docs/BENCHMARKS.md.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pumas_e2e::hub::{HubEmulator, fixtures};
use pumas_e2e::{channel, serve_role};
use pumas_proto::fetch::v1::fetch_service_client::FetchServiceClient;
use pumas_proto::fetch::v1::{DownloadState, GetDownloadRequest, StartDownloadRequest};

struct Args {
    big_mib: u64,
    throttled_mib: u64,
    repo_files: usize,
    repo_file_mib: u64,
    rate_mb: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        big_mib: 2048,
        throttled_mib: 512,
        repo_files: 20,
        repo_file_mib: 32,
        rate_mb: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<u64> { Ok(it.next().context("flag needs a value")?.parse()?) };
        match flag.as_str() {
            "--big-mib" => a.big_mib = value()?,
            "--throttled-mib" => a.throttled_mib = value()?,
            "--repo-files" => a.repo_files = value()? as usize,
            "--repo-file-mib" => a.repo_file_mib = value()?,
            "--rate-mb" => a.rate_mb = value()?,
            "--bench" => {}
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn timed(mut command: Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(started.elapsed())
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Pumas {
    _processes: Vec<pumas_e2e::Process>,
    client: FetchServiceClient<pumas_e2e::Channel>,
}

async fn pumas(emulator: &HubEmulator, dir: &Path) -> anyhow::Result<Pumas> {
    let root = dir.join("root");
    let root_arg = root.to_str().context("utf-8")?.to_owned();
    let (index, index_addr) = serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir).await?;
    let (fetch, fetch_addr) = serve_role(
        "fetch",
        "127.0.0.1:0",
        &[
            "--data-root",
            &root_arg,
            "--index",
            &index_addr,
            "--hub-endpoint",
            &emulator.url,
            "--hf-cache",
            "none",
        ],
        dir,
    )
    .await?;
    Ok(Pumas {
        _processes: vec![index, fetch],
        client: FetchServiceClient::new(channel(&fetch_addr).await?),
    })
}

/// Downloads `repo` with Pumas; the time from StartDownload to COMPLETED (verified and in the
/// library).
async fn pumas_download(p: &mut Pumas, repo: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let id = p
        .client
        .start_download(StartDownloadRequest {
            repo_id: repo.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .download
        .context("download")?
        .download_id;
    loop {
        let d = p
            .client
            .get_download(GetDownloadRequest {
                download_id: id.clone(),
            })
            .await?
            .into_inner()
            .download
            .context("download")?;
        if d.state == DownloadState::Completed as i32 {
            return Ok(started.elapsed());
        }
        if d.state == DownloadState::Failed as i32 {
            bail!("pumas download failed: {:?}", d.error);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn curl(url: &str, out: &Path) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sSfL", "-o"]).arg(out).arg(url);
    c
}

fn aria2c(url: &str, dir: &Path, name: &str) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "-q",
        "-x",
        "8",
        "-s",
        "8",
        "-k",
        "1M",
        "--allow-overwrite=true",
        "--file-allocation=none",
        "-d",
    ])
    .arg(dir)
    .args(["-o", name, url]);
    c
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mib = 1u64 << 20;
    println!("building fixtures (this takes a few seconds per GiB)...");
    let repos = vec![
        fixtures::big_model("bench/big", 1, a.big_mib * mib),
        fixtures::big_model("bench/throttled", 1, a.throttled_mib * mib),
        fixtures::big_model("bench/many", a.repo_files, a.repo_file_mib * mib),
    ];
    let emulator = HubEmulator::start(repos).await?;
    let work = tempfile::tempdir()?;
    let mut rows: Vec<(String, String, u64, Duration)> = Vec::new();

    // 1. Unthrottled, one big file.
    let big = emulator
        .file_bytes("bench/big", "model.safetensors")
        .context("big")?
        .len() as u64;
    let url = format!("{}/bench/big/resolve/main/model.safetensors", emulator.url);
    let t = timed(curl(&url, &work.path().join("curl-big")))?;
    rows.push(("unthrottled, 1 file".into(), "curl".into(), big, t));
    std::fs::remove_file(work.path().join("curl-big"))?;
    // Pumas makes every file durable (fsync) before the library takes it; curl does not.
    let mut synced = Command::new("sh");
    synced.arg("-c").arg(format!(
        "curl -sSfL -o '{0}' '{url}' && sync '{0}'",
        work.path().join("curl-big-synced").display()
    ));
    let t = timed(synced)?;
    rows.push(("unthrottled, 1 file".into(), "curl, then fsync".into(), big, t));
    std::fs::remove_file(work.path().join("curl-big-synced"))?;
    let dir = work.path().join("pumas-big");
    std::fs::create_dir_all(&dir)?;
    let mut p = pumas(&emulator, &dir).await?;
    let t = pumas_download(&mut p, "bench/big").await?;
    rows.push((
        "unthrottled, 1 file".into(),
        "pumas (verified, committed)".into(),
        big,
        t,
    ));
    drop(p);
    std::fs::remove_dir_all(&dir)?;

    // 2. Throttled per connection.
    let rate = a.rate_mb * 1_000_000;
    emulator
        .faults
        .throttle_bytes_per_second
        .store(rate, Ordering::SeqCst);
    let size = emulator
        .file_bytes("bench/throttled", "model.safetensors")
        .context("throttled")?
        .len() as u64;
    let url = format!("{}/bench/throttled/resolve/main/model.safetensors", emulator.url);
    let label = format!("{} MB/s per connection, 1 file", a.rate_mb);
    let t = timed(curl(&url, &work.path().join("curl-throttled")))?;
    rows.push((label.clone(), "curl".into(), size, t));
    if have("aria2c") {
        let t = timed(aria2c(&url, work.path(), "aria2-throttled"))?;
        rows.push((label.clone(), "aria2c -x 8 -s 8".into(), size, t));
    } else {
        println!("aria2c not installed (apt-get install aria2): skipped");
    }
    let dir = work.path().join("pumas-throttled");
    std::fs::create_dir_all(&dir)?;
    let mut p = pumas(&emulator, &dir).await?;
    let t = pumas_download(&mut p, "bench/throttled").await?;
    rows.push((label, "pumas".into(), size, t));
    drop(p);
    emulator
        .faults
        .throttle_bytes_per_second
        .store(0, Ordering::SeqCst);

    // 3. A repository of many files.
    let total: u64 = (0..a.repo_files)
        .map(|n| {
            let name = format!("model-{:05}-of-{:05}.safetensors", n + 1, a.repo_files);
            emulator
                .file_bytes("bench/many", &name)
                .map(|b| b.len() as u64)
                .unwrap_or(0)
        })
        .sum();
    let label = format!("{} files", a.repo_files);
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if python.exists() {
        let mut c = Command::new(&python);
        c.env("HF_ENDPOINT", &emulator.url)
            .env("HF_HOME", work.path().join("hf-home"))
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .args([
                "-c",
                "import sys; from huggingface_hub import snapshot_download; snapshot_download('bench/many')",
            ]);
        let t = timed(c)?;
        rows.push((
            label.clone(),
            "huggingface_hub snapshot_download".into(),
            total,
            t,
        ));
    } else {
        println!("no .venv with huggingface_hub (run tools/test once): skipped");
    }
    let dir = work.path().join("pumas-many");
    std::fs::create_dir_all(&dir)?;
    let mut p = pumas(&emulator, &dir).await?;
    let t = pumas_download(&mut p, "bench/many").await?;
    rows.push((label, "pumas".into(), total, t));

    println!("\n| case | client | bytes | seconds | MB/s |\n|---|---|---|---|---|");
    for (case, client, bytes, t) in rows {
        println!(
            "| {case} | {client} | {bytes} | {:.2} | {:.0} |",
            t.as_secs_f64(),
            mb_per_s(bytes, t)
        );
    }
    Ok(())
}
