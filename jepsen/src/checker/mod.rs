//! Checkers: pure functions over a recorded history (and the tasks' side effects).
//!
//! Every checker is a library function that takes the parts of a run it needs and returns a
//! [`Verdict`]; none of them panics on malformed input (odd lines are reported as details, see
//! [`well_formed`]). [`check_all`] runs them all over a [`CheckInput`].
//!
//! | checker | guarantee (SPEC "Guarantees") | module |
//! |---|---|---|
//! | [`linearizable()`] | 6: reads/submits/cancels per idempotency key are linearizable | [`linearizable`](mod@linearizable) |
//! | [`no_lost_acks`] | 1: every acknowledged submit is in the final read; nothing unexpected | [`jobs`] |
//! | [`unique_per_key`] | 2: one job per idempotency key, every ok response naming it | [`jobs`] |
//! | [`legal_transitions`] | 3: job/task states follow the FSMs; terminal states are final | [`jobs`] |
//! | [`no_overlapping_attempts`] | 4: no two live attempts of a task; no work from a stale token | [`attempts`] |
//! | [`terminal_after_heal`] | 5: after healing (+ a bound) every job is terminal | [`jobs`] |
//! | [`no_failed_jobs`] | failure policy: faults (lost attempts) never fail a correct job | [`jobs`] |
//! | [`single_leader_per_term`] | 6: at most one leader per term | [`cluster`] |
//! | [`deleted_jobs_were_due`] | retention: a job missing from the final read was deleted, terminal, past its TTL | [`retention`](mod@retention) |
//! | [`no_panics`] | no node panicked | [`cluster`] |
//! | [`cron_once`] | 8: every scheduled time of the run's cron fired at most once, exactly once unless missed | [`cron`](mod@cron) |
//! | [`events_complete`] | 8: an event follower through the faults sees every transition once, in index order | [`events`](mod@events) |
//! | [`well_formed`] | the history itself obeys the invoke/complete protocol (a runner bug otherwise) | here |
//!
//! Conventions shared by all checkers:
//! - Ops are paired per process ([`pair_ops`]): an `invoke` with the next completion of the same
//!   process. An invoke without a completion counts as `info` (the run ended first).
//! - Real-time order: op `a` precedes op `b` iff `a` completed (`ok`/`fail`) strictly before `b`
//!   was invoked. `info` ops never complete (their end is +infinity).
//! - "The final read" is the last `ok` [`Call::FinalRead`] in the history.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::history::{Call, JobView, Op, OpType, SideEffect};

pub mod attempts;
pub mod cluster;
pub mod cron;
pub mod events;
pub mod jobs;
pub mod linearizable;
pub mod retention;
#[cfg(test)]
mod testutil;

pub use attempts::no_overlapping_attempts;
pub use cluster::{no_panics, single_leader_per_term};
pub use cron::cron_once;
pub use events::events_complete;
pub use jobs::{
    legal_transitions, no_failed_jobs, no_lost_acks, terminal_after_heal, unique_per_key,
};
pub use linearizable::linearizable;
pub use retention::deleted_jobs_were_due;

/// At most this many violation details are kept per verdict (the total is in `stats["violations"]`).
pub const MAX_DETAILS: usize = 20;

/// A statistic: a number or a short text.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Stat {
    Num(f64),
    Text(String),
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stat::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Stat::Num(n) => write!(f, "{n:.3}"),
            Stat::Text(s) => f.write_str(s),
        }
    }
}

impl From<f64> for Stat {
    fn from(v: f64) -> Self {
        Stat::Num(v)
    }
}
impl From<u64> for Stat {
    fn from(v: u64) -> Self {
        Stat::Num(v as f64)
    }
}
impl From<usize> for Stat {
    fn from(v: usize) -> Self {
        Stat::Num(v as f64)
    }
}
impl From<&str> for Stat {
    fn from(v: &str) -> Self {
        Stat::Text(v.to_string())
    }
}
impl From<String> for Stat {
    fn from(v: String) -> Self {
        Stat::Text(v)
    }
}

