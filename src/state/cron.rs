//! Cron jobs in the replicated state: templates with a schedule that the leader fires, each
//! firing a command keyed by (cron, scheduled time), so that every scheduled time creates at most
//! one job across leader changes (SPEC guarantee 8), and exactly one unless it was recorded
//! `missed` (past the starting deadline) or `skipped` (overlap `forbid`, suspended).
//!
//! The dedup key is a watermark: a cron's `handled_upto` is the latest scheduled time it has
//! handled (fired, missed or skipped), and `FireCron` for a time at or below it changes nothing.
//! The leader computes due times (`state::schedule`, from the replicated schedule and its clock)
//! and proposes them in order, so a watermark is all the history the key needs: it stays one
//! number however long a cron runs. Apply never parses a schedule.
//!
//! Overlap policies are applied inside the one `FireCron`, atomically: `allow` creates the job
//! beside running ones, `forbid` skips the time while an earlier run is not terminal, `replace`
//! cancels the earlier runs and creates the job. `TriggerCron` (fire now) creates a job outside
//! the schedule: no watermark, no overlap policy, no deadline.
//!
//! History limits: a cron keeps its last [`MAX_RUNS`] runs; [`Cron::beyond_limits`] names the
//! finished jobs past `keep_succeeded`/`keep_failed`, which retention deletes: the leader lists
//! them in its `CollectGarbage` (`cron_runs`, a bounded slice of the crons per collection), and
//! apply deletes each one that is still past the limits then (`state::retention`). A run whose
//! job was deleted stays in `runs` (its history line) and no longer counts towards a limit.

use std::collections::VecDeque;

use super::apply::State;
use super::events::{Change, CronChange};
use super::model::*;

// The cron data model lives in `model.rs` with the rest of the replicated data (the model is what
// commands carry, and it uses nothing of the state machine); re-exported here by its old path.
pub use super::model::{
    validate_name, validate_spec, Cron, CronSpec, Overlap, Run, RunOutcome, MAX_CRONS, MAX_KEEP,
    MAX_RUNS, MAX_SCHEDULE_BYTES, MAX_TZ_BYTES,
};

impl Cron {
    /// Its runs whose jobs are not terminal (still in the state and not finished).
    pub fn active(&self, state: &State) -> Vec<JobId> {
        self.runs
            .iter()
            .filter_map(Run::job)
            .filter(|j| state.job(j).is_some_and(|j| !j.state.is_terminal()))
            .collect()
    }

    /// Finished jobs past the history limits: succeeded ones beyond the newest `keep_succeeded`,
    /// failed or cancelled ones beyond the newest `keep_failed`, oldest first.
    pub fn beyond_limits(&self, state: &State) -> Vec<JobId> {
        let (mut ok, mut bad) = (0u32, 0u32);
        let mut out = Vec::new();
        for job in self.runs.iter().rev().filter_map(Run::job) {
            let Some(j) = state.job(&job) else { continue };
            let (seen, keep) = match j.state {
                JobState::Succeeded => (&mut ok, self.spec.keep_succeeded),
                JobState::Failed | JobState::Cancelled => (&mut bad, self.spec.keep_failed),
                _ => continue,
            };
            *seen += 1;
            if *seen > keep {
                out.push(job);
            }
        }
        out.reverse();
        out
    }
}

impl State {
    /// Every cron, by name.
    pub fn crons(&self) -> impl Iterator<Item = &Cron> {
        self.crons.values()
    }

    pub fn cron(&self, name: &str) -> Option<&Cron> {
        self.crons.get(name)
    }

    pub(super) fn create_cron(
        &mut self,
        spec: &CronSpec,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        validate_spec(spec).map_err(Rejection::InvalidSpec)?;
        if let Some(existing) = self.crons.get(&spec.name) {
            // A retried create (same spec) is done; another spec under the name is refused.
            return if existing.spec == *spec {
                Ok(Outcome::Done)
            } else {
                Err(Rejection::CronExists(spec.name.clone()))
            };
        }
        if self.crons.len() >= MAX_CRONS {
            return Err(Rejection::InvalidSpec(format!("the cluster holds {MAX_CRONS} crons")));
        }
        let cron = Cron {
            spec: spec.clone(),
            created_at: now,
            suspended: false,
            handled_upto: now,
            runs: VecDeque::new(),
            fired: 0,
            missed: 0,
            skipped: 0,
        };
        self.crons.insert(spec.name.clone(), cron);
        self.cron_changed(&spec.name, CronChange::Created);
        Ok(Outcome::Done)
    }

    pub(super) fn delete_cron(&mut self, name: &str) -> Result<Outcome, Rejection> {
        if self.crons.remove(name).is_none() {
            return Err(Rejection::CronNotFound(name.to_string()));
        }
        self.cron_changed(name, CronChange::Deleted);
        Ok(Outcome::Done)
    }

