//! Tests of the request bounds: each bound refuses just past itself and takes what is at it,
//! and a property test that whatever is accepted is within the state machine's limits.

use std::collections::HashMap;

use proptest::prelude::*;
use tonic::Code;

use super::*;
use crate::api::convert::job_spec_from_pb;
use crate::state::{validate_submit, Command};

const JOB: &str = "6f1c1d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f";

fn spec() -> pb::JobSpec {
    pb::JobSpec { command: "/bin/true".into(), task_count: 1, ..Default::default() }
}

fn submit(spec: pb::JobSpec) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest { name: "n".into(), idempotency_key: "k".into(), spec: Some(spec) }
}

/// Asserts `r` is `INVALID_ARGUMENT` whose one-line message names `field`.
fn refused(r: Result<(), Status>, field: &str) {
    let s = r.expect_err(&format!("accepted, but {field} is out of bounds"));
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains(field), "{:?} does not name {field}", s.message());
    assert!(!s.message().contains('\n'), "{:?} is not one line", s.message());
}

fn register() -> pb::RegisterRequest {
    pb::RegisterRequest {
        executor_id: "exec-1".into(),
        addr: "10.0.0.7:7100".into(),
        capacity: Some(pb::Resources { slots: 4, cpu_millis: 4000, memory_mib: 8192 }),
        labels: HashMap::from([("zone".into(), "a".into())]),
        seq: 1,
    }
}

fn start() -> pb::StartAttemptRequest {
    pb::StartAttemptRequest {
        job_id: JOB.into(),
        task_count: 2,
        task_index: 1,
        attempt: 1,
        token: 5,
        epoch: 1,
        command: "/bin/true".into(),
        ..Default::default()
    }
}

#[test]
fn a_valid_submission_is_accepted_and_each_field_bound_refuses_past_it() {
    submit(spec()).validate().unwrap();
    let with = |f: fn(&mut pb::JobSpec)| {
        let mut s = spec();
        f(&mut s);
        submit(s).validate()
    };
    refused(with(|s| s.command = " ".into()), "spec.command");
    refused(with(|s| s.task_count = 0), "spec.task_count");
    refused(with(|s| s.task_count = MAX_TASKS + 1), "spec.task_count");
    with(|s| s.task_count = MAX_TASKS).unwrap();
    refused(with(|s| s.max_attempts = MAX_ATTEMPTS + 1), "spec.max_attempts");
    refused(with(|s| s.retry_backoff_ms = MAX_RETRY_BACKOFF_MS + 1), "spec.retry_backoff_ms");
    refused(with(|s| s.timeout_ms = MAX_TIMEOUT_MS + 1), "spec.timeout_ms");
    refused(with(|s| s.resources = Some(pb::Resources::default())), "spec.resources.slots");
    refused(
        with(|s| {
            s.resources = Some(pb::Resources { slots: 1, memory_mib: u64::MAX, cpu_millis: 0 })
        }),
        "spec.resources.memory_mib",
    );
    refused(
        with(|s| {
            s.resources = Some(pb::Resources { slots: 1, memory_mib: 0, cpu_millis: u32::MAX })
        }),
        "spec.resources.cpu_millis",
    );
    refused(with(|s| s.args = vec!["a\0b".into()]), "NUL");
    refused(with(|s| s.env = HashMap::from([("A=B".into(), "v".into())])), "env name");
    refused(with(|s| s.env = HashMap::from([(String::new(), "v".into())])), "env name");
    refused(
        with(|s| {
            s.constraints = (0..=MAX_CONSTRAINTS).map(|i| (format!("k{i}"), "v".into())).collect()
        }),
        "spec.constraints",
    );
    refused(
        with(|s| {
            s.constraints = HashMap::from([("k".repeat(MAX_LABEL_KEY_BYTES + 1), "v".into())])
        }),
        "spec.constraints name",
    );
    refused(
        with(|s| {
            s.constraints = HashMap::from([("k".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1))])
        }),
        "spec.constraints[\"k\"]",
    );
}

