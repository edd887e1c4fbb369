//! [`State`] and [`State::apply`]: the only code that changes replicated state.
//!
//! `apply` dispatches each [`Command`] variant to one small function (one exhaustive match, in
//! the style of Nomad's `fsm.go`). Every such function first *validates*, returning a
//! [`Rejection`] with the state untouched, and only then *mutates*; the mutation steps cannot
//! fail. All task, attempt and job state changes go through [`Cx`], which checks each change
//! against the transition tables in `model.rs` and keeps the derived indexes in step, so no code
//! path can move a terminal state or forget an index. Executor state changes go through
//! `set_executor` (and registration), which keep the executors' [`Tally`] in step likewise.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::events::{Change, Journal};
use super::model::*;
use super::policy::BatchIndex;
use super::retention::RetentionIndex;

/// The ordered map every part of [`State`] is kept in: a persistent B-tree (`imbl`), so that
/// cloning a state of any size is O(1) (it shares every node; a change afterwards copies only the
/// path it touches). A snapshot encodes such a clone with no lock held, so apply never waits for
/// it (it did, 0.7-2.5 s at 10^6 jobs, when the encode held the state's read lock). Ordered, and
/// encoded exactly like `BTreeMap` (length, then the entries in key order), so replicas still
/// serialize to identical bytes and snapshots keep their format.
pub type Map<K, V> = imbl::OrdMap<K, V>;
/// The ordered set counterpart of [`Map`] (encoded like `BTreeSet`).
pub type Set<T> = imbl::OrdSet<T>;

/// Live attempts by executor, as `(job seq, task index)`. Derived from the jobs and kept so that
/// placement (used resources) and executor loss touch only that executor's attempts.
pub(super) type LiveIndex = Map<ExecutorId, Set<(u64, u32)>>;

/// Job seqs by job state ([`State::by_state`]).
pub(super) type ByState = [Set<u64>; JobState::ALL.len()];

/// Moves job `seq` from `from` (none: a new job) to `to` in a [`ByState`] index.
pub(super) fn index_job_state(by: &mut ByState, seq: u64, from: Option<JobState>, to: JobState) {
    if let Some(f) = from.and_then(|f| by.get_mut(f as usize)) {
        f.remove(&seq);
    }
    if let Some(t) = by.get_mut(to as usize) {
        t.insert(seq);
    }
}

/// The [`ByState`] index of `jobs`, by a walk of them.
pub(super) fn by_state_of(jobs: &Map<u64, Arc<Job>>) -> ByState {
    let mut by = ByState::default();
    for (&seq, job) in jobs {
        index_job_state(&mut by, seq, None, job.state);
    }
    by
}

/// The whole replicated state of a triad cluster. Only ordered maps, so that two replicas that
/// applied the same commands serialize to the same bytes.
///
/// Decoded through [`Decoded`], which recounts the [`Tally`]: see there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Decoded")]
pub struct State {
    pub(super) executors: Map<ExecutorId, Executor>,
    /// Jobs by submission sequence number (the listing order). Each job behind an `Arc`, so that
    /// the map's nodes (copied when a change meets a node a snapshot still shares) copy pointers,
    /// not jobs; a job a snapshot shares is copied once, by the first change to it after.
    pub(super) jobs: Map<u64, Arc<Job>>,
    /// Job id -> seq.
    pub(super) job_seqs: Map<JobId, u64>,
    /// Non-empty idempotency key -> the one job it created.
    pub(super) idempotency: Map<String, JobId>,
    /// Seq of the next submitted job (starts at 1).
    pub(super) next_seq: u64,
    /// Fencing token of the next assignment (starts at 1; 0 means "no attempt yet").
    pub(super) next_token: Token,
    /// Derived: non-terminal jobs by seq, with their task counts (so completion is O(1), not a
    /// scan of up to 100,000 tasks per report).
    pub(super) active: Map<u64, TaskCounts>,
    /// Derived: see [`LiveIndex`]. Never holds an empty set, so it is canonical.
    pub(super) live: LiveIndex,
    /// Derived: terminal jobs as `(finished_at, seq)`, so the dispatcher finds recently
    /// cancelled attempts to kill without scanning every job.
    pub(super) finished: Set<(Millis, u64)>,
    /// Derived and never serialized (rebuilt on decode, like the tally): job seqs by job state,
    /// indexed by `JobState as usize`, so a listing filtered by a state walks only the jobs in
    /// it (a filter by a terminal state used to pass over every job to fill a page).
    #[serde(skip)]
    pub(super) by_state: ByState,
    /// Cron jobs by name (`state::cron`).
    pub(super) crons: Map<String, Cron>,
    /// Retention (issue 14): deleted jobs' tombstones, while their idempotency window lasts.
    pub(super) tombstones: Map<JobId, super::retention::Tombstone>,
    /// Retention: the highest epoch of any executor forgotten; a new registration starts above.
    pub(super) epoch_floor: u64,
    /// Derived and never serialized: see [`Tally`].
    #[serde(skip)]
    pub(super) tally: Tally,
    /// Derived and never serialized (rebuilt on decode): see [`RetentionIndex`].
    #[serde(skip)]
    pub(super) retention: RetentionIndex,
    /// Local bookkeeping, not replicated state: see [`ChangeCounter`].
    #[serde(skip)]
    pub(super) executor_changes: ChangeCounter,
    /// Local bookkeeping, not replicated state: the changes of the commands applied since the
    /// store last drained them (see `state::events`).
    #[serde(skip)]
    pub(super) journal: Journal,
    /// Derived and never serialized: deadlines, waiting and suspended jobs (`policy.rs`).
    #[serde(skip)]
    pub(super) batch: BatchIndex,
}

