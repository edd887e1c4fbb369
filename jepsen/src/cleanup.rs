//! Guaranteed cleanup: every process the runner starts and every namespace it creates is
//! registered here first (and every lazy filesystem mounted for power-loss faults), and
//! [`teardown`] removes them all. It runs from the [`Guard`]'s `Drop`
//! (normal end, error return, panic unwinding through `main`), from the signal handler (Ctrl-C,
//! SIGTERM, SIGHUP) and from the panic hook (a panic in any thread); it is idempotent. A run that
//! was SIGKILLed leaves namespaces behind: the next run's startup [`crate::net::sweep`] removes
//! them (under the same lock, so two runs never fight).

use std::collections::BTreeSet;
use std::fs::File;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Default)]
struct Registry {
    /// Top-level processes the runner spawned and has not reaped yet.
    pids: BTreeSet<i32>,
    /// Namespaces to delete (their processes are killed first).
    namespaces: Vec<String>,
    /// Lazy filesystems mounted over masters' data dirs (detached after the processes died).
    mounts: Vec<std::path::PathBuf>,
    /// Set once teardown started: nothing new may be spawned.
    closed: bool,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn reg() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a spawned process. Fails after teardown started (the caller must kill it).
pub fn add_pid(pid: i32) -> bool {
    let mut g = reg();
    let r = g.get_or_insert_with(Registry::default);
    if r.closed {
        return false;
    }
    r.pids.insert(pid);
    true
}

/// Forgets a process once it is reaped (its pid may be reused afterwards).
pub fn remove_pid(pid: i32) {
    if let Some(r) = reg().as_mut() {
        r.pids.remove(&pid);
    }
}

pub fn add_namespace(ns: &str) {
    let mut g = reg();
    let r = g.get_or_insert_with(Registry::default);
    if !r.namespaces.iter().any(|n| n == ns) {
        r.namespaces.push(ns.to_string());
    }
}

/// Records a mount point before the lazy filesystem is mounted there.
pub fn add_mount(path: &std::path::Path) {
    let mut g = reg();
    let r = g.get_or_insert_with(Registry::default);
    if !r.mounts.iter().any(|m| m == path) {
        r.mounts.push(path.to_path_buf());
    }
}

/// Forgets a mount point once it is unmounted.
pub fn remove_mount(path: &std::path::Path) {
    if let Some(r) = reg().as_mut() {
        r.mounts.retain(|m| m != path);
    }
}

/// The name every power-loss disk is mounted with (`/proc/self/mountinfo`'s source).
pub const LAZYFS_NAME: &str = "triad-jepsen-lazyfs";

/// Detaches every lazy filesystem an earlier (crashed) run left mounted; returns them.
pub fn sweep_mounts() -> Vec<String> {
    let mut out = Vec::new();
    for m in triad_jepsen::lazyfs::mounts_named(LAZYFS_NAME) {
        if triad_jepsen::lazyfs::detach(&m).is_ok() {
            out.push(format!("mount {}", m.display()));
        }
    }
    out
}

pub fn is_closed() -> bool {
    reg().as_ref().is_some_and(|r| r.closed)
}

/// Kills every registered process (and everything inside the registered namespaces), then
/// deletes the namespaces and the runner's link. Idempotent; safe from any thread.
pub fn teardown() {
    let (pids, namespaces, mounts) = {
        let mut g = reg();
        let r = g.get_or_insert_with(Registry::default);
        r.closed = true;
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.namespaces),
            std::mem::take(&mut r.mounts),
        )
    };
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
    }
    crate::net::destroy(&namespaces);
    // After the processes: nothing writes to a disk any more when it goes. Lazily, so a file
    // still held open cannot block the teardown.
    for m in mounts.iter().rev() {
        let _ = triad_jepsen::lazyfs::detach(m);
    }
}

/// Tears everything down when dropped.
pub struct Guard {
    _lock: nix::fcntl::Flock<File>,
}

impl Guard {
    /// Takes the suite's machine-wide lock (one run at a time: fixed addresses and names), sweeps
    /// what a crashed run left, and installs the signal handler and the panic hook.
    pub fn acquire() -> anyhow::Result<Guard> {
        let path = "/run/triad-jepsen.lock";
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {path}"))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| {
                anyhow::anyhow!("another triad-jepsen run holds {path}; wait for it to finish")
            })?;
        let mut removed = crate::net::sweep();
        removed.extend(sweep_mounts());
        if !removed.is_empty() {
            eprintln!("startup sweep: removed leftovers of an earlier run: {}", removed.join(" "));
        }
        {
            let mut g = reg();
            *g = Some(Registry::default());
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            eprintln!("triad-jepsen: panic: tearing the cluster down");
            teardown();
        }));
        install_signal_thread();
        Ok(Guard { _lock: lock })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        teardown();
    }
}

/// A plain thread waiting for SIGINT/SIGTERM/SIGHUP (independent of the async runtime, so it
/// works even if the runtime is wedged): tears down and exits 130.
fn install_signal_thread() {
    use nix::sys::signal::{SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    // Block them in this thread and (by inheritance) in every thread spawned after this point;
    // the signal thread collects them with sigwait. Child processes get a default mask back
    // (see `procs::spawn`).
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                eprintln!(
                    "\ntriad-jepsen: {sig:?}: tearing the cluster down (the run directory is kept)"
                );
                teardown();
                std::process::exit(130);
            }
        })
        .expect("spawning the signal thread");
}
