//! Server side of Raft between masters: decode, hand to openraft, encode its result, and tell
//! the election timer when a leader (or a candidate this master voted for) was heard.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::election::Election;
use super::{codec, Raft};
use crate::api::pb::raft_service_server::RaftService;
use crate::api::pb::RaftPayload;

pub struct RaftServer {
    pub raft: Raft,
    pub election: Election,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data =
        codec::encode(value).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

impl RaftServer {
    /// A leader's message counts as heard on arrival, before its entries are flushed: the
    /// election timer tracks the leader's liveness, not this master's disk.
    fn heard_from(&self, sender: &openraft::Vote<super::NodeId>) {
        let current = self.raft.metrics().borrow().vote;
        if sender.is_committed() && *sender >= current {
            self.election.heard();
        }
    }
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.vote(decode(req)?).await;
        if r.as_ref().is_ok_and(|v| v.vote_granted) {
            self.election.heard();
        }
        encode(&r)
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: openraft::raft::AppendEntriesRequest<super::TypeConfig> = decode(req)?;
        self.heard_from(&req.vote);
        let r = self.raft.append_entries(req).await;
        // And again once it is written: a slow flush here is no silence of the leader's.
        if r.as_ref()
            .is_ok_and(|a| !matches!(a, openraft::raft::AppendEntriesResponse::HigherVote(_)))
        {
            self.election.heard();
        }
        encode(&r)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: openraft::raft::InstallSnapshotRequest<super::TypeConfig> = decode(req)?;
        self.heard_from(&req.vote);
        let r = self.raft.install_snapshot(req).await;
        encode(&r)
    }
}
