//! Processes on the test hosts: spawned with `ip netns exec <ns> <program> ...` (which execs in
//! place, so the child's pid is the program's), their output appended to a log file, registered
//! for guaranteed cleanup.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cleanup;

/// How a node process is (re)started.
#[derive(Clone, Debug)]
pub struct Spec {
    pub ns: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// One long-running process on a host (a master or an executor), restartable.
pub struct Proc {
    pub name: String,
    pub spec: Spec,
    child: Option<Child>,
    pub paused: bool,
    pub starts: u32,
}

/// Spawns `spec` in its namespace; stdout and stderr are appended to its log.
///
/// The child gets `PR_SET_PDEATHSIG(SIGKILL)`, which fires when the *thread* that spawned it
/// exits: call this from the async runtime's workers or the main thread (they live as long as
/// the runner), never from `spawn_blocking` (its threads exit when idle).
pub fn spawn(spec: &Spec, banner: &str) -> anyhow::Result<Child> {
    use std::io::Write;
    if cleanup::is_closed() {
        bail!("tearing down: not starting anything");
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    writeln!(log, "===== triad-jepsen: {banner} =====")?;
    let err = log.try_clone()?;
    let mut cmd = Command::new("ip");
    cmd.arg("netns").arg("exec").arg(&spec.ns).arg(&spec.program).args(&spec.args);
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // Own process group: a Ctrl-C on the terminal reaches the runner only, which tears down.
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // The runner blocks SIGINT/SIGTERM/SIGHUP for its signal thread; children get them back.
            let empty = nix::sys::signal::SigSet::empty();
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&empty),
                None,
            );
            // Die with the runner (its runtime threads live as long as it does).
            let _ = nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL));
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {} in {}", spec.program.display(), spec.ns))?;
    if !cleanup::add_pid(child.id() as i32) {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        bail!("tearing down: not starting anything");
    }
    Ok(child)
}

impl Proc {
    pub fn new(name: &str, spec: Spec) -> Proc {
        Proc { name: name.to_string(), spec, child: None, paused: false, starts: 0 }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Is the process alive (reaping it if it exited)?
    pub fn running(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else { return false };
        match c.try_wait() {
            Ok(None) => true,
            _ => {
                cleanup::remove_pid(c.id() as i32);
                self.child = None;
                self.paused = false;
                false
            }
        }
    }

    pub fn start(&mut self, t: f64) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        self.starts += 1;
        let banner = format!("start #{} of {} at +{t:.3}s", self.starts, self.name);
        self.child = Some(spawn(&self.spec, &banner)?);
        self.paused = false;
        Ok(())
    }

    pub fn signal(&mut self, sig: Signal) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else { bail!("{} is not running", self.name) };
        kill(Pid::from_raw(pid), sig)
            .with_context(|| format!("kill -{sig:?} {} ({pid})", self.name))?;
        match sig {
            Signal::SIGSTOP => self.paused = true,
            Signal::SIGCONT => self.paused = false,
            _ => {}
        }
        Ok(())
    }

    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.running() && self.paused {
            self.signal(Signal::SIGCONT)?;
        }
        Ok(())
    }

    /// SIGKILL, then wait (bounded) until it is reaped.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if !self.running() {
            return Ok(());
        }
        let _ = self.signal(Signal::SIGKILL);
        let _ = self.signal(Signal::SIGCONT);
        self.wait_exit(Duration::from_secs(10)).await
    }

    /// SIGCONT + SIGTERM (a graceful stop; see [`Proc::wait_exit`]).
    pub fn terminate(&mut self) {
        if self.running() {
            let _ = self.signal(Signal::SIGCONT);
            let _ = self.signal(Signal::SIGTERM);
        }
    }

    pub async fn wait_exit(&mut self, bound: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if !self.running() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("{} did not exit within {bound:?}", self.name)
    }
}
