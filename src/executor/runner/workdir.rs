//! The attempts tree on disk: `work_dir/attempts/<job_id>/<task_index>/<attempt>/`, each
//! attempt's working directory and the home of its output files (`capture.rs`). Making an
//! attempt's directory, naming it, and removing output: of deleted jobs, and once expired.
//!
//! Invariants:
//! - **One directory per attempt, one path component per level.** A job id is accepted only if
//!   it names exactly one directory entry ([`is_path_component`]), so no spec or reader reaches
//!   outside the tree.
//! - **Fresh for every spawn.** A directory left by an earlier run of the same attempt (before a
//!   restart) is stale scratch and is removed before the attempt starts.
//! - **Output outlives the executor.** Nothing removes an ended attempt's directory but
//!   [`Runner::delete_job_output`] (its job was deleted: the leader says so) and
//!   [`Runner::expire_output`] (`output_ttl` after the attempt ended); a restart, graceful or
//!   not, keeps it.
//! - **Removal spares the live.** Neither removes the directory of a live attempt, nor anything
//!   outside `attempts/`.
//! - **An attempt's end is dated on disk:** the runner writes [`ENDED_FILE`] into its directory
//!   once it ended; its age is what `output_ttl` counts. An attempt without one (the executor
//!   died with it) is dated by the newest modification in its directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::capture::file_name;
use super::{ExitStatus, Runner, RunnerError};

/// Name of the directory under `work_dir` that holds every attempt's directory.
pub(super) const ATTEMPTS_DIR: &str = "attempts";
/// Written into an attempt's directory when it ended (its status, for people): its
/// modification time is the attempt's end.
pub(super) const ENDED_FILE: &str = ".triad-ended";

