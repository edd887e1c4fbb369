//! Checkers over the jobs a run acknowledged, observed and finally read (guarantees 1, 2, 3, 5).
//!
//! All of them rely on the final read (the last `ok` `final-read`, taken after the faults
//! healed): without one they cannot decide and report not-valid.

use std::collections::{BTreeMap, BTreeSet};

use super::job_state::{self as js, PENDING};
use super::{final_read, pair_ops, Completed, Report, Verdict};
use crate::history::{Call, JobView, Op, OpType};

const NO_FINAL_READ: &str = "no ok final-read in the history: cannot check";

/// Job ids returned by `ok` submits, per key (in history order).
fn acked(ops: &[Completed<'_>]) -> BTreeMap<String, Vec<(String, String)>> {
    let mut m: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for op in ops {
        if let (OpType::Ok, Call::Submit { key, job_id: Some(id) }) = (op.kind(), op.call()) {
            m.entry(key.clone()).or_default().push((id.clone(), op.describe()));
        }
    }
    m
}

/// Guarantee 1: every job id an `ok` submit returned is in the final read (else "lost"), and
/// every job in the final read has a key some submit was invoked with (else "unexpected").
pub fn no_lost_acks(history: &[Op]) -> Verdict {
    let mut r = Report::new("no_lost_acks");
    let (ops, _) = pair_ops(history);
    let acked = acked(&ops);
    let Some((jobs, _)) = final_read(history) else {
        r.violation(NO_FINAL_READ);
        return r.verdict();
    };
    let ids: BTreeSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let mut lost = BTreeSet::new();
    for (key, acks) in &acked {
        for (id, desc) in acks {
            if !ids.contains(id.as_str()) && lost.insert(id.clone()) {
                r.violation(format!("lost: job {id} of key {key}, acknowledged by `{desc}`, is not in the final read"));
            }
        }
    }
    let invoked: BTreeSet<&str> = ops
        .iter()
        .filter_map(|o| {
            matches!(o.call(), Call::Submit { .. }).then(|| super::key_of(o.call())).flatten()
        })
        .collect();
    let mut unexpected = 0;
    for j in jobs {
        if !invoked.contains(j.key.as_str()) {
            unexpected += 1;
            r.violation(format!(
                "unexpected: job {} with key {:?} was never submitted",
                j.id, j.key
            ));
        }
    }
    r.stat("acknowledged", acked.values().map(Vec::len).sum::<usize>());
    r.stat(
        "acknowledged_jobs",
        acked.values().flatten().map(|(id, _)| id).collect::<BTreeSet<_>>().len(),
    );
    r.stat("final_jobs", jobs.len());
    r.stat("lost", lost.len());
    r.stat("unexpected", unexpected as usize);
    r.verdict()
}

/// Guarantee 2: every `ok` submit of a key returned the same job id; the final read holds exactly
/// one job for every acknowledged key (and that job is the acknowledged one), and at most one
/// for a key whose submits all timed out.
pub fn unique_per_key(history: &[Op]) -> Verdict {
    let mut r = Report::new("unique_per_key");
    let (ops, _) = pair_ops(history);
    let acked = acked(&ops);
    for (key, acks) in &acked {
        let (first, first_desc) = &acks[0];
        for (id, desc) in &acks[1..] {
            if id != first {
                r.violation(format!("key {key}: `{first_desc}` and `{desc}` name different jobs"));
            }
        }
    }
    let mut duplicated = 0;
    if let Some((jobs, _)) = final_read(history) {
        let mut per_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for j in jobs {
            per_key.entry(j.key.as_str()).or_default().push(j.id.as_str());
        }
        for (key, ids) in &per_key {
            if ids.len() > 1 {
                duplicated += 1;
                r.violation(format!(
                    "key {key}: {} jobs in the final read: {}",
                    ids.len(),
                    ids.join(", ")
                ));
            }
        }
        for (key, acks) in &acked {
            match per_key.get(key.as_str()).map(Vec::as_slice) {
                None | Some([]) => {
                    r.violation(format!("key {key}: acknowledged but no job in the final read"))
                }
                Some([id]) if *id != acks[0].0 => r.violation(format!(
                    "key {key}: acknowledged as {} but the final read has {id}",
                    acks[0].0
                )),
                _ => {}
            }
        }
    } else {
        r.violation(NO_FINAL_READ);
    }
    r.stat("acknowledged_keys", acked.len());
    r.stat("duplicated_keys", duplicated as usize);
    r.verdict()
}

/// One observation of a job's state.
struct Obs {
    start: u64,
    end: u64,
    state: u8,
    what: String,
}

/// Guarantee 3, job and task state machines.
///
/// Jobs: per job, the states seen by `ok` reads and cancels and by every final read must never
/// go backwards in real time: if observation `a` completed before `b` was invoked, `b`'s state
/// is reachable from `a`'s (`pending -> running -> terminal`, a terminal state only from
/// itself). Two observations of different terminal states are a violation whatever their
/// timing. A cancel must return a terminal state. (Observations of concurrent ops may appear in
/// any order: real-time order, not completion order, is what linearizability promises.)
///
/// Tasks, in the final read: known states; attempt numbers `1..=n` with strictly increasing
/// fencing tokens, every token used once in the cluster; at most one live (assigned/running)
/// attempt, and only the current (last) one; the task's state agrees with its current attempt;
/// a terminal job has only terminal tasks (succeeded/failed/cancelled) and no live attempt; a
/// succeeded job has only succeeded tasks; a failed job has a failed task; a live job has no
/// failed or cancelled task and not all tasks succeeded; a pending job has no attempt that
/// started (only assigned or lost ones).
pub fn legal_transitions(history: &[Op]) -> Verdict {
    let mut r = Report::new("legal_transitions");
    let (ops, _) = pair_ops(history);
    let mut obs: BTreeMap<String, Vec<Obs>> = BTreeMap::new();
    let mut finals = 0;
    for op in &ops {
        if op.kind() != OpType::Ok {
            continue;
        }
        let (start, end) = (op.start(), op.end());
        let mut add = |id: &str, s: &str, what: String, r: &mut Report| match js::parse(s) {
            Some(state) => {
                obs.entry(id.to_string()).or_default().push(Obs { start, end, state, what })
            }
            None => r.violation(format!("job {id}: unknown state {s:?} in `{what}`")),
        };
        match op.call() {
            Call::Read { job_id, state: Some(s), .. } if s != "not-found" => {
                add(job_id, s, op.describe(), &mut r)
            }
            Call::Cancel { job_id, state: Some(s), .. } => {
                if js::parse(s).is_some_and(|s| !js::is_terminal(s)) {
                    r.violation(format!("job {job_id}: cancel left it live: `{}`", op.describe()));
                }
                add(job_id, s, op.describe(), &mut r)
            }
            Call::FinalRead { jobs } => {
                finals += 1;
                for j in jobs {
                    add(&j.id, &j.state, format!("final read at {start}: {}", j.state), &mut r);
                }
            }
            _ => {}
        }
    }
    let mut observations = 0;
    for (id, list) in &mut obs {
        observations += list.len();
        check_job_observations(id, list, &mut r);
    }
    let mut tasks = 0;
    if let Some((jobs, _)) = final_read(history) {
        let mut tokens: BTreeMap<u64, String> = BTreeMap::new();
        for j in jobs {
            tasks += j.tasks.len();
            check_job_structure(j, &mut tokens, &mut r);
        }
    }
    r.stat("jobs_observed", obs.len());
    r.stat("observations", observations);
    r.stat("final_reads", finals as usize);
    r.stat("tasks_checked", tasks);
    r.verdict()
}

fn check_job_observations(id: &str, list: &mut [Obs], r: &mut Report) {
    // Any two different terminal states: one of them changed.
    let mut terminal: Option<&Obs> = None;
    // `deleted` follows a terminal state (its tombstone's is checked by `deleted_jobs_were_due`).
    for o in list.iter().filter(|o| js::is_terminal(o.state) && o.state != js::DELETED) {
        match terminal {
            None => terminal = Some(o),
            Some(t) if t.state != o.state => {
                r.violation(format!(
                    "job {id}: terminal state changed: `{}` and `{}`",
                    t.what, o.what
                ));
                return;
            }
            _ => {}
        }
    }
    // Real-time regressions: sort by completion; for each observation, the predecessors are a
    // prefix (completed before it was invoked). Track the prefix's highest live state.
    list.sort_by_key(|o| o.end);
    let mut prefix_max: Vec<(u8, usize)> = Vec::with_capacity(list.len()); // (max state, witness)
    for (i, o) in list.iter().enumerate() {
        let prev = prefix_max.last().copied().unwrap_or((PENDING, usize::MAX));
        prefix_max.push(if o.state > prev.0 || prev.1 == usize::MAX { (o.state, i) } else { prev });
    }
    for b in list.iter() {
        let n = list.partition_point(|a| a.end < b.start);
        if n == 0 {
            continue;
        }
        let (max, w) = prefix_max[n - 1];
        if !js::reachable(max, b.state) {
            r.violation(format!(
                "job {id}: `{}` completed before `{}` began, but the state went backwards",
                list[w].what, b.what
            ));
            return;
        }
    }
}

const TASK_STATES: [&str; 7] =
    ["pending", "assigned", "running", "succeeded", "failed", "lost", "cancelled"];

fn check_job_structure(j: &JobView, tokens: &mut BTreeMap<u64, String>, r: &mut Report) {
    let Some(state) = js::parse(&j.state) else { return }; // reported with the observations
    let terminal = js::is_terminal(state);
    let mut bad = |m: String| r.violation(format!("job {} ({}): {m}", j.id, j.state));
    let mut indices = BTreeSet::new();
    let (mut succeeded, mut failed, mut cancelled) = (0, 0, 0);
    for t in &j.tasks {
        let name = format!("task {}", t.index);
        if !indices.insert(t.index) {
            bad(format!("{name} listed twice"));
        }
        if !TASK_STATES.contains(&t.state.as_str()) {
            bad(format!("{name}: unknown state {:?}", t.state));
            continue;
        }
        match t.state.as_str() {
            "succeeded" => succeeded += 1,
            "failed" => failed += 1,
            "cancelled" => cancelled += 1,
            _ => {}
        }
        if terminal && !matches!(t.state.as_str(), "succeeded" | "failed" | "cancelled") {
            bad(format!("{name} is {} in a terminal job", t.state));
        }
        let mut last_token = 0;
        let mut live = 0;
        for (n, a) in t.attempts.iter().enumerate() {
            if !TASK_STATES[1..].contains(&a.state.as_str()) {
                bad(format!("{name} attempt {}: unknown state {:?}", a.number, a.state));
            }
            if a.number as usize != n + 1 {
                bad(format!("{name}: attempt #{} listed as number {}", n + 1, a.number));
            }
            if a.token <= last_token {
                bad(format!(
                    "{name}: attempt {} token {} not above the previous {last_token}",
                    a.number, a.token
                ));
            }
            last_token = a.token;
            if let Some(other) =
                tokens.insert(a.token, format!("job {} {name} attempt {}", j.id, a.number))
            {
                bad(format!(
                    "{name} attempt {}: token {} already used by {other}",
                    a.number, a.token
                ));
            }
            if matches!(a.state.as_str(), "assigned" | "running") {
                live += 1;
                if n + 1 != t.attempts.len() {
                    bad(format!(
                        "{name}: attempt {} is {} but not the current attempt",
                        a.number, a.state
                    ));
                }
                if terminal {
                    bad(format!(
                        "{name}: attempt {} still {} in a terminal job",
                        a.number, a.state
                    ));
                }
            }
            if state == PENDING && !matches!(a.state.as_str(), "assigned" | "lost") {
                bad(format!(
                    "{name}: attempt {} is {} but the job is still pending",
                    a.number, a.state
                ));
            }
        }
        if live > 1 {
            bad(format!("{name}: {live} live attempts"));
        }
        let cur = t.attempts.last().map(|a| a.state.as_str());
        let cur_terminal = cur.is_none_or(|c| !matches!(c, "assigned" | "running"));
        let consistent = match t.state.as_str() {
            "assigned" => cur == Some("assigned"),
            "running" => cur == Some("running"),
            "succeeded" => cur == Some("succeeded"),
            "failed" => matches!(cur, Some("failed" | "lost")),
            _ => cur_terminal, // pending, lost, cancelled
        };
        if !consistent {
            bad(format!(
                "{name} is {} but its current attempt is {}",
                t.state,
                cur.unwrap_or("none")
            ));
        }
    }
    let n = j.tasks.len();
    match j.state.as_str() {
        "succeeded" if succeeded != n => bad(format!("only {succeeded} of {n} tasks succeeded")),
        "failed" if failed == 0 => bad("no task failed".into()),
        "pending" | "running" if failed + cancelled > 0 => {
            bad(format!("{failed} failed and {cancelled} cancelled tasks in a live job"))
        }
        "pending" | "running" if n > 0 && succeeded == n => {
            bad("every task succeeded but the job is live".into())
        }
        _ => {}
    }
}

/// Guarantee 5: every job in the final read is terminal. The final read must have been invoked at
/// least `bound_ns` after `heal_time_ns` (when known); if it was earlier and some jobs are still
/// live, the check is undecided (not valid). Stats: jobs still live, per state.
pub fn terminal_after_heal(history: &[Op], bound_ns: u64, heal_time_ns: Option<u64>) -> Verdict {
    let mut r = Report::new("terminal_after_heal");
    let Some((jobs, op)) = final_read(history) else {
        r.violation(NO_FINAL_READ);
        return r.verdict();
    };
    let live: Vec<&JobView> =
        jobs.iter().filter(|j| !js::parse(&j.state).is_some_and(js::is_terminal)).collect();
    let deadline = heal_time_ns.map(|h| h.saturating_add(bound_ns));
    if let Some(h) = heal_time_ns {
        r.stat("final_read_after_heal_s", op.time_ns.saturating_sub(h) as f64 / 1e9);
    }
    match deadline {
        Some(d) if op.time_ns < d && !live.is_empty() => r.violation(format!(
            "undecided: {} jobs live in a final read taken {:.3} s before heal + bound",
            live.len(),
            (d - op.time_ns) as f64 / 1e9
        )),
        _ => {
            for j in &live {
                r.violation(format!(
                    "job {} (key {}) is still {} after healing",
                    j.id, j.key, j.state
                ));
            }
        }
    }
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &live {
        *by_state.entry(j.state.as_str()).or_default() += 1;
    }
    r.stat("jobs", jobs.len());
    r.stat("non_terminal", live.len());
    for (s, n) in by_state {
        r.stat(&format!("non_terminal_{s}"), n);
    }
    r.verdict()
}

/// Batch semantics (issue 16): no job in the final read failed. The workload's tasks always exit
/// 0 and a lost attempt does not use up `max_attempts`, so a failed job means ordinary faults
/// failed a correct job (what made the suite run with `--max-attempts 20` before).
pub fn no_failed_jobs(history: &[Op]) -> Verdict {
    let mut r = Report::new("no_failed_jobs");
    let Some((jobs, _)) = final_read(history) else {
        r.violation(NO_FINAL_READ);
        return r.verdict();
    };
    let failed: Vec<&JobView> = jobs.iter().filter(|j| j.state == "failed").collect();
    for j in &failed {
        r.violation(format!(
            "job {} (key {}) failed, though its tasks always succeed",
            j.id, j.key
        ));
    }
    r.stat("failed", failed.len());
    r.verdict()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn done_job(id: &str, key: &str) -> JobView {
        job(
            id,
            key,
            "succeeded",
            vec![task(0, "succeeded", vec![att(1, id.bytes().map(u64::from).sum(), "succeeded")])],
        )
    }

    fn good() -> H {
        let mut h = H::new();
        h.submit_info(1, "k1", 0);
        h.submit(2, "k1", 5, 10, "j1");
        h.submit(3, "k2", 5, 10, "j2");
        h.submit_info(4, "k3", 6); // never acknowledged, did create a job
        h.submit_fail(5, "k4", 6, 8); // created nothing
        h.read(2, "k1", "j1", 20, 30, "running");
        h.final_read(
            100,
            vec![
                job(
                    "j1",
                    "k1",
                    "succeeded",
                    vec![task(0, "succeeded", vec![att(1, 3, "lost"), att(2, 5, "succeeded")])],
                ),
                job(
                    "j2",
                    "k2",
                    "cancelled",
                    vec![
                        task(0, "cancelled", vec![att(1, 4, "cancelled")]),
                        task(1, "cancelled", vec![]),
                    ],
                ),
                job(
                    "j3",
                    "k3",
                    "failed",
                    vec![
                        task(0, "failed", vec![att(1, 6, "failed")]),
                        task(1, "succeeded", vec![att(1, 7, "succeeded")]),
                    ],
                ),
            ],
        );
        h
    }

    #[test]
    fn a_good_run_passes_all_job_checkers() {
        let h = good().build();
        for v in [
            no_lost_acks(&h),
            unique_per_key(&h),
            legal_transitions(&h),
            terminal_after_heal(&h, 10, Some(50)),
        ] {
            assert!(v.valid, "{v:?}");
        }
    }

    #[test]
    fn a_lost_ack_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.submit(2, "k2", 0, 10, "j2");
        h.final_read(100, vec![done_job("j1", "k1")]);
        let v = no_lost_acks(&h.build());
        assert!(!v.valid);
        assert!(mentions(&v, "lost: job j2"), "{v:?}");
        assert_eq!(v.stats["lost"], 1usize.into());
    }

    #[test]
    fn an_unexpected_job_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.final_read(100, vec![done_job("j1", "k1"), done_job("j9", "nobody")]);
        let v = no_lost_acks(&h.build());
        assert!(!v.valid);
        assert!(mentions(&v, "unexpected: job j9"), "{v:?}");
    }

    #[test]
    fn no_final_read_is_not_a_pass() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        let h = h.build();
        for v in [no_lost_acks(&h), unique_per_key(&h), terminal_after_heal(&h, 0, None)] {
            assert!(!v.valid, "{v:?}");
        }
    }

    #[test]
    fn a_duplicate_job_per_key_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.submit_info(2, "k1", 20);
        h.final_read(100, vec![done_job("j1", "k1"), done_job("j1b", "k1")]);
        let v = unique_per_key(&h.build());
        assert!(!v.valid);
        assert!(mentions(&v, "key k1: 2 jobs"), "{v:?}");
    }

    #[test]
    fn two_ok_submits_with_different_ids_fail() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.submit(2, "k1", 20, 30, "j2");
        h.final_read(100, vec![done_job("j1", "k1")]);
        let v = unique_per_key(&h.build());
        assert!(!v.valid);
        assert!(mentions(&v, "name different jobs"), "{v:?}");
    }

    #[test]
    fn a_final_job_other_than_the_acknowledged_one_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.final_read(100, vec![done_job("j7", "k1")]);
        assert!(!unique_per_key(&h.build()).valid);
    }

    fn transitions(f: impl FnOnce(&mut H)) -> Verdict {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        f(&mut h);
        legal_transitions(&h.build())
    }

    #[test]
    fn a_read_regressing_running_to_pending_fails() {
        let v = transitions(|h| {
            h.read(1, "k1", "j1", 20, 30, "running");
            h.read(2, "k1", "j1", 40, 50, "pending");
        });
        assert!(!v.valid);
        assert!(mentions(&v, "went backwards"), "{v:?}");
        // Concurrent reads may be observed in either completion order.
        let v = transitions(|h| {
            h.read(1, "k1", "j1", 20, 30, "running");
            h.read(2, "k1", "j1", 25, 50, "pending");
        });
        assert!(v.valid, "{v:?}");
    }

    #[test]
    fn a_read_after_cancel_showing_running_fails() {
        let v = transitions(|h| {
            h.cancel(1, "k1", "j1", 20, 30, "cancelled");
            h.read(1, "k1", "j1", 40, 50, "running");
        });
        assert!(!v.valid);
    }

    #[test]
    fn a_changed_terminal_state_fails_even_concurrently_and_in_the_final_read() {
        let v = transitions(|h| {
            h.read(1, "k1", "j1", 20, 30, "succeeded");
            h.read(2, "k1", "j1", 25, 50, "failed");
        });
        assert!(!v.valid);
        assert!(mentions(&v, "terminal state changed"), "{v:?}");
        let v = transitions(|h| {
            h.read(1, "k1", "j1", 20, 30, "cancelled");
            h.final_read(100, vec![done_job("j1", "k1")]);
        });
        assert!(!v.valid);
    }

    #[test]
    fn a_cancel_returning_running_fails() {
        let v = transitions(|h| {
            h.cancel(1, "k1", "j1", 20, 30, "running");
        });
        assert!(!v.valid);
        assert!(mentions(&v, "cancel left it live"), "{v:?}");
    }

    fn structure(j: JobView) -> Verdict {
        let mut h = H::new();
        h.submit(1, &j.key, 0, 10, &j.id.clone());
        h.final_read(100, vec![j]);
        legal_transitions(&h.build())
    }

    #[test]
    fn illegal_task_structures_fail() {
        let bad = [
            (
                job("j", "k", "succeeded", vec![task(0, "running", vec![att(1, 1, "running")])]),
                "in a terminal job",
            ),
            (
                job(
                    "j",
                    "k",
                    "succeeded",
                    vec![
                        task(0, "succeeded", vec![att(1, 1, "succeeded")]),
                        task(1, "failed", vec![att(1, 2, "failed")]),
                    ],
                ),
                "of 2 tasks succeeded",
            ),
            (job("j", "k", "failed", vec![task(0, "cancelled", vec![])]), "no task failed"),
            (
                job(
                    "j",
                    "k",
                    "running",
                    vec![task(0, "running", vec![att(1, 1, "running"), att(2, 2, "running")])],
                ),
                "live attempts",
            ),
            (
                job(
                    "j",
                    "k",
                    "running",
                    vec![task(0, "running", vec![att(1, 2, "lost"), att(2, 1, "running")])],
                ),
                "not above",
            ),
            (
                job("j", "k", "running", vec![task(0, "pending", vec![att(1, 1, "running")])]),
                "current attempt is running",
            ),
            (
                job("j", "k", "pending", vec![task(0, "running", vec![att(1, 1, "running")])]),
                "still pending",
            ),
            (
                job("j", "k", "running", vec![task(0, "failed", vec![att(1, 1, "failed")])]),
                "in a live job",
            ),
            (
                job("j", "k", "running", vec![task(0, "succeeded", vec![att(1, 1, "succeeded")])]),
                "every task succeeded",
            ),
            (job("j", "k", "running", vec![task(0, "exploded", vec![])]), "unknown state"),
            (
                job(
                    "j",
                    "k",
                    "running",
                    vec![
                        task(0, "pending", vec![att(1, 1, "lost")]),
                        task(1, "running", vec![att(1, 1, "running")]),
                    ],
                ),
                "already used",
            ),
        ];
        for (j, why) in bad {
            let v = structure(j.clone());
            assert!(!v.valid, "accepted {j:?}");
            assert!(mentions(&v, why), "{why}: {v:?}");
        }
        let v = structure(job(
            "j",
            "k",
            "running",
            vec![
                task(0, "running", vec![att(1, 1, "lost"), att(2, 3, "running")]),
                task(1, "pending", vec![]),
            ],
        ));
        assert!(v.valid, "{v:?}");
    }

    #[test]
    fn a_failed_job_fails_no_failed_jobs() {
        assert!(no_failed_jobs(&good().build()).stats["failed"] == 1usize.into());
        assert!(!no_failed_jobs(&good().build()).valid);
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.final_read(100, vec![done_job("j1", "k1")]);
        assert!(no_failed_jobs(&h.build()).valid);
    }

    #[test]
    fn non_terminal_after_heal_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.submit(1, "k2", 20, 30, "j2");
        h.final_read(
            1000,
            vec![
                done_job("j1", "k1"),
                job("j2", "k2", "running", vec![task(0, "running", vec![att(1, 9, "running")])]),
            ],
        );
        let h = h.build();
        let v = terminal_after_heal(&h, 100, Some(500));
        assert!(!v.valid);
        assert_eq!(v.stats["non_terminal"], 1usize.into());
        assert_eq!(v.stats["non_terminal_running"], 1usize.into());
        assert!(mentions(&v, "job j2 (key k2) is still running"), "{v:?}");
        // A final read taken before heal + bound cannot decide.
        let v = terminal_after_heal(&h, 1000, Some(500));
        assert!(!v.valid);
        assert!(mentions(&v, "undecided"), "{v:?}");
    }
}
