//! The replicated data model: executors, jobs, tasks and attempts as plain data.
//!
//! Everything here is serialisable and deterministic (only `BTreeMap`s, no floats, no clocks), so
//! two replicas that applied the same commands hold byte-identical state.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::policy::{BatchPolicy, Dependency, JobBatch, JobReason};

/// Job ids are UUID v4, chosen by the leader and carried in the submit command.
pub type JobId = Uuid;
/// An executor's stable id (kept in its work dir across restarts).
pub type ExecutorId = String;
/// Milliseconds since the Unix epoch, always chosen by the leader and carried in a command.
pub type Millis = u64;
/// A fencing token: globally increasing, one per assignment, issued by the state machine.
pub type Token = u64;

/// A bundle of resources: an executor's capacity or a task's demand.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Resources {
    pub slots: u32,
    pub cpu_millis: u32,
    pub memory_mib: u64,
}

impl Resources {
    /// Component-wise sum (saturating: capacity arithmetic never wraps).
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            slots: self.slots.saturating_add(o.slots),
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_mib: self.memory_mib.saturating_add(o.memory_mib),
        }
    }
    /// `self + demand <= cap` on every dimension, computed exactly (widened, never saturated:
    /// a saturated sum could make an overflow look like it fits). The one resource-fit rule,
    /// used by the state machine's assignment check and by the planner.
    pub fn fits_with(self, demand: Resources, cap: Resources) -> bool {
        u64::from(self.slots) + u64::from(demand.slots) <= u64::from(cap.slots)
            && u64::from(self.cpu_millis) + u64::from(demand.cpu_millis)
                <= u64::from(cap.cpu_millis)
            && u128::from(self.memory_mib) + u128::from(demand.memory_mib)
                <= u128::from(cap.memory_mib)
    }
    /// True when `self` fits inside `cap` on every dimension.
    pub fn fits_in(self, cap: Resources) -> bool {
        self.slots <= cap.slots
            && self.cpu_millis <= cap.cpu_millis
            && self.memory_mib <= cap.memory_mib
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExecutorState {
    /// Registered and heartbeating; receives work.
    Alive,
    /// Finishing what it runs; receives no new work.
    Draining,
    /// Deregistered cleanly. Terminal until it registers again.
    Left,
    /// Declared dead by the leader's liveness monitor. Terminal until it registers again.
    Dead,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    pub id: ExecutorId,
    /// Address of its worker gRPC API (`host:port`).
    pub addr: String,
    pub capacity: Resources,
    pub labels: BTreeMap<String, String>,
    pub state: ExecutorState,
    /// Incremented by every registration; a death declaration names the epoch it is about.
    pub epoch: u64,
    pub registered_at: Millis,
    pub updated_at: Millis,
}

/// What a job runs and how. Validated by [`JobSpec::validate`] before it enters the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Program to exec (or, with `shell`, the script given to `/bin/sh -c`).
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub shell: bool,
    /// Number of tasks (partitions); task `i` gets the `i`-th of `task_count` UUID ranges.
    pub task_count: u32,
    /// Demand of each task.
    pub resources: Resources,
    /// Every `k=v` must be among an executor's labels for it to run a task.
    pub constraints: BTreeMap<String, String>,
    /// Attempts per task before the task (and the job) fails. At least 1.
    pub max_attempts: u32,
    /// Delay before a failed or lost task becomes placeable again.
    pub retry_backoff_ms: u64,
    /// Per-attempt timeout; 0 means none.
    pub timeout_ms: u64,
    /// Retention (issue 14): delete the job this long after it finished; none: the cluster's
    /// `retention.finished_job_ttl`.
    pub ttl_after_finished_ms: Option<u64>,
    /// Higher runs first.
    pub priority: i32,
    /// Failure policy, deadline, parallelism, partial success, dependencies (`policy.rs`).
    pub policy: BatchPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for placement (possibly until `not_before`).
    Pending,
    /// Placed on an executor with a fencing token; not yet reported started.
    Assigned,
    /// The executor reported the attempt started.
    Running,
    Succeeded,
    /// Exhausted its attempts (terminal). A failed attempt with attempts left returns to Pending.
    Failed,
    /// Its attempt was lost (executor dead or left); transient, the task returns to Pending or Failed.
    Lost,
    /// Its job was cancelled before it finished (terminal).
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }
    /// An attempt exists on an executor (it may be running there).
    pub fn is_live(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AttemptState {
    Assigned,
    Running,
    Succeeded,
    Failed,
    Lost,
    Cancelled,
}

/// One try of one task on one executor, fenced by `token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number within the task.
    pub number: u32,
    pub token: Token,
    pub executor: ExecutorId,
    pub state: AttemptState,
    pub assigned_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub index: u32,
    pub state: TaskState,
    /// Not placeable before this time (retry backoff; see [`Task::backoff_over`]).
    pub not_before: Millis,
    /// The `now` the current backoff was computed at (`not_before` minus the delay).
    pub backoff_from: Millis,
    /// Every attempt so far, oldest first; the last one is the current one.
    pub attempts: Vec<Attempt>,
}

