//! The worker API an executor serves: the leader starts and stops attempts; clients read output.
//!
//! Invariants:
//! - **A start is admitted only by a live, current executor:** not draining, not self-fenced,
//!   the request's epoch equal to ours, and its lease stamp fresh (`fencing`). Anything
//!   else is refused before the runner sees the request.
//! - **A start survives its RPC:** it runs as its own task, so a cancelled call never leaves a
//!   token registered but not spawned.
//! - **Starts are idempotent:** a retried start of a known token answers with the existing pid;
//!   a spawn failure is the attempt's exit, reported by the runner's `Finished`, not a failed RPC.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::runner::{AttemptSpec, RunnerError};
use super::{Agent, STOP_GRACE};
use crate::api::pb;
use crate::api::pb::worker_service_server::WorkerService;
use crate::api::validate::Validate;

/// Largest output chunk one ReadOutput returns.
const MAX_READ: usize = 4 << 20;

pub struct Worker {
    pub agent: Arc<Agent>,
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
        match self
            .agent
            .runner
            .read_output(&r.job_id, r.task_index, r.attempt, r.stderr, r.offset, max)
            .await
        {
            Ok((data, eof)) => Ok(Response::new(pb::ReadOutputResponse { data, eof })),
            Err(e @ RunnerError::OutputNotFound { .. }) => Err(Status::not_found(e.to_string())),
            Err(e) => Err(Status::internal(e.to_string())),
        }
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
        // A spawn failure is reported as the attempt's exit (127), not as a dispatch failure.
        Err(RunnerError::Spawn { .. } | RunnerError::Prepare { .. }) => {
            Ok(Response::new(pb::StartAttemptResponse { pid: 0 }))
        }
        Err(e) => Err(Status::internal(e.to_string())),
    }
}
