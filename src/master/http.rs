//! The master's HTTP endpoints: `GET /metrics` (Prometheus text) and `GET /status` (JSON, the
//! same facts as `triad cluster status`), public; and on the same port the HTTP/JSON API under
//! `/v1/` ([`super::rest`]) and the dashboard under `/ui/` ([`super::ui`]), which a secure master
//! serves over HTTPS only ([`super::https`]).
//!
//! Neither walks the state: the gauges of jobs, tasks and executors by state come from the
//! state's tally, kept as the state changes, and the status reads counts only.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use openraft::ServerState;

use super::cluster::gather_status;
use super::https::{ConnInfo, Incoming, Transport};
use super::node::Node;
use crate::api::convert::{executor_state_name, job_state_name, task_state_name};
use crate::metrics::Gauges;
use crate::raft::{NodeId, RaftMetrics};
use crate::shutdown::Shutdown;
use crate::state::{ExecutorState, JobState, Tally, TaskState};

pub async fn serve(
    node: Arc<Node>,
    api: Arc<super::rest::Api>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let public = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(node);
    let mut private = super::rest::router(api).merge(super::ui::router());
    if tls.is_some() {
        private = private.layer(axum::middleware::from_fn(https_only));
    }
    let app = public.merge(private);
    let incoming = Incoming::start(listener, tls, shutdown.clone())?;
    axum::serve(incoming, app.into_make_service_with_connect_info::<ConnInfo>())
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

/// On a secure master, the API and the dashboard answer over HTTPS only: a token sent over
/// plain HTTP would travel in the clear.
async fn https_only(
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if conn.transport == Transport::Plain {
        return super::rest::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "this master serves its API and dashboard over HTTPS only (plain HTTP serves /metrics and /status)",
        )
        .into_response();
    }
    next.run(req).await
}

async fn status(State(node): State<Arc<Node>>) -> impl IntoResponse {
    Json(gather_status(&node).await)
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let gauges = &crate::metrics::get().gauges;
    set_raft_gauges(gauges, node.id, &node.metrics());
    // Sixteen numbers, kept as the state changes: light, so read here when the lock is free and
    // off the async workers when an apply holds it (the store's rule for reads of the state).
    let tally = crate::store::with_read(&node.applied, true, |a| a.state.tally().clone());
    set_state_gauges(gauges, &tally);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::get().encode())
}

/// Sets the Raft gauges from `r`, the Raft metrics of node `id`.
fn set_raft_gauges(g: &Gauges, id: NodeId, r: &RaftMetrics) {
    let last_log = r.last_log_index.unwrap_or(0);
    let applied = r.last_applied.map_or(0, |l| l.index);
    let set = |field: &str, v: u64| g.raft.with_label_values(&[field]).set(v as i64);
    set("term", r.current_term);
    set("last_log_index", last_log);
    set("applied_index", applied);
    set("snapshot_index", r.snapshot.map_or(0, |l| l.index));
    set("purged_index", r.purged.map_or(0, |l| l.index));
    set("leader_id", r.current_leader.unwrap_or(0));
    g.is_leader.set((r.state == ServerState::Leader) as i64);
    // Committed: on the leader, the highest index a quorum of voters holds; elsewhere at least the
    // applied index (followers learn the commit index only from the leader).
    let mut committed = applied;
    g.replication_lag.reset();
    if let Some(repl) = &r.replication {
        let matched = |v: &u64| repl.get(v).copied().flatten().map_or(0, |l| l.index);
        let voters = r.membership_config.membership().voter_ids();
        let held = voters.map(|v| if v == id { last_log } else { matched(&v) }).collect();
        if let Some(c) = quorum_index(held) {
            committed = committed.max(c);
        }
        for (follower, l) in repl.iter().filter(|(f, _)| **f != id) {
            let lag = last_log.saturating_sub(l.map_or(0, |l| l.index));
            g.replication_lag.with_label_values(&[&follower.to_string()]).set(lag as i64);
        }
    }
    set("committed_index", committed);
}

/// The highest log index a majority holds, given the index each voter holds (none without
/// voters).
fn quorum_index(mut held: Vec<u64>) -> Option<u64> {
    held.sort_unstable_by(|a, b| b.cmp(a));
    held.get(held.len() / 2).copied()
}

/// Sets the jobs, tasks and executors gauges (every state, zeros included) from the tally.
fn set_state_gauges(g: &Gauges, tally: &Tally) {
    for s in JobState::ALL {
        g.jobs.with_label_values(&[job_state_name(s)]).set(tally.jobs(s) as i64);
    }
    for s in TaskState::ALL {
        g.tasks.with_label_values(&[task_state_name(s)]).set(tally.tasks(s) as i64);
    }
    for s in ExecutorState::ALL {
        g.executors.with_label_values(&[executor_state_name(s)]).set(tally.executors(s) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::quorum_index;

    #[test]
    fn the_quorum_index_is_what_a_majority_holds() {
        assert_eq!(quorum_index(vec![]), None);
        assert_eq!(quorum_index(vec![7]), Some(7));
        assert_eq!(quorum_index(vec![5, 9, 7]), Some(7));
        assert_eq!(quorum_index(vec![9, 0, 0]), Some(0));
        assert_eq!(quorum_index(vec![3, 9, 8, 1]), Some(3)); // 3 of 4 hold 3
    }
}
