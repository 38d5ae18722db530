//! Mixed load through the gateway with a backend restart in the middle (see
//! `pumas_e2e::load`): 32 callers for 20 s in CI (`PUMAS_LOAD_SECS` for longer). No call ends
//! INTERNAL, UNAVAILABLE only while the index is down, and every import, download and delete
//! ends consistent with the library.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_with_an_index_restart_stays_consistent() -> anyhow::Result<()> {
    let secs = std::env::var("PUMAS_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let report = pumas_e2e::load::run(pumas_e2e::load::Settings {
        duration: Duration::from_secs(secs),
        callers: 32,
        models: 2000,
    })
    .await?;
    println!("{}", report.table());
    println!(
        "{} calls in {:.1} s; outage {:.2} s, last UNAVAILABLE {:?} after recovery; {} imports added, {} downloads completed, {} failed, {} deletes",
        report.total(),
        report.elapsed.as_secs_f64(),
        report.outage.as_secs_f64(),
        report.last_unavailable_after_recovery,
        report.imports_added,
        report.downloads_completed,
        report.downloads_failed,
        report.deletes
    );
    for failure in &report.download_failures {
        println!("download failed: {failure}");
    }
    assert_eq!(report.internal, 0, "INTERNAL answers:\n{}", report.table());
    assert_eq!(
        report.unavailable_outside_outage,
        0,
        "UNAVAILABLE outside the outage:\n{}",
        report.table()
    );
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(
        report.imports_added > 0 && report.total() > 1000,
        "the load ran:\n{}",
        report.table()
    );
    Ok(())
}
