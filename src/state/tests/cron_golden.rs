//! Golden scenarios for cron (`state::cron`): firing, overlap policies, missed runs,
//! suspend/resume, history limits. Each line is a job line of the state's own scenarios
//! (`super::parse_line`) or a cron line:
//!
//!   <now> create NAME [overlap=allow|forbid|replace] [deadline=MS] [keep_ok=N] [keep_failed=N]
//!                     [tz=ZONE] | SCHEDULE
//!   <now> tick                    (the leader: fires every due time of every cron, in order)
//!   <now> fire NAME at=MS job=jN  (one FireCron, e.g. a re-proposal)
//!   <now> trigger NAME job=jN | suspend NAME | resume NAME | delete NAME
//!
//! and the retention lines `collect`/`gc` (history limits: `gc runs=CRON:jN,..`).
//!
//! The transcript shows each command's result and the events it recorded, then every cron.
//! Jobs the leader creates on `tick` get ids j100, j101, … in order.

use super::*;
use crate::state::cron::{CronSpec, Overlap};
use crate::state::schedule::Schedule;

struct Run {
    s: State,
    next_job: u128,
    out: String,
}

fn cron_line(line: &str, run: &mut Run) -> Option<Vec<Command>> {
    let (words, schedule) = match line.split_once(" | ") {
        Some((w, s)) => (w, s.trim().to_string()),
        None => (line, String::new()),
    };
    let mut it = words.split_whitespace();
    let now: Millis = it.next()?.parse().ok()?;
    let verb = it.next()?;
    let rest: Vec<&str> = it.collect();
    let name = rest.first().map(|s| s.to_string()).unwrap_or_default();
    let opt: BTreeMap<&str, &str> = rest.iter().filter_map(|w| w.split_once('=')).collect();
    let num = |k: &str, d: u64| opt.get(k).map_or(d, |v| v.parse().expect("a number"));
    let job = || opt.get("job").map(|v| parse_job(v).expect("a job"));
    Some(match verb {
        "create" => vec![Command::CreateCron {
            spec: CronSpec {
                name: name.clone(),
                schedule,
                tz: opt.get("tz").map(|s| s.to_string()).unwrap_or_default(),
                overlap: Overlap::parse(opt.get("overlap").copied().unwrap_or(""))
                    .expect("overlap"),
                starting_deadline_ms: num("deadline", 0),
                keep_succeeded: num("keep_ok", 3) as u32,
                keep_failed: num("keep_failed", 1) as u32,
                job_name: name,
                job: JobSpec::new("/bin/true"),
            },
            now,
        }],
        "tick" => {
            // What the leader's firing loop proposes at `now`.
            let mut cmds = Vec::new();
            for c in run.s.crons().filter(|c| !c.suspended) {
                let sched =
                    Schedule::parse(&c.spec.schedule, &c.spec.tz, c.created_at).expect("schedule");
                for t in sched.due(c.handled_upto, now, 16) {
                    cmds.push(Command::FireCron {
                        name: c.spec.name.clone(),
                        scheduled_at: t,
                        job: j(run.next_job),
                        now,
                    });
                    run.next_job += 1;
                }
            }
            cmds
        }
        "fire" => vec![Command::FireCron {
            name,
            scheduled_at: num("at", 0),
            job: job().expect("job="),
            now,
        }],
        "trigger" => vec![Command::TriggerCron { name, job: job().expect("job="), now }],
        "suspend" => vec![Command::SuspendCron { name, suspended: true, now }],
        "resume" => vec![Command::SuspendCron { name, suspended: false, now }],
        "delete" => vec![Command::DeleteCron { name, now }],
        _ => return None,
    })
}

fn cron_summary(s: &State) -> String {
    let mut o = String::from("--- crons ---\n");
    for c in s.crons() {
        o.push_str(&format!(
            "cron {} suspended={} handled_upto={} fired={} skipped={} missed={} active={:?} beyond_limits={:?}\n",
            c.spec.name, c.suspended, c.handled_upto, c.fired, c.skipped, c.missed,
            c.active(s), c.beyond_limits(s)
        ));
        for r in &c.runs {
            o.push_str(&format!(
                "  run at={} fired_at={} {:?}\n",
                r.scheduled_at, r.fired_at, r.outcome
            ));
        }
    }
    let (jobs, _) = s.jobs_page(None, None, usize::MAX);
    for job in jobs {
        o.push_str(&format!("job {} {} {:?}\n", job.id, job.name, job.state));
    }
    short_ids(&o)
}

