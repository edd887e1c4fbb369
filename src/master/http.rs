//! The master's HTTP endpoints: `GET /metrics` (Prometheus text) and `GET /status` (JSON, the
//! same facts as `triad cluster status`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use openraft::ServerState;

use super::cluster::gather_status;
use super::node::Node;
use crate::shutdown::Shutdown;
use crate::state::{ExecutorState, JobState, TaskState};

pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(node);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await
}

async fn status(State(node): State<Arc<Node>>) -> impl IntoResponse {
    Json(gather_status(&node).await)
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    refresh_gauges(&node);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::get().encode())
}

/// Sets the gauges from the node's Raft metrics and its applied state.
fn refresh_gauges(node: &Node) {
    let m = crate::metrics::get();
    let r = node.metrics();
    let last_log = r.last_log_index.unwrap_or(0);
    let applied = r.last_applied.map_or(0, |l| l.index);
    let set = |field: &str, v: u64| m.raft.with_label_values(&[field]).set(v as i64);
    set("term", r.current_term);
    set("last_log_index", last_log);
    set("applied_index", applied);
    set("snapshot_index", r.snapshot.map_or(0, |l| l.index));
    set("purged_index", r.purged.map_or(0, |l| l.index));
    set("leader_id", r.current_leader.unwrap_or(0));
    m.is_leader.set((r.state == ServerState::Leader) as i64);
    // Committed: on the leader, the highest index a quorum of voters holds; elsewhere at least the
    // applied index (followers learn the commit index only from the leader).
    let mut committed = applied;
    m.replication_lag.reset();
    if let Some(repl) = &r.replication {
        let voters: Vec<u64> = r.membership_config.membership().voter_ids().collect();
        let mut matched: Vec<u64> = voters
            .iter()
            .map(|v| {
                if *v == node.id {
                    last_log
                } else {
                    repl.get(v).copied().flatten().map_or(0, |l| l.index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(c) = matched.get(voters.len() / 2) {
            committed = committed.max(*c);
        }
        for (id, l) in repl.iter().filter(|(id, _)| **id != node.id) {
            let lag = last_log.saturating_sub(l.map_or(0, |l| l.index));
            m.replication_lag.with_label_values(&[&id.to_string()]).set(lag as i64);
        }
    }
    set("committed_index", committed);

    let applied = node.applied.read().expect("poisoned");
    let state = &applied.state;
    let mut jobs = [0i64; 5];
    let mut tasks = [0i64; 7];
    let (all, _) = state.jobs_page(None, None, usize::MAX);
    for j in all {
        jobs[j.state as usize] += 1;
        for t in &j.tasks {
            tasks[t.state as usize] += 1;
        }
    }
    for s in [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ] {
        m.jobs.with_label_values(&[crate::api::convert::job_state_name(s)]).set(jobs[s as usize]);
    }
    for s in [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Lost,
        TaskState::Cancelled,
    ] {
        m.tasks
            .with_label_values(&[crate::api::convert::task_state_name(s)])
            .set(tasks[s as usize]);
    }
    let mut execs = [0i64; 4];
    for e in state.executors() {
        execs[e.state as usize] += 1;
    }
    for s in
        [ExecutorState::Alive, ExecutorState::Draining, ExecutorState::Left, ExecutorState::Dead]
    {
        m.executors
            .with_label_values(&[crate::api::convert::executor_state_name(s)])
            .set(execs[s as usize]);
    }
}