/// [`State`] as it is encoded: every serialized field, in the same order (a field added to
/// `State` and not here fails to compile in `From`; one out of order fails the round-trip tests).
///
/// The tally is derived, so it is recounted on decode rather than written: a snapshot keeps the
/// exact encoding of the versions before the tally existed (bincode is positional, so a new field
/// would make every existing data dir unreadable), and replicas agree on it by construction.
/// The recount is one walk of the jobs and tasks, which decoding them costs anyway.
#[derive(Deserialize)]
struct Decoded {
    executors: Map<ExecutorId, Executor>,
    jobs: Map<u64, Arc<Job>>,
    job_seqs: Map<JobId, u64>,
    idempotency: Map<String, JobId>,
    next_seq: u64,
    next_token: Token,
    active: Map<u64, TaskCounts>,
    live: LiveIndex,
    finished: Set<(Millis, u64)>,
    crons: Map<String, Cron>,
    tombstones: Map<JobId, super::retention::Tombstone>,
    epoch_floor: u64,
}

impl From<Decoded> for State {
    fn from(d: Decoded) -> State {
        let retention = RetentionIndex::rebuild(&d.jobs, &d.tombstones);
        let mut state = State {
            executors: d.executors,
            jobs: d.jobs,
            job_seqs: d.job_seqs,
            idempotency: d.idempotency,
            next_seq: d.next_seq,
            next_token: d.next_token,
            active: d.active,
            live: d.live,
            finished: d.finished,
            by_state: ByState::default(),
            crons: d.crons,
            retention,
            tombstones: d.tombstones,
            epoch_floor: d.epoch_floor,
            tally: Tally::default(),
            executor_changes: ChangeCounter::default(),
            journal: Journal::default(),
            batch: BatchIndex::default(),
        };
        state.tally = Tally::recount(&state);
        state.by_state = by_state_of(&state.jobs);
        state.batch = BatchIndex::rebuild(&state);
        state
    }
}

/// Derived: how many jobs, tasks and executors are in each state, kept in step by every change
/// (`Cx`, `set_executor`, registration and submission) so that the metrics gauges read sixteen
/// numbers instead of walking every task of every job under the state lock.
///
/// A function of the rest of the state, so it is part of the state's equality (two states equal
/// in everything else have equal tallies unless the upkeep is wrong, which equality then shows)
/// but not of its encoding (see [`Decoded`]). `check_invariants` compares it with a recount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Indexed by `JobState as usize`.
    jobs: [u64; JobState::ALL.len()],
    /// Indexed by `TaskState as usize`.
    tasks: [u64; TaskState::ALL.len()],
    /// Indexed by `ExecutorState as usize`.
    executors: [u64; ExecutorState::ALL.len()],
}

impl Tally {
    /// Jobs in state `s`.
    pub fn jobs(&self, s: JobState) -> u64 {
        self.jobs.get(s as usize).copied().unwrap_or(0)
    }

