//! Golden scenarios for the duties core (`testdata/*.txt`, regenerate with `UPDATE_GOLDEN=1`),
//! driven exactly as the shell drives it, with the clock and the executors scripted.
//!
//! A scenario file is a script, one event per line as `<ms> <verb> <args>`, then a line
//! `=== expected ===` and the transcript: each event with what it produced, then the tasks.
//! `<ms>` is both the monotonic time since the scenario began and the leader's wall clock.
//!
//!   <ms> lead [ttl=MS]             a new leader takes over: a fresh core and liveness table,
//!                                  and every executor's grace period starts (TTL 5000 unless set)
//!        [keep=MS] [max=N] [window=MS] [ettl=MS]
//!                                  with any of these, it collects under that retention policy
//!                                  (finished job TTL, max finished jobs, idempotency window,
//!                                  executor TTL); a collection prints what it deleted and the
//!                                  DeleteOutput calls that follow
//!   <ms> register E [slots=N]      commands applied as if committed by someone else:
//!   <ms> drain E                   registrations, submissions, cancels, the executor's reports
//!   <ms> submit jN [tasks=N] [attempts=N] [backoff=MS] [slots=N] [deadline=MS]
//!                  [parallelism=N] [after=jM[:any],...]
//!   <ms> cancel jN | suspend jN | resume jN
//!   <ms> running jN/I tok=T        (the Started report)
//!   <ms> finish jN/I tok=T [exit=C]
//!   <ms> beat E seq=N              heartbeat N of E's current registration reaches the leader
//!   <ms> tick | apply              a round: on the timer, or woken by an applied entry
//!   <ms> started tok=T | failed tok=T | refused tok=T
//!                                  how a start request the round sent ended
//!
//! A round prints its pass (`full`, `new jobs after seq N`; nothing when it planned nothing) and
//! its effects in execution order. Proposed commands are applied at once (the entry commits);
//! a full pass is timed as taking no time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use super::core::{self, Core, Dispatched, Effect, Now, Pass};
use crate::golden::{golden_files, Scenario};
use crate::master::liveness::Liveness;
use crate::state::{Command, JobId, JobSpec, Outcome, Resources, Retention, State};

const DEFAULT_TTL_MS: u64 = 5000;

fn job_name(id: &JobId) -> String {
    format!("j{}", id.as_u128())
}

fn parse_job(s: &str) -> Result<JobId, String> {
    let n: u128 =
        s.strip_prefix('j').and_then(|n| n.parse().ok()).ok_or(format!("bad job {s:?}"))?;
    Ok(JobId::from_u128(n))
}

fn parse_task(s: &str) -> Result<(JobId, u32), String> {
    let (job, index) = s.split_once('/').ok_or(format!("bad task {s:?}"))?;
    Ok((parse_job(job)?, index.parse().map_err(|_| format!("bad index in {s:?}"))?))
}

/// One scripted line, split: time, verb, positional operands, `key=value` options.
struct Line<'a> {
    ms: u64,
    verb: &'a str,
    pos: Vec<&'a str>,
    opt: BTreeMap<&'a str, &'a str>,
}

