//! Tests of the state machine: table tests per command and rejection, golden scenarios
//! (`testdata/*.txt`, regenerate with `UPDATE_GOLDEN=1`), property tests over random command
//! sequences, and the UUID range tiling.

use std::collections::BTreeMap;

use proptest::prelude::*;
use uuid::Uuid;

use super::query::LiveAttempt;
use super::range::{range_uuid, task_range};
use super::*;
use crate::golden::{golden_files, Scenario};

// --- command builders ---------------------------------------------------------------------------

fn j(n: u128) -> JobId {
    Uuid::from_u128(n)
}

fn labels(zone: &str) -> BTreeMap<String, String> {
    [("zone".to_string(), zone.to_string())].into()
}

fn reg(id: &str, slots: u32, zone: &str, now: Millis) -> Command {
    let capacity = Resources { slots, cpu_millis: 1000, memory_mib: 1024 };
    Command::RegisterExecutor {
        id: id.into(),
        addr: format!("{id}:7000"),
        capacity,
        labels: labels(zone),
        now,
    }
}

/// `spec` allowing a single lost attempt per task (losing one fails the task).
fn lost_once(spec: JobSpec) -> JobSpec {
    JobSpec { policy: BatchPolicy { max_lost: 1, ..spec.policy.clone() }, ..spec }
}

fn spec(tasks: u32, attempts: u32) -> JobSpec {
    JobSpec {
        task_count: tasks,
        max_attempts: attempts,
        retry_backoff_ms: 100,
        ..JobSpec::new("/bin/true")
    }
}

fn submit(n: u128, key: &str, spec: JobSpec, now: Millis) -> Command {
    Command::SubmitJob { id: j(n), name: format!("job{n}"), idempotency_key: key.into(), spec, now }
}

fn assign(list: &[(u128, u32, &str)], now: Millis) -> Command {
    let assignments = list
        .iter()
        .map(|&(n, index, e)| Assignment { job: j(n), index, executor: e.into() })
        .collect();
    Command::AssignTasks { assignments, now }
}

fn started(n: u128, index: u32, token: Token, now: Millis) -> Command {
    Command::TaskStarted { job: j(n), index, token, now }
}

fn finished(n: u128, index: u32, token: Token, exit_code: i32, now: Millis) -> Command {
    Command::TaskFinished { job: j(n), index, token, exit_code, error: None, now }
}

fn lost(n: u128, index: u32, token: Token, now: Millis) -> Command {
    Command::TaskLost { job: j(n), index, token, reason: "gone".into(), now }
}

fn cancel(n: u128, now: Millis) -> Command {
    Command::CancelJob { id: j(n), now }
}

fn drain(id: &str, now: Millis) -> Command {
    Command::DrainExecutor { id: id.into(), now }
}

fn dereg(id: &str, now: Millis) -> Command {
    Command::DeregisterExecutor { id: id.into(), now }
}

fn dead(id: &str, epoch: u64, now: Millis) -> Command {
    Command::ExecutorDead { id: id.into(), epoch, now }
}

/// Applies commands that must all succeed (and keep every invariant).
fn run(cmds: &[Command]) -> State {
    let mut s = State::new();
    for c in cmds {
        if let Err(e) = s.apply(c) {
            panic!("setup command {c:?} rejected: {e}");
        }
        s.check_invariants().unwrap();
    }
    s
}

fn ok(tokens: &[Result<Token, Rejection>]) -> Result<Outcome, Rejection> {
    Ok(Outcome::Assigned { tokens: tokens.to_vec() })
}

fn ill(from: &str, to: &str) -> Rejection {
    Rejection::IllegalTransition { from: from.into(), to: to.into() }
}

/// e1 (2 slots, zone a), e2 (1 slot, zone b), job 1 with two tasks, 2 attempts, 100 ms backoff.
fn base() -> Vec<Command> {
    vec![reg("e1", 2, "a", 0), reg("e2", 1, "b", 0), submit(1, "k1", spec(2, 2), 10)]
}

/// `base` plus task 0 assigned to e1 (token 1) and started.
fn running() -> Vec<Command> {
    let mut v = base();
    v.extend([assign(&[(1, 0, "e1")], 20), started(1, 0, 1, 30)]);
    v
}

fn with(mut v: Vec<Command>, more: impl IntoIterator<Item = Command>) -> Vec<Command> {
    v.extend(more);
    v
}

// --- table tests: every command, every rejection ------------------------------------------------