impl Task {
    /// The current attempt, if any.
    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.last()
    }
    /// The current fencing token (0 before the first assignment).
    pub fn token(&self) -> Token {
        self.current().map_or(0, |a| a.token)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// Submission order; the listing order and pagination cursor.
    pub seq: u64,
    pub name: String,
    pub idempotency_key: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    pub tasks: Vec<Task>,
    /// Reason, waiting and suspended flags (`policy.rs`).
    pub batch: JobBatch,
}

/// Per-state task counts of a job (derived, never stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub pending: u32,
    pub assigned: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub lost: u32,
    pub cancelled: u32,
}

/// A placement decided by the leader: run task `index` of `job` on `executor`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Assignment {
    pub job: JobId,
    pub index: u32,
    pub executor: ExecutorId,
}

/// A state change, proposed by the leader (with time and ids chosen there) and applied by every
/// replica in log order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// (Re-)register an executor: a new epoch, state `Alive`. Attempts it held under an earlier
    /// epoch are lost (it restarted, so they are gone).
    RegisterExecutor {
        id: ExecutorId,
        addr: String,
        capacity: Resources,
        labels: BTreeMap<String, String>,
        now: Millis,
    },
    /// Stop placing work on an executor; it finishes what it runs.
    DrainExecutor {
        id: ExecutorId,
        now: Millis,
    },
    /// An executor left cleanly; its live attempts are lost.
    DeregisterExecutor {
        id: ExecutorId,
        now: Millis,
    },
    /// The liveness monitor declares an executor (at `epoch`) dead; its live attempts are lost.
    ExecutorDead {
        id: ExecutorId,
        epoch: u64,
        now: Millis,
    },
    /// Create a job, unless `idempotency_key` (when non-empty) already names one.
    SubmitJob {
        id: JobId,
        name: String,
        idempotency_key: String,
        spec: JobSpec,
        now: Millis,
    },
    /// Cancel a non-terminal job; its live attempts become `Cancelled`.
    CancelJob {
        id: JobId,
        now: Millis,
    },
    /// Place pending tasks; each gets a fresh fencing token from the state machine.
    AssignTasks {
        assignments: Vec<Assignment>,
        now: Millis,
    },
    /// The executor reports the attempt fenced by `token` started.
    TaskStarted {
        job: JobId,
        index: u32,
        token: Token,
        now: Millis,
    },
    /// The attempt fenced by `token` exited (`exit_code` 0 is success).
    TaskFinished {
        job: JobId,
        index: u32,
        token: Token,
        exit_code: i32,
        error: Option<String>,
        now: Millis,
    },
    /// The attempt fenced by `token` is gone without an exit status (e.g. the dispatcher could not
    /// start it, or the executor no longer knows it).
    TaskLost {
        job: JobId,
        index: u32,
        token: Token,
        reason: String,
        now: Millis,
    },
    // Variants are numbered by position in the log's encoding: new ones go after the others, so
    // that every log and snapshot written before them still decodes.
    /// Executor `executor` reports on the attempt fenced by `token`: applied as the `TaskStarted`,
    /// `TaskFinished` or `TaskLost` it names, and refused unless the attempt is on `executor`.
    TaskReported {
        job: JobId,
        index: u32,
        token: Token,
        executor: ExecutorId,
        report: Report,
        now: Millis,
    },
    /// An executor left cleanly, as registered at `epoch`: refused unless that is its current
    /// epoch (an earlier incarnation's farewell must not retire the one registered since).
    DeregisterExecutorAt {
        id: ExecutorId,
        epoch: u64,
        now: Millis,
    },
    // --- Cron (issue 17): see `state::cron` ---
    /// Create a cron job (a retry with the same spec is done; another spec under the name is
    /// refused).
    CreateCron {
        spec: CronSpec,
        now: Millis,
    },
    DeleteCron {
        name: String,
        now: Millis,
    },
    /// Suspend (`true`) or resume a cron; resuming skips the times that passed meanwhile.
    SuspendCron {
        name: String,
        suspended: bool,
        now: Millis,
    },
    /// The leader fires cron `name` for its scheduled time `scheduled_at` (job id `job` if it
    /// creates one): a time at or below the cron's watermark changes nothing.
    FireCron {
        name: String,
        scheduled_at: Millis,
        job: JobId,
        now: Millis,
    },
    /// `cron trigger`: create job `job` from the cron now, outside the schedule.
    TriggerCron {
        name: String,
        job: JobId,
        now: Millis,
    },
    // --- batch semantics (issue 16, `policy.rs`) ---
    /// Stop placing the job's tasks; its live attempts are cancelled, their tasks pending again.
    SuspendJob {
        id: JobId,
        now: Millis,
    },
    /// Place the job's tasks again.
    ResumeJob {
        id: JobId,
        now: Millis,
    },
    /// The job's deadline passed by `now` (proposed by the leader): it fails, reason `deadline`.
    ExpireJob {
        id: JobId,
        now: Millis,
    },
    /// Every dependency of the waiting job is terminal: release it, or cancel it (reason
    /// `dependency`) when an `:ok` one did not succeed. Refused while one is still going.
    ResolveDependencies {
        id: JobId,
        now: Millis,
    },
    /// Applies `command` with the leader's random draw for any retry backoff it causes (full
    /// jitter: the delay is `bound * jitter / 2^32`), so apply stays deterministic.
    WithJitter {
        jitter: u32,
        command: Box<Command>,
    },
    /// Retention (issue 14): delete the listed terminal jobs, expire the listed tombstones and
    /// forget the listed executors, each only if due at `now` under `policy`, and delete the
    /// listed runs of crons past their history limits (issue 17), each only if still past them
    /// (all judged again here; see `state::retention`). Never refused.
    CollectGarbage {
        jobs: Vec<JobId>,
        tombstones: Vec<JobId>,
        executors: Vec<ExecutorId>,
        /// (cron name, job): finished runs past the cron's `keep_succeeded`/`keep_failed`.
        cron_runs: Vec<(String, JobId)>,
        policy: super::retention::Retention,
        now: Millis,
    },
    /// Retention (issue 14): delete a terminal job now (refused for any other); `policy` gives
    /// the idempotency window its tombstone lasts for.
    DeleteJob {
        id: JobId,
        policy: super::retention::Retention,
        now: Millis,
    },
}