    /// Tasks in state `s`, over every job.
    pub fn tasks(&self, s: TaskState) -> u64 {
        self.tasks.get(s as usize).copied().unwrap_or(0)
    }

    /// Executors in state `s`.
    pub fn executors(&self, s: ExecutorState) -> u64 {
        self.executors.get(s as usize).copied().unwrap_or(0)
    }

    /// The tally of `state` by a full walk: what the upkeep must always equal.
    pub(super) fn recount(state: &State) -> Tally {
        let mut t = Tally::default();
        for e in state.executors.values() {
            t.executor_moved(None, e.state);
        }
        for job in state.jobs.values() {
            t.job_moved(None, job.state);
            for task in &job.tasks {
                add(&mut t.tasks, task.state as usize, 1);
            }
        }
        t
    }

    fn job_moved(&mut self, from: Option<JobState>, to: JobState) {
        moved(&mut self.jobs, from.map(|s| s as usize), to as usize);
    }

    fn task_moved(&mut self, from: TaskState, to: TaskState) {
        moved(&mut self.tasks, Some(from as usize), to as usize);
    }

    fn tasks_added(&mut self, to: TaskState, n: u32) {
        add(&mut self.tasks, to as usize, n.into());
    }

    fn executor_moved(&mut self, from: Option<ExecutorState>, to: ExecutorState) {
        moved(&mut self.executors, from.map(|s| s as usize), to as usize);
    }

    /// Retention: a job and its tasks left the state.
    pub(super) fn job_removed(&mut self, job: &Job) {
        sub(&mut self.jobs, job.state as usize, 1);
        for t in &job.tasks {
            sub(&mut self.tasks, t.state as usize, 1);
        }
    }

    /// Retention: an executor was forgotten.
    pub(super) fn executor_removed(&mut self, state: ExecutorState) {
        sub(&mut self.executors, state as usize, 1);
    }
}

/// Takes `n` from `counts[i]` (saturating, like [`add`]).
fn sub(counts: &mut [u64], i: usize, n: u64) {
    if let Some(c) = counts.get_mut(i) {
        *c = c.saturating_sub(n);
    }
}

/// Adds `n` to `counts[i]`. (`i` is a state's discriminant and the array has one count per
/// state, so it is always in range; `get_mut` keeps apply panic-free regardless.)
fn add(counts: &mut [u64], i: usize, n: u64) {
    if let Some(c) = counts.get_mut(i) {
        *c = c.saturating_add(n);
    }
}

/// Moves one count from `from` (none: a new entry) to `to`. Saturating, so apply never panics;
/// `check_invariants` catches a count the upkeep got wrong.
fn moved(counts: &mut [u64], from: Option<usize>, to: usize) {
    if let Some(f) = from.and_then(|f| counts.get_mut(f)) {
        *f = f.saturating_sub(1);
    }
    add(counts, to, 1);
}

/// Counts applied commands that may change what placement sees of the executors (their records
/// or their loads): every command but a submission. The leader re-plans the whole backlog when it
/// moves and nothing else when it does not, without looking at each executor.
///
/// Not part of the state's identity: replicas that restored from a snapshot and replicas that
/// replayed the log count differently, so it is never serialized and compares equal always.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangeCounter(pub u64);