#[test]
fn names_and_keys_are_bounded_in_characters() {
    let mut r = submit(spec());
    r.name = "é".repeat(MAX_NAME_CHARS);
    r.idempotency_key = "k".repeat(MAX_KEY_CHARS);
    r.validate().unwrap();
    r.name.push('x');
    refused(r.validate(), "name");
    r.name.pop();
    r.idempotency_key.push('é');
    refused(r.validate(), "idempotency_key");
    refused(pb::SubmitJobRequest { spec: None, ..submit(spec()) }.validate(), "spec");
}

/// Each argv or envp string is within `MAX_ARG_STRLEN` with its NUL, and the spec's text
/// within `MAX_SPEC_BYTES`.
#[test]
fn exec_strings_are_within_max_arg_strlen() {
    let max = MAX_ARG_STRLEN - 1;
    let mut s = spec();
    s.args = vec!["a".repeat(max)];
    submit(s.clone()).validate().unwrap();
    s.args[0].push('a');
    refused(submit(s.clone()).validate(), "args[0]");
    s.args.clear();
    s.env = HashMap::from([("K".into(), "v".repeat(max - 2))]);
    submit(s.clone()).validate().unwrap();
    s.env.insert("K".into(), "v".repeat(max - 1));
    refused(submit(s.clone()).validate(), "env \"K\"");
    s.env.clear();
    s.command = "c".repeat(max + 1);
    refused(submit(s.clone()).validate(), "command");
    s.command = "c".into();
    s.args = (0..9).map(|_| "a".repeat(max)).collect();
    refused(submit(s).validate(), "spec text");
}

/// A start (the executor checks it too) is held to `ARG_MAX` less the headroom as a whole.
#[test]
fn a_start_is_within_arg_max() {
    start().validate().unwrap();
    let strings = (ARG_MAX - ARG_HEADROOM) / MAX_ARG_STRLEN;
    let mut r = start();
    r.args = (0..strings - 1).map(|_| "a".repeat(MAX_ARG_STRLEN - 1)).collect();
    r.validate().unwrap();
    r.args.push("a".repeat(MAX_ARG_STRLEN - 1));
    r.args.push("a".repeat(MAX_ARG_STRLEN - 1));
    refused(r.validate(), "ARG_MAX");
    let with = |f: fn(&mut pb::StartAttemptRequest)| {
        let mut r = start();
        f(&mut r);
        r.validate()
    };
    refused(with(|r| r.task_index = 2), "task_index");
    refused(with(|r| r.task_count = 0), "task_count");
    refused(with(|r| r.attempt = 0), "attempt");
    refused(with(|r| r.token = 0), "token");
    refused(with(|r| r.epoch = 0), "epoch");
    refused(with(|r| r.job_id = "job-1".into()), "job_id");
    refused(with(|r| r.env = HashMap::from([("A".into(), "\0".into())])), "NUL");
    refused(with(|r| r.timeout_ms = MAX_TIMEOUT_MS + 1), "timeout_ms");
    refused(with(|r| r.range_end = "f".repeat(65)), "range_end");
}