/// One checker's judgement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub name: &'static str,
    /// False on any violation, and when the checker could not decide (e.g. no final read, or the
    /// linearizability search ran out of budget): "unknown" is not a pass.
    pub valid: bool,
    /// Human-readable violations, at most [`MAX_DETAILS`] (+ one "... and N more" line).
    pub details: Vec<String>,
    /// Counters; always has `violations`.
    pub stats: BTreeMap<String, Stat>,
}

/// Builds a [`Verdict`]: counts violations, caps details.
pub(crate) struct Report {
    name: &'static str,
    violations: usize,
    details: Vec<String>,
    stats: BTreeMap<String, Stat>,
}

impl Report {
    pub(crate) fn new(name: &'static str) -> Self {
        Report { name, violations: 0, details: Vec::new(), stats: BTreeMap::new() }
    }
    /// Records a violation (or an undecidable condition); the verdict becomes invalid.
    pub(crate) fn violation(&mut self, msg: impl Into<String>) {
        self.violations += 1;
        if self.details.len() < MAX_DETAILS {
            self.details.push(msg.into());
        }
    }
    pub(crate) fn stat(&mut self, key: &str, v: impl Into<Stat>) {
        self.stats.insert(key.to_string(), v.into());
    }
    pub(crate) fn verdict(mut self) -> Verdict {
        if self.violations > self.details.len() {
            self.details.push(format!("... and {} more", self.violations - self.details.len()));
        }
        self.stats.insert("violations".into(), self.violations.into());
        Verdict {
            name: self.name,
            valid: self.violations == 0,
            details: self.details,
            stats: self.stats,
        }
    }
}

/// Everything the checkers judge.
#[derive(Clone, Debug, Default)]
pub struct CheckInput {
    pub history: Vec<Op>,
    pub side_effects: Vec<SideEffect>,
    /// (node name, log text) of every master and executor.
    pub node_logs: Vec<(String, String)>,
    /// How long after healing every job must be terminal.
    pub terminal_bound_ns: u64,
    /// When the nemesis healed the last fault (CLOCK_MONOTONIC ns), if known.
    pub heal_time_ns: Option<u64>,
    /// Retention (issue 14): the masters' `retention.finished_job_ttl` in ms (none: off, so no
    /// job may be deleted).
    pub finished_job_ttl_ms: Option<u64>,
    /// The run's cron at the end (`cron.json`), if it had one.
    pub cron: Option<crate::history::CronRecord>,
    /// What the event follower received (`events.jsonl`), if the run had one, and whether it
    /// caught up with every applied entry by the end.
    pub events: Option<Vec<crate::history::EventLine>>,
    pub events_caught_up: bool,
}

/// Runs every checker, in the order of the table in the module doc.
pub fn check_all(input: &CheckInput) -> Vec<Verdict> {
    let h = &input.history;
    vec![
        linearizable(h),
        no_lost_acks(h),
        unique_per_key(h),
        legal_transitions(h),
        no_overlapping_attempts(h, &input.side_effects),
        terminal_after_heal(h, input.terminal_bound_ns, input.heal_time_ns),
        no_failed_jobs(h),
        single_leader_per_term(h),
        no_panics(&input.node_logs),
        deleted_jobs_were_due(h, input.finished_job_ttl_ms),
        well_formed(h),
        cron_once(input.cron.as_ref(), input.events.as_deref()),
        events_complete(h, input.events.as_deref(), input.events_caught_up),
    ]
}

/// Completions per op type, for one `f` (or in total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub ok: u64,
    pub fail: u64,
    /// `info` completions plus invocations the history never completed.
    pub info: u64,
}

/// Op counts per `f` (`submit`, `read`, `cancel`, `final-read`, `leader-poll`) and in total.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpStats {
    pub by_f: BTreeMap<&'static str, OpCounts>,
    pub total: OpCounts,
}

