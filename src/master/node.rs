//! The master's shared context: its Raft handle, applied state and peer channels, plus the two
//! mechanisms every client-facing service uses: **routing** (serve here if this master leads,
//! forward one hop to the leader otherwise, wait a bounded time while there is none) and the
//! **write path** (propose commands through Raft on the leader).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::RaftError;
use openraft::ServerState;
use tonic::Status;

use crate::api::{Channel, FORWARDED_HEADER, ON_BEHALF_HEADER};
use crate::raft::network::Channels;
use crate::raft::{NodeId, Raft, RaftMetrics, Request, Response};
use crate::security::Identity;
use crate::state::{Command, Outcome, Rejection};
use crate::store::SharedApplied;

/// Deadline of a request forwarded to the leader (see `crate::timings` for how it relates).
pub use crate::timings::FORWARD_TIMEOUT;

pub struct Node {
    pub id: NodeId,
    pub addr: String,
    pub raft: Raft,
    /// The local replica's applied state (stale unless read-indexed).
    pub applied: SharedApplied,
    /// The changes of every entry applied here, by index (`master::events`).
    pub events: std::sync::Arc<crate::store::events::EventLog>,
    pub channels: Channels,
    /// How long a request waits for a leader to exist.
    pub leader_wait: Duration,
    /// The last leader this node saw, for error messages while there is none.
    last_leader: Mutex<Option<(NodeId, String)>>,
    /// The term in which this node, as leader, has applied everything committed before it took
    /// over (set by the leader duties after their read-index). Decisions that judge executors
    /// against the state (heartbeat reconciliation) wait for it: a leader that has not caught up
    /// would see live attempts as unknown and kill them.
    pub ready_term: std::sync::atomic::AtomicU64,
    /// Group commit of client-facing writes.
    batcher: super::batcher::Batcher,
    /// The cluster id of the data dir's identity file (`master::identity`).
    pub cluster_id: String,
}

/// Where a request is served.
pub enum Route {
    /// This master is the leader.
    Local,
    /// Forward to this leader (id, address) over this channel.
    Leader(Channel, NodeId, String),
}

pub use super::errors::{commit_timeout, map_write_error, LocalError};

/// Milliseconds since the Unix epoch, read on the leader and carried inside commands.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Who sent a request, as the authorisation layer established it, and whether another master
/// forwarded it (then it is not forwarded again).
#[derive(Clone, Debug)]
pub struct Caller {
    pub forwarded: bool,
    pub who: Identity,
}

impl Caller {
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
        Ok(Caller {
            forwarded: req.metadata().contains_key(FORWARDED_HEADER),
            who: crate::security::caller(req)?,
        })
    }
}

