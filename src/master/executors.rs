//! ExecutorService: what executors call on the leader (register, heartbeat, task reports) and the
//! operator's executor commands (list, drain).
//!
//! Registration, reports and drains are Raft commands; heartbeats only touch leader memory
//! ([`Liveness`]) and answer with reconciliation: attempts the executor runs that are not the
//! current live attempt of their task (stale fencing token, cancelled, reassigned) must be killed.
//!
//! Heartbeats arrive two ways, judged by the one rule in `heartbeat_local`: unary `Heartbeat`
//! (forwarded by a follower like every other call) and `HeartbeatStream`, which executors use: one
//! long-lived stream per executor, one response per beat, in order. At 10,000 executors a unary
//! call per beat costs the leader most of a core in HTTP/2 stream set-up alone; a beat on an open
//! stream is one DATA frame each way.
//!
//! Heartbeat stream invariants:
//! - Only the leader holds streams. A follower refuses to open one (UNAVAILABLE, naming the leader
//!   in [`crate::api::LEADER_HEADER`] when it knows it), rather than proxying: a proxied stream would keep
//!   every beat on two masters for as long as the stream lives.
//! - Every beat is judged as it arrives; on a master that is no longer the ready leader it ends
//!   the stream with UNAVAILABLE (and the hint), so leadership is checked per beat, never assumed
//!   from when the stream opened.
//! - Every stream ends when the master shuts down.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use openraft::ServerState;
use tonic::{Request, Response, Status, Streaming};

use super::liveness::Liveness;
use super::node::{now_ms, Caller, LocalError, Node, Route};
use crate::api::convert::{executor_to_pb, register_from_pb, rejection_to_status};
use crate::api::pb::executor_service_client::ExecutorServiceClient;
use crate::api::pb::executor_service_server::ExecutorService;
use crate::api::pb::{self, report_task_request::Kind};
use crate::api::validate::Validate;
use crate::master::config::ExecutorTimings;
use crate::security::Identity;
use crate::shutdown::Shutdown;
use crate::state::{Command, ExecutorState, Outcome, Rejection, Report, State};

#[derive(Clone)]
pub struct Executors {
    pub node: Arc<Node>,
    pub liveness: Arc<Liveness>,
    pub timings: ExecutorTimings,
    /// A leader acknowledges heartbeats only while a quorum acknowledged it within this long:
    /// a deposed leader cut off from the others must not keep its executors from self-fencing
    /// while the new leader declares them dead and places their work elsewhere.
    pub quorum_lease: Duration,
    /// The master's shutdown: ends every open heartbeat stream.
    pub shutdown: Shutdown,
}

/// The responses of one executor's heartbeat stream.
pub type BeatStream =
    Pin<Box<dyn Stream<Item = Result<pb::HeartbeatResponse, Status>> + Send + 'static>>;

/// Counts an open heartbeat stream in the `heartbeat_streams` gauge for as long as it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> OpenStream {
        crate::metrics::get().heartbeat_streams.inc();
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        crate::metrics::get().heartbeat_streams.dec();
    }
}

/// What a heartbeat stream carries from one beat to the next.
struct Beats {
    service: Executors,
    /// The stream's caller: every beat on it must be for this executor.
    who: Identity,
    inbound: Streaming<pb::HeartbeatRequest>,
    shutdown: Shutdown,
    _open: OpenStream,
}

/// Names the leader in a refusal's metadata, for the client to go there.
fn with_leader_hint(mut s: Status, addr: &str) -> Status {
    crate::api::name_leader(s.metadata_mut(), addr);
    s
}

fn client(c: crate::api::Channel) -> ExecutorServiceClient<crate::api::Channel> {
    ExecutorServiceClient::new(c)
}

/// The tokens among `reported` that are not their task's current live attempt on `executor`.
pub fn stale_tokens(state: &State, executor: &str, reported: &[pb::RunningAttempt]) -> Vec<u64> {
    reported
        .iter()
        .filter(|a| {
            let current = uuid::Uuid::parse_str(&a.job_id)
                .ok()
                .and_then(|id| state.job(&id))
                .and_then(|j| j.tasks.get(a.task_index as usize))
                .and_then(|t| {
                    t.current().filter(|c| {
                        t.state.is_live() && c.token == a.token && c.executor == executor
                    })
                });
            current.is_none()
        })
        .map(|a| a.token)
        .collect()
}

