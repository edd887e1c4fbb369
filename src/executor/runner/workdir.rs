//! The attempts tree on disk: `work_dir/attempts/<job_id>/<task_index>/<attempt>/`, each
//! attempt's working directory and the home of its `stdout` and `stderr` files. Making an
//! attempt's directory, naming it, and cleaning the tree up.
//!
//! Invariants:
//! - **One directory per attempt, one path component per level.** A job id is accepted only if
//!   it names exactly one directory entry ([`is_path_component`]), so no spec or reader reaches
//!   outside the tree.
//! - **Fresh for every spawn.** A directory left by an earlier run of the same attempt (before a
//!   restart) is stale scratch and is removed before the attempt starts.
//! - **Cleanup spares the live.** [`Runner::cleanup_job_dirs`] removes everything under
//!   `attempts/` except the directories of live attempts (and the parents they need), and
//!   nothing outside `attempts/`.
//! - Files outlive the runner: only `cleanup_job_dirs` removes output of finished attempts.

use std::path::{Path, PathBuf};

use super::{Runner, RunnerError};

/// Name of the directory under `work_dir` that holds every attempt's directory.
pub(super) const ATTEMPTS_DIR: &str = "attempts";

impl Runner {
    /// Removes everything under `work_dir/attempts` except the directories of live attempts
    /// (and the parents they need). Blocking file-system work: call it from `spawn_blocking`,
    /// at start-up or when idle; a `start` racing with it may fail to make its directory (and
    /// then reports `SpawnFailed`).
    pub fn cleanup_job_dirs(&self) -> std::io::Result<()> {
        // Collect first, then read liveness: an attempt's entry is registered before its
        // directory is made, so every directory seen here that belongs to a live attempt is in
        // the snapshot taken afterwards.
        let tree = AttemptsTree::scan(&self.inner.work_dir.join(ATTEMPTS_DIR))?;
        let live: Vec<PathBuf> = {
            let attempts = self.lock();
            attempts
                .values()
                .filter(|e| e.is_live())
                .map(|e| self.attempt_dir(&e.info.job_id, e.info.task_index, e.info.attempt))
                .collect()
        };
        for path in tree.attempt_dirs.into_iter().filter(|p| !live.contains(p)).chain(tree.strays) {
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
        for parent in tree.parents {
            let _ = std::fs::remove_dir(&parent);
        }
        Ok(())
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

/// What [`Runner::cleanup_job_dirs`] found under the attempts root.
struct AttemptsTree {
    /// Every `<job>/<task>/<attempt>` entry.
    attempt_dirs: Vec<PathBuf>,
    /// Files where a job or task directory belongs.
    strays: Vec<PathBuf>,
    /// Task and job directories, each task before its job.
    parents: Vec<PathBuf>,
}

impl AttemptsTree {
    fn scan(root: &Path) -> std::io::Result<AttemptsTree> {
        let mut tree =
            AttemptsTree { attempt_dirs: Vec::new(), strays: Vec::new(), parents: Vec::new() };
        for job in read_dir_or_empty(root)? {
            let job = job?;
            if !job.file_type()?.is_dir() {
                tree.strays.push(job.path());
                continue;
            }
            for task in read_dir_or_empty(&job.path())? {
                let task = task?;
                if !task.file_type()?.is_dir() {
                    tree.strays.push(task.path());
                    continue;
                }
                for attempt in read_dir_or_empty(&task.path())? {
                    tree.attempt_dirs.push(attempt?.path());
                }
                tree.parents.push(task.path());
            }
            tree.parents.push(job.path());
        }
        Ok(tree)
    }
}

/// True if `s` names exactly one directory entry below its parent.
pub(super) fn is_path_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

/// Makes a clean attempt directory and opens its output files: one trip to the blocking pool
/// for all of it (each `tokio::fs` call would be a trip of its own, on the start's critical path).
pub(super) async fn prepare_dir(
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
    use std::time::Duration;

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
}