#[test]
fn registrations_are_bounded() {
    register().validate().unwrap();
    let with = |f: fn(&mut pb::RegisterRequest)| {
        let mut r = register();
        f(&mut r);
        r.validate()
    };
    for id in ["", "has space", "a/b", "tab\t", "é"] {
        let mut r = register();
        r.executor_id = id.into();
        refused(r.validate(), "executor_id");
    }
    refused(with(|r| r.executor_id = "e".repeat(MAX_EXECUTOR_ID_BYTES + 1)), "executor_id");
    with(|r| r.executor_id = "e".repeat(MAX_EXECUTOR_ID_BYTES)).unwrap();
    for addr in ["", "host", "host:", ":7000", "host:0", "host:70000", "a/b:1", "u@h:1", "h h:1"] {
        let mut r = register();
        r.addr = addr.into();
        refused(r.validate(), "addr");
    }
    with(|r| r.addr = "[::1]:7100".into()).unwrap();
    refused(with(|r| r.addr = format!("{}:1", "h".repeat(MAX_ADDR_BYTES))), "addr");
    refused(
        with(|r| r.capacity = Some(pb::Resources { slots: MAX_SLOTS + 1, ..Default::default() })),
        "capacity.slots",
    );
    with(|r| r.capacity = Some(pb::Resources::default())).unwrap();
    refused(
        with(|r| r.labels = (0..=MAX_LABELS).map(|i| (format!("k{i}"), String::new())).collect()),
        "labels",
    );
    refused(with(|r| r.labels = HashMap::from([(String::new(), "v".into())])), "labels name");
}