impl Executors {
    async fn register_local(
        &self,
        r: &pb::RegisterRequest,
    ) -> Result<pb::RegisterResponse, LocalError> {
        // Jittered: a registration loses what the executor ran before, and those tasks back off.
        let cmd = register_from_pb(r, now_ms()).with_jitter(rand::random());
        // Seen *before* the command applies: the duties loop wakes on every apply and must never
        // find a freshly registered executor without a heartbeat time (it would declare it dead).
        self.liveness.seen(&r.executor_id, Instant::now());
        match self.node.write_one(cmd).await? {
            Ok(Outcome::Registered { epoch }) => {
                self.liveness.beat(&r.executor_id, epoch, r.seq, Instant::now());
                tracing::info!(executor = %r.executor_id, addr = %r.addr, epoch, "executor registered");
                Ok(pb::RegisterResponse {
                    epoch,
                    ttl_ms: self.timings.ttl_ms,
                    heartbeat_ms: self.timings.heartbeat_ms,
                })
            }
            Ok(o) => Err(Status::internal(format!("unexpected outcome {o:?}")).into()),
            Err(r) => Err(rejection_to_status(&r).into()),
        }
    }

    fn heartbeat_local(
        &self,
        h: &pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, LocalError> {
        h.validate()?; // also every beat of a stream
        if !self.node.is_ready_leader() {
            // Leading but not caught up yet (or no longer leading): judge nothing from stale state.
            return Err(LocalError::Status(Status::unavailable("leader is catching up; retry")));
        }
        if !self.within_quorum_lease() {
            return Err(LocalError::Status(Status::unavailable(format!(
                "master {} has not heard from a quorum within {} ms; retry",
                self.node.id,
                self.quorum_lease.as_millis()
            ))));
        }
        let applied = self.node.applied.read().expect("poisoned");
        let state = &applied.state;
        let current = state.executor(&h.executor_id).filter(|e| e.epoch == h.epoch);
        match current.map(|e| e.state) {
            Some(s @ (ExecutorState::Alive | ExecutorState::Draining)) => {
                self.liveness.beat(&h.executor_id, h.epoch, h.seq, Instant::now());
                // An executor whose work dir has no room takes no new work (issue 14).
                self.liveness.set_unhealthy(&h.executor_id, !h.unhealthy.is_empty());
                crate::metrics::get().heartbeats.inc();
                let skip = crate::chaos::on(crate::chaos::Bug::SkipFencing);
                Ok(pb::HeartbeatResponse {
                    kill_tokens: if skip {
                        Vec::new()
                    } else {
                        stale_tokens(state, &h.executor_id, &h.attempts)
                    },
                    reregister: false,
                    draining: s == ExecutorState::Draining,
                })
            }
            // Unknown, dead, left, or an older epoch: everything it runs is stale; register anew.
            _ => Ok(pb::HeartbeatResponse {
                kill_tokens: h.attempts.iter().map(|a| a.token).collect(),
                reregister: true,
                draining: false,
            }),
        }
    }

    /// Has a quorum acknowledged this leader within [`Executors::quorum_lease`]? (A single-voter
    /// cluster is its own quorum.)
    fn within_quorum_lease(&self) -> bool {
        let m = self.node.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().voter_ids().count() <= 1
            || m.millis_since_quorum_ack
                .is_some_and(|ms| u128::from(ms) < self.quorum_lease.as_millis())
    }

    /// Decides whether a heartbeat stream may open here: on the leader (waiting, within the
    /// leader-wait bound, for one to exist), refused with the leader named otherwise.
    async fn accept_stream(&self) -> Result<(), Status> {
        {
            // The common case, without copying the metrics: every executor opens its stream here
            // within about one heartbeat interval of a failover.
            let m = self.node.raft.metrics();
            let m = m.borrow();
            if m.state == ServerState::Leader && m.current_leader == Some(self.node.id) {
                return Ok(());
            }
        }
        match self.node.route(false, Instant::now() + self.node.leader_wait).await? {
            Route::Local => Ok(()),
            Route::Leader(_, id, addr) => Err(with_leader_hint(
                Status::unavailable(format!(
                    "master {} is not the leader; open the heartbeat stream on the leader, master {id} at {addr}",
                    self.node.id
                )),
                &addr,
            )),
        }
    }

    /// Why a beat on an open stream could not be judged here, naming the leader when this
    /// master knows another one.
    fn stream_refusal(&self, e: LocalError) -> Status {
        let status = match e {
            LocalError::Status(s) => s,
            LocalError::NotLeader => {
                Status::unavailable(format!("master {} is not the leader", self.node.id))
            }
        };
        let m = self.node.metrics();
        match m
            .current_leader
            .filter(|l| *l != self.node.id)
            .and_then(|l| Some((l, self.node.member_addr(&m, l)?)))
        {
            Some((l, addr)) => with_leader_hint(
                Status::new(
                    status.code(),
                    format!("{}; the leader is master {l} at {addr}", status.message()),
                ),
                &addr,
            ),
            None => status,
        }
    }

    /// The response stream of an accepted heartbeat stream: each request is judged by
    /// `heartbeat_local` and answered in order; the first beat this master cannot judge ends
    /// the stream with that error, as does shutdown.
    fn beats(self, who: Identity, inbound: Streaming<pb::HeartbeatRequest>) -> BeatStream {
        let shutdown = self.shutdown.clone();
        let start = Beats { service: self, who, inbound, shutdown, _open: OpenStream::new() };
        Box::pin(futures::stream::unfold(Some(start), |state| async move {
            let mut b = state?;
            let next = tokio::select! {
                m = b.inbound.message() => m,
                _ = b.shutdown.wait() => {
                    let s = Status::unavailable(format!("master {} is shutting down", b.service.node.id));
                    return Some((Err(s), None));
                }
            };
            match next {
                Ok(Some(h)) if !b.who.may_act_as_executor(&h.executor_id) => {
                    Some((Err(b.who.require_executor(&h.executor_id).unwrap_err()), None))
                }
                Ok(Some(h)) => match b.service.heartbeat_local(&h) {
                    Ok(r) => Some((Ok(r), Some(b))),
                    Err(e) => Some((Err(b.service.stream_refusal(e)), None)),
                },
                // The executor closed its side (it is stopping, or has opened another stream).
                Ok(None) => None,
                // The request side broke (connection lost, undecodable message).
                Err(s) => Some((Err(s), None)),
            }
        }))
    }

    async fn report_local(
        &self,
        r: &pb::ReportTaskRequest,
    ) -> Result<pb::ReportTaskResponse, LocalError> {
        let job = crate::api::convert::parse_job_id(&r.job_id)?;
        let (index, token, now) = (r.task_index, r.token, now_ms());
        let report = match Kind::try_from(r.kind)
            .map_err(|_| Status::invalid_argument(format!("unknown report kind {}", r.kind)))?
        {
            Kind::Started => Report::Started,
            Kind::Finished => Report::Finished {
                exit_code: r.exit_code,
                error: (!r.error.is_empty()).then(|| r.error.clone()),
            },
            Kind::Lost => {
                crate::metrics::get().reschedules.with_label_values(&["reported_lost"]).inc();
                Report::Lost { reason: r.error.clone() }
            }
        };
        let executor = r.executor_id.clone();
        let cmd = Command::TaskReported { job, index, token, executor, report, now }
            .with_jitter(rand::random()); // a failure or loss backs off by the leader's draw
        Ok(match self.node.write_one(cmd).await? {
            Ok(_) => pb::ReportTaskResponse { accepted: true, kill: false, message: String::new() },
            Err(rej @ Rejection::StaleToken { .. }) => {
                crate::metrics::get().fencing_rejections.inc();
                tracing::info!(executor = %r.executor_id, job = %r.job_id, task = index, token, "fenced: {rej}");
                let kill = !crate::chaos::on(crate::chaos::Bug::SkipFencing);
                pb::ReportTaskResponse { accepted: true, kill, message: rej.to_string() }
            }
            // Final either way (job gone, task terminal): the executor stops retrying.
            // Only a forged report names another executor's attempt (the executor's id was bound
            // to its credential already): refused outright, not acknowledged.
            Err(rej @ Rejection::WrongExecutor { .. }) => {
                return Err(LocalError::Status(Status::permission_denied(rej.to_string())))
            }
            Err(rej) => {
                pb::ReportTaskResponse { accepted: true, kill: false, message: rej.to_string() }
            }
        })
    }

    /// Every executor with its load: O(executors + their live attempts), each executor's found
    /// through the live index. Off the async workers all the same (the store's rule for reads
    /// that walk the state): at 10^4 executors the answer itself is the work.
    /// Every executor (`page_size` 0), or one page of them by id after `after`.
    fn list_local(&self, page_size: u32, after: &str) -> pb::ListExecutorsResponse {
        crate::store::with_read(&self.node.applied, false, |applied| {
            let state = &applied.state;
            let size = if page_size == 0 { usize::MAX } else { page_size as usize };
            let after = (!after.is_empty()).then_some(after);
            let (page, more) = state.executors_page(after, size);
            let executors: Vec<pb::ExecutorInfo> = page
                .into_iter()
                .map(|e| {
                    let running = state.live_attempt_count_on(&e.id) as u32;
                    executor_to_pb(e, state.used_resources(&e.id), running)
                })
                .collect();
            let next_page_token = match executors.last() {
                Some(last) if more => last.id.clone(),
                _ => String::new(),
            };
            pb::ListExecutorsResponse { executors, next_page_token }
        })
    }

    /// Fills in each listed executor's last heartbeat from this leader's liveness table (memory
    /// only: heartbeats are not Raft entries). Taken after the state read, one lock for all.
    fn add_heartbeats(&self, r: &mut pb::ListExecutorsResponse) {
        let (now, wall) = (Instant::now(), now_ms());
        let view = self.liveness.view();
        for e in &mut r.executors {
            if let Some(at) = view.last_heard(&e.id) {
                let age = now.saturating_duration_since(at).as_millis() as u64;
                e.heartbeat_age_ms = age;
                e.last_heartbeat_ms = wall.saturating_sub(age);
            }
        }
    }

    async fn simple_write(&self, cmd: Command) -> Result<(), LocalError> {
        match self.node.write_one(cmd).await? {
            Ok(_) => Ok(()),
            Err(r) => Err(rejection_to_status(&r).into()),
        }
    }
}

#[tonic::async_trait]
impl ExecutorService for Executors {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        fwd.who.require_executor(&msg.executor_id)?;
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                || self.register_local(&msg),
                |c, m| async move { client(c).register(m).await },
            )
            .await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        fwd.who.require_executor(&msg.executor_id)?;
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                || async { self.heartbeat_local(&msg) },
                |c, m| async move { client(c).heartbeat(m).await },
            )
            .await
    }

    type HeartbeatStreamStream = BeatStream;

    async fn heartbeat_stream(
        &self,
        req: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<BeatStream>, Status> {
        let who = crate::security::caller(&req)?;
        self.accept_stream().await?;
        Ok(Response::new(self.clone().beats(who, req.into_inner())))
    }

    async fn report_task(
        &self,
        req: Request<pb::ReportTaskRequest>,
    ) -> Result<Response<pb::ReportTaskResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        fwd.who.require_executor(&msg.executor_id)?;
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                || self.report_local(&msg),
                |c, m| async move { client(c).report_task(m).await },
            )
            .await
    }

    async fn list_executors(
        &self,
        req: Request<pb::ListExecutorsRequest>,
    ) -> Result<Response<pb::ListExecutorsResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        if msg.consistency == pb::ReadConsistency::Stale as i32 {
            return Ok(Response::new(self.list_local(msg.page_size, &msg.page_token)));
        }
        // On the leader (linearizable): with the last heartbeat from its liveness table.
        let local = || async {
            self.node.linearize().await?;
            let mut r = self.list_local(msg.page_size, &msg.page_token);
            self.add_heartbeats(&mut r);
            Ok(r)
        };
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                local,
                |c, m| async move { client(c).list_executors(m).await },
            )
            .await
    }

    async fn drain_executor(
        &self,
        req: Request<pb::DrainExecutorRequest>,
    ) -> Result<Response<pb::DrainExecutorResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let local = || async {
            self.simple_write(Command::DrainExecutor {
                id: msg.executor_id.clone(),
                now: now_ms(),
            })
            .await?;
            Ok(pb::DrainExecutorResponse {})
        };
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                local,
                |c, m| async move { client(c).drain_executor(m).await },
            )
            .await
    }

    async fn deregister(
        &self,
        req: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        fwd.who.require_executor(&msg.executor_id)?;
        let local = || async {
            self.simple_write(
                Command::DeregisterExecutorAt {
                    id: msg.executor_id.clone(),
                    epoch: msg.epoch,
                    now: now_ms(),
                }
                .with_jitter(rand::random()),
            )
            .await?;
            Ok(pb::DeregisterResponse {})
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).deregister(m).await })
            .await
    }
}
