//! The worker API an executor serves: the leader starts and stops attempts and deletes the
//! output of deleted jobs; clients read and follow output.
//!
//! Invariants:
//! - **A start is admitted only by a live, current executor:** not draining, not self-fenced,
//!   a work dir with room, the request's epoch equal to ours, and its lease stamp fresh
//!   (`fencing`). Anything else is refused before the runner sees the request.
//! - **A follow is bounded:** each read of the files is one bounded blocking call, each chunk
//!   sent waits at most [`FOLLOW_SEND_TIMEOUT`] for the client, and the stream ends when the
//!   attempt has ended and everything was sent, when the client goes, or when the executor stops.
//! - **A start survives its RPC:** it runs as its own task, so a cancelled call never leaves a
//!   token registered but not spawned.
//! - **Starts are idempotent:** a retried start of a known token answers with the existing pid;
//!   a spawn failure is the attempt's exit, reported by the runner's `Finished`, not a failed RPC.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::runner::{AttemptSpec, RunnerError};
use super::{Agent, STOP_GRACE};
use crate::api::pb;
use crate::api::pb::worker_service_server::WorkerService;
use crate::api::validate::Validate;

/// Largest output chunk one ReadOutput returns.
const MAX_READ: usize = 4 << 20;
/// Largest chunk one message of a FollowOutput stream carries.
const FOLLOW_CHUNK: usize = 1 << 20;
/// How often a follow looks for new output once it has caught up with a live attempt.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How long a follow waits for a client that does not read its stream before ending it.
const FOLLOW_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle follow sends an empty chunk this often, so the client can tell a quiet attempt from
/// a broken stream (it gives up after 30 s of silence).
const FOLLOW_KEEPALIVE: Duration = Duration::from_secs(10);

pub struct Worker {
    pub agent: Arc<Agent>,
    /// Fires when the executor stops: open follows end.
    pub stop: crate::shutdown::Shutdown,
}

#[tonic::async_trait]
impl WorkerService for Worker {
    async fn start_attempt(
        &self,
        req: Request<pb::StartAttemptRequest>,
    ) -> Result<Response<pb::StartAttemptResponse>, Status> {
        let r = req.into_inner();
        r.validate()?;
        self.admit_start(&r)?;
        let spec = attempt_spec(r);
        // Run the start as its own task: a cancelled RPC must not leave a token registered but
        // never spawned (every retry would then see AlreadyExists and nothing would run).
        let runner = self.agent.runner.clone();
        let started = tokio::spawn(async move { runner.start(spec).await })
            .await
            .map_err(|e| Status::internal(format!("start task failed: {e}")))?;
        start_response(started)
    }

    async fn stop_attempt(
        &self,
        req: Request<pb::StopAttemptRequest>,
    ) -> Result<Response<pb::StopAttemptResponse>, Status> {
        req.get_ref().validate()?;
        let was_running = self.agent.runner.stop(req.into_inner().token, STOP_GRACE).await;
        Ok(Response::new(pb::StopAttemptResponse { was_running }))
    }

    async fn query_attempt(
        &self,
        req: Request<pb::QueryAttemptRequest>,
    ) -> Result<Response<pb::QueryAttemptResponse>, Status> {
        req.get_ref().validate()?;
        let token = req.into_inner().token;
        Ok(Response::new(match self.agent.runner.get(token) {
            None => pb::QueryAttemptResponse::default(),
            Some(a) => pb::QueryAttemptResponse {
                known: true,
                running: a.status.is_none(),
                pid: a.pid.unwrap_or(0),
                status: a.status.map(|s| format!("{s:?}")).unwrap_or_else(|| "running".into()),
            },
        }))
    }

    async fn read_output(
        &self,
        req: Request<pb::ReadOutputRequest>,
    ) -> Result<Response<pb::ReadOutputResponse>, Status> {
        let r = req.into_inner();
        r.validate()?;
        let max = if r.max_bytes == 0 { MAX_READ } else { (r.max_bytes as usize).min(MAX_READ) };
        let chunk = self
            .agent
            .runner
            .read_output(&r.job_id, r.task_index, r.attempt, r.stderr, r.offset, max, r.tail_lines)
            .await
            .map_err(read_status)?;
        Ok(Response::new(response(chunk)))
    }

