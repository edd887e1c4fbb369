//! Wire form of the event stream: [`Change`]s from the state machine to `pb::Event`s (one flat
//! message for every kind, so that JSON readers, the CLI and the HTTP/SSE endpoint need no
//! `oneof`), and the status a subscriber gets when its events are gone.

use tonic::Status;

use super::convert::{executor_state_name, job_state_name, task_state_name};
use super::pb;
use crate::state::events::{Change, CronChange};

/// One change on the wire.
pub fn change_to_pb(c: &Change) -> pb::Event {
    match c {
        Change::Job { job, from, to } => pb::Event {
            kind: "job".into(),
            job_id: job.to_string(),
            from: from.map(job_state_name).unwrap_or_default().into(),
            to: job_state_name(*to).into(),
            ..Default::default()
        },
        Change::Task { job, index, from, to, attempt, token, executor, exit_code } => pb::Event {
            kind: "task".into(),
            job_id: job.to_string(),
            task_index: *index,
            from: task_state_name(*from).into(),
            to: task_state_name(*to).into(),
            attempt: *attempt,
            token: *token,
            executor: executor.clone(),
            has_exit_code: exit_code.is_some(),
            exit_code: exit_code.unwrap_or(0),
            ..Default::default()
        },
        Change::Executor { id, from, to, epoch } => pb::Event {
            kind: "executor".into(),
            executor: id.clone(),
            from: from.map(executor_state_name).unwrap_or_default().into(),
            to: executor_state_name(*to).into(),
            epoch: *epoch,
            ..Default::default()
        },
        // Retention (issue 14): a deletion is a job's (or an executor's) last event, with the
        // state it left in `from` and `to` = "deleted" ("forgotten" for an executor).
        Change::JobDeleted { job, state } => pb::Event {
            kind: "job".into(),
            job_id: job.to_string(),
            from: job_state_name(*state).into(),
            to: "deleted".into(),
            ..Default::default()
        },
        Change::ExecutorForgotten { id, from, epoch } => pb::Event {
            kind: "executor".into(),
            executor: id.clone(),
            from: executor_state_name(*from).into(),
            to: "forgotten".into(),
            epoch: *epoch,
            ..Default::default()
        },
        Change::Cron { name, what } => {
            let mut e = pb::Event { kind: "cron".into(), cron: name.clone(), ..Default::default() };
            match what {
                CronChange::Created => e.cron_event = "created".into(),
                CronChange::Deleted => e.cron_event = "deleted".into(),
                CronChange::Suspended => e.cron_event = "suspended".into(),
                CronChange::Resumed => e.cron_event = "resumed".into(),
                CronChange::Fired { scheduled_at, job, replaced } => {
                    e.cron_event = "fired".into();
                    e.scheduled_at_ms = *scheduled_at;
                    e.job_id = job.to_string();
                    e.replaced_job_id = replaced.map(|j| j.to_string()).unwrap_or_default();
                }
                CronChange::Skipped { scheduled_at, reason } => {
                    e.cron_event = "skipped".into();
                    e.scheduled_at_ms = *scheduled_at;
                    e.reason = reason.clone();
                }
            }
            e
        }
    }
}

/// `OUT_OF_RANGE` for a subscriber whose events are gone: the message says from where to resume.
pub fn too_old_status(msg: impl std::fmt::Display) -> Status {
    Status::out_of_range(msg.to_string())
}
