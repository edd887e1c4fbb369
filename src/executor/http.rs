//! The executor's observability endpoints: `GET /metrics` (Prometheus text, prefix
//! `triad_executor_`) and `GET /status` (JSON), plus the gRPC health tracker for the worker API
//! (SERVING only while registered, not self-fenced, not draining and with room in the work dir:
//! the state in which the leader may place work here).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::Agent;
use crate::api::pb::worker_service_server::WorkerServiceServer;
use crate::shutdown::Shutdown;

/// How often the health tracker re-evaluates (fencing sets in without any event).
const HEALTH_TICK: Duration = Duration::from_millis(200);

pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(agent);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await
}

/// What `GET /status` returns.
#[derive(Serialize)]
pub struct Status {
    pub id: String,
    pub addr: String,
    pub epoch: u64,
    pub registered: bool,
    pub fenced: bool,
    pub draining: bool,
    pub healthy: bool,
    /// Why the executor takes no new work although registered and not fenced (e.g. "work dir
    /// /x: no space left on device"); absent when there is no such problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    pub since_ack_ms: u64,
    pub ttl_ms: u64,
    pub heartbeat_ms: u64,
    pub slots: u32,
    pub masters: Vec<String>,
    pub attempts: Vec<RunningAttempt>,
}

/// An attempt as `/status` shows it: without its fencing token, which is what stopping it
/// (`StopAttempt`) or reporting on it takes.
#[derive(Serialize)]
pub struct RunningAttempt {
    pub job_id: String,
    pub task_index: u32,
    pub attempt: u32,
    pub pid: Option<u32>,
}

impl Agent {
    /// The state the leader may place work in: registered, not fenced, not draining, and a
    /// work dir with room.
    pub fn is_healthy(&self) -> bool {
        self.epoch.load(Ordering::SeqCst) > 0
            && !self.is_fenced()
            && !self.draining.load(Ordering::SeqCst)
            && self.runner.disk().problem().is_none()
    }

    pub fn status(&self) -> Status {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let attempts = self
            .runner
            .live_tokens()
            .into_iter()
            .filter_map(|t| self.runner.get(t))
            .map(|a| RunningAttempt {
                job_id: a.job_id,
                task_index: a.task_index,
                attempt: a.attempt,
                pid: a.pid,
            })
            .collect();
        Status {
            id: self.id.clone(),
            addr: self.addr.clone(),
            epoch,
            registered: epoch > 0,
            fenced: self.is_fenced(),
            draining: self.draining.load(Ordering::SeqCst),
            healthy: self.is_healthy(),
            unhealthy: self.runner.disk().problem(),
            since_ack_ms: self.since_ack().as_millis() as u64,
            ttl_ms: self.ttl().as_millis() as u64,
            heartbeat_ms: self.heartbeat_interval().as_millis() as u64,
            slots: self.cfg.slots,
            masters: self.cfg.masters.clone(),
            attempts,
        }
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    Json(agent.status())
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    let m = crate::metrics::executor();
    m.attempts_running.set(agent.runner.live_tokens().len() as i64);
    m.epoch.set(agent.epoch.load(Ordering::SeqCst) as i64);
    m.fenced.set(agent.is_fenced() as i64);
    m.draining.set(agent.draining.load(Ordering::SeqCst) as i64);
    m.slots.set(agent.cfg.slots as i64);
    m.since_ack_seconds.set(agent.since_ack().as_secs_f64());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.encode())
}

/// Keeps the worker API's gRPC health in step with [`Agent::is_healthy`] until shutdown.
pub async fn track_health(agent: Arc<Agent>, reporter: HealthReporter, mut shutdown: Shutdown) {
    let mut last = None;
    let mut tick = tokio::time::interval(HEALTH_TICK);
    loop {
        let healthy = agent.is_healthy();
        if last != Some(healthy) {
            let status = if healthy { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(<WorkerServiceServer<super::worker::Worker> as tonic::server::NamedService>::NAME, status)
                .await;
            last = Some(healthy);
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
    }
}
