//! `triad dev`: a local cluster on loopback, each master (and executor) its own child process so
//! any one can be killed to watch failover. Stops them all on Ctrl-C.
//!
//! The pieces (configs, spawning a master or an executor, waiting for a leader, stopping) are
//! also used by `triad bench failover`, which starts its own cluster the same way; they live
//! here only. Every child is killed if its [`Proc`] is dropped while it still runs, so an early
//! return cannot leave a cluster behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use super::creds::{executor_name, master_name, LocalCredentials};
use crate::api::pb;
use crate::client::Client;
use crate::executor::config::ExecutorFile;
use crate::master::config::{peers, MasterConfig};
use crate::security::Role;

/// How long `triad dev` waits for the first leader, and then for the executors.
const READY_TIMEOUT: Duration = crate::timings::DEV_READY_TIMEOUT;
/// How long a child gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = crate::timings::DEV_STOP_GRACE;

pub struct DevArgs {
    pub masters: u32,
    pub executors: u32,
    pub data_dir: PathBuf,
    pub base_port: u16,
    /// No TLS and no tokens (`insecure = true` everywhere).
    pub insecure: bool,
}

/// A local cluster's credentials: `None` when it runs insecure.
pub(crate) type Creds<'a> = Option<&'a LocalCredentials>;

/// What a client of a local cluster presents: the admin token over TLS, or nothing.
pub(crate) fn admin_dialer(creds: Creds<'_>) -> anyhow::Result<crate::api::Dialer> {
    Ok(match creds {
        Some(c) => crate::api::Dialer::new(c.client(Role::Admin)?),
        None => crate::api::Dialer::insecure(),
    })
}

/// One child process of the local cluster, with what it takes to start it again.
pub(crate) struct Proc {
    pub(crate) name: String,
    args: Vec<String>,
    log: PathBuf,
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    pub(crate) fn is_executor(&self) -> bool {
        self.name.starts_with("executor")
    }

    /// SIGKILL, as a crash: no grace, nothing flushed. Returns the instant the signal was sent,
    /// then reaps the process (bounded by `reap_within`).
    pub(crate) async fn crash(&mut self, reap_within: Duration) -> anyhow::Result<Instant> {
        self.child.start_kill().with_context(|| format!("killing {}", self.name))?;
        let sent = Instant::now();
        tokio::time::timeout(reap_within, self.child.wait())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{} did not exit within {reap_within:?} of SIGKILL", self.name)
            })?
            .with_context(|| format!("reaping {}", self.name))?;
        Ok(sent)
    }

    /// Starts the same command again (same config, data and log file). Call after it exited.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        *self = spawn(&self.name, &self.args, &self.log)?;
        Ok(())
    }
}

