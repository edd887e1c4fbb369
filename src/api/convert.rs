//! Conversions between wire messages (`pb`) and the replicated model (`state`).
//!
//! Client input is turned into a [`JobSpec`] here, with defaults applied, and checked with the
//! state machine's own validation ([`JobSpec::validate`]), so there is one rule for what a valid job
//! is. Names of states on the wire are the lower-case names of the model's enums.

use std::str::FromStr;

use tonic::Status;
use uuid::Uuid;

use super::pb;
use crate::state::{
    Attempt, AttemptState, BatchPolicy, Command, Dependency, Executor, ExecutorState, Job,
    JobReason, JobSpec, JobState, Millis, Rejection, Resources, Task, TaskCounts, TaskState,
};

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 1000;

/// A client's job spec with defaults filled in, validated. Errors are `INVALID_ARGUMENT`.
pub fn job_spec_from_pb(spec: Option<pb::JobSpec>) -> Result<JobSpec, Status> {
    let s = spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
    let resources = match s.resources {
        None => Resources { slots: 1, cpu_millis: 0, memory_mib: 0 },
        Some(r) => Resources { slots: r.slots, cpu_millis: r.cpu_millis, memory_mib: r.memory_mib },
    };
    let spec = JobSpec {
        command: s.command,
        args: s.args,
        env: s.env.into_iter().collect(),
        shell: s.shell,
        task_count: s.task_count,
        resources,
        constraints: s.constraints.into_iter().collect(),
        max_attempts: if s.max_attempts == 0 { DEFAULT_MAX_ATTEMPTS } else { s.max_attempts },
        retry_backoff_ms: if s.retry_backoff_ms == 0 {
            DEFAULT_RETRY_BACKOFF_MS
        } else {
            s.retry_backoff_ms
        },
        timeout_ms: s.timeout_ms,
        priority: s.priority,
        ttl_after_finished_ms: s.ttl_after_finished_ms,
        policy: policy_from_pb(
            s.max_lost,
            s.retry_on_exit,
            s.fail_on_exit,
            s.retry_backoff_max_ms,
            s.deadline_ms,
            s.parallelism,
            s.max_failed_tasks,
            &s.after,
        )?,
    };
    spec.validate().map_err(|e| Status::invalid_argument(format!("invalid job spec: {e}")))?;
    Ok(spec)
}

pub fn job_spec_to_pb(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        command: s.command.clone(),
        ttl_after_finished_ms: s.ttl_after_finished_ms,
        args: s.args.clone(),
        env: s.env.clone().into_iter().collect(),
        shell: s.shell,
        task_count: s.task_count,
        resources: Some(resources_to_pb(s.resources)),
        constraints: s.constraints.clone().into_iter().collect(),
        max_attempts: s.max_attempts,
        retry_backoff_ms: s.retry_backoff_ms,
        timeout_ms: s.timeout_ms,
        priority: s.priority,
        max_lost: s.policy.max_lost,
        retry_on_exit: s.policy.retry_on_exit.clone(),
        fail_on_exit: s.policy.fail_on_exit.clone(),
        retry_backoff_max_ms: s.policy.backoff_max_ms,
        deadline_ms: s.policy.deadline_ms,
        parallelism: s.policy.parallelism,
        max_failed_tasks: s.policy.max_failed_tasks,
        after: s
            .policy
            .after
            .iter()
            .map(|d| pb::Dependency { job_id: d.job.to_string(), any: !d.require_success })
            .collect(),
    }
}

/// The batch policy of a client's spec (issue 16), defaults filled in (0 means the default).
#[allow(clippy::too_many_arguments)]
fn policy_from_pb(
    max_lost: u32,
    retry_on_exit: Vec<i32>,
    fail_on_exit: Vec<i32>,
    backoff_max_ms: u64,
    deadline_ms: u64,
    parallelism: u32,
    max_failed_tasks: u32,
    after: &[pb::Dependency],
) -> Result<BatchPolicy, Status> {
    let d = BatchPolicy::default();
    let after = after
        .iter()
        .map(|x| Ok(Dependency { job: parse_job_id(&x.job_id)?, require_success: !x.any }))
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(BatchPolicy {
        max_lost: if max_lost == 0 { d.max_lost } else { max_lost },
        retry_on_exit,
        fail_on_exit,
        backoff_max_ms: if backoff_max_ms == 0 { d.backoff_max_ms } else { backoff_max_ms },
        deadline_ms,
        parallelism,
        max_failed_tasks,
        after,
    })
}

