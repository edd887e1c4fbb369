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
    codec::decode_limited(&req.into_inner().data, codec::RPC_LIMIT)
        .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

/// How far past this master's current term a peer's vote may be. Terms grow by one per election,
/// so no real peer is 2^32 elections ahead; a term that far out can only be crafted.
const MAX_TERM_LEAP: u64 = 1 << 32;

/// Refuses a vote whose term openraft cannot live with: it computes `term + 1` (and panics on
/// overflow at `u64::MAX`), and a vote is persisted, so such a term would panic this master again
/// on every restart. Also refuses a term absurdly far ahead of `current`, which would leave only
/// a few elections before the overflow.
fn check_term(term: u64, current: u64) -> Result<(), Status> {
    if term == u64::MAX || term > current.saturating_add(MAX_TERM_LEAP) {
        return Err(Status::invalid_argument(format!(
            "raft term {term} refused: this master is at term {current}"
        )));
    }
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data =
        codec::encode(value).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

impl RaftServer {
    fn check_vote(&self, vote: &openraft::Vote<super::NodeId>) -> Result<(), Status> {
        let current = self.raft.metrics().borrow().current_term;
        check_term(vote.leader_id.term, current)
    }

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
        let req: openraft::raft::VoteRequest<super::NodeId> = decode(req)?;
        self.check_vote(&req.vote)?;
        let r = self.raft.vote(req).await;
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
        self.check_vote(&req.vote)?;
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
        self.check_vote(&req.vote)?;
        self.heard_from(&req.vote);
        let r = self.raft.install_snapshot(req).await;
        encode(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_openraft_cannot_take_are_refused() {
        for current in [0, 1, 7, 1 << 40, u64::MAX - 2] {
            assert!(check_term(current, current).is_ok());
            assert!(check_term(current + 1, current).is_ok());
            assert!(check_term(0, current).is_ok(), "a stale term is openraft's to answer");
            let refused = check_term(u64::MAX, current).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        }
        assert!(check_term(5 + MAX_TERM_LEAP, 5).is_ok());
        assert_eq!(
            check_term(6 + MAX_TERM_LEAP, 5).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(check_term(u64::MAX - 1, u64::MAX - 1).is_ok());
        assert!(check_term(u64::MAX, u64::MAX - 1).is_err(), "the next election would overflow");
    }
}