    pub(super) fn suspend_cron(
        &mut self,
        name: &str,
        suspended: bool,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let cron =
            self.crons.get_mut(name).ok_or_else(|| Rejection::CronNotFound(name.to_string()))?;
        if cron.suspended == suspended {
            return Ok(Outcome::Done);
        }
        cron.suspended = suspended;
        if !suspended {
            // Times that passed while suspended are not fired late: the schedule resumes now.
            cron.handled_upto = cron.handled_upto.max(now);
        }
        let what = if suspended { CronChange::Suspended } else { CronChange::Resumed };
        self.cron_changed(name, what);
        Ok(Outcome::Done)
    }

    /// The firing of `name` for `scheduled_at`: at most once per time (the watermark), then the
    /// starting deadline, suspension and the overlap policy decide whether job `job` is created.
    pub(super) fn fire_cron(
        &mut self,
        name: &str,
        scheduled_at: Millis,
        job: JobId,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let cron = self.crons.get(name).ok_or_else(|| Rejection::CronNotFound(name.to_string()))?;
        let no_dedup = crate::chaos::on(crate::chaos::Bug::CronNoDedup);
        if scheduled_at <= cron.handled_upto && !no_dedup {
            return Ok(Outcome::CronFired { job: None }); // already handled: the dedup key
        }
        let late_ms = now.saturating_sub(scheduled_at);
        let deadline = cron.spec.starting_deadline_ms;
        let outcome = if deadline > 0 && late_ms > deadline {
            RunOutcome::Missed { late_ms }
        } else if cron.suspended {
            RunOutcome::Skipped { reason: "suspended".into() }
        } else {
            let active = cron.active(self);
            match cron.spec.overlap {
                Overlap::Forbid if !active.is_empty() => RunOutcome::Skipped {
                    reason: format!("overlap forbid: run {} is still active", active[0]),
                },
                Overlap::Replace => RunOutcome::Fired { job, replaced: active },
                _ => RunOutcome::Fired { job, replaced: Vec::new() },
            }
        };
        if let RunOutcome::Fired { replaced, .. } = &outcome {
            // Validate the creation before anything changes (the cancels come first).
            let (job_name, spec) = (cron.spec.job_name.clone(), cron.spec.job.clone());
            validate_submit(&job_name, "", &spec).map_err(Rejection::InvalidSpec)?;
            if self.job(&job).is_some() {
                return Err(Rejection::DuplicateJobId(job));
            }
            // Neither can fail now: the replaced runs are active jobs, the submission validated.
            for r in replaced.clone() {
                let _ = self.cancel_job(r, now);
            }
            let _ = self.submit_job(job, &job_name, "", &spec, now);
        }
        let created = outcome_job(&outcome);
        let cron =
            self.crons.get_mut(name).ok_or_else(|| Rejection::CronNotFound(name.to_string()))?;
        cron.handled_upto = cron.handled_upto.max(scheduled_at);
        let what = match &outcome {
            RunOutcome::Fired { job, replaced } => {
                cron.fired += 1;
                CronChange::Fired { scheduled_at, job: *job, replaced: replaced.first().copied() }
            }
            RunOutcome::Missed { late_ms } => {
                cron.missed += 1;
                CronChange::Skipped {
                    scheduled_at,
                    reason: format!("missed: {late_ms} ms late, past the starting deadline"),
                }
            }
            RunOutcome::Skipped { reason } => {
                cron.skipped += 1;
                CronChange::Skipped { scheduled_at, reason: reason.clone() }
            }
            // Not made here (triggers have their own command); named for exhaustiveness.
            RunOutcome::Triggered { job } => {
                CronChange::Fired { scheduled_at, job: *job, replaced: None }
            }
        };
        push_run(cron, Run { scheduled_at, fired_at: now, outcome });
        self.cron_changed(name, what);
        Ok(Outcome::CronFired { job: created })
    }

    /// `cron trigger`: job `job` now, from the cron's template, outside the schedule.
    pub(super) fn trigger_cron(
        &mut self,
        name: &str,
        job: JobId,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let cron = self.crons.get(name).ok_or_else(|| Rejection::CronNotFound(name.to_string()))?;
        // The job id is the request's idempotency key: a retried trigger creates nothing.
        if cron.runs.iter().any(|r| r.outcome == RunOutcome::Triggered { job }) {
            return Ok(Outcome::CronFired { job: Some(job) });
        }
        let (job_name, spec) = (cron.spec.job_name.clone(), cron.spec.job.clone());
        self.submit_job(job, &job_name, "", &spec, now)?;
        if let Some(cron) = self.crons.get_mut(name) {
            push_run(
                cron,
                Run { scheduled_at: now, fired_at: now, outcome: RunOutcome::Triggered { job } },
            );
        }
        self.cron_changed(name, CronChange::Fired { scheduled_at: now, job, replaced: None });
        Ok(Outcome::CronFired { job: Some(job) })
    }

    fn cron_changed(&mut self, name: &str, what: CronChange) {
        self.journal.push(Change::Cron { name: name.to_string(), what });
    }
}

fn outcome_job(o: &RunOutcome) -> Option<JobId> {
    match o {
        RunOutcome::Fired { job, .. } | RunOutcome::Triggered { job } => Some(*job),
        _ => None,
    }
}

fn push_run(cron: &mut Cron, run: Run) {
    cron.runs.push_back(run);
    while cron.runs.len() > MAX_RUNS {
        cron.runs.pop_front();
    }
}