/// What an executor reports about one of its attempts ([`Command::TaskReported`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    Started,
    Finished { exit_code: i32, error: Option<String> },
    Lost { reason: String },
}

/// What applying a command produced, for the caller who proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Executor registered at this epoch.
    Registered { epoch: u64 },
    /// The job named by the submission: `created` is false when the idempotency key already
    /// named an existing job (then `id` is that job's id).
    Submitted { id: JobId, created: bool },
    /// One entry per requested assignment, in order: the token issued, or why it was skipped.
    Assigned { tokens: Vec<Result<Token, Rejection>> },
    /// The command took effect (or was already in effect).
    Done,
    /// A cron firing: the job it created (none: a duplicate, missed or skipped time).
    CronFired { job: Option<JobId> },
    /// Retention (issue 14): what a collection or deletion removed.
    Collected(super::retention::Collected),
}

/// Why a command was refused. Deterministic: every replica refuses the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("job {0} not found")]
    JobNotFound(JobId),
    #[error("task {1} of job {0} not found")]
    TaskNotFound(JobId, u32),
    #[error("executor {0} not found")]
    ExecutorNotFound(ExecutorId),
    #[error("stale fencing token {got} (current {current})")]
    StaleToken { got: Token, current: Token },
    #[error("illegal transition {from} -> {to}")]
    IllegalTransition { from: String, to: String },
    #[error("job {0} is already terminal")]
    JobTerminal(JobId),
    #[error("executor {0} cannot take work")]
    ExecutorUnavailable(ExecutorId),
    #[error("insufficient capacity on executor {0}")]
    NoCapacity(ExecutorId),
    #[error("stale executor epoch {got} (current {current})")]
    StaleEpoch { got: u64, current: u64 },
    #[error("invalid job spec: {0}")]
    InvalidSpec(String),
    #[error("job id {0} already exists")]
    DuplicateJobId(JobId),
    #[error("attempt fenced by token {token} is not on executor {got} (it is on {owner})")]
    WrongExecutor { token: Token, got: ExecutorId, owner: ExecutorId },
    #[error("cron {0} not found")]
    CronNotFound(String),
    #[error("cron {0} already exists with another spec (delete it first)")]
    CronExists(String),
    #[error("job {0} has not finished (only a terminal job can be deleted; cancel it first)")]
    JobNotTerminal(JobId),
    // --- batch semantics (issue 16) ---
    #[error("dependency {0} not found")]
    DependencyNotFound(JobId),
    /// A batch rule does not allow it yet (deadline not passed, dependencies still running, job
    /// waiting or suspended, parallelism reached).
    #[error("not yet: {0}")]
    NotDue(String),
}

