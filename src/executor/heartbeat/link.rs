//! The executor's heartbeat link to the leader: one long-lived `HeartbeatStream` on which each
//! beat is one request answered by one response, instead of a unary call (and a new HTTP/2
//! stream) per beat. The rules a beat's answer triggers (fencing, re-registration, kills,
//! draining) stay in [`super`] (decided by [`super::core`]); this module only carries beats.
//!
//! Invariants:
//! - At most one beat is outstanding on a stream, and a stream that failed in any way (its
//!   response missed the deadline, an error, the master ended it) is dropped, never reused: a
//!   response is always the answer to the beat just sent, never a late answer to an older one.
//! - A beat has a deadline: `call_timeout` of the heartbeat client for its response on an open
//!   stream. A missed deadline fails the beat (the next beat opens a new stream, at the next
//!   master); a stream that breaks or is refused fails fast, and the same beat is retried on a new
//!   stream at the master the refusal named, then unary.
//! - Streams are opened only on the leader (other masters refuse them, naming the leader); the
//!   client library follows that hint to a master it was given. When no stream can be had (the
//!   named leader is not among the masters this executor was given, no leader yet, or a master
//!   that predates streams) the beat is sent unary, which any master forwards: never fewer
//!   acknowledged beats than before streams.
//! - No grpc-timeout is set on the stream itself: it would end the stream, not a beat.

use std::time::{Duration, Instant};

use crate::api::Channel;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::api::pb;
use crate::api::pb::executor_service_client::ExecutorServiceClient;
use crate::client::Client;

/// After a master answered UNIMPLEMENTED (it predates heartbeat streams), beats go unary for
/// this long before a stream is tried again.
const UNARY_AFTER_UNIMPLEMENTED: Duration = Duration::from_secs(60);

/// The heartbeat link: the open stream, if any. Owned by the heartbeat loop (one beat at a time).
#[derive(Default)]
pub struct Link {
    open: Option<Open>,
    /// Until then, beats go unary (a master did not know the stream RPC).
    unary_until: Option<Instant>,
}

/// An open heartbeat stream.
struct Open {
    /// The master it is open on (index into the client's masters).
    master: usize,
    tx: mpsc::Sender<pb::HeartbeatRequest>,
    rx: Streaming<pb::HeartbeatResponse>,
}

impl Link {
    /// Sends one beat and returns the leader's answer to it. Bounded by the caller (the whole
    /// beat) and by `client.call_timeout` for each response awaited.
    pub async fn beat(
        &mut self,
        client: &Client,
        req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, Status> {
        let m = crate::metrics::executor();
        if let Some(mut open) = self.open.take() {
            match open.exchange(req.clone(), client.call_timeout).await {
                Ok(r) => {
                    self.open = Some(open);
                    return Ok(r);
                }
                Err(s) => {
                    m.heartbeat_streams.with_label_values(&["error"]).inc();
                    tracing::debug!(master = %client.masters()[open.master], error = %s, "heartbeat stream failed");
                    client.failed(open.master, &s);
                    // No answer within the deadline: this beat failed. Anything else failed
                    // fast (the master died, ended the stream, stopped leading): try again now.
                    if s.code() == Code::DeadlineExceeded {
                        return Err(s);
                    }
                }
            }
        }
        if self.unary_until.is_some_and(|t| Instant::now() < t) {
            return unary(client, req).await;
        }
        // Open a stream (the beat rides in it as the first message), following a refusal's
        // leader hint at most once around the masters.
        for _ in 0..client.masters().len() {
            let (idx, chan) = client.preferred_channel();
            match Open::start(chan, idx, req.clone(), client.call_timeout).await {
                Ok((open, r)) => {
                    m.heartbeat_streams.with_label_values(&["ok"]).inc();
                    tracing::debug!(master = %client.masters()[idx], "heartbeat stream open");
                    self.open = Some(open);
                    return Ok(r);
                }
                Err(s) => {
                    m.heartbeat_streams.with_label_values(&["error"]).inc();
                    tracing::debug!(master = %client.masters()[idx], error = %s, "could not open a heartbeat stream");
                    let followed = client.failed(idx, &s);
                    if s.code() == Code::Unimplemented {
                        tracing::info!(master = %client.masters()[idx], "master has no heartbeat stream: heartbeating unary");
                        self.unary_until = Some(Instant::now() + UNARY_AFTER_UNIMPLEMENTED);
                    }
                    if !followed {
                        break;
                    }
                }
            }
        }
        unary(client, req).await
    }
}

/// One beat as a unary call, failing over and forwarded like any other call.
async fn unary(
    client: &Client,
    req: pb::HeartbeatRequest,
) -> Result<pb::HeartbeatResponse, Status> {
    crate::metrics::executor().heartbeat_streams.with_label_values(&["unary"]).inc();
    client
        .call(|c| {
            let req = req.clone();
            async move { ExecutorServiceClient::new(c).heartbeat(req).await }
        })
        .await
}

impl Open {
    /// Opens a stream on `chan` carrying `first`, and waits (at most `limit`) for its answer.
    async fn start(
        chan: Channel,
        master: usize,
        first: pb::HeartbeatRequest,
        limit: Duration,
    ) -> Result<(Open, pb::HeartbeatResponse), Status> {
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(first)
            .map_err(|e| Status::internal(format!("queueing the first beat: {e}")))?;
        let open = async move {
            let mut inbound = ExecutorServiceClient::new(chan)
                .heartbeat_stream(ReceiverStream::new(rx))
                .await?
                .into_inner();
            let r = next(&mut inbound).await?;
            Ok((Open { master, tx, rx: inbound }, r))
        };
        tokio::time::timeout(limit, open).await.map_err(|_| {
            Status::deadline_exceeded(format!(
                "no answer to a new heartbeat stream within {limit:?}"
            ))
        })?
    }

    /// Sends one beat and waits (at most `limit`) for its answer.
    async fn exchange(
        &mut self,
        req: pb::HeartbeatRequest,
        limit: Duration,
    ) -> Result<pb::HeartbeatResponse, Status> {
        let beat = async {
            self.tx
                .send(req)
                .await
                .map_err(|_| Status::unavailable("the heartbeat stream is closed"))?;
            next(&mut self.rx).await
        };
        tokio::time::timeout(limit, beat).await.map_err(|_| {
            Status::deadline_exceeded(format!("no answer to a heartbeat within {limit:?}"))
        })?
    }
}

/// The next answer on a stream; its end (the master closed it without an error) is a failure.
async fn next(rx: &mut Streaming<pb::HeartbeatResponse>) -> Result<pb::HeartbeatResponse, Status> {
    rx.message().await?.ok_or_else(|| Status::unavailable("the master ended the heartbeat stream"))
}