impl PartialEq for ChangeCounter {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ChangeCounter {}

impl Default for State {
    fn default() -> Self {
        State {
            executors: Map::new(),
            jobs: Map::new(),
            job_seqs: Map::new(),
            idempotency: Map::new(),
            next_seq: 1,
            next_token: 1,
            active: Map::new(),
            live: Map::new(),
            finished: Set::new(),
            by_state: ByState::default(),
            crons: Map::new(),
            tombstones: Map::new(),
            epoch_floor: 0,
            retention: RetentionIndex::default(),
            tally: Tally::default(),
            executor_changes: ChangeCounter::default(),
            journal: Journal::default(),
            batch: BatchIndex::default(),
        }
    }
}

/// Builds the rejection for a transition an FSM does not allow.
fn illegal<S: std::fmt::Debug>(what: &str, from: S, to: S) -> Rejection {
    Rejection::IllegalTransition { from: format!("{what} {from:?}"), to: format!("{what} {to:?}") }
}

/// Cuts a reported error to [`limits::MAX_ERROR_BYTES`] at a char boundary, so executors cannot
/// grow the replicated state without bound.
fn clip(s: &str) -> String {
    let mut end = s.len().min(limits::MAX_ERROR_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl State {
    #[cfg(test)]
    pub fn new() -> State {
        State::default()
    }

    /// Applies one command. Deterministic: depends only on `self` and `cmd`. A rejected command
    /// leaves the state exactly as it was.
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, Rejection> {
        if !matches!(cmd, Command::SubmitJob { .. }) {
            self.executor_changes.0 += 1;
        }
        match cmd {
            Command::RegisterExecutor { id, addr, capacity, labels, now } => {
                Ok(self.register_executor(id, addr, *capacity, labels, *now))
            }
            Command::DrainExecutor { id, now } => self.drain_executor(id, *now),
            Command::DeregisterExecutor { id, now } => self.deregister_executor(id, *now),
            Command::ExecutorDead { id, epoch, now } => self.executor_dead(id, *epoch, *now),
            Command::SubmitJob { id, name, idempotency_key, spec, now } => {
                self.submit_job(*id, name, idempotency_key, spec, *now)
            }
            Command::CancelJob { id, now } => self.cancel_job(*id, *now),
            Command::AssignTasks { assignments, now } => Ok(Outcome::Assigned {
                tokens: assignments.iter().map(|a| self.assign(a, *now)).collect(),
            }),
            Command::TaskStarted { job, index, token, now } => {
                self.task_started(*job, *index, *token, *now)
            }
            Command::TaskFinished { job, index, token, exit_code, error, now } => {
                self.task_finished(*job, *index, *token, *exit_code, error.as_deref(), *now)
            }
            Command::TaskLost { job, index, token, reason, now } => {
                self.task_lost(*job, *index, *token, reason, *now)
            }
            Command::TaskReported { job, index, token, executor, report, now } => {
                self.task_reported(*job, *index, *token, executor, report, *now)
            }
            Command::DeregisterExecutorAt { id, epoch, now } => {
                self.deregister_at(id, *epoch, *now)
            }
            // Cron (issue 17): `state::cron`.
            Command::CreateCron { spec, now } => self.create_cron(spec, *now),
            Command::DeleteCron { name, .. } => self.delete_cron(name),
            Command::SuspendCron { name, suspended, now } => {
                self.suspend_cron(name, *suspended, *now)
            }
            Command::FireCron { name, scheduled_at, job, now } => {
                self.fire_cron(name, *scheduled_at, *job, *now)
            }
            Command::CollectGarbage { jobs, tombstones, executors, cron_runs, policy, now } => {
                let mut c = self.collect_garbage(jobs, tombstones, executors, policy, *now);
                c.jobs.extend(self.collect_cron_runs(cron_runs, policy, *now));
                Ok(Outcome::Collected(c))
            }
            Command::DeleteJob { id, policy, now } => self.delete_job(*id, policy, *now),
            Command::TriggerCron { name, job, now } => self.trigger_cron(name, *job, *now),
            Command::SuspendJob { id, now } => self.suspend_job(*id, *now),
            Command::ResumeJob { id, now } => self.resume_job(*id, *now),
            Command::ExpireJob { id, now } => self.expire_job(*id, *now),
            Command::ResolveDependencies { id, now } => self.resolve_dependencies(*id, *now),
            Command::WithJitter { jitter, command } => self.with_jitter(*jitter, command),
        }
    }

    /// The changes recorded since the last call, in the order apply made them (the store calls
    /// it after every entry; see `state::events`).
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.journal.0)
    }

    // --- executors ------------------------------------------------------------------------

    fn register_executor(
        &mut self,
        id: &str,
        addr: &str,
        capacity: Resources,
        labels: &BTreeMap<String, String>,
        now: Millis,
    ) -> Outcome {
        // Above every epoch of an incarnation retention forgot (`epoch_floor`, 0 until then).
        let epoch = self
            .executors
            .get(id)
            .map_or(self.epoch_floor.saturating_add(1), |e| e.epoch.saturating_add(1));
        // A registration means the executor process (re)started: what it ran before is gone.
        self.lose_attempts_on(id, &format!("executor {id} re-registered (epoch {epoch})"), now);
        let from = self.executors.get(id).map(|e| e.state);
        self.tally.executor_moved(from, ExecutorState::Alive);
        let to = ExecutorState::Alive;
        self.journal.push(Change::Executor { id: id.to_string(), from, to, epoch });
        let ex = Executor {
            id: id.to_string(),
            addr: addr.to_string(),
            capacity,
            labels: labels.clone(),
            state: ExecutorState::Alive,
            epoch,
            registered_at: now,
            updated_at: now,
        };
        self.executors.insert(id.to_string(), ex);
        Outcome::Registered { epoch }
    }

    fn drain_executor(&mut self, id: &str, now: Millis) -> Result<Outcome, Rejection> {
        self.set_executor(id, ExecutorState::Draining, now)?;
        Ok(Outcome::Done)
    }

    fn deregister_executor(&mut self, id: &str, now: Millis) -> Result<Outcome, Rejection> {
        if self.set_executor(id, ExecutorState::Left, now)? {
            self.lose_attempts_on(id, &format!("executor {id} left"), now);
        }
        Ok(Outcome::Done)
    }

    /// `deregister_executor`, only for the executor's current registration.
    fn deregister_at(&mut self, id: &str, epoch: u64, now: Millis) -> Result<Outcome, Rejection> {
        let ex =
            self.executors.get(id).ok_or_else(|| Rejection::ExecutorNotFound(id.to_string()))?;
        if epoch != ex.epoch {
            return Err(Rejection::StaleEpoch { got: epoch, current: ex.epoch });
        }
        self.deregister_executor(id, now)
    }

    fn executor_dead(&mut self, id: &str, epoch: u64, now: Millis) -> Result<Outcome, Rejection> {
        let ex =
            self.executors.get(id).ok_or_else(|| Rejection::ExecutorNotFound(id.to_string()))?;
        // The monitor judged a particular incarnation; if the executor re-registered since, the
        // verdict is about a process that is already gone and accounted for.
        if epoch != ex.epoch {
            return Err(Rejection::StaleEpoch { got: epoch, current: ex.epoch });
        }
        if matches!(ex.state, ExecutorState::Left) {
            return Ok(Outcome::Done); // it left cleanly; nothing more to lose
        }
        if self.set_executor(id, ExecutorState::Dead, now)? {
            self.lose_attempts_on(id, &format!("executor {id} declared dead (epoch {epoch})"), now);
        }
        Ok(Outcome::Done)
    }

    /// Moves an executor to `to` through the executor FSM. Returns false when it already was in
    /// `to` (idempotent repeat, nothing changed).
    fn set_executor(
        &mut self,
        id: &str,
        to: ExecutorState,
        now: Millis,
    ) -> Result<bool, Rejection> {
        let ex = self
            .executors
            .get_mut(id)
            .ok_or_else(|| Rejection::ExecutorNotFound(id.to_string()))?;
        if ex.state == to {
            return Ok(false);
        }
        if !ex.state.can_transition(to) {
            return Err(illegal("executor", ex.state, to));
        }
        self.tally.executor_moved(Some(ex.state), to);
        let (from, epoch) = (Some(ex.state), ex.epoch);
        ex.state = to;
        ex.updated_at = now;
        self.journal.push(Change::Executor { id: id.to_string(), from, to, epoch });
        Ok(true)
    }

    /// Applies the lose rule to every live attempt held by `executor`.
    fn lose_attempts_on(&mut self, executor: &str, reason: &str, now: Millis) {
        let held: Vec<(u64, u32)> =
            self.live.get(executor).map(|s| s.iter().copied().collect()).unwrap_or_default();
        for (seq, index) in held {
            let Some(mut cx) = self.cx(seq, now) else { continue };
            // An earlier loss in this loop may have failed the job and cancelled this task.
            let still_here = cx
                .job
                .task(index)
                .and_then(Task::current)
                .is_some_and(|a| a.state.is_live() && a.executor == executor);
            if still_here {
                cx.lose(index as usize, reason);
            }
        }
    }

    // --- jobs -----------------------------------------------------------------------------

    pub(super) fn submit_job(
        &mut self,
        id: JobId,
        name: &str,
        key: &str,
        spec: &JobSpec,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        // The key check comes first: a retried submission must get the original answer even if
        // the leader chose a fresh id for it.
        if let Some(&existing) = self.idempotency.get(key).filter(|_| !key.is_empty()) {
            return Ok(Outcome::Submitted { id: existing, created: false });
        }
        validate_submit(name, key, spec).map_err(Rejection::InvalidSpec)?;
        if self.job_seqs.contains_key(&id) || self.tombstones.contains_key(&id) {
            return Err(Rejection::DuplicateJobId(id));
        }
        self.check_dependencies(spec)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let tasks = (0..spec.task_count)
            .map(|index| Task {
                index,
                state: TaskState::Pending,
                not_before: now,
                backoff_from: now,
                attempts: Vec::new(),
            })
            .collect();
        let job = Job {
            id,
            seq,
            name: name.to_string(),
            idempotency_key: key.to_string(),
            spec: spec.clone(),
            state: JobState::Pending,
            created_at: now,
            updated_at: now,
            finished_at: None,
            tasks,
            batch: JobBatch::new(spec),
        };
        self.batch.add(&job);
        self.active.insert(seq, TaskCounts { pending: spec.task_count, ..TaskCounts::default() });
        self.tally.job_moved(None, JobState::Pending);
        index_job_state(&mut self.by_state, seq, None, JobState::Pending);
        self.tally.tasks_added(TaskState::Pending, spec.task_count);
        self.jobs.insert(seq, Arc::new(job));
        self.job_seqs.insert(id, seq);
        self.journal.push(Change::Job { job: id, from: None, to: JobState::Pending });
        if !key.is_empty() {
            self.idempotency.insert(key.to_string(), id);
        }
        Ok(Outcome::Submitted { id, created: true })
    }

    pub(super) fn cancel_job(&mut self, id: JobId, now: Millis) -> Result<Outcome, Rejection> {
        let seq = *self.job_seqs.get(&id).ok_or(Rejection::JobNotFound(id))?;
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(id))?;
        match cx.job.state {
            JobState::Cancelled => Ok(Outcome::Done),
            s if s.is_terminal() => Err(Rejection::JobTerminal(id)),
            _ => {
                cx.job.batch.reason = Some(JobReason::Cancelled);
                cx.set_job(JobState::Cancelled);
                Ok(Outcome::Done)
            }
        }
    }

