//! The one binary encoding of everything triad persists or sends between masters: Raft log
//! entries, votes, snapshots and Raft RPC payloads. A leading version byte lets the format evolve:
//! 1 is bincode; 2 is bincode in an LZ4 frame, for snapshots (a state of 10^6 jobs is highly
//! repetitive: compressed, far less to write to disk, hold in memory and send to a follower).
//! [`decode_limited`] reads either.
//!
//! Decoding is bounded: bincode allocates a length a payload declares before reading the bytes
//! behind it, so without a limit 90 hostile bytes declaring a 16 TiB string abort the process.
//! Every decode counts the bytes it reads against a limit, checked before anything is allocated
//! for them, so no declared length can make a master allocate more than that limit. The limit is
//! the caller's (one of the constants below) and never more than what the payload itself can
//! hold: its own length for version 1 (bincode can never need more bytes than it was given), its
//! length times LZ4's largest expansion for version 2.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

const VERSION: u8 = 1;
const VERSION_LZ4: u8 = 2;

/// The limit for Raft RPC payloads (requests on the server, replies on the client): tonic refuses
/// any message larger than this, so no valid payload decodes to more.
pub const RPC_LIMIT: u64 = crate::api::MAX_MESSAGE_BYTES as u64;

/// The limit for a snapshot's data (version 2, LZ4), however it arrived. LZ4 cannot expand a
/// frame more than [`LZ4_MAX_RATIO`] times, so a snapshot is already bounded by its compressed
/// size times that; this caps the product. 10^6 jobs take about 470 MB decoded: 64 GiB is over a
/// hundred times that, more than a master could hold in memory, so no state a master could have
/// built is refused, while a few hostile bytes can declare no more than 255 times themselves.
pub const SNAPSHOT_LIMIT: u64 = 64 << 30;

/// LZ4's largest expansion: a sequence of a token, a 2-byte offset and `k` length bytes copies
/// at most `19 + 255 k` bytes, so no frame decodes to more than 255 times its size.
const LZ4_MAX_RATIO: u64 = 255;

/// The bincode configuration `bincode::serialize` writes and `bincode::deserialize` reads
/// (little-endian, fixed-width integers, trailing bytes allowed), plus a byte limit. The on-disk
/// format depends on this matching exactly: see the `options_match_bincode_serialize` test.
fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().with_limit(limit)
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    Encode(bincode::Error),
    #[error("decode: {0}")]
    Decode(bincode::Error),
    #[error("unsupported encoding version {0}")]
    Version(u8),
    #[error("empty payload")]
    Empty,
    #[error("compress: {0}")]
    Compress(lz4_flex::frame::Error),
    #[error("compressed data is damaged: {0}")]
    Corrupt(std::io::Error),
    #[error("compressed data holds more than one value")]
    Trailing,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    bincode::serialize_into(&mut out, value).map_err(CodecError::Encode)?;
    Ok(out)
}

/// The length [`encode`] would give `value`, without encoding it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<u64, CodecError> {
    Ok(1 + options(u64::MAX).serialized_size(value).map_err(CodecError::Encode)?)
}

/// Like [`encode`], compressed as it is written: no uncompressed copy is ever held. The frame
/// carries a checksum of its content and of each block, so a damaged snapshot file (or transfer)
/// is an error when it is decoded, never a different state.
pub fn encode_compressed<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let info = lz4_flex::frame::FrameInfo::new().content_checksum(true).block_checksums(true);
    let mut frame = lz4_flex::frame::FrameEncoder::with_frame_info(info, vec![VERSION_LZ4]);
    bincode::serialize_into(&mut frame, value).map_err(CodecError::Encode)?;
    frame.finish().map_err(CodecError::Compress)
}

/// Decodes `bytes` reading at most `limit` bytes of bincode (and never more than the payload can
/// hold, see the module doc): a longer value, or a declared length past the limit, is an error
/// before anything is allocated for it.
pub fn decode_limited<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&VERSION, rest)) => {
            options(limit.min(rest.len() as u64)).deserialize(rest).map_err(CodecError::Decode)
        }
        Some((&VERSION_LZ4, rest)) => {
            let limit = limit.min((rest.len() as u64).saturating_mul(LZ4_MAX_RATIO));
            let mut frame = std::io::BufReader::with_capacity(
                1 << 16,
                lz4_flex::frame::FrameDecoder::new(rest),
            );
            let value = options(limit).deserialize_from(&mut frame).map_err(CodecError::Decode)?;
            // Read on to the frame's end, where the decoder checks the content checksum; and a
            // value must be all the frame holds.
            let mut past = [0u8; 1];
            match std::io::Read::read(&mut frame, &mut past) {
                Ok(0) => Ok(value),
                Ok(_) => Err(CodecError::Trailing),
                Err(e) => Err(CodecError::Corrupt(e)),
            }
        }
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

