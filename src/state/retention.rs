//! Retention (issue 14): how the replicated state forgets finished jobs, their idempotency keys
//! and departed executors, so that a cluster that runs for months holds bounded state.
//!
//! Pure like the rest of `apply`: the leader picks what looks due ([`State::collection_due`],
//! O(due) through the indexes kept here) and proposes it with its time and the cluster's
//! [`Retention`] policy in a [`Command::CollectGarbage`]; every replica judges each entry again at
//! apply time against that time and policy and skips what is not due (a job that is not terminal
//! is never deleted). [`Command::DeleteJob`] deletes one terminal job on a user's request.
//!
//! The rules (golden files `testdata/retention_*.txt`):
//! - A terminal job is due `ttl_after_finished` (its own, else the policy's
//!   `finished_job_ttl`; 0 in the policy means "never by age") after it finished.
//! - While more than `max_finished_jobs` (0: unlimited) jobs are terminal, the oldest terminal
//!   one (by finish time, then submission order) is due.
//! - A deleted job leaves a [`Tombstone`] until `idempotency_window` after the job **finished**
//!   (none if that time has passed already). While it exists the job's idempotency key still
//!   names the job: a retried submission gets the original id with `created = false` and never
//!   a second job; `GetJob` answers NOT_FOUND "job X was deleted". Measuring the window from the
//!   finish (not the deletion) bounds the tombstones: with the defaults (TTL 24 h, window 24 h)
//!   collection by age leaves none at all.
//! - An executor `Dead` or `Left` for `executor_ttl` (0: never) is forgotten. A later
//!   registration under its id starts above every epoch it ever had (`epoch_floor`), so a stale
//!   verdict about an old incarnation can never hit the new one.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::apply::{Map, Set, State};
use super::events::Change;
use super::model::*;

/// The cluster's retention policy (`[retention]`), carried in each command that applies it, so
/// that every replica judges what is due by the same numbers whatever its own configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Age after finishing at which a job without its own TTL is deleted; 0: never by age.
    pub finished_job_ttl_ms: u64,
    /// Most terminal jobs kept; beyond it the oldest go first. 0: unlimited.
    pub max_finished_jobs: u64,
    /// How long after its job finished an idempotency key keeps naming it once the job is gone.
    pub idempotency_window_ms: u64,
    /// How long an executor stays `Dead` or `Left` before it is forgotten; 0: never.
    pub executor_ttl_ms: u64,
}

/// What remains of a deleted job until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Its idempotency key (may be empty), still naming the job in the key index.
    pub key: String,
    /// The terminal state it ended in.
    pub state: JobState,
    pub finished_at: Millis,
    pub deleted_at: Millis,
    /// `finished_at + idempotency_window`.
    pub expires_at: Millis,
}

/// One deleted job, with the executors that ran its attempts (they hold its output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedJob {
    pub id: JobId,
    pub executors: Vec<ExecutorId>,
}

/// What a collection (or a deletion) removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    pub jobs: Vec<DeletedJob>,
    /// Tombstones expired.
    pub tombstones: u32,
    pub executors: Vec<ExecutorId>,
}

impl Collected {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.tombstones == 0 && self.executors.is_empty()
    }
}

/// Derived (never serialized; rebuilt on decode): where collection finds what is due without
/// looking at anything that is not. Persistent sets, like the rest of the state, so a snapshot's
/// clone of the state stays O(1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionIndex {
    /// Terminal jobs with their own TTL, as `(finished_at + ttl, seq)`.
    by_due: Set<(Millis, u64)>,
    /// Terminal jobs under the policy's TTL, as `(finished_at, seq)`.
    by_finish: Set<(Millis, u64)>,
    /// Tombstones as `(expires_at, job)`.
    tombstones: Set<(Millis, JobId)>,
}

impl RetentionIndex {
    /// Indexes a job that just became terminal (no-op for any other).
    pub(super) fn job_finished(&mut self, job: &Job) {
        if let Some(key) = Self::key(job) {
            match job.spec.ttl_after_finished_ms {
                Some(_) => self.by_due.insert(key),
                None => self.by_finish.insert(key),
            };
        }
    }

    fn job_removed(&mut self, job: &Job) {
        if let Some(key) = Self::key(job) {
            self.by_due.remove(&key);
            self.by_finish.remove(&key);
        }
    }