/// Counts the history's operations by outcome, per `f`.
pub fn summarize(history: &[Op]) -> OpStats {
    let mut s = OpStats::default();
    for op in pair_ops(history).0 {
        let c = s.by_f.entry(f_name(op.call())).or_default();
        for c in [c, &mut s.total] {
            match op.kind() {
                OpType::Ok => c.ok += 1,
                OpType::Fail => c.fail += 1,
                OpType::Info | OpType::Invoke => c.info += 1,
            }
        }
    }
    s
}

/// The history's name for a call (`f`).
pub fn f_name(c: &Call) -> &'static str {
    match c {
        Call::Submit { .. } => "submit",
        Call::Read { .. } => "read",
        Call::Cancel { .. } => "cancel",
        Call::FinalRead { .. } => "final-read",
        Call::LeaderPoll { .. } => "leader-poll",
    }
}

/// The idempotency key a client call is about (none for final reads and leader polls).
pub fn key_of(c: &Call) -> Option<&str> {
    match c {
        Call::Submit { key, .. } | Call::Read { key, .. } | Call::Cancel { key, .. } => Some(key),
        Call::FinalRead { .. } | Call::LeaderPoll { .. } => None,
    }
}

/// One operation: an invocation and its completion.
#[derive(Clone, Copy, Debug)]
pub struct Completed<'a> {
    /// The invocation; for a completion recorded without one, the completion itself.
    pub invoke: &'a Op,
    /// `None` when the history ended before the op completed (counts as `info`).
    pub completion: Option<&'a Op>,
}

impl<'a> Completed<'a> {
    /// `Ok`, `Fail` or `Info` (never `Invoke`).
    pub fn kind(&self) -> OpType {
        match self.completion.map(|c| c.kind) {
            Some(OpType::Ok) => OpType::Ok,
            Some(OpType::Fail) => OpType::Fail,
            _ => OpType::Info,
        }
    }
    /// The completion's call (with the observed values), else the invocation's.
    pub fn call(&self) -> &'a Call {
        &self.completion.unwrap_or(self.invoke).call
    }
    pub fn start(&self) -> u64 {
        self.invoke.time_ns
    }
    /// Completion time for `ok`/`fail`; +infinity (`u64::MAX`) for `info`.
    pub fn end(&self) -> u64 {
        match (self.kind(), self.completion) {
            (OpType::Ok | OpType::Fail, Some(c)) => c.time_ns.max(self.invoke.time_ns),
            _ => u64::MAX,
        }
    }
    pub fn process(&self) -> u64 {
        self.invoke.process
    }
    /// A short description for details: `p3 read k1/j1 -> running [t 10..20]`.
    pub fn describe(&self) -> String {
        let result = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
        let what = match self.call() {
            Call::Submit { key, job_id } => format!("submit {key} -> {}", result(job_id)),
            Call::Read { key, job_id, state } => {
                format!("read {key}/{job_id} -> {}", result(state))
            }
            Call::Cancel { key, job_id, state } => {
                format!("cancel {key}/{job_id} -> {}", result(state))
            }
            Call::FinalRead { jobs } => format!("final-read ({} jobs)", jobs.len()),
            Call::LeaderPoll { node, term, leader } => {
                format!("leader-poll n{node} term {term} leader={leader}")
            }
        };
        let kind = match self.kind() {
            OpType::Ok => "",
            OpType::Fail => " (fail)",
            _ => " (info)",
        };
        let end = if self.end() == u64::MAX { "inf".to_string() } else { self.end().to_string() };
        format!("p{} {what}{kind} [t {}..{end}]", self.process(), self.start())
    }
}