impl<'a> Line<'a> {
    fn parse(line: &'a str) -> Result<Line<'a>, String> {
        let mut words = line.split_whitespace();
        let ms = words.next().and_then(|t| t.parse().ok()).ok_or("line must start with a time")?;
        let verb = words.next().ok_or("missing verb")?;
        let (mut pos, mut opt) = (Vec::new(), BTreeMap::new());
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => {
                    opt.insert(k, v);
                }
                None => pos.push(w),
            }
        }
        Ok(Line { ms, verb, pos, opt })
    }

    fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        self.opt.get(key).map_or(Ok(default), |v| v.parse().map_err(|_| format!("bad {key}={v}")))
    }

    fn first(&self) -> Result<&'a str, String> {
        self.pos.first().copied().ok_or_else(|| "missing operand".to_string())
    }

    /// The state command this line scripts, if it is one.
    fn command(&self) -> Result<Option<Command>, String> {
        let now = self.ms;
        Ok(Some(match self.verb {
            "register" => Command::RegisterExecutor {
                id: self.first()?.into(),
                addr: self.first()?.into(),
                capacity: Resources { slots: self.num("slots", 1)? as u32, ..Default::default() },
                labels: BTreeMap::new(),
                now,
            },
            "drain" => Command::DrainExecutor { id: self.first()?.into(), now },
            "submit" => {
                let d = JobSpec::new("/bin/true");
                let spec = JobSpec {
                    task_count: self.num("tasks", 1)? as u32,
                    resources: Resources { slots: self.num("slots", 1)? as u32, ..d.resources },
                    max_attempts: self.num("attempts", d.max_attempts.into())? as u32,
                    retry_backoff_ms: self.num("backoff", d.retry_backoff_ms)?,
                    policy: crate::state::BatchPolicy {
                        deadline_ms: self.num("deadline", 0)?,
                        parallelism: self.num("parallelism", 0)? as u32,
                        after: match self.opt.get("after") {
                            None => Vec::new(),
                            Some(list) => list
                                .split(',')
                                .map(|d| {
                                    let (j, cond) = d.split_once(':').unwrap_or((d, "ok"));
                                    Ok(crate::state::Dependency {
                                        job: parse_job(j)?,
                                        require_success: cond != "any",
                                    })
                                })
                                .collect::<Result<_, String>>()?,
                        },
                        ..d.policy.clone()
                    },
                    ..d
                };
                let id = parse_job(self.first()?)?;
                Command::SubmitJob {
                    id,
                    name: String::new(),
                    idempotency_key: String::new(),
                    spec,
                    now,
                }
            }
            "cancel" => Command::CancelJob { id: parse_job(self.first()?)?, now },
            "deregister" => Command::DeregisterExecutor { id: self.first()?.into(), now },
            "suspend" => Command::SuspendJob { id: parse_job(self.first()?)?, now },
            "resume" => Command::ResumeJob { id: parse_job(self.first()?)?, now },
            "running" => {
                let (job, index) = parse_task(self.first()?)?;
                Command::TaskStarted { job, index, token: self.num("tok", 0)?, now }
            }
            "finish" => {
                let (job, index) = parse_task(self.first()?)?;
                let exit_code = self.num("exit", 0)? as i32;
                Command::TaskFinished {
                    job,
                    index,
                    token: self.num("tok", 0)?,
                    exit_code,
                    error: None,
                    now,
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// A leader's duties and the world around them.
struct World {
    t0: Instant,
    state: State,
    liveness: Liveness,
    core: Core,
}

impl World {
    /// An empty cluster at time 0, its leader's duties not yet started (`lead`).
    fn new() -> World {
        let t0 = Instant::now();
        World {
            t0,
            state: State::new(),
            liveness: Liveness::default(),
            core: Core::new(Duration::from_millis(DEFAULT_TTL_MS), t0),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn lead(&mut self, ms: u64, ttl_ms: u64, retention: Option<Retention>) {
        self.liveness = Liveness::default();
        core::grant_grace(&self.state, &self.liveness, self.at(ms));
        let core = Core::new(Duration::from_millis(ttl_ms), self.at(ms));
        self.core = match retention {
            Some(policy) => core.with_retention(policy),
            None => core,
        };
    }

    /// A round as the shell runs it (the planning pass takes no time).
    fn round(&mut self, ms: u64, tick: bool, out: &mut String) {
        let now = Now { at: self.at(ms), wall: ms };
        let unplaceable = self.core.sweep(&self.liveness, now.at, tick);
        let planned = self.core.plan(&self.state, &self.liveness, now, tick, unplaceable, true);
        match planned.pass {
            Pass::Skipped => {}
            Pass::NewJobs { after } => {
                out.push_str(&format!("  pass: new jobs after seq {after}\n"))
            }
            Pass::Full => out.push_str("  pass: full\n"),
        }
        let effects = self.core.dispatch(&self.state, &self.liveness, planned, now, tick);
        if effects.is_empty() {
            out.push_str("  -> nothing\n");
        }
        for effect in effects {
            match effect {
                Effect::Propose(commands) => {
                    for cmd in commands {
                        let what = describe(&cmd);
                        let result = self.apply(&cmd);
                        let _ = writeln!(out, "  -> propose {what}{result}");
                    }
                }
                Effect::Start { to, req } => {
                    let addr = &to.addr;
                    let job =
                        JobId::parse_str(&req.job_id).map(|j| job_name(&j)).unwrap_or(req.job_id);
                    let _ = writeln!(
                        out,
                        "  -> start {job}/{} #{} tok={} on {addr} epoch={} lease={}",
                        req.task_index, req.attempt, req.token, req.epoch, req.lease_seq
                    );
                }
                Effect::Stop { to, token } => {
                    let _ = writeln!(out, "  -> stop tok={token} on {}", to.addr);
                }
                Effect::Collect(cmd) => {
                    let what = describe(&cmd);
                    let outcome = self.state.apply(&cmd);
                    self.state.check_invariants().unwrap_or_else(|e| panic!("after {cmd:?}: {e}"));
                    let _ = writeln!(out, "  -> collect {what}");
                    let Ok(Outcome::Collected(c)) = outcome else {
                        let _ = writeln!(out, "     => {outcome:?}");
                        continue;
                    };
                    let jobs: Vec<String> = c.jobs.iter().map(|d| job_name(&d.id)).collect();
                    let _ = writeln!(
                        out,
                        "     => deleted [{}] tombstones expired {} executors forgotten [{}]",
                        jobs.join(" "),
                        c.tombstones,
                        c.executors.join(" ")
                    );
                    for e in Core::collected(&self.state, &c) {
                        if let Effect::DeleteOutput { to, jobs } = e {
                            let jobs: Vec<String> = jobs.iter().map(job_name).collect();
                            let _ = writeln!(
                                out,
                                "  -> delete output of [{}] on {}",
                                jobs.join(" "),
                                to.addr
                            );
                        }
                    }
                }
                Effect::DeleteOutput { to, .. } => {
                    panic!("a round never decides DeleteOutput itself (to {})", to.addr)
                }
            }
        }
    }

    /// Applies a committed command; the suffix to print (nothing when it simply succeeded).
    fn apply(&mut self, cmd: &Command) -> String {
        let result = match self.state.apply(cmd) {
            Ok(Outcome::Assigned { tokens }) => {
                let tokens: Vec<String> = tokens
                    .iter()
                    .map(|t| {
                        t.as_ref().map_or_else(|r| format!("rejected: {r}"), |t| format!("tok={t}"))
                    })
                    .collect();
                format!(" => {}", tokens.join(" "))
            }
            Ok(_) => String::new(),
            Err(r) => format!(" => rejected: {r}"),
        };
        self.state.check_invariants().unwrap_or_else(|e| panic!("after {cmd:?}: {e}"));
        result
    }

    fn step(&mut self, line: &Line<'_>, out: &mut String) -> Result<(), String> {
        let at = self.at(line.ms);
        let token = || line.num("tok", 0);
        match line.verb {
            "lead" => {
                let keys = ["keep", "max", "window", "ettl"];
                let retention = keys.iter().any(|k| line.opt.contains_key(k)).then_some(());
                let policy = match retention {
                    None => None,
                    Some(()) => Some(Retention {
                        finished_job_ttl_ms: line.num("keep", 0)?,
                        max_finished_jobs: line.num("max", 0)?,
                        idempotency_window_ms: line.num("window", 0)?,
                        executor_ttl_ms: line.num("ettl", 0)?,
                    }),
                };
                self.lead(line.ms, line.num("ttl", DEFAULT_TTL_MS)?, policy)
            }
            "beat" => {
                let id = line.first()?;
                let epoch = self.state.executor(id).map_or(0, |e| e.epoch);
                self.liveness.beat(id, epoch, line.num("seq", 0)?, at);
            }
            "tick" => self.round(line.ms, true, out),
            "apply" => self.round(line.ms, false, out),
            "started" => {
                let _ = self.core.on_dispatch(&Dispatched::Started(token()?), at);
            }
            "failed" => {
                let tries = self.core.on_dispatch(&Dispatched::Failed(token()?, "".into()), at);
                let _ = writeln!(
                    out,
                    "  -> tries={}",
                    tries.map_or("untracked".into(), |t| t.to_string())
                );
            }
            "refused" => {
                let _ = self.core.on_dispatch(&Dispatched::Refused(token()?, "".into()), at);
            }
            _ => {
                let cmd = line.command()?.ok_or(format!("unknown verb {:?}", line.verb))?;
                let result = self.apply(&cmd);
                let _ = writeln!(out, "  -> ok{result}");
            }
        }
        Ok(())
    }
}

/// A proposed command, in script words.
fn describe(cmd: &Command) -> String {
    match cmd {
        Command::ExecutorDead { id, epoch, .. } => format!("dead {id} epoch={epoch}"),
        Command::TaskLost { job, index, token, reason, .. } => {
            format!("lost {}/{index} tok={token} {reason:?}", job_name(job))
        }
        Command::CollectGarbage { jobs, tombstones, executors, .. } => {
            let jobs: Vec<String> = jobs.iter().map(job_name).collect();
            let tombs: Vec<String> = tombstones.iter().map(job_name).collect();
            format!(
                "jobs=[{}] tombstones=[{}] executors=[{}]",
                jobs.join(" "),
                tombs.join(" "),
                executors.join(" ")
            )
        }
        Command::AssignTasks { assignments, .. } => {
            let a: Vec<String> = assignments
                .iter()
                .map(|a| format!("{}/{}@{}", job_name(&a.job), a.index, a.executor))
                .collect();
            format!("assign {}", a.join(" "))
        }
        Command::ExpireJob { id, .. } => format!("expire {}", job_name(id)),
        Command::ResolveDependencies { id, .. } => format!("resolve {}", job_name(id)),
        other => format!("{other:?}"),
    }
}

/// Every task with its attempts, one line each.
fn summary(s: &State) -> String {
    let mut o = String::from("--- tasks ---\n");
    let (jobs, _) = s.jobs_page(None, None, usize::MAX);
    for job in jobs {
        if job.batch.reason.is_some() || job.batch.waiting || job.batch.suspended {
            let b = &job.batch;
            let _ = writeln!(
                o,
                "{} {:?} reason={:?} waiting={} suspended={}",
                job_name(&job.id),
                job.state,
                b.reason,
                b.waiting,
                b.suspended
            );
        }
        for t in &job.tasks {
            let _ = write!(o, "{}/{} {:?}", job_name(&job.id), t.index, t.state);
            for a in &t.attempts {
                let _ = write!(o, " | #{} tok{} {} {:?}", a.number, a.token, a.executor, a.state);
            }
            o.push('\n');
        }
    }
    o
}

fn run_golden(file: &str) {
    let scenario = Scenario::read("src/master/duties/testdata", file);
    let mut w = World::new();
    let mut out = String::new();
    let mut last = 0;
    for raw in scenario.lines() {
        let line = Line::parse(raw).unwrap_or_else(|e| panic!("{file}: {raw:?}: {e}"));
        assert!(line.ms >= last, "{file}: {raw:?}: time goes backwards");
        last = line.ms;
        out.push_str(raw);
        out.push('\n');
        w.step(&line, &mut out).unwrap_or_else(|e| panic!("{file}: {raw:?}: {e}"));
    }
    out.push_str(&summary(&w.state));
    scenario.check(&out);
}

golden_files!(
    "src/master/duties/testdata", run_golden:
    // batch semantics (issue 16)
    deadline_expires_and_stops,
    dependency_chain_resolves,
    suspend_stops_resume_places,
    parallelism_caps_placement,
    executor_dies_mid_start,
    start_lease_expires,
    new_leader_grace,
    cancelled_job_stops_once,
    backoff_ends_full_pass,
    dispatch_retry_then_give_up,
    refused_start_is_lost,
    retention_collects_in_batches,
);

/// Full passes after a change of the executors: never in a round that may not run one (the shell
/// runs those on the async worker), and after a long pass not before CHANGE_PASS_SPACING of its
/// lengths; until one runs, rounds know the executors changed.
#[test]
fn change_passes_are_deferred_not_lost() {
    let mut w = World::new();
    let mut out = String::new();
    for raw in ["0 register e1 slots=1", "0 lead ttl=10000", "0 beat e1 seq=1"] {
        w.step(&Line::parse(raw).unwrap(), &mut out).unwrap();
    }
    let plan = |w: &mut World, ms: u64, may_full: bool, took_ms: u64| {
        let now = Now { at: w.at(ms), wall: ms };
        let planned = w.core.plan(&w.state, &w.liveness, now, false, 0, may_full);
        let pass = planned.pass;
        let planned_at = Now { at: now.at + Duration::from_millis(took_ms), ..now };
        w.core.dispatch(&w.state, &w.liveness, planned, planned_at, false);
        pass
    };
    assert_eq!(plan(&mut w, 10, true, 100), Pass::Full, "a new leader's first round");
    assert!(w.core.executors_unchanged(&w.state, &w.liveness));

    w.step(&Line::parse("200 register e2 slots=1").unwrap(), &mut out).unwrap();
    assert!(!w.core.executors_unchanged(&w.state, &w.liveness));
    // 200 ms < 4 x 100 ms after the last (long) pass ended: deferred...
    assert_ne!(plan(&mut w, 200, true, 0), Pass::Full);
    assert!(!w.core.executors_unchanged(&w.state, &w.liveness), "the change is not forgotten");
    // ...and never in a round that may not run one, however late.
    assert_ne!(plan(&mut w, 1000, false, 0), Pass::Full);
    assert!(!w.core.executors_unchanged(&w.state, &w.liveness));
    // The next round that may runs it.
    assert_eq!(plan(&mut w, 1010, true, 0), Pass::Full);
    assert!(w.core.executors_unchanged(&w.state, &w.liveness));
}
