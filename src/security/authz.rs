//! The one place every gRPC request is authenticated and authorised: a tower layer in front of
//! every triad server (masters and executors). It
//!
//! 1. finds the method's rule in [`rule`] (one table for the whole API; unknown methods need an
//!    authenticated caller, and then get UNIMPLEMENTED from the router);
//! 2. authenticates the peer: its client certificate (verified by rustls against the cluster CA)
//!    or else its bearer token (`authorization: Bearer triad_…`); neither is UNAUTHENTICATED;
//! 3. for a request a master forwarded, takes the original caller from [`ON_BEHALF_HEADER`],
//!    which only a master may set (anyone else setting it, or [`FORWARDED_HEADER`], is refused);
//! 4. checks the caller's role against the rule (PERMISSION_DENIED otherwise), and records the
//!    caller as an [`Identity`] in the request's extensions, where handlers find it to bind an
//!    executor to its own id ([`super::require_executor`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use tonic::Status;

use super::tls::identity_from_cert;
use super::token::Tokens;
use super::{Identity, Role};

/// Metadata key set on a request a master forwarded to the leader (forwarding is one hop only).
pub const FORWARDED_HEADER: &str = "x-triad-forwarded";
/// Metadata key with the original caller of a forwarded request (`role/name`).
pub const ON_BEHALF_HEADER: &str = "x-triad-on-behalf-of";

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No credential needed (gRPC health: it says serving or not, nothing more).
    Anyone,
    /// Any authenticated caller.
    Authenticated,
    /// Callers with one of these roles.
    Roles(&'static [Role]),
}

use Role::{Admin, Client, Executor, Master};

const CLIENTS: &[Role] = &[Client, Admin];
const ANY_ROLE: &[Role] = &[Client, Admin, Executor, Master];

/// The rule for the gRPC method at `path` (`/package.Service/Method`): the whole API's
/// permissions in one table.
pub fn rule(path: &str) -> Rule {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match (service, method) {
        ("grpc.health.v1.Health", _) => Rule::Anyone,
        ("grpc.reflection.v1.ServerReflection", _) => Rule::Authenticated,
        ("grpc.reflection.v1alpha.ServerReflection", _) => Rule::Authenticated,
        ("triad.v1.RaftService", _) => Rule::Roles(&[Master]),
        // Events (issue 17): WatchEvents and ReadIndex are reads, like the rest of JobService.
        ("triad.v1.JobService", "WatchEvents" | "ReadIndex") => Rule::Roles(CLIENTS),
        // Retention (issue 14): any client deletes a finished job; a collection pass is admin's.
        ("triad.v1.JobService", "DeleteJob") => Rule::Roles(CLIENTS),
        ("triad.v1.JobService", "CollectGarbage") => Rule::Roles(&[Admin]),
        // Batch semantics: suspending and resuming is a client's, like cancelling.
        ("triad.v1.JobService", "SuspendJob" | "ResumeJob") => Rule::Roles(CLIENTS),
        // Forwarding that batches (issue 19): only a master opens it; each submission on it is
        // authorised as its original caller's SubmitJob ([`authorize_forwarded`]).
        ("triad.v1.JobService", "ForwardSubmits") => Rule::Roles(&[Master]),
        ("triad.v1.JobService", _) => Rule::Roles(CLIENTS),
        // Cron (issue 17): reads for clients, changes for admins (SPEC "admin (..., cron, ...)").
        ("triad.v1.CronService", "ListCrons" | "GetCron") => Rule::Roles(CLIENTS),
        ("triad.v1.CronService", _) => Rule::Roles(&[Admin]),
        ("triad.v1.ClusterService", "ClusterStatus" | "NodeStatus") => Rule::Roles(ANY_ROLE),
        ("triad.v1.ClusterService", _) => Rule::Roles(&[Admin]),
        (
            "triad.v1.ExecutorService",
            "Register" | "Heartbeat" | "HeartbeatStream" | "ReportTask" | "Deregister",
        ) => Rule::Roles(&[Executor]),
        ("triad.v1.ExecutorService", "ListExecutors") => Rule::Roles(ANY_ROLE),
        ("triad.v1.ExecutorService", _) => Rule::Roles(&[Admin]),
        ("triad.v1.WorkerService", "ReadOutput" | "FollowOutput") => {
            Rule::Roles(&[Client, Admin, Master])
        }
        // The leader deletes the output of jobs it deleted (retention, issue 14).
        ("triad.v1.WorkerService", "DeleteOutput") => Rule::Roles(&[Master]),
        ("triad.v1.WorkerService", _) => Rule::Roles(&[Master]),
        _ => Rule::Authenticated,
    }
}

