//! The state's invariants, checked after every golden step and proptest case (test builds
//! only): every job's rollup agrees with its tasks, the indexes and the tally agree with a full
//! recount, and every live attempt is where the indexes say.

use super::apply::{by_state_of, LiveIndex, Map, Set, State, Tally};
use super::model::*;

impl State {
    /// Checks every invariant of the state (a full scan; for tests and debugging, e.g. after a
    /// snapshot install). The message names the first violation found. By entity: each job and
    /// its tasks, then the derived indexes against what the jobs gave, then the executors.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut recount = Recount::default();
        for (&seq, job) in &self.jobs {
            self.check_job(seq, job, &mut recount)?;
        }
        for (key, id) in self.check_retention()? {
            if recount.keys.insert(key, id).is_some() {
                return Err(format!("idempotency key of deleted job {id} names two jobs"));
            }
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
        job_rollup_agrees(job, &counts).map_err(ctx)?;
        self.check_batch(job).map_err(|m| ctx(&m))?;
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
        if task.failures() > job.spec.max_attempts || task.losses() > job.spec.policy.max_lost {
            return Err("more failed or lost attempts than allowed".into());
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
            && task.attempts.iter().any(|a| {
                // A lost attempt, or one cancelled before it started (suspend), never ran.
                let never_ran = matches!(a.state, AttemptState::Assigned | AttemptState::Lost)
                    || (a.state == AttemptState::Cancelled && a.started_at.is_none());
                !never_ran
            })
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
        if by_state_of(&self.jobs) != self.by_state {
            return Err("job state index differs from jobs".into());
        }
        if super::policy::BatchIndex::rebuild(self) != self.batch {
            return Err("batch index differs from jobs".into());
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
    active: Map<u64, TaskCounts>,
    keys: Map<String, JobId>,
    finished: Set<(Millis, u64)>,
}

/// A job's state against its tasks' counts: succeeded means every task did; terminal means no
/// task is still going; non-terminal means none failed or was cancelled and not all succeeded.
/// (With partial success, up to `max_failed_tasks` failed tasks count as finished alongside the
/// succeeded ones.)
fn job_rollup_agrees(job: &Job, counts: &TaskCounts) -> Result<(), &'static str> {
    let finished = counts.succeeded + counts.failed + counts.cancelled;
    let tolerated = job.spec.policy.max_failed_tasks;
    match job.state {
        JobState::Succeeded
            if counts.succeeded + counts.failed != counts.total() || counts.failed > tolerated =>
        {
            Err("succeeded with unfinished tasks or too many failed")
        }
        s if s.is_terminal() && counts.total() != finished => {
            Err("terminal with non-terminal tasks")
        }
        s if !s.is_terminal()
            && (counts.failed > tolerated
                || counts.cancelled > 0
                || counts.succeeded + counts.failed == counts.total()) =>
        {
            Err("non-terminal but tasks say it finished")
        }
        _ => Ok(()),
    }
}

impl State {
    /// A job's batch status: waiting and suspended only while non-terminal; a reason only on a
    /// terminal job; no more tasks assigned or running than its parallelism; a job that is not
    /// waiting any more had every dependency end first (and a placed task implies that).
    fn check_batch(&self, job: &Job) -> Result<(), String> {
        let b = &job.batch;
        if job.state.is_terminal() && (b.waiting || b.suspended) {
            return Err("terminal but waiting or suspended".into());
        }
        if b.reason.is_some() && !job.state.is_terminal() {
            return Err("a reason on a non-terminal job".into());
        }
        if b.reason == Some(JobReason::Deadline) && job.state != JobState::Failed {
            return Err("deadline reason on a job that did not fail".into());
        }
        let c = job.counts();
        let p = job.spec.policy.parallelism;
        if p > 0 && c.assigned + c.running > p {
            return Err(format!("{} tasks live, parallelism {p}", c.assigned + c.running));
        }
        if (b.waiting || b.suspended) && c.assigned + c.running > 0 {
            return Err("waiting or suspended with live tasks".into());
        }
        let placed = job.tasks.iter().any(|t| !t.attempts.is_empty());
        if placed && !job.spec.policy.after.is_empty() {
            for d in &job.spec.policy.after {
                if self.dependency(job, &d.job).is_some_and(|d| !d.state.is_terminal()) {
                    return Err(format!("placed before its dependency {} ended", d.job));
                }
            }
        }
        Ok(())
    }
}
