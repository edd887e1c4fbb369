//! Who may call what: TLS credentials, bearer tokens, roles, and the one place every request is
//! authorised.
//!
//! - **Roles** ([`Role`]): `client` (jobs), `admin` (client + membership and drain), `executor`
//!   (register, heartbeat and report as itself), `master` (Raft, forwarding, the executors' worker
//!   API).
//! - **Credentials**: every hop is mutual TLS with certificates from one cluster CA. A
//!   certificate names its holder and role in a DNS subject alternative name
//!   `<name>.<role>.triad` ([`pki`]); clients may instead present a bearer token
//!   ([`token`]) over server-authenticated TLS. A client checks the server's certificate
//!   against the name it expects: `master.triad` for any master, `<id>.executor.triad` for an
//!   executor's worker API ([`tls::ServerName`]), so neither can be impersonated by another
//!   role's certificate from the same CA (Nomad's `server.<region>.nomad` model).
//! - **Authorisation** ([`authz`]): one tower layer in front of every gRPC server derives the
//!   caller's [`Identity`] and checks it against one table of methods and roles; handlers read the
//!   identity from the request's extensions only to bind an executor to its own id.
//! - **Insecure mode** exists only when a config says `insecure = true`: no TLS, no
//!   authentication, and a warning at start and every minute ([`warn_insecure`]).
//!
//! Layer: a leaf (used by `api`, `master`, `executor`, `client` and `cli`).

pub mod authz;
pub mod pki;
pub mod tls;
pub mod token;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's `[auth]` block: the bearer tokens it accepts (hashed; see [`token`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub tokens: Vec<token::TokenEntry>,
}

/// A node's security as its config sets it: `insecure`, `[tls]` and `[auth]`.
pub struct NodeSecurity<'a> {
    pub insecure: bool,
    pub tls: Option<&'a tls::TlsFiles>,
    pub auth: &'a AuthConfig,
}

/// What a node runs with, built from [`NodeSecurity`].
pub struct Secured {
    /// The server's TLS (None: insecure).
    pub server_tls: Option<tonic::transport::ServerTlsConfig>,
    /// Who may call the node's servers.
    pub authority: authz::Authority,
    /// What the node presents when it calls others.
    pub client: tls::ClientCredentials,
    /// Who the node's own certificate says it is (`Insecure` without TLS).
    pub own: Identity,
}

impl NodeSecurity<'_> {
    /// Checks the settings without reading a file: TLS unless `insecure = true`, never both.
    pub fn check(&self) -> anyhow::Result<()> {
        match (self.insecure, self.tls) {
            (true, Some(_)) => anyhow::bail!("insecure = true and a [tls] block: choose one"),
            (false, None) => anyhow::bail!(
                "no [tls] block (ca, cert, key): make them with `triad tls`, or set \
                 insecure = true to run without TLS and authentication"
            ),
            _ => Ok(()),
        }
    }

    /// Checks the settings ([`NodeSecurity::check`], and that the certificate names `role`) and
    /// loads the files.
    pub fn load(&self, role: Role) -> anyhow::Result<Secured> {
        self.check()?;
        match self.tls {
            None => Ok(Secured {
                server_tls: None,
                authority: authz::Authority::insecure(),
                client: tls::ClientCredentials::insecure(),
                own: Identity::Insecure,
            }),
            Some(files) => {
                let own = files.own_identity()?;
                if !matches!(&own, Identity::Principal { role: r, .. } if *r == role) {
                    anyhow::bail!(
                        "{} names {own}, but this node is a {role}: use a certificate made with \
                         `triad tls cert create --role {role}`",
                        files.cert.display()
                    );
                }
                let tokens = token::Tokens::new(&self.auth.tokens)
                    .map_err(|e| anyhow::anyhow!("[auth] tokens: {e}"))?;
                Ok(Secured {
                    server_tls: Some(files.server_config()?),
                    authority: authz::Authority::secure(tokens),
                    client: tls::ClientCredentials::from_files(files)?,
                    own,
                })
            }
        }
    }
}

