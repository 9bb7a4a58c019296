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