/// Decodes a value this master wrote to its own disk (a log entry, the vote, a pointer): bounded
/// by its own length, which is all a version-1 value can need; a snapshot's data goes through
/// [`decode_limited`] with [`SNAPSHOT_LIMIT`] instead.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_limited(bytes, bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::error::{InstallSnapshotError, RaftError};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, Vote};
    use proptest::prelude::*;

    use super::*;
    use crate::raft::{Entry, LogId, NodeId, SnapshotMeta, StoredMembership, TypeConfig};
    use crate::state::{Command, Resources};

    /// The test binary's allocator: the system's, noting per thread the largest single request,
    /// so a test can tell what a decode asked for (an abort would end the run; a large request
    /// that happens to succeed would otherwise go unseen).
    struct Tracking;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }

    // SAFETY: every method forwards its arguments unchanged to `System`, which upholds
    // `GlobalAlloc`'s contract; `note` only reads a size and never allocates or unwinds.
    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc(layout)
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc_zeroed(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static ALLOCATOR: Tracking = Tracking;

    /// Runs `f` and returns its result with the largest single allocation it made on this thread.
    fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|l| l.set(0));
        let r = f();
        (r, LARGEST.with(|l| l.get()))
    }

    type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
    type AppendReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
    type InstallReply =
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

    /// Decodes `bytes` as every type a master decodes from a peer (requests in `service.rs`,
    /// replies in `network.rs`, with their limit) and as a snapshot (with its own), and checks
    /// nothing asked for more memory than the limit allows. Returns how many decoded.
    fn decode_as_everything(bytes: &[u8]) -> usize {
        fn one<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> usize {
            let (r, largest) = largest_allocation(|| decode_limited::<T>(bytes, limit));
            assert!(
                largest as u64 <= limit.max(RPC_LIMIT),
                "decoding {} of {} bytes allocated {largest} bytes at once",
                std::any::type_name::<T>(),
                bytes.len()
            );
            r.is_ok() as usize
        }
        one::<VoteRequest<NodeId>>(bytes, RPC_LIMIT)
            + one::<AppendEntriesRequest<TypeConfig>>(bytes, RPC_LIMIT)
            + one::<InstallSnapshotRequest<TypeConfig>>(bytes, RPC_LIMIT)
            + one::<VoteReply>(bytes, RPC_LIMIT)
            + one::<AppendReply>(bytes, RPC_LIMIT)
            + one::<InstallReply>(bytes, RPC_LIMIT)
            + one::<Entry>(bytes, bytes.len() as u64)
            + one::<crate::store::Applied>(bytes, SNAPSHOT_LIMIT)
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn members() -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> =
            (1..=3).map(|i| (i, BasicNode { addr: format!("10.0.0.{i}:7000") })).collect();
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    /// A real AppendEntries as a leader sends it: a blank entry, a batch of commands, a
    /// membership change.
    fn append_request() -> AppendEntriesRequest<TypeConfig> {
        let register = Command::RegisterExecutor {
            id: "exec-1".into(),
            addr: "10.0.0.9:7100".into(),
            capacity: Resources { slots: 4, cpu_millis: 4000, memory_mib: 8192 },
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            now: 1_700_000_000_000,
        };
        let drain = Command::DrainExecutor { id: "exec-1".into(), now: 1_700_000_000_001 };
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 41)),
            entries: vec![
                Entry { log_id: log_id(3, 42), payload: EntryPayload::Blank },
                Entry {
                    log_id: log_id(3, 43),
                    payload: EntryPayload::Normal(crate::raft::Request {
                        commands: vec![register, drain],
                    }),
                },
                Entry { log_id: log_id(3, 44), payload: EntryPayload::Membership(members()) },
            ],
            leader_commit: Some(log_id(3, 42)),
        }
    }

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let v = vec![(1u64, "a".to_string())];
        let bytes = encode(&v).unwrap();
        assert_eq!(decode_stored::<Vec<(u64, String)>>(&bytes).unwrap(), v);
        assert_eq!(decode_limited::<Vec<(u64, String)>>(&bytes, RPC_LIMIT).unwrap(), v);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(decode_stored::<Vec<(u64, String)>>(&bad), Err(CodecError::Version(9))));
        assert!(matches!(decode_stored::<u64>(&[]), Err(CodecError::Empty)));
    }

    /// A snapshot file damaged anywhere (a flipped bit on the disk) is an error, never a
    /// different state: every byte position of a small frame, flipped in turn.
    #[test]
    fn any_flipped_byte_of_a_compressed_value_is_an_error() {
        let v: Vec<(u64, String)> = (0..200).map(|i| (i * 7919, format!("job {i}"))).collect();
        let packed = encode_compressed(&v).unwrap();
        for at in 1..packed.len() {
            let mut bad = packed.clone();
            bad[at] ^= 0x01;
            match decode_limited::<Vec<(u64, String)>>(&bad, SNAPSHOT_LIMIT) {
                Err(_) => {}
                Ok(back) => panic!("byte {at} flipped decoded (equal: {})", back == v),
            }
        }
    }

    #[test]
    fn compressed_round_trips_and_is_smaller_for_repetitive_values() {
        let v: Vec<(u64, String)> =
            (0..10_000).map(|i| (i, "the same job spec, again and again".to_string())).collect();
        let (plain, packed) = (encode(&v).unwrap(), encode_compressed(&v).unwrap());
        assert_eq!(decode_limited::<Vec<(u64, String)>>(&packed, SNAPSHOT_LIMIT).unwrap(), v);
        assert!(
            packed.len() * 4 < plain.len(),
            "{} bytes compressed, {} plain",
            packed.len(),
            plain.len()
        );
        let mut cut = packed.clone();
        cut.truncate(packed.len() / 2);
        assert!(
            decode_limited::<Vec<(u64, String)>>(&cut, SNAPSHOT_LIMIT).is_err(),
            "a truncated frame is an error, not a short value"
        );
    }

    /// The on-disk format must not change: the bounded options write exactly what
    /// `bincode::serialize` writes (so existing data dirs load), and read it back.
    #[test]
    fn options_match_bincode_serialize() {
        /// Equal values, compared by their plain encoding (openraft's messages have no `==`).
        fn same<T: Serialize + DeserializeOwned>(v: &T) {
            let plain = bincode::serialize(v).unwrap();
            let again = |back: T| assert_eq!(bincode::serialize(&back).unwrap(), plain);
            assert_eq!(options(u64::MAX).serialize(v).unwrap(), plain);
            again(options(plain.len() as u64).deserialize::<T>(&plain).unwrap());
            again(bincode::deserialize::<T>(&plain).unwrap());
            let mut ours = vec![VERSION];
            ours.extend_from_slice(&plain);
            assert_eq!(encode(v).unwrap(), ours);
            again(decode_stored::<T>(&ours).unwrap());
            again(decode_limited::<T>(&ours, RPC_LIMIT).unwrap());
            again(decode_limited::<T>(&encode_compressed(v).unwrap(), SNAPSHOT_LIMIT).unwrap());
        }
        same(&(u64::MAX, -1i32, 300u16, true, 'é', 1.5f64));
        same(&vec![Some("a".to_string()), None]);
        same(&BTreeMap::from([(7u64, vec![1u8, 2, 3])]));
        same(&append_request());
        same(&Vote::new(u64::MAX - 1, 3));
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(3, 44)),
            last_membership: StoredMembership::new(Some(log_id(3, 44)), members()),
            snapshot_id: "3-1-44".into(),
        };
        same(&InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta,
            offset: 0,
            data: vec![2, 0, 1],
            done: true,
        });
        // Trailing bytes were always allowed (bincode::deserialize allows them): still are.
        let mut trailing = encode(&5u64).unwrap();
        trailing.push(0xff);
        assert_eq!(decode_stored::<u64>(&trailing).unwrap(), 5);
    }

    /// Issue 13's 90-byte payload: version 2, an LZ4 frame whose bincode declares a 16 TiB
    /// string. Unbounded, bincode allocated the 16 TiB and the process aborted.
    #[test]
    fn a_compressed_payload_declaring_16_tib_is_an_error_not_an_abort() {
        let mut inner = (1u64 << 44).to_le_bytes().to_vec();
        inner.extend_from_slice(b"just a few bytes");
        let mut frame = lz4_flex::frame::FrameEncoder::new(vec![VERSION_LZ4]);
        std::io::Write::write_all(&mut frame, &inner).unwrap();
        let bytes = frame.finish().unwrap();
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        let (_, seen) = largest_allocation(|| std::hint::black_box(vec![1u8; 3 << 20]).len());
        assert!(seen >= 3 << 20, "the allocator sees what is allocated: {seen}");
        for limit in [RPC_LIMIT, SNAPSHOT_LIMIT, u64::MAX] {
            let (r, largest) = largest_allocation(|| decode_limited::<String>(&bytes, limit));
            assert!(matches!(r, Err(CodecError::Decode(_))), "{r:?}");
            assert!(largest < 16 << 20, "allocated {largest} bytes at once");
            let (r, _) = largest_allocation(|| decode_limited::<Vec<String>>(&bytes, limit));
            assert!(r.is_err());
        }
        assert_eq!(decode_as_everything(&bytes), 0);
    }

    #[test]
    fn a_plain_payload_declaring_a_huge_vec_is_an_error_not_an_abort() {
        for len in [1u64 << 44, 1 << 60, u64::MAX] {
            let mut bytes = vec![VERSION];
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&[7; 16]);
            for limit in [RPC_LIMIT, SNAPSHOT_LIMIT, u64::MAX] {
                let (r, largest) = largest_allocation(|| decode_limited::<Vec<u64>>(&bytes, limit));
                assert!(r.is_err(), "{r:?}");
                assert!(largest < 2 << 20, "allocated {largest} bytes at once");
                assert!(decode_limited::<Vec<u8>>(&bytes, limit).is_err());
                assert!(decode_limited::<String>(&bytes, limit).is_err());
            }
            assert_eq!(decode_as_everything(&bytes), 0);
        }
    }

    #[test]
    fn the_lz4_ratio_bound_refuses_what_the_frame_cannot_hold() {
        // 200 KB of zeros compress to under 1 KB; a limit below their size is an error.
        let v = vec![0u8; 200_000];
        let packed = encode_compressed(&v).unwrap();
        assert!(packed.len() < 2_000, "{}", packed.len());
        assert_eq!(decode_limited::<Vec<u8>>(&packed, SNAPSHOT_LIMIT).unwrap(), v);
        assert!(decode_limited::<Vec<u8>>(&packed, 100_000).is_err());
    }

    fn valid_encodings() -> Vec<Vec<u8>> {
        let append = append_request();
        vec![
            encode(&append).unwrap(),
            encode_compressed(&append).unwrap(),
            encode(&VoteRequest::<NodeId> {
                vote: Vote::new(4, 2),
                last_log_id: Some(log_id(3, 44)),
            })
            .unwrap(),
            encode::<AppendReply>(&Ok(AppendEntriesResponse::Success)).unwrap(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Arbitrary bytes (mostly behind a known version byte, so bincode and LZ4 see them):
        /// every decode returns, and none allocates past its limit.
        #[test]
        fn arbitrary_bytes_never_panic_or_allocate_past_the_limit(
            version in prop_oneof![Just(VERSION), Just(VERSION_LZ4), any::<u8>()],
            rest in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = vec![version];
            bytes.extend_from_slice(&rest);
            decode_as_everything(&bytes);
        }

        /// Valid encodings of real Raft messages with a few bytes changed (often a length) and
        /// perhaps cut short.
        #[test]
        fn mutated_raft_messages_never_panic_or_allocate_past_the_limit(
            which in 0..4usize,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            wide in proptest::option::of((any::<prop::sample::Index>(), any::<u64>())),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = valid_encodings().swap_remove(which);
            for (at, b) in edits {
                let i = 1 + at.index(bytes.len() - 1);
                bytes[i] = b;
            }
            if let Some((at, n)) = wide {
                // A whole u64 overwritten: where a length sits, it declares `n` items.
                let i = 1 + at.index(bytes.len().saturating_sub(9).max(1));
                let end = (i + 8).min(bytes.len());
                bytes[i..end].copy_from_slice(&n.to_le_bytes()[..end - i]);
            }
            if let Some(at) = cut {
                bytes.truncate(1 + at.index(bytes.len()));
            }
            decode_as_everything(&bytes);
        }
    }

    #[test]
    fn valid_encodings_decode_as_their_type() {
        let e = valid_encodings();
        let append = bincode::serialize(&append_request()).unwrap();
        for bytes in &e[..2] {
            let back: AppendEntriesRequest<TypeConfig> = decode_limited(bytes, RPC_LIMIT).unwrap();
            assert_eq!(bincode::serialize(&back).unwrap(), append);
        }
        assert!(decode_limited::<VoteRequest<NodeId>>(&e[2], RPC_LIMIT).is_ok());
        assert!(decode_limited::<AppendReply>(&e[3], RPC_LIMIT).unwrap().is_ok());
    }
}
