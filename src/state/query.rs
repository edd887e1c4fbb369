//! Read helpers over [`State`] for the API, scheduler and dispatcher. All pure; none changes
//! state.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::apply::{State, Tally};
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
    /// The job with sequence number `seq`.
    pub fn job_at(&self, seq: &u64) -> Option<&Job> {
        self.jobs.get(seq).map(|j| &**j)
    }

    pub fn job(&self, id: &JobId) -> Option<&Job> {
        self.job_at(self.job_seqs.get(id)?)
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
        // A state's jobs are found through the job state index, not a scan of every job.
        let candidates: Box<dyn Iterator<Item = &Job>> = match filter {
            Some(s) => match self.by_state.get(s as usize) {
                Some(seqs) => Box::new(seqs.range(range).filter_map(|seq| self.job_at(seq))),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new(self.jobs.range(range).map(|(_, j)| &**j)),
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

    /// Up to `limit` executors by id after `after` (from the first when `None`), and whether
    /// more follow.
    pub fn executors_page(&self, after: Option<&str>, limit: usize) -> (Vec<&Executor>, bool) {
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_string()));
        let mut page: Vec<&Executor> = self
            .executors
            .range((start, Bound::Unbounded))
            .map(|(_, e)| e)
            .take(limit.saturating_add(1))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// How many jobs, tasks and executors are in each state (kept as the state changes: O(1)).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The number of live attempts `executor` holds (through the live index: O(log n)).
    pub fn live_attempt_count_on(&self, executor: &str) -> usize {
        self.live.get(executor).map_or(0, |s| s.len())
    }

    /// Sum of the demands of the executor's live attempts.
    pub fn used_resources(&self, executor: &str) -> Resources {
        self.live
            .get(executor)
            .into_iter()
            .flatten()
            .filter_map(|(seq, _)| self.job_at(seq))
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
                let job = self.job_at(&seq)?;
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

    #[cfg(test)]
    /// Tasks placeable at `now` (pending, backoff elapsed) as `(job, index)`, highest priority
    /// first, then oldest job, then lowest index. Lazy, so a scheduler can take only what it can
    /// place.
    pub fn pending_tasks(&self, now: Millis) -> impl Iterator<Item = (JobId, u32)> + '_ {
        self.pending_tasks_after(now, None)
    }

    #[cfg(test)]
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
            .filter_map(|(seq, _)| self.job_at(seq))
            .filter(|j| j.placeable())
            .collect();
        jobs.sort_by_key(|j| (std::cmp::Reverse(j.spec.priority), j.seq));
        jobs.into_iter().flat_map(move |j| {
            j.tasks
                .iter()
                .filter(move |t| t.state == TaskState::Pending && t.backoff_over(now))
                .map(move |t| (j, t.index))
                .take(self.headroom(j) as usize) // parallelism: no more than may be assigned
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
            .filter_map(|(seq, _)| self.job_at(seq))
            .filter(|j| j.placeable())
            .flat_map(|j| {
                j.tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Pending && !t.backoff_over(now))
                    .map(|t| t.not_before)
            })
            .min()
    }

    /// Jobs that reached a terminal state at or after `since`, oldest first: where the
    /// dispatcher finds cancelled attempts that may still run and must be killed.
    pub fn jobs_recently_finished(&self, since: Millis) -> impl Iterator<Item = &Job> + '_ {
        self.finished.range((since, 0)..).filter_map(|(_, seq)| self.job_at(seq))
    }

    #[cfg(test)]
    /// The token the next assignment will get.
    pub fn next_token(&self) -> Token {
        self.next_token
    }

    /// The seq the next submitted job will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}
