//! `triad-jepsen`: triad's chaos suite runner (see `jepsen/README.md`).
//!
//! - `test`: one chaos run (as root): hosts in network namespaces, a nemesis, concurrent clients,
//!   checkers; exit 0 when every checker passes, 1 on any violation, 2 when the run itself failed.
//! - `check DIR`: judges a stored run directory again (no root needed).
//! - `task`: the side-effect recorder every chaos job's tasks run (not for humans).
//! - `cleanup`: removes what a crashed run left (namespaces, processes).

mod cleanup;
mod cluster;
mod creds;
mod nemesis;
mod net;
mod procs;
mod recorder;
mod report;
mod run;
mod task;
mod watch;
mod workload;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "triad-jepsen",
    about = "triad's chaos suite: real processes on separate network hosts, a nemesis, recorded histories and checkers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One chaos run (as root).
    Test(TestArgs),
    /// Judge a stored run directory again (e.g. jepsen/store/latest).
    Check { dir: PathBuf },
    /// Remove namespaces and processes a crashed run left behind (as root).
    Cleanup,
    /// Mount the power-loss disk (a lazy filesystem) over DIR until SIGINT/SIGTERM; each SIGUSR1
    /// is a power cut (drops every unsynced write). For experiments and benchmarks, as root.
    Lazyfs { dir: PathBuf },
    /// The side-effect recorder chaos jobs run (reads TRIAD_* from the environment).
    #[command(hide = true)]
    Task {
        #[arg(long)]
        sink: PathBuf,
        /// Work time range in ms, `A..B`.
        #[arg(long, default_value = "300..2000")]
        millis: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// Faults: none, all, or a comma list of kill, pause, partition, power, loss, restart,
    /// power-loss, power-loss-all, executor-kill,
    /// executor-pause, executor-partition, or single faults (kill-leader, pause-leader,
    /// isolate-one, isolate-leader, split, bridge).
    #[arg(long, default_value = "all")]
    pub nemesis: String,
    /// Seconds of workload (and nemesis).
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Concurrent client processes.
    #[arg(long, default_value_t = 6)]
    pub concurrency: usize,
    /// Client ops per second, in total.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// RNG seed (nemesis schedule and targets, client choices); random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds between faults and of each fault (10 s off, 10 s on, ...).
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Planted bug switched on in the nodes: ack-before-commit | skip-fencing | cron-no-dedup |
    /// no-fsync.
    #[arg(long, value_parser = ["ack-before-commit", "skip-fencing", "cron-no-dedup", "no-fsync"])]
    pub bug: Option<String>,
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Task slots per executor.
    #[arg(long, default_value_t = 32)]
    pub slots: u32,
    /// How long each task attempt works, ms (`A..B`).
    #[arg(long, default_value = "300..2000")]
    pub task_millis: String,
    /// Failed attempts per task before it fails; 0 means triad's default (3). Lost attempts
    /// (the faults' doing) count against max_lost instead, so faults must not fail jobs.
    #[arg(long, default_value_t = 0)]
    pub max_attempts: u32,
    /// After healing, how long every job may take to become terminal (seconds).
    #[arg(long, default_value_t = 60)]
    pub final_wait: u64,
    /// The triad binary (default: `triad` next to this binary, i.e. target/release/triad).
    #[arg(long)]
    pub triad_bin: Option<PathBuf>,
    /// Where run directories go (default: jepsen/store).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// TRIAD_LOG filter for every node.
    #[arg(long)]
    pub triad_log: Option<String>,
    /// Retention (issue 14): seconds after which the masters delete a finished job
    /// (`retention.finished_job_ttl`; short so that collection runs under the faults; 0: off).
    #[arg(long, default_value_t = 8.0)]
    pub finished_job_ttl: f64,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Task { sink, millis } => match task::run(&sink, &millis) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("triad-jepsen task: {e:#}");
                1
            }
        },
        Cmd::Check { dir } => match report::judge(&dir) {
            Ok(o) => {
                print!("{}", o.text);
                if o.valid {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("triad-jepsen check: {e:#}");
                2
            }
        },
        Cmd::Lazyfs { dir } => match lazyfs(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("triad-jepsen lazyfs: {e:#}");
                2
            }
        },
        Cmd::Cleanup => {
            let mut removed = net::sweep();
            removed.extend(cleanup::sweep_mounts());
            println!(
                "removed: {}",
                if removed.is_empty() { "nothing".to_string() } else { removed.join(" ") }
            );
            0
        }
        Cmd::Test(args) => match test(args) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("triad-jepsen: the run failed: {e:#}");
                2
            }
        },
    };
    std::process::exit(code);
}

/// `triad-jepsen lazyfs DIR`: mounted until SIGINT/SIGTERM/SIGHUP, SIGUSR1 cuts the power.
fn lazyfs(dir: &std::path::Path) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR1] {
        set.add(s);
    }
    // Blocked before the session thread exists, so only `wait` below receives them.
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    let m = triad_jepsen::lazyfs::LazyMount::mount(dir, "triad-lazyfs")?;
    println!(
        "lazyfs: mounted over {} (SIGUSR1: power cut; SIGTERM: unmount)",
        m.mountpoint().display()
    );
    while set.wait()? == Signal::SIGUSR1 {
        let c = m.cut();
        println!("lazyfs: power cut: {} unsynced bytes in {} files dropped", c.bytes, c.files);
    }
    let st = m.stats();
    m.unmount();
    println!(
        "lazyfs: unmounted; {} fsyncs, {} bytes synced, {} written back, {} cuts",
        st.fsyncs, st.synced_bytes, st.written_back_bytes, st.cuts
    );
    Ok(())
}

fn test(mut args: TestArgs) -> anyhow::Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run me as root (network namespaces, firewall rules)");
    }
    nemesis::parse(&args.nemesis)?;
    let self_exe = std::env::current_exe()?.canonicalize()?;
    let triad_bin = match &args.triad_bin {
        Some(p) => p.clone(),
        None => self_exe.parent().context("exe dir")?.join("triad"),
    };
    let triad_bin = triad_bin.canonicalize().with_context(|| {
        format!(
            "no triad binary at {} (build it: cargo build --release -p triad, or pass --triad-bin)",
            triad_bin.display()
        )
    })?;
    let seed = args.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
    args.seed = Some(seed);
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("store"));
    // Before any thread exists: the lock, the sweep, the signal mask and handler, the panic hook.
    let guard = cleanup::Guard::acquire()?;
    let (run_id, dir) = run::make_run_dir(&store, &args.nemesis, seed)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let r = rt.block_on(run::test(args, run_id, dir.clone(), triad_bin, self_exe));
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(guard);
    if r.is_err() {
        eprintln!("run directory kept: {}", dir.display());
    }
    r
}
