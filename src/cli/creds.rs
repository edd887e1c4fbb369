//! `triad tls` and `triad token`: making a cluster's credentials, and the set `triad dev` (and
//! the tests) make for a local cluster.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::security::pki::{write_new, CertRequest, Layout};
use crate::security::tls::TlsFiles;
use crate::security::token::{self, TokenEntry};
use crate::security::{AuthConfig, Role};

#[derive(Subcommand, Debug)]
pub enum TlsCmd {
    /// The cluster CA.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Node and client certificates.
    #[command(subcommand)]
    Cert(CertCmd),
}

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Create a CA: DIR/ca.pem (certificate) and DIR/ca.key (key, mode 0600).
    Create {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Create a certificate signed by DIR's CA: DIR/ROLE-NAME.pem and DIR/ROLE-NAME.key (0600).
    /// It names NAME as ROLE (`NAME.ROLE.triad`; masters also `master.triad`); an executor's
    /// NAME is its executor id.
    Create {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A DNS label: [a-z0-9-], at most 63 bytes.
        #[arg(long)]
        name: String,
        /// Also valid for this host name or IP address (repeatable), for other tools.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a bearer token. The token goes to --out (mode 0600) or else to stdout; the
    /// `[[auth.tokens]]` entry (its SHA-256) to add to every master's config goes to stdout with
    /// --out, to stderr without.
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Who holds it; for an executor token, the executor id it may act as.
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub fn tls(cmd: TlsCmd) -> anyhow::Result<()> {
    match cmd {
        TlsCmd::Ca(CaCmd::Create { dir }) => {
            let l = Layout { dir };
            l.create_ca()?;
            println!("created {} and {}", l.ca_cert().display(), l.ca_key().display());
        }
        TlsCmd::Cert(CertCmd::Create { dir, role, name, hosts }) => {
            let l = Layout { dir };
            let (cert, key) = l.create_cert(&CertRequest { role, name: &name, hosts: &hosts })?;
            println!("created {} and {}", cert.display(), key.display());
        }
    }
    Ok(())
}

pub fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    let TokenCmd::Create { role, name, out } = cmd;
    let (secret, entry) = token::create(role, &name).map_err(anyhow::Error::msg)?;
    let toml = auth_toml(&entry)?;
    match out {
        Some(path) => {
            write_new(&path, &format!("{secret}\n"), 0o600)?;
            eprintln!("wrote the token to {}; add this to every master's config:", path.display());
            print!("{toml}");
        }
        None => {
            println!("{secret}");
            eprint!("# add this to every master's config:\n{toml}");
        }
    }
    Ok(())
}

/// One `[[auth.tokens]]` entry as TOML.
fn auth_toml(entry: &TokenEntry) -> anyhow::Result<String> {
    let auth = AuthConfig { tokens: vec![entry.clone()] };
    #[derive(serde::Serialize)]
    struct Wrap<'a> {
        auth: &'a AuthConfig,
    }
    toml::to_string(&Wrap { auth: &auth }).context("writing the token entry")
}

/// The credentials of a local cluster (`triad dev`, `triad bench failover`, the tests), under
/// `dir`: `tls/` (CA, one certificate per master and executor) and `tokens/` (one token per
/// role). Made on first use, reused after.
pub struct LocalCredentials {
    pub tls: Layout,
    pub tokens_dir: PathBuf,
    /// The tokens' entries, for the nodes' `[auth]`.
    pub auth: AuthConfig,
}

/// The names of a local cluster's nodes (they are the executor ids).
pub fn master_name(id: u32) -> String {
    format!("master{id}")
}
pub fn executor_name(i: u32) -> String {
    format!("executor{i}")
}

/// The token roles `triad dev` makes, with their holders' names.
const DEV_TOKENS: [(Role, &str); 3] =
    [(Role::Admin, "dev-admin"), (Role::Client, "dev-client"), (Role::Executor, "dev-executor")];

impl LocalCredentials {
    /// Makes (or finds) the CA, certificates for `masters` masters and `executors` executors
    /// (valid for 127.0.0.1 and localhost too), and the tokens.
    pub fn ensure(dir: &Path, masters: u32, executors: u32) -> anyhow::Result<LocalCredentials> {
        let dir = std::path::absolute(dir)?;
        let tls = Layout { dir: dir.join("tls") };
        if !tls.ca_cert().exists() {
            tls.create_ca()?;
        }
        let tokens_dir = dir.join("tokens");
        let mut auth = AuthConfig::default();
        for (role, name) in DEV_TOKENS {
            let path = tokens_dir.join(format!("{role}.token"));
            if !path.exists() {
                let (secret, _) = token::create(role, name).map_err(anyhow::Error::msg)?;
                write_new(&path, &format!("{secret}\n"), 0o600)?;
            }
            let secret = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let sha256 = token::hash(secret.trim());
            auth.tokens.push(TokenEntry { name: name.to_string(), role, sha256 });
        }
        let creds = LocalCredentials { tls, tokens_dir, auth };
        let nodes = (1..=masters)
            .map(|i| (Role::Master, master_name(i)))
            .chain((1..=executors).map(|i| (Role::Executor, executor_name(i))));
        for (role, name) in nodes {
            creds.node(role, &name)?;
        }
        Ok(creds)
    }

    /// The `[tls]` block of node `name` as `role`, making its certificate (valid for 127.0.0.1
    /// and localhost too) if it has none yet.
    pub fn node(&self, role: Role, name: &str) -> anyhow::Result<TlsFiles> {
        if !self.tls.cert(role, name).exists() {
            let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
            self.tls.create_cert(&CertRequest { role, name, hosts: &hosts })?;
        }
        Ok(self.files(role, name))
    }

    /// The `[tls]` block of a node.
    pub fn files(&self, role: Role, name: &str) -> TlsFiles {
        TlsFiles {
            ca: self.tls.ca_cert(),
            cert: self.tls.cert(role, name),
            key: self.tls.key(role, name),
        }
    }

    /// The token file of `role` (admin, client or executor).
    pub fn token_file(&self, role: Role) -> PathBuf {
        self.tokens_dir.join(format!("{role}.token"))
    }

    /// The secret of `role`'s token.
    pub fn token(&self, role: Role) -> anyhow::Result<String> {
        let p = self.token_file(role);
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }

    /// What a CLI holding `role`'s token presents.
    pub fn client(&self, role: Role) -> anyhow::Result<crate::api::ClientCredentials> {
        crate::api::ClientCredentials::tls(&self.tls.ca_cert(), None, Some(self.token(role)?))
    }
}