    // --- tasks ----------------------------------------------------------------------------

    /// One placement: every check first, then a fresh token and a new attempt.
    fn assign(&mut self, a: &Assignment, now: Millis) -> Result<Token, Rejection> {
        let (seq, i) = self.locate(a.job, a.index)?;
        let job = self.jobs.get(&seq).ok_or(Rejection::JobNotFound(a.job))?;
        if job.state.is_terminal() {
            return Err(Rejection::JobTerminal(a.job));
        }
        let task = &job.tasks[i];
        if task.state != TaskState::Pending {
            return Err(illegal("task", task.state, TaskState::Assigned));
        }
        if !task.backoff_over(now) {
            return Err(Rejection::IllegalTransition {
                from: format!("task Pending (backoff until {})", task.not_before),
                to: "task Assigned".into(),
            });
        }
        self.check_placeable(job)?;
        let ex = self
            .executors
            .get(&a.executor)
            .ok_or_else(|| Rejection::ExecutorNotFound(a.executor.clone()))?;
        if ex.state != ExecutorState::Alive || !ex.satisfies(&job.spec.constraints) {
            return Err(Rejection::ExecutorUnavailable(a.executor.clone()));
        }
        if !self.used_resources(&a.executor).fits_with(job.spec.resources, ex.capacity) {
            return Err(Rejection::NoCapacity(a.executor.clone()));
        }

        let token = self.next_token;
        // 2^64 assignments will not happen; saturating keeps apply panic-free regardless.
        self.next_token = self.next_token.saturating_add(1);
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(a.job))?;
        let task = &mut cx.job.tasks[i];
        // Exactly one more: a first push would reserve room for four attempts (~340 bytes more
        // than one takes, per one-task job, for ever), and most tasks need one.
        task.attempts.reserve_exact(1);
        task.attempts.push(Attempt {
            number: task.attempts.len() as u32 + 1,
            token,
            executor: a.executor.clone(),
            state: AttemptState::Assigned,
            assigned_at: now,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
        });
        cx.set_task(i, TaskState::Assigned);
        Ok(token)
    }

    fn task_started(
        &mut self,
        job: JobId,
        index: u32,
        token: Token,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let (seq, i, state) = self.fenced(job, index, token)?;
        match state {
            AttemptState::Running => return Ok(Outcome::Done), // duplicate report
            AttemptState::Assigned => {}
            s => return Err(illegal("attempt", s, AttemptState::Running)),
        }
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(job))?;
        cx.set_attempt(i, AttemptState::Running, None, None);
        cx.set_task(i, TaskState::Running);
        cx.mark_started();
        Ok(Outcome::Done)
    }

    fn task_finished(
        &mut self,
        job: JobId,
        index: u32,
        token: Token,
        exit_code: i32,
        error: Option<&str>,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let (seq, i, state) = self.fenced(job, index, token)?;
        if !state.is_live() {
            return Ok(Outcome::Done); // duplicate, or the attempt was already cancelled or lost
        }
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(job))?;
        // An attempt that exited has started, even if its start report never arrived.
        cx.mark_started();
        if exit_code == 0 {
            cx.set_attempt(i, AttemptState::Succeeded, Some(0), error);
            cx.set_task(i, TaskState::Succeeded);
            cx.finish_if_done();
        } else {
            cx.set_attempt(i, AttemptState::Failed, Some(exit_code), error);
            cx.after_failure(i, exit_code);
        }
        Ok(Outcome::Done)
    }

    fn task_lost(
        &mut self,
        job: JobId,
        index: u32,
        token: Token,
        reason: &str,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let (seq, i, state) = self.fenced(job, index, token)?;
        if !state.is_live() {
            return Ok(Outcome::Done); // it already ended; nothing left to lose
        }
        let mut cx = self.cx(seq, now).ok_or(Rejection::JobNotFound(job))?;
        cx.lose(i, reason);
        Ok(Outcome::Done)
    }

    /// An executor's report: fenced by `token` like any report, and by who reports it.
    fn task_reported(
        &mut self,
        job: JobId,
        index: u32,
        token: Token,
        executor: &str,
        report: &Report,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let (seq, i, _) = self.fenced(job, index, token)?;
        let owner = self.jobs.get(&seq).and_then(|j| j.tasks[i].current()).map(|a| &a.executor);
        if let Some(owner) = owner.filter(|o| o.as_str() != executor) {
            return Err(Rejection::WrongExecutor {
                token,
                got: executor.to_string(),
                owner: owner.clone(),
            });
        }
        match report {
            Report::Started => self.task_started(job, index, token, now),
            Report::Finished { exit_code, error } => {
                self.task_finished(job, index, token, *exit_code, error.as_deref(), now)
            }
            Report::Lost { reason } => self.task_lost(job, index, token, reason, now),
        }
    }

    // --- lookups used by apply ---------------------------------------------------------------

    /// Resolves `(job, index)` to `(seq, index as usize)`.
    fn locate(&self, job: JobId, index: u32) -> Result<(u64, usize), Rejection> {
        let seq = *self.job_seqs.get(&job).ok_or(Rejection::JobNotFound(job))?;
        let j = self.jobs.get(&seq).ok_or(Rejection::JobNotFound(job))?;
        if (index as usize) >= j.tasks.len() {
            return Err(Rejection::TaskNotFound(job, index));
        }
        Ok((seq, index as usize))
    }

    /// The fencing check for executor reports: `token` must name the task's current attempt.
    /// Returns where the task is and the state of that attempt.
    fn fenced(
        &self,
        job: JobId,
        index: u32,
        token: Token,
    ) -> Result<(u64, usize, AttemptState), Rejection> {
        let (seq, i) = self.locate(job, index)?;
        let task = &self.jobs.get(&seq).ok_or(Rejection::JobNotFound(job))?.tasks[i];
        match task.current() {
            Some(a) if a.token == token => Ok((seq, i, a.state)),
            _ => Err(Rejection::StaleToken { got: token, current: task.token() }),
        }
    }

    /// A mutation context for job `seq`.
    pub(super) fn cx(&mut self, seq: u64, now: Millis) -> Option<Cx<'_>> {
        // Copies the job if a snapshot still shares it (once per job per snapshot).
        let job = Arc::make_mut(self.jobs.get_mut(&seq)?);
        Some(Cx {
            job,
            active: &mut self.active,
            live: &mut self.live,
            finished: &mut self.finished,
            by_state: &mut self.by_state,
            retention: &mut self.retention,
            tally: &mut self.tally,
            journal: &mut self.journal,
            batch: &mut self.batch,
            now,
        })
    }
}

