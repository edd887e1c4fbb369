//! The executor's child-process runner: it starts task attempts as child processes, captures
//! their output to files, enforces timeouts, kills attempts on request, and reports each
//! attempt's start and end as [`AttemptEvent`]s.
//!
//! This is the imperative shell around processes. It knows nothing of Raft, gRPC or the
//! leader: the caller (the executor service) turns dispatches into [`Runner::start`] /
//! [`Runner::stop`] calls and turns events into reports.
//!
//! This file owns the [`Runner`] handle, its table of attempts (one entry per token) and the
//! public types; each other concern has a file of its own, which adds its part of `Runner`:
//!
//! | file          | owns                                                                      |
//! |---------------|---------------------------------------------------------------------------|
//! | `spec.rs`     | [`AttemptSpec`], its validation, the command and environment it becomes   |
//! | `process.rs`  | the process group: confinement, signals, stop with grace, timeouts, reaping |
//! | `workdir.rs`  | the attempts tree on disk: directory per attempt, deleting and expiring output |
//! | `recovery.rs` | running records and the start-up sweep of a crashed executor's leftovers   |
//! | `capture.rs`  | copying an attempt's pipes into capped, rotated output files              |
//! | `output.rs`   | reading captured output back by byte range, across rotated files          |
//! | `disk.rs`     | whether the work dir has room: free space and no-space errors            |
//!
//! Invariants (each file states its own in detail):
//! - **One spawn per token.** An attempt is identified by its fencing token. The token is
//!   registered before anything is spawned, so a second `start` of a known token (concurrent or
//!   later) returns [`RunnerError::AlreadyExists`] and never spawns again. A forgotten token is
//!   retired and refused too.
//! - **An attempt is its process group.** Each attempt runs in a new process group whose id is
//!   the child's pid. Every signal the runner sends goes to the whole group, and when the
//!   group's leader exits (normally, by timeout or by `stop`) the rest of the group is
//!   SIGKILLed, so no stray process of an attempt outlives it. A process that leaves the group
//!   on purpose (`setsid`, `setpgid`) escapes this.
//! - **No attempt outlives its executor.** The group leader gets `PR_SET_PDEATHSIG(SIGKILL)`, so
//!   it dies the moment the executor process dies (the signal follows the thread that spawned
//!   it; attempts are spawned from the runtime's worker threads, which live as long as the
//!   process). Each spawned attempt also leaves a record `work_dir/running/<token>` (its process
//!   group) until its group is reaped, and [`Runner::kill_leftovers`], run at start-up before
//!   registering, SIGKILLs whatever of a recorded group is still alive: an executor that crashed
//!   and came back never runs its old attempts beside their rescheduled successors.
//! - **Events in order, exactly once.** Each spawned attempt yields one `Started` and then
//!   exactly one `Finished`; an attempt that could not be spawned yields only `Finished` with
//!   [`ExitStatus::SpawnFailed`]. The status is recorded before `Finished` is sent, so
//!   [`Runner::get`] agrees with every event already received.
//! - **Outcome precedence.** An attempt that ends after `stop` was called is
//!   [`ExitStatus::Killed`]; otherwise one that hit its timeout is [`ExitStatus::TimedOut`];
//!   otherwise its real exit status is reported.
//! - **Output on disk.** Output goes through a pipe per stream into capped, rotated files
//!   `work_dir/attempts/<job_id>/<task_index>/<attempt>/{stdout,stderr}.<offset>`; that
//!   directory is also the attempt's working directory. Files outlive the runner and the
//!   executor (restarts, graceful ones included), so output stays readable until its job is
//!   deleted ([`Runner::delete_job_output`]) or it expires ([`Runner::expire_output`]).
//! - **A full work dir refuses, it does not fail.** A start whose directory cannot be made for
//!   lack of space is [`RunnerError::NoSpace`]: nothing is recorded, no event sent, and the
//!   token may be started again once there is room.
//! - **Nothing blocks the runtime** except `delete_job_output`, `expire_output` and
//!   `kill_leftovers`, which are
//!   synchronous by their signature and belong in `spawn_blocking`. The bookkeeping lock is a
//!   `std` mutex held only for map updates and signal syscalls, never across an `.await`.

