//! The event stream of a master: every job, task, executor and cron transition, by the Raft
//! index of the entry that made it. Served as `JobService/WatchEvents` here, and meant to be
//! served as Server-Sent Events by the HTTP API through the same calls.
//!
//! # In-process API (for the gRPC handler, the HTTP/SSE handler, tests)
//!
//! - [`subscribe`]`(node, Start::After(i) | Start::Now, Filter { job })` →
//!   `Result<`[`Subscription`]`, `[`TooOld`]`>`. `Start::After(i)` yields the entries after
//!   index `i` (`i` = the last index the client saw: nothing repeats, nothing is skipped);
//!   `Start::Now` the entries applied from now on. `TooOld` (its `Display` is the one-line error
//!   for the user) when entries after `i` are no longer held here: re-read the state and resume
//!   from `resume_from` (or from the `applied_index` that `GetJob` answers with).
//! - [`Subscription::next`]`().await` → `Option<Result<(Vec<Entry>, upto), TooOld>>`: the next
//!   entries (each an [`Entry`] `{ index, changes }`, whole, in index order) and the index read
//!   up to (also when no entry matched the filter: a progress mark, to resume from). An `Err`
//!   ends it (the subscriber read too slowly and fell below the retention floor); `None` means
//!   the master is stopping. [`Subscription::into_stream`] is the same as a `Stream`.
//! - [`read_point`]`(node, caller).await` → the leader's read index: once a subscription's
//!   `upto` reaches it, every write acknowledged before the call was delivered (linearizable
//!   catch-up, on a follower too).
//! - [`change_to_pb`] turns a `Change` into the flat wire `Event` (serde-friendly for JSON).
//!
//! A follower streams what it has applied; since every replica derives the same changes for an
//! index, a client can resume on any master. Apply never waits for a subscriber: a slow one falls
//! behind until it is cut off (`TooOld`, or here [`SEND_GRACE`] without reading).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tonic::Status;

use super::node::{Caller, Node};
use crate::api::convert::parse_job_id;
pub use crate::api::events::change_to_pb;
use crate::api::events::too_old_status;
use crate::api::pb;
use crate::shutdown::Shutdown;
pub use crate::store::events::{Entry, Filter, Subscription, TooOld, MAX_EVENTS};

/// `WatchEvents` streams one master serves at once (each holds at most [`QUEUE`] messages).
pub const MAX_WATCHERS: usize = 1024;
/// Messages queued for one watcher before its producer waits for it.
pub const QUEUE: usize = 16;
/// How long a watcher may leave a message unread before it is cut off (apply never waits; this
/// frees the master's side of a client that stopped reading).
pub const SEND_GRACE: Duration = Duration::from_secs(30);
/// A watcher hears at least this often, a progress mark when nothing happens, so that clients
/// detect a dead master by a read timeout (see `client::EVENTS_IDLE_TIMEOUT`).
pub const IDLE_MARK: Duration = crate::timings::EVENTS_IDLE_MARK;

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The entries after this index.
    After(u64),
    /// The entries applied from now on.
    Now,
}

/// Subscribes to this master's events: see the module doc.
pub fn subscribe(node: &Node, start: Start, filter: Filter) -> Result<Subscription, TooOld> {
    let after = match start {
        Start::After(i) => i,
        Start::Now => node.events.bounds().1,
    };
    node.events.subscribe(after, filter)
}

/// The leader's read point (through the leader, forwarded from a follower).
pub async fn read_point(node: &Node, caller: &Caller) -> Result<u64, Status> {
    let local = || async {
        node.linearize().await?;
        Ok(pb::ReadIndexResponse { index: node.events.bounds().1 })
    };
    let remote = |c, m| async move {
        crate::api::pb::job_service_client::JobServiceClient::new(c)
            .max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES)
            .read_index(m)
            .await
    };
    let r = node.serve_on_leader(caller, &pb::ReadIndexRequest {}, local, remote).await?;
    Ok(r.into_inner().index)
}

/// The messages of one `WatchEvents` stream.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send + 'static>>;

/// Opens a `WatchEvents` stream for `req`: validated, subscribed (an `OUT_OF_RANGE` error now if
/// its start is gone), caught up with the leader first when asked, then fed by a task of its own
/// that stops when the client goes, when it is cut off, or on shutdown.
pub async fn watch(
    node: Arc<Node>,
    caller: &Caller,
    req: pb::WatchEventsRequest,
    permit: tokio::sync::OwnedSemaphorePermit,
    shutdown: Shutdown,
) -> Result<WatchStream, Status> {
    let job = if req.job_id.is_empty() { None } else { Some(parse_job_id(&req.job_id)?) };
    let start = req.from_index.map_or(Start::Now, Start::After);
    // The read point is fixed before subscribing: whatever it covers is delivered.
    let point = if req.linearizable { Some(read_point(&node, caller).await?) } else { None };
    let sub = subscribe(&node, start, Filter { job }).map_err(too_old_status)?;
    let point = point.unwrap_or_else(|| node.events.bounds().1.max(sub.position()));
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    tokio::spawn(feed(sub, point, tx, permit, shutdown, node.id));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Feeds one watcher until it goes, is cut off, or the master stops.
async fn feed(
    mut sub: Subscription,
    point: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    mut shutdown: Shutdown,
    id: u64,
) {
    let mut caught_up = false;
    // Progress marks for entries a filter passed over, at most once a second.
    let mut marked = std::time::Instant::now();
    let send = |m: Result<pb::WatchEventsResponse, Status>| {
        let tx = tx.clone();
        async move {
            match tokio::time::timeout(SEND_GRACE, tx.send(m)).await {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false, // the client went
                Err(_) => {
                    let s = Status::resource_exhausted(format!(
                        "event stream cut off: it left events unread for {SEND_GRACE:?}"
                    ));
                    let _ = tx.try_send(Err(s));
                    false
                }
            }
        }
    };
    // Caught up already (a stream from now, or from an index at or past the point).
    if sub.position() >= point {
        caught_up = true;
        let mark = pb::WatchEventsResponse { index: sub.position(), events: vec![], caught_up };
        if !send(Ok(mark)).await {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            n = sub.next() => n,
            _ = tokio::time::sleep(IDLE_MARK) => {
                let mark = pb::WatchEventsResponse { index: sub.position(), events: vec![], caught_up: false };
                if !send(Ok(mark)).await { return }
                continue;
            }
            _ = shutdown.wait() => {
                let _ = send(Err(Status::unavailable(format!("master {id} is shutting down; resume on another")))).await;
                return;
            }
        };
        match next {
            None => return,
            Some(Err(e)) => {
                let _ = send(Err(too_old_status(e))).await;
                return;
            }
            Some(Ok((entries, upto))) => {
                let n = entries.len();
                for (i, e) in entries.into_iter().enumerate() {
                    let last = i + 1 == n;
                    let reached = !caught_up && last && upto >= point;
                    caught_up |= reached;
                    let m = pb::WatchEventsResponse {
                        index: e.index,
                        events: e.changes.iter().map(change_to_pb).collect(),
                        caught_up: reached,
                    };
                    if !send(Ok(m)).await {
                        return;
                    }
                }
                let reached = !caught_up && upto >= point;
                if n == 0 && (reached || marked.elapsed() >= Duration::from_secs(1)) {
                    caught_up |= reached;
                    marked = std::time::Instant::now();
                    let m =
                        pb::WatchEventsResponse { index: upto, events: vec![], caught_up: reached };
                    if !send(Ok(m)).await {
                        return;
                    }
                }
            }
        }
    }
}