#[test]
fn reports_heartbeats_and_the_rest_are_bounded() {
    let report = pb::ReportTaskRequest {
        executor_id: "exec-1".into(),
        job_id: JOB.into(),
        token: 3,
        error: "e".repeat(MAX_REPORT_TEXT_BYTES),
        ..Default::default()
    };
    report.validate().unwrap();
    refused(pb::ReportTaskRequest { token: 0, ..report.clone() }.validate(), "token");
    refused(
        pb::ReportTaskRequest { task_index: MAX_TASKS, ..report.clone() }.validate(),
        "task_index",
    );
    refused(pb::ReportTaskRequest { job_id: "x".into(), ..report.clone() }.validate(), "job_id");
    refused(
        pb::ReportTaskRequest { executor_id: String::new(), ..report.clone() }.validate(),
        "executor_id",
    );
    let long = "e".repeat(MAX_REPORT_TEXT_BYTES + 1);
    refused(pb::ReportTaskRequest { error: long, ..report }.validate(), "error");

    let beat = |n: usize| pb::HeartbeatRequest {
        executor_id: "exec-1".into(),
        attempts: vec![pb::RunningAttempt::default(); n],
        ..Default::default()
    };
    beat(MAX_HEARTBEAT_ATTEMPTS).validate().unwrap();
    refused(beat(MAX_HEARTBEAT_ATTEMPTS + 1).validate(), "attempts");

    let page = |page_size, page_token: &str| pb::ListJobsRequest {
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    page(MAX_PAGE_SIZE, "17").validate().unwrap();
    refused(page(MAX_PAGE_SIZE + 1, "").validate(), "page_size");
    refused(page(0, "x").validate(), "page_token");

    refused(pb::DeregisterRequest { executor_id: "e".into(), epoch: 0 }.validate(), "epoch");
    refused(pb::DrainExecutorRequest { executor_id: "a b".into() }.validate(), "executor_id");
    refused(pb::AddMasterRequest { id: 0, addr: "h:1".into() }.validate(), "id");
    refused(pb::AddMasterRequest { id: 4, addr: "h".into() }.validate(), "addr");
    pb::AddMasterRequest { id: 4, addr: "m4.local:7000".into() }.validate().unwrap();
    refused(pb::RemoveMasterRequest { id: 0 }.validate(), "id");
    refused(pb::CancelJobRequest { job_id: "nope".into() }.validate(), "job_id");
    refused(
        pb::GetJobRequest { job_id: "x".repeat(65), ..Default::default() }.validate(),
        "job_id",
    );
    refused(pb::StopAttemptRequest { token: 0 }.validate(), "token");
    refused(pb::QueryAttemptRequest { token: 0 }.validate(), "token");
    let read = pb::ReadOutputRequest {
        job_id: JOB.into(),
        attempt: MAX_ATTEMPTS + 1,
        ..Default::default()
    };
    refused(read.validate(), "attempt");
    let tail = pb::ReadOutputRequest {
        job_id: JOB.into(),
        tail_lines: super::MAX_TAIL_LINES + 1,
        ..Default::default()
    };
    refused(tail.validate(), "tail_lines");
    let follow = pb::FollowOutputRequest { job_id: "../etc".into(), ..Default::default() };
    refused(follow.validate(), "job_id");
    let delete = pb::DeleteOutputRequest { job_ids: vec![JOB.into(), "not-a-uuid".into()] };
    refused(delete.validate(), "job_ids");
    let many =
        pb::DeleteOutputRequest { job_ids: vec![JOB.into(); super::MAX_DELETE_OUTPUT_JOBS + 1] };
    refused(many.validate(), "job_ids");
    assert!(pb::DeleteOutputRequest { job_ids: vec![JOB.into()] }.validate().is_ok());
    let beat = pb::HeartbeatRequest {
        executor_id: "exec-a".into(),
        unhealthy: "x".repeat(super::MAX_UNHEALTHY_BYTES + 1),
        ..Default::default()
    };
    refused(beat.validate(), "unhealthy");
}

/// The largest submission the bounds accept (every text bound at once) still encodes within
/// the per-command entry budget, with room to spare.
#[test]
fn the_largest_valid_submission_fits_the_command_budget() {
    let arg = "a".repeat(MAX_SPEC_BYTES / MAX_ARGS - 1);
    let mut s = spec();
    s.command = "c".into();
    s.args = vec![arg; MAX_ARGS];
    let r = pb::SubmitJobRequest {
        name: "\u{10FFFF}".repeat(MAX_NAME_CHARS),
        idempotency_key: "\u{10FFFF}".repeat(MAX_KEY_CHARS),
        spec: Some(s),
    };
    r.validate().unwrap();
    let n = encoded_submit_len(&r);
    assert!(
        n > MAX_SPEC_BYTES as u64 && n < crate::raft::MAX_COMMAND_BYTES as u64 / 2,
        "{n} bytes"
    );
}

/// The encoded size of the command a valid submission becomes.
fn encoded_submit_len(r: &pb::SubmitJobRequest) -> u64 {
    let cmd = Command::SubmitJob {
        id: uuid::Uuid::nil(),
        name: r.name.clone(),
        idempotency_key: r.idempotency_key.clone(),
        spec: job_spec_from_pb(r.spec.clone()).unwrap(),
        now: 0,
    };
    crate::raft::codec::encoded_len(&cmd).unwrap()
}

// --- property test ------------------------------------------------------------------------------

/// Mostly short plain strings (so most requests are valid but for a field or two), sometimes
/// empty, sometimes at or just past a bound, of the characters the checks care about.
fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        Just('a'),
        Just('é'),
        Just('\0'),
        Just('='),
        Just(' '),
        Just('/'),
        any::<char>(),
    ];
    let len = proptest::sample::select(vec![
        1,
        2,
        MAX_NAME_CHARS,
        MAX_NAME_CHARS + 1,
        MAX_LABEL_KEY_BYTES + 1,
        MAX_ARG_STRLEN - 1,
        MAX_ARG_STRLEN,
    ]);
    prop_oneof![
        8 => "[a-z0-9]{1,6}",
        1 => Just(String::new()),
        2 => (c, len).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

/// Mostly a valid value, sometimes one of `edges` (at or past a bound).
fn number<T: Copy + std::fmt::Debug + 'static>(
    valid: impl Strategy<Value = T> + 'static,
    edges: Vec<T>,
) -> impl Strategy<Value = T> {
    prop_oneof![6 => valid, 1 => proptest::sample::select(edges)]
}

