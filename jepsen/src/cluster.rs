//! The cluster under test: masters and executors as processes on their own hosts, their configs,
//! data dirs and logs under the run directory; and the leader pollers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use triad::api::{pb, Channel, Dialer};
use triad::master::config::{peers, MasterConfig};
use triad::security::tls::TlsFiles;
use triad::security::{AuthConfig, Role};
use triad_jepsen::history::Call;
use triad_jepsen::lazyfs::LazyMount;

use crate::creds::Creds;
use crate::net::Host;
use crate::procs::{Proc, Spec};
use crate::recorder::Recorder;

pub const MASTER_PORT: u16 = 7100;
pub const EXECUTOR_PORT: u16 = 7200;

pub struct Node {
    /// Raft id for masters (1..), 1.. for executors too (their own numbering).
    pub id: u64,
    pub name: String,
    pub host: Host,
    /// ip:port of its gRPC server.
    pub addr: String,
    pub proc: Proc,
    /// Masters of a run with power-loss faults: the lazy filesystem over its data dir.
    pub disk: Option<Arc<LazyMount>>,
}

pub struct Options {
    pub triad_bin: PathBuf,
    pub run_dir: PathBuf,
    pub slots: u32,
    /// `TRIAD_CHAOS_BUG` for masters (and executors, for `skip-fencing`).
    pub bug: Option<String>,
    /// `TRIAD_LOG` for every node, if set.
    pub log_filter: Option<String>,
    /// Retention (issue 14): the masters' `retention.finished_job_ttl` (0: off).
    pub finished_job_ttl: std::time::Duration,
    /// Mount a lazy filesystem (unsynced writes lost on a power cut) over every master's data
    /// dir: the run has power-loss faults.
    pub lazy_disks: bool,
}

pub struct Cluster {
    pub masters: Vec<Node>,
    pub executors: Vec<Node>,
    pub t0: Instant,
}

/// Master host names and addresses: m1.. at 10.77.0.11..; executors e1.. at 10.77.0.21...
pub fn host_plan(masters: usize, executors: usize) -> Vec<(String, u8)> {
    let mut v: Vec<(String, u8)> = (1..=masters).map(|i| (format!("m{i}"), 10 + i as u8)).collect();
    v.extend((1..=executors).map(|i| (format!("e{i}"), 20 + i as u8)));
    v
}

