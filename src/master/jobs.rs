//! JobService on every master: submissions and cancels go through Raft on the leader; reads are
//! linearizable through the leader by default, or stale from the local replica on request.
//!
//! A submission arrives alone (`SubmitJob`) or pipelined on a `SubmitJobs` stream; both are
//! judged by the one [`Jobs::submit`], and a stream answers in request order, each answer only
//! once its job is committed and applied, exactly as the unary call would have.

use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::node::{now_ms, Caller, LocalError, Node};
use crate::api::convert::{
    job_spec_from_pb, job_state_name, job_to_pb, job_to_pb_with_tasks, parse_job_id,
    parse_job_state, rejection_to_status,
};
use crate::api::pb::job_service_client::JobServiceClient;
use crate::api::pb::job_service_server::JobService;
use crate::api::pb::{self, ReadConsistency};
use crate::api::validate::Validate;
use crate::api::MAX_MESSAGE_BYTES;
use crate::security::authz::authorize_forwarded;
use crate::security::Identity;
use crate::shutdown::Shutdown;
use crate::state::{Command, JobState, Outcome};
use crate::store::with_read;

/// Submissions one `SubmitJobs` stream may have in flight (a wire limit both ends share, so it
/// lives in `api`). Beyond it the stream's requests stay unread, and HTTP/2 flow control holds
/// the client back.
pub use crate::api::MAX_PIPELINED;
use crate::state::limits::DEFAULT_PAGE_SIZE;

/// `SubmitJobs` streams open at once on one master: beyond it a new one is refused with
/// `RESOURCE_EXHAUSTED` (each holds up to [`MAX_STREAM_BYTES`] of submissions).
pub const MAX_SUBMIT_STREAMS: usize = 256;
/// Bytes of submissions one `SubmitJobs` stream may have in flight: at or past it the stream's
/// requests stay unread (like [`MAX_PIPELINED`] for their number).
pub const MAX_STREAM_BYTES: usize = 16 << 20;

#[derive(Clone)]
pub struct Jobs {
    pub node: Arc<Node>,
    /// The master's shutdown: ends every open `SubmitJobs` stream.
    pub shutdown: Shutdown,
    /// One permit per `SubmitJobs` stream that may open ([`MAX_SUBMIT_STREAMS`]).
    streams: Arc<tokio::sync::Semaphore>,
    /// One permit per `WatchEvents` stream ([`super::events::MAX_WATCHERS`]).
    watchers: Arc<tokio::sync::Semaphore>,
    /// Retention (issue 14): the policy and what deletions prune.
    retention: super::retention::Ctx,
    /// On a follower: the stream its forwarded submissions ride to the leader (issue 19).
    forwarder: Arc<super::forward::Forwarder>,
    /// On the leader: one permit per `ForwardSubmits` stream ([`super::forward::MAX_STREAMS`]).
    forward_streams: Arc<tokio::sync::Semaphore>,
}

/// A random (v4) UUID from the thread's CSPRNG, without the system call per id that
/// `Uuid::new_v4` makes (uuid without its `fast-rng` feature reads getrandom each time).
fn new_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// The method a submission relayed on `ForwardSubmits` is authorised as.
const SUBMIT_JOB_PATH: &str = "/triad.v1.JobService/SubmitJob";

pub use super::forward::ForwardStream;

/// The answers of one `SubmitJobs` stream.
pub type SubmitStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubmitJobsResponse, Status>> + Send + 'static>>;

/// What a `SubmitJobs` stream carries between answers.
struct Pipeline {
    jobs: Jobs,
    caller: Caller,
    inbound: Streaming<pb::SubmitJobRequest>,
    /// False once the client closed its side: the stream ends after the last answer.
    reading: bool,
    /// Each answer with the encoded size of its request.
    in_flight: FuturesOrdered<BoxFuture<'static, (pb::SubmitJobsResponse, usize)>>,
    /// Bytes of the requests in flight.
    queued: usize,
    /// This stream's place among [`MAX_SUBMIT_STREAMS`].
    _permit: tokio::sync::OwnedSemaphorePermit,
}

fn answer(r: Result<pb::SubmitJobResponse, Status>) -> pb::SubmitJobsResponse {
    match r {
        Ok(r) => pb::SubmitJobsResponse { result: Some(r), code: 0, message: String::new() },
        Err(s) => pb::SubmitJobsResponse {
            result: None,
            code: s.code() as i32,
            message: s.message().to_string(),
        },
    }
}

