//! The history a chaos run records, one JSON object per line (`history.jsonl`), and the side
//! effects tasks record (`sink.jsonl`). Both use the machine's CLOCK_MONOTONIC in nanoseconds, which
//! every network namespace on the host shares, so client operations and task side effects are
//! ordered on one clock.

use serde::{Deserialize, Serialize};

/// Jepsen's op types: an `invoke` is followed by exactly one completion of the same process:
/// `ok` (it happened), `fail` (it certainly did not happen) or `info` (unknown: e.g. a timeout;
/// never `fail`). After an `info`, that process id is never used again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history (0-based, increasing).
    pub index: u64,
    /// CLOCK_MONOTONIC, ns.
    pub time_ns: u64,
    /// The logical client process.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    #[serde(flatten)]
    pub call: Call,
}

/// What an op does; completions carry the observed values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Call {
    /// Submit a job with idempotency key `key`; `job_id` is set on `ok`.
    Submit { key: String, job_id: Option<String> },
    /// Linearizable read of the job a submit of `key` returned; `state` is set on `ok`
    /// (`not-found` when the master said NOT_FOUND, `deleted` when it said the job was deleted).
    Read { key: String, job_id: String, state: Option<String> },
    /// Cancel that job; `state` (the job's state after the cancel) is set on `ok`.
    Cancel { key: String, job_id: String, state: Option<String> },
    /// After healing: every job in the cluster (only ever `ok`, or `fail` if unreadable).
    FinalRead { jobs: Vec<JobView> },
    /// A poll of one master's own view: its term and whether it believes it leads.
    LeaderPoll { node: u64, term: u64, leader: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub key: String,
    /// The job's state, or `deleted` when retention had deleted it (see `deleted`).
    pub state: String,
    pub tasks: Vec<TaskView>,
    /// Retention (issue 14): what the master said of a deleted job (its tombstone), in a final
    /// read; `state` is then `deleted` and `tasks` empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deleted>,
}

/// A deleted job's tombstone, as `GetJob` reports it (NOT_FOUND with metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The terminal state it was deleted in.
    pub state: String,
    /// The leader's wall clock (ms) when it finished and when it was deleted.
    pub finished_at_ms: u64,
    pub deleted_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub index: u32,
    pub state: String,
    pub attempts: Vec<AttemptView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    pub number: u32,
    pub token: u64,
    pub executor: String,
    pub state: String,
}

/// A side effect recorded by a task attempt (one JSON object per line in `sink.jsonl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideEffect {
    /// `start` when the attempt begins its work, `end` when it completed it.
    pub event: String,
    pub job_id: String,
    pub task: u32,
    pub attempt: u32,
    pub token: u64,
    /// CLOCK_MONOTONIC, ns.
    pub time_ns: u64,
}

/// Reads a JSON-lines file of `T`, naming the line of any parse error.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> anyhow::Result<Vec<T>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: bad line", path.display(), i + 1))
        })
        .collect()
}

/// CLOCK_MONOTONIC now, ns.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Runs a cron keeps in the replicated state (triad's `state::model::MAX_RUNS`): a record with
/// this many has lost its oldest ones.
pub const CRON_RUNS_KEPT: usize = 100;

/// The chaos run's cron at the end of the run (`cron.json`): the runner creates it when the
/// cluster is up, suspends it after healing, then reads it linearizably.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronRecord {
    pub name: String,
    pub schedule: String,
    /// The runner's schedule is `@every P`: P in ms.
    pub period_ms: u64,
    pub tz: String,
    pub created_at_ms: u64,
    pub starting_deadline_ms: u64,
    /// Every scheduled time up to here was handled (fired, missed or skipped).
    pub handled_upto_ms: u64,
    /// Wall-clock ms (the masters' clock: same machine) when the runner asked to suspend it.
    pub suspend_invoked_ms: u64,
    /// Its newest runs, oldest first (the state keeps at most `state::model::MAX_RUNS`).
    pub runs: Vec<CronRunView>,
    /// `(id, state)` of every job in the cluster named after the cron, after suspending it.
    pub jobs: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronRunView {
    pub scheduled_at_ms: u64,
    pub fired_at_ms: u64,
    /// fired | triggered | skipped | missed
    pub outcome: String,
    pub job_id: String,
}

/// One line of `events.jsonl`, what the runner's event follower saw: a message of the stream
/// (`kind` "message": an entry's events, or a progress mark with none), or `"reset"` when the
/// stream said its events were gone (`OUT_OF_RANGE`) and the follower started again from now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub kind: String,
    /// CLOCK_MONOTONIC, ns, when it was received.
    pub time_ns: u64,
    /// The Raft index of the entry (message), or the position before the reset.
    pub index: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventView>,
}

/// One event of the stream, the fields the checkers use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// job | task | executor | cron
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    #[serde(default)]
    pub task_index: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cron: String,
    /// cron: created | deleted | suspended | resumed | fired | skipped
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cron_event: String,
    #[serde(default)]
    pub scheduled_at_ms: u64,
}
