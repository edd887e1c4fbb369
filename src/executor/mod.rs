//! An executor: registers with the cluster, heartbeats to the leader (over one long-lived stream,
//! `heartbeat`), runs the attempts the leader starts on it (through [`runner::Runner`]) and
//! reports their start and exit, fenced by token.
//!
//! Invariants:
//! - **Self-fencing**: when no heartbeat has been acknowledged for `SELF_FENCE_FRACTION` of the
//!   leader's TTL, every attempt is killed; the leader will have declared this executor dead (or
//!   is about to) and rescheduled the work, so the old attempt must not keep running.
//! - A report is retried until the leader gives a final answer; a stale-token answer kills the
//!   attempt.
//! - An attempt assigned under an older registration epoch is refused (the executor restarted).
//! - On SIGTERM or drain: take no new work, hand back or finish what runs, deregister, clean up.

pub mod config;
mod heartbeat;
mod http;
pub mod lease;
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

/// Attempts are killed once heartbeats have gone unacknowledged for this fraction of the TTL,
/// leaving the rest of the TTL as margin for clock-rate differences and the kill itself.
pub const SELF_FENCE_FRACTION: f64 = 0.6;

/// The self-fencing window of a TTL: attempts die after this long without an acknowledged beat,
/// a start runs only this long after the beat it names was sent, and the leader gives a start up
/// only this long after it received that beat ([`lease`]).
pub fn fence_window(ttl: Duration) -> Duration {
    ttl.mul_f64(SELF_FENCE_FRACTION)
}
/// Grace between SIGTERM and SIGKILL when stopping an attempt.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a stopping executor keeps trying to deliver its last reports and to deregister.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(5);

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
    last_ack: Mutex<Instant>,
    /// When each recent heartbeat was sent: the leases starts are judged by ([`lease`]).
    beats: Mutex<lease::BeatLog>,
    ttl: Mutex<Duration>,
    heartbeat: Mutex<Duration>,
}

