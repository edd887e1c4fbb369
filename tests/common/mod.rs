//! Test harness: real `triad master` processes on loopback, each with its own config and data dir
//! under a temp dir. Processes are killed with SIGKILL (never politely) when a test asks, and all
//! of them when the harness is dropped. On a failing test the tail of every master log is printed.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use triad::api::{pb, Dialer};
use triad::cli::creds::{master_name, LocalCredentials};
use triad::client::{node_status, Client};
use triad::master::config::{peers, MasterConfig};
use triad::security::Role;

pub const BIN: &str = env!("CARGO_BIN_EXE_triad");

/// Reserves `n` distinct free loopback ports (all held open at once, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub struct Master {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Its HTTP endpoints (`/metrics`, `/status`).
    pub http: Option<String>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub masters: Vec<Master>,
    /// The cluster's CA, certificates and tokens (under `dir`; see [`creds`]).
    pub creds: LocalCredentials,
    /// What an admin presents (the admin token over TLS).
    pub dialer: Dialer,
}

/// The credentials of the test cluster rooted at `root`: made on first use, then shared by its
/// masters, executors and clients (`root/tls`, `root/tokens`).
pub fn creds(root: &Path) -> LocalCredentials {
    LocalCredentials::ensure(root, 0, 0).expect("test credentials")
}

/// What a CLI run needs besides `TRIAD_MASTERS`: the CA and the admin token.
pub fn cli_env(root: &Path) -> Vec<(&'static str, String)> {
    let c = creds(root);
    vec![
        ("TRIAD_CA", c.tls.ca_cert().display().to_string()),
        ("TRIAD_TOKEN", c.token(Role::Admin).expect("admin token")),
    ]
}

