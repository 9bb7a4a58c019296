//! The binary codec for Raft messages on the wire and log entries on disk.
//!
//! postcard is compact and fast, and openraft's serde types avoid the self-describing
//! features (`deserialize_any`) it cannot decode.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a value; encoding a plain serde struct into a `Vec` cannot fail except on a bug.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    postcard::to_stdvec(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decodes a value; a peer's bad bytes become an `InvalidData` error, not a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The format version of records stored on disk (station state and journal, log entries).
/// Bump it when a stored type changes shape, and teach the reader of that type to read the
/// old one ([`decode_stored_or_legacy`]), so that a release reads the data dirs of the
/// release before it.
///
/// Version 2: the cluster map records shard moves with their phases and a move queue, and
/// its settings gained the move settings. Every other record reads the same in 1 and 2.
pub const STORED_VERSION: u8 = 2;

/// The oldest version [`decode_stored`] reads.
const OLDEST_VERSION: u8 = 1;

/// Encodes a record for disk: one version byte, then the postcard encoding.
pub fn encode_stored<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    let mut out = vec![STORED_VERSION];
    out.extend(encode(value)?);
    Ok(out)
}

/// Decodes a record written by [`encode_stored`]; a record of an unknown version is an
/// `InvalidData` error naming both versions, not a garbled decode.
/// For a type whose shape did not change between the versions it reads.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    let (_, rest) = split_version(bytes)?;
    decode(rest)
}

/// Decodes a record of a type that changed shape in the current version: an older record is
/// decoded as `L`, the type's previous shape, and converted.
pub fn decode_stored_or_legacy<T: DeserializeOwned, L: DeserializeOwned + Into<T>>(
    bytes: &[u8],
) -> Result<T, std::io::Error> {
    match split_version(bytes)? {
        (STORED_VERSION, rest) => decode(rest),
        (_, rest) => Ok(decode::<L>(rest)?.into()),
    }
}

fn split_version(bytes: &[u8]) -> Result<(u8, &[u8]), std::io::Error> {
    match bytes.split_first() {
        Some((&v, rest)) if (OLDEST_VERSION..=STORED_VERSION).contains(&v) => Ok((v, rest)),
        Some((v, _)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "stored record has format version {v}; this radiantd reads versions {OLDEST_VERSION} to {STORED_VERSION}"
            ),
        )),
        None => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "empty stored record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_records_carry_their_format_version() {
        let bytes = encode_stored(&(7u32, "x".to_string())).unwrap();
        assert_eq!(bytes[0], STORED_VERSION);
        assert_eq!(decode_stored::<(u32, String)>(&bytes).unwrap(), (7, "x".to_string()));
        let mut future = bytes.clone();
        future[0] = STORED_VERSION + 1;
        let e = decode_stored::<(u32, String)>(&future).unwrap_err().to_string();
        assert!(e.contains("format version 3"), "{e}");
        let mut old = bytes.clone();
        old[0] = 1;
        assert_eq!(decode_stored::<(u32, String)>(&old).unwrap(), (7, "x".to_string()));
        assert!(decode_stored::<u32>(&[]).is_err());
    }
}