/// Pairs each invocation with the next completion of the same process, in history (`index`)
/// order. Returns the ops (in invocation order) and what was malformed. Lenient: a completion
/// with no pending invocation becomes an instantaneous op of its own (expected for
/// `final-read` and `leader-poll`, which runners may record as bare completions); a completion
/// whose `f` or key differs from the pending invocation leaves that invocation unfinished.
pub fn pair_ops(history: &[Op]) -> (Vec<Completed<'_>>, Vec<String>) {
    let mut order: Vec<&Op> = history.iter().collect();
    order.sort_by_key(|o| o.index); // stable: equal indices keep file order
    let mut problems = Vec::new();
    let mut pending: BTreeMap<u64, usize> = BTreeMap::new(); // process -> position in `out`
    let mut crashed: BTreeMap<u64, u64> = BTreeMap::new(); // process -> index of its info
    let mut out: Vec<Completed<'_>> = Vec::new();
    let mut last_index = None;
    for op in order {
        if last_index == Some(op.index) {
            problems.push(format!("index {} appears twice", op.index));
        }
        last_index = Some(op.index);
        if let Some(i) = crashed.get(&op.process) {
            problems.push(format!(
                "op {}: process {} reused after its info at op {i}",
                op.index, op.process
            ));
            crashed.remove(&op.process);
        }
        match op.kind {
            OpType::Invoke => {
                if let Some(prev) = pending.insert(op.process, out.len()) {
                    problems.push(format!(
                        "op {}: process {} invoked again before op {} completed",
                        op.index, op.process, out[prev].invoke.index
                    ));
                }
                out.push(Completed { invoke: op, completion: None });
            }
            _ => {
                let paired = match pending.get(&op.process) {
                    Some(&i) if same_target(&out[i].invoke.call, &op.call) => {
                        pending.remove(&op.process);
                        if op.time_ns < out[i].invoke.time_ns {
                            problems
                                .push(format!("op {}: completed before it was invoked", op.index));
                        }
                        out[i].completion = Some(op);
                        true
                    }
                    Some(&i) => {
                        problems.push(format!(
                            "op {}: completion ({}) does not match the pending invocation {} ({})",
                            op.index,
                            f_name(&op.call),
                            out[i].invoke.index,
                            f_name(&out[i].invoke.call)
                        ));
                        pending.remove(&op.process);
                        false
                    }
                    None => {
                        if !matches!(op.call, Call::FinalRead { .. } | Call::LeaderPoll { .. }) {
                            problems
                                .push(format!("op {}: completion without an invocation", op.index));
                        }
                        false
                    }
                };
                if !paired {
                    out.push(Completed { invoke: op, completion: Some(op) });
                }
                if op.kind == OpType::Info {
                    crashed.insert(op.process, op.index);
                }
            }
        }
        if op.kind == OpType::Ok {
            let missing = match &op.call {
                Call::Submit { job_id: None, .. } => Some("job_id"),
                Call::Read { state: None, .. } | Call::Cancel { state: None, .. } => Some("state"),
                _ => None,
            };
            if let Some(m) = missing {
                problems.push(format!("op {}: ok {} without its {m}", op.index, f_name(&op.call)));
            }
        }
    }
    out.sort_by_key(|c| c.invoke.index);
    (out, problems)
}

fn same_target(invoke: &Call, completion: &Call) -> bool {
    f_name(invoke) == f_name(completion) && key_of(invoke) == key_of(completion)
}

/// The jobs of the last `ok` final read, and when it was invoked.
pub fn final_read(history: &[Op]) -> Option<(&[JobView], &Op)> {
    let (ops, _) = pair_ops(history);
    ops.iter().rev().find_map(|o| match (o.kind(), o.call()) {
        (OpType::Ok, Call::FinalRead { jobs }) => Some((jobs.as_slice(), o.invoke)),
        _ => None,
    })
}

/// The history obeys Jepsen's protocol: every completion follows an invocation of the same
/// process, `f` and key; a process has one op in flight and is never reused after an `info`;
/// indices are unique; `ok` completions carry their values. A violation here is a runner bug,
/// which makes every other verdict suspect.
pub fn well_formed(history: &[Op]) -> Verdict {
    let mut r = Report::new("well_formed");
    let (ops, problems) = pair_ops(history);
    r.stat("ops", ops.len());
    for p in problems {
        r.violation(p);
    }
    r.verdict()
}

