//! Fencing, judged from the side effects task attempts record (guarantee 4).
//!
//! Every attempt of a side-effect-recording job writes `start` when it begins its work and `end`
//! when it completed it, with its fencing token, on the clock the history uses. Per (job, task):
//!
//! - **No overlap**: the `[start, end]` intervals of distinct tokens never overlap (touching is
//!   fine). An attempt with no `end` is open until +infinity, unless the final read shows it
//!   fenced (`lost`, `cancelled` or `failed`): a fenced attempt is killed, never writes `end`,
//!   and is taken to end when the task's next attempt recorded its `start`.
//! - **No stale work**: when the task has a succeeded attempt (final read), an `end` from another
//!   token that came after a later attempt had started is work done by a superseded (stale) token:
//!   a violation. An `end` from an earlier token *before* the next attempt started is a sequential
//!   re-run (the executor died after the work but before its report landed): at-least-once
//!   execution, which the SPEC allows; it is counted (`sequential_reruns`), not failed. A token
//!   ending twice is a violation, and the succeeded token itself must have recorded its `end` (a
//!   success nobody did the work for is a stale report accepted).
//!
//! Assumptions: attempts that recorded nothing are invisible here; an `end` without a `start`,
//! an `end` before its `start` and unknown events are reported as malformed (violations). Without
//! a final read, attempts without `end` are open and double completion cannot be judged.

use std::collections::{BTreeMap, BTreeSet};

use super::{final_read, Report, Verdict};
use crate::history::{Op, SideEffect};

#[derive(Default)]
struct Attempt {
    number: u32,
    starts: Vec<u64>,
    ends: Vec<u64>,
}

/// A task in the final read: its attempts' states by token, and its succeeded token.
type FinalTask<'a> = (BTreeMap<u64, &'a str>, Option<u64>);

fn at(t: u64) -> String {
    if t == u64::MAX {
        "inf".into()
    } else {
        t.to_string()
    }
}

