//! Certificates for a cluster (rcgen, ECDSA P-256): one CA, and per node a certificate whose
//! DNS subject alternative names say who it is:
//!
//! | role | names |
//! |---|---|
//! | master | `<name>.master.triad`, `master.triad` |
//! | executor | `<name>.executor.triad` (name = the executor id) |
//! | client, admin | `<name>.<role>.triad` |
//!
//! plus any `--host` names or IP addresses, for tools that check the real host name. triad's
//! own clients verify a master as `master.triad` and an executor as `<id>.executor.triad`.
//! Keys are written with mode 0600, certificates 0644; nothing is overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::{valid_name, Role};

/// The DNS suffix of every role name.
pub const DOMAIN: &str = "triad";
/// The name every master's certificate carries and clients verify masters by.
pub const MASTER_NAME: &str = "master.triad";

/// How long certificates made here are valid.
const CA_YEARS: i64 = 10;
const CERT_YEARS: i64 = 2;

/// The SAN that names `name` as `role`.
pub fn role_name(role: Role, name: &str) -> String {
    format!("{name}.{role}.{DOMAIN}")
}

/// The name a client verifies executor `id`'s worker API by.
pub fn executor_name(id: &str) -> String {
    role_name(Role::Executor, id)
}

/// Reads `<name>.<role>.triad` back; `None` for other names (hosts, `master.triad`).
pub fn parse_role_name(dns: &str) -> Option<(Role, &str)> {
    let rest = dns.strip_suffix(DOMAIN)?.strip_suffix('.')?;
    let (name, role) = rest.rsplit_once('.')?;
    let role = role.parse().ok()?;
    valid_name(name).then_some((role, name))
}

/// Sets a validity from an hour ago (clock skew between nodes) to `years` from now.
fn validity(params: &mut CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * years);
}

/// A new cluster CA: its certificate and key, as PEM.
pub fn create_ca(common_name: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_YEARS);
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What a node certificate is for.
pub struct CertRequest<'a> {
    pub role: Role,
    pub name: &'a str,
    /// Extra DNS names or IP addresses (for tools that verify the real host).
    pub hosts: &'a [String],
}

/// The SANs of a certificate for `req`: its role name(s), then the extra hosts.
pub fn subject_alt_names(req: &CertRequest<'_>) -> anyhow::Result<Vec<SanType>> {
    if !valid_name(req.name) {
        bail!("bad name {:?}: use a DNS label ([a-z0-9-], 1-63 bytes)", req.name);
    }
    let mut names = vec![role_name(req.role, req.name)];
    if req.role == Role::Master {
        names.push(MASTER_NAME.to_string());
    }
    let mut sans = Vec::new();
    for n in names.iter().chain(req.hosts) {
        sans.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.as_str().try_into().with_context(|| format!("bad host name {n:?}"))?,
            ),
        });
    }
    Ok(sans)
}

/// A certificate for `req` signed by the CA (PEM certificate and key in), as PEM certificate and
/// key.
pub fn create_cert(
    ca_cert: &str,
    ca_key: &str,
    req: &CertRequest<'_>,
) -> anyhow::Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key).context("reading the CA certificate")?;
    let key = KeyPair::generate().context("generating a key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, role_name(req.role, req.name));
    params.subject_alt_names = subject_alt_names(req)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both a server and a client of others (masters of masters, executors of the
    // worker API's callers); clients only connect.
    params.extended_key_usages = match req.role {
        Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Role::Master | Role::Executor => {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        }
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, CERT_YEARS);
    let cert = params.signed_by(&key, &issuer).context("signing the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a new file with `mode`; refuses to overwrite one (credentials are never replaced
/// silently).
pub fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))
}

/// Where `triad tls` keeps a CA and node certificates in a directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn cert(&self, role: Role, name: &str) -> PathBuf {
        self.dir.join(format!("{role}-{name}.pem"))
    }
    pub fn key(&self, role: Role, name: &str) -> PathBuf {
        self.dir.join(format!("{role}-{name}.key"))
    }

    /// Creates the CA files (refusing to replace existing ones).
    pub fn create_ca(&self) -> anyhow::Result<()> {
        let (cert, key) = create_ca("triad cluster CA")?;
        write_new(&self.ca_key(), &key, 0o600)?;
        write_new(&self.ca_cert(), &cert, 0o644)
    }

    /// Creates a node certificate signed by this directory's CA; returns its (cert, key) paths.
    pub fn create_cert(&self, req: &CertRequest<'_>) -> anyhow::Result<(PathBuf, PathBuf)> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let (cert, key) = create_cert(&read(self.ca_cert())?, &read(self.ca_key())?, req)?;
        let (cp, kp) = (self.cert(req.role, req.name), self.key(req.role, req.name));
        write_new(&kp, &key, 0o600)?;
        write_new(&cp, &cert, 0o644)?;
        Ok((cp, kp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        assert_eq!(parse_role_name("exec-1.executor.triad"), Some((Role::Executor, "exec-1")));
        assert_eq!(parse_role_name(&role_name(Role::Admin, "ops")), Some((Role::Admin, "ops")));
        assert_eq!(parse_role_name(MASTER_NAME), None);
        assert_eq!(parse_role_name("localhost"), None);
        assert_eq!(parse_role_name("a.root.triad"), None);
        assert_eq!(parse_role_name("a.b.client.triad"), None);
    }

    #[test]
    fn files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let l = Layout { dir: dir.path().join("tls") };
        l.create_ca().unwrap();
        assert!(l.create_ca().is_err(), "a second CA must not replace the first");
        let (_, key) =
            l.create_cert(&CertRequest { role: Role::Master, name: "m1", hosts: &[] }).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(l.ca_key()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