mod capture;
pub mod disk;
mod output;
mod process;
mod recovery;
mod spec;
#[cfg(test)]
mod testkit;
mod workdir;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

pub use capture::OutputLimits;
pub use output::Chunk;
pub use spec::AttemptSpec;

use capture::Sink;
use disk::DiskHealth;
use process::signal_group;
use spec::{build_command, program_name, validate};
use workdir::prepare_dir;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// The process exited with this code.
    Exited(i32),
    /// The process was ended by this signal, not sent by the runner.
    Signaled(i32),
    /// The attempt's timeout expired and the runner killed its process group.
    TimedOut,
    /// [`Runner::stop`] was called for it before it ended.
    Killed,
    /// The process could not be started; the message says why.
    SpawnFailed(String),
}

impl ExitStatus {
    /// A short label for the outcome (metrics): `succeeded`, `failed`, `signaled`, `timed_out`,
    /// `killed` or `spawn_failed`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ExitStatus::Exited(0) => "succeeded",
            ExitStatus::Exited(_) => "failed",
            ExitStatus::Signaled(_) => "signaled",
            ExitStatus::TimedOut => "timed_out",
            ExitStatus::Killed => "killed",
            ExitStatus::SpawnFailed(_) => "spawn_failed",
        }
    }
}

/// A change in an attempt's life, sent on the runner's event channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptEvent {
    /// Fencing token of the attempt.
    pub token: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The process was spawned with this pid (also its process group id).
    Started { pid: u32 },
    /// The attempt ended; sent exactly once per attempt.
    Finished { status: ExitStatus },
}

/// A snapshot of what the runner knows about one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// Fencing token of the attempt.
    pub token: u64,
    /// The job's id.
    pub job_id: String,
    /// Index of the task within the job.
    pub task_index: u32,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Pid (and process group id) once spawned; `None` while starting or if spawning failed.
    pub pid: Option<u32>,
    /// How it ended; `None` while it is live.
    pub status: Option<ExitStatus>,
    /// File receiving the attempt's standard output.
    pub stdout_path: PathBuf,
    /// File receiving the attempt's standard error.
    pub stderr_path: PathBuf,
}

