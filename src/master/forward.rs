//! Forwarding that batches (issue 19): a follower carries the unary submissions it forwards to
//! the leader over one long-lived `ForwardSubmits` stream per leader, instead of one request each
//! (a second request's headers, HTTP/2 stream and a task on both ends). Each caller waits on its
//! slot; the leader answers in any order, each answer only once its job is committed and applied,
//! as the unary call would have been (it runs the very same [`super::jobs::Jobs::submit`]).
//!
//! - **Who:** every message names its original caller; the leader authorises it as that caller's
//!   `SubmitJob` ([`crate::security::authz::authorize_forwarded`]), the judgement a forwarded
//!   unary call gets from the authorisation layer.
//! - **When:** every message carries what is left of its caller's deadline (at most
//!   [`FORWARD_TIMEOUT`]); the follower stops waiting at it, and so does the leader.
//! - **Breaks:** when the stream ends, breaks or is replaced (the leader changed), every caller
//!   still waiting on it fails UNAVAILABLE as a connection failure, which
//!   [`super::node::Node::on_leader`] answers as it does for a unary forward: it waits for the
//!   next leader and sends the submission again under its idempotency key, within the leader-wait
//!   bound; a caller whose bound has passed gets the UNAVAILABLE and retries itself.
//! - **Bounds:** the stream opens within [`FORWARD_TIMEOUT`], at most [`QUEUE`] submissions wait
//!   to be sent, and the stream's task ends on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tonic::{Response, Status};

use super::node::FORWARD_TIMEOUT;
use crate::api::pb;
use crate::api::Channel;
use crate::security::Identity;
use crate::shutdown::Shutdown;

/// `ForwardSubmits` streams open at once on one master (a follower holds one per leader, and a
/// few while an old one is closing), apart from the clients' `SubmitJobs` streams so that clients
/// cannot crowd forwarding out.
pub const MAX_STREAMS: usize = 16;
/// Submissions queued for the stream, not yet sent (back-pressure on the callers beyond it).
pub const QUEUE: usize = 8192;
/// Submissions the leader works on at once for one `ForwardSubmits` stream; beyond it the
/// stream's requests stay unread and HTTP/2 flow control holds the follower back.
pub const MAX_RELAYED: usize = 8192;

type Answer = Result<pb::SubmitJobResponse, Status>;

/// The follower's end: the current stream to the leader, if any.
pub struct Forwarder {
    /// `TRIAD_FORWARD_UNARY=1` in the master's environment: forward each submission as its own
    /// unary call instead, as before issue 19 (for A/B benchmarks in one sitting).
    pub unary: bool,
    shutdown: Shutdown,
    next_slot: AtomicU64,
    link: Mutex<Option<Arc<Link>>>,
}

/// One `ForwardSubmits` stream to the leader at `addr`.
struct Link {
    addr: String,
    tx: mpsc::Sender<pb::ForwardedSubmit>,
    /// The callers waiting, by slot. Closed (no more entries) once the stream has ended.
    pending: Mutex<Pending>,
    /// Set once the stream's task has ended or been told to: a new caller opens a new stream.
    closed: AtomicBool,
    /// Tells the stream's task to end (the leader changed).
    stop: Notify,
}

#[derive(Default)]
struct Pending {
    closed: bool,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
}

/// Removes a caller's slot when it stops waiting (answered, timed out, or its call dropped).
struct Slot<'a> {
    link: &'a Link,
    slot: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.link.pending.lock().expect("poisoned").waiting.remove(&self.slot);
    }
}

/// The failure of a caller whose stream broke: UNAVAILABLE, marked as a connection failure
/// ([`crate::api::is_connection_failure`]) so forwarding waits for the next leader and retries.
fn broken(addr: &str, why: &str) -> Status {
    let msg = format!("the forwarding stream to the leader at {addr} broke ({why}); retry");
    let mut s = Status::unavailable(msg.clone());
    s.set_source(Arc::new(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, msg)));
    s
}

impl Forwarder {
    pub fn new(shutdown: Shutdown) -> Forwarder {
        let unary = std::env::var("TRIAD_FORWARD_UNARY").is_ok_and(|v| v == "1");
        if unary {
            tracing::warn!("TRIAD_FORWARD_UNARY=1: forwarding each submission as its own call");
        }
        Forwarder { unary, shutdown, next_slot: AtomicU64::new(1), link: Mutex::new(None) }
    }

