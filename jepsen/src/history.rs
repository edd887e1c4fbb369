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
