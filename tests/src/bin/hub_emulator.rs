//! `hub-emulator`: the test tree's Hugging Face Hub emulator as a process, for the Python
//! fidelity test (the official `huggingface_hub` client) and the download benchmarks.
//!
//! Prints `hub=<url> cdn=<url>` once it listens, then serves until killed.

use pumas_e2e::hub::{HubEmulator, fixtures};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut hub = "127.0.0.1:0".to_owned();
    let mut cdn = "127.0.0.1:0".to_owned();
    let mut big: Vec<(String, usize, u64)> = Vec::new();
    let mut page_cap = 0usize;
    let mut throttle = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--hub" => hub = value()?,
            "--cdn" => cdn = value()?,
            "--page-cap" => page_cap = value()?.parse()?,
            "--throttle-bytes-per-second" => throttle = value()?.parse()?,
            // --big-repo org/name:FILES:BYTES_EACH
            "--big-repo" => {
                let spec = value()?;
                let mut parts = spec.split(':');
                let (Some(id), Some(files), Some(bytes)) = (parts.next(), parts.next(), parts.next()) else {
                    anyhow::bail!("--big-repo wants org/name:FILES:BYTES_EACH, got {spec}");
                };
                big.push((id.to_owned(), files.parse()?, bytes.parse()?));
            }
            "--help" | "-h" => {
                println!(
                    "hub-emulator [--hub ADDR] [--cdn ADDR] [--page-cap N] [--throttle-bytes-per-second N] [--big-repo org/name:FILES:BYTES_EACH]..."
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let mut repos = fixtures::standard();
    for (id, files, bytes) in big {
        repos.push(fixtures::big_model(&id, files, bytes));
    }
    let emulator = HubEmulator::start_on(&hub, &cdn, repos).await?;
    emulator
        .faults
        .page_cap
        .store(page_cap, std::sync::atomic::Ordering::SeqCst);
    emulator
        .faults
        .throttle_bytes_per_second
        .store(throttle, std::sync::atomic::Ordering::SeqCst);
    println!("hub={} cdn={}", emulator.url, emulator.cdn_url);
    std::future::pending::<()>().await;
    Ok(())
}