/// Job states, ordered along the FSM; terminal states are `>= SUCCEEDED`.
#[allow(dead_code)]
pub(crate) mod job_state {
    pub const PENDING: u8 = 0;
    pub const RUNNING: u8 = 1;
    pub const SUCCEEDED: u8 = 2;
    pub const FAILED: u8 = 3;
    pub const CANCELLED: u8 = 4;
    /// Retention (issue 14): deleted after it finished (the job's last state, terminal).
    pub const DELETED: u8 = 5;
    pub const NAMES: [&str; 6] =
        ["pending", "running", "succeeded", "failed", "cancelled", "deleted"];

    pub fn parse(s: &str) -> Option<u8> {
        NAMES.iter().position(|n| *n == s).map(|i| i as u8)
    }
    pub fn name(s: u8) -> &'static str {
        NAMES.get(s as usize).copied().unwrap_or("?")
    }
    pub fn is_terminal(s: u8) -> bool {
        s >= SUCCEEDED
    }
    /// Can a job in state `from` later be seen in state `to` (possibly the same)?
    pub fn reachable(from: u8, to: u8) -> bool {
        // Deletion may follow any state seen before (the job finishes, then is collected, both
        // outside client ops; `deleted_jobs_were_due` checks it was terminal), and is final.
        if to == DELETED || from == DELETED {
            return to == DELETED;
        }
        if is_terminal(from) {
            from == to
        } else {
            to >= from
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn summarize_counts_per_f() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.submit_info(2, "k2", 5);
        h.submit_fail(3, "k3", 6, 8);
        h.read(1, "k1", "j1", 20, 30, "pending");
        h.open(4, Call::Read { key: "k1".into(), job_id: "j1".into(), state: None }, 40);
        let s = summarize(&h.build());
        assert_eq!(s.by_f["submit"], OpCounts { ok: 1, fail: 1, info: 1 });
        assert_eq!(s.by_f["read"], OpCounts { ok: 1, fail: 0, info: 1 });
        assert_eq!(s.total, OpCounts { ok: 2, fail: 1, info: 2 });
    }

    #[test]
    fn well_formed_accepts_a_good_history_and_flags_protocol_errors() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.final_read(100, vec![job("j1", "k1", "succeeded", vec![])]);
        let v = well_formed(&h.build());
        assert!(v.valid, "{v:?}");

        let mut h = H::new();
        h.submit_info(1, "k1", 0);
        h.submit(1, "k1", 20, 30, "j1"); // process reused after info
        h.push(
            2,
            OpType::Ok,
            Call::Read { key: "k1".into(), job_id: "j1".into(), state: None },
            40,
        ); // no invoke, no state
        let v = well_formed(&h.build());
        assert!(!v.valid);
        assert!(v.details.iter().any(|d| d.contains("reused")), "{v:?}");
        assert!(v.details.iter().any(|d| d.contains("without an invocation")), "{v:?}");
        assert!(v.details.iter().any(|d| d.contains("without its state")), "{v:?}");
    }

    #[test]
    fn details_are_capped() {
        let mut r = Report::new("x");
        for i in 0..50 {
            r.violation(format!("v{i}"));
        }
        let v = r.verdict();
        assert_eq!(v.details.len(), MAX_DETAILS + 1);
        assert_eq!(v.stats["violations"], Stat::Num(50.0));
        assert!(!v.valid);
    }

    #[test]
    fn check_all_on_a_clean_run_is_all_valid() {
        let mut h = H::new();
        h.poll(10, 1, 5, true);
        h.submit(1, "k1", 0, 10, "j1");
        h.read(2, "k1", "j1", 20, 30, "running");
        h.final_read(
            100,
            vec![job(
                "j1",
                "k1",
                "succeeded",
                vec![task(0, "succeeded", vec![att(1, 7, "succeeded")])],
            )],
        );
        let input = CheckInput {
            history: h.build(),
            side_effects: vec![se("start", "j1", 0, 1, 7, 15), se("end", "j1", 0, 1, 7, 25)],
            node_logs: vec![("m1".into(), "INFO started\n".into())],
            terminal_bound_ns: 10,
            heal_time_ns: Some(50),
            ..Default::default()
        };
        let vs = check_all(&input);
        assert_eq!(vs.len(), 13);
        for v in vs {
            assert!(v.valid, "{v:?}");
        }
    }
}
