//! The tables an order keeps in the node's redb file: how they are named, opened and read,
//! and the record of what its log decided besides its rows ([`OrderState`]). The apply path,
//! exports and snapshots all read them; they live here so that each of those names a table
//! the same way and none of them reaches into another for it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;

use openraft::alias::LogIdOf;
use openraft::alias::StoredMembershipOf;
use redb::ReadableTable;
use redb::TableDefinition;
use redb::TableHandle;
use serde::Deserialize;
use serde::Serialize;

use super::shard_move::MoveState;
use super::shard_move::ShardStats;
use super::state_machine::OrderConfig;
use crate::identity::OrderId;
use crate::raft::codec;

pub(super) const META: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("order_meta");
pub(super) const APPLIED: &str = "applied";
/// Per-shard stats ([`OrderState::stats`]). Beside [`APPLIED`] rather than in it: postcard is
/// not self-describing, so a field added to [`Applied`] would stop old data dirs decoding.
pub(super) const STATS: &str = "shard_stats";
/// The order's [`MoveState`].
pub(super) const MOVES: &str = "moves";
/// The shard count the order's tables are cut by, once it resharded.
pub(super) const LAYOUT: &str = "layout";
/// The map epoch each shard was last acquired at (`BTreeMap<u32, u64>`; kept after a release):
/// the *owner epoch* of an owned shard,
/// which every Kv answer carries, so that clients and tests can tell which ownership served
/// them. Kept apart from [`APPLIED`] so records written before it existed still decode.
pub(super) const ACQUIRED: &str = "acquired_at";
/// Where versions before snapshot files kept a whole copy of the snapshot; deleted on open.
pub(super) const LEGACY_SNAPSHOT: &str = "snapshot";
/// Which file is the current snapshot ([`super::state_machine::CurrentSnapshot`]).
pub(super) const SNAPSHOT_FILE: &str = "snapshot_file";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Applied {
    pub(super) last_applied: Option<LogIdOf<OrderConfig>>,
    pub(super) last_membership: StoredMembershipOf<OrderConfig>,
    /// The shards this order serves, as its own log decided.
    pub(super) owned: BTreeSet<u32>,
    /// The map epoch each shard was last released at. An acquire decided on an older map is
    /// ignored: it may have been decided before a handover that has completed since.
    pub(super) released_at: BTreeMap<u32, u64>,
}

pub(super) fn io_err(e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(e.into())
}

pub(super) fn shard_prefix(order: OrderId) -> String {
    format!("kv_o{order}_s")
}

pub(super) fn table_name(order: OrderId, shard: u32) -> String {
    format!("{}{shard}", shard_prefix(order))
}

/// Dirty tables (key to the log index of its last write) are named apart from shard tables so
/// that neither prefix matches the other's tables.
pub(super) fn dirty_prefix(order: OrderId) -> String {
    format!("kvdirty_o{order}_s")
}

pub(super) fn dirty_name(order: OrderId, shard: u32) -> String {
    format!("{}{shard}", dirty_prefix(order))
}

/// The tables among `handles` named `prefix` and a shard number, with their numbers, in shard
/// order (snapshots write them in that order).
pub(super) fn numbered_tables(
    handles: impl Iterator<Item = redb::UntypedTableHandle>,
    prefix: &str,
) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = handles
        .filter_map(|h| {
            let name = h.name().to_string();
            let shard = name.strip_prefix(prefix)?.parse().ok()?;
            Some((shard, name))
        })
        .collect();
    out.sort();
    out
}

/// The shard tables of `order` in the database, with their shard numbers.
pub(super) fn shard_tables(txn: &redb::ReadTransaction, order: OrderId) -> io::Result<Vec<(u32, String)>> {
    Ok(numbered_tables(txn.list_tables().map_err(io_err)?, &shard_prefix(order)))
}

/// An open shard table in a write transaction.
pub(super) type ShardTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

pub(super) fn shard_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// An open dirty table in a write transaction.
pub(super) type DirtyTable<'txn> = redb::Table<'txn, &'static [u8], u64>;

