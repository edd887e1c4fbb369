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
    /// The snapshot being received: see [`check_chunk`].
    receiving: std::sync::Mutex<Option<Receiving>>,
}

impl RaftServer {
    pub fn new(raft: Raft, election: Election) -> RaftServer {
        RaftServer { raft, election, receiving: std::sync::Mutex::new(None) }
    }
}

/// A snapshot some of whose chunks this master has taken: its id and how many bytes it has.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Receiving {
    id: String,
    next: u64,
}

/// Judges a snapshot chunk of `len` bytes at `offset` of snapshot `id`, given what has been
/// received: openraft writes a chunk at its offset in an in-memory buffer, so an offset past the
/// bytes received would make it allocate up to that offset, zeros included. Refused
/// (`INVALID_ARGUMENT`): a chunk ending past [`codec::SNAPSHOT_LIMIT`], and one of the snapshot
/// being received that starts past its end (a gap). A chunk of another snapshot not at offset 0
/// is openraft's to refuse (it asks the leader to start over). Returns what has been received
/// once the chunk is taken.
fn check_chunk(
    receiving: Option<&Receiving>,
    id: &str,
    offset: u64,
    len: usize,
) -> Result<Receiving, Status> {
    let end = offset.checked_add(len as u64).filter(|e| *e <= codec::SNAPSHOT_LIMIT);
    let Some(end) = end else {
        return Err(Status::invalid_argument(format!(
            "snapshot chunk at offset {offset} of {len} bytes ends past the snapshot limit {}",
            codec::SNAPSHOT_LIMIT
        )));
    };
    match receiving.filter(|r| r.id == id && offset != 0) {
        Some(r) if offset > r.next => Err(Status::invalid_argument(format!(
            "snapshot {id} chunk at offset {offset} leaves a gap: {} bytes received",
            r.next
        ))),
        Some(r) => Ok(Receiving { id: id.to_string(), next: r.next.max(end) }),
        None => Ok(Receiving { id: id.to_string(), next: end }),
    }
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
        let taken = {
            let receiving = self.receiving.lock().expect("poisoned");
            check_chunk(receiving.as_ref(), &req.meta.snapshot_id, req.offset, req.data.len())?
        };
        self.heard_from(&req.vote);
        let done = req.done;
        let r = self.raft.install_snapshot(req).await;
        if r.is_ok() {
            *self.receiving.lock().expect("poisoned") = (!done).then_some(taken);
        }
        encode(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_past_the_limit_or_leaving_a_gap_are_refused() {
        let at = |id: &str, next| Receiving { id: id.into(), next };
        let invalid = |r: Result<Receiving, Status>| r.unwrap_err().code();
        assert_eq!(check_chunk(None, "s1", 0, 10).unwrap(), at("s1", 10));
        let s1 = at("s1", 10);
        assert_eq!(check_chunk(Some(&s1), "s1", 10, 5).unwrap(), at("s1", 15));
        assert_eq!(check_chunk(Some(&s1), "s1", 4, 3).unwrap(), at("s1", 10), "a resent chunk");
        assert_eq!(check_chunk(Some(&s1), "s2", 0, 7).unwrap(), at("s2", 7), "a new snapshot");
        assert_eq!(invalid(check_chunk(Some(&s1), "s1", 11, 5)), tonic::Code::InvalidArgument);
        let limit = codec::SNAPSHOT_LIMIT;
        for (offset, len) in [(limit, 1), (u64::MAX, 1), (limit - 3, 4), (1 << 62, 0)] {
            assert_eq!(invalid(check_chunk(None, "s1", offset, len)), tonic::Code::InvalidArgument);
            assert!(check_chunk(Some(&at("s1", u64::MAX)), "s1", offset, len).is_err());
        }
        assert_eq!(check_chunk(None, "s1", limit - 4, 4).unwrap(), at("s1", limit));
        // Not the snapshot being received and not at 0: openraft refuses it (start over).
        assert!(check_chunk(Some(&s1), "s2", 50, 5).is_ok());
    }

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
