//! Batch semantics (issue 16): what a job does when attempts fail or are lost, when it must end,
//! how much of it may run at once, and what it waits for. Pure, like the rest of `state`: every
//! time is a command's `now`, the one random draw (backoff jitter) rides in a command
//! ([`Command::WithJitter`](super::Command::WithJitter)), chosen by the leader.
//!
//! Rules (each covered by a golden scenario in `testdata/` and the proptests' invariants):
//! - **Lost ≠ failed.** A failed attempt (non-zero exit) counts against `max_attempts`; a lost one
//!   (executor dead, left, re-registered, start given up, reported lost) against
//!   [`BatchPolicy::max_lost`] only. A task keeps both counts ([`Task::failures`],
//!   [`Task::losses`]) and fails when either runs out.
//! - **Exit-code rules.** An exit code in `fail_on_exit` fails the task at once; with a non-empty
//!   `retry_on_exit`, only the codes listed there are retried (any other fails at once).
//! - **Backoff.** The n-th bad attempt (failed or lost) of a task is retried after a delay drawn
//!   uniformly from `[0, min(cap, base · 2^(n-1)))` ("full jitter"); without a leader's draw
//!   (commands from before jitter existed, tests) the delay is the bound itself.
//! - **Deadline.** A job with `deadline_ms` fails with reason `deadline` once the leader proposes
//!   [`Command::ExpireJob`](super::Command::ExpireJob) at or after `created_at + deadline_ms`;
//!   ending it cancels its live attempts, which the leader then stops.
//! - **Parallelism.** At most `parallelism` tasks of a job are assigned or running (0: no cap);
//!   the state machine refuses an assignment beyond it, the planner never proposes one.
//! - **Suspend/resume.** A suspended job gets no placements; suspending cancels its live attempts
//!   and puts their tasks back to pending, without using up attempts of either kind.
//! - **Partial success.** Up to `max_failed_tasks` tasks may fail; the job then succeeds (with
//!   that many failed tasks) once every other task succeeded. One more fails it (reason
//!   `failed_task`). Always below `task_count`, so a succeeded job has a succeeded task.
//! - **Dependencies.** A job submitted `--after` others is *waiting* (pending, never placed) until
//!   the leader proposes [`Command::ResolveDependencies`](super::Command::ResolveDependencies)
//!   when every dependency is terminal: then it is released, or cancelled with reason
//!   `dependency` when an `:ok` dependency did not succeed. Dependencies must exist at submission
//!   (so there are no cycles); one deleted since (retention) counts as terminal and not succeeded.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::apply::{Cx, State};
use super::model::*;

/// Defaults and bounds of the batch policy (the API's and the CLI's too).
pub mod defaults {
    /// Lost attempts per task before it fails: generous, a rolling restart of every executor
    /// loses each running task once.
    pub const MAX_LOST: u32 = 20;
    /// Most lost attempts a spec may allow.
    pub const MAX_LOST_LIMIT: u32 = 1000;
    /// The backoff cap when none is given (the base is `retry_backoff_ms`).
    pub const BACKOFF_MAX_MS: u64 = 5 * 60 * 1000;
    /// Exit codes in each of `retry_on_exit` and `fail_on_exit`.
    pub const MAX_EXIT_CODES: usize = 64;
    /// Dependencies of one job.
    pub const MAX_DEPENDENCIES: usize = 64;
    /// Longest job deadline (one year).
    pub const MAX_DEADLINE_MS: u64 = 365 * 24 * 3600 * 1000;
    /// How far a command's `now` may be behind the time a backoff was stamped with before the
    /// backoff is taken as over (see [`super::Task::backoff_over`]).
    pub const CLOCK_SLACK_MS: u64 = 1000;
}