/// How a server authenticates its callers.
#[derive(Clone)]
pub struct Authority {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    /// `insecure = true`: everyone is [`Identity::Insecure`].
    Insecure,
    Secure {
        tokens: Arc<Tokens>,
        certs: Arc<CertCache>,
    },
}

/// Identities of the client certificates seen recently (parsing one costs microseconds, and a
/// connection presents the same certificate on every request).
#[derive(Default)]
struct CertCache {
    by_der: RwLock<HashMap<Vec<u8>, Identity>>,
}

const CERT_CACHE_MAX: usize = 4096;

impl CertCache {
    fn identify(&self, der: &[u8]) -> Result<Identity, Status> {
        if let Some(id) = self.by_der.read().expect("poisoned").get(der) {
            return Ok(id.clone());
        }
        let id = identity_from_cert(der)
            .map_err(|e| Status::unauthenticated(format!("client certificate refused: {e}")))?;
        let mut map = self.by_der.write().expect("poisoned");
        if map.len() >= CERT_CACHE_MAX {
            map.clear();
        }
        map.insert(der.to_vec(), id.clone());
        Ok(id)
    }
}

impl Authority {
    pub fn insecure() -> Authority {
        Authority { mode: Mode::Insecure }
    }

    /// TLS on: callers are their client certificate's identity, or their token's.
    pub fn secure(tokens: Tokens) -> Authority {
        Authority { mode: Mode::Secure { tokens: Arc::new(tokens), certs: Default::default() } }
    }

    /// Authenticates and authorises `req`; on success records the caller in its extensions.
    pub fn authorize<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let rule = rule(req.uri().path());
        let who = match &self.mode {
            Mode::Insecure => Identity::Insecure,
            Mode::Secure { .. } if rule == Rule::Anyone => return Ok(()),
            Mode::Secure { tokens, certs } => {
                let peer = self.peer(req, tokens, certs)?;
                let who = on_behalf_of(req.headers(), peer)?;
                check(rule, &who, req.uri().path())?;
                who
            }
        };
        req.extensions_mut().insert(who);
        Ok(())
    }

    /// The directly connected caller: its certificate, else its token.
    fn peer<B>(
        &self,
        req: &http::Request<B>,
        tokens: &Tokens,
        certs: &CertCache,
    ) -> Result<Identity, Status> {
        type Tls =
            tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;
        let cert = req.extensions().get::<Tls>().and_then(|i| i.peer_certs());
        if let Some(first) = cert.as_ref().and_then(|c| c.first()) {
            return certs.identify(first);
        }
        let Some(auth) = req.headers().get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "no credential: present a client certificate or a bearer token (TRIAD_TOKEN)",
            ));
        };
        let secret = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("malformed authorization header"))?;
        tokens
            .identify(secret.trim())
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))
    }
}

/// The caller a request acts for: the peer, or the original caller a master forwarded for.
fn on_behalf_of(headers: &http::HeaderMap, peer: Identity) -> Result<Identity, Status> {
    let is_master = matches!(&peer, Identity::Principal { role: Master, .. });
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    match headers.get(ON_BEHALF_HEADER) {
        None if forwarded && !is_master => {
            Err(Status::permission_denied(format!("{peer} may not forward requests")))
        }
        None => Ok(peer),
        Some(_) if !is_master => {
            Err(Status::permission_denied(format!("{peer} may not act on behalf of others")))
        }
        // A secure master never forwards for an insecure caller: such a header is forged.
        Some(v) => v
            .to_str()
            .ok()
            .and_then(Identity::from_header)
            .filter(|who| *who != Identity::Insecure)
            .ok_or_else(|| Status::invalid_argument(format!("malformed {ON_BEHALF_HEADER}"))),
    }
}

