//! An executor: registers with the cluster, heartbeats to the leader (over one long-lived stream,
//! `heartbeat`), runs the attempts the leader starts on it (through [`runner::Runner`]) and
//! reports their start and exit, fenced by token.
//!
//! Invariants:
//! - **Self-fencing**: when no heartbeat has been acknowledged for `SELF_FENCE_FRACTION` of the
//!   leader's TTL, every attempt is killed; the leader will have declared this executor dead (or
//!   is about to) and rescheduled the work, so the old attempt must not keep running. The rules
//!   are decided by the pure [`heartbeat::core::Pulse`]; [`heartbeat`] is their shell.
//! - A report is retried until the leader gives a final answer; a stale-token answer kills the
//!   attempt.
//! - An attempt assigned under an older registration epoch is refused (the executor restarted).
//! - On SIGTERM or drain: take no new work, hand back or finish what runs, deregister. Attempt
//!   output stays (a restart must not erase logs): it goes when its job is deleted or expires
//!   (`housekeeping`).
//! - A work dir without room makes the executor unhealthy: starts are refused with the reason,
//!   and heartbeats carry it so the leader places nothing here (`runner::disk`).

pub mod config;
mod heartbeat;
mod housekeeping;
mod http;
pub mod runner;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::pb::executor_service_client::ExecutorServiceClient;
use crate::api::pb::worker_service_server::WorkerServiceServer;
use crate::api::pb::{self, report_task_request::Kind};
use crate::client::Client;
use crate::shutdown::{self, Shutdown};
use runner::{AttemptEvent, EventKind, ExitStatus, Runner};

use crate::timings::HEARTBEAT_CALL_TIMEOUT;
use crate::timings::{EXECUTOR_FAREWELL as FAREWELL_TIMEOUT, EXECUTOR_KILL_GRACE as STOP_GRACE};

#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    pub masters: Vec<String>,
    pub slots: u32,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub labels: BTreeMap<String, String>,
    pub work_dir: PathBuf,
    /// Address the worker API binds.
    pub listen: String,
    /// Address the leader reaches the worker API at (defaults to the bound address).
    pub advertise: Option<String>,
    /// Address of the HTTP endpoints (`/metrics`, `/status`); none when unset.
    pub http_listen: Option<String>,
    /// No TLS, no authentication (`insecure = true`).
    pub insecure: bool,
    /// The CA, certificate and key (required unless insecure); the certificate names the id.
    pub tls: Option<crate::security::tls::TlsFiles>,
    /// Tokens the worker API accepts (for reading output).
    pub auth: crate::security::AuthConfig,
    /// How attempt output is capped, kept and expired (`[output]`).
    pub output: config::OutputConfig,
}

impl ExecutorConfig {
    pub fn security(&self) -> crate::security::NodeSecurity<'_> {
        crate::security::NodeSecurity {
            insecure: self.insecure,
            tls: self.tls.as_ref(),
            auth: &self.auth,
        }
    }
}

/// State shared by the executor's tasks.
pub struct Agent {
    pub id: String,
    pub addr: String,
    cfg: ExecutorConfig,
    client: Client,
    /// Short-deadline client for heartbeats (a heartbeat is never worth waiting long for): the
    /// deadline of each beat's answer on the heartbeat stream, and of unary beats.
    hb_client: Client,
    pub runner: Runner,
    /// Current registration epoch (0 before the first registration).
    pub epoch: AtomicU64,
    /// No new work is accepted.
    pub draining: AtomicBool,
    /// The heartbeat and fencing memory: timings, last acknowledgement, the beats sent (the
    /// leases starts are judged by, [`lease`]).
    pulse: Mutex<heartbeat::Pulse>,
}

