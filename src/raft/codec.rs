//! The one binary encoding of everything triad persists or sends between masters: Raft log
//! entries, votes, snapshots and Raft RPC payloads. A leading version byte lets the format evolve:
//! 1 is bincode; 2 is bincode in an LZ4 frame, for snapshots (a state of 10^6 jobs is highly
//! repetitive: compressed, far less to write to disk, hold in memory and send to a follower).
//! [`decode`] reads either.

use serde::{de::DeserializeOwned, Serialize};

const VERSION: u8 = 1;
const VERSION_LZ4: u8 = 2;

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
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    bincode::serialize_into(&mut out, value).map_err(CodecError::Encode)?;
    Ok(out)
}

/// Like [`encode`], compressed as it is written: no uncompressed copy is ever held.
pub fn encode_compressed<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut frame = lz4_flex::frame::FrameEncoder::new(vec![VERSION_LZ4]);
    bincode::serialize_into(&mut frame, value).map_err(CodecError::Encode)?;
    frame.finish().map_err(CodecError::Compress)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&VERSION, rest)) => bincode::deserialize(rest).map_err(CodecError::Decode),
        Some((&VERSION_LZ4, rest)) => {
            let frame = std::io::BufReader::with_capacity(
                1 << 16,
                lz4_flex::frame::FrameDecoder::new(rest),
            );
            bincode::deserialize_from(frame).map_err(CodecError::Decode)
        }
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let v = vec![(1u64, "a".to_string())];
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<Vec<(u64, String)>>(&bytes).unwrap(), v);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(decode::<Vec<(u64, String)>>(&bad), Err(CodecError::Version(9))));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn compressed_round_trips_and_is_smaller_for_repetitive_values() {
        let v: Vec<(u64, String)> =
            (0..10_000).map(|i| (i, "the same job spec, again and again".to_string())).collect();
        let (plain, packed) = (encode(&v).unwrap(), encode_compressed(&v).unwrap());
        assert_eq!(decode::<Vec<(u64, String)>>(&packed).unwrap(), v);
        assert!(
            packed.len() * 4 < plain.len(),
            "{} bytes compressed, {} plain",
            packed.len(),
            plain.len()
        );
        let mut cut = packed.clone();
        cut.truncate(packed.len() / 2);
        assert!(
            decode::<Vec<(u64, String)>>(&cut).is_err(),
            "a truncated frame is an error, not a short value"
        );
    }
}