// ---------------------------------------------------------------------------------------------
// Limits, validation and the transition tables. Added alongside the data model so that every
// caller (CLI, API, state machine) checks input against the same numbers and the same FSMs.
// ---------------------------------------------------------------------------------------------

/// Every size limit on a submission, in one place. A spec beyond them is rejected with
/// [`Rejection::InvalidSpec`] rather than allowed to bloat the replicated state.
pub mod limits {
    /// Tasks (partitions) per job.
    pub const MAX_TASKS: u32 = 100_000;
    /// Attempts per task.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// Entries in `args`, and separately in `env`.
    pub const MAX_ARGS: usize = 10_000;
    pub const MAX_ENV: usize = 10_000;
    /// Label constraints per job.
    pub const MAX_CONSTRAINTS: usize = 64;
    /// Bytes of command + args + env + constraints together.
    pub const MAX_SPEC_BYTES: usize = 1 << 20;
    /// Characters in a job name and in an idempotency key.
    pub const MAX_NAME_CHARS: usize = 256;
    pub const MAX_KEY_CHARS: usize = 256;
    /// Longest retry backoff (1 day) and attempt timeout (30 days).
    pub const MAX_RETRY_BACKOFF_MS: u64 = 24 * 3600 * 1000;
    pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;
    /// Longest per-job `ttl_after_finished` (1 year).
    pub const MAX_TTL_AFTER_FINISHED_MS: u64 = 365 * 24 * 3600 * 1000;
    /// Error/reason strings stored on an attempt are cut to this many bytes (at a char boundary).
    pub const MAX_ERROR_BYTES: usize = 4096;

    // The bounds below are checked at the API (`api::validate`) before a request becomes a
    // command; the state machine does not check them (a log written before they existed must
    // still apply the same way), but nothing they accept is refused by it.

    /// Bytes in an executor id.
    pub const MAX_EXECUTOR_ID_BYTES: usize = 128;
    /// Bytes in a `host:port` address (an executor's worker API, a master).
    pub const MAX_ADDR_BYTES: usize = 256;
    /// Labels per executor (its label selectors, a job's constraints, are [`MAX_CONSTRAINTS`]).
    pub const MAX_LABELS: usize = 64;
    /// Bytes in a label's (or a constraint's) name, and in its value.
    pub const MAX_LABEL_KEY_BYTES: usize = 128;
    pub const MAX_LABEL_VALUE_BYTES: usize = 256;
    /// Bytes of an error text an executor reports (the state keeps [`MAX_ERROR_BYTES`] of it).
    pub const MAX_REPORT_TEXT_BYTES: usize = 64 * 1024;
    /// Running attempts one heartbeat may list.
    pub const MAX_HEARTBEAT_ATTEMPTS: usize = 65_536;
    /// Per-task demand and per-executor capacity: sums over 10^5 tasks or 10^4 executors stay
    /// far from overflowing any counter they are added in.
    pub const MAX_SLOTS: u32 = 1 << 20;
    pub const MAX_CPU_MILLIS: u32 = 1 << 30;
    pub const MAX_MEMORY_MIB: u64 = 1 << 40;
    /// Linux's `ARG_MAX` for the default 8 MiB stack: argv plus envp of one `execve`, each
    /// string with its NUL and its pointer.
    pub const ARG_MAX: usize = 2 << 20;
    /// What the executor adds to a task's environment (`TRIAD_*`, its own), kept free of it.
    pub const ARG_HEADROOM: usize = 256 * 1024;
    /// Linux's `MAX_ARG_STRLEN`: the longest single argv or envp string (`k=v`), NUL included.
    pub const MAX_ARG_STRLEN: usize = 131_072;
    /// Page sizes of listings (0 means the default).
    pub const DEFAULT_PAGE_SIZE: u32 = 100;
    pub const MAX_PAGE_SIZE: u32 = 1000;
}