/// Loads the executor's stable id from its work dir, creating it on first start: the name its
/// certificate gives it (`named`), or a random one in insecure mode. A work dir that belongs to
/// another id is refused (its attempts are that executor's).
fn load_or_create_id(dir: &std::path::Path, named: Option<&str>) -> anyhow::Result<String> {
    let path = dir.join("executor-id");
    match (std::fs::read_to_string(&path), named) {
        (Ok(s), Some(name)) if !s.trim().is_empty() && s.trim() != name => anyhow::bail!(
            "{} belongs to executor {:?}, but this executor's certificate names {name:?}: use \
             another --work-dir, or that executor's certificate",
            dir.display(),
            s.trim()
        ),
        (Ok(s), _) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = match named {
                Some(name) => name.to_string(),
                None => format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            };
            // Atomic and fsynced: a power cut must not leave an empty or half-written id, which
            // would make the next start take a new identity and orphan this one's attempts.
            crate::files::write_atomically(&path, id.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

/// Runs an executor until `shutdown` fires (or it finishes draining): clean up after an earlier
/// process, serve the worker API, register, heartbeat; then hand back and leave.
pub async fn run(cfg: ExecutorConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating work dir {}", cfg.work_dir.display()))?;
    let secured = cfg.security().load(crate::security::Role::Executor)?;
    let id = load_or_create_id(&cfg.work_dir, secured.own.name())?;
    if cfg.insecure {
        let mut stop = shutdown.clone();
        tokio::spawn(crate::security::warn_insecure(format!("executor {id}"), async move {
            stop.wait().await
        }));
    }
    let listener =
        TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let bound = listener.local_addr()?;
    let addr = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let disk = runner::disk::DiskHealth::new(&cfg.work_dir, cfg.output.min_free_bytes);
    let runner = Runner::with_limits(cfg.work_dir.clone(), events_tx, cfg.output.limits, disk);
    kill_leftovers(&runner).await?;
    let agent = Arc::new(Agent::new(id, addr, cfg, secured.client.clone(), runner)?);
    tracing::info!(id = %agent.id, addr = %agent.addr, work_dir = %agent.cfg.work_dir.display(), tls = !agent.cfg.insecure, "executor starting");

    // The executor's own stop signal: external shutdown, or the end of a drain.
    let (stop_trigger, stop) = shutdown::channel();
    {
        let (mut ext, t) = (shutdown.clone(), stop_trigger.clone());
        tokio::spawn(async move {
            ext.wait().await;
            t.fire();
        });
    }
    let server = serve(&agent, &secured, listener, &stop).await?;
    let housekeeping = tokio::spawn(housekeeping::run(agent.clone(), stop.clone()));
    let (flush_tx, flush_rx) = tokio::sync::oneshot::channel();
    let reports = tokio::spawn(report_loop(agent.clone(), events_rx, flush_rx));

    let mut stop_wait = stop.clone();
    tokio::select! {
        r = agent.register() => r?,
        _ = stop_wait.wait() => {}
    }
    if !stop.is_fired() {
        heartbeat::heartbeat_loop(agent.clone(), stop.clone(), stop_trigger.clone()).await;
    }
    farewell(&agent, flush_tx, reports).await;
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, housekeeping).await;
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, server).await;
    Ok(())
}

/// Before anything else (above all before registering, which lets the leader reschedule the old
/// epoch's work): no attempt of an earlier, crashed process of this executor may live on.
async fn kill_leftovers(runner: &Runner) -> anyhow::Result<()> {
    let sweep = runner.clone();
    match tokio::task::spawn_blocking(move || sweep.kill_leftovers()).await? {
        Ok(0) => Ok(()),
        Ok(n) => {
            tracing::warn!(
                killed = n,
                "killed attempts left running by an earlier executor process"
            );
            Ok(())
        }
        Err(e) => Err(e).context("killing attempts left by an earlier executor process"),
    }
}

/// Serves the HTTP endpoints (when configured) and the worker API (with health and reflection)
/// until `stop`; returns the worker API server's task.
async fn serve(
    agent: &Arc<Agent>,
    secured: &crate::security::Secured,
    listener: TcpListener,
    stop: &Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    if let Some(http_addr) = &agent.cfg.http_listen {
        let l = TcpListener::bind(http_addr)
            .await
            .with_context(|| format!("binding http {http_addr}"))?;
        tracing::info!(http = %http_addr, "serving /metrics and /status");
        tokio::spawn(http::serve(agent.clone(), l, stop.clone()));
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(http::track_health(agent.clone(), health_reporter, stop.clone()));
    let (reflection, reflection_v1alpha) = crate::api::reflection()?;
    let mut server_stop = stop.clone();
    let server = crate::api::server(secured)?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(WorkerServiceServer::new(worker::Worker {
            agent: agent.clone(),
            stop: stop.clone(),
        }))
        .serve_with_incoming_shutdown(crate::api::incoming(listener), async move {
            server_stop.wait().await
        });
    Ok(tokio::spawn(server))
}

/// Leaving: hand back what still runs (killed; the reports, LOST, let the leader reschedule at
/// once), deliver the last reports, deregister. Each step is bounded. Output stays on disk: a
/// restart (`systemctl restart`) must not erase the logs of finished jobs.
async fn farewell(
    agent: &Agent,
    flush: tokio::sync::oneshot::Sender<()>,
    reports: tokio::task::JoinHandle<()>,
) {
    tracing::info!("executor stopping: handing back {} attempts", agent.runner.live_tokens().len());
    agent.draining.store(true, Ordering::SeqCst);
    agent.runner.stop_all(STOP_GRACE).await;
    // Every attempt has ended, so its final event is queued: deliver those reports, then finish.
    let _ = flush.send(());
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, reports).await;
    let epoch = agent.epoch.load(Ordering::SeqCst);
    if epoch > 0 {
        let req = pb::DeregisterRequest { executor_id: agent.id.clone(), epoch };
        let dereg = agent.client.call(|c| {
            let req = req.clone();
            async move { ExecutorServiceClient::new(c).deregister(req).await }
        });
        match tokio::time::timeout(FAREWELL_TIMEOUT, dereg).await {
            Ok(Ok(_)) => tracing::info!("deregistered"),
            Ok(Err(e)) => tracing::warn!(error = %e, "deregistration failed"),
            Err(_) => tracing::warn!("deregistration timed out"),
        }
    }
}

impl Agent {
    /// The agent of executor `id`, reached at `addr`, before its first registration.
    fn new(
        id: String,
        addr: String,
        cfg: ExecutorConfig,
        creds: crate::api::ClientCredentials,
        runner: Runner,
    ) -> anyhow::Result<Agent> {
        let dialer = crate::api::Dialer::new(creds);
        let client = Client::new(cfg.masters.clone(), &dialer)?;
        let mut hb_client = Client::new(cfg.masters.clone(), &dialer)?;
        hb_client.call_timeout = HEARTBEAT_CALL_TIMEOUT;
        hb_client.retry_for = HEARTBEAT_CALL_TIMEOUT;
        Ok(Agent {
            id,
            addr,
            cfg,
            client,
            hb_client,
            runner,
            epoch: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            pulse: Mutex::new(heartbeat::Pulse::new(Instant::now()).with_beats_after(
                rand::Rng::gen_range(&mut rand::thread_rng(), 0..crate::fencing::MAX_BEAT_BASE),
            )),
        })
    }

    /// The heartbeat memory, locked (briefly: never held across an await).
    fn pulse(&self) -> std::sync::MutexGuard<'_, heartbeat::Pulse> {
        self.pulse.lock().expect("poisoned")
    }

    /// Registers (retrying until it succeeds); a new epoch invalidates every older attempt.
    async fn register(&self) -> anyhow::Result<()> {
        // Numbered like a beat, as of its first try: work can be started under it at once.
        let seq = self.pulse().number_registration(Instant::now());
        let req = pb::RegisterRequest {
            seq,
            executor_id: self.id.clone(),
            addr: self.addr.clone(),
            capacity: Some(pb::Resources {
                slots: self.cfg.slots,
                cpu_millis: self.cfg.cpu_millis,
                memory_mib: self.cfg.memory_mib,
            }),
            labels: self.cfg.labels.clone().into_iter().collect(),
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let r = self
                .client
                .call(|c| {
                    let req = req.clone();
                    async move { ExecutorServiceClient::new(c).register(req).await }
                })
                .await;
            match r {
                Ok(r) => {
                    self.epoch.store(r.epoch, Ordering::SeqCst);
                    self.pulse().registered(r.ttl_ms, r.heartbeat_ms, Instant::now());
                    crate::metrics::executor().registrations.inc();
                    tracing::info!(epoch = r.epoch, "registered");
                    return Ok(());
                }
                Err(e) if e.code() == tonic::Code::InvalidArgument => {
                    anyhow::bail!("registration refused: {}", e.message())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registration failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// No heartbeat acknowledged within the self-fencing window: take no new work.
    pub fn is_fenced(&self) -> bool {
        self.pulse().is_fenced(Instant::now())
    }

    /// May a start that names heartbeat `seq` run now? (See [`crate::fencing`].)
    pub fn check_lease(&self, seq: u64) -> Result<(), crate::fencing::LeaseError> {
        self.pulse().check_lease(seq, Instant::now())
    }

    fn since_ack(&self) -> Duration {
        self.pulse().since_ack(Instant::now())
    }

    fn ttl(&self) -> Duration {
        self.pulse().ttl()
    }

    fn heartbeat_interval(&self) -> Duration {
        self.pulse().interval()
    }

    fn running(&self) -> Vec<pb::RunningAttempt> {
        let live = self.runner.live_tokens();
        live.into_iter()
            .filter_map(|t| self.runner.get(t))
            .map(|a| pb::RunningAttempt {
                job_id: a.job_id,
                task_index: a.task_index,
                token: a.token,
            })
            .collect()
    }

    /// Kills an attempt without waiting (SIGKILL after `grace`); `cause` labels the kill in the
    /// metrics and the log.
    fn stop_in_background(self: &Arc<Self>, token: u64, cause: &'static str, grace: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            if me.runner.stop(token, grace).await {
                crate::metrics::executor().kills.with_label_values(&[cause]).inc();
                tracing::info!(token, cause, "killed an attempt");
            }
        });
    }
}

/// Turns runner events into task reports, each retried until the leader answers for good. Once
/// `flush` fires it delivers what is queued (bounded by the farewell timeout) and returns.
async fn report_loop(
    agent: Arc<Agent>,
    mut events: mpsc::UnboundedReceiver<AttemptEvent>,
    mut flush: tokio::sync::oneshot::Receiver<()>,
) {
    let mut flushing = false;
    loop {
        let ev = if flushing {
            match events.try_recv() {
                Ok(ev) => ev,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                ev = events.recv() => match ev { Some(ev) => ev, None => return },
                _ = &mut flush => { flushing = true; continue; }
            }
        };
        let Some(info) = agent.runner.get(ev.token) else { continue };
        let m = crate::metrics::executor();
        match &ev.kind {
            EventKind::Started { .. } => m.attempts_started.inc(),
            EventKind::Finished { status } => {
                m.attempts_finished.with_label_values(&[status.outcome()]).inc()
            }
        }
        let (kind, exit_code, error) = report_of(&ev.kind);
        let req = pb::ReportTaskRequest {
            executor_id: agent.id.clone(),
            job_id: info.job_id.clone(),
            task_index: info.task_index,
            token: ev.token,
            kind: kind as i32,
            exit_code,
            error,
        };
        // While running, a report is retried for as long as it takes; when leaving, for the
        // farewell timeout.
        let deadline = flushing.then(|| Instant::now() + FAREWELL_TIMEOUT);
        deliver(&agent, req, deadline).await;
        if matches!(ev.kind, EventKind::Finished { .. }) {
            agent.runner.forget(ev.token);
        }
    }
}

/// What a runner event reports: its kind, exit code and error text.
fn report_of(kind: &EventKind) -> (Kind, i32, String) {
    match kind {
        EventKind::Started { .. } => (Kind::Started, 0, String::new()),
        EventKind::Finished { status } => match status {
            ExitStatus::Exited(c) => (Kind::Finished, *c, String::new()),
            ExitStatus::Signaled(s) => (Kind::Finished, 128 + s, format!("killed by signal {s}")),
            ExitStatus::TimedOut => (Kind::Finished, 124, "timed out".to_string()),
            ExitStatus::Killed => (Kind::Lost, 0, "stopped by the executor".to_string()),
            ExitStatus::SpawnFailed(m) => (Kind::Finished, 127, format!("could not start: {m}")),
        },
    }
}

/// Sends a report until the leader answers for good or `deadline` (none: no deadline) passes;
/// a stale-token answer kills the attempt.
async fn deliver(agent: &Arc<Agent>, req: pb::ReportTaskRequest, deadline: Option<Instant>) {
    let m = crate::metrics::executor();
    while deadline.is_none_or(|d| Instant::now() < d) {
        let r = agent
            .client
            .call(|c| {
                let req = req.clone();
                async move { ExecutorServiceClient::new(c).report_task(req).await }
            })
            .await;
        match r {
            Ok(resp) => {
                m.reports.with_label_values(&[if resp.kill { "stale" } else { "accepted" }]).inc();
                if resp.kill {
                    agent.stop_in_background(req.token, "stale_report", STOP_GRACE);
                }
                return;
            }
            Err(e)
                if e.code() == tonic::Code::InvalidArgument
                    || e.code() == tonic::Code::NotFound =>
            {
                m.reports.with_label_values(&["refused"]).inc();
                tracing::warn!(token = req.token, error = %e, "report refused for good");
                return;
            }
            Err(e) => {
                m.reports.with_label_values(&["retry"]).inc();
                tracing::debug!(token = req.token, error = %e, "report failed; retrying")
            }
        }
    }
}
