//! openraft glue: the type configuration, the wire codec, the tonic network between masters, the
//! server side of the Raft RPCs and the election timer.
//!
//! Invariants: every outgoing Raft RPC has a deadline (openraft's TTL for the call); a channel per
//! peer is cached and rebuilt only when the peer's address changes; payloads are versioned binary.

pub mod codec;
pub mod election;
pub mod network;
pub mod service;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Command, Outcome, Rejection};

/// What a Raft log entry carries: a batch of commands applied in order (a batch lets the leader
/// commit many client requests with one append, one flush and one replication round).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub commands: Vec<Command>,
}

/// Most bytes one command may take encoded: a command beyond it is refused before it is
/// proposed. The API's bounds keep every valid command far below (a job spec's text is at most
/// 1 MiB, `state::limits::MAX_SPEC_BYTES`).
pub const MAX_COMMAND_BYTES: usize = 4 << 20;

/// Most bytes of commands one entry (one group-commit batch) carries: the batcher closes a
/// batch when the next command would take it past this. Well under the RPC limit
/// ([`crate::api::MAX_MESSAGE_BYTES`], 64 MiB), so an append always carries at least one entry.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// The largest encoded AppendEntries sent to a peer: the RPC limit less room for the gRPC
/// message's own framing. Beyond it openraft is told to send fewer entries.
pub const MAX_APPEND_BYTES: usize = crate::api::MAX_MESSAGE_BYTES - (64 << 10);

/// What applying an entry produced: one result per command, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<Result<Outcome, Rejection>>,
}

openraft::declare_raft_types!(
    /// triad's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;