/// What to do with the exit code of a failed attempt, how long to back off, when the job must
/// end, how much of it runs at once and what it waits for. Part of [`JobSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPolicy {
    /// Lost attempts per task before the task fails (at least 1).
    pub max_lost: u32,
    /// When non-empty, only these exit codes are retried; any other fails the task at once.
    pub retry_on_exit: Vec<i32>,
    /// Exit codes that fail the task at once (e.g. 2 for bad arguments).
    pub fail_on_exit: Vec<i32>,
    /// Cap of the exponential backoff (the base is `JobSpec::retry_backoff_ms`); below the base
    /// it means a constant backoff of the base.
    pub backoff_max_ms: u64,
    /// The job fails (reason `deadline`) this long after its creation; 0 means never.
    pub deadline_ms: u64,
    /// Most tasks assigned or running at once; 0 means no cap.
    pub parallelism: u32,
    /// Failed tasks the job tolerates and still succeeds (below `task_count`).
    pub max_failed_tasks: u32,
    /// Jobs this one waits for.
    pub after: Vec<Dependency>,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_lost: defaults::MAX_LOST,
            retry_on_exit: Vec::new(),
            fail_on_exit: Vec::new(),
            backoff_max_ms: defaults::BACKOFF_MAX_MS,
            deadline_ms: 0,
            parallelism: 0,
            max_failed_tasks: 0,
            after: Vec::new(),
        }
    }
}

/// One dependency: `job` must end (and, with `require_success`, succeed) first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependency {
    pub job: JobId,
    /// `:ok` (true) or `:any` (false).
    pub require_success: bool,
}

/// Why a job ended the way it did (none while it runs, and for a plain success).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobReason {
    /// More tasks failed than `max_failed_tasks` allows.
    FailedTask,
    /// Its deadline passed.
    Deadline,
    /// An `:ok` dependency did not succeed.
    Dependency,
    /// A client cancelled it.
    Cancelled,
}

impl JobReason {
    /// The wire and CLI name.
    pub fn name(self) -> &'static str {
        match self {
            JobReason::FailedTask => "failed_task",
            JobReason::Deadline => "deadline",
            JobReason::Dependency => "dependency",
            JobReason::Cancelled => "cancelled",
        }
    }
}

/// A job's batch status, part of [`Job`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobBatch {
    /// Set when the job reached a terminal state for a reason other than plain success.
    pub reason: Option<JobReason>,
    /// Waiting for its dependencies (never placed meanwhile). Never set on a terminal job.
    pub waiting: bool,
    /// Suspended by a client (never placed meanwhile). Never set on a terminal job.
    pub suspended: bool,
}

impl JobBatch {
    /// The status of a job just submitted with `spec`.
    pub fn new(spec: &JobSpec) -> JobBatch {
        JobBatch { reason: None, waiting: !spec.policy.after.is_empty(), suspended: false }
    }
}

/// Derived indexes of the batch rules, never serialized (rebuilt on decode, like the tally), so
/// that the leader's duties find due deadlines, waiting and suspended jobs without a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchIndex {
    /// Non-terminal waiting jobs, by seq.
    pub(super) waiting: BTreeSet<u64>,
    /// Non-terminal suspended jobs, by seq.
    pub(super) suspended: BTreeSet<u64>,
    /// Non-terminal jobs with a deadline, as `(expiry, seq)`.
    pub(super) deadlines: BTreeSet<(Millis, u64)>,
    /// The leader's jitter draw for the command being applied ([`Command::WithJitter`]); none at
    /// rest, so it never tells two states apart.
    pub(super) jitter: Option<u32>,
}

impl BatchIndex {
    /// The indexes of `state`'s jobs, by a full walk.
    pub(super) fn rebuild(state: &State) -> BatchIndex {
        let mut b = BatchIndex::default();
        for job in state.jobs.values().filter(|j| !j.state.is_terminal()) {
            b.add(job);
        }
        b
    }

    /// Indexes a non-terminal job.
    pub(super) fn add(&mut self, job: &Job) {
        if job.batch.waiting {
            self.waiting.insert(job.seq);
        }
        if job.batch.suspended {
            self.suspended.insert(job.seq);
        }
        if let Some(at) = job.deadline() {
            self.deadlines.insert((at, job.seq));
        }
    }

    /// Forgets a job that became terminal.
    fn remove(&mut self, job: &Job) {
        self.waiting.remove(&job.seq);
        self.suspended.remove(&job.seq);
        if let Some(at) = job.deadline() {
            self.deadlines.remove(&(at, job.seq));
        }
    }
}

