//! Guarantee 8 for the event stream: a client that follows `WatchEvents` through the run's
//! faults (resuming on another master from the last index it received) sees every transition of
//! the jobs, in index order, once:
//!
//! - the messages that carry events come in strictly increasing index order (no entry twice);
//! - every job's events chain: the first one creates it (`from` empty), each next one starts in
//!   the state the one before ended in; the same for every task (its first event leaves
//!   `pending`) — a missing or repeated event breaks a chain;
//! - each chain ends in the state the final read shows, for every job of the final read;
//! - the follower caught up with everything applied by the end (the runner's `caught_up`).
//!
//! A `reset` line (the stream said the follower's events were gone everywhere, `OUT_OF_RANGE`)
//! is allowed and counted: chains are not required to continue across it.

use std::collections::BTreeMap;

use super::{final_read, Report, Verdict};
use crate::history::{EventLine, Op};

/// See the module doc. `events` is `None` for a run without a follower (valid, stat
/// `follower` = "none"); `caught_up` is whether the follower received every entry applied
/// when the run ended.
pub fn events_complete(history: &[Op], events: Option<&[EventLine]>, caught_up: bool) -> Verdict {
    let mut r = Report::new("events_complete");
    let Some(lines) = events else {
        r.stat("follower", "none");
        return r.verdict();
    };
    if !caught_up {
        r.violation("the event follower did not receive every applied entry by the end of the run");
    }
    let mut last_index = 0u64;
    let mut epoch = 0u64;
    let mut resets = 0usize;
    let mut n_events = 0usize;
    // (epoch, state) after the last event of each job / task.
    let mut jobs: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    // Jobs whose last event is a deletion: (the state it was deleted from, when it arrived).
    let mut deleted: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    let mut tasks: BTreeMap<(&str, u32), (u64, &str)> = BTreeMap::new();
    for l in lines {
        if l.kind == "reset" {
            resets += 1;
            epoch += 1;
            continue;
        }
        if l.events.is_empty() {
            continue; // a progress mark
        }
        if l.index <= last_index {
            r.violation(format!(
                "events of entry {} came after those of entry {last_index} (a repeat or out of order)",
                l.index
            ));
        }
        last_index = last_index.max(l.index);
        for e in &l.events {
            n_events += 1;
            match e.kind.as_str() {
                "job" => {
                    if e.to == "deleted" {
                        deleted.insert(e.job_id.as_str(), (e.from.as_str(), l.time_ns));
                    } else {
                        deleted.remove(e.job_id.as_str());
                    }
                    let prev = jobs.insert(e.job_id.as_str(), (epoch, e.to.as_str()));
                    match prev {
                        None if epoch == 0 && !e.from.is_empty() => r.violation(format!(
                            "entry {}: job {} first seen going {} -> {}: its creation was missed",
                            l.index, e.job_id, e.from, e.to
                        )),
                        Some((ep, to)) if ep == epoch && to != e.from => r.violation(format!(
                            "entry {}: job {} went {} -> {} but was last seen {to}: an event was missed or repeated",
                            l.index, e.job_id, e.from, e.to
                        )),
                        _ => {}
                    }
                }
                "task" => {
                    let key = (e.job_id.as_str(), e.task_index);
                    let prev = tasks.insert(key, (epoch, e.to.as_str()));
                    let expected = match prev {
                        None if epoch == 0 => Some("pending"),
                        Some((ep, to)) if ep == epoch => Some(to),
                        _ => None,
                    };
                    if let Some(want) = expected.filter(|w| *w != e.from) {
                        r.violation(format!(
                            "entry {}: task {}/{} went {} -> {} but was last seen {want}: an event was missed or repeated",
                            l.index, e.job_id, e.task_index, e.from, e.to
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    // Every chain ends where the final read says the job is.
    let mut compared = 0usize;
    if let Some((final_jobs, invoked)) = final_read(history) {
        for j in final_jobs {
            compared += 1;
            // The final read is paged, not one snapshot: retention may delete a job after its page
            // was read. The stream then ends in `deleted`, from the state the read showed, received
            // once the read had begun; whether that deletion was due is deleted_jobs_were_due's.
            let deleted_during_read = deleted
                .get(j.id.as_str())
                .is_some_and(|(from, at)| *from == j.state && *at >= invoked.time_ns);
            match jobs.get(j.id.as_str()) {
                None if resets == 0 => r.violation(format!(
                    "job {} ({}) never appeared in the event stream",
                    j.id, j.state
                )),
                Some(_) if deleted_during_read => {}
                Some((_, to)) if *to != j.state => r.violation(format!(
                    "job {}: the stream last showed {to}, the final read shows {}",
                    j.id, j.state
                )),
                _ => {}
            }
            for t in &j.tasks {
                let seen = tasks.get(&(j.id.as_str(), t.index)).map(|(_, s)| *s);
                let last = seen.unwrap_or("pending");
                if (seen.is_some() || resets == 0) && last != t.state {
                    r.violation(format!(
                        "task {}/{}: the stream last showed {last}, the final read shows {}",
                        j.id, t.index, t.state
                    ));
                }
            }
        }
    } else {
        r.violation("no ok final-read in the history: cannot check");
    }
    r.stat("messages", lines.iter().filter(|l| l.kind == "message").count());
    r.stat("events", n_events);
    r.stat("last_index", last_index);
    r.stat("resets", resets);
    r.stat("jobs_compared", compared);
    r.verdict()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::{self as tu, H};
    use crate::history::EventView;

    fn job(id: &str, from: &str, to: &str) -> EventView {
        EventView {
            kind: "job".into(),
            job_id: id.into(),
            from: from.into(),
            to: to.into(),
            ..Default::default()
        }
    }
    fn task(id: &str, from: &str, to: &str) -> EventView {
        EventView {
            kind: "task".into(),
            job_id: id.into(),
            from: from.into(),
            to: to.into(),
            ..Default::default()
        }
    }
    fn msg(index: u64, events: Vec<EventView>) -> EventLine {
        EventLine { kind: "message".into(), index, events, ..Default::default() }
    }
    fn history(state: &str, task_state: &str) -> Vec<Op> {
        H::new()
            .final_read(10, vec![tu::job("a", "k", state, vec![tu::task(0, task_state, vec![])])])
            .build()
    }

    fn good() -> Vec<EventLine> {
        vec![
            msg(3, vec![job("a", "", "pending")]),
            msg(4, vec![]),
            msg(5, vec![task("a", "pending", "assigned")]),
            msg(6, vec![task("a", "assigned", "running"), job("a", "pending", "running")]),
            msg(7, vec![task("a", "running", "succeeded"), job("a", "running", "succeeded")]),
        ]
    }

    #[test]
    fn a_complete_stream_is_valid() {
        let v = events_complete(&history("succeeded", "succeeded"), Some(&good()), true);
        assert!(v.valid, "{v:?}");
    }

    #[test]
    fn a_gap_a_repeat_and_a_stale_end_are_caught() {
        let mut gap = good();
        gap.remove(2);
        let v = events_complete(&history("succeeded", "succeeded"), Some(&gap), true);
        assert!(v.details.iter().any(|d| d.contains("task a/0 went assigned -> running")), "{v:?}");

        let mut repeat = good();
        repeat.insert(3, repeat[2].clone());
        let v = events_complete(&history("succeeded", "succeeded"), Some(&repeat), true);
        assert!(v.details.iter().any(|d| d.contains("a repeat or out of order")), "{v:?}");

        let mut short = good();
        short.pop();
        let v = events_complete(&history("succeeded", "succeeded"), Some(&short), true);
        assert!(v.details.iter().any(|d| d.contains("the stream last showed running")), "{v:?}");

        let v = events_complete(&history("succeeded", "succeeded"), Some(&good()), false);
        assert!(!v.valid);
    }

    #[test]
    fn a_deletion_while_the_final_read_runs_is_no_stale_end() {
        // The final read (invoked at t = 10) saw the job succeeded; retention deleted it after.
        let deletion = |t: u64, from: &str| EventLine {
            time_ns: t,
            ..msg(8, vec![job("a", from, "deleted")])
        };
        let mut l = good();
        l.push(deletion(10, "succeeded"));
        let v = events_complete(&history("succeeded", "succeeded"), Some(&l), true);
        assert!(v.valid, "{v:?}");
        // Deleted before the read began: the read should not have found it.
        let mut l = good();
        l.push(deletion(9, "succeeded"));
        let v = events_complete(&history("succeeded", "succeeded"), Some(&l), true);
        assert!(v.details.iter().any(|d| d.contains("the stream last showed deleted")), "{v:?}");
        // Deleted from another state than the read showed: an event is missing.
        let mut l = good();
        l.pop();
        l.push(deletion(10, "running"));
        let v = events_complete(&history("succeeded", "succeeded"), Some(&l), true);
        assert!(!v.valid, "{v:?}");
    }

    #[test]
    fn a_reset_excuses_a_break_in_the_chains() {
        let mut l = good();
        l.insert(2, EventLine { kind: "reset".into(), index: 4, ..Default::default() });
        l.remove(3);
        let v = events_complete(&history("succeeded", "succeeded"), Some(&l), true);
        assert!(v.valid, "{v:?}");
    }
}