/// Loads the executor's stable id from its work dir, creating it on first start.
fn load_or_create_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("executor-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

/// Runs an executor until `shutdown` fires (or it finishes draining).
pub async fn run(cfg: ExecutorConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating work dir {}", cfg.work_dir.display()))?;
    let id = load_or_create_id(&cfg.work_dir)?;
    let listener =
        TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let bound = listener.local_addr()?;
    let addr = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let runner = Runner::new(cfg.work_dir.clone(), events_tx);
    // Before anything else (above all before registering, which lets the leader reschedule the
    // old epoch's work): no attempt of an earlier, crashed process of this executor may live on.
    let sweep = runner.clone();
    match tokio::task::spawn_blocking(move || sweep.kill_leftovers()).await? {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            killed = n,
            "killed attempts left running by an earlier executor process"
        ),
        Err(e) => return Err(e).context("killing attempts left by an earlier executor process"),
    }
    let client = Client::new(cfg.masters.clone())?;
    let mut hb_client = Client::new(cfg.masters.clone())?;
    hb_client.call_timeout = Duration::from_millis(800);
    hb_client.retry_for = Duration::from_millis(800);
    let agent = Arc::new(Agent {
        id: id.clone(),
        addr: addr.clone(),
        cfg: cfg.clone(),
        client,
        hb_client,
        runner,
        epoch: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        last_ack: Mutex::new(Instant::now()),
        beats: Mutex::new(lease::BeatLog::default()),
        ttl: Mutex::new(Duration::from_secs(5)),
        heartbeat: Mutex::new(Duration::from_secs(1)),
    });
    tracing::info!(%id, %addr, work_dir = %cfg.work_dir.display(), "executor starting");

    // The executor's own stop signal: external shutdown, or the end of a drain.
    let (stop_trigger, stop) = shutdown::channel();
    {
        let (mut ext, t) = (shutdown.clone(), stop_trigger.clone());
        tokio::spawn(async move {
            ext.wait().await;
            t.fire();
        });
    }
    if let Some(http_addr) = &cfg.http_listen {
        let l = TcpListener::bind(http_addr)
            .await
            .with_context(|| format!("binding http {http_addr}"))?;
        tracing::info!(http = %http_addr, "serving /metrics and /status");
        tokio::spawn(http::serve(agent.clone(), l, stop.clone()));
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(http::track_health(agent.clone(), health_reporter, stop.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building reflection service")?;
    let mut server_stop = stop.clone();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(WorkerServiceServer::new(worker::Worker { agent: agent.clone() }))
        .serve_with_incoming_shutdown(crate::api::incoming(listener), async move {
            server_stop.wait().await
        });
    let server = tokio::spawn(server);

    let (flush_tx, flush_rx) = tokio::sync::oneshot::channel();
    let reports = tokio::spawn(report_loop(agent.clone(), events_rx, flush_rx));

    let mut stop_wait = stop.clone();
    tokio::select! {
        r = agent.register() => r?,
        _ = stop_wait.wait() => {}
    }
    if !stop.is_fired() {
        heartbeat_loop(agent.clone(), stop.clone(), stop_trigger.clone()).await;
    }

    // Hand back what still runs: kill it; the reports (LOST) let the leader reschedule at once.
    tracing::info!("executor stopping: handing back {} attempts", agent.runner.live_tokens().len());
    agent.draining.store(true, Ordering::SeqCst);
    agent.runner.stop_all(STOP_GRACE).await;
    // Every attempt has ended, so its final event is queued: deliver those reports, then finish.
    let _ = flush_tx.send(());
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
    let r = agent.runner.clone();
    let _ = tokio::task::spawn_blocking(move || r.cleanup_job_dirs()).await;
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, server).await;
    Ok(())
}

impl Agent {
    /// Registers (retrying until it succeeds); a new epoch invalidates every older attempt.
    async fn register(&self) -> anyhow::Result<()> {
        // Numbered like a beat, as of its first try: work can be started under it at once.
        let seq = self.beats.lock().expect("poisoned").record(Instant::now(), self.fence_window());
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
                    *self.ttl.lock().expect("poisoned") = Duration::from_millis(r.ttl_ms.max(100));
                    *self.heartbeat.lock().expect("poisoned") =
                        Duration::from_millis(r.heartbeat_ms.clamp(50, 60_000));
                    *self.last_ack.lock().expect("poisoned") = Instant::now();
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
        self.since_ack() > self.fence_window()
    }

    /// [`fence_window`] of the TTL this executor was given.
    pub fn fence_window(&self) -> Duration {
        fence_window(self.ttl())
    }

    /// May a start that names heartbeat `seq` run now? (See [`lease`].)
    pub fn check_lease(&self, seq: u64) -> Result<(), lease::LeaseError> {
        self.beats.lock().expect("poisoned").check(seq, Instant::now(), self.fence_window())
    }

    fn since_ack(&self) -> Duration {
        self.last_ack.lock().expect("poisoned").elapsed()
    }

    fn ttl(&self) -> Duration {
        *self.ttl.lock().expect("poisoned")
    }

    fn heartbeat_interval(&self) -> Duration {
        *self.heartbeat.lock().expect("poisoned")
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

    /// How long a self-fenced attempt gets between SIGTERM and SIGKILL. A self-fence races the
    /// leader's TTL: the rest of it after the fencing window is all the time there is, so the
    /// kill takes at most a quarter of that.
    fn self_fence_grace(&self) -> Duration {
        STOP_GRACE.min(self.ttl().saturating_sub(self.fence_window()) / 4)
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

/// Beats every interval over [`heartbeat::Link`] (one stream to the leader) and acts on each
/// answer: acknowledgement, kills, re-registration, draining. Self-fences before every beat.
async fn heartbeat_loop(agent: Arc<Agent>, mut stop: Shutdown, stop_trigger: shutdown::Trigger) {
    let mut link = heartbeat::Link::default();
    let mut next_beat = Instant::now() + agent.heartbeat_interval();
    loop {
        // Wake for the next beat, or as the fencing window closes if that comes first: the
        // attempts must be dead well before the leader's TTL runs out, not a beat interval late.
        // (Once fenced, no start is accepted, so there is nothing new to kill before the beat.)
        let mut wait = next_beat.saturating_duration_since(Instant::now());
        if let Some(open) = agent.fence_window().checked_sub(agent.since_ack()) {
            wait = wait.min(open + Duration::from_millis(5));
        }
        let wake = tokio::time::Instant::now() + wait;
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        // Self-fence before talking to anyone: after a pause the old attempts must die first.
        let skip = crate::chaos::on(crate::chaos::Bug::SkipFencing);
        if !skip && agent.is_fenced() && !agent.runner.live_tokens().is_empty() {
            tracing::warn!(
                since_ack_ms = agent.since_ack().as_millis() as u64,
                "no heartbeat acknowledged: self-fencing, killing all attempts"
            );
            crate::metrics::executor().self_fences.inc();
            for t in agent.runner.live_tokens() {
                agent.stop_in_background(t, "self_fence", agent.self_fence_grace());
            }
        }
        if Instant::now() < next_beat {
            continue;
        }
        let sent = Instant::now();
        next_beat = sent + agent.heartbeat_interval();
        let seq = agent.beats.lock().expect("poisoned").record(sent, agent.fence_window());
        let req = pb::HeartbeatRequest {
            executor_id: agent.id.clone(),
            epoch: agent.epoch.load(Ordering::SeqCst),
            attempts: agent.running(),
            seq,
        };
        // The whole beat is bounded like a unary heartbeat (a deadline per attempt, a bound on the
        // retries); a beat cut short drops the stream it was on.
        let bound = agent.hb_client.call_timeout + agent.hb_client.retry_for;
        let r = match tokio::time::timeout(bound, link.beat(&agent.hb_client, req)).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "heartbeat not answered within {bound:?}"
            ))),
        };
        let result = if r.is_ok() { "ok" } else { "error" };
        let m = crate::metrics::executor();
        m.heartbeats.with_label_values(&[result]).inc();
        m.heartbeat_seconds.with_label_values(&[result]).observe(sent.elapsed().as_secs_f64());
        let resp = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat failed");
                continue;
            }
        };
        if resp.reregister {
            // Not acknowledged as a live executor: no longer registered, so no start is accepted
            // until the new registration (whose epoch the leader will use).
            agent.epoch.store(0, Ordering::SeqCst);
        } else {
            // The beat was acknowledged as of when it was sent, not as of now: a slow answer
            // must not stretch the fencing window.
            let mut last = agent.last_ack.lock().expect("poisoned");
            *last = (*last).max(sent);
        }
        for t in &resp.kill_tokens {
            agent.stop_in_background(*t, "leader", STOP_GRACE);
        }
        if resp.reregister {
            tracing::warn!(
                "the leader does not know this executor (declared dead?): registering again"
            );
            if !skip {
                for t in agent.runner.live_tokens() {
                    agent.stop_in_background(t, "reregister", STOP_GRACE);
                }
            }
            tokio::select! {
                r = agent.register() => if let Err(e) = r { tracing::error!(error = %e, "re-registration failed"); stop_trigger.fire(); return; },
                _ = stop.wait() => return,
            }
        }
        if resp.draining && !agent.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: finishing running attempts, then leaving");
        }
        if agent.draining.load(Ordering::SeqCst) && agent.runner.live_tokens().is_empty() {
            stop_trigger.fire();
            return;
        }
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
        let (kind, exit_code, error) = match &ev.kind {
            EventKind::Started { .. } => (Kind::Started, 0, String::new()),
            EventKind::Finished { status } => match status {
                ExitStatus::Exited(c) => (Kind::Finished, *c, String::new()),
                ExitStatus::Signaled(s) => {
                    (Kind::Finished, 128 + s, format!("killed by signal {s}"))
                }
                ExitStatus::TimedOut => (Kind::Finished, 124, "timed out".to_string()),
                ExitStatus::Killed => (Kind::Lost, 0, "stopped by the executor".to_string()),
                ExitStatus::SpawnFailed(m) => {
                    (Kind::Finished, 127, format!("could not start: {m}"))
                }
            },
        };
        let req = pb::ReportTaskRequest {
            executor_id: agent.id.clone(),
            job_id: info.job_id.clone(),
            task_index: info.task_index,
            token: ev.token,
            kind: kind as i32,
            exit_code,
            error,
        };
        let deadline =
            Instant::now() + if flushing { FAREWELL_TIMEOUT } else { Duration::from_secs(3600) };
        while Instant::now() < deadline {
            let r = agent
                .client
                .call(|c| {
                    let req = req.clone();
                    async move { ExecutorServiceClient::new(c).report_task(req).await }
                })
                .await;
            match r {
                Ok(resp) => {
                    m.reports
                        .with_label_values(&[if resp.kill { "stale" } else { "accepted" }])
                        .inc();
                    if resp.kill {
                        agent.stop_in_background(ev.token, "stale_report", STOP_GRACE);
                    }
                    break;
                }
                Err(e)
                    if e.code() == tonic::Code::InvalidArgument
                        || e.code() == tonic::Code::NotFound =>
                {
                    m.reports.with_label_values(&["refused"]).inc();
                    tracing::warn!(token = ev.token, error = %e, "report refused for good");
                    break;
                }
                Err(e) => {
                    m.reports.with_label_values(&["retry"]).inc();
                    tracing::debug!(token = ev.token, error = %e, "report failed; retrying")
                }
            }
        }
        if matches!(ev.kind, EventKind::Finished { .. }) {
            agent.runner.forget(ev.token);
        }
    }
}
