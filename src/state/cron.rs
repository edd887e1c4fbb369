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
//! finished jobs past `keep_succeeded`/`keep_failed`, which retention's job deletion is to delete
//! (follow-up: `DeleteJob` is retention's, issue 14; until it is merged they are only listed).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::apply::State;
use super::events::{Change, CronChange};
use super::model::*;

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
    validate_submit(&c.job_name, "", &c.job)
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