/// Wraps a message for forwarding to the leader: marked, on behalf of `who`, with a deadline.
pub fn forwarded<T>(msg: T, who: &Identity) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    if let Ok(v) = who.to_header().parse() {
        r.metadata_mut().insert(ON_BEHALF_HEADER, v);
    }
    r.set_timeout(FORWARD_TIMEOUT);
    r
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        addr: String,
        raft: Raft,
        applied: SharedApplied,
        events: std::sync::Arc<crate::store::events::EventLog>,
        channels: Channels,
        leader_wait: Duration,
        cluster_id: String,
    ) -> Self {
        let batcher = super::batcher::Batcher::start(raft.clone(), id, leader_wait);
        Node {
            id,
            addr,
            raft,
            applied,
            events,
            channels,
            leader_wait,
            last_leader: Mutex::new(None),
            ready_term: Default::default(),
            batcher,
            cluster_id,
        }
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The address of a member (voter or learner) from the current membership.
    pub fn member_addr(&self, m: &RaftMetrics, id: NodeId) -> Option<String> {
        m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// Decides where a request is served, waiting until `deadline` for a leader to exist.
    /// A forwarded request is never forwarded again (it fails UNAVAILABLE and the client retries).
    pub async fn route(&self, forwarded: bool, deadline: Instant) -> Result<Route, Status> {
        let mut rx = self.raft.metrics();
        loop {
            // Read under the watch's borrow, not cloned: a clone of the metrics (their
            // replication map) was a per-request allocation on the leader (issue 19).
            let (leader, addr) = {
                let m = rx.borrow_and_update();
                match m.current_leader {
                    Some(l) if l == self.id && m.state == ServerState::Leader => {
                        return Ok(Route::Local)
                    }
                    Some(l) if l != self.id => (Some(l), self.member_addr(&m, l)),
                    _ => (None, None),
                }
            };
            if let (Some(l), Some(addr)) = (leader, addr) {
                *self.last_leader.lock().expect("poisoned") = Some((l, addr.clone()));
                if forwarded {
                    return Err(Status::unavailable(format!(
                        "master {} is not the leader (leader is master {l} at {addr}); retry",
                        self.id
                    )));
                }
                let chan = self
                    .channels
                    .get(&addr)
                    .map_err(|e| Status::unavailable(format!("leader {addr}: {e}")))?;
                return Ok(Route::Leader(chan, l, addr));
            }
            let now = Instant::now();
            if now >= deadline || tokio::time::timeout(deadline - now, rx.changed()).await.is_err()
            {
                return Err(self.no_leader());
            }
        }
    }

    fn no_leader(&self) -> Status {
        let last = match &*self.last_leader.lock().expect("poisoned") {
            Some((id, addr)) => format!("last known leader: master {id} at {addr}"),
            None => "no leader seen yet".to_string(),
        };
        Status::unavailable(format!(
            "no leader (no quorum reachable from master {}) after waiting {} ms; {last}",
            self.id,
            self.leader_wait.as_millis()
        ))
    }

    /// Runs `local` on the leader, or `remote` against the leader's channel, re-routing when
    /// leadership moves, all within the leader-wait bound. A forwarded answer names the leader
    /// ([`crate::api::LEADER_HEADER`]) so the client can go there directly next time.
    pub async fn on_leader<T, L, LF, R, RF>(
        &self,
        forwarded: bool,
        local: L,
        remote: R,
    ) -> Result<tonic::Response<T>, Status>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<T, LocalError>>,
        R: Fn(Channel) -> RF,
        RF: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.on_leader_at(forwarded, local, |c, _| remote(c)).await
    }

    /// [`Node::on_leader`] with the leader's address given to `remote` too (the forwarding
    /// stream of submissions is kept per leader, `master::forward`).
    pub async fn on_leader_at<T, L, LF, R, RF>(
        &self,
        forwarded: bool,
        local: L,
        remote: R,
    ) -> Result<tonic::Response<T>, Status>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<T, LocalError>>,
        R: Fn(Channel, &str) -> RF,
        RF: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.leader_wait;
        loop {
            match self.route(forwarded, deadline).await? {
                Route::Leader(chan, leader, addr) => {
                    let term = self.raft.metrics().borrow().current_term;
                    // Every forwarded request is safe to send again (submissions carry an
                    // idempotency key by now, the rest are idempotent), so when the leader
                    // changes under a forwarded request, it is re-routed to the new one rather
                    // than left hanging on a leader that was paused or cut off.
                    let outcome = tokio::select! {
                        r = remote(chan, &addr) => Some(r),
                        _ = self.leader_other_than(leader) => None,
                    };
                    match outcome {
                        None => continue,
                        Some(Ok(r)) => {
                            let mut r = tonic::Response::new(r.into_inner());
                            crate::api::name_leader(r.metadata_mut(), &addr);
                            return Ok(r);
                        }
                        // The leader could not be reached at all (killed, or its address gone):
                        // it is about to be replaced. Hold the request until a newer term knows
                        // a leader, instead of bouncing it to the client, which would retry
                        // only after its own backoff.
                        Some(Err(s))
                            if crate::api::is_connection_failure(&s)
                                && Instant::now() < deadline =>
                        {
                            self.wait_for_newer_term(term, deadline).await;
                        }
                        Some(Err(s)) => return Err(s),
                    }
                }
                Route::Local => match local().await {
                    Ok(v) => return Ok(tonic::Response::new(v)),
                    Err(LocalError::Status(s)) => return Err(s),
                    Err(LocalError::NotLeader) => {
                        if Instant::now() >= deadline {
                            return Err(self.no_leader());
                        }
                        // Leadership is moving; the metrics watch in `route` wakes us when it lands.
                        tokio::task::yield_now().await;
                    }
                },
            }
        }
    }

    /// Serves a leader-only RPC: `local` on this master if it leads, otherwise `msg` forwarded
    /// to the leader ([`forwarded`]: marked, with the forward deadline) through `call`. Every
    /// leader-only RPC goes through here, so forwarding is written once.
    pub async fn serve_on_leader<M, T, L, LF, C, CF>(
        &self,
        caller: &Caller,
        msg: &M,
        local: L,
        call: C,
    ) -> Result<tonic::Response<T>, Status>
    where
        M: Clone,
        L: Fn() -> LF,
        LF: Future<Output = Result<T, LocalError>>,
        C: Fn(Channel, tonic::Request<M>) -> CF,
        CF: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let who = &caller.who;
        self.on_leader(caller.forwarded, local, |c| call(c, forwarded(msg.clone(), who))).await
    }

    /// Resolves once this node knows a leader other than `leader` (never, while it does not).
    async fn leader_other_than(&self, leader: NodeId) {
        let mut rx = self.raft.metrics();
        loop {
            if rx.borrow_and_update().current_leader.is_some_and(|l| l != leader) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Waits (until `deadline`) for this node to see a term after `term`.
    async fn wait_for_newer_term(&self, term: u64, deadline: Instant) {
        let mut rx = self.raft.metrics();
        while rx.borrow_and_update().current_term <= term {
            let now = Instant::now();
            if now >= deadline
                || tokio::time::timeout(deadline - now, rx.changed())
                    .await
                    .map_or(true, |r| r.is_err())
            {
                return;
            }
        }
    }

    /// Proposes commands in one Raft entry; resolves once committed and applied here.
    /// Bounded by `leader_wait`: a leader cut off from its quorum fails UNAVAILABLE instead of
    /// hanging (the outcome is then unknown; submissions are safe to retry with their key).
    pub async fn write(&self, commands: Vec<Command>) -> Result<Response, LocalError> {
        let r =
            tokio::time::timeout(self.leader_wait, self.raft.client_write(Request { commands }))
                .await
                .map_err(|_| commit_timeout(self.id, self.leader_wait))?;
        r.map(|r| r.data).map_err(|e| map_write_error(&e))
    }

    /// Proposes one command through group commit and returns its outcome.
    pub async fn write_one(
        &self,
        command: Command,
    ) -> Result<Result<Outcome, Rejection>, LocalError> {
        self.batcher.propose(command).await
    }

    /// Is this node a leader that has caught up with everything committed before its term?
    pub fn is_ready_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && self.ready_term.load(std::sync::atomic::Ordering::SeqCst) == m.current_term
    }

    /// Read-index: confirms leadership with a quorum and waits until the read point is applied
    /// here. After it returns Ok, `applied` reflects every write acknowledged before the call.
    ///
    /// The read point is the end of the leader's log, not only openraft's read index: a leader
    /// that restarted in its own term (openraft resumes it without a new no-op entry) may have a
    /// stale commit index, while every acknowledged write is in its log, which a legitimate leader
    /// never truncates. Found by the full-restart test: a read right after restart missed the
    /// last acknowledged job.
    pub async fn linearize(&self) -> Result<(), LocalError> {
        let r = tokio::time::timeout(self.leader_wait, self.raft.ensure_linearizable())
            .await
            .map_err(|_| {
                LocalError::Status(Status::unavailable(format!(
                    "master {} could not confirm its leadership with a quorum within {} ms",
                    self.id,
                    self.leader_wait.as_millis()
                )))
            })?;
        match r {
            Ok(_) => {}
            Err(RaftError::APIError(_)) => return Err(LocalError::NotLeader),
            Err(RaftError::Fatal(e)) => {
                return Err(LocalError::Status(Status::unavailable(format!("raft stopped: {e}"))))
            }
        }
        let last = self.metrics().last_log_index.unwrap_or(0);
        self.raft
            .wait(Some(self.leader_wait))
            .applied_index_at_least(Some(last), "linearizable read")
            .await
            .map_err(|_| {
                LocalError::Status(Status::unavailable(format!(
                    "master {} could not apply its log up to {last} within {} ms",
                    self.id,
                    self.leader_wait.as_millis()
                )))
            })?;
        Ok(())
    }
}