impl Cluster {
    /// Starts `n` masters; `tweak` adjusts each config before it is written.
    pub fn start(n: usize, tweak: impl Fn(&mut MasterConfig)) -> Cluster {
        let dir = tempfile::Builder::new().prefix("triad-test-").tempdir().expect("tempdir");
        let creds = creds(dir.path());
        let all = free_ports(2 * n);
        let (ports, http_ports) = all.split_at(n);
        let peers = peers(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        let mut masters = Vec::new();
        for p in &peers {
            let node_dir = dir.path().join(format!("master{}", p.id));
            std::fs::create_dir_all(&node_dir).unwrap();
            let http = format!("127.0.0.1:{}", http_ports[p.id as usize - 1]);
            let tls = creds.node(Role::Master, &master_name(p.id as u32)).unwrap();
            let mut cfg =
                MasterConfig::cluster_member(p.id, &peers, node_dir.join("data"), Some(http))
                    .unwrap()
                    .secured(Some(tls), creds.auth.clone());
            tweak(&mut cfg);
            let config = node_dir.join("master.toml");
            std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
            let http = cfg.http_listen.clone();
            masters.push(Master {
                id: p.id,
                addr: p.addr.clone(),
                config,
                log: node_dir.join("master.log"),
                child: None,
                http,
            });
        }
        let dialer = Dialer::new(creds.client(Role::Admin).unwrap());
        let mut c = Cluster { dir, masters, creds, dialer };
        for id in 1..=n as u64 {
            c.restart(id);
        }
        c
    }

    /// Adds a master process that is not (yet) a member: it joins through AddMaster.
    pub fn spawn_joiner(&mut self, id: u64) -> String {
        let port = free_ports(1)[0];
        let addr = format!("127.0.0.1:{port}");
        let node_dir = self.dir.path().join(format!("master{id}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let tls = self.creds.node(Role::Master, &master_name(id as u32)).unwrap();
        let cfg = MasterConfig::joiner(id, addr.clone(), node_dir.join("data"))
            .secured(Some(tls), self.creds.auth.clone());
        let config = node_dir.join("master.toml");
        std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
        self.masters.push(Master {
            id,
            addr: addr.clone(),
            config,
            log: node_dir.join("master.log"),
            child: None,
            http: None,
        });
        self.restart(id);
        addr
    }

    /// Deletes a (stopped) master's data dir: its disk is gone.
    pub fn wipe(&self, id: u64) {
        assert!(!self.is_running(id));
        let _ = std::fs::remove_dir_all(self.dir.path().join(format!("master{id}")).join("data"));
    }

    pub fn master(&self, id: u64) -> &Master {
        self.masters.iter().find(|m| m.id == id).expect("no such master")
    }

    pub fn addrs(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn masters_arg(&self) -> String {
        self.addrs().join(",")
    }

    /// (Re)starts a master process from its config and data dir.
    pub fn restart(&mut self, id: u64) {
        let m = self.masters.iter_mut().find(|m| m.id == id).expect("no such master");
        assert!(m.child.is_none(), "master {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).unwrap();
        let child = Command::new(BIN)
            .args(["master", "--config"])
            .arg(&m.config)
            .env("TRIAD_LOG", "info,openraft=error")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning master");
        m.child = Some(child);
    }

    /// SIGKILLs a master (no chance to flush or say goodbye).
    pub fn kill(&mut self, id: u64) {
        let m = self.masters.iter_mut().find(|m| m.id == id).expect("no such master");
        if let Some(mut c) = m.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// The exit status of a master that ended by itself (then it is no longer running), or None
    /// while it runs.
    pub fn try_wait(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let m = self.masters.iter_mut().find(|m| m.id == id).expect("no such master");
        let status = m.child.as_mut()?.try_wait().expect("try_wait")?;
        m.child = None;
        Some(status)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.master(id).child.is_some()
    }

    /// A client that knows every master.
    pub fn client(&self) -> Client {
        Client::new(self.addrs(), &self.dialer).unwrap()
    }

    /// A client that talks to one master only.
    pub fn client_for(&self, id: u64) -> Client {
        Client::new(vec![self.master(id).addr.clone()], &self.dialer).unwrap()
    }

    /// A client of `masters` presenting `role`'s token.
    pub fn client_as(&self, role: Role, masters: Vec<String>) -> Client {
        Client::new(masters, &Dialer::new(self.creds.client(role).unwrap())).unwrap()
    }

    pub async fn status(&self, id: u64) -> Option<pb::MasterStatus> {
        node_status(&self.dialer, &self.master(id).addr, Duration::from_millis(500), false)
            .await
            .ok()
    }

    pub async fn digest(&self, id: u64) -> u64 {
        node_status(&self.dialer, &self.master(id).addr, Duration::from_secs(5), true)
            .await
            .expect("status with digest")
            .state_digest
    }

    /// Waits until every running master agrees on one leader, and returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        wait_for("a leader every running master agrees on", timeout, || async {
            let mut leader = None;
            for m in self.masters.iter().filter(|m| m.child.is_some()) {
                let s = self.status(m.id).await?;
                if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                    return None;
                }
                leader = Some(s.leader_id);
            }
            let l = leader?;
            let s = self.status(l).await?;
            (s.role == "leader").then_some(l)
        })
        .await
    }

    /// Waits until master `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> pb::MasterStatus {
        wait_for(&format!("master {id} to apply index {index}"), timeout, || async {
            self.status(id).await.filter(|s| s.applied_index >= index)
        })
        .await
    }

    pub fn followers(&self, leader: u64) -> Vec<u64> {
        self.masters.iter().filter(|m| m.id != leader && m.child.is_some()).map(|m| m.id).collect()
    }

    /// Runs the CLI with `args` as an admin; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli_env(args, &self.masters_arg(), &cli_env(self.dir.path()))
    }
}

/// Runs the CLI with `args` and no credentials; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], masters: &str) -> (i32, String, String) {
    run_cli_env(args, masters, &[])
}

/// Runs the CLI with `args` and `env`; returns (exit code, stdout, stderr).
pub fn run_cli_env(args: &[&str], masters: &str, env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("TRIAD_MASTERS", masters)
        .env_remove("TRIAD_CA")
        .env_remove("TRIAD_TOKEN")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running triad");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.masters {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for m in &self.masters {
                eprintln!("----- master {} log (tail) -----\n{}", m.id, tail(&m.log, 40));
            }
        }
    }
}

