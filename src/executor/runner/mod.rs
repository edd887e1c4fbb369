//! The executor's child-process runner: it starts task attempts as child processes, captures
//! their output to files, enforces timeouts, kills attempts on request, and reports each
//! attempt's start and end as [`AttemptEvent`]s.
//!
//! This is the imperative shell around processes. It knows nothing of Raft, gRPC or the
//! leader: the caller (the executor service) turns dispatches into [`Runner::start`] /
//! [`Runner::stop`] calls and turns events into reports.
//!
//! Invariants:
//! - **One spawn per token.** An attempt is identified by its fencing token. The token is
//!   registered before anything is spawned, so a second `start` of a known token (concurrent or
//!   later) returns [`RunnerError::AlreadyExists`] and never spawns again.
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
//! - **Output on disk.** Output goes to `work_dir/attempts/<job_id>/<task_index>/<attempt>/`
//!   `{stdout,stderr}`; that directory is also the attempt's working directory. Files outlive
//!   the runner, so output of an attempt run before a restart stays readable until
//!   [`Runner::cleanup_job_dirs`] removes it.
//! - **Nothing blocks the runtime** except `cleanup_job_dirs`, which is synchronous by its
//!   signature and belongs in `spawn_blocking`. The bookkeeping lock is a `std` mutex held only
//!   for map updates and signal syscalls, never across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// Environment variables passed through from the executor's own environment. Everything else of
/// it is withheld, so attempts do not depend on how the executor happened to be started.
const INHERITED_ENV: &[&str] = &["PATH", "HOME"];

/// Name of the directory under `work_dir` that holds every attempt's directory.
const ATTEMPTS_DIR: &str = "attempts";
/// Under the work dir: one file per spawned attempt not yet reaped, named by token, holding
/// the attempt's process group id.
const RUNNING_DIR: &str = "running";
/// How long [`Runner::kill_leftovers`] waits for a killed group to disappear.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(5);

