//! Generates the Rust code for every .proto under `pumas/` and the encoded descriptor set that
//! server reflection serves. protoc comes from the protoc-bin-vendored crate (no download at
//! build time); `$PROTOC` overrides it.

use std::env;
use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut protos = Vec::new();
    collect_protos(Path::new("pumas"), &mut protos)?;
    protos.sort();

    let mut config = tonic_prost_build::Config::new();
    if env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let includes = [PathBuf::from("."), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("pumas_descriptor.bin"))
        .compile_with_config(config, &protos, &includes)?;

    // tonic-prost-build prints no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed=pumas");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
