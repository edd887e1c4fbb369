//! The one binary encoding of everything triad persists or sends between masters: Raft log
//! entries, votes, snapshots and Raft RPC payloads. A leading version byte lets the format evolve.

use serde::{de::DeserializeOwned, Serialize};

const VERSION: u8 = 1;

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
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    bincode::serialize_into(&mut out, value).map_err(CodecError::Encode)?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&VERSION, rest)) => bincode::deserialize(rest).map_err(CodecError::Decode),
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
}