    type FollowOutputStream = ReceiverStream<Result<pb::ReadOutputResponse, Status>>;

    async fn follow_output(
        &self,
        req: Request<pb::FollowOutputRequest>,
    ) -> Result<Response<Self::FollowOutputStream>, Status> {
        let r = req.into_inner();
        r.validate()?;
        let runner = self.agent.runner.clone();
        // One attempt is followed: "latest" is resolved once, now.
        let attempt = runner
            .resolve_attempt(&r.job_id, r.task_index, r.attempt)
            .await
            .map_err(read_status)?;
        // The first read answers the call itself, so a missing attempt is NOT_FOUND at once.
        let first = runner
            .read_output(
                &r.job_id,
                r.task_index,
                attempt,
                r.stderr,
                r.offset,
                FOLLOW_CHUNK,
                r.tail_lines,
            )
            .await
            .map_err(read_status)?;
        let (tx, rx) = mpsc::channel(4);
        let follow = Follow {
            runner,
            job_id: r.job_id,
            task_index: r.task_index,
            attempt,
            stderr: r.stderr,
        };
        tokio::spawn(follow.run(first, tx, self.stop.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete_output(
        &self,
        req: Request<pb::DeleteOutputRequest>,
    ) -> Result<Response<pb::DeleteOutputResponse>, Status> {
        let r = req.into_inner();
        r.validate()?;
        let runner = self.agent.runner.clone();
        let ids: Vec<String> = r.job_ids.iter().map(|id| id.trim().to_string()).collect();
        let deleted = tokio::task::spawn_blocking(move || runner.delete_job_output(&ids))
            .await
            .map_err(|e| Status::internal(format!("deleting output: {e}")))?
            .map_err(|e| Status::internal(format!("deleting output: {e}")))?;
        if deleted > 0 {
            crate::metrics::executor().output_deleted.inc_by(u64::from(deleted));
            tracing::info!(jobs = deleted, "deleted the output of deleted jobs");
        }
        Ok(Response::new(pb::DeleteOutputResponse { deleted }))
    }
}

/// One FollowOutput stream: an attempt's output, chunk by chunk, until it ends.
struct Follow {
    runner: super::runner::Runner,
    job_id: String,
    task_index: u32,
    attempt: u32,
    stderr: bool,
}

impl Follow {
    /// Sends `first`, then every new chunk, until the attempt has ended and all was sent, the
    /// client goes (or stops reading for [`FOLLOW_SEND_TIMEOUT`]), or `stop` fires.
    async fn run(
        self,
        first: super::runner::Chunk,
        tx: mpsc::Sender<Result<pb::ReadOutputResponse, Status>>,
        mut stop: crate::shutdown::Shutdown,
    ) {
        let mut chunk = first;
        // The first message goes out at once: it answers the call.
        let mut last_sent: Option<std::time::Instant> = None;
        loop {
            let next = chunk.start + chunk.data.len() as u64;
            let (eof, empty) = (chunk.eof, chunk.data.is_empty());
            if !empty || eof || last_sent.is_none_or(|t| t.elapsed() >= FOLLOW_KEEPALIVE) {
                let sent = tokio::time::timeout(FOLLOW_SEND_TIMEOUT, tx.send(Ok(response(chunk))));
                match sent.await {
                    Ok(Ok(())) => last_sent = Some(std::time::Instant::now()),
                    // The client went away, or does not read.
                    _ => return,
                }
            }
            if eof {
                return;
            }
            if empty {
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = tx.closed() => return,
                    _ = stop.wait() => return,
                }
            }
            chunk = match self
                .runner
                .read_output(
                    &self.job_id,
                    self.task_index,
                    self.attempt,
                    self.stderr,
                    next,
                    FOLLOW_CHUNK,
                    0,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    // Deleted meanwhile (DeleteOutput, expiry): say so and end.
                    let _ = tx.try_send(Err(read_status(e)));
                    return;
                }
            };
        }
    }
}

/// The answer carrying a chunk of output.
fn response(c: super::runner::Chunk) -> pb::ReadOutputResponse {
    pb::ReadOutputResponse { data: c.data, eof: c.eof, start: c.start }
}

/// A runner's read error as the caller sees it.
fn read_status(e: RunnerError) -> Status {
    match e {
        e @ RunnerError::OutputNotFound { .. } => Status::not_found(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

impl Worker {
    /// Refuses a start this executor must not run now: it is draining or self-fenced, the
    /// request is for another epoch, or its lease stamp is stale.
    fn admit_start(&self, r: &pb::StartAttemptRequest) -> Result<(), Status> {
        if self.agent.draining.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition("executor is draining"));
        }
        if self.agent.is_fenced() {
            return Err(Status::failed_precondition(
                "executor is self-fenced (no heartbeat acknowledged recently)",
            ));
        }
        if let Some(problem) = self.agent.runner.disk().problem() {
            return Err(Status::failed_precondition(format!("executor is unhealthy: {problem}")));
        }
        let epoch = self.agent.epoch.load(Ordering::SeqCst);
        if r.epoch < epoch {
            return Err(Status::failed_precondition(format!(
                "stale executor epoch {} (current {epoch})",
                r.epoch
            )));
        }
        if r.epoch > epoch {
            // The leader committed our registration before its reply reached us: retry shortly.
            return Err(Status::unavailable(format!(
                "executor has not yet learned epoch {} (has {epoch})",
                r.epoch
            )));
        }
        // Late or unstamped: the leader may have given this start up. It retries with the stamp
        // of a newer beat if it still wants it.
        if let Err(e) = self.agent.check_lease(r.lease_seq) {
            crate::metrics::executor().stale_starts.inc();
            tracing::info!(token = r.token, "start refused: {e}");
            return Err(Status::unavailable(format!(
                "start of token {} refused: {e}; retry with a newer heartbeat",
                r.token
            )));
        }
        Ok(())
    }
}

/// The runner's spec for a start request.
fn attempt_spec(r: pb::StartAttemptRequest) -> AttemptSpec {
    AttemptSpec {
        job_id: r.job_id,
        task_index: r.task_index,
        task_count: r.task_count,
        attempt: r.attempt,
        token: r.token,
        command: r.command,
        args: r.args,
        env: r.env.into_iter().collect(),
        shell: r.shell,
        timeout: (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms)),
        range_start: r.range_start,
        range_end: r.range_end,
    }
}

/// The answer to a start: the pid, or how the leader should take the runner's refusal.
fn start_response(
    started: Result<u32, RunnerError>,
) -> Result<Response<pb::StartAttemptResponse>, Status> {
    match started {
        Ok(pid) => Ok(Response::new(pb::StartAttemptResponse { pid })),
        // Idempotent: the leader retried a start that had already worked.
        Err(RunnerError::AlreadyExists { pid, .. }) => {
            Ok(Response::new(pb::StartAttemptResponse { pid: pid.unwrap_or(0) }))
        }
        Err(e @ (RunnerError::InvalidSpec { .. } | RunnerError::DirInUse { .. })) => {
            Err(Status::invalid_argument(e.to_string()))
        }
        // No room to make the attempt's directory: the executor's trouble, not the attempt's.
        Err(RunnerError::NoSpace { reason, .. }) => {
            Err(Status::failed_precondition(format!("executor is unhealthy: {reason}")))
        }
        // A spawn failure is reported as the attempt's exit (127), not as a dispatch failure.
        Err(RunnerError::Spawn { .. } | RunnerError::Prepare { .. }) => {
            Ok(Response::new(pb::StartAttemptResponse { pid: 0 }))
        }
        Err(e) => Err(Status::internal(e.to_string())),
    }
}
