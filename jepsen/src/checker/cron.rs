//! Guarantee 8 for cron: every scheduled time of the run's cron fired at most once, and exactly
//! once unless recorded missed (or skipped), judged from the cron as the cluster holds it at the
//! end (`cron.json`) and, independently of its bounded run history, from every cron event the
//! event follower received.

use std::collections::{BTreeMap, BTreeSet};

use super::{Report, Verdict};
use crate::history::{CronRecord, EventLine, CRON_RUNS_KEPT};

/// Times this close to the suspension need not have been handled yet (a tick, a commit).
pub const SUSPEND_SLACK_MS: u64 = 3_000;
/// The cron must have been handled up to this close to its suspension: it did not stall.
pub const STALL_MS: u64 = 8_000;

/// See the module doc. `cron` is `None` for a run without a cron (older run directories): valid,
/// with stat `cron` = "none".
pub fn cron_once(cron: Option<&CronRecord>, events: Option<&[EventLine]>) -> Verdict {
    let mut r = Report::new("cron_once");
    let Some(c) = cron else {
        r.stat("cron", "none");
        return r.verdict();
    };
    if c.period_ms == 0 {
        r.violation(format!("the cron record has no period (schedule {:?})", c.schedule));
        return r.verdict();
    }
    // `@every P` is anchored at the cron's creation: its times are created_at + k·P, k ≥ 1.
    let times_in = |after: u64, upto: u64| -> Vec<u64> {
        let first = c.created_at_ms
            + ((after.saturating_sub(c.created_at_ms)) / c.period_ms + 1) * c.period_ms;
        (0..).map(|k| first + k * c.period_ms).take_while(|t| *t <= upto).collect()
    };
    // The run records, per scheduled time (triggers are outside the schedule).
    let mut by_time: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for run in c.runs.iter().filter(|r| r.outcome != "triggered") {
        by_time.entry(run.scheduled_at_ms).or_default().push(run.outcome.as_str());
    }
    for (t, outcomes) in &by_time {
        if outcomes.len() > 1 {
            r.violation(format!("time {t} was handled {} times: {outcomes:?}", outcomes.len()));
        }
    }
    // The window: from creation (or the oldest run kept) to just before the suspension.
    let truncated = c.runs.len() >= CRON_RUNS_KEPT;
    let start = match (truncated, c.runs.first()) {
        (true, Some(first)) => first.scheduled_at_ms.saturating_sub(1),
        _ => c.created_at_ms,
    };
    let end = c.handled_upto_ms.min(c.suspend_invoked_ms.saturating_sub(SUSPEND_SLACK_MS));
    if c.handled_upto_ms + STALL_MS < c.suspend_invoked_ms {
        r.violation(format!(
            "the cron stalled: handled only up to {} when it was suspended at {} ({} ms before)",
            c.handled_upto_ms,
            c.suspend_invoked_ms,
            c.suspend_invoked_ms - c.handled_upto_ms
        ));
    }
    let due = if end > start { times_in(start, end) } else { Vec::new() };
    let due_set: BTreeSet<u64> = due.iter().copied().collect();
    for t in &due {
        if !by_time.contains_key(t) {
            r.violation(format!("time {t} never fired and was not recorded missed"));
        }
    }
    for t in by_time.keys().filter(|t| **t > start && **t <= end) {
        if !due_set.contains(t) {
            r.violation(format!("time {t} fired but is not a time of {:?}", c.schedule));
        }
    }
    // Jobs: each one a run names, and no run naming a job the cluster does not have.
    let run_jobs: BTreeSet<&str> =
        c.runs.iter().filter(|r| !r.job_id.is_empty()).map(|r| r.job_id.as_str()).collect();
    let jobs: BTreeSet<&str> = c.jobs.iter().map(|(id, _)| id.as_str()).collect();
    if !truncated {
        for j in jobs.difference(&run_jobs) {
            r.violation(format!("job {j} is named after the cron but no run of it created it"));
        }
    }
    let gone = run_jobs.difference(&jobs).count();
    // The event stream's view: every firing or skip of the cron, never trimmed.
    let mut fired_events = 0usize;
    if let Some(lines) = events {
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        for e in lines.iter().flat_map(|l| &l.events) {
            if e.kind == "cron"
                && e.cron == c.name
                && matches!(e.cron_event.as_str(), "fired" | "skipped")
            {
                fired_events += 1;
                *seen.entry(e.scheduled_at_ms).or_default() += 1;
            }
        }
        for (t, n) in seen.iter().filter(|(_, n)| **n > 1) {
            r.violation(format!("the event stream shows time {t} handled {n} times"));
        }
    }
    let mut lags: Vec<u64> = c
        .runs
        .iter()
        .filter(|r| r.outcome == "fired")
        .map(|r| r.fired_at_ms.saturating_sub(r.scheduled_at_ms))
        .collect();
    lags.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lags.is_empty() {
            0
        } else {
            lags[((lags.len() - 1) as f64 * p).round() as usize]
        }
    };
    let count = |o: &str| c.runs.iter().filter(|r| r.outcome == o).count();
    r.stat("scheduled_in_window", due.len());
    r.stat("fired", count("fired"));
    r.stat("missed", count("missed"));
    r.stat("skipped", count("skipped"));
    r.stat("jobs", jobs.len());
    r.stat("jobs_gone", gone);
    r.stat("history_truncated", if truncated { "yes" } else { "no" });
    r.stat("stream_firings", fired_events);
    r.stat("lag_ms_p50", pct(0.5));
    r.stat("lag_ms_p99", pct(0.99));
    r.stat("lag_ms_max", lags.last().copied().unwrap_or(0));
    r.verdict()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{CronRunView, EventView};

    fn record(times: &[u64], created: u64, handled: u64, suspended: u64) -> CronRecord {
        CronRecord {
            name: "c".into(),
            schedule: "@every 1s".into(),
            period_ms: 1000,
            created_at_ms: created,
            starting_deadline_ms: 10_000,
            handled_upto_ms: handled,
            suspend_invoked_ms: suspended,
            runs: times
                .iter()
                .enumerate()
                .map(|(i, t)| CronRunView {
                    scheduled_at_ms: *t,
                    fired_at_ms: t + 20,
                    outcome: "fired".into(),
                    job_id: format!("j{i}"),
                })
                .collect(),
            jobs: (0..times.len()).map(|i| (format!("j{i}"), "succeeded".into())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_time_once_is_valid() {
        let c = record(&[1000, 2000, 3000, 4000, 5000], 0, 5000, 6500);
        let v = cron_once(Some(&c), None);
        assert!(v.valid, "{v:?}");
        assert_eq!(v.stats["scheduled_in_window"], 3usize.into());
    }

    #[test]
    fn a_time_fired_twice_is_caught_in_the_runs_and_in_the_stream() {
        let mut c = record(&[1000, 2000, 2000, 3000], 0, 3000, 4000);
        c.jobs.push(("extra".into(), "pending".into()));
        let v = cron_once(Some(&c), None);
        assert!(!v.valid);
        assert!(v.details.iter().any(|d| d.contains("time 2000 was handled 2 times")), "{v:?}");
        assert!(v.details.iter().any(|d| d.contains("job extra")), "{v:?}");
        let fired = |t| EventView {
            kind: "cron".into(),
            cron: "c".into(),
            cron_event: "fired".into(),
            scheduled_at_ms: t,
            ..Default::default()
        };
        let lines = vec![EventLine {
            kind: "message".into(),
            events: vec![fired(1000), fired(1000)],
            ..Default::default()
        }];
        let c = record(&[1000], 0, 1000, 1500);
        let v = cron_once(Some(&c), Some(&lines));
        assert!(v.details.iter().any(|d| d.contains("stream shows time 1000")), "{v:?}");
    }

    #[test]
    fn a_missing_time_and_a_stalled_cron_are_caught() {
        let c = record(&[1000, 3000], 0, 3000, 6500);
        let v = cron_once(Some(&c), None);
        assert!(v.details.iter().any(|d| d.contains("time 2000 never fired")), "{v:?}");
        let c = record(&[1000], 0, 1000, 20_000);
        let v = cron_once(Some(&c), None);
        assert!(v.details.iter().any(|d| d.contains("stalled")), "{v:?}");
    }

    #[test]
    fn a_run_without_a_cron_is_valid() {
        assert!(cron_once(None, None).valid);
    }
}
