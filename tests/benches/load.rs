//! The 60 s mixed-load bench of docs/BENCHMARKS.md: 32 callers through the gateway (searches
//! with distinct queries, small imports, downloads from the emulator, deletes, a reindex) with
//! the index SIGKILLed and restarted halfway. Prints calls by status code as Markdown.
//!
//! cargo bench -p pumas-e2e --bench load   (PUMAS_LOAD_SECS, PUMAS_LOAD_CALLERS to change it)

use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(pumas_e2e::load::run(pumas_e2e::load::Settings {
        duration: Duration::from_secs(env("PUMAS_LOAD_SECS", 60)),
        callers: env("PUMAS_LOAD_CALLERS", 32) as usize,
        models: env("PUMAS_LOAD_MODELS", 10_000) as usize,
    }))?;
    println!("{}", report.table());
    println!(
        "{} calls in {:.1} s ({:.0}/s); INTERNAL {}; UNAVAILABLE outside the outage {}; outage {:.2} s, last UNAVAILABLE {:?} after recovery",
        report.total(),
        report.elapsed.as_secs_f64(),
        report.total() as f64 / report.elapsed.as_secs_f64(),
        report.internal,
        report.unavailable_outside_outage,
        report.outage.as_secs_f64(),
        report.last_unavailable_after_recovery,
    );
    println!(
        "{} imports added, {} downloads completed, {} failed, {} deletes; violations: {:?}",
        report.imports_added,
        report.downloads_completed,
        report.downloads_failed,
        report.deletes,
        report.violations
    );
    for failure in &report.download_failures {
        println!("download failed: {failure}");
    }
    Ok(())
}