    /// Submits `req` (validated and keyed) on the leader at `addr` on behalf of `who`, waiting at
    /// most until `deadline` (capped at [`FORWARD_TIMEOUT`] from now).
    pub async fn submit(
        &self,
        chan: Channel,
        addr: &str,
        who: &Identity,
        req: pb::SubmitJobRequest,
        deadline: Instant,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let deadline = deadline.min(Instant::now() + FORWARD_TIMEOUT);
        let link = self.link_to(chan, addr);
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut p = link.pending.lock().expect("poisoned");
            if p.closed {
                return Err(broken(addr, "it ended"));
            }
            p.waiting.insert(slot, reply);
        }
        let _slot = Slot { link: &link, slot };
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = pb::ForwardedSubmit {
            slot,
            on_behalf_of: who.to_header(),
            timeout_ms: left.as_millis().min(u32::MAX as u128) as u32,
            request: Some(req),
        };
        let late = || {
            Status::deadline_exceeded(format!(
                "the leader at {addr} did not answer the forwarded submission in time"
            ))
        };
        match tokio::time::timeout_at(deadline.into(), link.tx.send(msg)).await {
            Ok(Ok(())) => crate::metrics::get().forwarded_submissions.inc(),
            Ok(Err(_)) => return Err(broken(addr, "it ended")),
            Err(_) => return Err(late()),
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(r)) => r.map(Response::new),
            Ok(Err(_)) => Err(broken(addr, "it ended")),
            Err(_) => Err(late()),
        }
    }

    /// The open stream to `addr`, or a new one (the old one, to another leader, is told to end).
    fn link_to(&self, chan: Channel, addr: &str) -> Arc<Link> {
        let mut cur = self.link.lock().expect("poisoned");
        if let Some(l) = cur.as_ref() {
            if l.addr == addr && !l.closed.load(Ordering::Acquire) {
                return l.clone();
            }
            l.closed.store(true, Ordering::Release);
            l.stop.notify_one();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let link = Arc::new(Link {
            addr: addr.to_string(),
            tx,
            pending: Mutex::new(Pending::default()),
            closed: AtomicBool::new(false),
            stop: Notify::new(),
        });
        crate::metrics::get().forward_streams_opened.inc();
        tokio::spawn(run(link.clone(), chan, rx, self.shutdown.clone()));
        *cur = Some(link.clone());
        link
    }
}

/// The task of one stream: opens it, hands each answer to its caller, and when the stream ends
/// for any reason (shutdown, replaced, broken, ended by the leader) fails every caller still
/// waiting.
async fn run(
    link: Arc<Link>,
    chan: Channel,
    rx: mpsc::Receiver<pb::ForwardedSubmit>,
    mut shutdown: Shutdown,
) {
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let why = tokio::select! {
        _ = shutdown.wait() => "this master is shutting down".to_string(),
        _ = link.stop.notified() => "the leader changed".to_string(),
        why = relay_answers(&link, chan, outbound) => why,
    };
    tracing::debug!(leader = %link.addr, %why, "forwarding stream ended");
    link.closed.store(true, Ordering::Release);
    let waiting = {
        let mut p = link.pending.lock().expect("poisoned");
        p.closed = true;
        std::mem::take(&mut p.waiting)
    };
    for (_, reply) in waiting {
        let _ = reply.send(Err(broken(&link.addr, &why)));
    }
}

/// Opens the stream and delivers its answers until it ends; returns why it ended.
async fn relay_answers(
    link: &Link,
    chan: Channel,
    outbound: tokio_stream::wrappers::ReceiverStream<pb::ForwardedSubmit>,
) -> String {
    let open = tokio::time::timeout(
        FORWARD_TIMEOUT,
        pb::job_service_client::JobServiceClient::new(chan)
            .max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES)
            .forward_submits(tonic::Request::new(outbound)),
    )
    .await;
    let mut inbound = match open {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return format!("opening it: {}", s.message()),
        Err(_) => return format!("opening it took over {} ms", FORWARD_TIMEOUT.as_millis()),
    };
    loop {
        match inbound.message().await {
            Ok(Some(r)) => {
                let reply = link.pending.lock().expect("poisoned").waiting.remove(&r.slot);
                if let Some(reply) = reply {
                    let _ = reply.send(from_answer(r.answer));
                }
            }
            Ok(None) => return "the leader ended it".to_string(),
            Err(s) => return s.message().to_string(),
        }
    }
}

/// A `SubmitJobsResponse` back into what `SubmitJob` would have returned.
fn from_answer(a: Option<pb::SubmitJobsResponse>) -> Answer {
    match a {
        Some(pb::SubmitJobsResponse { result: Some(r), code: 0, .. }) => Ok(r),
        Some(a) if a.code != 0 => Err(Status::new(tonic::Code::from(a.code), a.message)),
        _ => Err(Status::internal("the leader sent an empty answer to a forwarded submission")),
    }
}