impl Cluster {
    /// Writes configs, certificates and directories (starts nothing). Every node runs with TLS
    /// and tokens: its own certificate (named after its host; an executor's id is that name),
    /// and every token of `creds` accepted.
    pub fn new(
        opts: &Options,
        creds: &Creds,
        hosts: &[Host],
        t0: Instant,
    ) -> anyhow::Result<Cluster> {
        let master_hosts: Vec<&Host> = hosts.iter().filter(|h| h.name.starts_with('m')).collect();
        let exec_hosts: Vec<&Host> = hosts.iter().filter(|h| h.name.starts_with('e')).collect();
        let peers = peers(master_hosts.iter().map(|h| format!("{}:{MASTER_PORT}", h.ip)));
        let masters_arg = peers.iter().map(|p| p.addr.as_str()).collect::<Vec<_>>().join(",");
        let mut base_env: Vec<(String, String)> = Vec::new();
        if let Some(f) = &opts.log_filter {
            base_env.push(("TRIAD_LOG".into(), f.clone()));
        }
        let mut masters = Vec::new();
        for (i, h) in master_hosts.iter().enumerate() {
            let id = i as u64 + 1;
            let dir = opts.run_dir.join(&h.name);
            std::fs::create_dir_all(dir.join("data"))?;
            let disk = if opts.lazy_disks {
                let data = dir.join("data").canonicalize()?;
                crate::cleanup::add_mount(&data);
                let m = LazyMount::mount(&data, crate::cleanup::LAZYFS_NAME)
                    .with_context(|| format!("the power-loss disk of {}", h.name))?;
                Some(Arc::new(m))
            } else {
                None
            };
            let addr = format!("{}:{MASTER_PORT}", h.ip);
            let config = dir.join("master.toml");
            let tls = creds.node(Role::Master, &h.name, &h.ip)?;
            let mut cfg = MasterConfig::cluster_member(id, &peers, dir.join("data"), None)?
                .secured(Some(tls), creds.auth());
            // Short, so that jobs are collected while the faults run (the checkers account for
            // every deletion: `deleted_jobs_were_due`).
            cfg.retention.finished_job_ttl = opts.finished_job_ttl;
            std::fs::write(&config, format!("# written by triad-jepsen\n{}", cfg.to_toml()?))
                .with_context(|| format!("writing {}", config.display()))?;
            let mut env = base_env.clone();
            if let Some(b) = &opts.bug {
                env.push(("TRIAD_CHAOS_BUG".into(), b.clone()));
            }
            let spec = Spec {
                ns: h.ns.clone(),
                program: opts.triad_bin.clone(),
                args: vec!["master".into(), "--config".into(), config.display().to_string()],
                env,
                log: dir.join("master.log"),
            };
            masters.push(Node {
                id,
                name: h.name.clone(),
                host: (*h).clone(),
                addr,
                proc: Proc::new(&h.name, spec),
                disk,
            });
        }
        let mut executors = Vec::new();
        for (i, h) in exec_hosts.iter().enumerate() {
            let dir = opts.run_dir.join(&h.name);
            std::fs::create_dir_all(dir.join("work"))?;
            let addr = format!("{}:{EXECUTOR_PORT}", h.ip);
            let config = dir.join("executor.toml");
            let file = ExecutorFile {
                insecure: false,
                tls: creds.node(Role::Executor, &h.name, &h.ip)?,
                auth: creds.auth(),
            };
            let text = toml::to_string(&file).context("writing an executor config")?;
            std::fs::write(&config, format!("# written by triad-jepsen\n{text}"))
                .with_context(|| format!("writing {}", config.display()))?;
            let mut env = base_env.clone();
            if opts.bug.as_deref() == Some("skip-fencing") {
                env.push(("TRIAD_CHAOS_BUG".into(), "skip-fencing".into()));
            }
            let spec = Spec {
                ns: h.ns.clone(),
                program: opts.triad_bin.clone(),
                args: vec![
                    "executor".into(),
                    "--config".into(),
                    config.display().to_string(),
                    "--masters".into(),
                    masters_arg.clone(),
                    "--work-dir".into(),
                    dir.join("work").display().to_string(),
                    "--listen".into(),
                    addr.clone(),
                    "--slots".into(),
                    opts.slots.to_string(),
                ],
                env,
                log: dir.join("executor.log"),
            };
            executors.push(Node {
                id: i as u64 + 1,
                name: h.name.clone(),
                host: (*h).clone(),
                addr,
                proc: Proc::new(&h.name, spec),
                disk: None,
            });
        }
        Ok(Cluster { masters, executors, t0 })
    }

    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn master_addrs(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn start_masters(&mut self) -> anyhow::Result<()> {
        let t = self.elapsed();
        for m in &mut self.masters {
            m.proc.start(t)?;
        }
        Ok(())
    }

    pub fn start_executors(&mut self) -> anyhow::Result<()> {
        let t = self.elapsed();
        for e in &mut self.executors {
            e.proc.start(t)?;
        }
        Ok(())
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.masters
            .iter_mut()
            .chain(self.executors.iter_mut())
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Unmounts every master's lazy filesystem (the masters are stopped); one line per disk with
    /// what it did over the run.
    pub fn unmount_disks(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &mut self.masters {
            let Some(d) = m.disk.take() else { continue };
            let st = d.stats();
            out.push(format!(
                "{}: {} fsyncs, {} bytes synced, {} written back under memory pressure, {} power cuts",
                m.name, st.fsyncs, st.synced_bytes, st.written_back_bytes, st.cuts
            ));
            let path = d.mountpoint().to_path_buf();
            match Arc::try_unwrap(d) {
                Ok(d) => d.unmount(),
                Err(d) => drop(d),
            }
            crate::cleanup::remove_mount(&path);
        }
        out
    }

    pub fn master_by_id(&self, id: u64) -> Option<&Node> {
        self.masters.iter().find(|m| m.id == id)
    }

    /// Every process running and resumed (restarting what is down); returns what it did.
    pub fn revive_all(&mut self) -> Vec<String> {
        let t = self.elapsed();
        let mut did = Vec::new();
        for n in self.masters.iter_mut().chain(self.executors.iter_mut()) {
            if n.proc.running() {
                if n.proc.paused {
                    match n.proc.resume() {
                        Ok(()) => did.push(format!("resumed {}", n.name)),
                        Err(e) => did.push(format!("resuming {} failed: {e:#}", n.name)),
                    }
                }
            } else {
                match n.proc.start(t) {
                    Ok(()) => did.push(format!("restarted {}", n.name)),
                    Err(e) => did.push(format!("restarting {} failed: {e:#}", n.name)),
                }
            }
        }
        did
    }

    /// Stops everything: executors first (so they can hand back and deregister), then masters;
    /// SIGTERM, up to `grace` for each group, then SIGKILL.
    pub async fn stop_all(&mut self, grace: Duration) {
        for group in [&mut self.executors, &mut self.masters] {
            for n in group.iter_mut() {
                n.proc.terminate();
            }
            let deadline = Instant::now() + grace;
            for n in group.iter_mut() {
                let left = deadline.saturating_duration_since(Instant::now());
                if n.proc.wait_exit(left).await.is_err() {
                    let _ = n.proc.kill().await;
                }
            }
        }
    }
}

/// The part of an executor's config file (`triad executor --config`) the suite sets; the rest
/// comes from flags.
#[derive(serde::Serialize)]
struct ExecutorFile {
    insecure: bool,
    tls: TlsFiles,
    auth: AuthConfig,
}

/// One master's view at one poll.
#[derive(Clone, Debug)]
pub struct Seen {
    pub term: u64,
    pub leader: bool,
    pub at: Instant,
}

/// What the leader pollers saw last, per master id.
#[derive(Clone, Default)]
pub struct LeaderView {
    inner: Arc<Mutex<BTreeMap<u64, Seen>>>,
}

impl LeaderView {
    pub fn update(&self, node: u64, term: u64, leader: bool) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, Seen { term, leader, at: Instant::now() });
    }

