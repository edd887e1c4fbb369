//! Crash recovery: the record of every spawned attempt that is not yet reaped
//! (`work_dir/running/<token>`, holding its process group id), and the start-up sweep that
//! kills what an earlier executor process in this work dir left running.
//!
//! Invariants:
//! - **Recorded while unreaped.** A record is written right after spawn and removed only after
//!   the group leader is reaped and the rest of its group SIGKILLed. Failing to write one is
//!   logged, not fatal: PDEATHSIG still covers the group leader.
//! - **Only our own are killed.** A recorded group is killed only if one of its live members
//!   carries the attempt's `TRIAD_FENCING_TOKEN` or works under this executor's attempts
//!   directory, so a reused group id of an unrelated process is never hit.
//! - **The sweep runs before registering**, so an executor that crashed and came back never
//!   runs its old attempts beside their rescheduled successors. Every record is consumed.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::process::{group_members, signal_group};
use super::workdir::{read_dir_or_empty, ATTEMPTS_DIR};
use super::Runner;

/// Under the work dir: one file per spawned attempt not yet reaped, named by token, holding
/// the attempt's process group id.
pub(super) const RUNNING_DIR: &str = "running";
/// How long [`Runner::kill_leftovers`] waits for a killed group to disappear.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(5);

impl Runner {
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
                if is_ours(token, pgid, attempts_root.as_deref()) {
                    tracing::warn!(
                        token,
                        pgid,
                        "killing an attempt left running by an earlier executor process"
                    );
                    kill_and_wait(pgid);
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

    pub(super) fn running_record(&self, token: u64) -> PathBuf {
        self.inner.work_dir.join(RUNNING_DIR).join(token.to_string())
    }

    /// Records a spawned attempt's process group, for [`kill_leftovers`](Self::kill_leftovers)
    /// after a crash. Failing to record is logged, not fatal: PDEATHSIG still covers the leader.
    /// A few bytes into the page cache, no fsync (a crash of the machine kills the attempts
    /// too): written inline, as a trip to the blocking pool would cost more than the write.
    pub(super) fn record_running(&self, token: u64, pgid: u32) {
        let path = self.running_record(token);
        let write = || {
            std::fs::create_dir_all(self.inner.work_dir.join(RUNNING_DIR))?;
            std::fs::write(&path, pgid.to_string())
        };
        if let Err(e) = write() {
            tracing::warn!(token, path = %path.display(), error = %e, "recording the running attempt failed");
        }
    }

    /// Removes the record of a reaped attempt; a missing record is fine, other failures are
    /// logged (a stale record only costs the next start-up sweep a look).
    pub(super) async fn remove_running_record(&self, token: u64) {
        let record = self.running_record(token);
        if let Err(e) = tokio::fs::remove_file(&record).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(token, path = %record.display(), error = %e, "removing the running record failed");
            }
        }
    }
}

/// True if a live member of group `pgid` carries the attempt's fencing token in its environment
/// or works under `attempts_root`: only then is the recorded group really the attempt's.
fn is_ours(token: u64, pgid: u32, attempts_root: Option<&std::path::Path>) -> bool {
    let marker = format!("TRIAD_FENCING_TOKEN={token}");
    group_members(pgid).into_iter().any(|pid| {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let has_token = env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        has_token || matches!((&cwd, attempts_root), (Some(c), Some(r)) if c.starts_with(r))
    })
}

/// SIGKILLs group `pgid` and waits, at most [`LEFTOVER_KILL_WAIT`], for its members to go.
fn kill_and_wait(pgid: u32) {
    signal_group(pgid, Signal::SIGKILL);
    let deadline = std::time::Instant::now() + LEFTOVER_KILL_WAIT;
    while !group_members(pgid).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{harness, is_gone, shell, wait_until};
    use super::*;
    use crate::executor::runner::ExitStatus;
    use std::path::Path;

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
