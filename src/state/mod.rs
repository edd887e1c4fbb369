//! The replicated state machine of triad: the executor registry, the jobs with their tasks and
//! attempts, and the idempotency index, changed only by [`State::apply`] of a [`Command`] from
//! the Raft log.
//!
//! `apply` is pure and deterministic: no clock, no RNG, no I/O. Time (`now`) and job ids come
//! inside commands, chosen by the leader; fencing tokens are issued by `apply` itself. State holds
//! only ordered maps, so replicas that applied the same log serialize to identical bytes.
//!
//! Invariants (all checked by [`State::check_invariants`], exercised by the property tests):
//! - A rejected command leaves the state unchanged.
//! - Job, task and attempt states move only along the FSMs in `model.rs`
//!   (`JobState::can_transition`, ...); terminal states never change again.
//! - A task has at most one live (assigned/running) attempt, and it is the current (last) one.
//!   Only a report carrying the current attempt's fencing token is accepted.
//! - Fencing tokens are issued from 1 upwards, each once, so they strictly increase.
//! - A terminal job has no live attempts: when a job fails or is cancelled, its other
//!   non-terminal tasks and their attempts become `Cancelled` (the dispatcher kills those).
//! - A non-empty idempotency key names exactly one job, for ever: while the job exists, and
//!   after it is deleted while its tombstone lasts (`retention`); only then may it name another.
//! - Retention deletes only terminal jobs (`retention`).
//! - Executors that are `Left` or `Dead` hold no live attempts; no executor holds more than its
//!   capacity.
//! - The derived indexes (job id, idempotency key, active jobs with task counts, live attempts
//!   by executor, finished jobs by time, jobs by state) always agree with the jobs, and the
//!   [`Tally`] (jobs, tasks and executors by state) with a recount. The tally and the jobs by
//!   state are never serialized: decoding a state rebuilds them, so snapshots keep their format.
//! - Every map is persistent (`apply::Map`): a clone is O(1), so a snapshot encodes a clone
//!   while apply goes on.

pub mod apply;
pub mod cron;
pub mod events;
#[cfg(test)]
mod invariants;
pub mod model;
pub mod policy;
pub mod query;
pub mod range;
pub mod retention;
pub mod schedule;

pub use apply::{State, Tally};
pub use model::*;
pub use range::task_range_uuids;
pub use retention::{Collected, Retention};

#[cfg(test)]
mod bounded_tests;
#[cfg(test)]
mod tests;
