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
pub mod validate;

/// Largest gRPC message any triad endpoint accepts or sends (fits openraft batches and snapshot
/// chunks with room to spare).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most `SubmitJobs` submissions in flight on one stream: the master reads no more than that
/// before answering, and the client's pipeline waits for a slot beyond it.
pub const MAX_PIPELINED: usize = 1024;

/// A lazily connected channel to `addr` (`host:port`), with connect and keep-alive bounds.
pub fn channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use crate::timings::{CONNECT_TIMEOUT, KEEP_ALIVE};
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .connect_lazy())
}

/// Metadata key set on a request a master forwarded to the leader (forwarding is one hop only).
pub const FORWARDED_HEADER: &str = "x-triad-forwarded";
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