pub(super) fn client(chan: crate::api::Channel) -> JobServiceClient<crate::api::Channel> {
    JobServiceClient::new(chan).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

impl Jobs {
    pub fn new(node: Arc<Node>, shutdown: Shutdown) -> Jobs {
        let streams = Arc::new(tokio::sync::Semaphore::new(MAX_SUBMIT_STREAMS));
        let watchers = Arc::new(tokio::sync::Semaphore::new(super::events::MAX_WATCHERS));
        let forwarder = Arc::new(super::forward::Forwarder::new(shutdown.clone()));
        let forward_streams = Arc::new(tokio::sync::Semaphore::new(super::forward::MAX_STREAMS));
        let retention = Default::default();
        Jobs { node, shutdown, streams, watchers, retention, forwarder, forward_streams }
    }

    /// Retention (issue 14): the policy `DeleteJob` and `CollectGarbage` apply.
    pub fn with_retention(mut self, ctx: super::retention::Ctx) -> Jobs {
        self.retention = ctx;
        self
    }

    /// A place for one more `SubmitJobs` stream, or `RESOURCE_EXHAUSTED`.
    fn open_stream(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "master {} has {MAX_SUBMIT_STREAMS} SubmitJobs streams open; retry later",
                self.node.id
            ))
        })
    }

    /// Judges one submission wherever it lands: validates it, then submits it on the leader
    /// (here, or forwarded there).
    ///
    /// A follower forwards it on its `ForwardSubmits` stream to the leader (`master::forward`),
    /// with the caller's deadline (`timeout`, else the forward deadline).
    async fn submit(
        &self,
        caller: &Caller,
        mut msg: pb::SubmitJobRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        msg.validate()?;
        if msg.idempotency_key.is_empty() {
            // Keyed from here on, so that re-sending it (forwarding retries after a leader
            // change) can never create a second job.
            msg.idempotency_key = new_uuid().to_string();
        }
        // Validate wherever the request lands: bad input never needs a leader.
        let spec = job_spec_from_pb(msg.spec.clone())?;
        let deadline = std::time::Instant::now() + timeout.unwrap_or(super::node::FORWARD_TIMEOUT);
        let remote = |c, addr: &str| {
            let (addr, m) = (addr.to_string(), msg.clone());
            async move {
                if self.forwarder.unary {
                    client(c).submit_job(super::node::forwarded(m, &caller.who)).await
                } else {
                    self.forwarder.submit(c, &addr, &caller.who, m, deadline).await
                }
            }
        };
        self.node.on_leader_at(caller.forwarded, || self.submit_local(&msg, &spec), remote).await
    }

    /// The leader's answer to one submission a follower forwarded on `ForwardSubmits`: judged as
    /// its original caller's `SubmitJob` (authorised as that caller, then [`Jobs::submit`]),
    /// within the caller's deadline.
    async fn relayed(&self, peer: &Identity, m: pb::ForwardedSubmit) -> pb::ForwardedSubmitResult {
        let slot = m.slot;
        let timeout =
            std::time::Duration::from_millis(m.timeout_ms.into()).min(super::node::FORWARD_TIMEOUT);
        let r = async {
            let who = authorize_forwarded(peer, &m.on_behalf_of, SUBMIT_JOB_PATH)?;
            let req = m.request.ok_or_else(|| {
                Status::invalid_argument("a forwarded submission without a request")
            })?;
            let caller = Caller { forwarded: true, who };
            match tokio::time::timeout(timeout, self.submit(&caller, req, Some(timeout))).await {
                Ok(r) => r.map(Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "master {} could not commit the forwarded submission within its deadline ({} ms)",
                    self.node.id,
                    timeout.as_millis()
                ))),
            }
        };
        pb::ForwardedSubmitResult { slot, answer: Some(answer(r.await)) }
    }

    /// The answers of a `SubmitJobs` stream: up to [`MAX_PIPELINED`] submissions and
    /// [`MAX_STREAM_BYTES`] in flight, answered in request order. A broken request side or
    /// shutdown ends it with that error (the submissions still in flight are dropped: the client
    /// re-sends them under their keys).
    fn pipeline(
        self,
        caller: Caller,
        inbound: Streaming<pb::SubmitJobRequest>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> SubmitStream {
        let start = Pipeline {
            jobs: self,
            caller,
            inbound,
            reading: true,
            in_flight: FuturesOrdered::new(),
            queued: 0,
            _permit: permit,
        };
        Box::pin(futures::stream::unfold(Some(start), |state| async move {
            let mut p = state?;
            loop {
                if !p.reading && p.in_flight.is_empty() {
                    return None;
                }
                let read =
                    p.reading && p.in_flight.len() < MAX_PIPELINED && p.queued < MAX_STREAM_BYTES;
                tokio::select! {
                    biased;
                    _ = p.jobs.shutdown.wait() => {
                        let s = Status::unavailable(format!("master {} is shutting down", p.jobs.node.id));
                        return Some((Err(s), None));
                    }
                    Some((a, n)) = p.in_flight.next(), if !p.in_flight.is_empty() => {
                        p.queued -= n;
                        return Some((Ok(a), Some(p)));
                    }
                    m = p.inbound.message(), if read => match m {
                        Ok(Some(req)) => {
                            let (jobs, fwd, n) = (p.jobs.clone(), p.caller.clone(), prost::Message::encoded_len(&req));
                            p.queued += n;
                            p.in_flight.push_back(Box::pin(async move { (answer(jobs.submit(&fwd, req, None).await.map(Response::into_inner)), n) }));
                        }
                        Ok(None) => p.reading = false,
                        Err(s) => return Some((Err(s), None)),
                    },
                }
            }
        }))
    }

    async fn submit_local(
        &self,
        req: &pb::SubmitJobRequest,
        spec: &crate::state::JobSpec,
    ) -> Result<pb::SubmitJobResponse, LocalError> {
        // A retry of an already-applied submission needs no new entry (applied implies committed).
        if !req.idempotency_key.is_empty() {
            let applied = self.node.applied.read().expect("poisoned");
            if let Some(job) = applied.state.job_by_key(&req.idempotency_key) {
                return Ok(pb::SubmitJobResponse { job_id: job.id.to_string(), created: false });
            }
        }
        let cmd = Command::SubmitJob {
            id: new_uuid(),
            name: req.name.clone(),
            idempotency_key: req.idempotency_key.clone(),
            spec: spec.clone(),
            now: now_ms(),
        };
        if crate::chaos::on(crate::chaos::Bug::AckBeforeCommit) {
            // Planted bug: answer before the entry is committed (it may never be).
            let Command::SubmitJob { id, .. } = &cmd else { unreachable!() };
            let id = *id;
            let _ =
                self.node.raft.client_write_ff(crate::raft::Request { commands: vec![cmd] }).await;
            return Ok(pb::SubmitJobResponse { job_id: id.to_string(), created: true });
        }
        let started = std::time::Instant::now();
        let m = crate::metrics::get();
        let r = self.node.write_one(cmd).await?;
        let result = match &r {
            Ok(Outcome::Submitted { created: true, .. }) => "created",
            Ok(_) => "existing",
            Err(_) => "rejected",
        };
        m.submissions.with_label_values(&[result]).inc();
        m.submit_seconds.with_label_values(&[result]).observe(started.elapsed().as_secs_f64());
        match r {
            Ok(Outcome::Submitted { id, created }) => {
                Ok(pb::SubmitJobResponse { job_id: id.to_string(), created })
            }
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}")).into()),
            Err(r) => Err(rejection_to_status(&r).into()),
        }
    }

    /// One job with the tasks of `tasks` (every task, or one page of them). A small answer is
    /// made on this async worker (when the state's lock is free); a big one (up to 10^5 tasks,
    /// each with its attempts) off the async workers, as the store requires of reads that walk
    /// the state. The size is looked up first, under a short read of its own: a job's task
    /// count never changes.
    fn read_job(&self, id: Uuid, tasks: TaskPage) -> Result<pb::GetJobResponse, Status> {
        let applied = &self.node.applied;
        let small = with_read(applied, true, |a| {
            a.state.job(&id).is_none_or(|j| tasks.range(j).len() <= INLINE_JOB_TASKS)
        });
        with_read(applied, small, |a| match a.state.job(&id) {
            Some(j) => {
                let range = tasks.range(j);
                let more = tasks.size != 0 && range.end < j.tasks.len();
                let next = if more { range.end.to_string() } else { String::new() };
                let mut job = job_to_pb_with_tasks(j, range);
                job.waiting_on = a.state.waiting_on(j).iter().map(|d| d.to_string()).collect();
                Ok(pb::GetJobResponse {
                    job: Some(job),
                    applied_index: a.last_applied.map_or(0, |l| l.index),
                    next_task_page_token: next,
                })
            }
            // Retention (issue 14): while its tombstone lasts, a deleted job says so.
            None => match a.state.tombstone(&id) {
                Some(t) => Err(deleted_status(&id, t)),
                None => Err(Status::not_found(format!("job {id} not found"))),
            },
        })
    }

    /// One page of jobs, off the async workers: each job's task counts are a walk of its tasks,
    /// and a page filtered by a terminal state may pass over every job to fill.
    fn read_page(
        &self,
        filter: Option<JobState>,
        after: Option<u64>,
        size: usize,
    ) -> pb::ListJobsResponse {
        with_read(&self.node.applied, false, |applied| {
            let (jobs, next) = applied.state.jobs_page(filter, after, size);
            pb::ListJobsResponse {
                jobs: jobs.into_iter().map(|j| job_to_pb(j, false)).collect(),
                next_page_token: next.map(|s| s.to_string()).unwrap_or_default(),
            }
        })
    }
}