/// Everything needed to run one attempt of one task. Built by the caller from the dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpec {
    /// The job's id; used as a directory name, so it must be a single path component.
    pub job_id: String,
    /// Index of the task within the job, `0..task_count`.
    pub task_index: u32,
    /// Number of tasks (partitions) of the job.
    pub task_count: u32,
    /// 1-based attempt number within the task (0 is reserved for "latest" in `read_output`).
    pub attempt: u32,
    /// Fencing token of this attempt; the runner's key for it.
    pub token: u64,
    /// Program to exec (argv mode) or shell script (shell mode).
    pub command: String,
    /// Arguments: `argv[1..]` in argv mode, `$1...` of the script in shell mode.
    pub args: Vec<String>,
    /// User environment; `TRIAD_*` variables set by the runner override entries here.
    pub env: BTreeMap<String, String>,
    /// Run `command` as a script with `/bin/sh -c` instead of exec'ing it.
    pub shell: bool,
    /// Wall-clock limit from spawn; on expiry the group is SIGKILLed and the status is `TimedOut`.
    pub timeout: Option<Duration>,
    /// First UUID of this task's share of the UUID space (computed by the caller).
    pub range_start: String,
    /// Last UUID of this task's share of the UUID space (computed by the caller).
    pub range_end: String,
}

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
    /// Where `Started` / `Finished` events go; a closed receiver is tolerated.
    events: mpsc::UnboundedSender<AttemptEvent>,
    /// Every known attempt by token, live or finished until forgotten.
    attempts: Mutex<HashMap<u64, Entry>>,
    /// Tokens forgotten after they ran: a token runs at most once here, so a late duplicate
    /// start (a retried dispatch delivered after the attempt finished) is refused. Bounded to the
    /// newest [`RETIRED_KEEP`] tokens (tokens only grow, so older ones are never reissued).
    retired: Mutex<std::collections::BTreeSet<u64>>,
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
    /// events to `events`. Does no I/O.
    pub fn new(work_dir: PathBuf, events: mpsc::UnboundedSender<AttemptEvent>) -> Self {
        Runner {
            inner: Arc::new(Inner {
                work_dir,
                events,
                attempts: Mutex::new(HashMap::new()),
                retired: Mutex::new(std::collections::BTreeSet::new()),
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
        let stdout_path = dir.join("stdout");
        let stderr_path = dir.join("stderr");
        let (done_tx, done_rx) = watch::channel(false);

        if self.inner.retired.lock().expect("retired lock poisoned").contains(&token) {
            return Err(RunnerError::AlreadyExists { token, pid: None });
        }
        // Register the token before any I/O, so a concurrent duplicate sees it and backs off.
        {
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
                return Err(RunnerError::DirInUse { token, other_token: other.info.token, dir });
            }
            let info = AttemptInfo {
                token,
                job_id: spec.job_id.clone(),
                task_index: spec.task_index,
                attempt: spec.attempt,
                pid: None,
                status: None,
                stdout_path: stdout_path.clone(),
                stderr_path: stderr_path.clone(),
            };
            attempts.insert(token, Entry { info, stop_requested: false, done: done_rx });
        }

        let prepared = prepare_dir(token, &dir, &stdout_path, &stderr_path).await;
        let spawned = prepared.and_then(|(stdout, stderr)| {
            build_command(&spec, &dir, stdout, stderr).spawn().map_err(|source| {
                RunnerError::Spawn { token, program: program_name(&spec), source }
            })
        });
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                tracing::warn!(token, error = %err, "attempt failed to start");
                self.finish(token, ExitStatus::SpawnFailed(err.to_string()), done_tx);
                return Err(err);
            }
        };
        // A spawned child always has an id until it is waited on.
        let pid = child.id().expect("freshly spawned child has a pid");
        {
            let mut attempts = self.lock();
            let entry = attempts.get_mut(&token).expect("a live attempt is never forgotten");
            entry.info.pid = Some(pid);
            if entry.stop_requested {
                // stop() came while we were spawning: it could not signal a pid it did not
                // know, so the attempt dies now, without grace.
                signal_group(pid, Signal::SIGKILL);
            }
        }
        self.send(token, EventKind::Started { pid });
        self.record_running(token, pid);
        tracing::info!(token, pid, job_id = %spec.job_id, task = spec.task_index, attempt = spec.attempt, "attempt started");
        let runner = self.clone();
        tokio::spawn(
            async move { runner.wait_attempt(token, pid, child, spec.timeout, done_tx).await },
        );
        Ok(pid)
    }

    /// Stops a live attempt: SIGTERM to its process group, then SIGKILL if it has not ended
    /// after `grace`. Returns once it has ended (its status is then `Killed`), `true` if it was
    /// live; `false` for an unknown or already finished token.
    pub async fn stop(&self, token: u64, grace: Duration) -> bool {
        let mut done = {
            let mut attempts = self.lock();
            let Some(entry) = attempts.get_mut(&token).filter(|e| e.is_live()) else {
                return false;
            };
            entry.stop_requested = true;
            if let Some(pid) = entry.info.pid {
                signal_group(pid, Signal::SIGTERM);
            }
            entry.done.clone()
        };
        if tokio::time::timeout(grace, wait_done(&mut done)).await.is_err() {
            {
                let attempts = self.lock();
                if let Some(pid) =
                    attempts.get(&token).filter(|e| e.is_live()).and_then(|e| e.info.pid)
                {
                    tracing::info!(token, pid, "attempt outlived its grace period; killing");
                    signal_group(pid, Signal::SIGKILL);
                }
            }
            wait_done(&mut done).await;
        }
        true
    }

    /// Stops every live attempt concurrently, each as [`stop`](Self::stop) does.
    pub async fn stop_all(&self, grace: Duration) {
        let mut stops = tokio::task::JoinSet::new();
        for token in self.live_tokens() {
            let runner = self.clone();
            stops.spawn(async move { runner.stop(token, grace).await });
        }
        while stops.join_next().await.is_some() {}
    }

    /// What is known about the attempt with this token.
    pub fn get(&self, token: u64) -> Option<AttemptInfo> {
        self.lock().get(&token).map(|e| e.info.clone())
    }

    /// Every known attempt, live or finished, ordered by token.
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

    /// Reads up to `max_bytes` of an attempt's stdout (or stderr) from byte `offset`.
    ///
    /// `attempt` 0 means the latest attempt of the task, known to this runner or found on disk.
    /// Works for attempts from before a restart, as long as their files exist. `eof` is true
    /// when the returned bytes reach the end of the file and the attempt is not live here, so
    /// no more output will come; a reader streaming a live attempt polls with growing offsets.
    pub async fn read_output(
        &self,
        job_id: &str,
        task_index: u32,
        attempt: u32,
        stderr: bool,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, bool), RunnerError> {
        let not_found =
            || RunnerError::OutputNotFound { job_id: job_id.to_owned(), task_index, attempt };
        if !is_path_component(job_id) {
            return Err(not_found());
        }
        let attempt = match attempt {
            0 => self.latest_attempt(job_id, task_index).await.ok_or_else(not_found)?,
            n => n,
        };
        // Liveness is read before the file, so a `false` here never hides output written later.
        let live = self.lock().values().any(|e| {
            e.is_live()
                && e.info.job_id == job_id
                && e.info.task_index == task_index
                && e.info.attempt == attempt
        });
        let path = self.attempt_dir(job_id, task_index, attempt).join(if stderr {
            "stderr"
        } else {
            "stdout"
        });
        let read_err = |source| RunnerError::Read { path: path.clone(), source };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunnerError::OutputNotFound {
                    job_id: job_id.to_owned(),
                    task_index,
                    attempt,
                })
            }
            Err(e) => return Err(read_err(e)),
        };
        let len = file.metadata().await.map_err(read_err)?.len();
        let mut buf = Vec::new();
        if offset < len {
            file.seek(SeekFrom::Start(offset)).await.map_err(read_err)?;
            let want = (len - offset).min(max_bytes as u64);
            file.take(want).read_to_end(&mut buf).await.map_err(read_err)?;
        }
        let eof = !live && offset.saturating_add(buf.len() as u64) >= len;
        Ok((buf, eof))
    }

    /// Removes everything under `work_dir/attempts` except the directories of live attempts
    /// (and the parents they need). Blocking file-system work: call it from `spawn_blocking`,
    /// at start-up or when idle; a `start` racing with it may fail to make its directory (and
    /// then reports `SpawnFailed`).
    pub fn cleanup_job_dirs(&self) -> std::io::Result<()> {
        let root = self.inner.work_dir.join(ATTEMPTS_DIR);
        // Collect first, then read liveness: an attempt's entry is registered before its
        // directory is made, so every directory seen here that belongs to a live attempt is in
        // the snapshot taken afterwards.
        let mut attempt_dirs = Vec::new();
        let mut strays = Vec::new();
        let mut parents = Vec::new();
        for job in read_dir_or_empty(&root)? {
            let job = job?;
            if !job.file_type()?.is_dir() {
                strays.push(job.path());
                continue;
            }
            for task in read_dir_or_empty(&job.path())? {
                let task = task?;
                if !task.file_type()?.is_dir() {
                    strays.push(task.path());
                    continue;
                }
                for attempt in read_dir_or_empty(&task.path())? {
                    attempt_dirs.push(attempt?.path());
                }
                parents.push(task.path());
            }
            parents.push(job.path());
        }
        let live: Vec<PathBuf> = {
            let attempts = self.lock();
            attempts
                .values()
                .filter(|e| e.is_live())
                .map(|e| self.attempt_dir(&e.info.job_id, e.info.task_index, e.info.attempt))
                .collect()
        };
        for path in attempt_dirs.into_iter().filter(|p| !live.contains(p)).chain(strays) {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // Task directories come before their job directory, so emptied jobs go too. A parent
        // that is not empty (a live attempt, or one started meanwhile) stays.
        for parent in parents {
            let _ = std::fs::remove_dir(&parent);
        }
        Ok(())
    }

    /// Awaits the attempt's end (or its timeout), reaps what is left of its group, records the
    /// status and sends `Finished`. Runs as one task per spawned attempt.
    async fn wait_attempt(
        self,
        token: u64,
        pid: u32,
        mut child: Child,
        timeout: Option<Duration>,
        done: watch::Sender<bool>,
    ) {
        let (waited, timed_out) = match timeout {
            None => (child.wait().await, false),
            Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(waited) => (waited, false),
                Err(_) => {
                    tracing::info!(token, pid, ?limit, "attempt timed out; killing");
                    signal_group(pid, Signal::SIGKILL);
                    (child.wait().await, true)
                }
            },
        };
        // The leader is gone; whatever else of the group remains is this attempt's leftovers.
        signal_group(pid, Signal::SIGKILL);
        let record = self.running_record(token);
        if let Err(e) = tokio::fs::remove_file(&record).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(token, path = %record.display(), error = %e, "removing the running record failed");
            }
        }
        let outcome = match waited {
            _ if timed_out => ExitStatus::TimedOut,
            Ok(status) => exit_status(status),
            Err(e) => {
                tracing::error!(token, pid, error = %e, "waiting for attempt failed");
                ExitStatus::Exited(-1)
            }
        };
        self.finish(token, outcome, done);
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

    /// The highest attempt number of a task, known in memory or present on disk.
    async fn latest_attempt(&self, job_id: &str, task_index: u32) -> Option<u32> {
        let known = self
            .lock()
            .values()
            .filter(|e| e.info.job_id == job_id && e.info.task_index == task_index)
            .map(|e| e.info.attempt)
            .max();
        let task_dir =
            self.inner.work_dir.join(ATTEMPTS_DIR).join(job_id).join(task_index.to_string());
        let mut on_disk = None;
        if let Ok(mut entries) = tokio::fs::read_dir(&task_dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    on_disk = on_disk.max(Some(n));
                }
            }
        }
        known.max(on_disk).filter(|&n| n > 0)
    }

    fn running_record(&self, token: u64) -> PathBuf {
        self.inner.work_dir.join(RUNNING_DIR).join(token.to_string())
    }

    /// Records a spawned attempt's process group, for [`kill_leftovers`](Self::kill_leftovers)
    /// after a crash. Failing to record is logged, not fatal: PDEATHSIG still covers the leader.
    /// A few bytes into the page cache, no fsync (a crash of the machine kills the attempts
    /// too): written inline, as a trip to the blocking pool would cost more than the write.
    fn record_running(&self, token: u64, pgid: u32) {
        let path = self.running_record(token);
        let write = || {
            std::fs::create_dir_all(self.inner.work_dir.join(RUNNING_DIR))?;
            std::fs::write(&path, pgid.to_string())
        };
        if let Err(e) = write() {
            tracing::warn!(token, path = %path.display(), error = %e, "recording the running attempt failed");
        }
    }

    /// Kills what is left of attempts recorded as running by an earlier executor process in this
    /// work dir (one that crashed without reaping them), waits (bounded) for them to go, and
    /// removes their records. A recorded group is only killed if one of its live members still
    /// carries the attempt's `TRIAD_FENCING_TOKEN` or works under this executor's attempts
    /// directory, so a reused group id of an unrelated process is never hit. Returns how many
    /// groups were killed. Blocking: call from `spawn_blocking`, before registering.
    pub fn kill_leftovers(&self) -> std::io::Result<usize> {
        let dir = self.inner.work_dir.join(RUNNING_DIR);
        let attempts_root = std::fs::canonicalize(self.inner.work_dir.join(ATTEMPTS_DIR)).ok();
        let mut killed = 0;
        for entry in read_dir_or_empty(&dir)? {
            let path = entry?.path();
            let record =
                path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok()).zip(
                    std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok()),
                );
            if let Some((token, pgid)) = record.filter(|(_, pgid)| *pgid > 1) {
                let marker = format!("TRIAD_FENCING_TOKEN={token}");
                let ours = group_members(pgid).into_iter().any(|pid| {
                    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    let has_token = env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
                    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
                    has_token
                        || matches!((&cwd, &attempts_root), (Some(c), Some(r)) if c.starts_with(r))
                });
                if ours {
                    tracing::warn!(
                        token,
                        pgid,
                        "killing an attempt left running by an earlier executor process"
                    );
                    signal_group(pgid, Signal::SIGKILL);
                    let deadline = std::time::Instant::now() + LEFTOVER_KILL_WAIT;
                    while !group_members(pgid).is_empty() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    killed += 1;
                }
            }
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(killed)
    }

    fn attempt_dir(&self, job_id: &str, task_index: u32, attempt: u32) -> PathBuf {
        self.inner
            .work_dir
            .join(ATTEMPTS_DIR)
            .join(job_id)
            .join(task_index.to_string())
            .join(attempt.to_string())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Nothing panics while holding the lock; recovering keeps one bug from stopping them all.
        self.inner.attempts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn validate(spec: &AttemptSpec) -> Result<(), RunnerError> {
    let invalid = |reason: String| Err(RunnerError::InvalidSpec { token: spec.token, reason });
    if !is_path_component(&spec.job_id) {
        return invalid(format!("job id {:?} is not a plain directory name", spec.job_id));
    }
    if spec.attempt == 0 {
        return invalid("attempt numbers start at 1".into());
    }
    if spec.task_index >= spec.task_count {
        return invalid(format!(
            "task index {} not below task count {}",
            spec.task_index, spec.task_count
        ));
    }
    Ok(())
}

/// True if `s` names exactly one directory entry below its parent.
fn is_path_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

/// Makes a clean attempt directory and opens its output files: one trip to the blocking pool
/// for all of it (each `tokio::fs` call would be a trip of its own, on the start's critical path).
async fn prepare_dir(
    token: u64,
    dir: &Path,
    stdout: &Path,
    stderr: &Path,
) -> Result<(std::fs::File, std::fs::File), RunnerError> {
    let (dir, stdout, stderr) = (dir.to_path_buf(), stdout.to_path_buf(), stderr.to_path_buf());
    let prepared = tokio::task::spawn_blocking(move || {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunnerError::Prepare { token, path, source }
        };
        // A directory left by an earlier run of this attempt (before a restart) is stale scratch.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(&dir)(e)),
            _ => {}
        }
        std::fs::create_dir_all(&dir).map_err(err(&dir))?;
        let out = std::fs::File::create(&stdout).map_err(err(&stdout))?;
        let errf = std::fs::File::create(&stderr).map_err(err(&stderr))?;
        Ok((out, errf))
    })
    .await;
    prepared.unwrap_or_else(|e| {
        Err(RunnerError::Prepare {
            token,
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

fn build_command(
    spec: &AttemptSpec,
    dir: &Path,
    stdout: std::fs::File,
    stderr: std::fs::File,
) -> Command {
    let mut cmd = if spec.shell {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(&spec.command).arg("sh").args(&spec.args);
        cmd
    } else {
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args);
        cmd
    };
    cmd.env_clear();
    for key in INHERITED_ENV {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs(&spec.env)
        .env("TRIAD_JOB_ID", &spec.job_id)
        .env("TRIAD_TASK_INDEX", spec.task_index.to_string())
        .env("TRIAD_TASK_COUNT", spec.task_count.to_string())
        .env("TRIAD_ATTEMPT", spec.attempt.to_string())
        .env("TRIAD_RANGE_START", &spec.range_start)
        .env("TRIAD_RANGE_END", &spec.range_end)
        .env("TRIAD_FENCING_TOKEN", spec.token.to_string())
        .current_dir(dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // The waiter task owns the child and kills its group explicitly; dropping the handle
        // (runtime shutdown) must not be mistaken for a decision to kill.
        .kill_on_drop(false);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The executor may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd
}

/// Pids of the live (non-zombie) members of process group `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<i32> {
    let pgid = pgid.to_string();
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return members };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after "(comm) ": state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.as_str()) && fields[0] != "Z" {
            members.push(pid);
        }
    }
    members
}

fn program_name(spec: &AttemptSpec) -> String {
    if spec.shell {
        "/bin/sh".to_owned()
    } else {
        spec.command.clone()
    }
}

/// Sends `signal` to the process group `pgid`; a group that is already gone is not an error.
///
/// Callers only signal attempts whose status is not yet recorded. The one window left is
/// between reaping the group leader and recording its status: if the group is empty by then,
/// its id is free for reuse, so a process elsewhere that just became leader of a group with
/// that very number could be hit. Pids are handed out cyclically, which makes this remote.
fn signal_group(pgid: u32, signal: Signal) {
    match killpg(Pid::from_raw(pgid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, ?signal, error = %e, "signalling process group failed"),
    }
}

async fn wait_done(done: &mut watch::Receiver<bool>) {
    // A dropped sender means the waiter is gone (runtime shutting down); nothing more will come.
    let _ = done.wait_for(|&d| d).await;
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Exited(code),
        (None, Some(signal)) => ExitStatus::Signaled(signal),
        (None, None) => ExitStatus::Exited(-1),
    }
}

