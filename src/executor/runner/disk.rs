//! Whether the work dir has room for more attempts: free space against a threshold
//! (`[output] min_free_bytes`), and the no-space errors writes ran into. While there is a
//! problem the executor reports itself unhealthy, refuses starts with the reason, and tells the
//! leader in its heartbeats, so the leader places nothing here instead of seeing every attempt
//! fail with exit 127.
//!
//! Invariants:
//! - **One reason, one line,** naming the work dir: `work dir /x: no space left on device` or
//!   `work dir /x: 1.2 MiB free, below min_free_bytes (64.0 MiB)`.
//! - **A no-space error sticks until a check sees room again.** A full disk reported by a write
//!   is not forgotten just because a moment later a few bytes were freed by someone else: only
//!   [`DiskHealth::check`] clears it, once the free space is back above the threshold.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Shared view of the work dir's health. Cheap to clone.
#[derive(Clone)]
pub struct DiskHealth {
    inner: Arc<Inner>,
}

struct Inner {
    work_dir: PathBuf,
    /// Free space below this is a problem (0: only no-space errors are).
    min_free_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A write failed for lack of space (ENOSPC, EDQUOT) since the last check that saw room.
    no_space: bool,
    /// The last check's finding about free space, if it was a problem.
    low: Option<String>,
}

/// True for the errors of a full disk or quota.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
}

impl DiskHealth {
    pub fn new(work_dir: &Path, min_free_bytes: u64) -> DiskHealth {
        DiskHealth {
            inner: Arc::new(Inner {
                work_dir: work_dir.to_path_buf(),
                min_free_bytes,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the work dir cannot take more attempts now; `None` when it can.
    pub fn problem(&self) -> Option<String> {
        let s = self.lock();
        self.problem_locked(&s)
    }

    /// Notes an I/O error met while writing into the work dir: a no-space error makes the
    /// work dir unhealthy until the next check sees room.
    pub fn note_error(&self, e: &std::io::Error) {
        if is_no_space(e) {
            let was = std::mem::replace(&mut self.lock().no_space, true);
            if !was {
                tracing::error!(
                    work_dir = %self.inner.work_dir.display(),
                    "work dir is out of space: refusing new attempts until there is room"
                );
            }
        }
    }

    /// Measures the free space (blocking: one `statvfs`; call it from `spawn_blocking`) and
    /// updates the finding. Returns the problem, if any.
    pub fn check(&self) -> Option<String> {
        let dir = &self.inner.work_dir;
        let free = match nix::sys::statvfs::statvfs(dir) {
            Ok(st) => st.blocks_available().saturating_mul(st.fragment_size()),
            Err(e) => {
                let reason = format!("work dir {}: cannot measure free space: {e}", dir.display());
                let mut s = self.lock();
                if s.low.as_deref() != Some(&reason) {
                    tracing::warn!("{reason}");
                }
                s.low = Some(reason);
                return self.problem_locked(&s);
            }
        };
        let min = self.inner.min_free_bytes;
        let mut s = self.lock();
        let before = self.problem_locked(&s);
        if free >= min.max(1) {
            s.no_space = false;
            s.low = None;
        } else if min > 0 {
            s.low = Some(format!(
                "work dir {}: {} free, below min_free_bytes ({})",
                dir.display(),
                mib(free),
                mib(min)
            ));
        }
        let after = self.problem_locked(&s);
        match (&before, &after) {
            (None, Some(p)) => tracing::error!("executor unhealthy, refusing new attempts: {p}"),
            (Some(_), None) => tracing::info!(work_dir = %dir.display(), "work dir has room again"),
            _ => {}
        }
        after
    }

    fn problem_locked(&self, s: &State) -> Option<String> {
        if s.no_space {
            Some(format!("work dir {}: no space left on device", self.inner.work_dir.display()))
        } else {
            s.low.clone()
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_no_space_error_sticks_until_a_check_sees_room_and_a_high_threshold_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = DiskHealth::new(dir.path(), 1);
        assert_eq!(d.check(), None);
        d.note_error(&std::io::Error::from_raw_os_error(nix::libc::EIO));
        assert_eq!(d.problem(), None, "other errors are not a full disk");
        d.note_error(&std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
        let p = d.problem().expect("no space");
        assert!(
            p.contains("no space left") && p.contains(&dir.path().display().to_string()),
            "{p}"
        );
        assert_eq!(d.check(), None, "a check that finds room clears it");

        let greedy = DiskHealth::new(dir.path(), u64::MAX);
        let p = greedy.check().expect("nobody has that much room");
        assert!(p.contains("below min_free_bytes"), "{p}");
    }
}
