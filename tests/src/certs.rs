//! Test certificates, made at test time: two CAs, a server certificate for 127.0.0.1 and
//! localhost, and a client certificate from each CA.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// Paths of the PEM files [`make`] wrote.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, and a client certificate it signed (must be refused).
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

struct Issuer {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> anyhow::Result<Issuer> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let pem = params.clone().self_signed(&key)?.pem();
    Ok(Issuer { params, key, pem })
}

fn leaf(issuer: &Issuer, names: &[&str]) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let key = KeyPair::generate()?;
    let issuer_cert = rcgen::Issuer::from_params(&issuer.params, &issuer.key);
    let cert = params.signed_by(&key, &issuer_cert)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a fresh set of certificates into `dir`.
pub fn make(dir: &Path) -> anyhow::Result<Certs> {
    std::fs::create_dir_all(dir)?;
    let main = ca("pumas test CA")?;
    let other = ca("another CA")?;
    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let (server_cert, server_key) = leaf(&main, &["localhost", "127.0.0.1"])?;
    let (client_cert, client_key) = leaf(&main, &["pumas-client"])?;
    let (other_cert, other_key) = leaf(&other, &["intruder"])?;
    Ok(Certs {
        ca: write("ca.pem", &main.pem)?,
        server_cert: write("server.pem", &server_cert)?,
        server_key: write("server.key", &server_key)?,
        client_cert: write("client.pem", &client_cert)?,
        client_key: write("client.key", &client_key)?,
        other_ca: write("other-ca.pem", &other.pem)?,
        other_client_cert: write("other-client.pem", &other_cert)?,
        other_client_key: write("other-client.key", &other_key)?,
    })
}
