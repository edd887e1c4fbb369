//! The transitions that [`State::apply`](super::State::apply) makes, recorded as it makes them:
//! every job, task and executor state change (and every cron firing) as a [`Change`].
//!
//! Recording is part of apply, so it is as deterministic as apply itself: every replica that
//! applied the same entry recorded the same changes, in the same order. The store drains the
//! [`Journal`] after each entry ([`State::take_changes`](super::State::take_changes)) and
//! publishes the changes under that entry's Raft index (`store::events`), which is what makes
//! the event stream resumable on any master: an index names the same changes everywhere.
//!
//! The journal is local bookkeeping, not replicated state: never serialized, and equal always
//! (a replica restored from a snapshot and one that replayed the log hold the same state, and
//! both have drained their journals).

use serde::Serialize;

use super::model::*;

/// One state transition made by apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A job was created (`from` is `None`) or moved between states.
    Job { job: JobId, from: Option<JobState>, to: JobState },
    /// A task moved between states; `attempt`, `token` and `executor` name its current attempt
    /// (0, 0 and empty before the first), `exit_code` that attempt's exit status once it has one.
    Task {
        job: JobId,
        index: u32,
        from: TaskState,
        to: TaskState,
        attempt: u32,
        token: Token,
        executor: ExecutorId,
        exit_code: Option<i32>,
    },
    /// An executor registered (`from` is `None` the first time, else its state before) or moved
    /// between states.
    Executor { id: ExecutorId, from: Option<ExecutorState>, to: ExecutorState, epoch: u64 },
    /// A cron job was fired, missed, created, changed or deleted (see `state::cron`).
    Cron { name: String, what: CronChange },
    /// Retention (issue 14): a terminal job (it ended in `state`) was deleted from the state,
    /// by collection or by `DeleteJob`.
    JobDeleted { job: JobId, state: JobState },
    /// Retention (issue 14): an executor `Dead` or `Left` (`from`) for `retention.executor_ttl`
    /// was forgotten; a later registration starts above `epoch`.
    ExecutorForgotten { id: ExecutorId, from: ExecutorState, epoch: u64 },
}

/// What happened to a cron job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CronChange {
    Created,
    Deleted,
    Suspended,
    Resumed,
    /// The firing for `scheduled_at` created `job` (`replaced` names a run the `replace` overlap
    /// policy cancelled for it).
    Fired {
        scheduled_at: Millis,
        job: JobId,
        replaced: Option<JobId>,
    },
    /// The firing for `scheduled_at` created no job: `reason` says why (`forbid` overlap, or
    /// past the starting deadline).
    Skipped {
        scheduled_at: Millis,
        reason: String,
    },
}

impl Change {
    /// The job this change is about, if any (the `--job` filter).
    pub fn job(&self) -> Option<JobId> {
        match self {
            Change::Job { job, .. } | Change::Task { job, .. } => Some(*job),
            Change::JobDeleted { job, .. } => Some(*job),
            Change::Cron { what: CronChange::Fired { job, .. }, .. } => Some(*job),
            Change::Executor { .. } | Change::Cron { .. } => None,
            Change::ExecutorForgotten { .. } => None,
        }
    }
}

/// The changes of the command being applied, drained by the store after each entry.
///
/// Not part of the state's identity (see the module doc): compares equal always, serialized
/// never.
#[derive(Clone, Debug, Default)]
pub struct Journal(pub(super) Vec<Change>);

impl PartialEq for Journal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Journal {}

impl Journal {
    pub(super) fn push(&mut self, c: Change) {
        self.0.push(c);
    }
}