#[test]
fn table() {
    use Rejection::*;
    let done = Ok(Outcome::Done);
    let e = |s: &str| s.to_string();
    type Case = (&'static str, Vec<Command>, Command, Result<Outcome, Rejection>);
    let cases: Vec<Case> = vec![
        // RegisterExecutor
        ("register new", vec![], reg("e1", 1, "a", 0), Ok(Outcome::Registered { epoch: 1 })),
        (
            "register again bumps epoch",
            base(),
            reg("e1", 1, "a", 5),
            Ok(Outcome::Registered { epoch: 2 }),
        ),
        (
            "register revives dead",
            with(base(), [dead("e1", 1, 5)]),
            reg("e1", 1, "a", 6),
            Ok(Outcome::Registered { epoch: 2 }),
        ),
        // DrainExecutor
        ("drain alive", base(), drain("e1", 5), done.clone()),
        ("drain draining", with(base(), [drain("e1", 5)]), drain("e1", 6), done.clone()),
        ("drain unknown", base(), drain("zz", 5), Err(ExecutorNotFound(e("zz")))),
        (
            "drain left",
            with(base(), [dereg("e1", 5)]),
            drain("e1", 6),
            Err(ill("executor Left", "executor Draining")),
        ),
        (
            "drain dead",
            with(base(), [dead("e1", 1, 5)]),
            drain("e1", 6),
            Err(ill("executor Dead", "executor Draining")),
        ),
        // DeregisterExecutor
        ("deregister alive", base(), dereg("e1", 5), done.clone()),
        ("deregister draining", with(base(), [drain("e1", 5)]), dereg("e1", 6), done.clone()),
        ("deregister left", with(base(), [dereg("e1", 5)]), dereg("e1", 6), done.clone()),
        ("deregister unknown", base(), dereg("zz", 5), Err(ExecutorNotFound(e("zz")))),
        (
            "deregister dead",
            with(base(), [dead("e1", 1, 5)]),
            dereg("e1", 6),
            Err(ill("executor Dead", "executor Left")),
        ),
        // ExecutorDead
        ("dead alive", base(), dead("e1", 1, 5), done.clone()),
        ("dead draining", with(base(), [drain("e1", 5)]), dead("e1", 1, 6), done.clone()),
        ("dead dead", with(base(), [dead("e1", 1, 5)]), dead("e1", 1, 6), done.clone()),
        ("dead left", with(base(), [dereg("e1", 5)]), dead("e1", 1, 6), done.clone()),
        (
            "dead stale epoch",
            with(base(), [reg("e1", 2, "a", 5)]),
            dead("e1", 1, 6),
            Err(StaleEpoch { got: 1, current: 2 }),
        ),
        ("dead future epoch", base(), dead("e1", 7, 6), Err(StaleEpoch { got: 7, current: 1 })),
        ("dead unknown", base(), dead("zz", 1, 5), Err(ExecutorNotFound(e("zz")))),
        // SubmitJob
        (
            "submit",
            vec![],
            submit(1, "k1", spec(1, 1), 0),
            Ok(Outcome::Submitted { id: j(1), created: true }),
        ),
        (
            "submit no key",
            base(),
            submit(2, "", spec(1, 1), 0),
            Ok(Outcome::Submitted { id: j(2), created: true }),
        ),
        (
            "resubmit same key",
            base(),
            submit(2, "k1", spec(1, 1), 11),
            Ok(Outcome::Submitted { id: j(1), created: false }),
        ),
        (
            "resubmit same key, invalid spec",
            base(),
            submit(2, "k1", spec(0, 1), 11),
            Ok(Outcome::Submitted { id: j(1), created: false }),
        ),
        ("submit duplicate id", base(), submit(1, "k2", spec(1, 1), 11), Err(DuplicateJobId(j(1)))),
        (
            "submit duplicate id no key",
            base(),
            submit(1, "", spec(1, 1), 11),
            Err(DuplicateJobId(j(1))),
        ),
        (
            "submit invalid",
            vec![],
            submit(1, "", spec(0, 1), 0),
            Err(InvalidSpec(e("task count 0 not in 1..=100000"))),
        ),
        // CancelJob
        ("cancel pending", base(), cancel(1, 15), done.clone()),
        ("cancel running", running(), cancel(1, 35), done.clone()),
        ("cancel cancelled", with(base(), [cancel(1, 15)]), cancel(1, 16), done.clone()),
        ("cancel unknown", base(), cancel(9, 15), Err(JobNotFound(j(9)))),
        (
            "cancel succeeded",
            with(
                running(),
                [assign(&[(1, 1, "e1")], 31), finished(1, 0, 1, 0, 40), finished(1, 1, 2, 0, 41)],
            ),
            cancel(1, 50),
            Err(JobTerminal(j(1))),
        ),
        // AssignTasks
        ("assign", base(), assign(&[(1, 0, "e1"), (1, 1, "e2")], 20), ok(&[Ok(1), Ok(2)])),
        ("assign unknown job", base(), assign(&[(9, 0, "e1")], 20), ok(&[Err(JobNotFound(j(9)))])),
        (
            "assign unknown task",
            base(),
            assign(&[(1, 2, "e1")], 20),
            ok(&[Err(TaskNotFound(j(1), 2))]),
        ),
        (
            "assign unknown executor",
            base(),
            assign(&[(1, 0, "zz")], 20),
            ok(&[Err(ExecutorNotFound(e("zz")))]),
        ),
        (
            "assign terminal job",
            with(base(), [cancel(1, 15)]),
            assign(&[(1, 0, "e1")], 20),
            ok(&[Err(JobTerminal(j(1)))]),
        ),
        (
            "assign task twice",
            base(),
            assign(&[(1, 0, "e1"), (1, 0, "e1")], 20),
            ok(&[Ok(1), Err(ill("task Assigned", "task Assigned"))]),
        ),
        (
            "assign running task",
            running(),
            assign(&[(1, 0, "e1")], 40),
            ok(&[Err(ill("task Running", "task Assigned"))]),
        ),
        (
            "assign before submit time",
            base(),
            assign(&[(1, 0, "e1")], 5),
            ok(&[Err(ill("task Pending (backoff until 10)", "task Assigned"))]),
        ),
        (
            "assign during backoff",
            with(running(), [finished(1, 0, 1, 1, 40)]),
            assign(&[(1, 0, "e1")], 139),
            ok(&[Err(ill("task Pending (backoff until 140)", "task Assigned"))]),
        ),
        (
            "assign after backoff",
            with(running(), [finished(1, 0, 1, 1, 40)]),
            assign(&[(1, 0, "e1")], 140),
            ok(&[Ok(2)]),
        ),
        (
            "assign draining",
            with(base(), [drain("e1", 5)]),
            assign(&[(1, 0, "e1")], 20),
            ok(&[Err(ExecutorUnavailable(e("e1")))]),
        ),
        (
            "assign dead",
            with(base(), [dead("e1", 1, 5)]),
            assign(&[(1, 0, "e1")], 20),
            ok(&[Err(ExecutorUnavailable(e("e1")))]),
        ),
        (
            "assign left",
            with(base(), [dereg("e1", 5)]),
            assign(&[(1, 0, "e1")], 20),
            ok(&[Err(ExecutorUnavailable(e("e1")))]),
        ),
        (
            "assign constraint unmet",
            vec![
                reg("e1", 2, "a", 0),
                submit(1, "", JobSpec { constraints: labels("b"), ..spec(1, 1) }, 0),
            ],
            assign(&[(1, 0, "e1")], 20),
            ok(&[Err(ExecutorUnavailable(e("e1")))]),
        ),
        (
            "assign constraint met",
            vec![
                reg("e1", 2, "a", 0),
                submit(1, "", JobSpec { constraints: labels("a"), ..spec(1, 1) }, 0),
            ],
            assign(&[(1, 0, "e1")], 20),
            ok(&[Ok(1)]),
        ),
        (
            "assign over capacity",
            base(),
            assign(&[(1, 0, "e2"), (1, 1, "e2")], 20),
            ok(&[Ok(1), Err(NoCapacity(e("e2")))]),
        ),
        (
            "assign over memory",
            vec![
                reg("e1", 8, "a", 0),
                submit(
                    1,
                    "",
                    JobSpec {
                        resources: Resources { slots: 1, cpu_millis: 0, memory_mib: 2048 },
                        ..spec(1, 1)
                    },
                    0,
                ),
            ],
            assign(&[(1, 0, "e1")], 20),
            ok(&[Err(NoCapacity(e("e1")))]),
        ),
        // TaskStarted
        ("start", with(base(), [assign(&[(1, 0, "e1")], 20)]), started(1, 0, 1, 30), done.clone()),
        ("start duplicate", running(), started(1, 0, 1, 31), done.clone()),
        (
            "start stale token",
            running(),
            started(1, 0, 7, 31),
            Err(StaleToken { got: 7, current: 1 }),
        ),
        (
            "start never assigned",
            base(),
            started(1, 0, 0, 31),
            Err(StaleToken { got: 0, current: 0 }),
        ),
        ("start unknown job", running(), started(9, 0, 1, 31), Err(JobNotFound(j(9)))),
        ("start unknown task", running(), started(1, 5, 1, 31), Err(TaskNotFound(j(1), 5))),
        (
            "start finished",
            with(running(), [finished(1, 0, 1, 0, 40)]),
            started(1, 0, 1, 41),
            Err(ill("attempt Succeeded", "attempt Running")),
        ),
        (
            "start cancelled",
            with(running(), [cancel(1, 40)]),
            started(1, 0, 1, 41),
            Err(ill("attempt Cancelled", "attempt Running")),
        ),
        (
            "start lost",
            with(running(), [lost(1, 0, 1, 40)]),
            started(1, 0, 1, 41),
            Err(ill("attempt Lost", "attempt Running")),
        ),
        // TaskFinished
        ("finish ok", running(), finished(1, 0, 1, 0, 40), done.clone()),
        (
            "finish from assigned",
            with(base(), [assign(&[(1, 0, "e1")], 20)]),
            finished(1, 0, 1, 0, 40),
            done.clone(),
        ),
        ("finish failed", running(), finished(1, 0, 1, 3, 40), done.clone()),
        (
            "finish duplicate",
            with(running(), [finished(1, 0, 1, 0, 40)]),
            finished(1, 0, 1, 0, 41),
            done.clone(),
        ),
        (
            "finish after cancel",
            with(running(), [cancel(1, 40)]),
            finished(1, 0, 1, 0, 41),
            done.clone(),
        ),
        (
            "finish after lost",
            with(running(), [lost(1, 0, 1, 40)]),
            finished(1, 0, 1, 0, 41),
            done.clone(),
        ),
        (
            "finish stale token",
            with(running(), [lost(1, 0, 1, 40), assign(&[(1, 0, "e2")], 200)]),
            finished(1, 0, 1, 0, 201),
            Err(StaleToken { got: 1, current: 2 }),
        ),
        ("finish unknown job", running(), finished(9, 0, 1, 0, 40), Err(JobNotFound(j(9)))),
        ("finish unknown task", running(), finished(1, 9, 1, 0, 40), Err(TaskNotFound(j(1), 9))),
        // TaskLost
        ("lost running", running(), lost(1, 0, 1, 40), done.clone()),
        (
            "lost assigned",
            with(base(), [assign(&[(1, 0, "e1")], 20)]),
            lost(1, 0, 1, 40),
            done.clone(),
        ),
        (
            "lost finished",
            with(running(), [finished(1, 0, 1, 0, 40)]),
            lost(1, 0, 1, 41),
            done.clone(),
        ),
        ("lost stale token", running(), lost(1, 0, 0, 40), Err(StaleToken { got: 0, current: 1 })),
        ("lost unknown job", running(), lost(9, 0, 1, 40), Err(JobNotFound(j(9)))),
        ("lost unknown task", running(), lost(1, 2, 1, 40), Err(TaskNotFound(j(1), 2))),
    ];
    for (name, setup, cmd, want) in cases {
        let mut s = run(&setup);
        let before = s.clone();
        let got = s.apply(&cmd);
        assert_eq!(got, want, "case {name:?}");
        if got.is_err() {
            assert_eq!(s, before, "case {name:?}: a rejection changed state");
        }
        if let Err(msg) = s.check_invariants() {
            panic!("case {name:?}: {msg}");
        }
    }
}

#[test]
fn invalid_specs() {
    use limits::*;
    let big = "x".repeat(MAX_SPEC_BYTES);
    let cases: Vec<(&str, JobSpec)> = vec![
        ("empty command", JobSpec::new("  ")),
        ("zero tasks", spec(0, 1)),
        ("too many tasks", spec(MAX_TASKS + 1, 1)),
        ("zero attempts", spec(1, 0)),
        ("too many attempts", spec(1, MAX_ATTEMPTS + 1)),
        ("too many args", JobSpec { args: vec![String::new(); MAX_ARGS + 1], ..spec(1, 1) }),
        (
            "too many env",
            JobSpec {
                env: (0..=MAX_ENV).map(|i| (format!("K{i}"), String::new())).collect(),
                ..spec(1, 1)
            },
        ),
        (
            "too many constraints",
            JobSpec {
                constraints: (0..=MAX_CONSTRAINTS)
                    .map(|i| (format!("k{i}"), String::new()))
                    .collect(),
                ..spec(1, 1)
            },
        ),
        ("too many bytes", JobSpec { args: vec![big], ..spec(1, 1) }),
        ("nul in arg", JobSpec { args: vec!["a\0b".into()], ..spec(1, 1) }),
        ("env name with =", JobSpec { env: [("A=B".into(), "x".into())].into(), ..spec(1, 1) }),
        ("empty env name", JobSpec { env: [(String::new(), "x".into())].into(), ..spec(1, 1) }),
        (
            "empty constraint name",
            JobSpec { constraints: [(String::new(), "x".into())].into(), ..spec(1, 1) },
        ),
        ("zero slots", JobSpec { resources: Resources::default(), ..spec(1, 1) }),
        ("huge backoff", JobSpec { retry_backoff_ms: MAX_RETRY_BACKOFF_MS + 1, ..spec(1, 1) }),
        ("huge timeout", JobSpec { timeout_ms: MAX_TIMEOUT_MS + 1, ..spec(1, 1) }),
    ];
    for (name, bad) in cases {
        let mut s = State::new();
        let got = s.apply(&submit(1, "k", bad, 0));
        assert!(matches!(got, Err(Rejection::InvalidSpec(_))), "{name}: {got:?}");
        assert_eq!(s, State::new(), "{name}");
    }
    let long = "n".repeat(MAX_NAME_CHARS + 1);
    assert!(validate_submit(&long, "", &spec(1, 1)).is_err());
    assert!(validate_submit("", &long, &spec(1, 1)).is_err());
    // Limits are inclusive, and counted in characters.
    let edge = JobSpec { args: vec![String::new(); MAX_ARGS], ..spec(MAX_TASKS, MAX_ATTEMPTS) };
    assert_eq!(
        validate_submit(&"é".repeat(MAX_NAME_CHARS), &"k".repeat(MAX_KEY_CHARS), &edge),
        Ok(())
    );
}

// --- behaviour beyond the outcome ---------------------------------------------------------------

fn task(s: &State, n: u128, i: u32) -> &Task {
    s.job(&j(n)).unwrap().task(i).unwrap()
}

#[test]
fn register_loses_attempts_of_previous_incarnation() {
    let mut s = run(&with(running(), [assign(&[(1, 1, "e1")], 31)]));
    assert_eq!(s.used_resources("e1").slots, 2);
    s.apply(&reg("e1", 4, "a", 50)).unwrap();
    let e1 = s.executor("e1").unwrap();
    assert_eq!(
        (e1.epoch, e1.state, e1.capacity.slots, e1.registered_at),
        (2, ExecutorState::Alive, 4, 50)
    );
    assert_eq!(s.used_resources("e1"), Resources::default());
    for i in 0..2 {
        let t = task(&s, 1, i);
        assert_eq!((t.state, t.not_before), (TaskState::Pending, 150));
        let a = t.current().unwrap();
        assert_eq!((a.state, a.finished_at), (AttemptState::Lost, Some(50)));
        assert!(a.error.as_deref().unwrap().contains("re-registered"));
    }
    assert_eq!(s.job(&j(1)).unwrap().state, JobState::Running);
}

#[test]
fn dead_executor_fails_job_when_attempts_exhausted() {
    // One lost attempt allowed (max_lost 1; lost attempts do not count against max_attempts):
    // losing it fails the task, and the failure cancels the sibling on e2.
    let mut s = run(&[
        reg("e1", 2, "a", 0),
        reg("e2", 2, "a", 0),
        submit(1, "", lost_once(spec(2, 1)), 0),
        assign(&[(1, 0, "e1"), (1, 1, "e2")], 1),
        started(1, 1, 2, 2),
    ]);
    s.apply(&dead("e1", 1, 10)).unwrap();
    let job = s.job(&j(1)).unwrap();
    assert_eq!((job.state, job.finished_at), (JobState::Failed, Some(10)));
    assert_eq!(task(&s, 1, 0).state, TaskState::Failed);
    assert_eq!(task(&s, 1, 1).state, TaskState::Cancelled);
    assert_eq!(task(&s, 1, 1).current().unwrap().state, AttemptState::Cancelled);
    assert!(s.live_attempts().is_empty());
    assert_eq!(s.executor("e1").unwrap().state, ExecutorState::Dead);
}

#[test]
fn lost_before_start_keeps_job_pending() {
    let mut s = run(&with(base(), [assign(&[(1, 0, "e1")], 20)]));
    s.apply(&lost(1, 0, 1, 30)).unwrap();
    assert_eq!(s.job(&j(1)).unwrap().state, JobState::Pending);
    assert_eq!(task(&s, 1, 0).not_before, 130);
}

#[test]
fn finish_without_start_report_counts_as_started() {
    let mut s = run(&with(base(), [assign(&[(1, 0, "e1"), (1, 1, "e1")], 20)]));
    s.apply(&finished(1, 0, 1, 0, 30)).unwrap();
    assert_eq!(s.job(&j(1)).unwrap().state, JobState::Running);
    s.apply(&finished(1, 1, 2, 0, 31)).unwrap();
    let job = s.job(&j(1)).unwrap();
    assert_eq!((job.state, job.finished_at, job.updated_at), (JobState::Succeeded, Some(31), 31));
    assert_eq!(job.counts(), TaskCounts { succeeded: 2, ..TaskCounts::default() });
}

#[test]
fn failure_records_exit_code_and_clipped_error() {
    let mut s = run(&running());
    let error = Some("é".repeat(limits::MAX_ERROR_BYTES)); // 2 bytes each: must cut at a boundary
    s.apply(&Command::TaskFinished {
        job: j(1),
        index: 0,
        token: 1,
        exit_code: -9,
        error,
        now: 40,
    })
    .unwrap();
    let a = task(&s, 1, 0).current().unwrap();
    assert_eq!((a.state, a.exit_code, a.finished_at), (AttemptState::Failed, Some(-9), Some(40)));
    assert_eq!(a.error.as_ref().unwrap().len(), limits::MAX_ERROR_BYTES);
    assert_eq!(task(&s, 1, 0).state, TaskState::Pending);
}

#[test]
fn cancel_marks_live_attempts_cancelled() {
    let mut s = run(&with(running(), [assign(&[(1, 1, "e2")], 31)]));
    s.apply(&cancel(1, 50)).unwrap();
    let job = s.job(&j(1)).unwrap();
    assert_eq!((job.state, job.finished_at), (JobState::Cancelled, Some(50)));
    for i in 0..2 {
        assert_eq!(task(&s, 1, i).state, TaskState::Cancelled);
        assert_eq!(task(&s, 1, i).current().unwrap().state, AttemptState::Cancelled);
    }
    assert!(s.live_attempts().is_empty() && s.used_resources("e1").slots == 0);
}

#[test]
fn fencing_tokens_are_global_and_old_tokens_stay_fenced() {
    let mut s =
        run(&[reg("e1", 8, "a", 0), submit(1, "", spec(2, 3), 0), submit(2, "", spec(1, 3), 0)]);
    assert_eq!(
        s.apply(&assign(&[(1, 0, "e1"), (2, 0, "e1"), (1, 1, "e1")], 1)),
        ok(&[Ok(1), Ok(2), Ok(3)])
    );
    s.apply(&lost(1, 0, 1, 2)).unwrap();
    assert_eq!(s.apply(&assign(&[(1, 0, "e1")], 200)), ok(&[Ok(4)]));
    assert_eq!(s.next_token(), 5);
    // The first attempt's executor wakes up and reports: fenced, whatever it says.
    let stale = Err(Rejection::StaleToken { got: 1, current: 4 });
    for c in [started(1, 0, 1, 201), finished(1, 0, 1, 0, 201), lost(1, 0, 1, 201)] {
        let before = s.clone();
        assert_eq!(s.apply(&c), stale.clone());
        assert_eq!(s, before);
    }
    // A token of another task does not pass either.
    assert_eq!(s.apply(&started(1, 0, 3, 202)), Err(Rejection::StaleToken { got: 3, current: 4 }));
}

#[test]
fn queries() {
    let mut s = run(&[
        reg("e1", 2, "a", 0),
        reg("e2", 1, "b", 0),
        submit(1, "k1", spec(2, 1), 0),
        submit(2, "", JobSpec { priority: 5, ..spec(1, 1) }, 0),
        submit(3, "k3", spec(1, 1), 0),
        submit(4, "", JobSpec { retry_backoff_ms: 0, ..spec(1, 1) }, 100),
        cancel(3, 1),
    ]);
    let order: Vec<_> = s.pending_tasks(10).collect();
    assert_eq!(
        order,
        [(j(2), 0), (j(1), 0), (j(1), 1)],
        "priority desc, seq asc, index asc; job 4 not yet"
    );
    assert_eq!(s.pending_tasks(100).count(), 4);
    // The caller's filter leaves whole jobs out (by seq), the order of the rest unchanged.
    let seq1 = s.job(&j(1)).unwrap().seq;
    let kept: Vec<_> =
        s.pending_tasks_where(100, None, |seq| seq != seq1).map(|(job, i)| (job.id, i)).collect();
    assert_eq!(kept, [(j(2), 0), (j(4), 0)]);
    // Job 4 (submitted at 100) is the only task in the future at 10; none is after 100.
    assert_eq!(s.next_backoff_end(10, None, |_| true), Some(100));
    assert_eq!(s.next_backoff_end(10, None, |seq| seq != s.job(&j(4)).unwrap().seq), None);
    assert_eq!(s.next_backoff_end(100, None, |_| true), None);

    s.apply(&assign(&[(2, 0, "e2"), (1, 1, "e1")], 10)).unwrap();
    s.apply(&started(2, 0, 1, 11)).unwrap();
    let live = s.live_attempts();
    assert_eq!(live.len(), 2);
    assert_eq!(
        (live[0].executor.as_str(), live[0].job, live[0].index, live[0].token),
        ("e1", j(1), 1, 2)
    );
    assert_eq!(
        (live[1].executor.as_str(), live[1].state, live[1].attempt),
        ("e2", TaskState::Running, 1)
    );
    assert_eq!(s.used_resources("e1").slots, 1);
    assert_eq!(s.used_resources("nobody"), Resources::default());
    assert_eq!(s.live_attempts_on("e2").len(), 1);
    assert_eq!(s.executors().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e1", "e2"]);

    assert_eq!(s.job_by_key("k1").map(|j| j.id), Some(j(1)));
    assert!(s.job_by_key("").is_none() && s.job_by_key("nope").is_none());
    assert_eq!(s.job_count(), 4);
    assert_eq!(s.job(&j(4)).unwrap().counts().pending, 1);

    // Pagination walks every job once, in seq order, for any page size.
    for limit in 1..=5 {
        let (mut seen, mut after) = (vec![], None);
        loop {
            let (page, next) = s.jobs_page(None, after, limit);
            assert!(page.len() <= limit);
            seen.extend(page.iter().map(|j| j.seq));
            match next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, [1, 2, 3, 4], "limit {limit}");
    }
    let seqs = |(p, c): (Vec<&Job>, Option<u64>)| (p.iter().map(|j| j.seq).collect::<Vec<_>>(), c);
    assert_eq!(seqs(s.jobs_page(Some(JobState::Running), None, 10)), (vec![2], None));
    assert_eq!(seqs(s.jobs_page(Some(JobState::Pending), None, 1)), (vec![1], Some(1)));
    assert_eq!(seqs(s.jobs_page(Some(JobState::Pending), Some(1), 1)), (vec![4], None));
    assert_eq!(seqs(s.jobs_page(Some(JobState::Cancelled), None, 10)), (vec![3], None));
    assert_eq!(seqs(s.jobs_page(None, Some(4), 10)), (vec![], None));
    assert_eq!(seqs(s.jobs_page(None, None, 0)), (vec![], None));

    // Recently finished jobs, by finish time, for the dispatcher's kill sweep.
    let recent =
        |s: &State, since| s.jobs_recently_finished(since).map(|j| j.seq).collect::<Vec<_>>();
    assert_eq!(recent(&s, 0), [3]);
    assert_eq!(recent(&s, 2), Vec::<u64>::new());
    s.apply(&cancel(1, 50)).unwrap();
    assert_eq!(recent(&s, 0), [3, 1]);
    assert_eq!(recent(&s, 50), [1]);
    let killed = s.jobs_recently_finished(50).flat_map(|j| &j.tasks).filter_map(Task::current);
    assert_eq!(
        killed.map(|a| (a.token, a.state)).collect::<Vec<_>>(),
        [(2, AttemptState::Cancelled)]
    );
}

#[test]
fn serialization_round_trips() {
    let s = run(&with(running(), [assign(&[(1, 1, "e2")], 31), finished(1, 0, 1, 0, 40)]));
    let json = serde_json::to_vec(&s).unwrap();
    assert_eq!(serde_json::from_slice::<State>(&json).unwrap(), s);
    let bin = bincode::serialize(&s).unwrap();
    assert_eq!(bincode::deserialize::<State>(&bin).unwrap(), s);
}

// --- UUID ranges ----------------------------------------------------------------------------------

#[test]
fn task_ranges_tile_the_uuid_space() {
    for count in [1u32, 2, 3, 5, 7, 10, 64, 100, 255, 1000, 4096, 65_537, 100_000] {
        let mut expect_start = 0u128;
        let (mut min, mut max) = (u128::MAX, 0u128);
        for i in 0..count {
            let (a, b) = task_range(i, count);
            assert_eq!(a, expect_start, "count {count} index {i}: gap or overlap");
            assert!(b >= a);
            let len_minus_1 = b - a;
            (min, max) = (min.min(len_minus_1), max.max(len_minus_1));
            if i + 1 == count {
                assert_eq!(b, u128::MAX, "count {count}: does not reach the end");
            } else {
                expect_start = b + 1;
            }
        }
        assert!(max - min <= 1, "count {count}: sizes differ by more than one");
    }
    assert_eq!(task_range(0, 1), (0, u128::MAX));
    assert_eq!(task_range(1, 2), (1 << 127, u128::MAX));
    assert_eq!(task_range(0, 0), (0, u128::MAX), "count 0 acts as 1");
    assert_eq!(task_range(9, 2), task_range(1, 2), "index clamps");
    assert_eq!(task_range(u32::MAX, u32::MAX).1, u128::MAX);
    assert_eq!(
        task_range_uuids(1, 2),
        (
            "80000000-0000-0000-0000-000000000000".to_string(),
            "ffffffff-ffff-ffff-ffff-ffffffffffff".to_string()
        )
    );
    assert_eq!(range_uuid(0), "00000000-0000-0000-0000-000000000000");
}

proptest! {
    #[test]
    fn task_ranges_tile_for_any_count(count in 1u32..=u32::MAX, pick in any::<u32>()) {
        let i = pick % count;
        let (a, b) = task_range(i, count);
        if i > 0 { prop_assert_eq!(task_range(i - 1, count).1 + 1, a); }
        if i + 1 < count { prop_assert_eq!(b + 1, task_range(i + 1, count).0); } else { prop_assert_eq!(b, u128::MAX); }
        let size = |(a, b): (u128, u128)| b - a;
        let d = size((a, b)).abs_diff(size(task_range(0, count)));
        prop_assert!(d <= 1);
    }
}

// --- golden scenarios -----------------------------------------------------------------------------
//
// A scenario file is a script, one command per line as `<now> <verb> <args>`, then a line
// `=== expected ===` and the transcript: each command with its result, then the final state.
//
//   <now> register E [slots=N] [cpu=N] [mem=N] [label.K=V]...
//   <now> drain E | deregister E | dead E epoch=N
//   <now> submit jN [name=S] [key=S] [tasks=N] [attempts=N] [backoff=MS] [priority=N]
//                   [slots=N] [require.K=V]... [-- COMMAND ARGS...]
//   <now> cancel jN
//   <now> assign jN/I@E...
//   <now> start jN/I tok=T | finish jN/I tok=T exit=C [error=S] | lost jN/I tok=T reason=S
//         (each with by=E: the executor's report, fenced by who sends it too)
//   <now> deregister E [epoch=N] (with epoch: only the current registration leaves)
//   retention (issue 14), with the policy as [ttl=MS] [max=N] [window=MS] [ettl=MS]:
//   <now> submit ... [keep=MS]     (the job's own ttl_after_finished)
//   <now> gc [jN...] [tomb=jN,..] [exec=E,..] [runs=CRON:jN,..] POLICY
//         (CollectGarbage with exactly these)
//   <now> collect [limit=N] POLICY (what the leader proposes: `collection_due`, then applied)
//   <now> delete jN POLICY
//
// Job `jN` is the UUID with value N; outputs print such UUIDs back as `jN`.

fn parse_job(s: &str) -> Result<JobId, String> {
    s.strip_prefix('j').and_then(|n| n.parse().ok()).map(j).ok_or(format!("bad job {s:?}"))
}

fn parse_task(s: &str) -> Result<(JobId, u32), String> {
    let (job, index) = s.split_once('/').ok_or(format!("bad task {s:?}"))?;
    Ok((parse_job(job)?, index.parse().map_err(|_| format!("bad index in {s:?}"))?))
}

fn parse_line(line: &str) -> Result<Command, String> {
    let (words, argv) = match line.split_once(" -- ") {
        Some((w, a)) => (w, a.split_whitespace().map(String::from).collect::<Vec<_>>()),
        None => (line, vec![]),
    };
    let mut words = words.split_whitespace();
    let now: Millis =
        words.next().and_then(|t| t.parse().ok()).ok_or("line must start with a time")?;
    let verb = words.next().ok_or("missing verb")?;
    let rest: Vec<&str> = words.collect();
    let mut pos = vec![];
    let mut opt = BTreeMap::new();
    for w in &rest {
        match w.split_once('=') {
            Some((k, v)) => opt.insert(k.to_string(), v.to_string()),
            None => {
                pos.push(*w);
                None
            }
        };
    }
    let num = |k: &str, default: u64| -> Result<u64, String> {
        opt.get(k).map_or(Ok(default), |v| v.parse().map_err(|_| format!("bad {k}={v}")))
    };
    let text = |k: &str| opt.get(k).cloned().unwrap_or_default();
    let prefixed = |p: &str| -> BTreeMap<String, String> {
        opt.iter().filter_map(|(k, v)| Some((k.strip_prefix(p)?.to_string(), v.clone()))).collect()
    };
    let first = pos.first().copied().ok_or("missing operand")?;
    let task = || parse_task(first);
    Ok(match verb {
        "register" => Command::RegisterExecutor {
            id: first.into(),
            addr: format!("{first}:7000"),
            capacity: Resources {
                slots: num("slots", 1)? as u32,
                cpu_millis: num("cpu", 0)? as u32,
                memory_mib: num("mem", 0)?,
            },
            labels: prefixed("label."),
            now,
        },
        "drain" => Command::DrainExecutor { id: first.into(), now },
        "deregister" => match opt.get("epoch") {
            Some(_) => {
                Command::DeregisterExecutorAt { id: first.into(), epoch: num("epoch", 0)?, now }
            }
            None => Command::DeregisterExecutor { id: first.into(), now },
        },
        "dead" => Command::ExecutorDead { id: first.into(), epoch: num("epoch", 0)?, now },
        "submit" => {
            let mut argv = argv.into_iter();
            let d = JobSpec::new("");
            let spec = JobSpec {
                command: argv.next().unwrap_or_else(|| "/bin/true".into()),
                args: argv.collect(),
                task_count: num("tasks", 1)? as u32,
                resources: Resources { slots: num("slots", 1)? as u32, ..d.resources },
                constraints: prefixed("require."),
                max_attempts: num("attempts", d.max_attempts.into())? as u32,
                retry_backoff_ms: num("backoff", d.retry_backoff_ms)?,
                priority: opt
                    .get("priority")
                    .map_or(Ok(0), |v| v.parse().map_err(|_| "bad priority"))?,
                ttl_after_finished_ms: opt.get("keep").map(|_| num("keep", 0)).transpose()?,
                policy: BatchPolicy {
                    max_lost: num("lost", d.policy.max_lost.into())? as u32,
                    retry_on_exit: codes(opt.get("retry_on"))?,
                    fail_on_exit: codes(opt.get("fail_on"))?,
                    backoff_max_ms: num("backoff_max", d.policy.backoff_max_ms)?,
                    deadline_ms: num("deadline", 0)?,
                    parallelism: num("parallelism", 0)? as u32,
                    max_failed_tasks: num("max_failed", 0)? as u32,
                    after: match opt.get("after") {
                        None => Vec::new(),
                        Some(list) => list
                            .split(',')
                            .map(|x| {
                                let (job, cond) = x.split_once(':').unwrap_or((x, "ok"));
                                Ok(Dependency {
                                    job: parse_job(job)?,
                                    require_success: cond != "any",
                                })
                            })
                            .collect::<Result<_, String>>()?,
                    },
                },
                ..d
            };
            Command::SubmitJob {
                id: parse_job(first)?,
                name: text("name"),
                idempotency_key: text("key"),
                spec,
                now,
            }
        }
        "cancel" => Command::CancelJob { id: parse_job(first)?, now },
        "suspend" => Command::SuspendJob { id: parse_job(first)?, now },
        "resume" => Command::ResumeJob { id: parse_job(first)?, now },
        "expire" => Command::ExpireJob { id: parse_job(first)?, now },
        "resolve" => Command::ResolveDependencies { id: parse_job(first)?, now },
        "assign" => {
            let assignments = pos
                .iter()
                .map(|p| {
                    let (t, e) = p.split_once('@').ok_or(format!("bad assignment {p:?}"))?;
                    let (job, index) = parse_task(t)?;
                    Ok(Assignment { job, index, executor: e.into() })
                })
                .collect::<Result<_, String>>()?;
            Command::AssignTasks { assignments, now }
        }
        "start" | "finish" | "lost" if opt.contains_key("by") => {
            let (job, index) = task()?;
            let report = match verb {
                "start" => Report::Started,
                "finish" => Report::Finished {
                    exit_code: opt
                        .get("exit")
                        .map_or(Ok(0), |v| v.parse().map_err(|_| "bad exit"))?,
                    error: opt.get("error").cloned(),
                },
                _ => Report::Lost { reason: text("reason") },
            };
            let (token, executor) = (num("tok", 0)?, text("by"));
            Command::TaskReported { job, index, token, executor, report, now }
        }
        "start" => {
            let (job, index) = task()?;
            Command::TaskStarted { job, index, token: num("tok", 0)?, now }
        }
        "finish" => {
            let (job, index) = task()?;
            let exit_code = opt.get("exit").map_or(Ok(0), |v| v.parse().map_err(|_| "bad exit"))?;
            Command::TaskFinished {
                job,
                index,
                token: num("tok", 0)?,
                exit_code,
                error: opt.get("error").cloned(),
                now,
            }
        }
        "lost" => {
            let (job, index) = task()?;
            Command::TaskLost { job, index, token: num("tok", 0)?, reason: text("reason"), now }
        }
        "delete" => Command::DeleteJob { id: parse_job(first)?, policy: policy(&opt)?, now },
        v => return Err(format!("unknown verb {v:?}")),
    })
    .and_then(|cmd| match opt.get("jitter") {
        // The leader's draw, as a fraction of 2^32 given in per mille (jitter=500: half).
        Some(v) => {
            let pm: u64 = v.parse().map_err(|_| format!("bad jitter={v}"))?;
            Ok(cmd.with_jitter(((pm.min(999) << 32) / 1000) as u32))
        }
        None => Ok(cmd),
    })
}

/// `1,2,3` as exit codes (none when absent).
fn codes(list: Option<&String>) -> Result<Vec<i32>, String> {
    list.map_or(Ok(Vec::new()), |l| {
        l.split(',').map(|c| c.parse().map_err(|_| format!("bad exit code {c:?}"))).collect()
    })
}

/// The retention policy of a golden line (`ttl=`, `max=`, `window=`, `ettl=`; 0 when absent).
fn policy(opt: &BTreeMap<String, String>) -> Result<Retention, String> {
    let num = |k: &str| -> Result<u64, String> {
        opt.get(k).map_or(Ok(0), |v| v.parse().map_err(|_| format!("bad {k}={v}")))
    };
    Ok(Retention {
        finished_job_ttl_ms: num("ttl")?,
        max_finished_jobs: num("max")?,
        idempotency_window_ms: num("window")?,
        executor_ttl_ms: num("ettl")?,
    })
}

/// The retention verbs that need no state (`gc`) or the state (`collect`); none for others.
fn parse_retention(s: &State, line: &str) -> Option<Result<Command, String>> {
    let mut words = line.split_whitespace();
    let now: Millis = words.next()?.parse().ok()?;
    let verb = words.next()?;
    if verb != "gc" && verb != "collect" {
        return None;
    }
    let (mut opt, mut pos) = (BTreeMap::new(), vec![]);
    for w in words {
        match w.split_once('=') {
            Some((k, v)) => drop(opt.insert(k.to_string(), v.to_string())),
            None => pos.push(w),
        }
    }
    Some((|| {
        let policy = policy(&opt)?;
        if verb == "collect" {
            let limit = opt.get("limit").map_or(Ok(100), |v| v.parse().map_err(|_| "bad limit"))?;
            return Ok(s.collection_due(&policy, now, limit, None, usize::MAX).unwrap_or(
                Command::CollectGarbage {
                    jobs: vec![],
                    tombstones: vec![],
                    executors: vec![],
                    cron_runs: vec![],
                    policy,
                    now,
                },
            ));
        }
        let list = |k: &str| opt.get(k).map_or(vec![], |v| v.split(',').collect::<Vec<_>>());
        Ok(Command::CollectGarbage {
            jobs: pos.iter().map(|p| parse_job(p)).collect::<Result<_, _>>()?,
            tombstones: list("tomb").into_iter().map(parse_job).collect::<Result<_, _>>()?,
            executors: list("exec").into_iter().map(String::from).collect(),
            cron_runs: list("runs")
                .into_iter()
                .map(|r| {
                    let (c, j) = r.split_once(':').ok_or(format!("bad run {r:?} (CRON:jN)"))?;
                    Ok((c.to_string(), parse_job(j)?))
                })
                .collect::<Result<_, String>>()?,
            policy,
            now,
        })
    })())
}

/// Replaces every small UUID (`jN`) in `s` by its short name.
fn short_ids(s: &str) -> String {
    let prefix = "00000000-0000-0000-0000-";
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        let tail = &rest[at + prefix.len()..];
        match tail.get(..12).and_then(|h| u128::from_str_radix(h, 16).ok()) {
            Some(n) => {
                out.push_str(&format!("j{n}"));
                rest = &tail[12..];
            }
            None => {
                out.push_str(prefix);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

fn summary(s: &State, now: Millis) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "--- state: next_seq={} next_token={} ---", s.next_seq(), s.next_token());
    for e in s.executors() {
        let used = s.used_resources(&e.id);
        let labels: Vec<_> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let live: Vec<_> = s
            .live_attempts_on(&e.id)
            .iter()
            .map(|a| format!("{}/{}:tok{}", a.job, a.index, a.token))
            .collect();
        let _ = writeln!(
            o,
            "executor {} {:?} epoch={} slots={}/{} labels=[{}] live=[{}]",
            e.id,
            e.state,
            e.epoch,
            used.slots,
            e.capacity.slots,
            labels.join(","),
            live.join(" ")
        );
    }
    let (jobs, _) = s.jobs_page(None, None, usize::MAX);
    for job in jobs {
        let c = job.counts();
        let _ = writeln!(
            o,
            "job {} seq={} {:?} key={:?} finished_at={:?} counts: pending={} assigned={} running={} succeeded={} failed={} cancelled={}",
            job.id, job.seq, job.state, job.idempotency_key, job.finished_at, c.pending, c.assigned, c.running, c.succeeded, c.failed, c.cancelled
        );
        // Batch status, only when there is some (so older transcripts read as before).
        let b = &job.batch;
        if b.reason.is_some() || b.waiting || b.suspended {
            let _ = writeln!(
                o,
                "  batch: reason={:?} waiting={} suspended={} waiting_on={:?}",
                b.reason,
                b.waiting,
                b.suspended,
                s.waiting_on(job)
            );
        }
        for t in &job.tasks {
            let _ = write!(o, "  task {} {:?} not_before={}", t.index, t.state, t.not_before);
            if t.failures() + t.losses() > 0 {
                let _ = write!(o, " (failed={} lost={})", t.failures(), t.losses());
            }
            for a in &t.attempts {
                let _ = write!(o, " | #{} tok{} {} {:?}", a.number, a.token, a.executor, a.state);
                if let Some(code) = a.exit_code {
                    let _ = write!(o, " exit={code}");
                }
                if let Some(err) = &a.error {
                    let _ = write!(o, " error={err:?}");
                }
            }
            o.push('\n');
        }
    }
    for (id, t) in &s.tombstones {
        let _ = writeln!(
            o,
            "tombstone {id} {:?} key={:?} finished_at={} deleted_at={} expires_at={}",
            t.state, t.key, t.finished_at, t.deleted_at, t.expires_at
        );
    }
    if !s.idempotency.is_empty() && !s.tombstones.is_empty() {
        let keys: Vec<_> = s.idempotency.iter().map(|(k, id)| format!("{k}->{id}")).collect();
        let _ = writeln!(o, "keys: [{}]", keys.join(" "));
    }
    if s.epoch_floor > 0 {
        let _ = writeln!(o, "epoch_floor={}", s.epoch_floor);
    }
    let placeable: Vec<_> = s.pending_tasks(now).map(|(job, i)| format!("{job}/{i}")).collect();
    let _ = writeln!(o, "placeable at {now}: [{}]", placeable.join(" "));
    short_ids(&o)
}

const GOLDEN_DIR: &str = "src/state/testdata";

fn run_golden(file: &str) {
    let scenario = Scenario::read(GOLDEN_DIR, file);
    let mut s = State::new();
    let mut out = String::new();
    let mut now = 0;
    for line in scenario.lines() {
        let cmd = parse_retention(&s, line)
            .unwrap_or_else(|| parse_line(line))
            .unwrap_or_else(|e| panic!("{file}: {line:?}: {e}"));
        let before = s.clone();
        let proposed = match line.split_whitespace().nth(1) {
            Some("collect") => format!("  proposes {}\n", short_ids(&format!("{cmd:?}"))),
            _ => String::new(),
        };
        let result = match s.apply(&cmd) {
            Ok(o) => format!("ok {o:?}"),
            Err(r) => {
                assert_eq!(s, before, "{file}: {line:?}: rejected but changed state");
                format!("rejected: {r}")
            }
        };
        s.check_invariants().unwrap_or_else(|e| panic!("{file}: after {line:?}: {e}"));
        now = now.max(line.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or(0));
        out.push_str(&format!("{line}\n{proposed}  -> {}\n", short_ids(&result)));
    }
    out.push_str(&summary(&s, now));
    scenario.check(&out);
}

golden_files!(
    "src/state/testdata", run_golden:
    happy_four_tasks,
    retry_then_fail,
    executor_dead_reschedules,
    cancel_mid_run,
    idempotent_resubmit,
    stale_token_report,
    reporter_and_deregister_fencing,
    executor_restart_and_drain,
    priority_and_constraints,
    retention_ttl_and_count,
    retention_delete_and_tombstones,
    retention_executors,
    // batch semantics (issue 16)
    lost_is_not_failed,
    exit_code_rules,
    backoff_exponential_jitter,
    deadline_fails_job,
    parallelism_cap,
    suspend_resume,
    partial_success,
    dependency_chain,
);

// --- property tests ------------------------------------------------------------------------------
//
// Random sequences over a small universe (jobs j1..j3, executors e1..e2, keys k1/k2, small
// tokens and epochs) so that commands collide often. Besides raw commands, some operations
// pick a real live attempt or placeable task at apply time, so runs get deep into task
// lifecycles instead of bouncing off fencing.

#[derive(Clone, Debug)]
enum Op {
    Register(u8, u32, bool),
    Drain(u8),
    Deregister(u8),
    Dead(u8, u64),
    Submit {
        job: u8,
        key: u8,
        tasks: u32,
        attempts: u32,
        backoff: u64,
        slots: u32,
        zone_a: bool,
        priority: i32,
        valid: bool,
    },
    /// Retention: what the leader would collect under a policy (ttl, max, window, executor ttl).
    Collect(u64, u64, u64, u64),
    /// Retention: a hand-made collection naming jobs, tombstones and executors at random.
    Gc(Vec<u8>, Vec<u8>, u64, u64, u64),
    Delete(u8, u64),
    Cancel(u8),
    Assign(Vec<(u8, u32, u8)>),
    AssignPlaceable(usize, u8),
    Started(u8, u32, Token),
    Finished(u8, u32, Token, i32),
    Lost(u8, u32, Token),
    StartLive(usize),
    FinishLive(usize, i32),
    LoseLive(usize),
    // batch semantics (issue 16)
    SubmitBatch {
        job: u8,
        tasks: u32,
        parallelism: u32,
        max_failed: u32,
        deadline: u64,
        after: Option<(u8, bool)>,
        lost: u32,
        fail_on_2: bool,
    },
    Suspend(u8),
    Resume(u8),
    Expire(u8),
    Resolve(u8),
    /// The op, with the leader's jitter draw.
    Jittered(u32, Box<Op>),
}

fn op() -> impl Strategy<Value = Op> {
    let ex = 0u8..2;
    let job = 0u8..3;
    prop_oneof![
        4 => (ex.clone(), 0u32..5, any::<bool>()).prop_map(|(e, s, z)| Op::Register(e, s, z)),
        1 => ex.clone().prop_map(Op::Drain),
        1 => ex.clone().prop_map(Op::Deregister),
        1 => (ex.clone(), 0u64..4).prop_map(|(e, n)| Op::Dead(e, n)),
        3 => (job.clone(), 0u8..3, 1u32..4, 1u32..4, prop_oneof![Just(0u64), Just(5)], 1u32..3, prop::bool::weighted(0.3), -1i32..2, prop::bool::weighted(0.9))
            .prop_map(|(job, key, tasks, attempts, backoff, slots, zone_a, priority, valid)| Op::Submit { job, key, tasks, attempts, backoff, slots, zone_a, priority, valid }),
        1 => job.clone().prop_map(Op::Cancel),
        1 => prop::collection::vec((job.clone(), 0u32..4, ex.clone()), 1..4).prop_map(Op::Assign),
        6 => (any::<usize>(), ex.clone()).prop_map(|(n, e)| Op::AssignPlaceable(n, e)),
        1 => (job.clone(), 0u32..4, 0u64..10).prop_map(|(j, i, t)| Op::Started(j, i, t)),
        1 => (job.clone(), 0u32..4, 0u64..10, prop_oneof![Just(0), Just(1)]).prop_map(|(j, i, t, c)| Op::Finished(j, i, t, c)),
        1 => (job.clone(), 0u32..4, 0u64..10).prop_map(|(j, i, t)| Op::Lost(j, i, t)),
        4 => any::<usize>().prop_map(Op::StartLive),
        4 => (any::<usize>(), prop_oneof![3 => Just(0), 1 => Just(2)]).prop_map(|(n, c)| Op::FinishLive(n, c)),
        1 => any::<usize>().prop_map(Op::LoseLive),
        3 => (job.clone(), 1u32..4, 0u32..3, 0u32..2, prop_oneof![Just(0u64), Just(5), Just(40)], proptest::option::of((job.clone(), any::<bool>())), 1u32..3, any::<bool>())
            .prop_map(|(job, tasks, parallelism, max_failed, deadline, after, lost, fail_on_2)| Op::SubmitBatch { job, tasks, parallelism, max_failed, deadline, after, lost, fail_on_2 }),
        1 => job.clone().prop_map(Op::Suspend),
        1 => job.clone().prop_map(Op::Resume),
        1 => job.clone().prop_map(Op::Expire),
        2 => job.clone().prop_map(Op::Resolve),
        2 => (any::<u32>(), prop_oneof![
            (any::<usize>(), prop_oneof![Just(0), Just(2)]).prop_map(|(n, c)| Op::FinishLive(n, c)),
            any::<usize>().prop_map(Op::LoseLive),
            (ex.clone(), 0u64..4).prop_map(|(e, n)| Op::Dead(e, n)),
        ]).prop_map(|(j, op)| Op::Jittered(j, Box::new(op))),
        2 => (0u64..6, 0u64..3, 0u64..8, 0u64..6).prop_map(|(t, m, w, e)| Op::Collect(t, m, w, e)),
        1 => (prop::collection::vec(job.clone(), 0..3), prop::collection::vec(0u8..2, 0..2), 0u64..4, 0u64..3, 0u64..6)
            .prop_map(|(j, e, t, m, w)| Op::Gc(j, e, t, m, w)),
        1 => (job.clone(), 0u64..8).prop_map(|(j, w)| Op::Delete(j, w)),
    ]
}

/// Ops with a time step each (time never goes backwards, as the leader's clock would not).
fn ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    prop::collection::vec((0u64..4, op()), 0..80)
}

fn exec(e: u8) -> ExecutorId {
    format!("e{}", e + 1)
}

/// Turns an op into a command against the current state (deterministically).
fn resolve(s: &State, op: &Op, now: Millis) -> Option<Command> {
    let jid = |n: u8| j(u128::from(n) + 1);
    let live = |n: usize| {
        let all = s.live_attempts();
        (!all.is_empty()).then(|| all[n % all.len()].clone())
    };
    Some(match op {
        Op::Register(e, slots, zone_a) => {
            reg(&exec(*e), *slots, if *zone_a { "a" } else { "b" }, now)
        }
        Op::Drain(e) => drain(&exec(*e), now),
        Op::Deregister(e) => dereg(&exec(*e), now),
        Op::Dead(e, epoch) => dead(&exec(*e), *epoch, now),
        Op::Submit { job, key, tasks, attempts, backoff, slots, zone_a, priority, valid } => {
            let spec = JobSpec {
                task_count: if *valid { *tasks } else { 0 },
                max_attempts: *attempts,
                retry_backoff_ms: *backoff,
                resources: Resources { slots: *slots, cpu_millis: 0, memory_mib: 0 },
                constraints: if *zone_a { labels("a") } else { BTreeMap::new() },
                priority: *priority,
                ..JobSpec::new("/bin/true")
            };
            let key = ["", "k1", "k2"][*key as usize % 3];
            Command::SubmitJob {
                id: jid(*job),
                name: String::new(),
                idempotency_key: key.into(),
                spec,
                now,
            }
        }
        Op::Cancel(n) => cancel(u128::from(*n) + 1, now),
        Op::Assign(list) => Command::AssignTasks {
            assignments: list
                .iter()
                .map(|&(n, index, e)| Assignment { job: jid(n), index, executor: exec(e) })
                .collect(),
            now,
        },
        Op::AssignPlaceable(n, e) => {
            // A placeable task, on an executor that can take it when there is one (as the
            // scheduler would choose), else on `e` to exercise the refusals.
            let all: Vec<_> = s.pending_tasks(now).collect();
            let &(id, index) = all.get(n % all.len().max(1))?;
            let job = s.job(&id)?;
            let fits = |x: &&Executor| {
                x.state == ExecutorState::Alive
                    && x.satisfies(&job.spec.constraints)
                    && s.used_resources(&x.id).plus(job.spec.resources).fits_in(x.capacity)
            };
            let able: Vec<_> = s.executors().filter(fits).collect();
            let executor =
                able.get(usize::from(*e) % able.len().max(1)).map_or(exec(*e), |x| x.id.clone());
            Command::AssignTasks { assignments: vec![Assignment { job: id, index, executor }], now }
        }
        Op::Started(n, index, token) => {
            Command::TaskStarted { job: jid(*n), index: *index, token: *token, now }
        }
        Op::Finished(n, index, token, code) => Command::TaskFinished {
            job: jid(*n),
            index: *index,
            token: *token,
            exit_code: *code,
            error: None,
            now,
        },
        Op::Lost(n, index, token) => Command::TaskLost {
            job: jid(*n),
            index: *index,
            token: *token,
            reason: "x".into(),
            now,
        },
        Op::StartLive(n) => live(*n).map(|a| Command::TaskStarted {
            job: a.job,
            index: a.index,
            token: a.token,
            now,
        })?,
        Op::FinishLive(n, code) => live(*n).map(|a| Command::TaskFinished {
            job: a.job,
            index: a.index,
            token: a.token,
            exit_code: *code,
            error: Some("boom".into()),
            now,
        })?,
        Op::LoseLive(n) => live(*n).map(|a| Command::TaskLost {
            job: a.job,
            index: a.index,
            token: a.token,
            reason: "x".into(),
            now,
        })?,
        Op::SubmitBatch {
            job,
            tasks,
            parallelism,
            max_failed,
            deadline,
            after,
            lost,
            fail_on_2,
        } => {
            let spec = JobSpec {
                task_count: *tasks,
                max_attempts: 2,
                retry_backoff_ms: 5,
                policy: BatchPolicy {
                    max_lost: *lost,
                    fail_on_exit: if *fail_on_2 { vec![2] } else { Vec::new() },
                    backoff_max_ms: 20,
                    deadline_ms: *deadline,
                    parallelism: *parallelism,
                    max_failed_tasks: *max_failed,
                    after: after
                        .iter()
                        .map(|&(d, any)| Dependency { job: jid(d), require_success: !any })
                        .collect(),
                    ..BatchPolicy::default()
                },
                ..JobSpec::new("/bin/true")
            };
            Command::SubmitJob {
                id: jid(*job),
                name: String::new(),
                idempotency_key: String::new(),
                spec,
                now,
            }
        }
        Op::Suspend(n) => Command::SuspendJob { id: jid(*n), now },
        Op::Resume(n) => Command::ResumeJob { id: jid(*n), now },
        Op::Expire(n) => Command::ExpireJob { id: jid(*n), now },
        Op::Resolve(n) => Command::ResolveDependencies { id: jid(*n), now },
        Op::Jittered(jitter, op) => resolve(s, op, now)?.with_jitter(*jitter),
        Op::Collect(ttl, max, window, ettl) => {
            let policy = Retention {
                finished_job_ttl_ms: *ttl,
                max_finished_jobs: *max,
                idempotency_window_ms: *window,
                executor_ttl_ms: *ettl,
            };
            s.collection_due(&policy, now, 2, None, usize::MAX)?
        }
        Op::Gc(jobs, execs, ttl, max, window) => {
            let ids: Vec<JobId> = jobs.iter().map(|&n| jid(n)).collect();
            Command::CollectGarbage {
                jobs: ids.clone(),
                tombstones: ids,
                executors: execs.iter().map(|&e| exec(e)).collect(),
                cron_runs: vec![],
                policy: Retention {
                    finished_job_ttl_ms: *ttl,
                    max_finished_jobs: *max,
                    idempotency_window_ms: *window,
                    executor_ttl_ms: *ttl,
                },
                now,
            }
        }
        Op::Delete(n, window) => Command::DeleteJob {
            id: jid(*n),
            policy: Retention { idempotency_window_ms: *window, ..Retention::default() },
            now,
        },
    })
}

/// Runs ops on a fresh state, calling `check(before, command, result, after)` for each command.
fn drive(
    ops: &[(u64, Op)],
    mut check: impl FnMut(
        &State,
        &Command,
        &Result<Outcome, Rejection>,
        &State,
    ) -> Result<(), TestCaseError>,
) -> Result<(State, Vec<Command>), TestCaseError> {
    let mut s = State::new();
    let mut now = 0;
    let mut log = vec![];
    for (dt, op) in ops {
        now += dt;
        let Some(cmd) = resolve(&s, op, now) else { continue };
        let before = s.clone();
        let result = s.apply(&cmd);
        if let Err(msg) = s.check_invariants() {
            return Err(TestCaseError::fail(format!("after {cmd:?}: {msg}")));
        }
        check(&before, &cmd, &result, &s)?;
        log.push(cmd);
    }
    Ok((s, log))
}

// 256 cases each by default; set PROPTEST_CASES for a longer run.
proptest! {
    /// (a) The same log gives the same state, and the same bytes, on every replica; and a
    /// serialized state (a snapshot) reads back equal.
    #[test]
    fn prop_apply_is_deterministic(ops in ops()) {
        let (a, log) = drive(&ops, |_, _, _, _| Ok(()))?;
        let mut b = State::new();
        for c in &log {
            let _ = b.apply(c);
        }
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(bincode::serialize(&a).unwrap(), bincode::serialize(&b).unwrap());
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        prop_assert_eq!(&bincode::deserialize::<State>(&bincode::serialize(&a).unwrap()).unwrap(), &a);
        prop_assert_eq!(&serde_json::from_str::<State>(&serde_json::to_string(&a).unwrap()).unwrap(), &a);
    }

    /// (b) Terminal jobs and tasks never change (a terminal job not in any way at all).
    #[test]
    fn prop_terminal_states_are_final(ops in ops()) {
        drive(&ops, |before, cmd, _, after| {
            for (seq, job) in &before.jobs {
                // Only retention removes a job, and only a terminal one (`prop_retention_...`).
                let Some(now) = after.jobs.get(seq) else { continue };
                if job.state.is_terminal() {
                    prop_assert_eq!(job, now, "terminal job changed by {:?}", cmd);
                }
                for (t, u) in job.tasks.iter().zip(&now.tasks) {
                    if t.state.is_terminal() {
                        prop_assert_eq!(t, u, "terminal task changed by {:?}", cmd);
                    }
                }
            }
            Ok(())
        })?;
    }

    /// (b2) Batch semantics: never more tasks of a job assigned or running than its parallelism;
    /// a dependent never has an attempt before every dependency ended; a waiting or suspended
    /// job holds no live attempt; a job ends with a reason exactly when a batch rule ended it.
    #[test]
    fn prop_batch_rules_hold(ops in ops()) {
        drive(&ops, |_, cmd, _, after| {
            for job in after.jobs.values() {
                let c = job.counts();
                let p = job.spec.policy.parallelism;
                prop_assert!(p == 0 || c.assigned + c.running <= p, "parallelism broken by {:?}", cmd);
                if job.tasks.iter().any(|t| !t.attempts.is_empty()) {
                    for d in &job.spec.policy.after {
                        let ended = after.dependency(job, &d.job).is_none_or(|d| d.state.is_terminal());
                        prop_assert!(ended, "{} started before its dependency {} ended", job.id, d.job);
                    }
                }
                if job.batch.waiting || job.batch.suspended {
                    prop_assert_eq!(c.assigned + c.running, 0);
                }
                if job.state == JobState::Succeeded {
                    prop_assert!(c.failed <= job.spec.policy.max_failed_tasks);
                    prop_assert!(c.succeeded > 0);
                }
            }
            Ok(())
        })?;
    }

    /// (c) At most one live attempt per task (and only the current one, checked with all other
    /// invariants by `drive`), and tokens are issued in strictly increasing order.
    #[test]
    fn prop_one_live_attempt_and_increasing_tokens(ops in ops()) {
        let mut last = 0;
        drive(&ops, |_, _, result, after| {
            if let Ok(Outcome::Assigned { tokens }) = result {
                for t in tokens.iter().flatten() {
                    prop_assert!(*t > last, "token {} after {}", t, last);
                    last = *t;
                }
            }
            for job in after.jobs.values() {
                for t in &job.tasks {
                    prop_assert!(t.attempts.iter().filter(|a| a.state.is_live()).count() <= 1);
                }
            }
            prop_assert!(after.next_token() > last);
            Ok(())
        })?;
    }

    /// (d) A rejected command leaves the state unchanged (as does an assignment batch whose
    /// every entry was refused).
    #[test]
    fn prop_rejection_changes_nothing(ops in ops()) {
        drive(&ops, |before, cmd, result, after| {
            let all_refused = matches!(result, Ok(Outcome::Assigned { tokens }) if tokens.iter().all(Result::is_err));
            if result.is_err() || all_refused {
                prop_assert_eq!(before, after, "{:?} -> {:?}", cmd, result);
            }
            Ok(())
        })?;
    }

    /// (e) An idempotency key names exactly one job for as long as the job or its tombstone
    /// exists; resubmitting it returns that job. Only once both are gone may it name another.
    #[test]
    fn prop_idempotency_key_names_one_job(ops in ops()) {
        let mut named = BTreeMap::<String, JobId>::new();
        drive(&ops, |_, cmd, result, after| {
            if let (Command::SubmitJob { idempotency_key: key, .. }, Ok(Outcome::Submitted { id, .. })) = (cmd, result) {
                if !key.is_empty() {
                    let first = *named.entry(key.clone()).or_insert(*id);
                    prop_assert_eq!(first, *id);
                }
            }
            // A key whose job and tombstone are both gone is free again.
            named.retain(|_, id| after.job(id).is_some() || after.tombstone(id).is_some());
            for (key, id) in &named {
                prop_assert_eq!(after.idempotency.get(key), Some(id));
                let alive = after.jobs.values().filter(|j| &j.idempotency_key == key).count();
                prop_assert_eq!(alive, usize::from(after.job(id).is_some()));
            }
            Ok(())
        })?;
    }

    /// Retention deletes only terminal jobs, only through a collection or a deletion, and a
    /// deleted job's id is never reused while its tombstone lasts; every invariant holds after
    /// it (checked by `drive`).
    #[test]
    fn prop_retention_deletes_only_terminal_jobs(ops in ops()) {
        drive(&ops, |before, cmd, result, after| {
            let retention = matches!(cmd, Command::CollectGarbage { .. } | Command::DeleteJob { .. });
            for (seq, job) in &before.jobs {
                if after.jobs.contains_key(seq) {
                    continue;
                }
                prop_assert!(retention, "{:?} removed job {}", cmd, job.id);
                prop_assert!(job.state.is_terminal(), "{:?} deleted {:?} job {}", cmd, job.state, job.id);
                let reported = matches!(result, Ok(Outcome::Collected(c)) if c.jobs.iter().any(|d| d.id == job.id));
                prop_assert!(reported, "deleted job {} not in the outcome", job.id);
            }
            if let Command::SubmitJob { id, .. } = cmd {
                if before.tombstone(id).is_some() {
                    prop_assert!(after.job(id).is_none(), "tombstoned id {} reused", id);
                }
            }
            if let Command::DeleteJob { id, .. } = cmd {
                if before.job(id).is_some_and(|j| !j.state.is_terminal()) {
                    prop_assert!(matches!(result, Err(Rejection::JobNotTerminal(_))));
                }
            }
            Ok(())
        })?;
    }

    /// Once faults stop, every job finishes: a healthy executor that runs whatever it is given
    /// drives every job to a terminal state (no task can get stuck).
    #[test]
    fn prop_every_job_finishes_after_faults_heal(ops in ops()) {
        let (mut s, _) = drive(&ops, |_, _, _, _| Ok(()))?;
        let mut now = 1_000_000;
        s.apply(&Command::RegisterExecutor {
            id: "healthy".into(), addr: String::new(),
            capacity: Resources { slots: 1000, cpu_millis: 0, memory_mib: 0 }, labels: labels("a"), now,
        }).unwrap();
        for _ in 0..20 {
            now += 1000;
            // What the leader's duties do: resolve dependencies that ended, and (as a client
            // would) resume what was suspended.
            let resolvable: Vec<_> = s.dependencies_resolvable().map(|j| j.id).collect();
            for id in resolvable {
                s.apply(&Command::ResolveDependencies { id, now }).unwrap();
            }
            let suspended: Vec<_> = s.suspended_jobs().map(|j| j.id).collect();
            for id in suspended {
                s.apply(&Command::ResumeJob { id, now }).unwrap();
            }
            let placeable: Vec<_> = s.pending_tasks(now).map(|(job, index)| Assignment { job, index, executor: "healthy".into() }).collect();
            s.apply(&Command::AssignTasks { assignments: placeable, now }).unwrap();
            for a in s.live_attempts_on("healthy") {
                s.apply(&finished_cmd(&a, now)).unwrap();
            }
            // Attempts still on the old executors are lost when those are declared dead.
            for e in ["e1", "e2"] {
                if let Some(epoch) = s.executor(e).map(|x| x.epoch) {
                    let _ = s.apply(&dead(e, epoch, now));
                }
            }
            s.check_invariants().map_err(TestCaseError::fail)?;
        }
        for job in s.jobs.values() {
            prop_assert!(job.state.is_terminal(), "job {} stuck in {:?}", job.id, job.state);
        }
    }
}

fn finished_cmd(a: &LiveAttempt, now: Millis) -> Command {
    Command::TaskFinished {
        job: a.job,
        index: a.index,
        token: a.token,
        exit_code: 0,
        error: None,
        now,
    }
}

#[test]
fn executor_changes_move_on_every_command_but_a_submission_and_are_not_state() {
    let mut s = State::new();
    let c0 = s.executor_changes();
    s.apply(&reg("a", 2, "z1", 1)).unwrap();
    let c1 = s.executor_changes();
    assert!(c1 > c0, "a registration changes what placement sees");
    s.apply(&submit(1, "k", spec(1, 1), 2)).unwrap();
    assert_eq!(s.executor_changes(), c1, "a submission changes no executor or load");
    s.apply(&assign(&[(1, 0, "a")], 3)).unwrap();
    assert!(s.executor_changes() > c1, "an assignment changes a load");
    // Local bookkeeping: equal to a replica that counted differently, and never serialized.
    let restored: State =
        crate::raft::codec::decode_stored(&crate::raft::codec::encode(&s).unwrap()).unwrap();
    assert_eq!(restored.executor_changes(), 0);
    assert_eq!(restored, s);
}

// --- the tally (jobs, tasks and executors by state) ---------------------------------------------

/// The state a golden scenario ends in, every command applied (rejections included).
fn replay_golden(file: &str) -> State {
    let scenario = Scenario::read(GOLDEN_DIR, file);
    let mut s = State::new();
    for line in scenario.lines() {
        let cmd = parse_retention(&s, line).unwrap_or_else(|| parse_line(line));
        let _ = s.apply(&cmd.unwrap_or_else(|e| panic!("{file}: {line:?}: {e}")));
    }
    s
}

#[test]
fn every_state_is_listed_once_at_its_own_index() {
    assert!(JobState::ALL.iter().enumerate().all(|(i, s)| *s as usize == i));
    assert!(TaskState::ALL.iter().enumerate().all(|(i, s)| *s as usize == i));
    assert!(ExecutorState::ALL.iter().enumerate().all(|(i, s)| *s as usize == i));
}

#[test]
fn the_tally_follows_jobs_tasks_and_executors_through_their_lives() {
    let mut s = State::new();
    s.apply(&reg("e1", 4, "z1", 1)).unwrap();
    s.apply(&reg("e2", 4, "z1", 1)).unwrap();
    s.apply(&submit(1, "", lost_once(spec(3, 1)), 2)).unwrap();
    s.apply(&submit(2, "", spec(1, 1), 2)).unwrap();
    let t = s.tally().clone();
    assert_eq!((t.jobs(JobState::Pending), t.tasks(TaskState::Pending)), (2, 4));
    assert_eq!(t.executors(ExecutorState::Alive), 2);

    s.apply(&assign(&[(1, 0, "e1"), (1, 1, "e2"), (2, 0, "e2")], 3)).unwrap();
    s.apply(&started(1, 0, 1, 4)).unwrap();
    s.apply(&finished(2, 0, 3, 0, 5)).unwrap();
    let t = s.tally().clone();
    assert_eq!((t.jobs(JobState::Running), t.jobs(JobState::Succeeded)), (1, 1));
    assert_eq!(
        TaskState::ALL.map(|x| t.tasks(x)),
        [1, 1, 1, 1, 0, 0, 0],
        "pending, assigned, running, succeeded, failed, lost, cancelled"
    );

    // e2 dies: its attempt is lost, and with one lost attempt allowed the job fails, cancelling the
    // rest (the running task on e1 and the pending one).
    s.apply(&dead("e2", 1, 6)).unwrap();
    let t = s.tally().clone();
    assert_eq!((t.jobs(JobState::Failed), t.jobs(JobState::Succeeded)), (1, 1));
    assert_eq!(TaskState::ALL.map(|x| t.tasks(x)), [0, 0, 0, 1, 1, 0, 2]);
    assert_eq!(ExecutorState::ALL.map(|x| t.executors(x)), [1, 0, 0, 1]);

    s.apply(&reg("e2", 4, "z1", 7)).unwrap();
    s.apply(&drain("e1", 8)).unwrap();
    assert_eq!(ExecutorState::ALL.map(|x| s.tally().executors(x)), [1, 1, 0, 0]);
    s.check_invariants().unwrap();
}

/// The tally is derived: every golden scenario ends with it equal to a recount; it is not in the
/// encoding (a snapshot has the bytes it had before the tally existed, so existing data dirs
/// load), and a decoded state has it recounted.
#[test]
fn the_tally_matches_a_recount_after_every_golden_scenario_and_is_rebuilt_on_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/state/testdata");
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let s = replay_golden(&file);
        assert_eq!(s.tally(), &apply::Tally::recount(&s), "{file}");
        let jobs: u64 = JobState::ALL.iter().map(|x| s.tally().jobs(*x)).sum();
        let tasks: u64 = TaskState::ALL.iter().map(|x| s.tally().tasks(*x)).sum();
        assert_eq!(jobs, s.jobs.len() as u64, "{file}");
        assert_eq!(tasks, s.jobs.values().map(|j| j.tasks.len() as u64).sum::<u64>(), "{file}");

        let bytes = crate::raft::codec::encode(&s).unwrap();
        let mut untallied = s.clone();
        untallied.tally = apply::Tally::default();
        assert_eq!(bytes, crate::raft::codec::encode(&untallied).unwrap(), "{file}: not encoded");
        let back: State = crate::raft::codec::decode_stored(&bytes).unwrap();
        assert_eq!(back.tally(), s.tally(), "{file}: recounted on decode");
        let json: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(json, s, "{file}");
    }
}

