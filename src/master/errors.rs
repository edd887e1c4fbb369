//! How a leader-side handler fails: leadership moved (route again) or a status for the caller;
//! and how failed Raft writes map onto that. Shared by the routing in `node` and group commit in
//! `batcher`, which therefore do not import each other both ways.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tonic::Status;

use crate::raft::NodeId;

/// Why a leader-side handler could not finish here.
pub enum LocalError {
    /// Leadership moved (or was never here): route again.
    NotLeader,
    Status(Status),
}

impl From<Status> for LocalError {
    fn from(s: Status) -> Self {
        LocalError::Status(s)
    }
}

/// How a failed Raft write reaches the caller.
pub fn map_write_error(
    e: &RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> LocalError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => LocalError::NotLeader,
        RaftError::APIError(e) => LocalError::Status(Status::failed_precondition(e.to_string())),
        RaftError::Fatal(e) => {
            LocalError::Status(Status::unavailable(format!("raft stopped: {e}")))
        }
    }
}

/// A write not committed within the bound: the outcome is unknown.
pub fn commit_timeout(id: NodeId, bound: Duration) -> LocalError {
    LocalError::Status(Status::unavailable(format!(
        "master {id} could not commit within {} ms (no quorum reachable?); the outcome is unknown, retry with the same idempotency key",
        bound.as_millis()
    )))
}