/// The answers of one `ForwardSubmits` stream (on the leader).
pub type ForwardStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::ForwardedSubmitResult, Status>> + Send + 'static>,
>;

/// Bytes of submissions one `ForwardSubmits` stream may have in flight on the leader (as a
/// client's `SubmitJobs` stream may: `jobs::MAX_STREAM_BYTES`).
pub const MAX_RELAYED_BYTES: usize = 16 << 20;

/// The leader's end of one `ForwardSubmits` stream: each submission judged by `submit` (as its
/// caller, within its deadline), up to [`MAX_RELAYED`] and [`MAX_RELAYED_BYTES`] at
/// once, answered as each is done. Ends with the follower's side (after the last answer), a
/// broken request side, or shutdown (the submissions in flight are then dropped: the follower
/// fails their callers retryably).
pub fn relay<S, F>(
    inbound: tonic::Streaming<pb::ForwardedSubmit>,
    shutdown: Shutdown,
    node_id: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
    submit: S,
) -> ForwardStream
where
    S: Fn(pb::ForwardedSubmit) -> F + Send + 'static,
    F: std::future::Future<Output = pb::ForwardedSubmitResult> + Send + 'static,
{
    let start = Relay {
        inbound,
        shutdown,
        node_id,
        submit,
        reading: true,
        in_flight: FuturesUnordered::new(),
        queued: 0,
        _permit: permit,
    };
    Box::pin(futures::stream::unfold(Some(start), |state| async move {
        let mut r = state?;
        loop {
            if !r.reading && r.in_flight.is_empty() {
                return None;
            }
            let read = r.reading && r.in_flight.len() < MAX_RELAYED && r.queued < MAX_RELAYED_BYTES;
            tokio::select! {
                biased;
                _ = r.shutdown.wait() => {
                    let s = Status::unavailable(format!("master {} is shutting down", r.node_id));
                    return Some((Err(s), None));
                }
                Some((a, n)) = r.in_flight.next(), if !r.in_flight.is_empty() => {
                    r.queued -= n;
                    return Some((Ok(a), Some(r)));
                }
                m = r.inbound.message(), if read => match m {
                    Ok(Some(m)) => {
                        let n = prost::Message::encoded_len(&m);
                        r.queued += n;
                        let f = (r.submit)(m);
                        r.in_flight.push(Box::pin(async move { (f.await, n) }));
                    }
                    Ok(None) => r.reading = false,
                    Err(s) => return Some((Err(s), None)),
                },
            }
        }
    }))
}

/// What one `ForwardSubmits` stream carries between answers on the leader.
struct Relay<S> {
    inbound: tonic::Streaming<pb::ForwardedSubmit>,
    shutdown: Shutdown,
    node_id: u64,
    submit: S,
    /// False once the follower closed its side.
    reading: bool,
    /// Each answer with the encoded size of its request.
    in_flight: FuturesUnordered<BoxFuture<'static, (pb::ForwardedSubmitResult, usize)>>,
    /// Bytes of the requests in flight.
    queued: usize,
    /// This stream's place among the leader's submission streams.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What is left of a caller's deadline, from its `grpc-timeout` header (gRPC's `<digits><unit>`
/// form), if it sent one.
pub fn caller_timeout(md: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_deadline_is_read_from_grpc_timeout() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(caller_timeout(&md), None);
        for (v, d) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("2M", Duration::from_secs(120)),
            ("7u", Duration::from_micros(7)),
        ] {
            md.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(caller_timeout(&md), Some(d), "{v}");
        }
        for bad in ["S", "12", "1x", "1234567890S"] {
            md.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(caller_timeout(&md), None, "{bad}");
        }
    }

    #[test]
    fn an_answer_comes_back_as_the_unary_result() {
        let ok = pb::SubmitJobResponse { job_id: "j".into(), created: true };
        let a =
            pb::SubmitJobsResponse { result: Some(ok.clone()), code: 0, message: String::new() };
        assert_eq!(from_answer(Some(a)).unwrap(), ok);
        let e = pb::SubmitJobsResponse {
            result: None,
            code: tonic::Code::InvalidArgument as i32,
            message: "bad".into(),
        };
        let s = from_answer(Some(e)).unwrap_err();
        assert_eq!((s.code(), s.message()), (tonic::Code::InvalidArgument, "bad"));
        assert_eq!(from_answer(None).unwrap_err().code(), tonic::Code::Internal);
        assert!(crate::api::is_connection_failure(&broken("a:1", "gone")));
    }
}