/// Which of a job's tasks `GetJob` returns: `size` 0 is every task (from `start`), else at most
/// `size` from task index `start`.
#[derive(Clone, Copy)]
struct TaskPage {
    start: usize,
    size: usize,
}

impl TaskPage {
    fn range(self, job: &crate::state::Job) -> std::ops::Range<usize> {
        let n = job.tasks.len();
        let start = self.start.min(n);
        let end = if self.size == 0 { n } else { start.saturating_add(self.size).min(n) };
        start..end
    }
}

/// Tasks a job may have for `GetJob` to encode it on an async worker: a few hundred
/// microseconds of work at most (like the store's inline applies). Bigger jobs go off them.
const INLINE_JOB_TASKS: usize = 256;

fn is_stale(c: i32) -> bool {
    c == ReadConsistency::Stale as i32
}

#[tonic::async_trait]
impl JobService for Jobs {
    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let timeout = super::forward::caller_timeout(req.metadata());
        self.submit(&fwd, req.into_inner(), timeout).await
    }

    type SubmitJobsStream = SubmitStream;

    async fn submit_jobs(
        &self,
        req: Request<Streaming<pb::SubmitJobRequest>>,
    ) -> Result<Response<SubmitStream>, Status> {
        let fwd = Caller::of(&req)?;
        let permit = self.open_stream()?;
        Ok(Response::new(self.clone().pipeline(fwd, req.into_inner(), permit)))
    }

    type ForwardSubmitsStream = ForwardStream;

    async fn forward_submits(
        &self,
        req: Request<Streaming<pb::ForwardedSubmit>>,
    ) -> Result<Response<ForwardStream>, Status> {
        // The layer admitted a master (or anyone, on an insecure cluster); each submission on the
        // stream is authorised as its own caller in `relayed`.
        let peer = crate::security::caller(&req)?;
        let permit = self.forward_streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "master {} has {} ForwardSubmits streams open; retry later",
                self.node.id,
                super::forward::MAX_STREAMS
            ))
        })?;
        let jobs = self.clone();
        let submit = move |m| {
            let (jobs, peer) = (jobs.clone(), peer.clone());
            async move { jobs.relayed(&peer, m).await }
        };
        let (stop, id) = (self.shutdown.clone(), self.node.id);
        Ok(Response::new(super::forward::relay(req.into_inner(), stop, id, permit, submit)))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let id = parse_job_id(&msg.job_id)?;
        // Validated: empty or a task index.
        let start = msg.task_page_token.parse::<usize>().unwrap_or(0);
        let tasks = TaskPage { start, size: msg.task_page_size as usize };
        if is_stale(msg.consistency) {
            return self.read_job(id, tasks).map(Response::new);
        }
        let local = || async {
            self.node.linearize().await?;
            Ok(self.read_job(id, tasks)?)
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).get_job(m).await })
            .await
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let filter = if msg.state.is_empty() { None } else { Some(parse_job_state(&msg.state)?) };
        let after = if msg.page_token.is_empty() {
            None
        } else {
            Some(msg.page_token.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!("invalid page_token {:?}", msg.page_token))
            })?)
        };
        let size = if msg.page_size == 0 { DEFAULT_PAGE_SIZE } else { msg.page_size } as usize;
        if is_stale(msg.consistency) {
            return Ok(Response::new(self.read_page(filter, after, size)));
        }
        let local = || async {
            self.node.linearize().await?;
            Ok(self.read_page(filter, after, size))
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).list_jobs(m).await })
            .await
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let id = parse_job_id(&msg.job_id)?;
        let local = || async {
            match self.node.write_one(Command::CancelJob { id, now: now_ms() }).await? {
                Ok(_) => {
                    let applied = self.node.applied.read().expect("poisoned");
                    let state = applied
                        .state
                        .job(&id)
                        .map(|j| job_state_name(j.state))
                        .unwrap_or("unknown");
                    Ok(pb::CancelJobResponse { state: state.to_string() })
                }
                Err(r) => {
                    // Retention (issue 14): a deleted job's cancel says so, like its GetJob.
                    let applied = self.node.applied.read().expect("poisoned");
                    match applied.state.tombstone(&id) {
                        Some(t) => Err(deleted_status(&id, t).into()),
                        None => Err(rejection_to_status(&r).into()),
                    }
                }
            }
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).cancel_job(m).await })
            .await
    }

    // --- Events (issue 17): see `master::events` ---

    type WatchEventsStream = super::events::WatchStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "master {} has {} WatchEvents streams open; retry later or on another master",
                self.node.id,
                super::events::MAX_WATCHERS
            ))
        })?;
        let (node, stop) = (self.node.clone(), self.shutdown.clone());
        super::events::watch(node, &fwd, msg, permit, stop).await.map(Response::new)
    }

    async fn read_index(
        &self,
        req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let index = super::events::read_point(&self.node, &fwd).await?;
        Ok(Response::new(pb::ReadIndexResponse { index }))
    }

    // --- batch semantics (issue 16): suspend and resume ---

    async fn suspend_job(
        &self,
        req: Request<pb::SuspendJobRequest>,
    ) -> Result<Response<pb::SuspendJobResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let id = parse_job_id(&msg.job_id)?;
        let local = || async {
            let state = self.write_job_command(Command::SuspendJob { id, now: now_ms() }).await?;
            Ok(pb::SuspendJobResponse { state })
        };
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                local,
                |c, m| async move { client(c).suspend_job(m).await },
            )
            .await
    }

    async fn resume_job(
        &self,
        req: Request<pb::ResumeJobRequest>,
    ) -> Result<Response<pb::ResumeJobResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let id = parse_job_id(&msg.job_id)?;
        let local = || async {
            let state = self.write_job_command(Command::ResumeJob { id, now: now_ms() }).await?;
            Ok(pb::ResumeJobResponse { state })
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).resume_job(m).await })
            .await
    }

    async fn delete_job(
        &self,
        req: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let id = parse_job_id(&msg.job_id)?;
        let r = &self.retention;
        let local = || async {
            let cmd = Command::DeleteJob { id, policy: r.cfg.policy(), now: now_ms() };
            match super::retention::commit(&self.node, &r.liveness, r.executor_ttl, cmd).await? {
                Ok(c) => Ok(pb::DeleteJobResponse { deleted: !c.jobs.is_empty() }),
                Err(rej) => Err(rejection_to_status(&rej).into()),
            }
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).delete_job(m).await })
            .await
    }

    async fn collect_garbage(
        &self,
        req: Request<pb::CollectGarbageRequest>,
    ) -> Result<Response<pb::CollectGarbageResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let r = &self.retention;
        let local = || async {
            // Everything committed before this pass is judged, as on the leader's own ticks.
            self.node.linearize().await?;
            super::retention::gc_pass(&self.node, &r.liveness, &r.cfg, r.executor_ttl).await
        };
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                local,
                |c, m| async move { client(c).collect_garbage(m).await },
            )
            .await
    }
}

