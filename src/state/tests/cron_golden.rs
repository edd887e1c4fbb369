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
            None => vec![parse_line(line).unwrap_or_else(|e| panic!("{file}: {line:?}: {e}"))],
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
