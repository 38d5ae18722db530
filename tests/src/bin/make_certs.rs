//! `make-certs <dir>`: writes the test CA, server and client certificates (see
//! `pumas_e2e::certs`) for tests that are not written in Rust.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: make-certs <dir>"))?;
    pumas_e2e::certs::make(std::path::Path::new(&dir))?;
    println!("{dir}");
    Ok(())
}
