//! Judging a run directory: loads the history, side effects, node logs, nemesis log and run
//! metadata, runs the checkers, and renders the summary (stdout and `summary.txt`), the full
//! verdicts (`verdicts.json`) and one machine-readable line per verdict:
//!
//! ```text
//! JEPSEN-VERDICT <checker> valid|INVALID violations=<n>
//! JEPSEN-RESULT valid|INVALID
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use triad_jepsen::checker::{self, CheckInput, Verdict};
use triad_jepsen::history::{read_jsonl, Call, Op, OpType, SideEffect};

use crate::nemesis::FaultRecord;

/// What the runner knows about a run beyond the files (`run.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunMeta {
    pub id: String,
    pub command: String,
    pub nemesis: String,
    pub time_limit_s: u64,
    pub concurrency: usize,
    pub rate: f64,
    pub seed: u64,
    pub interval_s: f64,
    pub bug: Option<String>,
    pub masters: usize,
    pub executors: usize,
    pub task_millis: String,
    /// CLOCK_MONOTONIC when the workload began.
    pub start_ns: u64,
    /// When the final heal completed.
    pub heal_time_ns: Option<u64>,
    pub terminal_bound_ns: u64,
    /// Seconds the final phase waited for jobs to become terminal.
    pub terminal_wait_s: Option<f64>,
    /// Retention (issue 14): the masters' `retention.finished_job_ttl`, ms (none: off).
    #[serde(default)]
    pub finished_job_ttl_ms: Option<u64>,
    /// Problems of the runner itself (a failed final read, a history write error, ...).
    pub runner_errors: Vec<String>,
    /// Whether the event follower received every entry applied by the end (`events.jsonl`).
    #[serde(default)]
    pub events_caught_up: bool,
}

pub fn meta_path(dir: &Path) -> PathBuf {
    dir.join("run.json")
}

pub fn write_meta(dir: &Path, m: &RunMeta) -> anyhow::Result<()> {
    std::fs::write(meta_path(dir), serde_json::to_string_pretty(m)?)?;
    Ok(())
}