/// Authorises one request a master multiplexed on a stream (`ForwardSubmits`, issue 19) as if it
/// had arrived alone as a call to `path` forwarded by `peer` with `on_behalf` in
/// [`ON_BEHALF_HEADER`]: the same judgement as [`Authority::authorize`] makes of a forwarded
/// unary call, so the stream grants nothing the unary path does not. `peer` is the stream's
/// caller as the layer established it ([`Identity::Insecure`] on an insecure cluster, where
/// nobody is checked and the header means nothing).
pub fn authorize_forwarded(
    peer: &Identity,
    on_behalf: &str,
    path: &str,
) -> Result<Identity, Status> {
    if *peer == Identity::Insecure {
        return Ok(Identity::Insecure);
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(FORWARDED_HEADER, http::HeaderValue::from_static("1"));
    let v = http::HeaderValue::from_str(on_behalf)
        .map_err(|_| Status::invalid_argument(format!("malformed {ON_BEHALF_HEADER}")))?;
    headers.insert(ON_BEHALF_HEADER, v);
    let who = on_behalf_of(&headers, peer.clone())?;
    check(rule(path), &who, path)?;
    Ok(who)
}

fn check(rule: Rule, who: &Identity, path: &str) -> Result<(), Status> {
    match (rule, who) {
        (Rule::Anyone | Rule::Authenticated, _) | (_, Identity::Insecure) => Ok(()),
        (Rule::Roles(roles), Identity::Principal { role, .. }) if roles.contains(role) => Ok(()),
        (Rule::Roles(roles), _) => {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(Status::permission_denied(format!(
                "{who} may not call {path} (it needs the role {})",
                names.join(" or ")
            )))
        }
    }
}

/// The tower layer that runs [`Authority::authorize`] in front of a server's services.
#[derive(Clone)]
pub struct AuthLayer(pub Authority);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, authority: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authority: Authority,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.authority.authorize(&mut req) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(status) => Either::Right(futures::future::ready(Ok(status.into_http()))),
        }
    }
}