impl BatchPolicy {
    /// Checks the policy against its bounds and the spec's task count.
    pub fn validate(&self, task_count: u32, retry_backoff_ms: u64) -> Result<(), String> {
        use defaults::*;
        if !(1..=MAX_LOST_LIMIT).contains(&self.max_lost) {
            return Err(format!("max lost {} not in 1..={MAX_LOST_LIMIT}", self.max_lost));
        }
        for (name, codes) in [("retry", &self.retry_on_exit), ("fail", &self.fail_on_exit)] {
            if codes.len() > MAX_EXIT_CODES {
                return Err(format!(
                    "{} {name}-on-exit codes, at most {MAX_EXIT_CODES}",
                    codes.len()
                ));
            }
            if codes.contains(&0) {
                return Err(format!("{name}-on-exit lists 0, which is success"));
            }
        }
        if let Some(c) = self.retry_on_exit.iter().find(|c| self.fail_on_exit.contains(c)) {
            return Err(format!("exit code {c} is both retried and failed on"));
        }
        if self.backoff_max_ms > limits::MAX_RETRY_BACKOFF_MS {
            return Err(format!(
                "backoff cap {} ms, at most {}",
                self.backoff_max_ms,
                limits::MAX_RETRY_BACKOFF_MS
            ));
        }
        let _ = retry_backoff_ms; // a cap below the base means a constant backoff: allowed
        if self.deadline_ms > MAX_DEADLINE_MS {
            return Err(format!("deadline {} ms, at most {MAX_DEADLINE_MS}", self.deadline_ms));
        }
        if self.parallelism > limits::MAX_TASKS {
            return Err(format!("parallelism {}, at most {}", self.parallelism, limits::MAX_TASKS));
        }
        if self.max_failed_tasks >= task_count {
            return Err(format!(
                "max failed tasks {} must be below the task count {task_count}",
                self.max_failed_tasks
            ));
        }
        if self.after.len() > MAX_DEPENDENCIES {
            return Err(format!("{} dependencies, at most {MAX_DEPENDENCIES}", self.after.len()));
        }
        let distinct: BTreeSet<JobId> = self.after.iter().map(|d| d.job).collect();
        if distinct.len() != self.after.len() {
            return Err("a job is listed twice as a dependency".into());
        }
        Ok(())
    }

    /// Does a failed attempt that exited with `code` fail its task at once?
    pub fn fails_at_once(&self, code: i32) -> bool {
        self.fail_on_exit.contains(&code)
            || (!self.retry_on_exit.is_empty() && !self.retry_on_exit.contains(&code))
    }
}

/// The retry delay after a task's `bad`-th bad attempt (1-based): `min(cap, base · 2^(bad-1))`
/// scaled by `jitter / 2^32` (full jitter), or the bound itself without a draw. A cap below the
/// base gives a constant `base`.
pub fn backoff_ms(base: u64, cap: u64, bad: u32, jitter: Option<u32>) -> u64 {
    let cap = cap.max(base);
    let shift = bad.saturating_sub(1).min(63);
    let bound = base.checked_shl(shift).filter(|b| b >> shift == base).unwrap_or(u64::MAX).min(cap);
    match jitter {
        None => bound,
        Some(j) => ((u128::from(bound) * u128::from(j)) >> 32) as u64,
    }
}

impl Task {
    /// Failed attempts so far (they count against `max_attempts`).
    pub fn failures(&self) -> u32 {
        self.attempts.iter().filter(|a| a.state == AttemptState::Failed).count() as u32
    }

    /// Lost attempts so far (they count against `max_lost`).
    pub fn losses(&self) -> u32 {
        self.attempts.iter().filter(|a| a.state == AttemptState::Lost).count() as u32
    }

