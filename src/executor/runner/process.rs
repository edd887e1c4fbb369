//! An attempt's process group, from spawn to reaping: confining the child to its own group and
//! to the executor's lifetime, signalling the group, stopping with grace, timeouts, and turning
//! how the group leader ended into an [`ExitStatus`].
//!
//! Invariants:
//! - **An attempt is its process group.** The child leads a new group whose id is its pid;
//!   every signal goes to the whole group, and once the leader is reaped the rest of the group
//!   is SIGKILLed (normal exit, timeout or `stop` alike).
//! - **No attempt outlives its executor.** The leader gets `PR_SET_PDEATHSIG(SIGKILL)` before
//!   exec, and refuses to exec if the executor already died between fork and `prctl`.
//! - **Stop escalates.** `stop` sends SIGTERM, then SIGKILL once `grace` has passed, and
//!   returns only after the status is recorded.
//! - **Dropping is not deciding.** `kill_on_drop` is off: the waiter task owns the child, so a
//!   runtime shutdown dropping the handle is never mistaken for a decision to kill.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::{ExitStatus, Runner};

impl Runner {
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

    /// Awaits the attempt's end (or its timeout), reaps what is left of its group, records the
    /// status and sends `Finished`. Runs as one task per spawned attempt.
    pub(super) async fn wait_attempt(
        self,
        token: u64,
        pid: u32,
        mut child: Child,
        copiers: super::Copiers,
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
        // Every writer of the pipes is gone: the copiers reach their end (bounded).
        copiers.drain(token).await;
        self.remove_running_record(token).await;
        let outcome = match waited {
            _ if timed_out => ExitStatus::TimedOut,
            Ok(status) => exit_status(status),
            Err(e) => {
                tracing::error!(token, pid, error = %e, "waiting for attempt failed");
                ExitStatus::Exited(-1)
            }
        };
        self.mark_ended(token, &outcome).await;
        self.finish(token, outcome, done);
    }
}

/// Makes `cmd` start a new process group (led by the child) that dies with the executor.
pub(super) fn confine(cmd: &mut Command) {
    cmd.process_group(0)
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
}

/// Pids of the live (non-zombie) members of process group `pgid`, from /proc.
pub(super) fn group_members(pgid: u32) -> Vec<i32> {
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

/// Sends `signal` to the process group `pgid`; a group that is already gone is not an error.
///
/// Callers only signal attempts whose status is not yet recorded. The one window left is
/// between reaping the group leader and recording its status: if the group is empty by then,
/// its id is free for reuse, so a process elsewhere that just became leader of a group with
/// that very number could be hit. Pids are handed out cyclically, which makes this remote.
pub(super) fn signal_group(pgid: u32, signal: Signal) {
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

#[cfg(test)]
mod tests {
    use super::super::testkit::{harness, is_gone, shell, spec, wait_until};
    use super::*;
    use crate::executor::runner::{AttemptEvent, AttemptSpec, EventKind};
    use tokio::time::Instant;

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
                .read_output("job-a", 2, 1, false, 0, 64, 0)
                .await
                .is_ok_and(|c| c.data == b"ready\n")
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
}