/// The client side: adds the bearer token, if any, to every request.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| "the token holds characters a header cannot carry".to_string())
            })
            .transpose()
            .map(Bearer)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::super::token;
    use super::*;

    fn request(path: &str, headers: &[(&str, String)]) -> http::Request<()> {
        let mut b = http::Request::builder().uri(format!("http://x{path}"));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.body(()).unwrap()
    }

    fn secure(entries: &[token::TokenEntry]) -> Authority {
        Authority::secure(Tokens::new(entries).unwrap())
    }

    fn code(a: &Authority, path: &str, headers: &[(&str, String)]) -> tonic::Code {
        match a.authorize(&mut request(path, headers)) {
            Ok(()) => tonic::Code::Ok,
            Err(s) => s.code(),
        }
    }

    #[test]
    fn tokens_get_their_roles_and_nothing_more() {
        let (client, ce) = token::create(Client, "ci").unwrap();
        let (admin, ae) = token::create(Admin, "ops").unwrap();
        let (exec, ee) = token::create(Executor, "exec-1").unwrap();
        let a = secure(&[ce, ae, ee]);
        let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
        use tonic::Code::*;
        let cases = [
            ("/triad.v1.JobService/SubmitJob", &client, Ok),
            ("/triad.v1.JobService/SubmitJob", &exec, PermissionDenied),
            ("/triad.v1.JobService/WatchEvents", &client, Ok),
            ("/triad.v1.JobService/WatchEvents", &exec, PermissionDenied),
            ("/triad.v1.CronService/GetCron", &client, Ok),
            ("/triad.v1.CronService/CreateCron", &client, PermissionDenied),
            ("/triad.v1.CronService/TriggerCron", &exec, PermissionDenied),
            ("/triad.v1.JobService/SuspendJob", &client, Ok),
            ("/triad.v1.JobService/ResumeJob", &admin, Ok),
            ("/triad.v1.JobService/SuspendJob", &exec, PermissionDenied),
            ("/triad.v1.RaftService/AppendEntries", &admin, PermissionDenied),
            ("/triad.v1.RaftService/Vote", &client, PermissionDenied),
            ("/triad.v1.WorkerService/StartAttempt", &admin, PermissionDenied),
            ("/triad.v1.WorkerService/ReadOutput", &client, Ok),
            ("/triad.v1.WorkerService/FollowOutput", &client, Ok),
            ("/triad.v1.WorkerService/FollowOutput", &exec, PermissionDenied),
            ("/triad.v1.JobService/DeleteJob", &client, Ok),
            ("/triad.v1.JobService/DeleteJob", &exec, PermissionDenied),
            ("/triad.v1.JobService/CollectGarbage", &client, PermissionDenied),
            ("/triad.v1.JobService/CollectGarbage", &admin, Ok),
            ("/triad.v1.WorkerService/DeleteOutput", &client, PermissionDenied),
            ("/triad.v1.WorkerService/DeleteOutput", &admin, PermissionDenied),
            ("/triad.v1.ClusterService/AddMaster", &client, PermissionDenied),
            ("/triad.v1.ClusterService/AddMaster", &admin, Ok),
            ("/triad.v1.ClusterService/ClusterStatus", &exec, Ok),
            ("/triad.v1.ExecutorService/Register", &exec, Ok),
            ("/triad.v1.ExecutorService/Register", &admin, PermissionDenied),
            ("/triad.v1.ExecutorService/DrainExecutor", &client, PermissionDenied),
            ("/triad.v1.ExecutorService/DrainExecutor", &admin, Ok),
            ("/triad.v1.JobService/ForwardSubmits", &client, PermissionDenied),
            ("/triad.v1.JobService/ForwardSubmits", &admin, PermissionDenied),
            ("/triad.v1.Unknown/Thing", &client, Ok),
        ];
        for (path, tok, want) in cases {
            assert_eq!(code(&a, path, &bearer(tok)), want, "{path}");
        }
        assert_eq!(code(&a, "/triad.v1.JobService/SubmitJob", &[]), Unauthenticated);
        assert_eq!(code(&a, "/triad.v1.JobService/GetJob", &bearer("triad_nope")), Unauthenticated);
        assert_eq!(code(&a, "/grpc.health.v1.Health/Check", &[]), Ok);
    }

    #[test]
    fn only_masters_forward() {
        let (admin, ae) = token::create(Admin, "ops").unwrap();
        let a = secure(&[ae]);
        let mut h = vec![("authorization", format!("Bearer {admin}"))];
        h.push((ON_BEHALF_HEADER, "executor/exec-1".into()));
        assert_eq!(
            code(&a, "/triad.v1.ExecutorService/Register", &h),
            tonic::Code::PermissionDenied
        );
        h.pop();
        h.push((FORWARDED_HEADER, "1".into()));
        assert_eq!(code(&a, "/triad.v1.JobService/GetJob", &h), tonic::Code::PermissionDenied);
        let master = Identity::principal(Master, "m1");
        let mut hm = http::HeaderMap::new();
        hm.insert(ON_BEHALF_HEADER, "client/ci".parse().unwrap());
        assert_eq!(on_behalf_of(&hm, master.clone()).unwrap(), Identity::principal(Client, "ci"));
        hm.insert(ON_BEHALF_HEADER, "insecure/".parse().unwrap());
        assert!(on_behalf_of(&hm, master).is_err(), "no insecure caller on a secure cluster");
    }

    /// A submission multiplexed on `ForwardSubmits` is judged as its original caller's SubmitJob:
    /// a client or admin passes, an executor does not, only a master may speak for anyone, and
    /// nobody may pass as insecure on a secure cluster.
    #[test]
    fn a_multiplexed_forward_is_judged_as_its_caller() {
        let path = "/triad.v1.JobService/SubmitJob";
        let master = Identity::principal(Master, "m1");
        let ok = authorize_forwarded(&master, "client/ci", path).unwrap();
        assert_eq!(ok, Identity::principal(Client, "ci"));
        assert!(authorize_forwarded(&master, "admin/ops", path).is_ok());
        let code = |peer: &Identity, who: &str| {
            authorize_forwarded(peer, who, path).map(|_| ()).map_err(|s| s.code())
        };
        assert_eq!(code(&master, "executor/exec-1"), Err(tonic::Code::PermissionDenied));
        assert_eq!(code(&master, "insecure/"), Err(tonic::Code::InvalidArgument));
        assert_eq!(code(&master, "root/x"), Err(tonic::Code::InvalidArgument));
        assert_eq!(code(&master, "client/a\nb"), Err(tonic::Code::InvalidArgument));
        let admin = Identity::principal(Admin, "ops");
        assert_eq!(code(&admin, "client/ci"), Err(tonic::Code::PermissionDenied));
        assert_eq!(authorize_forwarded(&Identity::Insecure, "", path).unwrap(), Identity::Insecure);
    }

    #[test]
    fn the_authorised_caller_is_recorded() {
        let (exec, ee) = token::create(Executor, "exec-1").unwrap();
        let a = secure(&[ee]);
        let mut r = request(
            "/triad.v1.ExecutorService/Heartbeat",
            &[("authorization", format!("Bearer {exec}"))],
        );
        a.authorize(&mut r).unwrap();
        assert_eq!(
            r.extensions().get::<Identity>(),
            Some(&Identity::principal(Executor, "exec-1"))
        );
        let mut r = request("/triad.v1.RaftService/Vote", &[]);
        Authority::insecure().authorize(&mut r).unwrap();
        assert_eq!(r.extensions().get::<Identity>(), Some(&Identity::Insecure));
    }
}
