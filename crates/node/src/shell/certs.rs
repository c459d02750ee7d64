//! The cluster CA and node certificates for mutual TLS between regions.
//!
//! A directory holds `ca.pem` and `ca.key` (the cluster CA) and, per node,
//! `<name>.pem` and `<name>.key`. Every node certificate names `maas-node`, the
//! TLS server name peers dial, and is signed by the CA; a peer presenting
//! anything else is refused during the QUIC handshake.

use crate::NodeError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The TLS server name every node certificate carries.
pub(crate) const SERVER_NAME: &str = "maas-node";
const CA_NAME: &str = "MaaS cluster CA";

/// Paths of one node's TLS material.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

fn err(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Transport(format!("{what}: {e}"))
}

/// The CA's parameters. The same every time, so a CA reloaded from its key
/// signs certificates whose issuer matches the stored CA certificate.
fn ca_params() -> Result<CertificateParams, NodeError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Creates the cluster CA in `dir` unless one is there.
pub(crate) fn ensure_ca(dir: &Path) -> Result<(), NodeError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let key = KeyPair::generate().map_err(|e| err("CA key", e))?;
    let cert = ca_params()?
        .self_signed(&key)
        .map_err(|e| err("CA certificate", e))?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem())?;
    Ok(())
}

/// Issues `<name>.pem`/`<name>.key` in `dir`, signed by the CA there, unless
/// they exist. Creates the CA first if needed.
pub(crate) fn ensure_node(dir: &Path, name: &str) -> Result<TlsFiles, NodeError> {
    if name.is_empty()
        || name == "ca"
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(NodeError::Config(format!(
            "certificate name {name:?}: use letters, digits, '-' or '_', and not \"ca\""
        )));
    }
    ensure_ca(dir)?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let ca_key_pem = std::fs::read_to_string(dir.join("ca.key"))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| err("CA key", e))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate().map_err(|e| err("node key", e))?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .map_err(|e| err("node certificate", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| err("node certificate", e))?;
    write_private(&files.key, &key.serialize_pem())?;
    std::fs::write(&files.cert, cert.pem())?;
    Ok(files)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> Result<(), NodeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_nodes_under_one_ca_and_keeps_what_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ensure_node(dir.path(), "node-1").expect("node-1");
        let ca_before = std::fs::read(&a.ca).expect("ca");
        let b = ensure_node(dir.path(), "node-2").expect("node-2");
        assert_eq!(std::fs::read(&b.ca).expect("ca"), ca_before, "one CA");
        let cert_before = std::fs::read(&a.cert).expect("cert");
        ensure_node(dir.path(), "node-1").expect("again");
        assert_eq!(std::fs::read(&a.cert).expect("cert"), cert_before);
        assert!(ensure_node(dir.path(), "../x").is_err());
        assert!(ensure_node(dir.path(), "ca").is_err());
    }
}