/// A minimal valid submission.
pub fn submit_req(key: &str, command: &str, args: &[&str]) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        name: format!("job-{key}"),
        idempotency_key: key.to_string(),
        spec: Some(pb::JobSpec {
            command: command.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            task_count: 1,
            ..Default::default()
        }),
    }
}

/// An executor process under test.
pub struct Executor {
    pub name: String,
    pub work_dir: PathBuf,
    /// Where its config and log are (`root/name`; also its work dir unless given another).
    pub home: PathBuf,
    pub child: Option<Child>,
}

impl Executor {
    pub fn start(masters: &str, root: &Path, name: &str, slots: u32, labels: &[&str]) -> Executor {
        Executor::start_with(masters, root, name, slots, labels, &[])
    }

    /// As [`Executor::start`], with more command-line arguments.
    pub fn start_with(
        masters: &str,
        root: &Path,
        name: &str,
        slots: u32,
        labels: &[&str],
        extra: &[&str],
    ) -> Executor {
        Executor::start_opts(masters, root, name, slots, labels, extra, None, &[])
    }

    /// As [`Executor::start_with`], with its work dir at `work_dir` (default `root/name`; its
    /// config and log stay in `root/name`) and `env` added to its environment.
    #[allow(clippy::too_many_arguments, dead_code)]
    pub fn start_opts(
        masters: &str,
        root: &Path,
        name: &str,
        slots: u32,
        labels: &[&str],
        extra: &[&str],
        work_dir: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Executor {
        let home = root.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let work_dir = work_dir.map(Path::to_path_buf).unwrap_or_else(|| home.clone());
        std::fs::create_dir_all(&work_dir).unwrap();
        // Its certificate names it `name`: that is its executor id.
        let creds = creds(root);
        let tls = creds.node(Role::Executor, name).expect("executor certificate");
        #[derive(serde::Serialize)]
        struct File<'a> {
            tls: &'a triad::security::tls::TlsFiles,
            auth: &'a triad::security::AuthConfig,
        }
        let config = home.join("executor.toml");
        std::fs::write(&config, toml::to_string(&File { tls: &tls, auth: &creds.auth }).unwrap())
            .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("executor.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["executor", "--config"]).arg(&config);
        cmd.args(["--masters", masters, "--slots", &slots.to_string(), "--work-dir"])
            .arg(&work_dir);
        for l in labels {
            cmd.args(["--label", l]);
        }
        cmd.args(extra);
        let child = cmd
            .envs(env.iter().copied())
            .env("TRIAD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning executor");
        Executor { name: name.to_string(), work_dir, home, child: Some(child) }
    }

    /// The stable id the executor wrote to its work dir.
    pub async fn id(&self) -> String {
        let path = self.work_dir.join("executor-id");
        wait_for("executor id file", Duration::from_secs(10), || async {
            std::fs::read_to_string(&path).ok().filter(|s| !s.is_empty())
        })
        .await
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("not running").id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        tail(&self.home.join("executor.log"), 30)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused executor must be resumed to die cleanly.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- {} log (tail) -----\n{}", self.name, self.log_tail());
        }
    }
}

/// Is a process with this pid still alive (zombies count as gone)?
pub fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state field follows the parenthesised command name.
    !matches!(
        stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()),
        Some(Some('Z')) | None | Some(None)
    )
}

/// A plain HTTP/1.0 GET (bounded): returns the body of a 200 response.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.lines().next().is_some_and(|l| l.contains(" 200 ")).then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await.ok().flatten()
}

/// The gRPC health status of a master or executor ("" service) at `addr`, expected to be
/// `server`: Some(true) when SERVING. Health needs no credential, but it is served over TLS.
pub async fn grpc_serving(
    dialer: &Dialer,
    addr: &str,
    server: &triad::api::ServerName,
) -> Option<bool> {
    use tonic_health::pb::health_client::HealthClient;
    let chan = dialer.channel(addr, server).ok()?;
    let mut req =
        tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
    req.set_timeout(Duration::from_secs(2));
    let r = tokio::time::timeout(Duration::from_secs(2), HealthClient::new(chan).check(req))
        .await
        .ok()?
        .ok()?;
    Some(
        r.into_inner().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
    )
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text page.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}