fn spawn(name: &str, args: &[String], log: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("locating the triad binary")?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    // The children take their credentials from the configs written here, never from the
    // caller's shell (which may hold another cluster's TRIAD_CA, or TRIAD_INSECURE).
    let child = Command::new(exe)
        .args(args)
        .env_remove("TRIAD_INSECURE")
        .env_remove("TRIAD_CA")
        .env_remove("TRIAD_CERT")
        .env_remove("TRIAD_KEY")
        .env_remove("TRIAD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc { name: name.to_string(), args: args.to_vec(), log: log.to_path_buf(), child })
}

/// Starts master `id` (1-based) from the config [`write_master_configs`] wrote; it logs to
/// `master.log` beside the config.
pub(crate) fn spawn_master(id: u32, config: &Path) -> anyhow::Result<Proc> {
    let log = config.with_file_name("master.log");
    spawn(
        &format!("master{id}"),
        &["master".into(), "--config".into(), config.display().to_string()],
        &log,
    )
}

/// The port layout of a local cluster, in one place: master `id` (1-based) at `base + id - 1`,
/// its HTTP endpoints at `base + 50 + id - 1`; executor `i` (1-based) at `base + 100 + i - 1`,
/// its HTTP endpoints (`/metrics`, `/status`) at `base + 150 + i - 1`.
fn master_port(base: u16, id: u32) -> u16 {
    base + id as u16 - 1
}
fn master_http_port(base: u16, id: u32) -> u16 {
    base + 50 + id as u16 - 1
}
fn executor_port(base: u16, i: u32) -> u16 {
    base + 100 + i as u16 - 1
}
fn executor_http_port(base: u16, i: u32) -> u16 {
    base + 150 + i as u16 - 1
}

/// The address executor `i` (1-based) listens on.
pub(crate) fn executor_addr(base_port: u16, i: u32) -> String {
    format!("127.0.0.1:{}", executor_port(base_port, i))
}

/// The HTTP endpoints (`/metrics`, `/status`) of executor `i` (1-based).
pub(crate) fn executor_http_addr(base_port: u16, i: u32) -> String {
    format!("127.0.0.1:{}", executor_http_port(base_port, i))
}

/// Starts executor `i` (1-based) with its work dir and config under `data_dir`, labelled
/// `name=executor<i>` (so an executor's id can be matched to its process; with TLS its id is
/// `executor<i>` too, the name in its certificate). Restarting it keeps its id.
pub(crate) fn spawn_executor(
    data_dir: &Path,
    i: u32,
    base_port: u16,
    masters: &str,
    creds: Creds<'_>,
) -> anyhow::Result<Proc> {
    let name = executor_name(i);
    let dir = data_dir.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = ExecutorFile {
        insecure: Some(creds.is_none()),
        tls: creds.map(|c| c.files(Role::Executor, &name)),
        auth: creds.map(|c| c.auth.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let config = dir.join("executor.toml");
    std::fs::write(&config, toml::to_string(&file).context("writing the executor config")?)
        .with_context(|| format!("writing {}", config.display()))?;
    let a: Vec<String> = vec![
        "executor".into(),
        "--config".into(),
        std::path::absolute(&config)?.display().to_string(),
        "--masters".into(),
        masters.to_string(),
        "--work-dir".into(),
        std::path::absolute(&dir)?.display().to_string(),
        "--listen".into(),
        executor_addr(base_port, i),
        "--label".into(),
        format!("name={name}"),
        "--http-listen".into(),
        executor_http_addr(base_port, i),
    ];
    spawn(&name, &a, &dir.join("executor.log"))
}

/// Fails fast, naming the port, when something already listens where a local cluster of
/// `masters` masters and `executors` executors at `base` would.
pub(crate) fn check_ports_free(base: u16, masters: u32, executors: u32) -> anyhow::Result<()> {
    let last = base as u32 + 150 + executors.max(1) - 1;
    anyhow::ensure!(
        last <= u16::MAX as u32,
        "--base-port {base} is too high: the cluster needs ports {base}..={last}"
    );
    let m = (1..=masters).flat_map(|id| [master_port(base, id), master_http_port(base, id)]);
    let e = (1..=executors).flat_map(|i| [executor_port(base, i), executor_http_port(base, i)]);
    for p in m.chain(e) {
        std::net::TcpListener::bind(("127.0.0.1", p))
            .with_context(|| format!("port {p} is in use (a local cluster at --base-port {base} needs ports {base}..={last}); pass another --base-port"))?;
    }
    Ok(())
}

/// Polls `cluster status` until a leader is known, for at most `timeout`.
pub(crate) async fn wait_leader(
    client: &Client,
    timeout: Duration,
) -> anyhow::Result<pb::ClusterStatusResponse> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = client.cluster_status().await {
            if s.leader_id != 0 {
                return Ok(s);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("no leader elected within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes the master configs of a local cluster and returns their paths and addresses.
/// Ports as [`master_port`] lays them out.
pub fn write_master_configs(
    dir: &Path,
    n: u32,
    base_port: u16,
    creds: Creds<'_>,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let peers = peers((1..=n).map(|i| format!("127.0.0.1:{}", master_port(base_port, i))));
    let mut out = Vec::new();
    for p in &peers {
        let node_dir = dir.join(format!("master{}", p.id));
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))?;
        let http = format!("127.0.0.1:{}", master_http_port(base_port, p.id as u32));
        let data = std::path::absolute(node_dir.join("data"))?;
        let cfg = MasterConfig::cluster_member(p.id, &peers, data, Some(http))?.secured(
            creds.map(|c| c.files(Role::Master, &master_name(p.id as u32))),
            creds.map(|c| c.auth.clone()).unwrap_or_default(),
        );
        let path = node_dir.join("master.toml");
        std::fs::write(&path, cfg.to_toml()?)
            .with_context(|| format!("writing {}", path.display()))?;
        out.push((path, p.addr.clone()));
    }
    Ok(out)
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.masters >= 1 && args.masters <= 7, "--masters must be between 1 and 7");
    anyhow::ensure!(args.executors <= 50, "--executors must be at most 50");
    check_ports_free(args.base_port, args.masters, args.executors)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let creds = match args.insecure {
        true => None,
        false => Some(LocalCredentials::ensure(&args.data_dir, args.masters, args.executors)?),
    };
    let (mut procs, addrs) = start_masters(&args, creds.as_ref())?;
    let masters = addrs.join(",");
    let client = Client::new(addrs, &admin_dialer(creds.as_ref())?)?;
    let started = Instant::now();
    if let Err(e) = bring_up(&args, &client, &masters, &mut procs, started, creds.as_ref()).await {
        stop_all(&mut procs, |l| println!("{l}")).await;
        anyhow::bail!("{e}; see the logs under {}", args.data_dir.display());
    }
    match &creds {
        Some(c) => {
            println!(
                "\nTLS and tokens on: CA {}, tokens in {} (admin, client, executor)",
                c.tls.ca_cert().display(),
                c.tokens_dir.display()
            );
            println!(
                "\nexport TRIAD_MASTERS={masters} TRIAD_CA={} TRIAD_TOKEN=$(cat {})\n",
                c.tls.ca_cert().display(),
                c.token_file(Role::Admin).display()
            );
            println!(
                "dashboard  https://127.0.0.1:{}/ui/ (any master; the CA above, an admin or client token)\n",
                master_http_port(args.base_port, 1)
            );
        }
        None => {
            println!("\nWARNING: insecure: no TLS and no authentication; anyone who reaches these ports can run commands here");
            println!("\nexport TRIAD_MASTERS={masters} TRIAD_INSECURE=true\n");
            println!("dashboard  http://127.0.0.1:{}/ui/\n", master_http_port(args.base_port, 1));
        }
    }
    println!("triad dev is running; press Ctrl-C to stop every process.");
    watch_until_ctrl_c(&mut procs).await;
    println!("\nstopping...");
    stop_all(&mut procs, |l| println!("{l}")).await;
    Ok(())
}

/// Writes the master configs and starts every master, printing a line for each; returns the
/// processes and the masters' addresses.
fn start_masters(args: &DevArgs, creds: Creds<'_>) -> anyhow::Result<(Vec<Proc>, Vec<String>)> {
    let configs = write_master_configs(&args.data_dir, args.masters, args.base_port, creds)?;
    let mut procs = Vec::new();
    let mut addrs = Vec::new();
    for (i, (cfg, addr)) in configs.iter().enumerate() {
        let p = spawn_master(i as u32 + 1, cfg)?;
        let http = format!("http://127.0.0.1:{}", master_http_port(args.base_port, i as u32 + 1));
        println!(
            "{:<10} {addr:<18} pid {:<8} {http}/metrics  log {}",
            p.name,
            p.pid().unwrap_or(0),
            p.log().display()
        );
        procs.push(p);
        addrs.push(addr.clone());
    }
    Ok((procs, addrs))
}

/// Waits for a leader, then starts the executors and waits for them to register, printing
/// progress. The caller stops every process if this fails.
async fn bring_up(
    args: &DevArgs,
    client: &Client,
    masters: &str,
    procs: &mut Vec<Proc>,
    started: Instant,
    creds: Creds<'_>,
) -> anyhow::Result<()> {
    let leader = wait_leader(client, READY_TIMEOUT).await?;
    println!(
        "leader     master{} at {} (elected in {} ms)",
        leader.leader_id,
        leader.leader_addr,
        started.elapsed().as_millis()
    );
    for i in 1..=args.executors {
        let p = spawn_executor(&args.data_dir, i, args.base_port, masters, creds)?;
        println!(
            "{:<10} {:<18} pid {:<8} http://{}/metrics  log {}",
            p.name,
            executor_addr(args.base_port, i),
            p.pid().unwrap_or(0),
            executor_http_addr(args.base_port, i),
            p.log().display()
        );
        procs.push(p);
    }
    wait_executors(client, procs, args.executors, READY_TIMEOUT).await?;
    println!(
        "executors  {} registered (ready in {} ms)",
        args.executors,
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Until Ctrl-C, says so when a child exits (killed by the user to watch failover, or crashed).
async fn watch_until_ctrl_c(procs: &mut [Proc]) {
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    let stop = crate::shutdown::signal();
    tokio::pin!(stop);
    let mut gone = vec![false; procs.len()];
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = watch.tick() => {
                for (p, gone) in procs.iter_mut().zip(gone.iter_mut()) {
                    match p.child.try_wait() {
                        Ok(Some(status)) if !*gone => {
                            *gone = true;
                            println!("{:<10} exited ({status}); log {}", p.name, p.log().display());
                        }
                        Ok(None) => *gone = false,
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Waits until `n` executors are registered with the cluster; fails at once, naming it and its
/// log, if one of the processes exits first.
async fn wait_executors(
    client: &Client,
    procs: &mut [Proc],
    n: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                anyhow::bail!(
                    "{} exited ({status}) while starting; log {}",
                    p.name,
                    p.log().display()
                );
            }
        }
        if super::executors::list_executors(client).await.is_ok_and(|e| e.len() >= n as usize) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{n} executors did not all register within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops executors first (so they can hand back work and deregister while the masters are up),
/// then the masters.
/// `say` gets one line per process.
pub(crate) async fn stop_all(procs: &mut [Proc], say: impl Fn(String)) {
    let (mut executors, mut masters): (Vec<&mut Proc>, Vec<&mut Proc>) =
        procs.iter_mut().partition(|p| p.is_executor());
    stop_group(&mut executors, &say).await;
    stop_group(&mut masters, &say).await;
}

/// SIGTERM every process of a group, wait (bounded), then SIGKILL what is left.
/// A process that already exited (killed by a benchmark, say) is only reaped.
async fn stop_group(procs: &mut [&mut Proc], say: &impl Fn(String)) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for p in procs.iter() {
        if let Some(pid) = p.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for p in procs.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, p.child.wait()).await {
            Ok(_) => say(format!("{:<10} stopped", p.name)),
            Err(_) => {
                let _ = p.child.kill().await;
                say(format!("{:<10} killed (did not stop within {STOP_GRACE:?})", p.name));
            }
        }
    }
}