    fn key(job: &Job) -> Option<(Millis, u64)> {
        let at = job.finished_at.filter(|_| job.state.is_terminal())?;
        Some((at.saturating_add(job.spec.ttl_after_finished_ms.unwrap_or(0)), job.seq))
    }

    /// The index of `jobs` and `tombstones` by a full walk (decoding, invariant checks).
    pub(super) fn rebuild(
        jobs: &Map<u64, Arc<Job>>,
        tombstones: &Map<JobId, Tombstone>,
    ) -> RetentionIndex {
        let mut index = RetentionIndex::default();
        for job in jobs.values() {
            index.job_finished(job);
        }
        index.tombstones = tombstones.iter().map(|(id, t)| (t.expires_at, *id)).collect();
        index
    }
}

impl State {
    /// A deleted job's tombstone, while it lasts.
    pub fn tombstone(&self, id: &JobId) -> Option<&Tombstone> {
        self.tombstones.get(id)
    }

    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// The collection the leader should propose at `now` under `policy`, at most `limit` jobs
    /// (and `limit` tombstones): none when nothing is due. Costs O(due + executors), never a
    /// walk of the jobs.
    ///
    /// Cron histories (issue 17) are read in a bounded slice: the crons after `cron_after` in
    /// name order, at most `crons` of them ([`State::cron_scan_end`] says where the slice ends,
    /// so the leader resumes there next time and no walk of every cron's runs happens at once).
    pub fn collection_due(
        &self,
        policy: &Retention,
        now: Millis,
        limit: usize,
        cron_after: Option<&str>,
        crons: usize,
    ) -> Option<Command> {
        let mut due: BTreeSet<(Millis, u64)> = BTreeSet::new();
        let upto = |t: Millis| (Bound::Unbounded, Bound::Included((t, u64::MAX)));
        for &(_, seq) in self.retention.by_due.range(upto(now)).take(limit) {
            due.insert(self.finish_key(seq));
        }
        if policy.finished_job_ttl_ms > 0 {
            let cutoff = now.saturating_sub(policy.finished_job_ttl_ms);
            if now >= policy.finished_job_ttl_ms {
                due.extend(self.retention.by_finish.range(upto(cutoff)).take(limit).copied());
            }
        }
        let kept = usize::try_from(policy.max_finished_jobs).unwrap_or(usize::MAX);
        if kept > 0 {
            let excess = self.finished.len().saturating_sub(kept).min(limit);
            due.extend(self.finished.iter().take(excess).copied());
        }
        // Oldest first, which is also the order the count rule deletes in at apply time.
        let jobs: Vec<JobId> = due
            .into_iter()
            .take(limit)
            .filter_map(|(_, seq)| self.jobs.get(&seq).map(|j| j.id))
            .collect();
        let tombstones: Vec<JobId> = self
            .retention
            .tombstones
            .range((Bound::Unbounded, Bound::Included((now, JobId::max()))))
            .take(limit)
            .map(|&(_, id)| id)
            .collect();
        let executors: Vec<ExecutorId> = self
            .executors
            .values()
            .filter(|e| self.executor_due(e, policy, now))
            .take(limit)
            .map(|e| e.id.clone())
            .collect();
        let cron_runs = self.cron_runs_due(cron_after, crons, limit);
        if jobs.is_empty() && tombstones.is_empty() && executors.is_empty() && cron_runs.is_empty()
        {
            return None;
        }
        Some(Command::CollectGarbage {
            jobs,
            tombstones,
            executors,
            cron_runs,
            policy: *policy,
            now,
        })
    }