fn read_dir_or_empty(
    dir: &Path,
) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<std::fs::DirEntry>>>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(Box::new(entries)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Box::new(std::iter::empty())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::time::Instant;

    /// Upper bound for any condition a test waits for; generous for a loaded 2-core CI box.
    const DEADLINE: Duration = Duration::from_secs(20);

    struct Harness {
        runner: Runner,
        events: mpsc::UnboundedReceiver<AttemptEvent>,
        dir: tempfile::TempDir,
    }

    fn harness() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, events) = mpsc::unbounded_channel();
        Harness { runner: Runner::new(dir.path().to_path_buf(), tx), events, dir }
    }

    fn spec(token: u64, command: &str, args: &[&str]) -> AttemptSpec {
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

    fn shell(token: u64, script: &str) -> AttemptSpec {
        AttemptSpec { shell: true, ..spec(token, script, &[]) }
    }

    impl Harness {
        /// The next event, failing the test if none arrives before the deadline.
        async fn next_event(&mut self) -> AttemptEvent {
            tokio::time::timeout(DEADLINE, self.events.recv())
                .await
                .expect("no attempt event before the deadline")
                .expect("event channel closed")
        }

        /// Consumes events up to this token's `Finished` and returns its status.
        async fn finished(&mut self, token: u64) -> ExitStatus {
            loop {
                let event = self.next_event().await;
                if let AttemptEvent { token: t, kind: EventKind::Finished { status } } = event {
                    if t == token {
                        return status;
                    }
                }
            }
        }

        async fn run_to_end(&mut self, spec: AttemptSpec) -> ExitStatus {
            let token = spec.token;
            self.runner.start(spec).await.expect("start");
            self.finished(token).await
        }

        async fn output(&self, spec: &AttemptSpec, stderr: bool) -> String {
            let (bytes, eof) = self
                .runner
                .read_output(&spec.job_id, spec.task_index, spec.attempt, stderr, 0, 1 << 20)
                .await
                .expect("read_output");
            assert!(eof, "finished attempt's output should be at eof");
            String::from_utf8(bytes).expect("utf-8 output")
        }
    }

    /// Polls `check` until it holds; panics with `what` after the deadline.
    async fn wait_until<F, Fut>(what: &str, mut check: F)
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
    fn is_gone(pid: i32) -> bool {
        match nix::sys::signal::kill(Pid::from_raw(pid), None) {
            Err(Errno::ESRCH) => true,
            _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
                .unwrap_or(true),
        }
    }

    fn env_map(output: &str) -> BTreeMap<String, String> {
        output
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn shell_job_sees_triad_env_overriding_user_env_and_no_other_inherited_vars() {
        let mut h = harness();
        let mut s = shell(7, "env");
        s.env.insert("USER_VAR".into(), "user value".into());
        s.env.insert("TRIAD_JOB_ID".into(), "forged".into());
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        let env = env_map(&h.output(&s, false).await);
        let expect = [
            ("TRIAD_JOB_ID", "job-a"),
            ("TRIAD_TASK_INDEX", "2"),
            ("TRIAD_TASK_COUNT", "4"),
            ("TRIAD_ATTEMPT", "1"),
            ("TRIAD_RANGE_START", "80000000-0000-0000-0000-000000000000"),
            ("TRIAD_RANGE_END", "bfffffff-ffff-ffff-ffff-ffffffffffff"),
            ("TRIAD_FENCING_TOKEN", "7"),
            ("USER_VAR", "user value"),
        ];
        for (key, value) in expect {
            assert_eq!(env.get(key).map(String::as_str), Some(value), "{key} in {env:?}");
        }
        if let Ok(path) = std::env::var("PATH") {
            assert_eq!(env.get("PATH"), Some(&path), "PATH is inherited");
        }
        // cargo sets CARGO_* for test binaries; the attempt must not see the executor's env.
        assert!(!env.keys().any(|k| k.starts_with("CARGO")), "executor env leaked: {env:?}");
    }

    #[tokio::test]
    async fn argv_job_reads_its_task_index() {
        let mut h = harness();
        let s = spec(1, "printenv", &["TRIAD_TASK_INDEX"]);
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "2\n");
    }

    #[tokio::test]
    async fn argv_arguments_with_spaces_are_not_split() {
        let mut h = harness();
        let s = spec(1, "printf", &["[%s]", "a b", "c  d", "$HOME", "*"]);
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "[a b][c  d][$HOME][*]");
    }

    #[tokio::test]
    async fn shell_job_receives_args_as_positional_parameters() {
        let mut h = harness();
        let s = AttemptSpec {
            args: vec!["a b".into(), "c".into()],
            ..shell(1, r#"printf '[%s]' "$0" "$@""#)
        };
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "[sh][a b][c]");
    }

    #[tokio::test]
    async fn exit_codes_and_foreign_signals_propagate() {
        let mut h = harness();
        assert_eq!(h.run_to_end(spec(1, "true", &[])).await, ExitStatus::Exited(0));
        assert_eq!(
            h.run_to_end(AttemptSpec { attempt: 2, ..shell(2, "exit 7") }).await,
            ExitStatus::Exited(7)
        );
        assert_eq!(
            h.run_to_end(AttemptSpec { attempt: 3, ..shell(3, "kill -9 $$") }).await,
            ExitStatus::Signaled(9)
        );
        let info = h.runner.get(2).expect("known");
        assert_eq!(info.status, Some(ExitStatus::Exited(7)));
        assert!(h.runner.live_tokens().is_empty());
    }

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
    async fn timeout_kills_the_group_and_reports_timed_out() {
        let mut h = harness();
        let s = AttemptSpec {
            timeout: Some(Duration::from_millis(300)),
            ..shell(1, "sleep 1000 & echo $!; sleep 1000")
        };
        let pid = h.runner.start(s.clone()).await.expect("start");
        assert_eq!(h.finished(1).await, ExitStatus::TimedOut);
        let bg: i32 = h.output(&s, false).await.trim().parse().expect("background pid");
        assert!(is_gone(pid as i32), "leader {pid} survived the timeout");
        wait_until("background sleep to die", || async { is_gone(bg) }).await;
    }

    #[tokio::test]
    async fn stop_kills_the_whole_process_group() {
        let mut h = harness();
        let pid = h.runner.start(shell(1, "sleep 1000 & sleep 1000")).await.expect("start");
        assert_eq!(
            h.next_event().await,
            AttemptEvent { token: 1, kind: EventKind::Started { pid } }
        );
        let mut members = Vec::new();
        wait_until("sh and both sleeps in the group", || {
            members = group_members(pid);
            let found = members.len();
            async move { found == 3 }
        })
        .await;
        assert!(members.contains(&(pid as i32)));

        assert!(h.runner.stop(1, Duration::from_secs(5)).await, "attempt was live");
        assert_eq!(h.runner.get(1).and_then(|i| i.status), Some(ExitStatus::Killed));
        assert_eq!(h.finished(1).await, ExitStatus::Killed);
        for member in &members {
            wait_until(&format!("group member {member} to die"), || async { is_gone(*member) })
                .await;
        }
        assert!(!h.runner.stop(1, Duration::from_secs(5)).await, "a finished attempt is not live");
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
        let mut h = harness();
        let s = shell(1, "trap '' TERM; echo ready; sleep 1000");
        h.runner.start(s.clone()).await.expect("start");
        wait_until("trap installed", || async {
            h.runner
                .read_output("job-a", 2, 1, false, 0, 64)
                .await
                .is_ok_and(|(b, _)| b == b"ready\n")
        })
        .await;
        let grace = Duration::from_millis(200);
        let began = Instant::now();
        assert!(h.runner.stop(1, grace).await);
        assert!(
            began.elapsed() >= grace,
            "SIGTERM was ignored, so only SIGKILL after grace ended it"
        );
        assert_eq!(h.finished(1).await, ExitStatus::Killed);
    }

    #[tokio::test]
    async fn leftover_background_processes_die_with_their_attempt() {
        let mut h = harness();
        let s = shell(1, "sleep 1000 & echo $!");
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        let bg: i32 = h.output(&s, false).await.trim().parse().expect("background pid");
        wait_until("orphaned sleep to die", || async { is_gone(bg) }).await;
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
    async fn read_output_streams_by_offset_and_survives_a_runner_restart() {
        let mut h = harness();
        // A live attempt: output so far is readable but never eof.
        let live = AttemptSpec { task_index: 3, ..shell(2, "echo first; sleep 1000") };
        h.runner.start(live.clone()).await.expect("start");
        wait_until("first line", || async {
            h.runner
                .read_output("job-a", 3, 0, false, 0, 100)
                .await
                .is_ok_and(|(b, eof)| b == b"first\n" && !eof)
        })
        .await;
        let (rest, eof) = h.runner.read_output("job-a", 3, 1, false, 6, 100).await.expect("read");
        assert!(rest.is_empty() && !eof, "caught up with a live attempt is not eof");
        assert!(h.runner.stop(2, Duration::from_secs(5)).await);
        assert_eq!(
            h.runner.read_output("job-a", 3, 1, false, 6, 100).await.expect("read"),
            (vec![], true)
        );

        assert_eq!(h.run_to_end(shell(1, "printf 'hello world'")).await, ExitStatus::Exited(0));
        let read = |runner: Runner, attempt, offset, max| async move {
            runner.read_output("job-a", 2, attempt, false, offset, max).await.expect("read")
        };
        assert_eq!(read(h.runner.clone(), 1, 0, 5).await, (b"hello".to_vec(), false));
        assert_eq!(read(h.runner.clone(), 1, 5, 100).await, (b" world".to_vec(), true));
        assert_eq!(read(h.runner.clone(), 0, 6, 3).await, (b"wor".to_vec(), false));
        assert_eq!(read(h.runner.clone(), 1, 100, 10).await, (vec![], true));

        // A new runner over the same work dir knows nothing in memory, yet finds the files.
        let (tx, _rx) = mpsc::unbounded_channel();
        let restarted = Runner::new(h.dir.path().to_path_buf(), tx);
        assert_eq!(read(restarted.clone(), 0, 0, 100).await, (b"hello world".to_vec(), true));
        assert!(matches!(
            restarted.read_output("job-a", 2, 7, false, 0, 10).await,
            Err(RunnerError::OutputNotFound { attempt: 7, .. })
        ));
        assert!(matches!(
            restarted.read_output("nope", 0, 0, false, 0, 10).await,
            Err(RunnerError::OutputNotFound { .. })
        ));
        assert!(matches!(
            restarted.read_output("..", 0, 0, false, 0, 10).await,
            Err(RunnerError::OutputNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn stdout_and_stderr_are_separate_files_and_cwd_is_the_attempt_dir() {
        let mut h = harness();
        let s = shell(1, "echo out; echo err >&2; pwd >&2");
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "out\n");
        let stderr = h.output(&s, true).await;
        let info = h.runner.get(1).expect("known");
        let attempt_dir = h.dir.path().join("attempts/job-a/2/1");
        assert_eq!(info.stdout_path, attempt_dir.join("stdout"));
        assert_eq!(info.stderr_path, attempt_dir.join("stderr"));
        let cwd = attempt_dir.canonicalize().expect("canonical");
        assert_eq!(stderr, format!("err\n{}\n", cwd.display()));
    }

    #[tokio::test]
    async fn stop_all_stops_every_live_attempt() {
        let mut h = harness();
        for token in 1..=3 {
            h.runner
                .start(AttemptSpec { attempt: token as u32, ..spec(token, "sleep", &["1000"]) })
                .await
                .expect("start");
        }
        assert_eq!(h.runner.live_tokens(), vec![1, 2, 3]);
        h.runner.stop_all(Duration::from_secs(5)).await;
        assert!(h.runner.live_tokens().is_empty());
        for token in 1..=3 {
            assert_eq!(h.runner.get(token).and_then(|i| i.status), Some(ExitStatus::Killed));
        }
        let mut finished = 0;
        while finished < 3 {
            if let EventKind::Finished { status } = h.next_event().await.kind {
                assert_eq!(status, ExitStatus::Killed);
                finished += 1;
            }
        }
    }

    #[tokio::test]
    async fn cleanup_removes_all_but_live_attempt_dirs_and_forget_drops_finished_only() {
        let mut h = harness();
        assert_eq!(h.run_to_end(spec(1, "true", &[])).await, ExitStatus::Exited(0));
        let live = AttemptSpec { job_id: "job-b".into(), ..spec(2, "sleep", &["1000"]) };
        h.runner.start(live).await.expect("start");
        std::fs::write(h.dir.path().join("attempts/stray"), b"x").expect("stray file");
        std::fs::write(h.dir.path().join("keep-me"), b"x").expect("file outside attempts");

        let runner = h.runner.clone();
        tokio::task::spawn_blocking(move || runner.cleanup_job_dirs())
            .await
            .expect("join")
            .expect("cleanup");
        let attempts = h.dir.path().join("attempts");
        let left: Vec<_> =
            std::fs::read_dir(&attempts).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec!["job-b"], "only the live attempt's job dir remains");
        assert!(attempts.join("job-b/2/1/stdout").exists());
        assert!(h.dir.path().join("keep-me").exists(), "nothing outside attempts/ is touched");

        h.runner.forget(2);
        assert!(h.runner.get(2).is_some(), "a live attempt cannot be forgotten");
        h.runner.forget(1);
        assert!(h.runner.get(1).is_none());
        h.runner.stop_all(Duration::from_secs(5)).await;
        assert_eq!(h.finished(2).await, ExitStatus::Killed);
    }

    #[tokio::test]
    async fn invalid_specs_are_rejected_before_anything_runs() {
        let h = harness();
        for (bad, why) in [
            (AttemptSpec { job_id: "../escape".into(), ..spec(1, "true", &[]) }, "job id"),
            (AttemptSpec { job_id: "".into(), ..spec(2, "true", &[]) }, "job id"),
            (AttemptSpec { attempt: 0, ..spec(3, "true", &[]) }, "attempt"),
            (AttemptSpec { task_index: 4, ..spec(4, "true", &[]) }, "task index"),
        ] {
            let err = h.runner.start(bad).await.unwrap_err();
            assert!(
                matches!(err, RunnerError::InvalidSpec { .. }) && err.to_string().contains(why),
                "{err}"
            );
        }
        assert!(h.runner.list().is_empty());
        assert!(!h.dir.path().join("attempts").exists());
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

    #[tokio::test]
    async fn a_running_attempt_is_recorded_until_reaped() {
        let mut h = harness();
        let pid = h.runner.start(shell(50, "sleep 1000")).await.expect("start");
        let record = h.dir.path().join(RUNNING_DIR).join("50");
        assert_eq!(std::fs::read_to_string(&record).expect("record").trim(), pid.to_string());
        assert!(h.runner.stop(50, Duration::from_secs(5)).await);
        assert_eq!(h.finished(50).await, ExitStatus::Killed);
        wait_until("the record to go", || {
            let gone = !record.exists();
            async move { gone }
        })
        .await;
    }

    /// A process group as a crashed executor would have left it: `sleep` in its own group.
    fn orphan_group(token: Option<u64>, cwd: &Path) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("1000").current_dir(cwd).process_group(0);
        if let Some(t) = token {
            cmd.env("TRIAD_FENCING_TOKEN", t.to_string());
        }
        cmd.spawn().expect("spawn sleep")
    }

    #[tokio::test]
    async fn leftovers_of_a_crashed_executor_are_killed_and_strangers_spared() {
        let h = harness();
        let running = h.dir.path().join(RUNNING_DIR);
        std::fs::create_dir_all(&running).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // Ours by token, ours by working directory, and a stranger whose group id is recorded
        // under another token (as if the id had been reused).
        let attempt_dir = h.dir.path().join(ATTEMPTS_DIR).join("job-x").join("0").join("1");
        std::fs::create_dir_all(&attempt_dir).unwrap();
        let mut by_token = orphan_group(Some(61), elsewhere.path());
        let mut by_cwd = orphan_group(None, &attempt_dir);
        let mut stranger = orphan_group(Some(999), elsewhere.path());
        std::fs::write(running.join("61"), by_token.id().to_string()).unwrap();
        std::fs::write(running.join("62"), by_cwd.id().to_string()).unwrap();
        std::fs::write(running.join("63"), stranger.id().to_string()).unwrap();
        std::fs::write(running.join("64"), "not a pid").unwrap();

        let runner = h.runner.clone();
        let killed = tokio::task::spawn_blocking(move || runner.kill_leftovers())
            .await
            .unwrap()
            .expect("kill_leftovers");
        assert_eq!(killed, 2);
        assert!(by_token.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(by_cwd.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(!is_gone(stranger.id() as i32), "a stranger's group is left alone");
        assert_eq!(std::fs::read_dir(&running).unwrap().count(), 0, "every record is consumed");
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }
}