#[test]
fn check_invariants_catches_a_tally_out_of_step() {
    let mut s = replay_golden("happy_four_tasks.txt");
    s.check_invariants().unwrap();
    s.tally = apply::Tally::default(); // as if the upkeep had forgotten everything
    let err = s.check_invariants().unwrap_err();
    assert!(err.contains("tally"), "{err}");
}

// --- issue 13: who may report, who may leave --------------------------------------------------

fn reported(n: u128, token: Token, executor: &str, report: Report, now: Millis) -> Command {
    Command::TaskReported { job: j(n), index: 0, token, executor: executor.into(), report, now }
}

/// A report naming the current token is still refused from an executor the attempt is not on,
/// with the state untouched; the same report from the owner is applied.
#[test]
fn a_report_from_another_executor_is_refused() {
    let mut s = run(&[
        reg("e1", 1, "a", 0),
        reg("e2", 1, "a", 0),
        submit(1, "", spec(1, 3), 1),
        assign(&[(1, 0, "e1")], 2),
    ]);
    let before = s.clone();
    let reports = [
        Report::Started,
        Report::Finished { exit_code: 0, error: None },
        Report::Lost { reason: "forged".into() },
    ];
    for r in reports.clone() {
        let got = s.apply(&reported(1, 1, "e2", r, 3));
        let want = Rejection::WrongExecutor { token: 1, got: "e2".into(), owner: "e1".into() };
        assert_eq!(got, Err(want));
        assert_eq!(s, before, "a refused report changed the state");
    }
    assert_eq!(
        s.apply(&reported(1, 7, "e2", Report::Started, 3)),
        Err(Rejection::StaleToken { got: 7, current: 1 }),
        "the token is checked first"
    );
    assert_eq!(s.apply(&reported(1, 1, "e1", reports[0].clone(), 4)), Ok(Outcome::Done));
    assert_eq!(s.apply(&reported(1, 1, "e1", reports[1].clone(), 5)), Ok(Outcome::Done));
    assert_eq!(s.job(&j(1)).unwrap().state, JobState::Succeeded);
    s.check_invariants().unwrap();
}

/// A farewell names the registration it ends: an earlier one's is refused and changes nothing.
#[test]
fn deregister_needs_the_current_epoch() {
    let at = |epoch, now| Command::DeregisterExecutorAt { id: "e1".into(), epoch, now };
    let mut s = run(&[reg("e1", 1, "a", 0), reg("e1", 1, "a", 1)]);
    let before = s.clone();
    for stale in [0, 1, 3, u64::MAX] {
        assert_eq!(s.apply(&at(stale, 2)), Err(Rejection::StaleEpoch { got: stale, current: 2 }));
        assert_eq!(s, before);
    }
    let ghost = Command::DeregisterExecutorAt { id: "ghost".into(), epoch: 1, now: 2 };
    assert_eq!(s.apply(&ghost), Err(Rejection::ExecutorNotFound("ghost".into())));
    assert_eq!(s.apply(&at(2, 3)), Ok(Outcome::Done));
    assert_eq!(s.executor("e1").unwrap().state, ExecutorState::Left);
    s.check_invariants().unwrap();
}
mod cron_golden;