    /// The crons after `after` in name order, at most `crons` of them.
    fn cron_slice<'a>(
        &'a self,
        after: Option<&str>,
        crons: usize,
    ) -> impl Iterator<Item = (&'a String, &'a Cron)> + 'a {
        let from = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        self.crons.range((from, Bound::Unbounded)).take(crons)
    }

    /// Cron history limits: the finished runs past their cron's `keep_succeeded`/`keep_failed`
    /// in the slice of crons after `after` (at most `crons` crons, `limit` runs), oldest first
    /// within each cron.
    pub fn cron_runs_due(
        &self,
        after: Option<&str>,
        crons: usize,
        limit: usize,
    ) -> Vec<(String, JobId)> {
        self.cron_slice(after, crons)
            .flat_map(|(name, c)| c.beyond_limits(self).into_iter().map(move |j| (name.clone(), j)))
            .take(limit)
            .collect()
    }

    /// Where the slice of `crons` crons after `after` ends: its last cron's name, or `None` when
    /// it reached the last cron (the next walk starts from the first again).
    pub fn cron_scan_end(&self, after: Option<&str>, crons: usize) -> Option<String> {
        let (last, _) = self.cron_slice(after, crons).last()?;
        let more = self.crons.range((Bound::Excluded(last.clone()), Bound::Unbounded)).next();
        more.map(|_| last.clone())
    }

    /// The `cron_runs` of a [`Command::CollectGarbage`]: each deleted only if it is, at apply
    /// time, still a finished run past its cron's history limits (a stale or hostile list
    /// deletes nothing else: not a running job, not one of the runs a cron keeps).
    pub(super) fn collect_cron_runs(
        &mut self,
        runs: &[(String, JobId)],
        policy: &Retention,
        now: Millis,
    ) -> Vec<DeletedJob> {
        // Judged before any deletion: deleting a run past the limits never moves a newer run
        // past them (limits count from the newest), so one judgement holds for the batch.
        let mut beyond: std::collections::BTreeMap<&str, BTreeSet<JobId>> = Default::default();
        for (name, _) in runs {
            if !beyond.contains_key(name.as_str()) {
                let set = self
                    .crons
                    .get(name)
                    .map_or_else(BTreeSet::new, |c| c.beyond_limits(self).into_iter().collect());
                beyond.insert(name, set);
            }
        }
        let due: Vec<u64> = runs
            .iter()
            .filter(|(name, id)| beyond.get(name.as_str()).is_some_and(|b| b.contains(id)))
            .filter_map(|(_, id)| self.job_seqs.get(id).copied())
            .collect();
        due.into_iter().filter_map(|seq| self.remove_job(seq, policy, now)).collect()
    }

    /// `(finished_at, seq)` of job `seq` (its place in `finished`).
    fn finish_key(&self, seq: u64) -> (Millis, u64) {
        (self.jobs.get(&seq).and_then(|j| j.finished_at).unwrap_or(0), seq)
    }

    /// Is job `seq` due for deletion at `now` under `policy`? Never a job that is not terminal.
    fn job_due(&self, seq: u64, policy: &Retention, now: Millis) -> bool {
        let Some(job) = self.jobs.get(&seq) else { return false };
        let Some(at) = job.finished_at.filter(|_| job.state.is_terminal()) else { return false };
        let by_age = match job.spec.ttl_after_finished_ms {
            Some(ttl) => at.saturating_add(ttl) <= now,
            None => {
                policy.finished_job_ttl_ms > 0
                    && at.saturating_add(policy.finished_job_ttl_ms) <= now
            }
        };
        let kept = usize::try_from(policy.max_finished_jobs).unwrap_or(usize::MAX);
        let by_count =
            kept > 0 && self.finished.len() > kept && self.finished.get_min() == Some(&(at, seq));
        by_age || by_count
    }

    fn executor_due(&self, e: &Executor, policy: &Retention, now: Millis) -> bool {
        policy.executor_ttl_ms > 0
            && matches!(e.state, ExecutorState::Dead | ExecutorState::Left)
            && e.updated_at.saturating_add(policy.executor_ttl_ms) <= now
            && !self.live.contains_key(&e.id)
    }

    /// [`Command::CollectGarbage`]: each entry is judged again here and skipped unless due, so
    /// the command is never refused and a stale or hostile list deletes nothing it should not.
    pub(super) fn collect_garbage(
        &mut self,
        jobs: &[JobId],
        tombstones: &[JobId],
        executors: &[ExecutorId],
        policy: &Retention,
        now: Millis,
    ) -> Collected {
        let mut out = Collected::default();
        for id in jobs {
            let Some(&seq) = self.job_seqs.get(id) else { continue };
            if self.job_due(seq, policy, now) {
                if let Some(d) = self.remove_job(seq, policy, now) {
                    out.jobs.push(d);
                }
            }
        }
        for id in tombstones {
            if self.tombstones.get(id).is_some_and(|t| t.expires_at <= now) {
                self.expire_tombstone(id);
                out.tombstones += 1;
            }
        }
        for id in executors {
            if !self.executors.get(id).is_some_and(|e| self.executor_due(e, policy, now)) {
                continue;
            }
            if let Some(e) = self.executors.remove(id) {
                self.epoch_floor = self.epoch_floor.max(e.epoch);
                self.tally.executor_removed(e.state);
                let (from, epoch) = (e.state, e.epoch);
                self.journal.push(Change::ExecutorForgotten { id: e.id.clone(), from, epoch });
                out.executors.push(e.id);
            }
        }
        out
    }

    /// [`Command::DeleteJob`]: a terminal job only; deleting a deleted job changes nothing.
    pub(super) fn delete_job(
        &mut self,
        id: JobId,
        policy: &Retention,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        if self.tombstones.contains_key(&id) {
            return Ok(Outcome::Collected(Collected::default()));
        }
        let seq = *self.job_seqs.get(&id).ok_or(Rejection::JobNotFound(id))?;
        if !self.jobs.get(&seq).is_some_and(|j| j.state.is_terminal()) {
            return Err(Rejection::JobNotTerminal(id));
        }
        let jobs = self.remove_job(seq, policy, now).into_iter().collect();
        Ok(Outcome::Collected(Collected { jobs, ..Collected::default() }))
    }

    /// Removes terminal job `seq` and everything indexing it (`job_seqs`, `finished`,
    /// `by_state`, the retention index, the tally), leaving a tombstone while the idempotency
    /// window after its finish lasts. Callers checked it is terminal; a terminal job holds no
    /// live attempt, so the live and active indexes never name it.
    fn remove_job(&mut self, seq: u64, policy: &Retention, now: Millis) -> Option<DeletedJob> {
        let job = self.jobs.get(&seq).filter(|j| j.state.is_terminal())?;
        let finished_at = job.finished_at.unwrap_or(now);
        let job = self.jobs.remove(&seq)?;
        self.job_seqs.remove(&job.id);
        self.finished.remove(&(finished_at, seq));
        if let Some(set) = self.by_state.get_mut(job.state as usize) {
            set.remove(&seq);
        }
        self.retention.job_removed(&job);
        self.tally.job_removed(&job);
        self.journal.push(Change::JobDeleted { job: job.id, state: job.state });
        let expires_at = finished_at.saturating_add(policy.idempotency_window_ms);
        if expires_at > now {
            self.retention.tombstones.insert((expires_at, job.id));
            let t = Tombstone {
                key: job.idempotency_key.clone(),
                state: job.state,
                finished_at,
                deleted_at: now,
                expires_at,
            };
            self.tombstones.insert(job.id, t);
        } else if !job.idempotency_key.is_empty() {
            self.idempotency.remove(&job.idempotency_key);
        }
        let executors: BTreeSet<&ExecutorId> =
            job.tasks.iter().flat_map(|t| &t.attempts).map(|a| &a.executor).collect();
        Some(DeletedJob { id: job.id, executors: executors.into_iter().cloned().collect() })
    }

    fn expire_tombstone(&mut self, id: &JobId) {
        if let Some(t) = self.tombstones.remove(id) {
            self.retention.tombstones.remove(&(t.expires_at, *id));
            if !t.key.is_empty() && self.idempotency.get(&t.key) == Some(id) {
                self.idempotency.remove(&t.key);
            }
        }
    }

    /// Invariants of retention (tests): tombstones name no live job, their keys are in the key
    /// index (returned for the key recount), and the derived index equals a rebuild.
    #[cfg(test)]
    pub(super) fn check_retention(&self) -> Result<Vec<(String, JobId)>, String> {
        let mut keys = Vec::new();
        for (id, t) in &self.tombstones {
            if self.job_seqs.contains_key(id) {
                return Err(format!("job {id} is both alive and a tombstone"));
            }
            if t.expires_at < t.finished_at || !t.state.is_terminal() {
                return Err(format!("tombstone {id} expires before its job finished"));
            }
            if !t.key.is_empty() {
                keys.push((t.key.clone(), *id));
            }
        }
        if RetentionIndex::rebuild(&self.jobs, &self.tombstones) != self.retention {
            return Err("retention index differs from jobs and tombstones".into());
        }
        Ok(keys)
    }
}