/// What a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Admin,
    Executor,
    Master,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Client, Role::Admin, Role::Executor, Role::Master];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Admin => "admin",
            Role::Executor => "executor",
            Role::Master => "master",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (client, admin, executor, master)"))
    }
}

/// The authenticated caller of a request, as the authorisation layer established it (put in the
/// request's extensions for the handlers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A certificate or token holder.
    Principal { role: Role, name: String },
    /// Anyone, on a node configured `insecure = true`: every check passes.
    Insecure,
}

impl Identity {
    /// The name a certificate or token gives its holder (None in insecure mode).
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Principal { name, .. } => Some(name),
            Identity::Insecure => None,
        }
    }

    pub fn principal(role: Role, name: &str) -> Identity {
        Identity::Principal { role, name: name.to_string() }
    }

    /// May this caller act as executor `id` (register, heartbeat, report, deregister)?
    pub fn may_act_as_executor(&self, id: &str) -> bool {
        match self {
            Identity::Insecure => true,
            Identity::Principal { role: Role::Executor, name } => name == id,
            Identity::Principal { .. } => false,
        }
    }

    /// Checks that an executor request's `executor_id` is the caller's own: the one binding check
    /// handlers make (the role itself was checked by [`authz`]).
    pub fn require_executor(&self, id: &str) -> Result<(), tonic::Status> {
        if self.may_act_as_executor(id) {
            return Ok(());
        }
        Err(tonic::Status::permission_denied(format!(
            "{self} may not act as executor {id:?}: an executor acts only as the id its credential names"
        )))
    }

    /// The identity as carried in the on-behalf-of header of a forwarded request (`role/name`).
    pub fn to_header(&self) -> String {
        match self {
            Identity::Principal { role, name } => format!("{role}/{name}"),
            Identity::Insecure => "insecure/".to_string(),
        }
    }

    /// Parses [`Identity::to_header`]'s form.
    pub fn from_header(s: &str) -> Option<Identity> {
        let (role, name) = s.split_once('/')?;
        if role == "insecure" {
            return Some(Identity::Insecure);
        }
        let role = role.parse().ok()?;
        valid_name(name).then(|| Identity::principal(role, name))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Principal { role, name } => write!(f, "{role} {name:?}"),
            Identity::Insecure => f.write_str("an unauthenticated caller (insecure mode)"),
        }
    }
}

/// The caller of a request, as the authorisation layer (which runs in front of every server)
/// recorded it; UNAUTHENTICATED if it is missing.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Identity, tonic::Status> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated caller"))
}

/// Is `name` usable as a credential name: a DNS label (`[a-z0-9-]`, 1 to 63 bytes, no leading
/// or trailing `-`)? Executor ids are credential names, so they obey it too.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// How often an insecure node repeats its warning.
pub const INSECURE_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Logs that `what` runs without TLS or authentication: once now and every minute until
/// `stop` resolves.
pub async fn warn_insecure(what: String, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(INSECURE_WARNING_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => tracing::warn!(
                "{what} runs with insecure = true: no TLS and no authentication; anyone who can \
                 reach its ports can run commands on its executors"
            ),
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(valid_name("exec-1"));
        assert!(valid_name("m1"));
        assert!(!valid_name(""));
        assert!(!valid_name("Exec"));
        assert!(!valid_name("a.b"));
        assert!(!valid_name("-a"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn executor_binding() {
        let e = Identity::principal(Role::Executor, "exec-1");
        assert!(e.may_act_as_executor("exec-1"));
        assert!(!e.may_act_as_executor("exec-2"));
        assert!(!Identity::principal(Role::Admin, "exec-1").may_act_as_executor("exec-1"));
        assert!(Identity::Insecure.may_act_as_executor("anything"));
    }

    #[test]
    fn header_round_trip() {
        for id in [Identity::principal(Role::Client, "ci"), Identity::Insecure] {
            assert_eq!(Identity::from_header(&id.to_header()), Some(id));
        }
        assert_eq!(Identity::from_header("root/x"), None);
        assert_eq!(Identity::from_header("client/Bad.Name"), None);
    }
}