/// Errors of the runner; each names the attempt or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The token is already known; nothing was spawned. `pid` is the existing attempt's.
    #[error("attempt with token {token} already exists (pid {pid:?})")]
    AlreadyExists { token: u64, pid: Option<u32> },
    /// The spec cannot be run as given.
    #[error("invalid attempt spec for token {token}: {reason}")]
    InvalidSpec { token: u64, reason: String },
    /// Another live attempt (another token) already uses this attempt's directory.
    #[error("token {token}: attempt directory {} is in use by live token {other_token}", dir.display())]
    DirInUse { token: u64, other_token: u64, dir: PathBuf },
    /// Preparing the attempt's directory or output files failed.
    #[error("token {token}: preparing {}: {source}", path.display())]
    Prepare {
        token: u64,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The process could not be spawned.
    #[error("token {token}: spawning {program:?}: {source}")]
    Spawn {
        token: u64,
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The attempt's directory could not be made for lack of space; nothing was recorded.
    #[error("token {token}: {reason}")]
    NoSpace { token: u64, reason: String },
    /// No output exists for the requested attempt.
    #[error("no output for job {job_id} task {task_index} attempt {attempt}")]
    OutputNotFound { job_id: String, task_index: u32, attempt: u32 },
    /// Reading an output file failed.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs attempts as child processes. Cheap to clone: clones share one set of attempts.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    /// Root of everything the runner writes; attempts live under `work_dir/attempts`.
    work_dir: PathBuf,
    /// How each stream of an attempt is capped and rotated.
    limits: OutputLimits,
    /// The work dir's health, which capture and starts report no-space errors to.
    disk: DiskHealth,
    /// Where `Started` / `Finished` events go; a closed receiver is tolerated.
    events: mpsc::UnboundedSender<AttemptEvent>,
    /// Every known attempt by token, live or finished until forgotten.
    attempts: Mutex<HashMap<u64, Entry>>,
    /// Tokens forgotten after they ran: a token runs at most once here, so a late duplicate
    /// start (a retried dispatch delivered after the attempt finished) is refused. Bounded to the
    /// newest [`RETIRED_KEEP`] tokens (tokens only grow, so older ones are never reissued).
    retired: Mutex<BTreeSet<u64>>,
}

/// How many retired tokens a runner remembers.
const RETIRED_KEEP: usize = 100_000;

/// The runner's record of one attempt.
struct Entry {
    /// What `get` reports; `info.status` is `None` exactly while the attempt is live.
    info: AttemptInfo,
    /// Set by `stop`; makes the outcome `Killed`, and makes a still-starting attempt be killed
    /// as soon as it is spawned.
    stop_requested: bool,
    /// Becomes `true` once the status is recorded (a dropped sender also means finished).
    done: watch::Receiver<bool>,
}

impl Entry {
    fn is_live(&self) -> bool {
        self.info.status.is_none()
    }
}

impl Runner {
    /// A runner that keeps attempt directories under `work_dir/attempts` and sends attempt
    /// events to `events`, with the default output limits. Does no I/O.
    #[cfg(test)]
    pub fn new(work_dir: PathBuf, events: mpsc::UnboundedSender<AttemptEvent>) -> Self {
        let disk = DiskHealth::new(&work_dir, 0);
        Runner::with_limits(work_dir, events, OutputLimits::default(), disk)
    }

    /// As [`new`](Self::new), capping output at `limits` and reporting to `disk`.
    pub fn with_limits(
        work_dir: PathBuf,
        events: mpsc::UnboundedSender<AttemptEvent>,
        limits: OutputLimits,
        disk: DiskHealth,
    ) -> Self {
        Runner {
            inner: Arc::new(Inner {
                work_dir,
                limits,
                disk,
                events,
                attempts: Mutex::new(HashMap::new()),
                retired: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// Starts an attempt and returns its pid once spawned.
    ///
    /// Idempotent per token: if `spec.token` is already known (live, starting, finished or
    /// failed to spawn, until [`forget`](Self::forget)), returns
    /// [`RunnerError::AlreadyExists`] carrying the existing pid and spawns nothing.
    /// If spawning fails, the attempt is recorded as [`ExitStatus::SpawnFailed`], a `Finished`
    /// event is sent, and the error is returned.
    pub async fn start(&self, spec: AttemptSpec) -> Result<u32, RunnerError> {
        let token = spec.token;
        validate(&spec)?;
        let dir = self.attempt_dir(&spec.job_id, spec.task_index, spec.attempt);
        let (done_tx, done_rx) = watch::channel(false);
        // Register the token before any I/O, so a concurrent duplicate sees it and backs off.
        self.register(&spec, &dir, done_rx)?;
        let (child, copiers) = match self.spawn_attempt(&spec, &dir).await {
            Ok(spawned) => spawned,
            Err(RunnerError::Prepare { source, path, .. }) if disk::is_no_space(&source) => {
                // Not the attempt's failure: the executor has no room. Refuse the start (the
                // token may come again once there is room) and say why.
                self.inner.disk.note_error(&source);
                self.lock().remove(&token);
                let reason = self
                    .inner
                    .disk
                    .problem()
                    .unwrap_or_else(|| format!("{}: no space left on device", path.display()));
                return Err(RunnerError::NoSpace { token, reason });
            }
            Err(err) => {
                tracing::warn!(token, error = %err, "attempt failed to start");
                self.finish(token, ExitStatus::SpawnFailed(err.to_string()), done_tx);
                return Err(err);
            }
        };
        // A spawned child always has an id until it is waited on.
        let pid = child.id().expect("freshly spawned child has a pid");
        self.mark_spawned(token, pid);
        self.send(token, EventKind::Started { pid });
        self.record_running(token, pid);
        tracing::info!(token, pid, job_id = %spec.job_id, task = spec.task_index, attempt = spec.attempt, "attempt started");
        let runner = self.clone();
        tokio::spawn(async move {
            runner.wait_attempt(token, pid, child, copiers, spec.timeout, done_tx).await
        });
        Ok(pid)
    }

    /// The work dir's health, as capture and starts have found it.
    pub fn disk(&self) -> &DiskHealth {
        &self.inner.disk
    }

    /// Makes the attempt's directory and first output files and spawns its process there, its
    /// stdout and stderr piped into [`capture`] tasks.
    async fn spawn_attempt(
        &self,
        spec: &AttemptSpec,
        dir: &Path,
    ) -> Result<(Child, Copiers), RunnerError> {
        let token = spec.token;
        let (stdout, stderr) = prepare_dir(token, dir).await?;
        let mut child = build_command(spec, dir, Stdio::piped(), Stdio::piped())
            .spawn()
            .map_err(|source| RunnerError::Spawn { token, program: program_name(spec), source })?;
        let limits = self.inner.limits;
        let disk = &self.inner.disk;
        let mut copiers = Copiers::default();
        if let Some(pipe) = child.stdout.take() {
            let sink = Sink::new(dir, "stdout", limits, stdout);
            copiers.0.push(tokio::spawn(capture::copy(pipe, sink, disk.clone(), token)));
        }
        if let Some(pipe) = child.stderr.take() {
            let sink = Sink::new(dir, "stderr", limits, stderr);
            copiers.0.push(tokio::spawn(capture::copy(pipe, sink, disk.clone(), token)));
        }
        Ok((child, copiers))
    }

    /// What is known about the attempt with this token.
    pub fn get(&self, token: u64) -> Option<AttemptInfo> {
        self.lock().get(&token).map(|e| e.info.clone())
    }

    /// Every known attempt, live or finished, ordered by token.
    #[cfg(test)]
    pub fn list(&self) -> Vec<AttemptInfo> {
        let mut infos: Vec<_> = self.lock().values().map(|e| e.info.clone()).collect();
        infos.sort_by_key(|i| i.token);
        infos
    }

    /// Tokens of attempts still running (or being started), ascending.
    pub fn live_tokens(&self) -> Vec<u64> {
        let mut tokens: Vec<_> =
            self.lock().values().filter(|e| e.is_live()).map(|e| e.info.token).collect();
        tokens.sort_unstable();
        tokens
    }

    /// Drops the bookkeeping of a finished attempt (its files stay). A live attempt is kept:
    /// forgetting it would lose the only handle to stop it. The token is retired: starting it
    /// again is refused with [`RunnerError::AlreadyExists`].
    pub fn forget(&self, token: u64) {
        let mut attempts = self.lock();
        if attempts.get(&token).is_some_and(|e| !e.is_live()) {
            attempts.remove(&token);
            let mut retired = self.inner.retired.lock().expect("retired lock poisoned");
            retired.insert(token);
            while retired.len() > RETIRED_KEEP {
                retired.pop_first();
            }
        }
    }

    /// Enters a new attempt in the table, live and without a pid, unless its token is known or
    /// retired ([`RunnerError::AlreadyExists`]) or another live token uses its directory
    /// ([`RunnerError::DirInUse`]).
    fn register(
        &self,
        spec: &AttemptSpec,
        dir: &Path,
        done: watch::Receiver<bool>,
    ) -> Result<(), RunnerError> {
        let token = spec.token;
        if self.inner.retired.lock().expect("retired lock poisoned").contains(&token) {
            return Err(RunnerError::AlreadyExists { token, pid: None });
        }
        let mut attempts = self.lock();
        if let Some(existing) = attempts.get(&token) {
            return Err(RunnerError::AlreadyExists { token, pid: existing.info.pid });
        }
        if let Some(other) = attempts.values().find(|e| {
            e.is_live()
                && e.info.job_id == spec.job_id
                && e.info.task_index == spec.task_index
                && e.info.attempt == spec.attempt
        }) {
            let dir = dir.to_path_buf();
            return Err(RunnerError::DirInUse { token, other_token: other.info.token, dir });
        }
        let info = AttemptInfo {
            token,
            job_id: spec.job_id.clone(),
            task_index: spec.task_index,
            attempt: spec.attempt,
            pid: None,
            status: None,
            stdout_path: dir.join(capture::file_name("stdout", 0)),
            stderr_path: dir.join(capture::file_name("stderr", 0)),
        };
        attempts.insert(token, Entry { info, stop_requested: false, done });
        Ok(())
    }

    /// Records the pid of a freshly spawned attempt, and kills it at once if `stop` came while
    /// it was being spawned.
    fn mark_spawned(&self, token: u64, pid: u32) {
        let mut attempts = self.lock();
        let entry = attempts.get_mut(&token).expect("a live attempt is never forgotten");
        entry.info.pid = Some(pid);
        if entry.stop_requested {
            // stop() came while we were spawning: it could not signal a pid it did not
            // know, so the attempt dies now, without grace.
            signal_group(pid, Signal::SIGKILL);
        }
    }

    /// Records the final status, wakes `stop` waiters and sends the one `Finished` event.
    /// A stop request turns any outcome of a spawned attempt into `Killed`; it is read under
    /// the same lock that records the status, so a `stop` that returned `true` sees `Killed`.
    fn finish(&self, token: u64, outcome: ExitStatus, done: watch::Sender<bool>) {
        let status = {
            let mut attempts = self.lock();
            let entry = attempts.get_mut(&token).expect("a live attempt is never forgotten");
            debug_assert!(entry.is_live(), "attempt {token} finished twice");
            let status = match outcome {
                failed @ ExitStatus::SpawnFailed(_) => failed,
                _ if entry.stop_requested => ExitStatus::Killed,
                other => other,
            };
            entry.info.status = Some(status.clone());
            status
        };
        tracing::info!(token, ?status, "attempt finished");
        done.send_replace(true);
        self.send(token, EventKind::Finished { status });
    }

    fn send(&self, token: u64, kind: EventKind) {
        if self.inner.events.send(AttemptEvent { token, kind }).is_err() {
            tracing::debug!(token, "attempt event dropped: no receiver");
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Nothing panics while holding the lock; recovering keeps one bug from stopping them all.
        self.inner.attempts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The tasks copying an attempt's stdout and stderr into its files.
#[derive(Default)]
pub(super) struct Copiers(Vec<tokio::task::JoinHandle<()>>);

/// How long an attempt's end waits for its output to be copied once its process group is gone:
/// a process that left the group on purpose may hold the pipe open for ever.
const COPY_DRAIN: Duration = Duration::from_secs(2);

impl Copiers {
    /// Waits (at most [`COPY_DRAIN`]) for both copiers to reach the end of their pipes, then
    /// stops whichever has not.
    pub(super) async fn drain(self, token: u64) {
        for mut copier in self.0 {
            if tokio::time::timeout(COPY_DRAIN, &mut copier).await.is_err() {
                tracing::warn!(token, "output pipe still open after the attempt ended; closing");
                copier.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{harness, shell, spec, wait_until};
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn nonexistent_program_reports_spawn_failed_without_started() {
        let mut h = harness();
        let err =
            h.runner.start(spec(5, "/nonexistent/triad-no-such-program", &[])).await.unwrap_err();
        assert!(
            matches!(&err, RunnerError::Spawn { token: 5, program, .. } if program.contains("no-such-program")),
            "{err}"
        );
        assert!(err.to_string().contains("token 5"), "error names the token: {err}");
        let event = h.next_event().await;
        assert!(
            matches!(
                &event,
                AttemptEvent {
                    token: 5,
                    kind: EventKind::Finished { status: ExitStatus::SpawnFailed(_) }
                }
            ),
            "first and only event is Finished(SpawnFailed), got {event:?}"
        );
        let info = h.runner.get(5).expect("known");
        assert!(matches!(info.status, Some(ExitStatus::SpawnFailed(_))));
        assert_eq!(info.pid, None);
        assert!(matches!(
            h.runner.start(spec(5, "true", &[])).await,
            Err(RunnerError::AlreadyExists { token: 5, pid: None })
        ));
        assert!(h.events.try_recv().is_err(), "no further events");
    }

    #[tokio::test]
    async fn duplicate_start_of_a_token_never_spawns_twice() {
        let mut h = harness();
        let marker = h.dir.path().join("spawns");
        let mut s = shell(9, r#"echo spawned >> "$MARKER"; sleep 1000"#);
        s.env.insert("MARKER".into(), marker.display().to_string());

        let (a, b) = tokio::join!(h.runner.start(s.clone()), h.runner.start(s.clone()));
        let pid = match (a, b) {
            (Ok(pid), Err(RunnerError::AlreadyExists { token: 9, .. }))
            | (Err(RunnerError::AlreadyExists { token: 9, .. }), Ok(pid)) => pid,
            other => panic!("exactly one concurrent start must spawn: {other:?}"),
        };
        match h.runner.start(s.clone()).await {
            Err(RunnerError::AlreadyExists { token: 9, pid: Some(p) }) => assert_eq!(p, pid),
            other => panic!("a later duplicate reports the existing pid: {other:?}"),
        }
        wait_until("the attempt to write its marker", || async {
            std::fs::read_to_string(&marker).is_ok_and(|m| m == "spawned\n")
        })
        .await;
        assert!(h.runner.stop(9, Duration::from_secs(5)).await);
        assert!(
            matches!(h.runner.start(s.clone()).await, Err(RunnerError::AlreadyExists { .. })),
            "finished tokens stay known"
        );

        assert_eq!(
            h.next_event().await,
            AttemptEvent { token: 9, kind: EventKind::Started { pid } }
        );
        assert_eq!(
            h.next_event().await,
            AttemptEvent { token: 9, kind: EventKind::Finished { status: ExitStatus::Killed } }
        );
        let extra: Vec<_> = std::iter::from_fn(|| h.events.try_recv().ok()).collect();
        assert!(extra.is_empty(), "no events beyond one Started and one Finished: {extra:?}");
        assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "spawned\n");
        assert_eq!(h.runner.list().len(), 1);
    }

    #[tokio::test]
    async fn a_second_live_token_for_the_same_attempt_dir_is_refused() {
        let mut h = harness();
        h.runner.start(spec(1, "sleep", &["1000"])).await.expect("start");
        let err = h.runner.start(spec(2, "sleep", &["1000"])).await.unwrap_err();
        assert!(matches!(err, RunnerError::DirInUse { token: 2, other_token: 1, .. }), "{err}");
        assert!(h.runner.stop(1, Duration::from_secs(5)).await);
        assert_eq!(h.finished(1).await, ExitStatus::Killed);
        assert!(
            h.runner.start(spec(2, "true", &[])).await.is_ok(),
            "free once the first one ended"
        );
        assert_eq!(h.finished(2).await, ExitStatus::Exited(0));
    }

    #[tokio::test]
    async fn a_forgotten_token_is_never_started_again() {
        let mut h = harness();
        h.runner.start(shell(41, "exit 0")).await.unwrap();
        assert_eq!(h.finished(41).await, ExitStatus::Exited(0));
        h.runner.forget(41);
        // A late duplicate dispatch of the same token must not run the work a second time.
        let again = h.runner.start(shell(41, "exit 0")).await;
        assert!(matches!(again, Err(RunnerError::AlreadyExists { token: 41, .. })), "{again:?}");
        assert!(h.runner.get(41).is_none());
    }
}