    /// Is the retry backoff over at `now` (the time of an assignment, from the leader)?
    ///
    /// Why this cannot stall a task: `not_before` is `backoff_from + delay`, both in the clock of
    /// the master that stamped the failure, and `now` comes from the leader placing the task.
    /// The backoff is over when `now` reached `not_before`, **or** when `now` is more than
    /// [`defaults::CLOCK_SLACK_MS`] *before* `backoff_from`: then the placing clock is behind the
    /// stamping one (a new leader whose clock lags, or a wall clock stepped back on this master)
    /// and elapsed time cannot be measured, so the task is let go rather than held for the size
    /// of the skew. A clock stepped forward on the stamping master only makes `not_before` look
    /// further away than it is to a leader whose clock is right, which the same rule lets go, and
    /// on the leader itself it only shortens the delay. So a clock fault can shorten a backoff
    /// (a hint), never lengthen it beyond `delay + CLOCK_SLACK_MS`. Deadlines, by contrast, are
    /// absolute (`created_at + deadline_ms` against the leader's `now`): a leader whose clock is
    /// ahead ends jobs early by its skew, which is why they are proposed by the leader only and
    /// checked against the command's own `now`.
    pub fn backoff_over(&self, now: Millis) -> bool {
        now >= self.not_before || now.saturating_add(defaults::CLOCK_SLACK_MS) < self.backoff_from
    }
}

impl Job {
    /// When the job's deadline passes, if it has one.
    pub fn deadline(&self) -> Option<Millis> {
        let d = self.spec.policy.deadline_ms;
        (d > 0).then(|| self.created_at.saturating_add(d))
    }

    /// May tasks of this job be placed (not terminal, not waiting, not suspended)?
    pub fn placeable(&self) -> bool {
        !self.state.is_terminal() && !self.batch.waiting && !self.batch.suspended
    }
}

impl Command {
    /// This command with the leader's jitter draw for any retry backoff it causes (commands
    /// that cause none apply exactly as without it).
    pub fn with_jitter(self, jitter: u32) -> Command {
        match self {
            c @ Command::WithJitter { .. } => c,
            c => Command::WithJitter { jitter, command: Box::new(c) },
        }
    }
}

// --- apply: the batch commands ---------------------------------------------------------------