pub fn resources_to_pb(r: Resources) -> pb::Resources {
    pb::Resources { slots: r.slots, cpu_millis: r.cpu_millis, memory_mib: r.memory_mib }
}

pub fn resources_from_pb(r: Option<pb::Resources>) -> Resources {
    r.map(|r| Resources { slots: r.slots, cpu_millis: r.cpu_millis, memory_mib: r.memory_mib })
        .unwrap_or_default()
}

/// Parses a job id given by a client.
pub fn parse_job_id(s: &str) -> Result<Uuid, Status> {
    Uuid::from_str(s.trim())
        .map_err(|_| Status::invalid_argument(format!("invalid job id {s:?}: not a UUID")))
}

pub fn job_state_name(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Parses a job state filter; unknown names are `INVALID_ARGUMENT`.
pub fn parse_job_state(s: &str) -> Result<JobState, Status> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "pending" => JobState::Pending,
        "running" => JobState::Running,
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed,
        "cancelled" | "canceled" => JobState::Cancelled,
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown job state {other:?} (expected pending, running, succeeded, failed or cancelled)"
            )))
        }
    })
}

pub fn task_state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Pending => "pending",
        TaskState::Assigned => "assigned",
        TaskState::Running => "running",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Lost => "lost",
        TaskState::Cancelled => "cancelled",
    }
}

pub fn attempt_state_name(s: AttemptState) -> &'static str {
    match s {
        AttemptState::Assigned => "assigned",
        AttemptState::Running => "running",
        AttemptState::Succeeded => "succeeded",
        AttemptState::Failed => "failed",
        AttemptState::Lost => "lost",
        AttemptState::Cancelled => "cancelled",
    }
}

pub fn executor_state_name(s: ExecutorState) -> &'static str {
    match s {
        ExecutorState::Alive => "alive",
        ExecutorState::Draining => "draining",
        ExecutorState::Left => "left",
        ExecutorState::Dead => "dead",
    }
}

fn counts_to_pb(c: TaskCounts) -> pb::TaskCounts {
    pb::TaskCounts {
        pending: c.pending,
        assigned: c.assigned,
        running: c.running,
        succeeded: c.succeeded,
        failed: c.failed,
        lost: c.lost,
        cancelled: c.cancelled,
    }
}

fn attempt_to_pb(a: &Attempt) -> pb::Attempt {
    pb::Attempt {
        number: a.number,
        token: a.token,
        executor: a.executor.clone(),
        state: attempt_state_name(a.state).to_string(),
        assigned_at_ms: a.assigned_at,
        started_at_ms: a.started_at.unwrap_or(0),
        finished_at_ms: a.finished_at.unwrap_or(0),
        has_exit_code: a.exit_code.is_some(),
        exit_code: a.exit_code.unwrap_or(0),
        error: a.error.clone().unwrap_or_default(),
    }
}

fn task_to_pb(t: &Task) -> pb::Task {
    pb::Task {
        index: t.index,
        state: task_state_name(t.state).to_string(),
        attempts: t.attempts.iter().map(attempt_to_pb).collect(),
        failed_attempts: t.failures(),
        lost_attempts: t.losses(),
        not_before_ms: t.not_before,
    }
}

/// A job on the wire with the tasks (and their attempts) of `tasks` only: a page of a big job.
pub fn job_to_pb_with_tasks(j: &Job, tasks: std::ops::Range<usize>) -> pb::Job {
    let mut job = job_to_pb(j, false);
    job.tasks = j.tasks.get(tasks).unwrap_or_default().iter().map(task_to_pb).collect();
    job
}

/// A job on the wire; `with_tasks` includes every task and attempt (GetJob), else counts only.
pub fn job_to_pb(j: &Job, with_tasks: bool) -> pb::Job {
    pb::Job {
        id: j.id.to_string(),
        name: j.name.clone(),
        idempotency_key: j.idempotency_key.clone(),
        spec: Some(job_spec_to_pb(&j.spec)),
        state: job_state_name(j.state).to_string(),
        created_at_ms: j.created_at,
        updated_at_ms: j.updated_at,
        finished_at_ms: j.finished_at.unwrap_or(0),
        counts: Some(counts_to_pb(j.counts())),
        tasks: if with_tasks { j.tasks.iter().map(task_to_pb).collect() } else { Vec::new() },
        reason: j.batch.reason.map(JobReason::name).unwrap_or_default().to_string(),
        // Every dependency while waiting; GetJob narrows it to those not ended (`State::waiting_on`).
        waiting_on: if j.batch.waiting {
            j.spec.policy.after.iter().map(|d| d.job.to_string()).collect()
        } else {
            Vec::new()
        },
        failed_tasks: j.counts().failed,
        suspended: j.batch.suspended,
        waiting: j.batch.waiting,
    }
}

