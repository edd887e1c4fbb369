//! The gRPC API (`proto/triad/v1/triad.proto`, package `triad.v1`), the one place where wire
//! messages and the replicated model are converted into each other ([`convert`]), and what both
//! ends of a call must agree on: message and pipelining limits, metadata headers, the channel
//! builder every gRPC client (masters, executors, the CLI) uses.
//!
//! Layer: above `state` (whose model it converts), below everything that talks gRPC.

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("triad.v1");

    /// Encoded descriptors for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("triad_descriptor");
}

pub mod convert;
pub mod events;
pub mod validate;

/// Largest gRPC message any triad endpoint accepts or sends (fits openraft batches and snapshot
/// chunks with room to spare).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most `SubmitJobs` submissions in flight on one stream: the master reads no more than that
/// before answering, and the client's pipeline waits for a slot beyond it.
pub const MAX_PIPELINED: usize = 1024;

/// The channel every triad gRPC client uses: a tonic channel (TLS when the credentials have it)
/// that adds the bearer token, if any, to each request.
pub type Channel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    crate::security::authz::Bearer,
>;

pub use crate::security::tls::{ClientCredentials, ServerName};

/// Builds the channels of one process, all with the same credentials.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    creds: ClientCredentials,
}

impl Dialer {
    pub fn new(creds: ClientCredentials) -> Dialer {
        Dialer { creds }
    }

    /// Plaintext, no token (clusters configured `insecure = true`).
    pub fn insecure() -> Dialer {
        Dialer::default()
    }

    pub fn credentials(&self) -> &ClientCredentials {
        &self.creds
    }

    /// A lazily connected channel to `addr` (`host:port`), expecting `server` at the other end
    /// (checked against its certificate), with connect and keep-alive bounds.
    pub fn channel(&self, addr: &str, server: &ServerName) -> anyhow::Result<Channel> {
        use crate::timings::{CONNECT_TIMEOUT, KEEP_ALIVE};
        use anyhow::Context;
        let tls = self.creds.tls_for(server);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut ep = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .with_context(|| format!("bad address {addr:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE);
        if let Some(tls) = tls {
            ep = ep.tls_config(tls).with_context(|| format!("TLS settings for {addr}"))?;
        }
        let bearer =
            crate::security::authz::Bearer::new(self.creds.token()).map_err(anyhow::Error::msg)?;
        Ok(tonic::service::interceptor::InterceptedService::new(ep.connect_lazy(), bearer))
    }

    /// A channel to a master at `addr`.
    pub fn master(&self, addr: &str) -> anyhow::Result<Channel> {
        self.channel(addr, &ServerName::Master)
    }
}

/// A gRPC server builder for a node secured as `secured` says: TLS when on, and the
/// authorisation layer in front of every service.
pub fn server(
    secured: &crate::security::Secured,
) -> anyhow::Result<
    tonic::transport::Server<
        tower::layer::util::Stack<crate::security::authz::AuthLayer, tower::layer::util::Identity>,
    >,
> {
    use anyhow::Context;
    let mut b = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = &secured.server_tls {
        b = b.tls_config(tls.clone()).context("TLS settings of the server")?;
    }
    Ok(b.layer(crate::security::authz::AuthLayer(secured.authority.clone())))
}

pub use crate::security::authz::{FORWARDED_HEADER, ON_BEHALF_HEADER};

/// gRPC reflection of triad's API, served by masters and executors in both versions: `v1`, and
/// `v1alpha`, the only one grpcio-reflection's Python client, older `grpcurl`, Postman and
/// BloomRPC speak (they get UNIMPLEMENTED from a server with `v1` alone).
#[allow(clippy::type_complexity)]
pub fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    use anyhow::Context;
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder().build_v1().context("building reflection service v1")?;
    let v1alpha = builder().build_v1alpha().context("building reflection service v1alpha")?;
    Ok((v1, v1alpha))
}
/// Response metadata a follower adds to a request it forwarded: the leader's address, so a client
/// can talk to the leader directly from then on (no forward hop in the steady state).
pub const LEADER_HEADER: &str = "x-triad-leader";

/// Did this status come from the connection failing under the call (refused, reset, broken
/// mid-body: the peer died), not from an answer of the peer? tonic builds such statuses locally
/// from the transport's error, so they carry it as their source; statuses the peer sent do not.
/// A killed master's streams and requests fail as `UNKNOWN` "h2 protocol error" this way, which
/// is as retryable as a refused connection.
pub fn is_connection_failure(s: &tonic::Status) -> bool {
    use std::error::Error;
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
        && s.source().is_some()
}

/// Names the leader at `addr` in a response's or an error's metadata ([`LEADER_HEADER`]).
pub fn name_leader(metadata: &mut tonic::metadata::MetadataMap, addr: &str) {
    if let Ok(v) = addr.parse() {
        metadata.insert(LEADER_HEADER, v);
    }
}

/// The connections a gRPC server accepts on `listener`, with Nagle's algorithm off. tonic's
/// `Server::tcp_nodelay` applies only to listeners tonic binds itself; on a stream of our own the
/// accepted sockets keep Nagle on, and a response written in pieces (headers, data, trailers) then
/// waits for the client's delayed ACK: 40 ms on Linux, seen as the p99 of every unary call.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
