//! `triad dev`: a local cluster on loopback, each master (and executor) its own child process so
//! any one can be killed to watch failover. Stops them all on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::client::Client;
use crate::master::config::{MasterConfig, Peer};

/// How long `triad dev` waits for the first leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct DevArgs {
    pub masters: u32,
    pub executors: u32,
    pub data_dir: PathBuf,
    pub base_port: u16,
}

struct Proc {
    name: String,
    child: Child,
}

fn spawn(name: &str, args: &[String], log: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("locating the triad binary")?;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc { name: name.to_string(), child })
}

/// Writes the master configs of a local cluster and returns their paths and addresses.
/// Masters listen on `base_port..`, their HTTP endpoints on `base_port + 50..`.
pub fn write_master_configs(dir: &Path, n: u32, base_port: u16) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let peers: Vec<Peer> = (1..=n).map(|i| Peer { id: i as u64, addr: format!("127.0.0.1:{}", base_port + i as u16 - 1) }).collect();
    let mut out = Vec::new();
    for p in &peers {
        let node_dir = dir.join(format!("master{}", p.id));
        std::fs::create_dir_all(&node_dir).with_context(|| format!("creating {}", node_dir.display()))?;
        let cfg = MasterConfig {
            id: p.id,
            listen: p.addr.clone(),
            advertise: None,
            http_listen: Some(format!("127.0.0.1:{}", base_port + 50 + p.id as u16 - 1)),
            data_dir: std::path::absolute(node_dir.join("data"))?,
            bootstrap: true,
            peers: peers.clone(),
            raft: Default::default(),
            executors: Default::default(),
        };
        let path = node_dir.join("master.toml");
        std::fs::write(&path, toml::to_string_pretty(&cfg)?).with_context(|| format!("writing {}", path.display()))?;
        out.push((path, p.addr.clone()));
    }
    Ok(out)
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.masters >= 1 && args.masters <= 7, "--masters must be between 1 and 7");
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let configs = write_master_configs(&args.data_dir, args.masters, args.base_port)?;
    let mut procs = Vec::new();
    let mut addrs = Vec::new();
    for (i, (cfg, addr)) in configs.iter().enumerate() {
        let name = format!("master{}", i + 1);
        let log = cfg.with_file_name("master.log");
        let p = spawn(&name, &["master".into(), "--config".into(), cfg.display().to_string()], &log)?;
        let http = format!("http://127.0.0.1:{}", args.base_port + 50 + i as u16);
        println!("{name:<10} {addr:<18} pid {:<8} {http}/metrics  log {}", p.child.id().unwrap_or(0), log.display());
        procs.push(p);
        addrs.push(addr.clone());
    }
    let masters = addrs.join(",");
    let client = Client::new(addrs.clone())?;
    let started = Instant::now();
    let leader = loop {
        if let Ok(s) = client.cluster_status().await {
            if s.leader_id != 0 {
                break s;
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            stop_all(&mut procs).await;
            anyhow::bail!("no leader elected within {READY_TIMEOUT:?}; see the logs under {}", args.data_dir.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("leader     master{} at {} (elected in {} ms)", leader.leader_id, leader.leader_addr, started.elapsed().as_millis());
    for i in 1..=args.executors {
        let name = format!("executor{i}");
        let dir = args.data_dir.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let listen = format!("127.0.0.1:{}", args.base_port + 100 + i as u16 - 1);
        let log = dir.join("executor.log");
        let a: Vec<String> = vec![
            "executor".into(),
            "--masters".into(),
            masters.clone(),
            "--work-dir".into(),
            std::path::absolute(&dir)?.display().to_string(),
            "--listen".into(),
            listen.clone(),
            "--label".into(),
            format!("name={name}"),
        ];
        let p = spawn(&name, &a, &log)?;
        println!("{name:<10} {listen:<18} pid {:<8} log {}", p.child.id().unwrap_or(0), log.display());
        procs.push(p);
    }
    println!("\nexport TRIAD_MASTERS={masters}\n");
    println!("triad dev is running; press Ctrl-C to stop every process.");

    crate::shutdown::signal().await;
    println!("\nstopping...");
    stop_all(&mut procs).await;
    Ok(())
}

/// Stops executors first (so they can hand back work and deregister while the masters are up),
/// then the masters.
async fn stop_all(procs: &mut [Proc]) {
    let (mut executors, mut masters): (Vec<&mut Proc>, Vec<&mut Proc>) = procs.iter_mut().partition(|p| p.name.starts_with("executor"));
    stop_group(&mut executors).await;
    stop_group(&mut masters).await;
}

/// SIGTERM every process of a group, wait (bounded), then SIGKILL what is left.
async fn stop_group(procs: &mut [&mut Proc]) {
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
            Ok(_) => println!("{:<10} stopped", p.name),
            Err(_) => {
                let _ = p.child.kill().await;
                println!("{:<10} killed (did not stop within {STOP_GRACE:?})", p.name);
            }
        }
    }
}
