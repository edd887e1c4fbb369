//! Tests of what keeps reads and snapshots cheap at scale: the job state index behind listings
//! by state, executor paging, and clones that share the state (a snapshot's) staying as they
//! were while the state goes on changing.

use std::collections::BTreeMap;

use super::*;

fn submit(s: &mut State, n: u128, now: Millis) -> JobId {
    let id = uuid::Uuid::from_u128(n);
    let cmd = Command::SubmitJob {
        id,
        name: format!("j{n}"),
        idempotency_key: String::new(),
        spec: JobSpec::new("true"),
        now,
    };
    assert_eq!(s.apply(&cmd), Ok(Outcome::Submitted { id, created: true }));
    id
}

fn register(s: &mut State, id: &str) {
    let cmd = Command::RegisterExecutor {
        id: id.into(),
        addr: "127.0.0.1:1".into(),
        capacity: Resources { slots: 10, cpu_millis: 0, memory_mib: 0 },
        labels: BTreeMap::new(),
        now: 1,
    };
    s.apply(&cmd).unwrap();
}

/// Runs job `id`'s one task on `e` to exit code `code` (attempts: 1).
fn run(s: &mut State, id: JobId, e: &str, code: i32) {
    let assignments = vec![Assignment { job: id, index: 0, executor: e.into() }];
    let Ok(Outcome::Assigned { tokens }) = s.apply(&Command::AssignTasks { assignments, now: 5 })
    else {
        panic!("assign refused")
    };
    let token = *tokens[0].as_ref().unwrap();
    let fin =
        Command::TaskFinished { job: id, index: 0, token, exit_code: code, error: None, now: 6 };
    s.apply(&fin).unwrap();
}

/// A state with 12 jobs: 0..4 succeeded, 4..8 cancelled, the rest pending (one executor).
fn mixed() -> (State, Vec<JobId>) {
    let mut s = State::new();
    register(&mut s, "e1");
    let ids: Vec<JobId> = (1..=12).map(|n| submit(&mut s, n, 1)).collect();
    for &id in &ids[..4] {
        run(&mut s, id, "e1", 0);
    }
    for &id in &ids[4..8] {
        s.apply(&Command::CancelJob { id, now: 7 }).unwrap();
    }
    s.check_invariants().unwrap();
    (s, ids)
}

#[test]
fn listing_by_a_terminal_state_pages_through_exactly_the_jobs_in_it() {
    let (s, ids) = mixed();
    let (page, cursor) = s.jobs_page(Some(JobState::Cancelled), None, 3);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), ids[4..7]);
    let (rest, end) = s.jobs_page(Some(JobState::Cancelled), cursor, 3);
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), ids[7..8]);
    assert_eq!(end, None);
    let (ok, _) = s.jobs_page(Some(JobState::Succeeded), None, 100);
    assert_eq!(ok.iter().map(|j| j.id).collect::<Vec<_>>(), ids[..4]);
    let (pending, _) = s.jobs_page(Some(JobState::Pending), None, 100);
    assert_eq!(pending.iter().map(|j| j.id).collect::<Vec<_>>(), ids[8..]);
    assert!(s.jobs_page(Some(JobState::Failed), None, 100).0.is_empty());
}

#[test]
fn the_job_state_index_is_rebuilt_on_decode() {
    let (s, _) = mixed();
    let bytes = bincode::serialize(&s).unwrap();
    let back: State = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, s, "the index is part of equality, and rebuilt");
    back.check_invariants().unwrap();
}

#[test]
fn executors_page_by_id() {
    let mut s = State::new();
    for e in ["e3", "e1", "e2", "e5", "e4"] {
        register(&mut s, e);
    }
    let ids = |p: Vec<&Executor>| p.into_iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let (p, more) = s.executors_page(None, 2);
    assert_eq!((ids(p), more), (vec!["e1".to_string(), "e2".into()], true));
    let (p, more) = s.executors_page(Some("e2"), 2);
    assert_eq!((ids(p), more), (vec!["e3".to_string(), "e4".into()], true));
    let (p, more) = s.executors_page(Some("e4"), 2);
    assert_eq!((ids(p), more), (vec!["e5".to_string()], false));
    assert_eq!(s.executors_page(None, usize::MAX).0.len(), 5);
}

#[test]
fn a_clone_keeps_its_bytes_while_the_state_goes_on() {
    let (mut s, ids) = mixed();
    let snapshot = s.clone();
    let before = bincode::serialize(&snapshot).unwrap();
    // Changes to jobs the clone shares, and new ones.
    run(&mut s, ids[8], "e1", 0);
    s.apply(&Command::CancelJob { id: ids[9], now: 9 }).unwrap();
    for n in 100..200 {
        submit(&mut s, n, 10);
    }
    s.check_invariants().unwrap();
    snapshot.check_invariants().unwrap();
    assert_eq!(bincode::serialize(&snapshot).unwrap(), before, "the clone did not move");
    assert_ne!(s, snapshot);
    assert_eq!(snapshot.job(&ids[8]).unwrap().state, JobState::Pending);
    assert_eq!(s.job(&ids[8]).unwrap().state, JobState::Succeeded);
}

#[test]
fn an_attempt_takes_room_for_one_attempt() {
    let (s, ids) = mixed();
    let task = &s.job(&ids[0]).unwrap().tasks[0];
    assert_eq!((task.attempts.len(), task.attempts.capacity()), (1, 1));
}