impl State {
    /// `SuspendJob`: no more placements; live attempts are cancelled and their tasks pending
    /// again, with no attempt used up.
    pub(super) fn suspend_job(&mut self, id: JobId, now: Millis) -> Result<Outcome, Rejection> {
        let seq = *self.job_seqs.get(&id).ok_or(Rejection::JobNotFound(id))?;
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(id))?;
        if cx.job.state.is_terminal() {
            return Err(Rejection::JobTerminal(id));
        }
        if cx.job.batch.suspended {
            return Ok(Outcome::Done);
        }
        cx.job.batch.suspended = true;
        cx.batch.suspended.insert(seq);
        for i in 0..cx.job.tasks.len() {
            if cx.job.tasks[i].state.is_live() {
                cx.set_attempt(i, AttemptState::Cancelled, None, Some("job suspended"));
                cx.set_task(i, TaskState::Pending);
            }
        }
        cx.job.updated_at = now;
        Ok(Outcome::Done)
    }

    /// `ResumeJob`: placements again.
    pub(super) fn resume_job(&mut self, id: JobId, now: Millis) -> Result<Outcome, Rejection> {
        let seq = *self.job_seqs.get(&id).ok_or(Rejection::JobNotFound(id))?;
        let cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(id))?;
        if cx.job.state.is_terminal() {
            return Err(Rejection::JobTerminal(id));
        }
        if cx.job.batch.suspended {
            cx.job.batch.suspended = false;
            cx.batch.suspended.remove(&seq);
            cx.job.updated_at = now;
        }
        Ok(Outcome::Done)
    }

    /// `ExpireJob`: the deadline passed (by `now`); the job fails with reason `deadline`.
    pub(super) fn expire_job(&mut self, id: JobId, now: Millis) -> Result<Outcome, Rejection> {
        let seq = *self.job_seqs.get(&id).ok_or(Rejection::JobNotFound(id))?;
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(id))?;
        if cx.job.state.is_terminal() {
            return Ok(Outcome::Done); // ended meanwhile (or a repeat)
        }
        match cx.job.deadline() {
            Some(at) if at <= now => {}
            Some(at) => {
                return Err(Rejection::NotDue(format!("job {id} deadline {at} after {now}")))
            }
            None => return Err(Rejection::NotDue(format!("job {id} has no deadline"))),
        }
        cx.job.batch.reason = Some(JobReason::Deadline);
        cx.set_job(JobState::Failed);
        Ok(Outcome::Done)
    }

    /// `ResolveDependencies`: every dependency is terminal (or deleted); release the job, or
    /// cancel it (reason `dependency`) when an `:ok` one did not succeed.
    pub(super) fn resolve_dependencies(
        &mut self,
        id: JobId,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let seq = *self.job_seqs.get(&id).ok_or(Rejection::JobNotFound(id))?;
        let job = self.jobs.get(&seq).ok_or(Rejection::JobNotFound(id))?;
        if job.state.is_terminal() || !job.batch.waiting {
            return Ok(Outcome::Done);
        }
        let mut unmet = false;
        for d in &job.spec.policy.after {
            match self.dependency(job, &d.job) {
                Some(dep) if !dep.state.is_terminal() => {
                    return Err(Rejection::NotDue(format!("job {id} still waits for {}", d.job)));
                }
                Some(dep) => unmet |= d.require_success && dep.state != JobState::Succeeded,
                // Deleted by retention: its tombstone (while it lasts) says how it ended.
                None => {
                    let ended_ok =
                        self.tombstones.get(&d.job).is_some_and(|t| t.state == JobState::Succeeded);
                    unmet |= d.require_success && !ended_ok;
                }
            }
        }
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(id))?;
        if unmet {
            cx.job.batch.reason = Some(JobReason::Dependency);
            cx.set_job(JobState::Cancelled);
        } else {
            cx.job.batch.waiting = false;
            cx.batch.waiting.remove(&seq);
            cx.job.updated_at = now;
        }
        Ok(Outcome::Done)
    }

    /// `WithJitter`: applies `inner` with the leader's jitter draw for any backoff it causes.
    pub(super) fn with_jitter(
        &mut self,
        jitter: u32,
        inner: &Command,
    ) -> Result<Outcome, Rejection> {
        if matches!(inner, Command::WithJitter { .. }) {
            return Err(Rejection::InvalidSpec("a jittered command inside another".into()));
        }
        self.batch.jitter = Some(jitter);
        let r = self.apply(inner);
        self.batch.jitter = None;
        r
    }

    /// Checks a submission's dependencies: each must name an existing job.
    pub(super) fn check_dependencies(&self, spec: &JobSpec) -> Result<(), Rejection> {
        match spec.policy.after.iter().find(|d| !self.job_seqs.contains_key(&d.job)) {
            Some(d) => Err(Rejection::DependencyNotFound(d.job)),
            None => Ok(()),
        }
    }

    /// Refuses placing a task of `job` that its batch status or parallelism does not allow.
    pub(super) fn check_placeable(&self, job: &Job) -> Result<(), Rejection> {
        if job.batch.waiting || job.batch.suspended {
            let why = if job.batch.waiting { "waiting for dependencies" } else { "suspended" };
            return Err(Rejection::NotDue(format!("job {} is {why}", job.id)));
        }
        if job_headroom(job, self.active.get(&job.seq)) == 0 {
            return Err(Rejection::NotDue(format!(
                "job {} already runs its parallelism of {}",
                job.id, job.spec.policy.parallelism
            )));
        }
        Ok(())
    }
}

/// How many more tasks of `job` may be assigned now under its parallelism (`u32::MAX`: no cap).
fn job_headroom(job: &Job, counts: Option<&TaskCounts>) -> u32 {
    match job.spec.policy.parallelism {
        0 => u32::MAX,
        p => p.saturating_sub(counts.map_or(0, |c| c.assigned + c.running)),
    }
}

// --- apply: what happens to a task after a bad attempt, and when a job is done ---------------