fn run_cron_golden(file: &str) {
    let scenario = Scenario::read("src/state/testdata_cron", file);
    let mut run = Run { s: State::new(), next_job: 100, out: String::new() };
    for line in scenario.lines() {
        let cmds = match cron_line(line, &mut run) {
            Some(c) => c,
            None => match parse_retention(&run.s, line) {
                Some(c) => vec![c.unwrap_or_else(|e| panic!("{file}: {line:?}: {e}"))],
                None => {
                    vec![parse_line(line).unwrap_or_else(|e| panic!("{file}: {line:?}: {e}"))]
                }
            },
        };
        run.out.push_str(&format!("{line}\n"));
        for cmd in cmds {
            if let Command::FireCron { name, scheduled_at, .. } = &cmd {
                run.out.push_str(&format!("  fire {name} at={scheduled_at}\n"));
            }
            let before = run.s.clone();
            let result = match run.s.apply(&cmd) {
                Ok(o) => format!("ok {o:?}"),
                Err(r) => {
                    assert_eq!(run.s, before, "{file}: {line:?}: rejected but changed state");
                    format!("rejected: {r}")
                }
            };
            run.s.check_invariants().unwrap_or_else(|e| panic!("{file}: after {line:?}: {e}"));
            run.out.push_str(&format!("  -> {}\n", short_ids(&result)));
            for c in run.s.take_changes() {
                run.out.push_str(&format!("     event {}\n", short_ids(&format!("{c:?}"))));
            }
        }
    }
    let summary = cron_summary(&run.s);
    run.out.push_str(&summary);
    scenario.check(&run.out);
}

golden_files!(
    "src/state/testdata_cron", run_cron_golden:
    cron_fires_once_per_time,
    cron_overlap_policies,
    cron_missed_past_deadline,
    cron_suspend_resume_trigger,
    cron_history_limits,
);

/// Runs the scenario lines `lines` (cron and job lines) on a fresh state, panicking on a
/// rejection, and returns the state.
fn state_after(lines: &[&str]) -> State {
    let mut run = Run { s: State::new(), next_job: 100, out: String::new() };
    for line in lines {
        let cmds = cron_line(line, &mut run)
            .unwrap_or_else(|| vec![parse_line(line).expect("a scenario line")]);
        for cmd in cmds {
            run.s.apply(&cmd).unwrap_or_else(|r| panic!("{line:?}: {r}"));
        }
    }
    run.s
}

/// The leader reads cron histories in slices: each slice names the runs past the limits of its
/// crons only, and the slices of a walk cover every cron once before it starts over.
#[test]
fn cron_history_walk_is_sliced_and_covers_every_cron() {
    let mut lines = vec!["0 register e1 slots=8".to_string()];
    for c in ["a", "b", "c"] {
        lines.push(format!("0 create {c} keep_ok=1 keep_failed=0 | @every 10s"));
    }
    lines.push("20000 tick".into()); // a, b, c fire at 10 s and 20 s: j100..j105
    let mut token = 0;
    for n in 100..106 {
        token += 1;
        lines.push(format!("20001 assign j{n}/0@e1"));
        lines.push(format!("20002 start j{n}/0 tok={token}"));
        lines.push(format!("20002 finish j{n}/0 tok={token} exit=0"));
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let s = state_after(&lines);

    let names = |runs: Vec<(String, JobId)>| runs.into_iter().map(|(c, _)| c).collect::<Vec<_>>();
    // Each cron keeps its newest success: its first run is past the limit.
    assert_eq!(names(s.cron_runs_due(None, usize::MAX, usize::MAX)), ["a", "b", "c"]);
    assert_eq!(names(s.cron_runs_due(None, 2, usize::MAX)), ["a", "b"]);
    assert_eq!(s.cron_scan_end(None, 2).as_deref(), Some("b"));
    assert_eq!(names(s.cron_runs_due(Some("b"), 2, usize::MAX)), ["c"]);
    assert_eq!(s.cron_scan_end(Some("b"), 2), None, "the walk reached the last cron");
    assert_eq!(s.cron_scan_end(None, 3), None, "a slice of exactly every cron ends the walk");
    assert_eq!(names(s.cron_runs_due(None, usize::MAX, 1)), ["a"], "at most `limit` runs");
}