fn resources() -> impl Strategy<Value = Option<pb::Resources>> {
    let r = (
        number(1..=MAX_SLOTS, vec![0, MAX_SLOTS, MAX_SLOTS + 1, u32::MAX]),
        number(0..=MAX_CPU_MILLIS, vec![MAX_CPU_MILLIS, MAX_CPU_MILLIS + 1, u32::MAX]),
        number(0..=MAX_MEMORY_MIB, vec![MAX_MEMORY_MIB, MAX_MEMORY_MIB + 1, u64::MAX]),
    );
    proptest::option::of(r.prop_map(|(slots, cpu_millis, memory_mib)| pb::Resources {
        slots,
        cpu_millis,
        memory_mib,
    }))
}

fn job_spec() -> impl Strategy<Value = pb::JobSpec> {
    let texts = (
        text(),
        proptest::collection::vec(text(), 0..4),
        proptest::collection::hash_map(text(), text(), 0..3),
        proptest::collection::hash_map(text(), text(), 0..3),
    );
    let numbers = (
        number(1..=100u32, vec![0, MAX_TASKS, MAX_TASKS + 1, u32::MAX]),
        number(0..=10u32, vec![MAX_ATTEMPTS, MAX_ATTEMPTS + 1, u32::MAX]),
        number(0..=10_000u64, vec![MAX_RETRY_BACKOFF_MS, MAX_RETRY_BACKOFF_MS + 1, u64::MAX]),
        number(0..=10_000u64, vec![MAX_TIMEOUT_MS, MAX_TIMEOUT_MS + 1, u64::MAX]),
        resources(),
        any::<(bool, i32)>(),
    );
    (texts, numbers).prop_map(|((command, args, env, constraints), n)| pb::JobSpec {
        command,
        args,
        env,
        constraints,
        task_count: n.0,
        max_attempts: n.1,
        retry_backoff_ms: n.2,
        timeout_ms: n.3,
        resources: n.4,
        shell: n.5 .0,
        priority: n.5 .1,
        ttl_after_finished_ms: None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary submissions never panic the validator, and every one it accepts is accepted by
    /// the state machine's own validation, fits `execve` and the command budget.
    #[test]
    fn what_validate_accepts_the_state_machine_accepts(
        name in text(),
        key in text(),
        spec in proptest::option::of(job_spec()),
    ) {
        let r = pb::SubmitJobRequest { name, idempotency_key: key, spec };
        if r.validate().is_ok() {
            let s = r.spec.clone().unwrap();
            let model = job_spec_from_pb(Some(s.clone())).expect("the API's conversion refused it");
            prop_assert_eq!(validate_submit(&r.name, &r.idempotency_key, &model), Ok(()));
            prop_assert!(exec_bytes(&s.command, &s.args, s.env.iter()) <= ARG_MAX - ARG_HEADROOM);
            prop_assert!(encoded_submit_len(&r) <= crate::raft::MAX_COMMAND_BYTES as u64);
        }
    }

    /// The same for a registration, whose bounds the state machine does not check: whatever is
    /// accepted is within them.
    #[test]
    fn accepted_registrations_are_within_the_bounds(
        id in text(),
        addr in prop_oneof![text(), "[a-z.]{1,8}:[0-9]{1,6}"],
        capacity in resources(),
        labels in proptest::collection::hash_map(text(), text(), 0..3),
    ) {
        let r = pb::RegisterRequest { executor_id: id, addr, capacity, labels, seq: 0 };
        if r.validate().is_ok() {
            prop_assert!(!r.executor_id.is_empty() && r.executor_id.len() <= MAX_EXECUTOR_ID_BYTES);
            prop_assert!(r.addr.len() <= MAX_ADDR_BYTES && r.addr.contains(':'));
            let c = r.capacity.unwrap_or_default();
            prop_assert!(c.slots <= MAX_SLOTS && c.cpu_millis <= MAX_CPU_MILLIS && c.memory_mib <= MAX_MEMORY_MIB);
            for (k, v) in &r.labels {
                prop_assert!(!k.is_empty() && k.len() <= MAX_LABEL_KEY_BYTES && v.len() <= MAX_LABEL_VALUE_BYTES);
            }
        }
    }
}