impl JobSpec {
    /// A one-task spec running `command` with defaults: 1 slot, 3 attempts, 1 s backoff.
    pub fn new(command: impl Into<String>) -> JobSpec {
        JobSpec {
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            shell: false,
            task_count: 1,
            resources: Resources { slots: 1, cpu_millis: 0, memory_mib: 0 },
            constraints: BTreeMap::new(),
            max_attempts: 3,
            retry_backoff_ms: 1000,
            timeout_ms: 0,
            priority: 0,
            ttl_after_finished_ms: None,
            policy: BatchPolicy::default(),
        }
    }

    /// Bytes of variable-size text in the spec (command, args, env, constraints).
    pub fn byte_size(&self) -> usize {
        let pairs =
            |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        self.command.len()
            + self.args.iter().map(String::len).sum::<usize>()
            + pairs(&self.env)
            + pairs(&self.constraints)
    }

    /// Checks the spec against [`limits`]; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        use limits::*;
        if self.command.trim().is_empty() {
            return Err("command is empty".into());
        }
        if !(1..=MAX_TASKS).contains(&self.task_count) {
            return Err(format!("task count {} not in 1..={MAX_TASKS}", self.task_count));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!("max attempts {} not in 1..={MAX_ATTEMPTS}", self.max_attempts));
        }
        if self.args.len() > MAX_ARGS {
            return Err(format!("{} args, at most {MAX_ARGS}", self.args.len()));
        }
        if self.env.len() > MAX_ENV {
            return Err(format!("{} env entries, at most {MAX_ENV}", self.env.len()));
        }
        if self.constraints.len() > MAX_CONSTRAINTS {
            return Err(format!(
                "{} constraints, at most {MAX_CONSTRAINTS}",
                self.constraints.len()
            ));
        }
        if self.byte_size() > MAX_SPEC_BYTES {
            return Err(format!("spec is {} bytes, at most {MAX_SPEC_BYTES}", self.byte_size()));
        }
        // exec() takes C strings: a NUL could not reach the child, so refuse it up front.
        let texts = std::iter::once(&self.command)
            .chain(&self.args)
            .chain(self.env.iter().flat_map(|(k, v)| [k, v]));
        if texts.into_iter().any(|s| s.contains('\0')) {
            return Err("command, args and env must not contain NUL".into());
        }
        if let Some(k) = self.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(format!("env name {k:?} is empty or contains '='"));
        }
        if self.constraints.keys().any(|k| k.is_empty()) {
            return Err("constraint label name is empty".into());
        }
        // A task demanding nothing would fit on an executor without bound.
        if self.resources.slots == 0 {
            return Err("each task must demand at least one slot".into());
        }
        if self.retry_backoff_ms > MAX_RETRY_BACKOFF_MS {
            return Err(format!(
                "retry backoff {} ms, at most {MAX_RETRY_BACKOFF_MS}",
                self.retry_backoff_ms
            ));
        }
        if self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!("timeout {} ms, at most {MAX_TIMEOUT_MS}", self.timeout_ms));
        }
        if let Some(ttl) = self.ttl_after_finished_ms.filter(|&t| t > MAX_TTL_AFTER_FINISHED_MS) {
            return Err(format!(
                "ttl after finished {ttl} ms, at most {MAX_TTL_AFTER_FINISHED_MS}"
            ));
        }
        self.policy.validate(self.task_count, self.retry_backoff_ms)
    }
}

/// Validates a whole submission: the name and idempotency key as well as the spec.
pub fn validate_submit(name: &str, idempotency_key: &str, spec: &JobSpec) -> Result<(), String> {
    if name.chars().count() > limits::MAX_NAME_CHARS {
        return Err(format!("name longer than {} characters", limits::MAX_NAME_CHARS));
    }
    if idempotency_key.chars().count() > limits::MAX_KEY_CHARS {
        return Err(format!("idempotency key longer than {} characters", limits::MAX_KEY_CHARS));
    }
    spec.validate()
}