    /// The master that most recently (within `fresh`) claimed leadership in the highest term.
    pub fn leader(&self, fresh: Duration) -> Option<u64> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .filter(|(_, s)| s.leader && s.at.elapsed() <= fresh)
            .max_by_key(|(_, s)| s.term)
            .map(|(id, _)| *id)
    }
}

pub fn cluster_channel(dialer: &Dialer, addr: &str) -> anyhow::Result<Channel> {
    dialer.master(addr).with_context(|| format!("bad address {addr}"))
}

/// Polls one master's own status every `every` and records each poll as a `leader-poll` op.
/// Errors: a refused connection is a `fail` (nothing was read), anything else (a timeout) `info`.
pub async fn poll_leader(
    dialer: Dialer,
    rec: Arc<Recorder>,
    view: LeaderView,
    node: u64,
    addr: String,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(chan) = cluster_channel(&dialer, &addr) else { return };
    let mut process = rec.new_process();
    let timeout = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return;
        }
        let next = tokio::time::Instant::now() + every;
        rec.invoke(process, Call::LeaderPoll { node, term: 0, leader: false });
        let mut req = tonic::Request::new(pb::NodeStatusRequest { with_digest: false });
        req.set_timeout(timeout);
        let r = tokio::time::timeout(
            timeout,
            pb::cluster_service_client::ClusterServiceClient::new(chan.clone()).node_status(req),
        )
        .await;
        match r {
            Ok(Ok(st)) => {
                let st = st.into_inner();
                let leader = st.role == "leader";
                view.update(st.id, st.term, leader);
                rec.record(
                    process,
                    triad_jepsen::history::OpType::Ok,
                    Call::LeaderPoll { node: st.id, term: st.term, leader },
                );
            }
            Ok(Err(s))
                if s.code() == tonic::Code::Unavailable
                    && !s.message().contains("timed out")
                    && !s.message().contains("deadline") =>
            {
                // Connection refused / reset before anything was asked: nothing happened.
                rec.record(
                    process,
                    triad_jepsen::history::OpType::Fail,
                    Call::LeaderPoll { node, term: 0, leader: false },
                );
            }
            _ => {
                rec.record(
                    process,
                    triad_jepsen::history::OpType::Info,
                    Call::LeaderPoll { node, term: 0, leader: false },
                );
                process = rec.new_process();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Asks every master for its own status right now; the leader of the highest term, if any.
pub async fn find_leader(
    dialer: &Dialer,
    addrs: &[(u64, String)],
    timeout: Duration,
) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for (id, addr) in addrs {
        if let Ok(st) = triad::client::node_status(dialer, addr, timeout, false).await {
            if st.role == "leader" && best.is_none_or(|(t, _)| st.term > t) {
                best = Some((st.term, *id));
            }
        }
    }
    best.map(|(_, id)| id)
}

/// Waits (bounded) until a leader is elected and `executors` executors are alive.
pub async fn wait_ready(
    dialer: &Dialer,
    addrs: &[(u64, String)],
    masters: Vec<String>,
    executors: usize,
    bound: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + bound;
    loop {
        if find_leader(dialer, addrs, Duration::from_millis(500)).await.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("no leader elected within {bound:?} (see the master logs)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = triad::client::Client::new(masters, dialer)?;
    client.call_timeout = Duration::from_secs(2);
    client.retry_for = Duration::from_secs(2);
    loop {
        let r = client
            .call(|c| async move {
                pb::executor_service_client::ExecutorServiceClient::new(c)
                    .list_executors(pb::ListExecutorsRequest {
                        consistency: pb::ReadConsistency::Linearizable as i32,
                        ..Default::default()
                    })
                    .await
            })
            .await;
        let alive =
            r.map(|r| r.executors.iter().filter(|e| e.state == "alive").count()).unwrap_or(0);
        if alive >= executors {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {alive} of {executors} executors alive within {bound:?} (see the executor logs)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