impl Cx<'_> {
    /// After the current attempt of task `i` failed with `exit_code`: retry after the backoff
    /// unless the code fails at once or no failed attempts remain.
    pub(super) fn after_failure(&mut self, i: usize, exit_code: i32) {
        let failures = self.job.tasks.get(i).map_or(0, Task::failures);
        let spec = &self.job.spec;
        if spec.policy.fails_at_once(exit_code) || failures >= spec.max_attempts {
            self.fail_task(i);
        } else {
            self.retry(i);
        }
    }

    /// After the current attempt of task `i` was lost: retry unless no lost attempts remain.
    pub(super) fn after_loss(&mut self, i: usize) {
        let losses = self.job.tasks.get(i).map_or(0, Task::losses);
        if losses >= self.job.spec.policy.max_lost {
            self.fail_task(i);
        } else {
            self.retry(i);
        }
    }

    /// Back to `Pending` after the backoff (see [`backoff_ms`] and [`Task::backoff_over`]).
    fn retry(&mut self, i: usize) {
        let Some(t) = self.job.tasks.get_mut(i) else { return };
        let bad = t.failures() + t.losses();
        let spec = &self.job.spec;
        let delay =
            backoff_ms(spec.retry_backoff_ms, spec.policy.backoff_max_ms, bad, self.batch.jitter);
        t.backoff_from = self.now;
        t.not_before = self.now.saturating_add(delay);
        self.set_task(i, TaskState::Pending);
    }

    /// The task fails for good; the job fails with it beyond `max_failed_tasks`, and may be done.
    fn fail_task(&mut self, i: usize) {
        self.set_task(i, TaskState::Failed);
        let failed = self.active.get(&self.job.seq).map_or(0, |c| c.failed);
        if failed > self.job.spec.policy.max_failed_tasks {
            self.job.batch.reason = Some(JobReason::FailedTask);
            self.set_job(JobState::Failed);
        } else {
            self.finish_if_done();
        }
    }

    /// Every task succeeded, or failed within `max_failed_tasks`: the job succeeds.
    pub(super) fn finish_if_done(&mut self) {
        let n = self.job.tasks.len() as u32;
        let done = self.active.get(&self.job.seq).is_some_and(|c| c.succeeded + c.failed == n);
        if done && self.job.state == JobState::Running {
            self.set_job(JobState::Succeeded);
        }
    }

    /// Keeps the batch indexes in step when the job became terminal (from `set_job`).
    pub(super) fn batch_job_ended(&mut self) {
        self.batch.remove(self.job);
        self.job.batch.waiting = false;
        self.job.batch.suspended = false;
    }
}

// --- queries for the leader's duties and the API ---------------------------------------------

impl State {
    /// Non-terminal jobs whose deadline is at or before `now`, earliest first.
    pub fn deadlines_due(&self, now: Millis) -> impl Iterator<Item = &Job> + '_ {
        self.batch
            .deadlines
            .range(..=(now, u64::MAX))
            .filter_map(|(_, seq)| self.jobs.get(seq).map(|j| &**j))
    }

    /// Waiting jobs whose every dependency is terminal (or deleted): ready to resolve.
    pub fn dependencies_resolvable(&self) -> impl Iterator<Item = &Job> + '_ {
        self.batch.waiting.iter().filter_map(|seq| self.jobs.get(seq).map(|j| &**j)).filter(|j| {
            j.spec
                .policy
                .after
                .iter()
                .all(|d| self.dependency(j, &d.job).is_none_or(|d| d.state.is_terminal()))
        })
    }

    /// Suspended jobs, by seq.
    pub fn suspended_jobs(&self) -> impl Iterator<Item = &Job> + '_ {
        self.batch.suspended.iter().filter_map(|seq| self.jobs.get(seq).map(|j| &**j))
    }

    /// The dependencies `job` still waits for (not yet terminal), in the order given.
    pub fn waiting_on(&self, job: &Job) -> Vec<JobId> {
        if !job.batch.waiting {
            return Vec::new();
        }
        job.spec
            .policy
            .after
            .iter()
            .filter(|d| self.dependency(job, &d.job).is_some_and(|d| !d.state.is_terminal()))
            .map(|d| d.job)
            .collect()
    }

    /// Dependency `id` of `job`, if it is still in the state: a job under that id submitted
    /// after `job` is not it (the dependency was deleted by retention and the id used again).
    pub(super) fn dependency(&self, job: &Job, id: &JobId) -> Option<&Job> {
        self.job(id).filter(|d| d.seq < job.seq)
    }

    /// How many more tasks of `job` may be assigned now (`u32::MAX`: no parallelism cap).
    pub fn headroom(&self, job: &Job) -> u32 {
        job_headroom(job, self.active.get(&job.seq))
    }
}
