//! TLS through rustls (tonic's `tls-ring`): the `[tls]` config block, the server and client
//! configurations built from it, and the caller's identity read from its certificate.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};

use super::pki::{executor_name, parse_role_name, MASTER_NAME};
use super::{Identity, Role};

/// A node's `[tls]` block: the cluster CA, and this node's certificate and key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

impl TlsFiles {
    /// The server side: present this node's certificate; verify client certificates against the
    /// CA when offered (clients may authenticate with a token instead; the authorisation layer
    /// decides).
    pub fn server_config(&self) -> anyhow::Result<ServerTlsConfig> {
        let ca = read(&self.ca, "CA certificate")?;
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT))
    }

    fn identity(&self) -> anyhow::Result<TlsIdentity> {
        Ok(TlsIdentity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?))
    }

    /// The role and name this node's own certificate gives it.
    pub fn own_identity(&self) -> anyhow::Result<Identity> {
        let pem = read(&self.cert, "certificate")?;
        let der = first_pem_certificate(&pem)
            .with_context(|| format!("{} holds no PEM certificate", self.cert.display()))?;
        identity_from_cert(&der).map_err(|e| anyhow::anyhow!("{}: {e}", self.cert.display()))
    }
}

/// `[tls]` with `{prefix}_TLS_CA`, `_TLS_CERT`, `_TLS_KEY` applied over `tls`: each replaces its
/// file; without a block, all three are needed.
pub fn from_env(
    prefix: &str,
    tls: Option<TlsFiles>,
    get: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<TlsFiles>> {
    let [ca, cert, key] =
        ["CA", "CERT", "KEY"].map(|k| get(&format!("{prefix}_TLS_{k}")).map(PathBuf::from));
    Ok(match (tls, ca, cert, key) {
        (Some(t), ca, cert, key) => Some(TlsFiles {
            ca: ca.unwrap_or(t.ca),
            cert: cert.unwrap_or(t.cert),
            key: key.unwrap_or(t.key),
        }),
        (None, Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        (None, None, None, None) => None,
        (None, ..) => {
            anyhow::bail!("{prefix}_TLS_CA, {prefix}_TLS_CERT and {prefix}_TLS_KEY go together")
        }
    })
}

/// The DER of the first certificate in a PEM file.
fn first_pem_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
}

/// Who a client expects at the other end, checked against the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// Any master of the cluster.
    Master,
    /// Executor `id`'s worker API.
    Executor(String),
}

impl ServerName {
    pub fn dns(&self) -> String {
        match self {
            ServerName::Master => MASTER_NAME.to_string(),
            ServerName::Executor(id) => executor_name(id),
        }
    }
}

/// What a process presents when it calls others: TLS (the CA to verify servers by, and its own
/// certificate if it has one) and/or a bearer token. `None` TLS is the insecure mode.
#[derive(Clone, Default)]
pub struct ClientCredentials {
    tls: Option<ClientTlsConfig>,
    token: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

impl ClientCredentials {
    /// Plaintext, no token: only for clusters configured `insecure = true`.
    pub fn insecure() -> ClientCredentials {
        ClientCredentials::default()
    }

    /// TLS verifying servers against `ca`, presenting `cert_key` if given, with `token` if given.
    pub fn tls(
        ca: &Path,
        cert_key: Option<(&Path, &Path)>,
        token: Option<String>,
    ) -> anyhow::Result<ClientCredentials> {
        let mut cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?))
            .assume_http2(true)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some((cert, key)) = cert_key {
            cfg =
                cfg.identity(TlsIdentity::from_pem(read(cert, "certificate")?, read(key, "key")?));
        }
        Ok(ClientCredentials { tls: Some(cfg), token })
    }

    /// A node's credentials from its `[tls]` block (its certificate is its client identity).
    pub fn from_files(files: &TlsFiles) -> anyhow::Result<ClientCredentials> {
        ClientCredentials::tls(&files.ca, Some((&files.cert, &files.key)), None)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS configuration for a connection to `server`, if TLS is on.
    pub fn tls_for(&self, server: &ServerName) -> Option<ClientTlsConfig> {
        self.tls.clone().map(|c| c.domain_name(server.dns()))
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// The identity a certificate (DER) names: exactly one `<name>.<role>.triad` SAN.
pub fn identity_from_cert(der: &[u8]) -> Result<Identity, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
        .ok_or("the certificate has no subject alternative names")?;
    let mut found: Option<(Role, &str)> = None;
    for n in &sans.value.general_names {
        let GeneralName::DNSName(dns) = n else { continue };
        if let Some(rn) = parse_role_name(dns) {
            if found.is_some_and(|f| f != rn) {
                return Err("the certificate names more than one role".into());
            }
            found = Some(rn);
        }
    }
    let (role, name) = found.ok_or("the certificate names no triad role (<name>.<role>.triad)")?;
    Ok(Identity::principal(role, name))
}

#[cfg(test)]
mod tests {
    use super::super::pki::{create_ca, create_cert, CertRequest};
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        first_pem_certificate(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_certificate_names_its_role_and_holder() {
        let (ca, key) = create_ca("test").unwrap();
        for role in Role::ALL {
            let hosts = ["127.0.0.1".to_string(), "node.example".to_string()];
            let (cert, _) =
                create_cert(&ca, &key, &CertRequest { role, name: "n-1", hosts: &hosts }).unwrap();
            assert_eq!(identity_from_cert(&der(&cert)), Ok(Identity::principal(role, "n-1")));
        }
        assert!(identity_from_cert(&der(&ca)).is_err(), "the CA is nobody");
        assert!(identity_from_cert(b"garbage").is_err());
    }
}