/// The StartAttempt call for `attempt` of task `index` of `job`, on an executor of `epoch` (the
/// lease is filled in by the dispatcher, which knows the executor's latest beat).
pub fn start_attempt_to_pb(
    job: &Job,
    index: u32,
    attempt: &Attempt,
    epoch: u64,
) -> pb::StartAttemptRequest {
    let (range_start, range_end) = crate::state::task_range_uuids(index, job.spec.task_count);
    pb::StartAttemptRequest {
        job_id: job.id.to_string(),
        task_index: index,
        task_count: job.spec.task_count,
        attempt: attempt.number,
        token: attempt.token,
        command: job.spec.command.clone(),
        args: job.spec.args.clone(),
        env: job.spec.env.clone().into_iter().collect(),
        shell: job.spec.shell,
        timeout_ms: job.spec.timeout_ms,
        range_start,
        range_end,
        epoch,
        lease_seq: 0,
    }
}

/// An executor's registration as the state machine's command (`now` from the leader's clock).
pub fn register_from_pb(r: &pb::RegisterRequest, now: Millis) -> Command {
    Command::RegisterExecutor {
        id: r.executor_id.clone(),
        addr: r.addr.clone(),
        capacity: resources_from_pb(r.capacity),
        labels: r.labels.clone().into_iter().collect(),
        now,
    }
}

pub fn executor_to_pb(e: &Executor, used: Resources, running: u32) -> pb::ExecutorInfo {
    pb::ExecutorInfo {
        id: e.id.clone(),
        addr: e.addr.clone(),
        state: executor_state_name(e.state).to_string(),
        capacity: Some(resources_to_pb(e.capacity)),
        used: Some(resources_to_pb(used)),
        labels: e.labels.clone().into_iter().collect(),
        epoch: e.epoch,
        running,
        // Leader memory, not state: filled in by the leader's `ListExecutors`.
        last_heartbeat_ms: 0,
        heartbeat_age_ms: 0,
    }
}

/// How a state-machine rejection reaches a client.
pub fn rejection_to_status(r: &Rejection) -> Status {
    match r {
        Rejection::JobNotFound(_)
        | Rejection::TaskNotFound(..)
        | Rejection::ExecutorNotFound(_) => Status::not_found(r.to_string()),
        Rejection::InvalidSpec(_) | Rejection::DependencyNotFound(_) => {
            Status::invalid_argument(r.to_string())
        }
        Rejection::DuplicateJobId(_) => Status::already_exists(r.to_string()),
        Rejection::CronNotFound(_) => Status::not_found(r.to_string()),
        Rejection::CronExists(_) => Status::already_exists(r.to_string()),
        _ => Status::failed_precondition(r.to_string()),
    }
}

/// Attempt `n` of task `t` of job `job_id`, or without `n` the latest that started (the last one
/// if none did): whose output `triad job logs` and the HTTP API's logs read. NOT_FOUND when
/// there is no such attempt.
pub fn choose_attempt<'t>(
    t: &'t pb::Task,
    job_id: &str,
    attempt: Option<u32>,
) -> Result<&'t pb::Attempt, Status> {
    let task = t.index;
    match find_attempt(t, attempt) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(Status::not_found(format!("task {task} of job {job_id} has not run yet"))),
        Err(n) => Err(Status::not_found(format!("task {task} has no attempt {n}"))),
    }
}

/// Attempt number `attempt` of `t`, or (with `None`) its latest started attempt, else its last:
/// `Ok(None)` when it has no attempt yet, `Err(n)` when it has no attempt number `n`.
pub fn find_attempt(t: &pb::Task, attempt: Option<u32>) -> Result<Option<&pb::Attempt>, u32> {
    match attempt {
        Some(n) => t.attempts.iter().find(|a| a.number == n).map(Some).ok_or(n),
        None => Ok(t.attempts.iter().rev().find(|a| a.started_at_ms != 0).or(t.attempts.last())),
    }
}
