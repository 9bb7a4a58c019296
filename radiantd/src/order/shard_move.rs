//! What an order's log records of a shard move, on both sides of it.
//!
//! A move copies one shard from a source order to a destination order while the source keeps
//! serving it (see the README's "Shard moves"). The source *tracks* the shard: from its
//! `Track` entry on, every write to the shard also records the key and the log index in a
//! dirty table, so the destination can pull what changed since its last read. The destination
//! *ingests* rows into the shard's table while it does not own the shard (nothing is served
//! from there), then *seals* them against the digest the source reported once frozen. Every
//! step is a log entry on its side, so each survives a herald's death, and each is fenced by
//! the move id (the map epoch the move began at): a command of another move changes nothing.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;
use serde_bytes::ByteBuf;

/// Key count, key and value bytes, and an order-independent checksum of one shard's rows.
/// Both sides keep it up to date on every write, so the frozen source's digest costs nothing
/// to read and a lost or doubled row on the destination shows as a mismatch at `Seal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    /// Keys.
    pub keys: u64,
    /// Key plus value bytes.
    pub bytes: u64,
    /// Wrapping sum of [`row_hash`] over the rows.
    pub sum: u64,
}

/// The 64-bit hash of one row that [`ShardStats::sum`] adds up: crc32 of the key in the high
/// half, crc32 of the key's length, the key and the value in the low half (a row moved to
/// another key, or bytes moved between key and value, changes it).
pub fn row_hash(key: &[u8], value: &[u8]) -> u64 {
    let high = crc32fast::hash(key) as u64;
    let mut h = crc32fast::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(value);
    (high << 32) | h.finalize() as u64
}

impl ShardStats {
    /// Accounts a row that was inserted (`old` is the value it replaced, if any).
    pub fn put(&mut self, key: &[u8], value: &[u8], old: Option<&[u8]>) {
        if let Some(old) = old {
            self.remove(key, old);
        }
        self.keys += 1;
        self.bytes += (key.len() + value.len()) as u64;
        self.sum = self.sum.wrapping_add(row_hash(key, value));
    }

    /// Accounts a row that was removed.
    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        self.keys = self.keys.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub((key.len() + value.len()) as u64);
        self.sum = self.sum.wrapping_sub(row_hash(key, value));
    }
}

/// One row carried by a move: a value, or `None` for a key deleted since the last pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRow {
    /// Key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its value now, or `None` if the key no longer exists.
    pub value: Option<ByteBuf>,
}

/// Where the destination's pull stands, kept in its log with each `Ingest` so a new herald
/// resumes where the old one stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveCursor {
    /// The base copy (every row of the shard as of some index) is complete.
    pub base_done: bool,
    /// The last key pulled in the current pass (base, or a delta round), if the pass is not
    /// finished.
    pub after_key: Option<ByteBuf>,
    /// Every change to the shard at or below this source log index is in the destination's
    /// table (the smallest applied index any chunk of the finished passes was read at).
    pub watermark: u64,
    /// The smallest applied index the chunks of the current pass were read at.
    pub pass_index: u64,
}

/// A shard being received by this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The move.
    pub move_id: u64,
    /// Progress of the pull.
    pub cursor: MoveCursor,
    /// The rows match the frozen source's digest: the shard may be acquired.
    pub sealed: bool,
}

/// The move state of one order, as its log decided (stored beside the applied state and in
/// snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveState {
    /// Shards this order is the source of, with their move ids: writes are recorded in their
    /// dirty tables.
    pub tracking: BTreeMap<u32, u64>,
    /// Shards this order is receiving.
    pub incoming: BTreeMap<u32, Incoming>,
}

/// What a pull asks the source for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMode {
    /// Every row of the shard, in key order.
    Base,
    /// Keys written after this source log index (from the dirty table), with their values now.
    Delta {
        /// The destination's watermark.
        after_index: u64,
    },
}

/// One chunk of a shard, read in one read transaction of a source replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportChunk {
    /// The source log index the read saw applied.
    pub applied_index: u64,
    /// The rows, in key order.
    pub rows: Vec<MoveRow>,
    /// More rows follow `rows`' last key in this pass.
    pub more: bool,
    /// The source no longer serves the shard (it applied the freeze): no change can follow.
    pub frozen: bool,
    /// The shard's stats at the source, as of `applied_index`.
    pub stats: ShardStats,
}

/// Why a source refuses an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The source's log has no `Track` for this move (not yet, or the move is over).
    #[error("order {order} does not track shard {shard} for move {move_id}")]
    NotTracking {
        /// Source order.
        order: u64,
        /// Shard.
        shard: u32,
        /// Move.
        move_id: u64,
    },
    /// Reading the source's storage failed.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_independent_of_order_and_undo_exactly() {
        let mut a = ShardStats::default();
        a.put(b"k1", b"v1", None);
        a.put(b"k2", b"v2", None);
        a.put(b"k1", b"v1b", Some(b"v1"));
        let mut b = ShardStats::default();
        b.put(b"k2", b"v2", None);
        b.put(b"k1", b"v1b", None);
        assert_eq!(a, b);
        b.remove(b"k2", b"v2");
        b.remove(b"k1", b"v1b");
        assert_eq!(b, ShardStats::default());
        // Moving a byte between key and value changes the digest.
        let mut c = ShardStats::default();
        c.put(b"ab", b"c", None);
        let mut d = ShardStats::default();
        d.put(b"a", b"bc", None);
        assert_ne!(c, d);
    }
}