/// (name, log) of every node directory (`m*/master.log`, `e*/executor.log`).
pub fn node_logs(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map(|r| r.flatten().collect()).unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        for log in ["master.log", "executor.log"] {
            let p = e.path().join(log);
            if p.is_file() {
                out.push((name.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out
}

pub struct Outcome {
    pub text: String,
    pub valid: bool,
}

fn fmt_s(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// Judges the run in `dir` and writes `summary.txt` and `verdicts.json` there.
pub fn judge(dir: &Path) -> anyhow::Result<Outcome> {
    let meta: RunMeta = serde_json::from_str(
        &std::fs::read_to_string(meta_path(dir)).context("reading run.json")?,
    )?;
    let history: Vec<Op> = read_jsonl(&dir.join("history.jsonl"))?;
    let sink = dir.join("sink.jsonl");
    let side_effects: Vec<SideEffect> = if sink.exists() { read_jsonl(&sink)? } else { Vec::new() };
    let nem = dir.join("nemesis.jsonl");
    let faults: Vec<FaultRecord> = if nem.exists() { read_jsonl(&nem)? } else { Vec::new() };
    let input = CheckInput {
        history,
        side_effects,
        finished_job_ttl_ms: meta.finished_job_ttl_ms,
        node_logs: node_logs(dir),
        terminal_bound_ns: meta.terminal_bound_ns,
        heal_time_ns: meta.heal_time_ns,
        cron: match dir.join("cron.json") {
            p if p.exists() => {
                Some(serde_json::from_slice(&std::fs::read(&p)?).context("reading cron.json")?)
            }
            _ => None,
        },
        events: match dir.join("events.jsonl") {
            p if p.exists() => Some(read_jsonl(&p)?),
            _ => None,
        },
        events_caught_up: meta.events_caught_up,
    };
    let verdicts = checker::check_all(&input);
    let stats = checker::summarize(&input.history);
    let valid = verdicts.iter().all(|v| v.valid) && meta.runner_errors.is_empty();

    let mut t = String::new();
    let _ = writeln!(t, "\n==================== triad chaos run {} ====================", meta.id);
    let _ = writeln!(
        t,
        "nemesis {}  time-limit {} s  interval {} s  concurrency {}  rate {}/s  seed {}  masters {}  executors {}  tasks {} ms  bug {}",
        meta.nemesis,
        meta.time_limit_s,
        meta.interval_s,
        meta.concurrency,
        meta.rate,
        meta.seed,
        meta.masters,
        meta.executors,
        meta.task_millis,
        meta.bug.as_deref().unwrap_or("none")
    );
    let _ = writeln!(t, "run dir {}", dir.display());
    let _ = writeln!(t, "replay: {}", meta.command);

    let _ = writeln!(t, "\noperations            ok     fail     info");
    for (f, c) in &stats.by_f {
        let _ = writeln!(t, "  {f:<16} {:>6}   {:>6}   {:>6}", c.ok, c.fail, c.info);
    }
    let c = stats.total;
    let _ = writeln!(t, "  {:<16} {:>6}   {:>6}   {:>6}", "total", c.ok, c.fail, c.info);

    let _ = writeln!(t, "\nfaults injected        count   seconds");
    let mut by_kind: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for f in &faults {
        let e = by_kind.entry(f.kind.as_str()).or_default();
        e.0 += 1;
        e.1 += f.end_s.unwrap_or(f.start_s) - f.start_s;
    }
    if by_kind.is_empty() {
        let _ = writeln!(t, "  (none)");
    }
    for (k, (n, s)) in &by_kind {
        let _ = writeln!(t, "  {k:<20} {n:>5}   {s:>7.1}");
    }
    let _ = writeln!(t, "  {:<20} {:>5}", "total", faults.len());

    let _ = writeln!(t, "\nfailover, for faults that hit the leader: fault start -> first acknowledged write; -> a leader in a higher term");
    let fo = failovers(&input.history, &faults);
    if fo.is_empty() {
        let _ = writeln!(t, "  (no fault hit the leader)");
    }
    for (kind, f) in &fo {
        let kept = if f.kept > 0 {
            format!(" ({} kept the leader's term)", f.kept)
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "  {kind:<16} n={:<3} first write: {}",
            f.elections.len() + f.kept,
            spread(&f.writes)
        );
        let _ = writeln!(t, "  {:<16}       new leader:  {}{kept}", "", spread(&f.elections));
    }

    let power: Vec<&FaultRecord> =
        faults.iter().filter(|f| f.kind.starts_with("power-loss")).collect();
    if !power.is_empty() {
        let _ = writeln!(t, "\npower losses: fault start -> first acknowledged write");
        for f in power {
            let first = first_ack_after(&input.history, f.start_ns)
                .map(fmt_s)
                .unwrap_or_else(|| "none".into());
            let _ = writeln!(
                t,
                "  +{:6.1}s {:<15} {:<9} {}{}",
                f.start_s,
                f.kind,
                first,
                f.detail,
                if f.hit_leader() { "  (the leader)" } else { "" }
            );
        }
    }

    let final_jobs =
        checker::final_read(&input.history).map(|(j, _)| j.to_vec()).unwrap_or_default();
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &final_jobs {
        *states.entry(j.state.as_str()).or_default() += 1;
    }
    let acked = input
        .history
        .iter()
        .filter(|o| o.kind == OpType::Ok && matches!(o.call, Call::Submit { .. }))
        .count();
    let _ = writeln!(
        t,
        "\njobs: {} acknowledged submits; final read {} jobs ({}); {} side effects; terminal wait {}",
        acked,
        final_jobs.len(),
        states.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", "),
        input.side_effects.len(),
        meta.terminal_wait_s.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "-".into())
    );

    let _ = writeln!(t, "\ncheckers");
    for v in &verdicts {
        render_verdict(&mut t, v);
    }
    for e in &meta.runner_errors {
        let _ = writeln!(t, "  RUNNER ERROR: {e}");
    }
    let bad: Vec<&str> = verdicts.iter().filter(|v| !v.valid).map(|v| v.name).collect();
    let _ = writeln!(
        t,
        "\nVERDICT: {}",
        if valid {
            "PASS (no violations)".to_string()
        } else if bad.is_empty() {
            "FAIL (runner errors)".to_string()
        } else {
            format!("FAIL ({} violated: {})", bad.len(), bad.join(", "))
        }
    );
    for v in &verdicts {
        let _ = writeln!(
            t,
            "JEPSEN-VERDICT {} {} violations={}",
            v.name,
            if v.valid { "valid" } else { "INVALID" },
            v.stats.get("violations").map(|s| s.to_string()).unwrap_or_default()
        );
    }
    let _ = writeln!(t, "JEPSEN-RESULT {}", if valid { "valid" } else { "INVALID" });

    std::fs::write(dir.join("summary.txt"), &t)?;
    std::fs::write(dir.join("verdicts.json"), serde_json::to_string_pretty(&verdicts)?)?;
    Ok(Outcome { text: t, valid })
}

fn render_verdict(t: &mut String, v: &Verdict) {
    let stats: Vec<String> = v
        .stats
        .iter()
        .filter(|(k, _)| *k != "violations")
        .map(|(k, s)| format!("{k}={s}"))
        .collect();
    let _ = writeln!(
        t,
        "  {:<26} {}   {}",
        v.name,
        if v.valid { "PASS" } else { "FAIL" },
        stats.join(" ")
    );
    for d in v.details.iter().take(if v.valid { 0 } else { 5 }) {
        let d: String = d.chars().take(400).collect();
        let _ = writeln!(t, "      - {d}");
    }
    if !v.valid && v.details.len() > 5 {
        let _ = writeln!(t, "      ({} more details in verdicts.json)", v.details.len() - 5);
    }
}

fn spread(xs: &[u64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let mut v = xs.to_vec();
    v.sort_unstable();
    format!("min {} median {} max {}", fmt_s(v[0]), fmt_s(v[v.len() / 2]), fmt_s(v[v.len() - 1]))
}

/// Nanoseconds from `start_ns` to the first `ok` submit completing after it.
fn first_ack_after(history: &[Op], start_ns: u64) -> Option<u64> {
    history
        .iter()
        .find(|o| {
            o.kind == OpType::Ok && o.time_ns > start_ns && matches!(o.call, Call::Submit { .. })
        })
        .map(|o| o.time_ns - start_ns)
}

/// Failover times of one fault kind.
#[derive(Default)]
pub struct Failover {
    /// Fault start -> first `ok` leader poll of a leader in a higher term, when that happened
    /// while the fault lasted.
    pub elections: Vec<u64>,
    /// Faults during which no node led a higher term (the leader kept its term, e.g. a bridge).
    pub kept: usize,
    /// Fault start -> first `ok` submit completing after it.
    pub writes: Vec<u64>,
}

/// Per fault kind, for every fault that hit the leader (or all masters).
pub fn failovers(history: &[Op], faults: &[FaultRecord]) -> BTreeMap<String, Failover> {
    let mut out: BTreeMap<String, Failover> = BTreeMap::new();
    for f in faults {
        if !(f.hit_leader() || f.hit_all_masters()) {
            continue;
        }
        let e = out.entry(f.kind.clone()).or_default();
        let term_before = history
            .iter()
            .filter(|o| o.time_ns <= f.start_ns && o.kind == OpType::Ok)
            .filter_map(|o| match o.call {
                Call::LeaderPoll { term, leader: true, .. } => Some(term),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let end = f.end_ns.unwrap_or(u64::MAX).max(f.start_ns);
        let elected = history.iter().find_map(|o| match o.call {
            Call::LeaderPoll { term, leader: true, .. }
                if o.kind == OpType::Ok && o.time_ns > f.start_ns && term > term_before =>
            {
                Some(o.time_ns)
            }
            _ => None,
        });
        match elected {
            Some(t) if t <= end || f.hit_all_masters() => e.elections.push(t - f.start_ns),
            _ => e.kept += 1,
        }
        if let Some(t) = first_ack_after(history, f.start_ns) {
            e.writes.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use triad_jepsen::history::Op;

    fn op(index: u64, t: u64, kind: OpType, call: Call) -> Op {
        Op { index, time_ns: t, process: index, kind, call }
    }

    fn fault(kind: &str, start: u64, end: u64, leader: &str, target: &str) -> FaultRecord {
        FaultRecord {
            kind: kind.into(),
            targets: vec![target.into()],
            detail: String::new(),
            leader: Some(leader.into()),
            start_ns: start,
            end_ns: Some(end),
            start_s: 0.0,
            end_s: None,
        }
    }

    #[test]
    fn failover_measures_new_leader_and_first_write_for_leader_faults_only() {
        let poll = |i, t, node, term, leader| {
            op(i, t, OpType::Ok, Call::LeaderPoll { node, term, leader })
        };
        let submit =
            |i, t| op(i, t, OpType::Ok, Call::Submit { key: "k".into(), job_id: Some("j".into()) });
        let h = vec![
            poll(0, 10, 1, 1, true),
            poll(1, 150, 2, 2, true),
            submit(2, 170),
            poll(3, 400, 2, 2, true),
            submit(4, 500),
        ];
        let faults = vec![
            fault("kill-leader", 100, 300, "m1", "m1"),
            fault("pause", 350, 450, "m2", "m3"), // not the leader: ignored
            fault("bridge", 380, 460, "m2", "m2"), // leader kept its term
        ];
        let f = failovers(&h, &faults);
        assert_eq!(f["kill-leader"].elections, vec![50]);
        assert_eq!(f["kill-leader"].writes, vec![70]);
        assert!(!f.contains_key("pause"));
        assert_eq!(f["bridge"].kept, 1);
        assert_eq!(f["bridge"].writes, vec![120]);
    }
}
