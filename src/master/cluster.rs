//! ClusterService: each master's own status, the whole cluster's status as seen from here, and
//! runtime membership changes (learner first, then voter; never below one voter).

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::{BasicNode, ServerState};
use tonic::{Request, Response, Status};

use super::node::{Caller, LocalError, Node};
use crate::api::pb;
use crate::api::pb::cluster_service_client::ClusterServiceClient;
use crate::api::pb::cluster_service_server::ClusterService;
use crate::api::validate::Validate;

/// Deadline for asking a peer for its status.
use crate::timings::PEER_STATUS_TIMEOUT;

#[derive(Clone)]
pub struct Cluster {
    pub node: Arc<Node>,
}

/// A hash of the encoded state: replicas that applied the same commands agree on it.
fn digest(state: &crate::state::State) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    crate::raft::codec::encode(state).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn role_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl Cluster {
    /// This master's own status, from its Raft metrics and applied state.
    pub fn local_status(node: &Node, with_digest: bool) -> pb::MasterStatus {
        let m = node.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        // The job count is O(1); the digest encodes the whole state, so it is taken off the
        // async workers (the store's rule for reads that walk the state).
        let (jobs, state_digest) = crate::store::with_read(&node.applied, !with_digest, |a| {
            let digest = if with_digest { digest(&a.state) } else { 0 };
            (a.state.job_count() as u64, digest)
        });
        pb::MasterStatus {
            id: node.id,
            addr: node.addr.clone(),
            role: role_name(m.state).to_string(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            leader_id: m.current_leader.unwrap_or(0),
            reachable: true,
            error: String::new(),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            jobs,
            voters,
            learners,
            state_digest,
            pid: std::process::id(),
            acknowledged_by: m
                .replication
                .iter()
                .flatten()
                .filter(|(id, matched)| matched.is_some() && **id != node.id)
                .map(|(id, _)| *id)
                .collect(),
            cluster_id: node.cluster_id.clone(),
        }
    }
}

/// Every member's status as seen from `node` (its own directly, the others over gRPC with a
/// deadline), and the leader: the reachable master that says it leads in the highest term.
pub async fn gather_status(node: &Node) -> pb::ClusterStatusResponse {
    let m = node.metrics();
    let members: Vec<(u64, String)> =
        m.membership_config.membership().nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
    let futs = members.into_iter().map(|(id, addr)| async move {
        if id == node.id {
            Cluster::local_status(node, false)
        } else {
            peer_status(node, id, addr).await
        }
    });
    let masters: Vec<pb::MasterStatus> = futures::future::join_all(futs).await;
    let leader =
        masters.iter().filter(|s| s.reachable && s.role == "leader").max_by_key(|s| s.term);
    let (leader_id, leader_addr) = leader.map(|l| (l.id, l.addr.clone())).unwrap_or_default();
    pb::ClusterStatusResponse { masters, leader_id, leader_addr }
}

async fn peer_status(node: &Node, id: u64, addr: String) -> pb::MasterStatus {
    let unreachable = |error: String| pb::MasterStatus {
        id,
        addr: addr.clone(),
        role: "unreachable".into(),
        reachable: false,
        error,
        ..Default::default()
    };
    let chan = match node.channels.get(&addr) {
        Ok(c) => c,
        Err(e) => return unreachable(e.to_string()),
    };
    let mut req = Request::new(pb::NodeStatusRequest { with_digest: false });
    req.set_timeout(PEER_STATUS_TIMEOUT);
    match tokio::time::timeout(
        PEER_STATUS_TIMEOUT,
        ClusterServiceClient::new(chan).node_status(req),
    )
    .await
    {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => unreachable(s.message().to_string()),
        Err(_) => unreachable("timed out".into()),
    }
}

impl Cluster {
    async fn change_membership_local(
        &self,
        add: Option<(u64, String)>,
        remove: Option<u64>,
    ) -> Result<pb::MembershipResponse, LocalError> {
        let m = self.node.metrics();
        let membership = m.membership_config.membership().clone();
        let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
        let raft_err = |e: String| LocalError::Status(Status::failed_precondition(e));
        if let Some((id, addr)) = add {
            if voters.contains(&id) {
                return Err(
                    Status::already_exists(format!("master {id} is already a voter")).into()
                );
            }
            // Learner first: it catches up (blocking) before it can count towards a quorum.
            self.node.raft.add_learner(id, BasicNode { addr }, true).await.map_err(|e| {
                if e.forward_to_leader().is_some() {
                    LocalError::NotLeader
                } else {
                    raft_err(e.to_string())
                }
            })?;
            voters.insert(id);
        }
        if let Some(id) = remove {
            if !voters.contains(&id) && !membership.learner_ids().any(|l| l == id) {
                return Err(Status::not_found(format!("master {id} is not a member")).into());
            }
            voters.remove(&id);
            if voters.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "refusing to remove master {id}: it is the last voter"
                ))
                .into());
            }
        }
        let r = self.node.raft.change_membership(voters, false).await.map_err(|e| {
            if e.forward_to_leader().is_some() {
                LocalError::NotLeader
            } else {
                raft_err(e.to_string())
            }
        })?;
        let mem = r.membership.unwrap_or(membership);
        Ok(pb::MembershipResponse {
            voters: mem.voter_ids().collect(),
            learners: mem.learner_ids().collect(),
        })
    }
}

#[tonic::async_trait]
impl ClusterService for Cluster {
    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        req.get_ref().validate()?;
        // A master that belongs to no cluster yet (started without bootstrap, not added yet: a
        // replacement being set up) knows of no other master: its view would read as a cluster
        // without masters. UNAVAILABLE sends the client to the next master instead.
        if self.node.metrics().membership_config.membership().voter_ids().next().is_none() {
            return Err(Status::unavailable(format!(
                "master {} is not a member of a cluster yet (not bootstrapped, not added with `triad cluster add-master`)",
                self.node.id
            )));
        }
        Ok(Response::new(gather_status(&self.node).await))
    }

    async fn node_status(
        &self,
        req: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::MasterStatus>, Status> {
        req.get_ref().validate()?;
        Ok(Response::new(Self::local_status(&self.node, req.get_ref().with_digest)))
    }

    async fn add_master(
        &self,
        req: Request<pb::AddMasterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                || self.change_membership_local(Some((msg.id, msg.addr.clone())), None),
                |c, m| async move { ClusterServiceClient::new(c).add_master(m).await },
            )
            .await
    }

    async fn remove_master(
        &self,
        req: Request<pb::RemoveMasterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                || self.change_membership_local(None, Some(msg.id)),
                |c, m| async move { ClusterServiceClient::new(c).remove_master(m).await },
            )
            .await
    }
}