impl ExecutorState {
    /// Every executor state, in declaration order (`ALL[s as usize] == s`).
    pub const ALL: [ExecutorState; 4] =
        [ExecutorState::Alive, ExecutorState::Draining, ExecutorState::Left, ExecutorState::Dead];

    /// The executor FSM. Registration may revive any state; otherwise
    /// `Alive -> Draining -> Left` or `Alive|Draining -> Dead`.
    pub fn can_transition(self, to: ExecutorState) -> bool {
        use ExecutorState::*;
        matches!((self, to), (_, Alive) | (Alive, Draining) | (Alive | Draining, Left | Dead))
    }
}

impl Executor {
    /// True when every `k=v` of `constraints` is among this executor's labels.
    pub fn satisfies(&self, constraints: &BTreeMap<String, String>) -> bool {
        labels_satisfy(&self.labels, constraints)
    }
}

/// Every constraint `k=v` is among the labels: the one label-matching rule, used by the state
/// machine's assignment check and by the planner.
pub fn labels_satisfy(
    labels: &BTreeMap<String, String>,
    constraints: &BTreeMap<String, String>,
) -> bool {
    constraints.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl JobState {
    /// Every job state, in declaration order (`ALL[s as usize] == s`).
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The job FSM: `Pending -> Running -> Succeeded|Failed|Cancelled`; a job that never started
    /// may also fail (attempts lost before starting) or be cancelled. Terminal states are final.
    pub fn can_transition(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Pending, Running | Failed | Cancelled) | (Running, Succeeded | Failed | Cancelled)
        )
    }
}

impl TaskState {
    /// Every task state, in declaration order (`ALL[s as usize] == s`).
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Lost,
        TaskState::Cancelled,
    ];

    /// The task FSM. `Failed` and `Cancelled` are terminal, so a failed attempt with attempts left
    /// takes its task from `Assigned|Running` straight back to `Pending`; `Lost` is transient
    /// (it never survives a command) and leads to `Pending` or `Failed`.
    pub fn can_transition(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, Assigned | Cancelled)
                | (Assigned, Running)
                | (Assigned | Running, Succeeded | Failed | Lost | Pending | Cancelled)
                | (Lost, Pending | Failed)
        )
    }
}

impl AttemptState {
    /// On an executor (it may be running there).
    pub fn is_live(self) -> bool {
        matches!(self, AttemptState::Assigned | AttemptState::Running)
    }
    pub fn is_terminal(self) -> bool {
        !self.is_live()
    }
    /// The attempt FSM: `Assigned -> Running`, and a live attempt may end in any terminal state.
    pub fn can_transition(self, to: AttemptState) -> bool {
        use AttemptState::*;
        matches!(
            (self, to),
            (Assigned, Running) | (Assigned | Running, Succeeded | Failed | Lost | Cancelled)
        )
    }
}

impl Job {
    /// Task `index`, if the job has one.
    pub fn task(&self, index: u32) -> Option<&Task> {
        self.tasks.get(index as usize)
    }
    /// Per-state task counts (a scan of the tasks).
    pub fn counts(&self) -> TaskCounts {
        let mut c = TaskCounts::default();
        for t in &self.tasks {
            *c.slot_mut(t.state) += 1;
        }
        c
    }
}

