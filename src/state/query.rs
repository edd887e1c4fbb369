//! Read helpers over [`State`] for the API, scheduler and dispatcher. All pure; none changes
//! state.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::apply::{LiveIndex, State, Tally};
use super::model::*;

/// A live (assigned or running) current attempt, as the dispatcher needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAttempt {
    pub job: JobId,
    pub index: u32,
    /// 1-based attempt number (`TRIAD_ATTEMPT`).
    pub attempt: u32,
    pub token: Token,
    pub executor: ExecutorId,
    /// `Assigned` (the dispatcher should start it) or `Running`; the attempt's own state is the
    /// same one.
    pub state: TaskState,
}

impl State {
    pub fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(self.job_seqs.get(id)?)
    }

    /// The job a non-empty idempotency key created.
    pub fn job_by_key(&self, key: &str) -> Option<&Job> {
        self.job(self.idempotency.get(key)?)
    }

    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Up to `limit` jobs in submission order after seq `after_seq`, optionally only those in
    /// state `filter`; the cursor is the last seq returned when more may follow (pass it back as
    /// `after_seq`). A `limit` of 0 gives an empty page and no cursor.
    pub fn jobs_page(
        &self,
        filter: Option<JobState>,
        after_seq: Option<u64>,
        limit: usize,
    ) -> (Vec<&Job>, Option<u64>) {
        let range = (after_seq.map_or(Bound::Unbounded, Bound::Excluded), Bound::Unbounded);
        // Non-terminal states are found through the active index, not a scan of every job.
        let candidates: Box<dyn Iterator<Item = &Job>> = match filter {
            Some(s) if !s.is_terminal() => {
                Box::new(self.active.range(range).filter_map(|(seq, _)| self.jobs.get(seq)))
            }
            _ => Box::new(self.jobs.range(range).map(|(_, j)| j)),
        };
        let mut page: Vec<&Job> = candidates
            .filter(|j| filter.is_none_or(|s| j.state == s))
            .take(limit.saturating_add(1))
            .collect();
        if page.len() > limit {
            page.truncate(limit);
            let cursor = page.last().map(|j| j.seq);
            (page, cursor)
        } else {
            (page, None)
        }
    }

    pub fn executor(&self, id: &str) -> Option<&Executor> {
        self.executors.get(id)
    }

    /// Moves whenever an applied command may have changed the executors or their loads (see
    /// [`ChangeCounter`](super::apply::ChangeCounter)); local to this replica.
    pub fn executor_changes(&self) -> u64 {
        self.executor_changes.0
    }

    /// All executors, by id.
    pub fn executors(&self) -> impl Iterator<Item = &Executor> {
        self.executors.values()
    }

    /// How many jobs, tasks and executors are in each state (kept as the state changes: O(1)).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The number of live attempts `executor` holds (through the live index: O(log n)).
    pub fn live_attempt_count_on(&self, executor: &str) -> usize {
        self.live.get(executor).map_or(0, BTreeSet::len)
    }

    /// Sum of the demands of the executor's live attempts.
    pub fn used_resources(&self, executor: &str) -> Resources {
        self.live
            .get(executor)
            .into_iter()
            .flatten()
            .filter_map(|(seq, _)| self.jobs.get(seq))
            .fold(Resources::default(), |sum, j| sum.plus(j.spec.resources))
    }

    /// Every live attempt, by executor then submission order then task index.
    pub fn live_attempts(&self) -> Vec<LiveAttempt> {
        self.live.keys().flat_map(|e| self.live_attempts_on(e)).collect()
    }

    /// The live attempts held by one executor (what it should be running).
    pub fn live_attempts_on(&self, executor: &str) -> Vec<LiveAttempt> {
        let Some(held) = self.live.get(executor) else { return Vec::new() };
        held.iter()
            .filter_map(|&(seq, index)| {
                let job = self.jobs.get(&seq)?;
                let task = job.task(index)?;
                let a = task.current()?;
                Some(LiveAttempt {
                    job: job.id,
                    index,
                    attempt: a.number,
                    token: a.token,
                    executor: a.executor.clone(),
                    state: task.state,
                })
            })
            .collect()
    }

    /// Tasks placeable at `now` (pending, backoff elapsed) as `(job, index)`, highest priority
    /// first, then oldest job, then lowest index. Lazy, so a scheduler can take only what it can
    /// place.
    pub fn pending_tasks(&self, now: Millis) -> impl Iterator<Item = (JobId, u32)> + '_ {
        self.pending_tasks_after(now, None)
    }

    /// Like [`State::pending_tasks`], restricted to jobs submitted after `after_seq` (new work).
    pub fn pending_tasks_after(
        &self,
        now: Millis,
        after_seq: Option<u64>,
    ) -> impl Iterator<Item = (JobId, u32)> + '_ {
        self.pending_tasks_where(now, after_seq, |_| true).map(|(j, index)| (j.id, index))
    }

    /// Like [`State::pending_tasks_after`], yielding each task's job, and leaving out jobs whose
    /// seq `keep` rejects before anything else is done for them: a caller's set of jobs known
    /// not to fit anywhere costs one call each per pass, not a lookup, a sort and a copy.
    pub fn pending_tasks_where<'a>(
        &'a self,
        now: Millis,
        after_seq: Option<u64>,
        keep: impl Fn(u64) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a Job, u32)> + 'a {
        let range = (after_seq.map_or(Bound::Unbounded, Bound::Excluded), Bound::Unbounded);
        let mut jobs: Vec<&Job> = self
            .active
            .range(range)
            .filter(|(seq, c)| c.pending > 0 && keep(**seq))
            .filter_map(|(seq, _)| self.jobs.get(seq))
            .collect();
        jobs.sort_by_key(|j| (std::cmp::Reverse(j.spec.priority), j.seq));
        jobs.into_iter().flat_map(move |j| {
            j.tasks
                .iter()
                .filter(move |t| t.state == TaskState::Pending && t.not_before <= now)
                .map(move |t| (j, t.index))
        })
    }

    /// The earliest end of a retry backoff after `now` among the pending tasks of the jobs
    /// submitted after `after_seq` that `keep` accepts: when a task that
    /// [`State::pending_tasks_where`] leaves out today becomes placeable.
    pub fn next_backoff_end(
        &self,
        now: Millis,
        after_seq: Option<u64>,
        keep: impl Fn(u64) -> bool,
    ) -> Option<Millis> {
        let range = (after_seq.map_or(Bound::Unbounded, Bound::Excluded), Bound::Unbounded);
        self.active
            .range(range)
            .filter(|(seq, c)| c.pending > 0 && keep(**seq))
            .filter_map(|(seq, _)| self.jobs.get(seq))
            .flat_map(|j| {
                j.tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Pending && t.not_before > now)
                    .map(|t| t.not_before)
            })
            .min()
    }

    /// Jobs that reached a terminal state at or after `since`, oldest first: where the
    /// dispatcher finds cancelled attempts that may still run and must be killed.
    pub fn jobs_recently_finished(&self, since: Millis) -> impl Iterator<Item = &Job> + '_ {
        self.finished.range((since, 0)..).filter_map(|(_, seq)| self.jobs.get(seq))
    }

    /// The token the next assignment will get.
    pub fn next_token(&self) -> Token {
        self.next_token
    }

    /// The seq the next submitted job will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Checks every invariant of the state (a full scan; for tests and debugging, e.g. after a
    /// snapshot install). The message names the first violation found. By entity: each job and
    /// its tasks, then the derived indexes against what the jobs gave, then the executors.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut recount = Recount::default();
        for (&seq, job) in &self.jobs {
            self.check_job(seq, job, &mut recount)?;
        }
        self.check_indexes(&recount)?;
        self.check_executors()
    }

    /// One job: its place in the id and key indexes, its task count, its state against its
    /// tasks' states, and each task. Adds what the derived indexes should hold to `recount`.
    fn check_job(&self, seq: u64, job: &Job, recount: &mut Recount) -> Result<(), String> {
        let id = job.id;
        let ctx = |m: &str| format!("job {id} (seq {seq}): {m}");
        if job.seq != seq || self.job_seqs.get(&id) != Some(&seq) || seq >= self.next_seq {
            return Err(ctx("seq index inconsistent"));
        }
        if !job.idempotency_key.is_empty()
            && recount.keys.insert(job.idempotency_key.clone(), id).is_some()
        {
            return Err(ctx("idempotency key names two jobs"));
        }
        if job.tasks.len() != job.spec.task_count as usize {
            return Err(ctx("task count differs from spec"));
        }
        let counts = job.counts();
        if !job.state.is_terminal() {
            recount.active.insert(seq, counts);
        }
        job_rollup_agrees(job.state, &counts).map_err(ctx)?;
        match (job.state.is_terminal(), job.finished_at) {
            (true, Some(at)) => {
                recount.finished.insert((at, seq));
            }
            (false, None) => {}
            _ => return Err(ctx("finished_at disagrees with state")),
        }
        for (i, task) in job.tasks.iter().enumerate() {
            let ctx = |m: &str| format!("job {id} task {i}: {m}");
            if task.index as usize != i || task.state == TaskState::Lost {
                return Err(ctx("bad index or Lost at rest"));
            }
            self.check_task(job, task).map_err(|m| ctx(&m))?;
            if let Some(a) = task.current().filter(|a| a.state.is_live()) {
                recount.live.entry(a.executor.clone()).or_default().insert((seq, task.index));
            }
        }
        Ok(())
    }

    /// One task of `job`: its attempts (numbered, fenced by increasing tokens, only the current
    /// one live) and its state against its current attempt's.
    fn check_task(&self, job: &Job, task: &Task) -> Result<(), String> {
        if task.attempts.len() > job.spec.max_attempts as usize {
            return Err("more attempts than allowed".into());
        }
        let mut last_token = 0; // tokens increase within a task; across tasks they interleave
        for (n, a) in task.attempts.iter().enumerate() {
            if a.number as usize != n + 1 || a.token <= last_token || a.token >= self.next_token {
                return Err("attempt numbers or tokens out of order".into());
            }
            last_token = a.token;
            if a.state.is_live() && n + 1 != task.attempts.len() {
                return Err("a non-current attempt is live".into());
            }
        }
        let cur = task.current().map(|a| a.state);
        let consistent = match task.state {
            TaskState::Pending => cur.is_none_or(AttemptState::is_terminal),
            TaskState::Assigned => cur == Some(AttemptState::Assigned),
            TaskState::Running => cur == Some(AttemptState::Running),
            TaskState::Succeeded => cur == Some(AttemptState::Succeeded),
            TaskState::Failed => matches!(cur, Some(AttemptState::Failed | AttemptState::Lost)),
            TaskState::Cancelled | TaskState::Lost => cur.is_none_or(AttemptState::is_terminal),
        };
        if !consistent {
            return Err(format!("task {:?} with current attempt {cur:?}", task.state));
        }
        if task
            .current()
            .is_some_and(|a| a.state.is_live() && !self.executors.contains_key(&a.executor))
        {
            return Err("live attempt on an unknown executor".into());
        }
        if job.state == JobState::Pending
            && task
                .attempts
                .iter()
                .any(|a| !matches!(a.state, AttemptState::Assigned | AttemptState::Lost))
        {
            return Err("job pending but an attempt started".into());
        }
        Ok(())
    }

    /// The derived indexes and the tally against what a walk of the jobs gave.
    fn check_indexes(&self, recount: &Recount) -> Result<(), String> {
        if self.job_seqs.len() != self.jobs.len() {
            return Err("job id index has extra entries".into());
        }
        if recount.keys != self.idempotency {
            return Err("idempotency index differs from jobs".into());
        }
        if recount.active != self.active {
            return Err("active index differs from jobs".into());
        }
        if recount.live != self.live {
            return Err("live index differs from jobs".into());
        }
        if recount.finished != self.finished {
            return Err("finished index differs from jobs".into());
        }
        let counted = Tally::recount(self);
        if counted != self.tally {
            return Err(format!("tally {:?} differs from a recount {counted:?}", self.tally));
        }
        Ok(())
    }

    /// Each executor: its record, no live attempts unless it can run them, within capacity.
    fn check_executors(&self) -> Result<(), String> {
        for (id, ex) in &self.executors {
            if &ex.id != id || ex.epoch == 0 {
                return Err(format!("executor {id}: bad id or epoch"));
            }
            if ex.state != ExecutorState::Alive
                && ex.state != ExecutorState::Draining
                && self.live.contains_key(id)
            {
                return Err(format!("executor {id} is {:?} but holds live attempts", ex.state));
            }
            // Capacity changes only at registration, which first loses every live attempt.
            if !self.used_resources(id).fits_in(ex.capacity) {
                return Err(format!("executor {id} is over capacity"));
            }
        }
        Ok(())
    }
}

/// What `check_invariants` rebuilds from the jobs, to compare with the derived indexes.
#[derive(Default)]
struct Recount {
    live: LiveIndex,
    active: BTreeMap<u64, TaskCounts>,
    keys: BTreeMap<String, JobId>,
    finished: BTreeSet<(Millis, u64)>,
}

/// A job's state against its tasks' counts: succeeded means every task did; terminal means no
/// task is still going; non-terminal means none failed or was cancelled and not all succeeded.
fn job_rollup_agrees(state: JobState, counts: &TaskCounts) -> Result<(), &'static str> {
    let finished = counts.succeeded + counts.failed + counts.cancelled;
    match state {
        JobState::Succeeded if counts.succeeded != counts.total() => {
            Err("succeeded with unfinished tasks")
        }
        s if s.is_terminal() && counts.total() != finished => {
            Err("terminal with non-terminal tasks")
        }
        s if !s.is_terminal()
            && (counts.failed + counts.cancelled > 0 || counts.succeeded == counts.total()) =>
        {
            Err("non-terminal but tasks say it finished")
        }
        _ => Ok(()),
    }
}