pub(super) fn dirty_table(name: &str) -> TableDefinition<'_, &'static [u8], u64> {
    TableDefinition::new(name)
}

/// Opens a table for reading; `None` if it does not exist (a shard never written here).
pub(super) fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<'_, K, V>,
) -> io::Result<Option<redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// Reads one record of this order from a META table, read-only or in a write transaction.
pub(super) fn read_meta<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    order: OrderId,
    key: &str,
) -> io::Result<Option<T>> {
    match t.get((order, key)).map_err(io_err)? {
        Some(v) => Ok(Some(codec::decode_stored(v.value())?)),
        None => Ok(None),
    }
}

/// Sets (`Some`) or removes (`None`) one row, accounting it in `stats`; whether the key
/// existed. The old value comes from the write itself, so keeping stats costs no extra read.
pub(super) fn write_row(
    t: &mut ShardTable<'_>,
    stats: &mut ShardStats,
    key: &[u8],
    value: Option<&[u8]>,
) -> io::Result<bool> {
    match value {
        Some(v) => {
            let old = t.insert(key, v).map_err(io_err)?;
            stats.put(key, v, old.as_ref().map(|g| g.value()));
            Ok(old.is_some())
        }
        None => {
            let old = t.remove(key).map_err(io_err)?;
            if let Some(old) = &old {
                stats.remove(key, old.value());
            }
            Ok(old.is_some())
        }
    }
}

/// What an order's log decided besides its rows, as kept in META: read at the start of an
/// applied batch, an export or a snapshot build, and written back in the batch's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct OrderState {
    pub(super) applied: Applied,
    /// The stats of each shard that has rows. A shard without rows has no entry, whether its
    /// table exists or not, so that a replica that applied the log and one that installed a
    /// snapshot (which carries no empty tables) hold the same map.
    pub(super) stats: BTreeMap<u32, ShardStats>,
    pub(super) moves: MoveState,
    /// The shard count the tables are cut by; `None` until the first reshard (the tables are
    /// then cut by the count the requests name).
    pub(super) modulus: Option<u32>,
    /// The map epoch each shard was last acquired at (see [`ACQUIRED`]); a shard owned since
    /// before this was recorded has no entry.
    pub(super) acquired_at: BTreeMap<u32, u64>,
}

impl OrderState {
    pub(super) fn read(
        meta: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
        order: OrderId,
    ) -> io::Result<Self> {
        Ok(Self {
            applied: read_meta(meta, order, APPLIED)?.unwrap_or_default(),
            stats: read_meta(meta, order, STATS)?.unwrap_or_default(),
            moves: read_meta(meta, order, MOVES)?.unwrap_or_default(),
            modulus: read_meta(meta, order, LAYOUT)?,
            acquired_at: read_meta(meta, order, ACQUIRED)?.unwrap_or_default(),
        })
    }

    /// Writes the applied state, and the stats and move state where they differ from
    /// `before` (all of them if there is no `before`): most batches change neither.
    pub(super) fn write(
        &self,
        meta: &mut redb::Table<'_, (u64, &'static str), &'static [u8]>,
        order: OrderId,
        before: Option<&OrderState>,
    ) -> io::Result<()> {
        meta.insert((order, APPLIED), codec::encode_stored(&self.applied)?.as_slice()).map_err(io_err)?;
        if before.is_none_or(|b| b.stats != self.stats) {
            meta.insert((order, STATS), codec::encode_stored(&self.stats)?.as_slice()).map_err(io_err)?;
        }
        if before.is_none_or(|b| b.moves != self.moves) {
            meta.insert((order, MOVES), codec::encode_stored(&self.moves)?.as_slice()).map_err(io_err)?;
        }
        if let Some(m) = self.modulus.filter(|_| before.is_none_or(|b| b.modulus != self.modulus)) {
            meta.insert((order, LAYOUT), codec::encode_stored(&m)?.as_slice()).map_err(io_err)?;
        }
        if before.is_none_or(|b| b.acquired_at != self.acquired_at) {
            meta.insert((order, ACQUIRED), codec::encode_stored(&self.acquired_at)?.as_slice()).map_err(io_err)?;
        }
        Ok(())
    }
}