impl TaskCounts {
    /// The number of tasks in `state`.
    pub fn get(&self, state: TaskState) -> u32 {
        let mut c = *self;
        *c.slot_mut(state)
    }
    /// Total tasks counted.
    pub fn total(&self) -> u32 {
        self.pending
            + self.assigned
            + self.running
            + self.succeeded
            + self.failed
            + self.lost
            + self.cancelled
    }
    pub(crate) fn slot_mut(&mut self, state: TaskState) -> &mut u32 {
        match state {
            TaskState::Pending => &mut self.pending,
            TaskState::Assigned => &mut self.assigned,
            TaskState::Running => &mut self.running,
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Failed => &mut self.failed,
            TaskState::Lost => &mut self.lost,
            TaskState::Cancelled => &mut self.cancelled,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cron jobs (issue 17): the data; their apply functions are in `state::cron`.
// ---------------------------------------------------------------------------------------------

/// Runs a cron remembers (the newest).
pub const MAX_RUNS: usize = 100;
/// Longest cron name, in bytes (names are `[A-Za-z0-9._-]`).
pub const MAX_CRON_NAME_BYTES: usize = 128;
/// Longest schedule expression and time zone name, in bytes.
pub const MAX_SCHEDULE_BYTES: usize = 256;
pub const MAX_TZ_BYTES: usize = 64;
/// Crons one cluster may hold.
pub const MAX_CRONS: usize = 10_000;
/// Largest history limit.
pub const MAX_KEEP: u32 = 1000;

/// What a firing does while an earlier run of the same cron is not terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    #[default]
    Allow,
    Forbid,
    Replace,
}

impl Overlap {
    pub fn parse(s: &str) -> Option<Overlap> {
        match s.to_ascii_lowercase().as_str() {
            "" | "allow" => Some(Overlap::Allow),
            "forbid" => Some(Overlap::Forbid),
            "replace" => Some(Overlap::Replace),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Forbid => "forbid",
            Overlap::Replace => "replace",
        }
    }
}

/// A cron job as created: the schedule, its policies and the job it creates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronSpec {
    pub name: String,
    /// As given (see `state::schedule`); validated by the API before it reaches the log.
    pub schedule: String,
    /// IANA zone; empty means UTC.
    pub tz: String,
    pub overlap: Overlap,
    /// A time fired later than this after it was due is recorded `missed` instead (0: never).
    pub starting_deadline_ms: u64,
    pub keep_succeeded: u32,
    pub keep_failed: u32,
    /// Name of the jobs it creates.
    pub job_name: String,
    pub job: JobSpec,
}

/// What became of one scheduled (or triggered) time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// Created `job`; `replaced` are the runs the `replace` policy cancelled for it.
    Fired { job: JobId, replaced: Vec<JobId> },
    /// Created `job` on request (`cron trigger`), outside the schedule.
    Triggered { job: JobId },
    /// No job: overlap `forbid` with a run still active, or suspended when the firing came.
    Skipped { reason: String },
    /// No job: fired later than the starting deadline (no leader, or a leader that was behind).
    Missed { late_ms: u64 },
}

/// One run of a cron.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The scheduled time (for a trigger: when it was asked for).
    pub scheduled_at: Millis,
    /// When the leader fired it.
    pub fired_at: Millis,
    pub outcome: RunOutcome,
}

impl Run {
    pub fn job(&self) -> Option<JobId> {
        match &self.outcome {
            RunOutcome::Fired { job, .. } | RunOutcome::Triggered { job } => Some(*job),
            _ => None,
        }
    }
}

/// A cron job in the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cron {
    pub spec: CronSpec,
    pub created_at: Millis,
    pub suspended: bool,
    /// The dedup watermark: every scheduled time at or below it has been handled.
    pub handled_upto: Millis,
    /// The newest runs, oldest first, at most [`MAX_RUNS`].
    pub runs: VecDeque<Run>,
    /// Counts over the cron's life: jobs created by the schedule, times missed, times skipped.
    pub fired: u64,
    pub missed: u64,
    pub skipped: u64,
}
/// The one cron name rule.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CRON_NAME_BYTES {
        return Err(format!("cron name must be 1 to {MAX_CRON_NAME_BYTES} bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(format!("cron name {name:?} may only have letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Bounds of a cron spec that apply checks (the API also parses the schedule and zone).
pub fn validate_spec(c: &CronSpec) -> Result<(), String> {
    validate_name(&c.name)?;
    if c.schedule.is_empty() || c.schedule.len() > MAX_SCHEDULE_BYTES {
        return Err(format!("schedule must be 1 to {MAX_SCHEDULE_BYTES} bytes"));
    }
    if c.tz.len() > MAX_TZ_BYTES {
        return Err(format!("time zone is longer than {MAX_TZ_BYTES} bytes"));
    }
    if c.keep_succeeded > MAX_KEEP || c.keep_failed > MAX_KEEP {
        return Err(format!("history limits are at most {MAX_KEEP}"));
    }
    // Batch semantics (issue 16): every run would wait for the same fixed jobs, and a run's
    // creation must not fail on a dependency gone since the cron was made.
    if !c.job.policy.after.is_empty() {
        return Err("a cron's jobs cannot have dependencies (--after)".into());
    }
    validate_submit(&c.job_name, "", &c.job)
}