/// Checks guarantee 4 from the side effects (see the module doc).
pub fn no_overlapping_attempts(history: &[Op], effects: &[SideEffect]) -> Verdict {
    let mut r = Report::new("no_overlapping_attempts");
    // (job, task) -> token -> attempt
    let mut tasks: BTreeMap<(&str, u32), BTreeMap<u64, Attempt>> = BTreeMap::new();
    for e in effects {
        let a = tasks.entry((e.job_id.as_str(), e.task)).or_default().entry(e.token).or_default();
        a.number = e.attempt;
        match e.event.as_str() {
            "start" => a.starts.push(e.time_ns),
            "end" => a.ends.push(e.time_ns),
            other => r.violation(format!(
                "malformed: side effect {other:?} of job {} task {} token {}",
                e.job_id, e.task, e.token
            )),
        }
    }
    // From the final read: (job, task) -> (token -> attempt state, succeeded token).
    let mut fin: BTreeMap<(&str, u32), FinalTask<'_>> = BTreeMap::new();
    let final_jobs = final_read(history).map(|(jobs, _)| jobs).unwrap_or(&[]);
    // Retention: a deleted job's attempts are gone from the final read. It was terminal, so none
    // of its attempts was live: one without an end was fenced (ended by the next one's start).
    let deleted: BTreeSet<&str> =
        final_jobs.iter().filter(|j| j.deleted.is_some()).map(|j| j.id.as_str()).collect();
    for j in final_jobs {
        for t in &j.tasks {
            let e = fin.entry((j.id.as_str(), t.index)).or_default();
            for a in &t.attempts {
                e.0.insert(a.token, a.state.as_str());
                if a.state == "succeeded" {
                    e.1 = Some(a.token);
                }
            }
        }
    }
    let (mut overlaps, mut twice, mut stale, mut open) = (0usize, 0usize, 0usize, 0usize);
    for (&(job, task), atts) in &tasks {
        let name = format!("job {job} task {task}");
        let states = fin.get(&(job, task));
        // Intervals (start, end, token), the end possibly +inf.
        let mut iv: Vec<(u64, Option<u64>, u64)> = Vec::new();
        for (&token, a) in atts {
            let who = format!("{name} token {token} (attempt {})", a.number);
            if a.ends.len() > 1 {
                twice += 1;
                r.violation(format!("work done twice: {who} recorded {} ends", a.ends.len()));
            }
            let end = a.ends.iter().max().copied();
            let start = match (a.starts.iter().min(), end) {
                (Some(&s), _) => s,
                (None, Some(e)) => {
                    r.violation(format!("malformed: {who} recorded an end but no start"));
                    e
                }
                (None, None) => continue,
            };
            if end.is_some_and(|e| e < start) {
                r.violation(format!("malformed: {who} ended before it started"));
            }
            iv.push((start, end, token));
        }
        iv.sort();
        // Close fenced attempts without an end at the next attempt's start.
        let starts: Vec<u64> = iv.iter().map(|i| i.0).collect();
        let ivs: Vec<(u64, u64, u64)> = iv
            .iter()
            .map(|&(s, e, token)| {
                let end = e.unwrap_or_else(|| {
                    let fenced = deleted.contains(job)
                        || states
                            .and_then(|st| st.0.get(&token))
                            .is_some_and(|s| matches!(*s, "lost" | "cancelled" | "failed"));
                    let next = starts.iter().copied().find(|&n| n > s);
                    match (fenced, next) {
                        (true, Some(n)) => n,
                        _ => {
                            open += 1;
                            u64::MAX
                        }
                    }
                });
                (s, end, token)
            })
            .collect();
        for (i, a) in ivs.iter().enumerate() {
            for b in &ivs[i + 1..] {
                // Sorted by start: b.0 >= a.0. Overlap iff b starts before a ends.
                if b.0 < a.1 {
                    overlaps += 1;
                    r.violation(format!(
                        "overlapping attempts of {name}: token {} [{}, {}] and token {} [{}, {}]",
                        a.2,
                        a.0,
                        at(a.1),
                        b.2,
                        b.0,
                        at(b.1)
                    ));
                }
            }
        }
        // Work done twice while the task has a succeeded attempt.
        if let Some(won) = states.and_then(|s| s.1) {
            for (&token, a) in atts.iter().filter(|(&t, a)| t != won && !a.ends.is_empty()) {
                let end = a.ends.iter().max().copied().unwrap_or(0);
                let superseded =
                    atts.iter().any(|(&t, b)| t > token && b.starts.iter().any(|&s| s < end));
                if !superseded {
                    // Sequential re-run: finished before any later attempt began (at-least-once).
                    twice += 1;
                    continue;
                }
                stale += 1;
                r.violation(format!(
                    "work done twice: {name}: token {token} (attempt {}) ended at {end} from a stale token, after a later attempt started, but token {won} is the one that succeeded",
                    a.number,
                ));
            }
        }
    }
    // A success whose work was never recorded, for jobs that record side effects.
    let recording: BTreeSet<&str> = tasks.keys().map(|k| k.0).collect();
    let mut unrecorded = 0;
    for (&(job, task), (_, won)) in &fin {
        if let (true, Some(won)) = (recording.contains(job), won) {
            let ended = tasks
                .get(&(job, task))
                .and_then(|a| a.get(won))
                .is_some_and(|a| !a.ends.is_empty());
            if !ended {
                unrecorded += 1;
                r.violation(format!("job {job} task {task} succeeded with token {won}, which never recorded the end of its work"));
            }
        }
    }
    r.stat("tasks", tasks.len());
    r.stat("attempts", tasks.values().map(BTreeMap::len).sum::<usize>());
    r.stat("overlaps", overlaps);
    r.stat("sequential_reruns", twice);
    r.stat("stale_ends", stale);
    r.stat("open_attempts", open);
    r.stat("unrecorded_successes", unrecorded as usize);
    r.verdict()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::history::AttemptView;

    fn run(attempts: Vec<AttemptView>, task_state: &str, effects: Vec<SideEffect>) -> Verdict {
        let mut h = H::new();
        h.submit(1, "k", 0, 1, "j");
        let job_state = match task_state {
            "succeeded" | "failed" | "cancelled" => task_state,
            _ => "running",
        };
        h.final_read(10_000, vec![job("j", "k", job_state, vec![task(0, task_state, attempts)])]);
        no_overlapping_attempts(&h.build(), &effects)
    }

    #[test]
    fn sequential_attempts_pass() {
        // Attempt 1 lost (its executor died, killed before it wrote `end`), attempt 2 succeeded;
        // attempt 1 is fenced, so it counts as ending when attempt 2 started.
        let v = run(
            vec![att(1, 3, "lost"), att(2, 8, "succeeded")],
            "succeeded",
            vec![
                se("start", "j", 0, 1, 3, 100),
                se("start", "j", 0, 2, 8, 500),
                se("end", "j", 0, 2, 8, 900),
            ],
        );
        assert!(v.valid, "{v:?}");
        assert_eq!(v.stats["open_attempts"], 0usize.into());
    }

    #[test]
    fn overlapping_attempts_fail() {
        let v = run(
            vec![att(1, 3, "lost"), att(2, 8, "succeeded")],
            "succeeded",
            vec![
                se("start", "j", 0, 1, 3, 100),
                se("start", "j", 0, 2, 8, 200),
                se("end", "j", 0, 2, 8, 900),
                se("end", "j", 0, 1, 3, 300),
            ],
        );
        assert!(!v.valid);
        assert!(
            mentions(
                &v,
                "overlapping attempts of job j task 0: token 3 [100, 300] and token 8 [200, 900]"
            ),
            "{v:?}"
        );
        assert!(mentions(&v, "from a stale token"), "{v:?}");
    }

    #[test]
    fn an_unfenced_attempt_without_end_stays_open() {
        // The final read says attempt 1 is still running (not fenced): it overlaps attempt 2.
        let v = run(
            vec![att(1, 3, "running"), att(2, 8, "running")],
            "running",
            vec![se("start", "j", 0, 1, 3, 100), se("start", "j", 0, 2, 8, 500)],
        );
        assert!(!v.valid);
        assert!(mentions(&v, "token 3 [100, inf]"), "{v:?}");
    }

    #[test]
    fn a_sequential_rerun_after_a_lost_report_is_counted_not_failed() {
        // Attempt 1 finished its work but its report was lost; attempt 2 did it again, later.
        let v = run(
            vec![att(1, 3, "lost"), att(2, 8, "succeeded")],
            "succeeded",
            vec![
                se("start", "j", 0, 1, 3, 100),
                se("end", "j", 0, 1, 3, 200),
                se("start", "j", 0, 2, 8, 500),
                se("end", "j", 0, 2, 8, 900),
            ],
        );
        assert!(v.valid, "{v:?}");
        assert_eq!(v.stats["sequential_reruns"], 1usize.into());
        assert_eq!(v.stats["stale_ends"], 0usize.into());
    }

    #[test]
    fn a_token_ending_twice_fails() {
        let v = run(
            vec![att(1, 3, "succeeded")],
            "succeeded",
            vec![
                se("start", "j", 0, 1, 3, 100),
                se("end", "j", 0, 1, 3, 200),
                se("end", "j", 0, 1, 3, 250),
            ],
        );
        assert!(!v.valid);
    }

    #[test]
    fn a_success_without_recorded_work_fails() {
        // Skip-fencing: the stale attempt 1 did the work, but its report was credited to token 8.
        let v = run(
            vec![att(1, 3, "lost"), att(2, 8, "succeeded")],
            "succeeded",
            vec![se("start", "j", 0, 1, 3, 100), se("start", "j", 0, 2, 8, 500)],
        );
        assert!(!v.valid);
        assert!(mentions(&v, "never recorded the end"), "{v:?}");
    }

    #[test]
    fn malformed_effects_are_reported_not_panicked_on() {
        let v = run(
            vec![att(1, 3, "succeeded")],
            "succeeded",
            vec![
                se("end", "j", 0, 1, 3, 100),
                se("start", "j", 0, 1, 3, 200),
                se("bogus", "j", 0, 1, 3, 300),
            ],
        );
        assert!(!v.valid);
        assert!(mentions(&v, "ended before it started"), "{v:?}");
        assert!(mentions(&v, "malformed: side effect \"bogus\""), "{v:?}");
        let v = no_overlapping_attempts(&[], &[se("end", "j", 0, 1, 3, 100)]);
        assert!(mentions(&v, "an end but no start"), "{v:?}");
    }
}