/// Retention (issue 14): what `GetJob` and `CancelJob` answer for a deleted job while its
/// tombstone lasts: NOT_FOUND "job X was deleted at T ms (it had succeeded at F ms)", with the
/// same facts in the metadata (`triad-deleted-state`, `triad-finished-at-ms`,
/// `triad-deleted-at-ms`) for programs (the chaos suite checks every deletion was due by them).
pub(crate) fn deleted_status(id: &Uuid, t: &crate::state::retention::Tombstone) -> Status {
    let state = job_state_name(t.state);
    let mut status = Status::not_found(format!(
        "job {id} was deleted at {} ms (it had {state} at {} ms)",
        t.deleted_at, t.finished_at
    ));
    let md = status.metadata_mut();
    md.insert(super::retention::DELETED_STATE, tonic::metadata::MetadataValue::from_static(state));
    md.insert(super::retention::FINISHED_AT, t.finished_at.into());
    md.insert(super::retention::DELETED_AT, t.deleted_at.into());
    status
}

impl Jobs {
    /// Commits a command about job `id` (suspend, resume) and returns the job's state after it
    /// as the client sees it (`suspended` for a suspended non-terminal job).
    async fn write_job_command(&self, cmd: Command) -> Result<String, LocalError> {
        let id = match &cmd {
            Command::SuspendJob { id, .. } | Command::ResumeJob { id, .. } => *id,
            _ => Uuid::nil(),
        };
        match self.node.write_one(cmd).await? {
            Ok(_) => {
                let applied = self.node.applied.read().expect("poisoned");
                Ok(applied.state.job(&id).map_or("unknown".to_string(), |j| {
                    if j.batch.suspended { "suspended" } else { job_state_name(j.state) }
                        .to_string()
                }))
            }
            Err(r) => Err(rejection_to_status(&r).into()),
        }
    }
}