/// Mutation context for one job: the job plus the derived indexes its changes must keep in step.
/// Callers have validated the command; a transition these helpers are asked for that the FSM
/// forbids is a bug, caught by `debug_assert` in tests and refused (state kept) in release.
pub(super) struct Cx<'a> {
    pub(super) job: &'a mut Job,
    pub(super) active: &'a mut Map<u64, TaskCounts>,
    live: &'a mut LiveIndex,
    finished: &'a mut Set<(Millis, u64)>,
    by_state: &'a mut ByState,
    retention: &'a mut RetentionIndex,
    tally: &'a mut Tally,
    journal: &'a mut Journal,
    pub(super) batch: &'a mut BatchIndex,
    pub(super) now: Millis,
}

impl Cx<'_> {
    /// The one place a task's state changes.
    pub(super) fn set_task(&mut self, i: usize, to: TaskState) {
        let seq = self.job.seq;
        let Some(task) = self.job.tasks.get_mut(i) else { return };
        let from = task.state;
        if !from.can_transition(to) {
            debug_assert!(false, "task {from:?} -> {to:?}");
            return;
        }
        if let Some(c) = self.active.get_mut(&seq) {
            let f = c.slot_mut(from);
            *f = f.saturating_sub(1);
            *c.slot_mut(to) += 1;
        }
        self.tally.task_moved(from, to);
        if from.is_live() != to.is_live() {
            if let Some(a) = task.current() {
                let key = (seq, task.index);
                if to.is_live() {
                    self.live.entry(a.executor.clone()).or_default().insert(key);
                } else if let Some(set) = self.live.get_mut(&a.executor) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.live.remove(&a.executor);
                    }
                }
            }
        }
        task.state = to;
        self.job.updated_at = self.now;
        let a = task.current();
        self.journal.push(Change::Task {
            job: self.job.id,
            index: task.index,
            from,
            to,
            attempt: a.map_or(0, |a| a.number),
            token: a.map_or(0, |a| a.token),
            executor: a.map(|a| a.executor.clone()).unwrap_or_default(),
            exit_code: a.and_then(|a| a.exit_code),
        });
    }

    /// The one place an attempt's state changes (always the task's current attempt).
    pub(super) fn set_attempt(
        &mut self,
        i: usize,
        to: AttemptState,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) {
        let Some(a) = self.job.tasks.get_mut(i).and_then(|t| t.attempts.last_mut()) else { return };
        if !a.state.can_transition(to) {
            debug_assert!(false, "attempt {:?} -> {to:?}", a.state);
            return;
        }
        a.state = to;
        if to == AttemptState::Running {
            a.started_at = Some(self.now);
        } else {
            a.finished_at = Some(self.now);
            a.exit_code = exit_code;
            a.error = error.map(clip);
        }
    }

    /// The one place a job's state changes. Entering a terminal state stops everything else the
    /// job still has: non-terminal tasks become `Cancelled` and their live attempts too, which
    /// is what tells the dispatcher to kill them.
    pub(super) fn set_job(&mut self, to: JobState) {
        let from = self.job.state;
        if !from.can_transition(to) {
            debug_assert!(false, "job {from:?} -> {to:?}");
            return;
        }
        self.tally.job_moved(Some(from), to);
        index_job_state(self.by_state, self.job.seq, Some(from), to);
        self.job.state = to;
        self.job.updated_at = self.now;
        self.journal.push(Change::Job { job: self.job.id, from: Some(from), to });
        if to.is_terminal() {
            self.job.finished_at = Some(self.now);
            self.active.remove(&self.job.seq);
            self.retention.job_finished(&*self.job);
            self.finished.insert((self.now, self.job.seq));
            self.batch_job_ended();
            for i in 0..self.job.tasks.len() {
                let state = self.job.tasks[i].state;
                if state.is_terminal() {
                    continue;
                }
                if state.is_live() {
                    self.set_attempt(i, AttemptState::Cancelled, None, None);
                }
                self.set_task(i, TaskState::Cancelled);
            }
        }
    }

    /// Job rollup: the first started (or finished) attempt makes a pending job running.
    fn mark_started(&mut self) {
        if self.job.state == JobState::Pending {
            self.set_job(JobState::Running);
        }
    }

    /// The lose rule: the attempt is lost, then the task retries or fails.
    fn lose(&mut self, i: usize, reason: &str) {
        self.set_attempt(i, AttemptState::Lost, None, Some(reason));
        self.set_task(i, TaskState::Lost);
        self.after_loss(i);
    }
}
