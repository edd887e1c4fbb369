//! The run's credentials: a fresh cluster CA per run, one certificate per master and executor
//! (named after its host, valid for its address too), and the admin, client and executor tokens.
//! Everything lives in `<run>/creds/` (`tls/`, `tokens/`), made before any node starts.
//!
//! Who presents what:
//! - masters and executors: their own certificate (mutual TLS on every hop), and every token's
//!   hash in `[auth]`;
//! - the workload's clients: the client token over TLS (the role a user submitting jobs has);
//! - the runner's probes (leader polls, readiness, the final phase's reads): the admin token.

use std::path::Path;

use anyhow::Context;
use triad::api::Dialer;
use triad::cli::creds::LocalCredentials;
use triad::security::pki::CertRequest;
use triad::security::tls::TlsFiles;
use triad::security::{AuthConfig, Role};

pub struct Creds {
    local: LocalCredentials,
    /// What the workload's clients present: the client token over TLS.
    pub client: Dialer,
    /// What the runner's probes present: the admin token over TLS.
    pub admin: Dialer,
}

impl Creds {
    /// Makes the CA and the tokens under `dir` (no node certificates yet: [`Creds::node`]).
    pub fn create(dir: &Path) -> anyhow::Result<Creds> {
        let local = LocalCredentials::ensure(dir, 0, 0)
            .with_context(|| format!("making the run's credentials in {}", dir.display()))?;
        let client = Dialer::new(local.client(Role::Client)?);
        let admin = Dialer::new(local.client(Role::Admin)?);
        Ok(Creds { local, client, admin })
    }

    /// The `[tls]` block of node `name` (a host name: `m1`, `e2`, ...; for an executor also its
    /// id) as `role`, with a certificate valid for `ip` too (triad's own clients verify
    /// `master.triad` / `<id>.executor.triad`; the address is for other tools, e.g. grpcurl).
    pub fn node(&self, role: Role, name: &str, ip: &str) -> anyhow::Result<TlsFiles> {
        if !self.local.tls.cert(role, name).exists() {
            let hosts = [ip.to_string(), "127.0.0.1".to_string(), "localhost".to_string()];
            self.local
                .tls
                .create_cert(&CertRequest { role, name, hosts: &hosts })
                .with_context(|| format!("making the certificate of {name}"))?;
        }
        Ok(self.local.files(role, name))
    }

    /// The tokens every node accepts (hashed).
    pub fn auth(&self) -> AuthConfig {
        self.local.auth.clone()
    }
}
