//! Test harness shared by the runner's unit tests: a runner over a temporary work dir, spec
//! builders, and waits with deadlines (never fixed sleeps).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use nix::errno::Errno;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::disk::DiskHealth;
use super::{AttemptEvent, AttemptSpec, EventKind, ExitStatus, OutputLimits, Runner};

/// Upper bound for any condition a test waits for; generous for a loaded 2-core CI box.
const DEADLINE: Duration = Duration::from_secs(20);

pub(super) struct Harness {
    pub(super) runner: Runner,
    pub(super) events: mpsc::UnboundedReceiver<AttemptEvent>,
    pub(super) dir: tempfile::TempDir,
}

pub(super) fn harness() -> Harness {
    harness_with(OutputLimits::default())
}

/// A harness whose runner caps output at `limits`.
pub(super) fn harness_with(limits: OutputLimits) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, events) = mpsc::unbounded_channel();
    let disk = DiskHealth::new(dir.path(), 0);
    Harness { runner: Runner::with_limits(dir.path().to_path_buf(), tx, limits, disk), events, dir }
}

/// An argv-mode spec: attempt 1 of task 2 of 4 of `job-a`.
pub(super) fn spec(token: u64, command: &str, args: &[&str]) -> AttemptSpec {
    AttemptSpec {
        job_id: "job-a".into(),
        task_index: 2,
        task_count: 4,
        attempt: 1,
        token,
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: BTreeMap::new(),
        shell: false,
        timeout: None,
        range_start: "80000000-0000-0000-0000-000000000000".into(),
        range_end: "bfffffff-ffff-ffff-ffff-ffffffffffff".into(),
    }
}

/// A shell-mode spec, otherwise as [`spec`].
pub(super) fn shell(token: u64, script: &str) -> AttemptSpec {
    AttemptSpec { shell: true, ..spec(token, script, &[]) }
}

impl Harness {
    /// The next event, failing the test if none arrives before the deadline.
    pub(super) async fn next_event(&mut self) -> AttemptEvent {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("no attempt event before the deadline")
            .expect("event channel closed")
    }

    /// Consumes events up to this token's `Finished` and returns its status.
    pub(super) async fn finished(&mut self, token: u64) -> ExitStatus {
        loop {
            let event = self.next_event().await;
            if let AttemptEvent { token: t, kind: EventKind::Finished { status } } = event {
                if t == token {
                    return status;
                }
            }
        }
    }

    pub(super) async fn run_to_end(&mut self, spec: AttemptSpec) -> ExitStatus {
        let token = spec.token;
        self.runner.start(spec).await.expect("start");
        self.finished(token).await
    }

    pub(super) async fn output(&self, spec: &AttemptSpec, stderr: bool) -> String {
        let chunk = self
            .runner
            .read_output(&spec.job_id, spec.task_index, spec.attempt, stderr, 0, 1 << 20, 0)
            .await
            .expect("read_output");
        assert!(chunk.eof, "finished attempt's output should be at eof");
        String::from_utf8(chunk.data).expect("utf-8 output")
    }
}

/// Polls `check` until it holds; panics with `what` after the deadline.
pub(super) async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Dead: no such process, or a zombie waiting for a parent (PID 1 here may never reap).
pub(super) fn is_gone(pid: i32) -> bool {
    match nix::sys::signal::kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => true,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true),
    }
}
