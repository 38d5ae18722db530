//! Mapper speed: apply N models into three apps (3N symlinks), a no-change re-apply, and the
//! scan repair does, against a plain loop of symlink syscalls for the same links.
//!
//! ```sh
//! cargo bench -p pumas-mapper --bench apply -- [--models 10000] [--dir /dev/shm]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use pumas_mapper::engine::Engine;
use pumas_mapper::mapping;
use pumas_mapper::plan::{ActionKind, Model};
use pumas_mapper::registry::Registry;

fn models(mount: &Path, n: usize) -> anyhow::Result<Vec<Model>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("lora/sdxl/m{i:05}");
        let dir = mount.join(&id);
        std::fs::create_dir_all(&dir)?;
        let file = format!("m{i:05}.safetensors");
        std::fs::write(dir.join(&file), i.to_le_bytes())?;
        out.push(Model {
            id,
            display_name: format!("m{i:05}"),
            model_type: "lora".into(),
            family: "sdxl".into(),
            format: "safetensors".into(),
            state: "ready".into(),
            tags: Vec::new(),
            files: vec![(file, format!("sha256:{:064x}", i))],
            repo_id: String::new(),
            commit: String::new(),
            side_files: Vec::new(),
        });
    }
    Ok(out)
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut n = 10_000usize;
    let mut base: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--models" => n = args.next().unwrap_or_default().parse()?,
            "--dir" => base = args.next().map(Into::into),
            "--bench" => {}
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let tmp = match &base {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let mount = tmp.path().join("library");
    let models = models(&mount, n)?;
    let registry = Registry::open(tmp.path()).await?;
    let index = pumas_mapper::engine::Library::new(
        pumas_proto::index::v1::index_service_client::IndexServiceClient::new(
            pumas_runtime::client::connect_lazy("127.0.0.1:9").map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
    );
    let engine = Engine::new(
        tmp.path().join("configs"),
        mount.clone(),
        "bench".into(),
        registry,
        index,
        Default::default(),
    );
    let configs: Vec<_> = ["comfyui", "forge", "sdnext"]
        .iter()
        .map(|kind| {
            let text = format!(
                "kind = \"{kind}\"\nroot = \"{}\"\nstrategy = \"symlink\"\n",
                tmp.path().join(kind).display()
            );
            mapping::parse(kind, &text).map_err(|e| anyhow::anyhow!("{e:?}"))
        })
        .collect::<Result<_, _>>()?;

    // Baseline: the same links with a bare loop of symlink(2) calls.
    let started = Instant::now();
    for (c, folder) in configs.iter().zip(["models/loras", "models/Lora", "models/Lora"]) {
        let dir = tmp.path().join("baseline").join(&c.app).join(folder);
        std::fs::create_dir_all(&dir)?;
        for m in &models {
            let file = &m.files[0].0;
            std::os::unix::fs::symlink(mount.join(&m.id).join(file), dir.join(file))?;
        }
    }
    let baseline = started.elapsed();

    let started = Instant::now();
    let mut made = 0;
    for c in &configs {
        let outcome = engine.apply_models(c, &models, false, None).await?;
        made += outcome.plan.count(ActionKind::Create);
    }
    let apply = started.elapsed();
    assert_eq!(made, 3 * n, "every link made");

    let started = Instant::now();
    for c in &configs {
        let outcome = engine.apply_models(c, &models, false, None).await?;
        assert_eq!(outcome.plan.count(ActionKind::Keep), n, "nothing to change");
    }
    let reapply = started.elapsed();

    let started = Instant::now();
    for c in &configs {
        let plan = engine.plan_models(c, &models).await?;
        assert_eq!(plan.count(ActionKind::Keep), n);
    }
    let scan = started.elapsed();

    println!(
        "| measure ({n} models x 3 apps = {} links) | seconds |\n|---|---|",
        3 * n
    );
    println!("| plain loop of symlink(2) | {} |", seconds(baseline));
    println!(
        "| apply (plan, make, record) | {} ({:.1}x the loop) |",
        seconds(apply),
        apply.as_secs_f64() / baseline.as_secs_f64()
    );
    println!("| no-change re-apply | {} |", seconds(reapply));
    println!("| repair scan (every link checked on disk) | {} |", seconds(scan));
    Ok(())
}
