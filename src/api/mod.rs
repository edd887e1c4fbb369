//! The gRPC API (`proto/triad/v1/triad.proto`, package `triad.v1`) and the one place where wire
//! messages and the replicated model are converted into each other.

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("triad.v1");

    /// Encoded descriptors for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("triad_descriptor");
}

pub mod convert;

/// Largest gRPC message any triad endpoint accepts or sends (fits openraft batches and snapshot
/// chunks with room to spare).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Metadata key set on a request a master forwarded to the leader (forwarding is one hop only).
pub const FORWARDED_HEADER: &str = "x-triad-forwarded";
/// Response metadata a follower adds to a request it forwarded: the leader's address, so a client
/// can talk to the leader directly from then on (no forward hop in the steady state).
pub const LEADER_HEADER: &str = "x-triad-leader";