impl Runner {
    /// Removes the output of every attempt of these jobs (the leader deleted them), except the
    /// directories of live attempts, which cannot belong to a deleted job unless the leader and
    /// this executor disagree. Returns how many of the jobs had output here. Job ids that are
    /// not one path component are skipped. Blocking: call from `spawn_blocking`.
    pub fn delete_job_output(&self, job_ids: &[String]) -> std::io::Result<u32> {
        let mut deleted = 0;
        for job in job_ids.iter().filter(|j| is_path_component(j)) {
            let dir = self.inner.work_dir.join(ATTEMPTS_DIR).join(job);
            if !dir.exists() {
                continue;
            }
            let live = self.live_dirs();
            if live.iter().any(|l| l.starts_with(&dir)) {
                tracing::warn!(job_id = %job, "not deleting the output of a live attempt");
                let tree = AttemptsTree::scan_job(&dir)?;
                for path in tree.attempt_dirs.into_iter().filter(|p| !live.contains(p)) {
                    remove_all(&path)?;
                }
                continue;
            }
            remove_all(&dir)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Removes the output of attempts that ended `ttl` or longer before `now` (and directories
    /// left empty); live attempts are never touched. Returns how many attempt directories went.
    /// Blocking: call from `spawn_blocking`.
    pub fn expire_output(&self, ttl: Duration, now: SystemTime) -> std::io::Result<usize> {
        let tree = AttemptsTree::scan(&self.inner.work_dir.join(ATTEMPTS_DIR))?;
        // Liveness after the scan: an attempt is registered before its directory is made, so a
        // live attempt's directory seen by the scan is in this list.
        let live = self.live_dirs();
        let mut removed = 0;
        for dir in tree.attempt_dirs.into_iter().filter(|p| !live.contains(p)) {
            let ended = ended_at(&dir);
            if ended.is_some_and(|t| now.duration_since(t).unwrap_or_default() >= ttl) {
                remove_all(&dir)?;
                removed += 1;
            }
        }
        // Task directories come before their job directory, so emptied jobs go too. A parent
        // that is not empty stays.
        for parent in tree.parents {
            let _ = std::fs::remove_dir(&parent);
        }
        Ok(removed)
    }

    /// Dates an attempt's end in its directory (best effort: a full disk may refuse it, and
    /// the attempt is then dated by its last output).
    pub(super) async fn mark_ended(&self, token: u64, status: &ExitStatus) {
        let Some(dir) = self
            .lock()
            .get(&token)
            .map(|e| self.attempt_dir(&e.info.job_id, e.info.task_index, e.info.attempt))
        else {
            return;
        };
        if let Err(e) = tokio::fs::write(dir.join(ENDED_FILE), format!("{status:?}\n")).await {
            tracing::debug!(token, error = %e, "could not date the attempt's end");
        }
    }

    /// The directories of live attempts.
    fn live_dirs(&self) -> Vec<PathBuf> {
        self.lock()
            .values()
            .filter(|e| e.is_live())
            .map(|e| self.attempt_dir(&e.info.job_id, e.info.task_index, e.info.attempt))
            .collect()
    }

    /// The directory of one attempt (its working directory, holding its output files).
    pub(super) fn attempt_dir(&self, job_id: &str, task_index: u32, attempt: u32) -> PathBuf {
        self.task_dir(job_id, task_index).join(attempt.to_string())
    }

    /// The directory holding every attempt directory of one task.
    pub(super) fn task_dir(&self, job_id: &str, task_index: u32) -> PathBuf {
        self.inner.work_dir.join(ATTEMPTS_DIR).join(job_id).join(task_index.to_string())
    }
}

/// What a scan found under the attempts root.
struct AttemptsTree {
    /// Every `<job>/<task>/<attempt>` entry.
    attempt_dirs: Vec<PathBuf>,
    /// Task and job directories, each task before its job.
    parents: Vec<PathBuf>,
}

impl AttemptsTree {
    /// Every job directory under `root`.
    fn scan(root: &Path) -> std::io::Result<AttemptsTree> {
        let mut tree = AttemptsTree { attempt_dirs: Vec::new(), parents: Vec::new() };
        for job in read_dir_or_empty(root)? {
            let job = job?;
            if job.file_type()?.is_dir() {
                tree.add_job(&job.path())?;
            }
        }
        Ok(tree)
    }

    /// One job directory.
    fn scan_job(job: &Path) -> std::io::Result<AttemptsTree> {
        let mut tree = AttemptsTree { attempt_dirs: Vec::new(), parents: Vec::new() };
        tree.add_job(job)?;
        Ok(tree)
    }

    fn add_job(&mut self, job: &Path) -> std::io::Result<()> {
        for task in read_dir_or_empty(job)? {
            let task = task?;
            if !task.file_type()?.is_dir() {
                continue;
            }
            for attempt in read_dir_or_empty(&task.path())? {
                self.attempt_dirs.push(attempt?.path());
            }
            self.parents.push(task.path());
        }
        self.parents.push(job.to_path_buf());
        Ok(())
    }
}

/// Removes a directory tree (or a file); one already gone is fine.
fn remove_all(path: &Path) -> std::io::Result<()> {
    let removed =
        if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// When the attempt in `dir` ended: its [`ENDED_FILE`]'s time, or else the newest modification
/// of the directory or a file in it. `None` if it cannot be read (it is then kept).
fn ended_at(dir: &Path) -> Option<SystemTime> {
    if let Ok(t) = std::fs::metadata(dir.join(ENDED_FILE)).and_then(|m| m.modified()) {
        return Some(t);
    }
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}

/// True if `s` names exactly one directory entry below its parent.
pub(super) fn is_path_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

/// Makes a clean attempt directory and its first output files (`stdout.0`, `stderr.0`): one
/// trip to the blocking pool for all of it (each `tokio::fs` call would be a trip of its own,
/// on the start's critical path).
pub(super) async fn prepare_dir(
    token: u64,
    dir: &Path,
) -> Result<(std::fs::File, std::fs::File), RunnerError> {
    let dir = dir.to_path_buf();
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
        let (stdout, stderr) = (dir.join(file_name("stdout", 0)), dir.join(file_name("stderr", 0)));
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

/// The entries of `dir`; a directory that does not exist has none.
pub(super) fn read_dir_or_empty(
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
    use super::super::testkit::{harness, shell, spec};
    use crate::executor::runner::{AttemptSpec, ExitStatus};
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn stdout_and_stderr_are_separate_files_and_cwd_is_the_attempt_dir() {
        let mut h = harness();
        let s = shell(1, "echo out; echo err >&2; pwd >&2");
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "out\n");
        let stderr = h.output(&s, true).await;
        let info = h.runner.get(1).expect("known");
        let attempt_dir = h.dir.path().join("attempts/job-a/2/1");
        assert_eq!(info.stdout_path, attempt_dir.join("stdout.0"));
        assert_eq!(info.stderr_path, attempt_dir.join("stderr.0"));
        let cwd = attempt_dir.canonicalize().expect("canonical");
        assert_eq!(stderr, format!("err\n{}\n", cwd.display()));
        assert!(attempt_dir.join(super::ENDED_FILE).exists(), "the end is dated");
    }

    #[tokio::test]
    async fn deleting_a_jobs_output_removes_its_files_and_spares_live_attempts_and_others() {
        let mut h = harness();
        assert_eq!(h.run_to_end(spec(1, "true", &[])).await, ExitStatus::Exited(0));
        let other = AttemptSpec { job_id: "job-c".into(), ..spec(3, "true", &[]) };
        assert_eq!(h.run_to_end(other).await, ExitStatus::Exited(0));
        let live = AttemptSpec { job_id: "job-b".into(), ..spec(2, "sleep", &["1000"]) };
        h.runner.start(live).await.expect("start");
        std::fs::write(h.dir.path().join("keep-me"), b"x").expect("file outside attempts");

        let runner = h.runner.clone();
        let ids = vec!["job-a".to_string(), "job-b".into(), "nope".into(), "..".into()];
        let deleted = tokio::task::spawn_blocking(move || runner.delete_job_output(&ids))
            .await
            .expect("join")
            .expect("delete");
        assert_eq!(deleted, 1, "job-a only: job-b is live, nope has no output");
        let attempts = h.dir.path().join("attempts");
        assert!(!attempts.join("job-a").exists());
        assert!(attempts.join("job-b/2/1/stdout.0").exists(), "a live attempt keeps its dir");
        assert!(attempts.join("job-c/2/1/stdout.0").exists(), "other jobs are untouched");
        assert!(h.dir.path().join("keep-me").exists(), "nothing outside attempts/ is touched");
        h.runner.stop_all(Duration::from_secs(5)).await;
        assert_eq!(h.finished(2).await, ExitStatus::Killed);
    }

    #[tokio::test]
    async fn output_expires_ttl_after_the_attempt_ended_and_live_attempts_never_do() {
        let mut h = harness();
        assert_eq!(h.run_to_end(spec(1, "true", &[])).await, ExitStatus::Exited(0));
        let live = AttemptSpec { job_id: "job-b".into(), ..spec(2, "sleep", &["1000"]) };
        h.runner.start(live).await.expect("start");
        let ttl = Duration::from_secs(3600);
        let expire = |at: SystemTime| {
            let runner = h.runner.clone();
            async move {
                tokio::task::spawn_blocking(move || runner.expire_output(ttl, at))
                    .await
                    .expect("join")
                    .expect("expire")
            }
        };
        assert_eq!(expire(SystemTime::now()).await, 0, "not yet due");
        assert!(h.dir.path().join("attempts/job-a/2/1").exists());
        assert_eq!(expire(SystemTime::now() + ttl + Duration::from_secs(1)).await, 1);
        assert!(!h.dir.path().join("attempts/job-a").exists(), "emptied parents go too");
        assert!(h.dir.path().join("attempts/job-b/2/1").exists(), "live attempts stay");
        h.runner.stop_all(Duration::from_secs(5)).await;
        assert_eq!(h.finished(2).await, ExitStatus::Killed);
    }

    #[tokio::test]
    async fn forget_drops_finished_attempts_only() {
        let mut h = harness();
        assert_eq!(h.run_to_end(shell(1, "true")).await, ExitStatus::Exited(0));
        h.runner.start(spec(2, "sleep", &["1000"])).await.expect("start");
        h.runner.forget(2);
        assert!(h.runner.get(2).is_some(), "a live attempt cannot be forgotten");
        h.runner.forget(1);
        assert!(h.runner.get(1).is_none());
        h.runner.stop_all(Duration::from_secs(5)).await;
        assert_eq!(h.finished(2).await, ExitStatus::Killed);
    }
}
