//! An order's state machine: one redb table per shard, in the node's database file.
//!
//! Applied batches are committed with `Durability::None`: the Raft log is the durable record
//! (openraft applies only entries this node's log has fsynced, and the log is purged only
//! after a durable redb commit, see [`crate::raft::log_sync`]), so an applied batch lost in a
//! crash is simply applied again from the log. Snapshots
//! are files ([`super::snapshot_file`]) built from one read transaction and fsynced, because
//! the log is purged behind them; redb holds only a small record naming the current one.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use futures::Stream;
use futures::TryStreamExt;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use redb::Database;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::ReadableTableMetadata;
use serde::Deserialize;
use serde::Serialize;

use super::apply;
use super::export;
use super::layout;
use super::shard_move::ExportChunk;
use super::shard_move::ExportError;
use super::shard_move::ExportMode;
use super::shard_move::MoveCursor;
use super::shard_move::MoveRow;
use super::shard_move::MoveState;
use super::shard_move::ShardStats;
use super::snapshot_file::SnapshotDir;
use super::snapshot_file::SnapshotFile;
use super::snapshot_format::RecordTable;
use super::snapshot_format::SnapshotHeader;
use super::snapshot_format::SnapshotReader;
use super::snapshot_format::SnapshotWriter;
use super::snapshot_format::dirty_index;
use super::tables::ACQUIRED;
use super::tables::APPLIED;
use super::tables::Applied;
use super::tables::DirtyTable;
use super::tables::LAYOUT;
use super::tables::LEGACY_SNAPSHOT;
use super::tables::META;
use super::tables::MOVES;
use super::tables::OrderState;
use super::tables::SNAPSHOT_FILE;
use super::tables::STATS;
use super::tables::ShardTable;
use super::tables::dirty_name;
use super::tables::dirty_prefix;
use super::tables::dirty_table;
use super::tables::io_err;
use super::tables::numbered_tables;
use super::tables::open_read;
use super::tables::read_meta;
use super::tables::shard_prefix;
use super::tables::shard_table;
use super::tables::shard_tables;
use super::tables::table_name;
use super::tables::write_row;
use crate::identity::OrderId;
use crate::planted;
use crate::planted::Bug;
use crate::raft::codec;

/// A write to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets a key.
    Put {
        /// Shard of the key.
        shard: u32,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes a key.
    Delete {
        /// Shard of the key.
        shard: u32,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// The order starts serving these shards (the map assigned them to it).
    Acquire {
        /// Shards.
        shards: Vec<u32>,
        /// Map epoch the herald decided on; a shard released at a later epoch is not taken back.
        epoch: u64,
    },
    /// The order stops serving these shards: writes to them that come later in the log are
    /// refused. This is the fence of a shard handoff.
    Release {
        /// Shards.
        shards: Vec<u32>,
        /// Map epoch the herald decided on.
        epoch: u64,
    },
    // New variants go last: postcard numbers variants, and old logs must still decode.
    /// Source of a move: from here on, writes to `shard` are recorded in its dirty table.
    Track {
        /// Shard.
        shard: u32,
        /// Move id (the map epoch the move began at).
        move_id: u64,
    },
    /// Source of a cancelled move: stop recording and drop the dirty table.
    Untrack {
        /// Shard.
        shard: u32,
        /// Move id.
        move_id: u64,
    },
    /// Destination of a move: start receiving `shard`, dropping leftovers of an earlier attempt.
    Prepare {
        /// Shard.
        shard: u32,
        /// Move id.
        move_id: u64,
    },
    /// Destination: rows pulled from the source, and where the pull stands after them, as
    /// written before chunks named the cursor they follow. Applied without that check; new
    /// code writes [`KvCommand::Ingest`].
    LegacyIngest {
        /// Shard.
        shard: u32,
        /// Move id.
        move_id: u64,
        /// Rows (`None`: deleted at the source).
        rows: Vec<MoveRow>,
        /// The pull's progress once these rows are in.
        cursor: MoveCursor,
    },
    /// Destination: the rows are complete if their stats equal the frozen source's.
    Seal {
        /// Shard.
        shard: u32,
        /// Move id.
        move_id: u64,
        /// The frozen source's stats.
        digest: ShardStats,
    },
    /// Either side, once the order does not serve `shard`: delete its rows and move state
    /// (the source after the destination serves, the destination after a cancel).
    Drop {
        /// Shard.
        shard: u32,
        /// Move id.
        move_id: u64,
    },
    /// The shard count changes from `from` to `to` (double: fracture; half: consolidate):
    /// the order cuts its tables anew (see [`super::layout`]).
    Reshard {
        /// The count the tables are cut by now.
        from: u32,
        /// The new count.
        to: u32,
    },
    /// Destination: rows pulled from the source, and where the pull stands after them.
    /// Applied only if the log's cursor is still `follows`, the one the chunk was pulled
    /// from: a chunk that would land after a gap (an earlier chunk of the same pass lost with
    /// a herald, or proposed out of order) changes nothing, so the cursor the log holds never
    /// claims rows it does not have.
    Ingest {
        /// Shard.
        shard: u32,
        /// Move id.
        move_id: u64,
        /// The cursor this chunk continues from.
        follows: MoveCursor,
        /// Rows (`None`: deleted at the source).
        rows: Vec<MoveRow>,
        /// The pull's progress once these rows are in.
        cursor: MoveCursor,
    },
}

impl fmt::Display for KvCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvCommand::Put { shard, key, value } => {
                write!(f, "put shard {shard} key {} ({} bytes)", String::from_utf8_lossy(key), value.len())
            }
            KvCommand::Delete { shard, key } => write!(f, "delete shard {shard} key {}", String::from_utf8_lossy(key)),
            KvCommand::Acquire { shards, epoch } => write!(f, "acquire shards {shards:?} at epoch {epoch}"),
            KvCommand::Release { shards, epoch } => write!(f, "release shards {shards:?} at epoch {epoch}"),
            KvCommand::Track { shard, move_id } => write!(f, "track shard {shard} for move {move_id}"),
            KvCommand::Untrack { shard, move_id } => write!(f, "untrack shard {shard} for move {move_id}"),
            KvCommand::Prepare { shard, move_id } => write!(f, "prepare to receive shard {shard} in move {move_id}"),
            KvCommand::Ingest { shard, move_id, rows, .. } | KvCommand::LegacyIngest { shard, move_id, rows, .. } => {
                write!(f, "ingest {} rows of shard {shard} in move {move_id}", rows.len())
            }
            KvCommand::Seal { shard, move_id, .. } => write!(f, "seal shard {shard} in move {move_id}"),
            KvCommand::Drop { shard, move_id } => write!(f, "drop shard {shard} after move {move_id}"),
            KvCommand::Reshard { from, to } => write!(f, "reshard from {from} to {to} shards"),
        }
    }
}

/// The result of applying a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KvResponse {
    /// Delete: whether the key existed. Put: whether it replaced a value.
    pub existed: bool,
    /// The write was refused: the order does not serve its shard (not yet, or no longer).
    pub wrong_shard: bool,
    /// A move command changed nothing: another move's id, the wrong side, or (Seal) rows
    /// that do not match the source's digest.
    pub refused: bool,
    /// A put or delete: the map epoch at which the order acquired the key's shard (0: not
    /// recorded, for a shard owned since before owner epochs were kept).
    pub owner_epoch: u64,
}

openraft::declare_raft_types!(
    /// Types of an order's Raft group.
    pub OrderConfig:
        D = KvCommand,
        R = KvResponse,
);

/// An order's Raft handle.
pub type OrderRaft = openraft::Raft<OrderConfig, KvStateMachine>;

/// Buffer of the snapshot file readers and writers: large sequential I/O.
const FILE_BUFFER: usize = 1024 * 1024;

/// The record in `order_meta` that names the current snapshot file. It is written in the
/// same transaction as the state an install puts in place, so the two always agree.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMetaOf<OrderConfig>,
    /// File name in the order's snapshot directory.
    file: String,
    len: u64,
    crc32: u32,
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The stats of a whole table, by reading every row (for data dirs written before stats were
/// kept).
fn table_stats(t: &impl ReadableTable<&'static [u8], &'static [u8]>) -> io::Result<ShardStats> {
    let mut stats = ShardStats::default();
    for item in t.iter().map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        stats.put(k.value(), v.value(), None);
    }
    Ok(stats)
}

/// Inserts a snapshot's records into the order's (emptied) tables and returns the stats of its
/// rows, computed on the way rather than by a second pass over them. Records come grouped by
/// table: the current shard table and dirty table stay open.
fn install_records<R: io::Read>(
    txn: &redb::WriteTransaction,
    order: OrderId,
    r: &mut SnapshotReader<R>,
) -> io::Result<BTreeMap<u32, ShardStats>> {
    let mut stats: BTreeMap<u32, ShardStats> = BTreeMap::new();
    let mut rows: Option<(u32, ShardTable<'_>)> = None;
    let mut dirty: Option<(u32, DirtyTable<'_>)> = None;
    while let Some((field, k, v)) = r.next()? {
        match RecordTable::of(field) {
            RecordTable::Shard(shard) => {
                let t = match &mut rows {
                    Some((s, t)) if *s == shard => t,
                    _ => {
                        &mut rows
                            .insert((shard, txn.open_table(shard_table(&table_name(order, shard))).map_err(io_err)?))
                            .1
                    }
                };
                write_row(t, stats.entry(shard).or_default(), k, Some(v))?;
            }
            RecordTable::Dirty(shard) => {
                let t = match &mut dirty {
                    Some((s, t)) if *s == shard => t,
                    _ => {
                        &mut dirty
                            .insert((shard, txn.open_table(dirty_table(&dirty_name(order, shard))).map_err(io_err)?))
                            .1
                    }
                };
                t.insert(k, dirty_index(v)?).map_err(io_err)?;
            }
        }
    }
    Ok(stats)
}

/// The state machine of one order on this node.
#[derive(Clone)]
pub struct KvStateMachine {
    db: Arc<Database>,
    order: OrderId,
    snapshots: SnapshotDir,
}

impl KvStateMachine {
    /// Opens (or creates) the order's state in `db`, with its snapshot files under `data_dir`.
    pub fn open(db: Arc<Database>, order: OrderId, data_dir: &Path) -> io::Result<Self> {
        let snapshots = SnapshotDir::new(data_dir, order);
        snapshots.open()?;
        let txn = db.begin_write().map_err(io_err)?;
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            if meta.remove((order, LEGACY_SNAPSHOT)).map_err(io_err)?.is_some() {
                // Without it there is no current snapshot; openraft builds one when it needs it.
                tracing::info!(order, "deleted the in-database snapshot copy of an older version");
            }
            if meta.get((order, STATS)).map_err(io_err)?.is_none() {
                Self::compute_stats(&txn, &mut meta, order)?;
            }
        }
        txn.commit().map_err(io_err)?;
        Ok(Self { db, order, snapshots })
    }

    /// Computes and stores the stats of every shard table, for a data dir of a release that
    /// did not keep them: from then on `apply` keeps them up to date.
    fn compute_stats(
        txn: &redb::WriteTransaction,
        meta: &mut redb::Table<'_, (u64, &'static str), &'static [u8]>,
        order: OrderId,
    ) -> io::Result<()> {
        let tables = numbered_tables(txn.list_tables().map_err(io_err)?, &shard_prefix(order));
        if tables.is_empty() {
            return Ok(());
        }
        let mut stats = BTreeMap::new();
        for (shard, name) in tables {
            let s = table_stats(&txn.open_table(shard_table(&name)).map_err(io_err)?)?;
            if s != ShardStats::default() {
                stats.insert(shard, s);
            }
        }
        meta.insert((order, STATS), codec::encode_stored(&stats)?.as_slice()).map_err(io_err)?;
        tracing::info!(order, shards = stats.len(), "computed the shard stats of an older data dir");
        Ok(())
    }

    /// Deletes this order's data, applied state and snapshot files on this node (its replica
    /// here was retired).
    pub fn purge(db: &Database, data_dir: &Path, order: OrderId) -> io::Result<()> {
        let txn = db.begin_write().map_err(io_err)?;
        Self::delete_tables(&txn, order)?;
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            for key in [APPLIED, LEGACY_SNAPSHOT, SNAPSHOT_FILE, STATS, MOVES, LAYOUT] {
                meta.remove((order, key)).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)?;
        SnapshotDir::new(data_dir, order).remove_all()
    }

    /// Deletes every shard table and dirty table of `order`, and no other group's.
    fn delete_tables(txn: &redb::WriteTransaction, order: OrderId) -> io::Result<()> {
        for (_, name) in numbered_tables(txn.list_tables().map_err(io_err)?, &shard_prefix(order)) {
            txn.delete_table(shard_table(&name)).map_err(io_err)?;
        }
        for (_, name) in numbered_tables(txn.list_tables().map_err(io_err)?, &dirty_prefix(order)) {
            txn.delete_table(dirty_table(&name)).map_err(io_err)?;
        }
        Ok(())
    }

    /// The directory of this order's snapshot files, where incoming snapshots are received.
    pub fn snapshot_dir(&self) -> &SnapshotDir {
        &self.snapshots
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        read_meta(&txn.open_table(META).map_err(io_err)?, self.order, key)
    }

    /// The shards this order serves, per its applied log.
    pub fn owned(&self) -> io::Result<BTreeSet<u32>> {
        Ok(self.meta::<Applied>(APPLIED)?.unwrap_or_default().owned)
    }

    /// Keys, bytes and digest of each shard table of this order, per its applied log. A shard
    /// without rows has no entry (its stats are the default).
    pub fn stats(&self) -> io::Result<BTreeMap<u32, ShardStats>> {
        Ok(self.meta(STATS)?.unwrap_or_default())
    }

    /// The order's move state, per its applied log.
    pub fn move_state(&self) -> io::Result<MoveState> {
        Ok(self.meta(MOVES)?.unwrap_or_default())
    }

    /// One chunk of `shard` for the destination of move `move_id`, read in one read
    /// transaction: rows after `after_key` (base: the table; delta: keys written after the
    /// index), at most `limit_bytes` of them but at least one. Refused unless this replica's
    /// applied log tracks the shard for that move.
    pub fn export(
        &self,
        shard: u32,
        move_id: u64,
        mode: ExportMode,
        after_key: Option<&[u8]>,
        limit_bytes: usize,
    ) -> Result<ExportChunk, ExportError> {
        export::chunk(&self.db, self.order, shard, move_id, mode, after_key, limit_bytes)
    }

    /// Which of this order's shard tables hold data.
    pub fn nonempty(&self) -> io::Result<BTreeSet<u32>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let mut out = BTreeSet::new();
        for (shard, name) in self.shard_tables(&txn)? {
            let t = txn.open_table(shard_table(&name)).map_err(io_err)?;
            if t.len().map_err(io_err)? > 0 {
                out.insert(shard);
            }
        }
        Ok(out)
    }

    /// Reads a key.
    pub fn get(&self, shard: u32, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let Some(t) = open_read(&txn, shard_table(&table_name(self.order, shard)))? else {
            return Ok(None);
        };
        Ok(t.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
    }

    /// What the order serves and how its tables are cut, as of `txn`.
    fn served(&self, txn: &redb::ReadTransaction) -> io::Result<(BTreeSet<u32>, Option<u32>)> {
        let meta = txn.open_table(META).map_err(io_err)?;
        self.served_in(&meta)
    }

    fn served_in(
        &self,
        meta: &impl redb::ReadableTable<(u64, &'static str), &'static [u8]>,
    ) -> io::Result<(BTreeSet<u32>, Option<u32>)> {
        let applied: Applied = read_meta(meta, self.order, APPLIED)?.unwrap_or_default();
        let mut owned = applied.owned;
        if planted::active(Bug::ServeAfterSwitch) {
            // The planted bug: a shard this order handed over is still served, for reads.
            owned.extend(applied.released_at.keys());
        }
        Ok((owned, read_meta(meta, self.order, LAYOUT)?))
    }

    /// Reads a key for a request that names shard `hint`, in one read transaction: `None` if
    /// the order's log does not serve the key's shard (not yet, or no longer), unless `stale`;
    /// else the value and the shard's owner epoch (0: not recorded).
    pub fn read_key(&self, hint: u32, key: &[u8], stale: bool) -> io::Result<Option<(Option<Vec<u8>>, u64)>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(META).map_err(io_err)?;
        let (owned, modulus) = self.served_in(&meta)?;
        let shard = layout::key_shard(key, hint, modulus);
        if !stale && !owned.contains(&shard) {
            return Ok(None);
        }
        let acquired: BTreeMap<u32, u64> = read_meta(&meta, self.order, ACQUIRED)?.unwrap_or_default();
        let epoch = acquired.get(&shard).copied().unwrap_or(0);
        let Some(t) = open_read(&txn, shard_table(&table_name(self.order, shard)))? else {
            return Ok(Some((None, epoch)));
        };
        Ok(Some((t.get(key).map_err(io_err)?.map(|v| v.value().to_vec()), epoch)))
    }

    /// Keys of shard `shard` of `of_total` starting with `prefix`, in key order, at most
    /// `limit`, in one read transaction; `None` if the order's log does not serve all of it
    /// (unless `stale`) or its tables are cut by a count more than one step from `of_total`.
    pub fn scan_served(
        &self,
        shard: u32,
        of_total: u32,
        prefix: &[u8],
        limit: usize,
        stale: bool,
    ) -> io::Result<Option<Vec<KeyValue>>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let (owned, modulus) = self.served(&txn)?;
        let Some(pieces) = layout::covering(shard, of_total, modulus) else { return Ok(None) };
        if !stale && !pieces.iter().all(|p| owned.contains(&p.0)) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for piece in &pieces {
            let Some(t) = open_read(&txn, shard_table(&table_name(self.order, piece.0)))? else { continue };
            let mut taken = 0;
            for item in t.range(prefix..).map_err(io_err)? {
                let (k, v) = item.map_err(io_err)?;
                if !k.value().starts_with(prefix) || taken >= limit {
                    break;
                }
                if layout::in_piece(k.value(), piece) {
                    out.push((k.value().to_vec(), v.value().to_vec()));
                    taken += 1;
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.truncate(limit);
        Ok(Some(out))
    }

    /// Whether the order's log serves `key` (or, without a key, all of shard `hint`) as a
    /// request naming shard `hint` of the map's count means it.
    pub fn serves(&self, hint: u32, key: Option<&[u8]>) -> io::Result<bool> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let (owned, modulus) = self.served(&txn)?;
        Ok(match key {
            Some(k) => owned.contains(&layout::key_shard(k, hint, modulus)),
            None => modulus.is_none() && owned.contains(&hint),
        })
    }

    /// The shard count the order's tables are cut by, once it resharded.
    pub fn modulus(&self) -> io::Result<Option<u32>> {
        self.meta(LAYOUT)
    }

    /// Keys of a shard table starting with `prefix`, in order, at most `limit`.
    pub fn scan(&self, shard: u32, prefix: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let Some(t) = open_read(&txn, shard_table(&table_name(self.order, shard)))? else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn shard_tables(&self, txn: &redb::ReadTransaction) -> io::Result<Vec<(u32, String)>> {
        shard_tables(txn, self.order)
    }

    /// Writes a snapshot file from one read transaction (a consistent view, while writes go
    /// on), row by row, fsyncs it and makes it current unless a newer snapshot became current
    /// meanwhile (an install from the leader).
    fn build_snapshot_file(&self) -> io::Result<SnapshotOf<OrderConfig, SnapshotFile>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let state = OrderState::read(&txn.open_table(META).map_err(io_err)?, self.order)?;
        let meta = SnapshotMetaOf::<OrderConfig> {
            last_log_id: state.applied.last_applied,
            last_membership: state.applied.last_membership.clone(),
        };
        let header = SnapshotHeader {
            meta: meta.clone(),
            owned: state.applied.owned,
            released_at: state.applied.released_at,
            moves: state.moves,
            modulus: state.modulus,
            acquired_at: state.acquired_at,
        };
        let part = self.snapshots.part_path("build");
        let built = (|| {
            let out = BufWriter::with_capacity(FILE_BUFFER, File::create(&part)?);
            let mut w = SnapshotWriter::new(out, &header)?;
            self.write_records(&txn, &mut w)?;
            let (out, summary) = w.finish()?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok::<_, io::Error>(summary)
        })();
        drop(txn);
        let summary = match built {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        let path = self.snapshots.publish(&part, meta.last_log_id.as_ref())?;
        let file = SnapshotFile { path: path.clone(), len: summary.file_bytes, crc32: summary.crc32 };

        let txn = self.db.begin_write().map_err(io_err)?;
        let current = {
            let mut t = txn.open_table(META).map_err(io_err)?;
            let existing: Option<CurrentSnapshot> = match t.get((self.order, SNAPSHOT_FILE)).map_err(io_err)? {
                Some(v) => Some(codec::decode_stored(v.value())?),
                None => None,
            };
            match existing {
                Some(e) if e.meta.last_log_id > meta.last_log_id => self.snapshots.path().join(e.file),
                _ => {
                    let record = self.current_record(&meta, &file)?;
                    t.insert((self.order, SNAPSHOT_FILE), codec::encode_stored(&record)?.as_slice()).map_err(io_err)?;
                    path
                }
            }
        };
        txn.commit().map_err(io_err)?;
        self.snapshots.remove_others(&current)?;
        tracing::info!(
            order = self.order,
            records = summary.records,
            bytes = summary.file_bytes,
            "built snapshot {}",
            file.path.display()
        );
        Ok(SnapshotOf::<OrderConfig, SnapshotFile> { meta, snapshot: file })
    }

    /// Writes every row of the order's shard tables, then every entry of its dirty tables,
    /// each table in shard order and each in key order.
    fn write_records<W: io::Write>(&self, txn: &redb::ReadTransaction, w: &mut SnapshotWriter<W>) -> io::Result<()> {
        for (shard, name) in self.shard_tables(txn)? {
            let t = txn.open_table(shard_table(&name)).map_err(io_err)?;
            for item in t.iter().map_err(io_err)? {
                let (k, v) = item.map_err(io_err)?;
                w.record(shard, k.value(), v.value())?;
            }
        }
        for (shard, name) in numbered_tables(txn.list_tables().map_err(io_err)?, &dirty_prefix(self.order)) {
            let t = txn.open_table(dirty_table(&name)).map_err(io_err)?;
            for item in t.iter().map_err(io_err)? {
                let (k, index) = item.map_err(io_err)?;
                w.dirty_record(shard, k.value(), index.value())?;
            }
        }
        Ok(())
    }

    fn current_record(&self, meta: &SnapshotMetaOf<OrderConfig>, file: &SnapshotFile) -> io::Result<CurrentSnapshot> {
        let name = file
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other(format!("snapshot path {}", file.path.display())))?;
        Ok(CurrentSnapshot { meta: meta.clone(), file: name.to_string(), len: file.len, crc32: file.crc32 })
    }

    /// Replaces the order's state by a snapshot file's, in one write transaction: its shard and
    /// dirty tables are deleted, the file's records inserted, its applied and move state and
    /// the stats of its rows written, and the file made current. The file's checksum is only known at its end, so nothing is committed
    /// unless the whole file reads back right; other groups' tables are left alone.
    fn install_snapshot_file(&self, meta: &SnapshotMetaOf<OrderConfig>, file: &SnapshotFile) -> io::Result<()> {
        let mut r = SnapshotReader::new(BufReader::with_capacity(FILE_BUFFER, File::open(&file.path)?))?;
        if &r.header().meta != meta {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot file {} holds {}, not {meta}", file.path.display(), r.header().meta),
            ));
        }
        let txn = self.db.begin_write().map_err(io_err)?;
        Self::delete_tables(&txn, self.order)?;
        let stats = install_records(&txn, self.order, &mut r)?;
        let header = r.header().clone();
        let summary = r.summary().ok_or_else(|| io::Error::other("snapshot read stopped before its end"))?;
        for shard in header.moves.tracking.keys() {
            // A tracked shard has a dirty table even before its first write, as where the log
            // was applied.
            txn.open_table(dirty_table(&dirty_name(self.order, *shard))).map_err(io_err)?;
        }
        let state = OrderState {
            applied: Applied {
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
                owned: header.owned,
                released_at: header.released_at,
            },
            stats,
            moves: header.moves,
            modulus: header.modulus,
            acquired_at: header.acquired_at,
        };
        let current = self.snapshots.publish(&file.path, meta.last_log_id.as_ref())?;
        let installed = SnapshotFile { path: current.clone(), len: summary.file_bytes, crc32: summary.crc32 };
        {
            let mut m = txn.open_table(META).map_err(io_err)?;
            state.write(&mut m, self.order, None)?;
            let record = self.current_record(meta, &installed)?;
            m.insert((self.order, SNAPSHOT_FILE), codec::encode_stored(&record)?.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        self.snapshots.remove_others(&current)?;
        tracing::info!(
            order = self.order,
            records = summary.records,
            bytes = summary.file_bytes,
            "installed snapshot {meta}"
        );
        Ok(())
    }

    /// Applies entries in one write transaction and answers each: `apply` without openraft's
    /// stream and responders, which is also how tests drive it.
    async fn apply_entries(&self, entries: Vec<EntryOf<OrderConfig>>) -> io::Result<Vec<KvResponse>> {
        self.blocking(move |db, order| apply::apply_batch(&db, order, &entries)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Database>, OrderId) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let db = self.db.clone();
        let order = self.order;
        tokio::task::spawn_blocking(move || f(db, order)).await.map_err(io::Error::other)?
    }
}

impl RaftSnapshotBuilder<OrderConfig> for KvStateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<OrderConfig, SnapshotFile>, io::Error> {
        let this = self.clone();
        self.blocking(move |_, _| this.build_snapshot_file()).await
    }
}

impl RaftStateMachine<OrderConfig> for KvStateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<OrderConfig>>, StoredMembershipOf<OrderConfig>), io::Error> {
        let a: Applied = self.meta(APPLIED)?.unwrap_or_default();
        Ok((a.last_applied, a.last_membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<OrderConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let (entries, responders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        fail::fail_point!("order-apply-before");
        let started = std::time::Instant::now();
        let count = entries.len();
        let responses = self.apply_entries(entries).await?;
        tracing::trace!(order = self.order, entries = count, us = started.elapsed().as_micros() as u64, "apply");
        fail::fail_point!("order-apply-after");
        for (responder, resp) in responders.into_iter().zip(responses) {
            if let Some(r) = responder {
                r.send(resp);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<OrderConfig>,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        fail::fail_point!("order-snapshot-install-before");
        let this = self.clone();
        let meta = meta.clone();
        self.blocking(move |_, _| this.install_snapshot_file(&meta, &snapshot)).await?;
        fail::fail_point!("order-snapshot-install-after");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<OrderConfig, SnapshotFile>>, io::Error> {
        let Some(current) = self.meta::<CurrentSnapshot>(SNAPSHOT_FILE)? else {
            return Ok(None);
        };
        let path = self.snapshots.path().join(&current.file);
        if !path.is_file() {
            // Someone deleted it: no snapshot, and openraft builds a new one when it needs it.
            tracing::warn!(order = self.order, "the current snapshot file {} is missing", path.display());
            return Ok(None);
        }
        Ok(Some(SnapshotOf::<OrderConfig, SnapshotFile> {
            meta: current.meta,
            snapshot: SnapshotFile { path, len: current.len, crc32: current.crc32 },
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use serde_bytes::ByteBuf;

    use super::*;

    /// How `KvCommand` was declared before its byte fields went through `serde_bytes`.
    #[derive(Serialize)]
    enum PlainKvCommand {
        Put { shard: u32, key: Vec<u8>, value: Vec<u8> },
        Delete { shard: u32, key: Vec<u8> },
    }

    /// `serde_bytes` changes how serde hands the bytes to postcard (one slice instead of one
    /// call per byte), not the bytes postcard writes: logs and snapshots written before the
    /// change still decode, and an order can run mixed versions during an upgrade.
    #[test]
    fn byte_fields_keep_the_wire_format() {
        let value = vec![7u8; 70_000];
        let old = codec::encode(&PlainKvCommand::Put { shard: 3, key: b"k".to_vec(), value: value.clone() }).unwrap();
        let new = KvCommand::Put { shard: 3, key: b"k".to_vec(), value };
        assert_eq!(codec::encode(&new).unwrap(), old);
        assert_eq!(codec::decode::<KvCommand>(&old).unwrap(), new);

        let old = codec::encode(&PlainKvCommand::Delete { shard: 1, key: b"gone".to_vec() }).unwrap();
        assert_eq!(codec::decode::<KvCommand>(&old).unwrap(), KvCommand::Delete { shard: 1, key: b"gone".to_vec() });
    }

    type Rows = Vec<(u32, Vec<u8>, Vec<u8>)>;

    fn put_rows(db: &Database, order: OrderId, rows: &Rows) {
        let txn = db.begin_write().unwrap();
        for (shard, k, v) in rows {
            let name = table_name(order, *shard);
            txn.open_table(shard_table(&name)).unwrap().insert(k.as_slice(), v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    fn set_applied(db: &Database, order: OrderId, applied: &Applied) {
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert((order, APPLIED), codec::encode_stored(applied).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    /// Every row of `order` in `db`, by shard and key.
    fn all_rows(db: &Database, order: OrderId) -> Rows {
        let txn = db.begin_read().unwrap();
        let mut tables = shard_tables(&txn, order).unwrap();
        tables.sort();
        let mut out = Vec::new();
        for (shard, name) in tables {
            let t = txn.open_table(shard_table(&name)).unwrap();
            for item in t.iter().unwrap() {
                let (k, v) = item.unwrap();
                out.push((shard, k.value().to_vec(), v.value().to_vec()));
            }
        }
        out
    }

    fn snapshot_files(dir: &SnapshotDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A snapshot built from a node's redb holds exactly the order's rows and applied state,
    /// and installs on another node's redb in their place, leaving its other orders alone; a
    /// damaged file is refused and changes nothing.
    #[tokio::test]
    async fn a_snapshot_file_round_trips_through_redb() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("a.redb")).unwrap());
        let mut sm = KvStateMachine::open(db.clone(), 7, dir.path()).unwrap();
        let rows: Rows = (0..300u32)
            .map(|i| (i % 5 * 10, format!("key-{i:04}").into_bytes(), vec![i as u8; (i as usize * 37) % 5000]))
            .collect();
        put_rows(&db, 7, &rows);
        put_rows(&db, 8, &vec![(0, b"other order".to_vec(), b"x".to_vec())]);
        let applied = Applied {
            last_applied: Some(openraft::testing::log_id::<OrderConfig>(3, 1, 57)),
            owned: [0, 10, 20, 30, 40].into(),
            released_at: [(50, 4)].into(),
            ..Default::default()
        };
        set_applied(&db, 7, &applied);

        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        let snap = sm.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, applied.last_applied);
        assert_eq!(snap.snapshot.path, sm.snapshot_dir().path().join("3-57.snap"));
        assert_eq!(snap.snapshot.len, std::fs::metadata(&snap.snapshot.path).unwrap().len());
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.snapshot, snap.snapshot);

        // Read back: the header and the rows in shard and key order.
        let mut r = SnapshotReader::new(File::open(&snap.snapshot.path).unwrap()).unwrap();
        assert_eq!(r.header().owned, applied.owned);
        assert_eq!(r.header().released_at, applied.released_at);
        let mut read = Rows::new();
        while let Some((s, k, v)) = r.next().unwrap() {
            read.push((s, k.to_vec(), v.to_vec()));
        }
        let mut expected = rows.clone();
        expected.sort();
        assert_eq!(read, expected);
        assert_eq!(r.summary().unwrap().crc32, snap.snapshot.crc32);

        // A newer build replaces the file; the older one is deleted.
        set_applied(
            &db,
            7,
            &Applied { last_applied: Some(openraft::testing::log_id::<OrderConfig>(3, 1, 60)), ..applied.clone() },
        );
        let newer = sm.build_snapshot().await.unwrap();
        assert_eq!(snapshot_files(sm.snapshot_dir()), ["3-60.snap"]);

        // Install on another node that has other data for the order and another order.
        let dir2 = tempfile::tempdir().unwrap();
        let db2 = Arc::new(Database::create(dir2.path().join("b.redb")).unwrap());
        let mut sm2 = KvStateMachine::open(db2.clone(), 7, dir2.path()).unwrap();
        put_rows(
            &db2,
            7,
            &vec![(99, b"stale".to_vec(), b"gone".to_vec()), (10, b"key-0010".to_vec(), b"old".to_vec())],
        );
        put_rows(&db2, 70, &vec![(0, b"kept".to_vec(), b"yes".to_vec())]);
        let before: (Rows, Option<Applied>) = (all_rows(&db2, 7), sm2.meta(APPLIED).unwrap());

        // Received files arrive as `.part` files in the snapshot directory.
        let dir2_snapshots = sm2.snapshot_dir().clone();
        let copy = |name: &str, damage: Option<usize>| {
            let mut bytes = std::fs::read(&newer.snapshot.path).unwrap();
            if let Some(at) = damage {
                bytes[at] ^= 0x40;
            }
            let path = dir2_snapshots.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            SnapshotFile { path, ..newer.snapshot.clone() }
        };
        let damaged = copy("recv-damaged.part", Some(newer.snapshot.len as usize - 100));
        let e = sm2.install_snapshot(&newer.meta, damaged).await.unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert_eq!((all_rows(&db2, 7), sm2.meta(APPLIED).unwrap()), before, "a refused install changes nothing");
        assert!(sm2.get_current_snapshot().await.unwrap().is_none());

        sm2.install_snapshot(&newer.meta, copy("recv-good.part", None)).await.unwrap();
        assert_eq!(all_rows(&db2, 7), expected);
        assert_eq!(all_rows(&db2, 70), vec![(0, b"kept".to_vec(), b"yes".to_vec())]);
        let a: Applied = sm2.meta(APPLIED).unwrap().unwrap();
        assert_eq!(
            (a.last_applied, a.owned, a.released_at),
            (newer.meta.last_log_id, applied.owned, applied.released_at)
        );
        let current = sm2.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, newer.meta);
        assert_eq!(current.snapshot.path, sm2.snapshot_dir().path().join("3-60.snap"));
        assert_eq!(current.snapshot.crc32, newer.snapshot.crc32);
        assert_eq!(snapshot_files(sm2.snapshot_dir()), ["3-60.snap", "recv-damaged.part"]);

        // A restart deletes unfinished files; a retired replica leaves nothing behind.
        drop(sm2);
        let sm2 = KvStateMachine::open(db2.clone(), 7, dir2.path()).unwrap();
        assert_eq!(snapshot_files(sm2.snapshot_dir()), ["3-60.snap"]);
        KvStateMachine::purge(&db2, dir2.path(), 7).unwrap();
        assert!(all_rows(&db2, 7).is_empty());
        assert!(!sm2.snapshot_dir().path().exists());
        assert_eq!(all_rows(&db2, 70).len(), 1);
    }

    // --- Shard moves: a state machine driven through `apply_entries`, which `apply` calls.

    /// An order's state machine with the index its next entry gets.
    struct Sm {
        sm: KvStateMachine,
        next: u64,
    }

    impl Sm {
        fn open(db: &Arc<Database>, dir: &Path, order: OrderId) -> Self {
            Sm { sm: KvStateMachine::open(db.clone(), order, dir).unwrap(), next: 1 }
        }

        /// Applies the commands as one batch of entries, at the next indices.
        async fn apply(&mut self, cmds: impl IntoIterator<Item = KvCommand>) -> Vec<KvResponse> {
            let next = &mut self.next;
            let entries = cmds
                .into_iter()
                .map(|c| {
                    *next += 1;
                    EntryOf::<OrderConfig>::new_normal(openraft::testing::log_id::<OrderConfig>(1, 1, *next - 1), c)
                })
                .collect();
            self.sm.apply_entries(entries).await.unwrap()
        }

        async fn one(&mut self, cmd: KvCommand) -> KvResponse {
            self.apply([cmd]).await.remove(0)
        }

        /// The index of the last entry applied.
        fn last(&self) -> u64 {
            self.next - 1
        }

        /// Every chunk of one pass, each read after the previous chunk's last key.
        fn export_pass(&self, shard: u32, move_id: u64, mode: ExportMode, limit: usize) -> Vec<ExportChunk> {
            let mut chunks: Vec<ExportChunk> = Vec::new();
            loop {
                let after = chunks.last().and_then(|c| c.rows.last()).map(|r| r.key.clone());
                let chunk = self.sm.export(shard, move_id, mode, after.as_deref(), limit).unwrap();
                let more = chunk.more;
                chunks.push(chunk);
                if !more {
                    return chunks;
                }
            }
        }

        fn rows(&self, shard: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.sm.scan(shard, b"", usize::MAX).unwrap()
        }

        fn shard_stats(&self, shard: u32) -> ShardStats {
            self.sm.stats().unwrap().get(&shard).copied().unwrap_or_default()
        }
    }

    fn new_db(dir: &tempfile::TempDir) -> Arc<Database> {
        Arc::new(Database::create(dir.path().join("db.redb")).unwrap())
    }

    fn put(shard: u32, key: &str, value: &str) -> KvCommand {
        KvCommand::Put { shard, key: key.into(), value: value.into() }
    }

    fn del(shard: u32, key: &str) -> KvCommand {
        KvCommand::Delete { shard, key: key.into() }
    }

    fn row(key: &str, value: Option<&str>) -> MoveRow {
        MoveRow { key: key.into(), value: value.map(|v| ByteBuf::from(v.as_bytes())) }
    }

    fn rows_of(chunks: &[ExportChunk]) -> Vec<MoveRow> {
        chunks.iter().flat_map(|c| c.rows.clone()).collect()
    }

    const REFUSED: KvResponse = KvResponse { existed: false, wrong_shard: false, refused: true, owner_epoch: 0 };
    const DONE: KvResponse = KvResponse { existed: false, wrong_shard: false, refused: false, owner_epoch: 0 };

    /// Every dirty-table entry of `order`, by shard and key.
    fn all_dirty(db: &Database, order: OrderId) -> Vec<(u32, Vec<u8>, u64)> {
        let txn = db.begin_read().unwrap();
        let mut out = Vec::new();
        for (shard, name) in numbered_tables(txn.list_tables().unwrap(), &dirty_prefix(order)) {
            for item in txn.open_table(dirty_table(&name)).unwrap().iter().unwrap() {
                let (k, i) = item.unwrap();
                out.push((shard, k.value().to_vec(), i.value()));
            }
        }
        out
    }

    fn dirty_exists(db: &Database, order: OrderId, shard: u32) -> bool {
        let txn = db.begin_read().unwrap();
        open_read(&txn, dirty_table(&dirty_name(order, shard))).unwrap().is_some()
    }

    /// S1. The source exports its rows in chunks, and then exactly the keys written since an
    /// index, with their values now or as tombstones; only for the move it tracks.
    #[tokio::test]
    async fn a_tracked_shard_exports_its_base_and_its_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = Sm::open(&new_db(&dir), dir.path(), 1);
        src.one(KvCommand::Acquire { shards: vec![3], epoch: 1 }).await;
        src.apply((0..20).map(|i| put(3, &format!("k{i:02}"), &format!("v{i:02}")))).await;
        let not_tracking = src.sm.export(3, 5, ExportMode::Base, None, 100);
        assert!(matches!(not_tracking, Err(ExportError::NotTracking { order: 1, shard: 3, move_id: 5 })));
        assert_eq!(src.one(KvCommand::Track { shard: 4, move_id: 5 }).await, REFUSED, "shard 4 is not owned");
        assert_eq!(src.one(KvCommand::Track { shard: 3, move_id: 5 }).await, DONE);
        assert!(matches!(src.sm.export(3, 6, ExportMode::Base, None, 100), Err(ExportError::NotTracking { .. })));
        assert_eq!(src.sm.move_state().unwrap().tracking, [(3, 5)].into());

        tracing::info!("--- the base, 6-byte rows in chunks of at most 24 bytes");
        let base = src.export_pass(3, 5, ExportMode::Base, 24);
        assert_eq!(src.export_pass(3, 5, ExportMode::Base, 23)[0].rows.len(), 3, "a chunk never passes its limit");
        assert_eq!(base.iter().map(|c| c.rows.len()).collect::<Vec<_>>(), [4, 4, 4, 4, 4]);
        let expected: Vec<MoveRow> = (0..20).map(|i| row(&format!("k{i:02}"), Some(&format!("v{i:02}")))).collect();
        assert_eq!(rows_of(&base), expected);
        let x = src.last();
        for c in &base {
            assert_eq!((c.applied_index, c.frozen, c.stats), (x, false, src.shard_stats(3)));
        }
        assert_eq!(src.shard_stats(3).keys, 20);
        let one = src.sm.export(3, 5, ExportMode::Base, Some(b"k18"), 0).unwrap();
        assert_eq!((one.rows, one.more), (vec![row("k19", Some("v19"))], false), "a zero limit still moves a row");

        tracing::info!("--- writes after the base: the delta holds them, not the rows written before Track");
        let resp = src.apply([put(3, "k05", "new"), del(3, "k07"), put(3, "k25", "v25"), del(3, "nothing")]).await;
        assert_eq!(resp.iter().map(|r| r.existed).collect::<Vec<_>>(), [true, true, false, false]);
        let changed = vec![row("k05", Some("new")), row("k07", None), row("k25", Some("v25")), row("nothing", None)];
        let delta = src.export_pass(3, 5, ExportMode::Delta { after_index: x }, 1 << 20);
        assert_eq!((delta.len(), rows_of(&delta)), (1, changed.clone()));
        assert_eq!(rows_of(&src.export_pass(3, 5, ExportMode::Delta { after_index: 0 }, 1 << 20)), changed);
        let after_k07 = src.sm.export(3, 5, ExportMode::Delta { after_index: x }, Some(b"k07"), 1).unwrap();
        assert_eq!((after_k07.rows, after_k07.more), (vec![row("k25", Some("v25"))], true));

        tracing::info!("--- a key written again shows in the next round only once");
        let y = src.last();
        src.apply([put(3, "k05", "newer"), put(3, "k05", "newest")]).await;
        let round = src.export_pass(3, 5, ExportMode::Delta { after_index: y }, 1 << 20);
        assert_eq!(rows_of(&round), [row("k05", Some("newest"))]);
        assert_eq!(round[0].applied_index, src.last());

        tracing::info!("--- Track again: the same move keeps its keys, another starts afresh");
        assert_eq!(src.one(KvCommand::Track { shard: 3, move_id: 5 }).await, DONE);
        assert_eq!(all_dirty(&src.sm.db, 1).len(), 4);
        assert_eq!(src.one(KvCommand::Track { shard: 3, move_id: 6 }).await, DONE);
        assert!(all_dirty(&src.sm.db, 1).is_empty());
        assert!(src.sm.export(3, 5, ExportMode::Base, None, 100).is_err());
        assert_eq!(src.one(KvCommand::Untrack { shard: 3, move_id: 5 }).await, REFUSED);
        assert_eq!(src.one(KvCommand::Untrack { shard: 3, move_id: 6 }).await, DONE);
        assert!(!dirty_exists(&src.sm.db, 1, 3));
        assert_eq!(src.sm.move_state().unwrap(), MoveState::default());
        assert!(!src.one(put(3, "k30", "v")).await.refused, "an untracked write is not recorded");
        assert!(!dirty_exists(&src.sm.db, 1, 3));
    }

    /// The `Ingest` of one chunk, advancing `cursor` the way a pull does (a chunk without
    /// more ends its pass).
    fn ingest(shard: u32, move_id: u64, chunk: &ExportChunk, cursor: &mut MoveCursor) -> KvCommand {
        let follows = cursor.clone();
        let starting = cursor.after_key.is_none();
        cursor.pass_index = if starting { chunk.applied_index } else { cursor.pass_index.min(chunk.applied_index) };
        cursor.after_key = chunk.rows.last().map(|r| ByteBuf::from(r.key.clone())).filter(|_| chunk.more);
        if !chunk.more {
            cursor.base_done = true;
            cursor.watermark = cursor.pass_index;
        }
        KvCommand::Ingest { shard, move_id, follows, rows: chunk.rows.clone(), cursor: cursor.clone() }
    }

    /// S2. A destination in the same database receives a shard: Prepare and Ingest repeat
    /// safely, Seal checks the source's digest, Acquire waits for the seal, and the copy ends
    /// with the source's rows and stats.
    #[tokio::test]
    async fn a_shard_moves_between_orders_and_seals_on_the_source_digest() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let (mut src, mut dst) = (Sm::open(&db, dir.path(), 1), Sm::open(&db, dir.path(), 2));
        src.one(KvCommand::Acquire { shards: vec![3, 4], epoch: 1 }).await;
        src.apply((0..50).map(|i| put(3, &format!("key-{i:03}"), &"x".repeat(i)))).await;
        src.one(put(4, "other", "shard")).await;
        src.one(KvCommand::Track { shard: 3, move_id: 7 }).await;

        tracing::info!("--- an earlier attempt left rows; Prepare for this move clears them once");
        assert_eq!(dst.one(KvCommand::Prepare { shard: 3, move_id: 6 }).await, DONE);
        let junk = vec![row("junk", Some("j"))];
        let old = KvCommand::Ingest {
            shard: 3,
            move_id: 6,
            follows: MoveCursor::default(),
            rows: junk,
            cursor: MoveCursor::default(),
        };
        assert_eq!(dst.one(old).await, DONE);
        assert_eq!(dst.one(KvCommand::Prepare { shard: 3, move_id: 7 }).await, DONE);
        assert_eq!((dst.rows(3), dst.shard_stats(3)), (vec![], ShardStats::default()));

        tracing::info!("--- the base, ingested twice");
        let base = src.export_pass(3, 7, ExportMode::Base, 200);
        assert!(base.len() > 3, "{} chunks", base.len());
        let mut cursor = MoveCursor::default();
        for c in &base {
            assert_eq!(dst.one(ingest(3, 7, c, &mut cursor)).await, DONE);
        }
        let once = dst.shard_stats(3);
        assert_eq!(once, src.shard_stats(3));
        let progress = dst.sm.move_state().unwrap();
        assert_eq!(dst.one(KvCommand::Prepare { shard: 3, move_id: 7 }).await, DONE, "again: keeps progress");
        assert_eq!(dst.one(KvCommand::Prepare { shard: 3, move_id: 6 }).await, REFUSED, "a late earlier move");
        assert_eq!((dst.shard_stats(3), dst.sm.move_state().unwrap()), (once, progress));
        for c in &base {
            dst.one(ingest(3, 7, c, &mut cursor)).await;
        }
        assert_eq!(dst.shard_stats(3), once);
        let wrong_move = KvCommand::Ingest {
            shard: 3,
            move_id: 8,
            follows: MoveCursor::default(),
            rows: vec![row("x", Some("y"))],
            cursor: MoveCursor::default(),
        };
        assert_eq!(dst.one(wrong_move).await, REFUSED);
        assert_eq!(dst.sm.move_state().unwrap().incoming[&3].cursor, cursor);
        assert!(cursor.base_done && cursor.after_key.is_none());

        tracing::info!("--- the source keeps serving, then freezes");
        src.apply([put(3, "key-001", "changed"), del(3, "key-002"), put(3, "key-100", "new")]).await;
        src.one(KvCommand::Release { shards: vec![3], epoch: 8 }).await;
        assert!(src.one(put(3, "key-003", "late")).await.wrong_shard);

        tracing::info!("--- the final delta, then Seal and Acquire");
        let last = src.export_pass(3, 7, ExportMode::Delta { after_index: cursor.watermark }, 1 << 20);
        assert_eq!(rows_of(&last).len(), 3);
        let digest = last[0].stats;
        assert!(last[0].frozen);
        for c in &last {
            dst.one(ingest(3, 7, c, &mut cursor)).await;
        }
        assert_eq!(dst.one(KvCommand::Seal { shard: 3, move_id: 6, digest }).await, REFUSED);
        assert_eq!(dst.one(KvCommand::Acquire { shards: vec![3, 9], epoch: 8 }).await, DONE);
        assert_eq!(dst.sm.owned().unwrap(), [9].into(), "an unsealed shard is not acquired, others are");
        assert_eq!(dst.one(KvCommand::Seal { shard: 3, move_id: 7, digest }).await, DONE);
        assert!(dst.sm.move_state().unwrap().incoming[&3].sealed);
        let after_seal = KvCommand::Ingest {
            shard: 3,
            move_id: 7,
            follows: MoveCursor::default(),
            rows: vec![row("x", Some("y"))],
            cursor: MoveCursor::default(),
        };
        assert_eq!(dst.one(after_seal).await, REFUSED, "sealed rows do not change");
        assert_eq!(dst.one(KvCommand::Acquire { shards: vec![3], epoch: 8 }).await, DONE);
        assert_eq!(dst.sm.owned().unwrap(), [3, 9].into());
        assert_eq!(dst.sm.move_state().unwrap(), MoveState::default());
        assert_eq!(dst.one(KvCommand::Prepare { shard: 3, move_id: 7 }).await, REFUSED, "owned");

        assert_eq!(dst.rows(3), src.rows(3));
        assert_eq!(dst.shard_stats(3), src.shard_stats(3));
        assert_eq!(dst.sm.get(3, b"key-001").unwrap(), Some(b"changed".to_vec()));
        assert_eq!(dst.sm.get(3, b"key-002").unwrap(), None);
        assert_eq!(src.rows(4).len(), 1, "the source's other shard is untouched");
        assert!(dst.rows(4).is_empty());
    }

    /// S2b. A chunk proposed after a gap (an earlier chunk of its pass lost with a herald, or
    /// proposed out of order) does not move the log's cursor, and a copy whose rows do not
    /// match the frozen digest starts over instead of waiting forever.
    #[tokio::test]
    async fn a_chunk_after_a_gap_is_refused_and_a_wrong_copy_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let (mut src, mut dst) = (Sm::open(&db, dir.path(), 1), Sm::open(&db, dir.path(), 2));
        src.one(KvCommand::Acquire { shards: vec![3], epoch: 1 }).await;
        src.apply((0..30).map(|i| put(3, &format!("key-{i:03}"), &"x".repeat(20)))).await;
        src.one(KvCommand::Track { shard: 3, move_id: 7 }).await;
        dst.one(KvCommand::Prepare { shard: 3, move_id: 7 }).await;
        let base = src.export_pass(3, 7, ExportMode::Base, 200);
        assert!(base.len() >= 3, "{} chunks", base.len());

        let mut cursor = MoveCursor::default();
        let first = ingest(3, 7, &base[0], &mut cursor);
        let _lost = ingest(3, 7, &base[1], &mut cursor);
        let third = ingest(3, 7, &base[2], &mut cursor);
        assert_eq!(dst.one(first).await, DONE);
        let before = (dst.rows(3), dst.sm.move_state().unwrap());
        assert_eq!(dst.one(third).await, REFUSED, "the second chunk never landed");
        assert_eq!((dst.rows(3), dst.sm.move_state().unwrap()), before);

        tracing::info!("--- a copy that misses rows does not seal, and asks for a new base");
        src.one(KvCommand::Release { shards: vec![3], epoch: 8 }).await;
        let digest = src.shard_stats(3);
        assert_eq!(dst.one(KvCommand::Seal { shard: 3, move_id: 7, digest }).await, REFUSED);
        let incoming = dst.sm.move_state().unwrap().incoming[&3].clone();
        assert_eq!((incoming.cursor, incoming.sealed), (MoveCursor::default(), false));
        assert_eq!((dst.rows(3), dst.shard_stats(3)), (vec![], ShardStats::default()));

        tracing::info!("--- the new base seals");
        let mut cursor = MoveCursor::default();
        for c in &src.export_pass(3, 7, ExportMode::Base, 200) {
            assert_eq!(dst.one(ingest(3, 7, c, &mut cursor)).await, DONE);
        }
        assert_eq!(dst.one(KvCommand::Seal { shard: 3, move_id: 7, digest }).await, DONE);
        assert_eq!(dst.rows(3), src.rows(3));
    }

    /// Builds a snapshot of `from` and installs it on `to` through openraft's API, as a
    /// received file in `to`'s snapshot directory.
    async fn copy_snapshot(
        from: &mut KvStateMachine,
        to: &mut KvStateMachine,
    ) -> SnapshotOf<OrderConfig, SnapshotFile> {
        let snap = from.build_snapshot().await.unwrap();
        let path = to.snapshot_dir().path().join("recv.part");
        std::fs::copy(&snap.snapshot.path, &path).unwrap();
        to.install_snapshot(&snap.meta, SnapshotFile { path, ..snap.snapshot.clone() }).await.unwrap();
        snap
    }

    /// S3. A snapshot carries the owned shards, release epochs, stats, move state and dirty
    /// tables: a replica that installs it exports the same delta as the one that built it.
    #[tokio::test]
    async fn move_state_and_dirty_tables_travel_in_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Sm::open(&new_db(&dir), dir.path(), 1);
        a.one(KvCommand::Acquire { shards: vec![1, 2, 3, 4], epoch: 1 }).await;
        a.apply((0..30).map(|i| put(i % 3 + 1, &format!("k{i}"), "v"))).await;
        // Shard 4's table ends empty: it has no stats entry, here or where the snapshot goes.
        a.apply([put(4, "brief", "x"), del(4, "brief")]).await;
        a.apply([KvCommand::Track { shard: 2, move_id: 5 }, KvCommand::Track { shard: 3, move_id: 5 }]).await;
        a.apply([put(2, "k1", "w"), del(2, "k4"), put(2, "new", "n")]).await;
        a.one(KvCommand::Release { shards: vec![1], epoch: 4 }).await;
        a.one(KvCommand::Prepare { shard: 9, move_id: 6 }).await;
        let cursor = MoveCursor { after_key: Some(ByteBuf::from(b"r".to_vec())), pass_index: 77, ..Default::default() };
        let follows = MoveCursor::default();
        a.one(KvCommand::Ingest { shard: 9, move_id: 6, follows, rows: vec![row("r", Some("s"))], cursor }).await;

        let dir2 = tempfile::tempdir().unwrap();
        let mut b = Sm::open(&new_db(&dir2), dir2.path(), 1);
        // Stale state of the same order on the installing node goes.
        b.one(KvCommand::Acquire { shards: vec![5], epoch: 1 }).await;
        b.apply([put(5, "stale", "x"), KvCommand::Track { shard: 5, move_id: 2 }, put(5, "stale2", "y")]).await;

        copy_snapshot(&mut a.sm, &mut b.sm).await;
        assert_eq!(b.sm.owned().unwrap(), [2, 3, 4].into());
        let owner_epoch = |s: &Sm| s.sm.read_key(2, b"k1", false).unwrap().map(|(_, e)| e);
        assert_eq!(owner_epoch(&b), Some(1), "the owner epochs travel too");
        assert_eq!(owner_epoch(&b), owner_epoch(&a));
        let applied = |s: &Sm| s.sm.meta::<Applied>(APPLIED).unwrap().unwrap();
        assert_eq!(applied(&b), applied(&a));
        assert_eq!(applied(&b).released_at, [(1, 4)].into());
        assert_eq!(b.sm.stats().unwrap(), a.sm.stats().unwrap());
        assert_eq!(b.sm.stats().unwrap().keys().copied().collect::<Vec<_>>(), [1, 2, 3, 9]);
        assert_eq!(b.sm.move_state().unwrap(), a.sm.move_state().unwrap());
        assert_eq!(all_dirty(&b.sm.db, 1), all_dirty(&a.sm.db, 1));
        assert_eq!(all_dirty(&b.sm.db, 1).len(), 3);
        assert!(dirty_exists(&b.sm.db, 1, 3), "a tracked shard without writes keeps its empty dirty table");
        assert!(!dirty_exists(&b.sm.db, 1, 5));
        for shard in [2, 3] {
            let delta = |s: &Sm| s.export_pass(shard, 5, ExportMode::Delta { after_index: 0 }, 1 << 20);
            assert_eq!(delta(&b), delta(&a));
            let base = |s: &Sm| s.export_pass(shard, 5, ExportMode::Base, 1 << 20);
            assert_eq!(base(&b), base(&a));
        }
        assert_eq!(rows_of(&b.export_pass(2, 5, ExportMode::Delta { after_index: 0 }, 1 << 20)).len(), 3);
    }

    /// A snapshot file of the previous release (format 1, no move state or dirty tables)
    /// installs, computing the stats of its rows and clearing the replica's move state.
    #[tokio::test]
    async fn a_version_1_snapshot_installs() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = Sm::open(&new_db(&dir), dir.path(), 4);
        sm.one(KvCommand::Acquire { shards: vec![1], epoch: 1 }).await;
        sm.apply([KvCommand::Track { shard: 1, move_id: 3 }, put(1, "k", "v")]).await;
        let meta = SnapshotMetaOf::<OrderConfig> {
            last_log_id: Some(openraft::testing::log_id::<OrderConfig>(2, 1, 40)),
            ..Default::default()
        };
        let header = SnapshotHeader {
            meta: meta.clone(),
            owned: [2].into(),
            released_at: [(1, 5)].into(),
            moves: MoveState::default(),
            modulus: None,
            acquired_at: BTreeMap::new(),
        };
        let path = sm.sm.snapshot_dir().path().join("old.part");
        let mut w = SnapshotWriter::new_v1(File::create(&path).unwrap(), &header).unwrap();
        w.record(2, b"a", b"1").unwrap();
        w.record(2, b"b", b"22").unwrap();
        let (_, summary) = w.finish().unwrap();
        let file = SnapshotFile { path, len: summary.file_bytes, crc32: summary.crc32 };
        sm.sm.install_snapshot(&meta, file).await.unwrap();

        assert_eq!(sm.sm.owned().unwrap(), [2].into());
        assert_eq!(sm.sm.move_state().unwrap(), MoveState::default());
        assert!(all_dirty(&sm.sm.db, 4).is_empty() && !dirty_exists(&sm.sm.db, 4, 1));
        let mut expected = ShardStats::default();
        expected.put(b"a", b"1", None);
        expected.put(b"b", b"22", None);
        assert_eq!(sm.sm.stats().unwrap(), [(2, expected)].into());
        assert_eq!(sm.rows(1), vec![]);
    }

    /// S4. Release fences writes and a stale Acquire; Drop waits until the shard is not
    /// served and is fenced by the move id; an old data dir gets its stats on open.
    #[tokio::test]
    async fn release_fences_and_drop_clears_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = Sm::open(&new_db(&dir), dir.path(), 1);
        sm.one(KvCommand::Acquire { shards: vec![1, 2], epoch: 3 }).await;
        let acquired_at_3 = KvResponse { owner_epoch: 3, ..DONE };
        assert_eq!(sm.apply([put(1, "a", "1"), put(2, "b", "2"), put(2, "c", "3")]).await, vec![acquired_at_3; 3]);
        sm.one(KvCommand::Track { shard: 2, move_id: 9 }).await;
        sm.one(put(2, "d", "4")).await;

        tracing::info!("--- Release fences writes; an Acquire decided before it is ignored");
        sm.one(KvCommand::Release { shards: vec![1], epoch: 5 }).await;
        assert_eq!(sm.one(put(1, "a", "late")).await, KvResponse { wrong_shard: true, ..Default::default() });
        assert_eq!(sm.one(del(1, "a")).await, KvResponse { wrong_shard: true, ..Default::default() });
        assert_eq!(sm.sm.get(1, b"a").unwrap(), Some(b"1".to_vec()));
        sm.apply([KvCommand::Acquire { shards: vec![1], epoch: 4 }, KvCommand::Acquire { shards: vec![1], epoch: 5 }])
            .await;
        assert_eq!(sm.sm.owned().unwrap(), [2].into());

        tracing::info!("--- Drop: refused while served or for another move");
        assert_eq!(sm.one(KvCommand::Drop { shard: 2, move_id: 9 }).await, REFUSED);
        sm.one(KvCommand::Release { shards: vec![2], epoch: 6 }).await;
        assert_eq!(sm.sm.move_state().unwrap().tracking, [(2, 9)].into(), "Release keeps tracking");
        assert_eq!(all_dirty(&sm.sm.db, 1).len(), 1);
        assert_eq!(sm.one(KvCommand::Drop { shard: 2, move_id: 8 }).await, REFUSED);
        assert_eq!(sm.shard_stats(2).keys, 3);
        assert_eq!(sm.one(KvCommand::Drop { shard: 2, move_id: 9 }).await, DONE);
        assert!(sm.rows(2).is_empty());
        assert!(!dirty_exists(&sm.sm.db, 1, 2));
        assert_eq!(sm.sm.move_state().unwrap(), MoveState::default());
        assert_eq!(sm.sm.stats().unwrap().keys().copied().collect::<Vec<_>>(), [1]);
        // Rows no move knows of are leftovers: any move's Drop clears them.
        assert_eq!(sm.one(KvCommand::Drop { shard: 1, move_id: 1 }).await, DONE);
        assert!(sm.rows(1).is_empty());
        assert_eq!(sm.sm.stats().unwrap(), BTreeMap::new());
        // A shard received for another move is not dropped.
        sm.one(KvCommand::Prepare { shard: 7, move_id: 10 }).await;
        assert_eq!(sm.one(KvCommand::Drop { shard: 7, move_id: 9 }).await, REFUSED);
        assert_eq!(sm.one(KvCommand::Drop { shard: 7, move_id: 10 }).await, DONE);
        assert_eq!(sm.sm.move_state().unwrap(), MoveState::default());
    }

    /// A data dir of the release before stats has shard tables but no stats record: open
    /// computes it, and apply (through openraft's API) keeps it up to date from there.
    #[tokio::test]
    async fn open_computes_the_stats_of_an_older_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let rows: Rows = (0..40u32).map(|i| (i % 4, format!("k{i}").into_bytes(), vec![b'v'; i as usize])).collect();
        put_rows(&db, 7, &rows);
        put_rows(&db, 8, &vec![(0, b"other".to_vec(), b"order".to_vec())]);
        set_applied(&db, 7, &Applied { owned: [0, 1, 2, 3].into(), ..Default::default() });
        let mut expected: BTreeMap<u32, ShardStats> = BTreeMap::new();
        for (s, k, v) in &rows {
            expected.entry(*s).or_default().put(k, v, None);
        }

        let mut sm = KvStateMachine::open(db.clone(), 7, dir.path()).unwrap();
        assert_eq!(sm.stats().unwrap(), expected);
        assert!(sm.meta::<BTreeMap<u32, ShardStats>>(STATS).unwrap().is_some(), "stored");
        assert_eq!(KvStateMachine::open(db.clone(), 8, dir.path()).unwrap().stats().unwrap().len(), 1);

        let entry = |index, cmd| {
            let e = EntryOf::<OrderConfig>::new_normal(openraft::testing::log_id::<OrderConfig>(1, 1, index), cmd);
            Ok((e, None))
        };
        let entries = vec![entry(1, put(1, "k1", "replaced")), entry(2, del(2, "k2")), entry(3, put(3, "fresh", "x"))];
        sm.apply(futures::stream::iter(entries)).await.unwrap();
        let s = expected.get_mut(&1).unwrap();
        s.put(b"k1", b"replaced", Some(b"v"));
        expected.get_mut(&2).unwrap().remove(b"k2", b"vv");
        expected.get_mut(&3).unwrap().put(b"fresh", b"x", None);
        assert_eq!(sm.stats().unwrap(), expected);
        assert_eq!(sm.stats().unwrap(), KvStateMachine::open(db.clone(), 7, dir.path()).unwrap().stats().unwrap());
        KvStateMachine::purge(&db, dir.path(), 7).unwrap();
        assert_eq!(sm.stats().unwrap(), BTreeMap::new());
        assert_eq!(sm.move_state().unwrap(), MoveState::default());
    }

    /// A fracture splits each table in two by the keys' hashes under the doubled count and
    /// keeps every key readable through either count; a consolidation merges them back.
    #[tokio::test]
    async fn fracture_and_consolidate_recut_the_tables_and_keep_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = Sm::open(&new_db(&dir), dir.path(), 1);
        sm.one(KvCommand::Acquire { shards: vec![0, 1, 2, 3], epoch: 1 }).await;
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        sm.apply(keys.iter().map(|k| put(radiant_proto::shard_of(k.as_bytes(), 4), k, k))).await;
        let before: ShardStats = sm.sm.stats().unwrap().values().fold(ShardStats::default(), |mut a, s| {
            a.keys += s.keys;
            a.bytes += s.bytes;
            a.sum = a.sum.wrapping_add(s.sum);
            a
        });
        assert_eq!(sm.one(KvCommand::Reshard { from: 4, to: 12 }).await, REFUSED, "neither double nor half");
        assert_eq!(sm.one(KvCommand::Reshard { from: 4, to: 8 }).await, DONE);
        assert_eq!(sm.one(KvCommand::Reshard { from: 4, to: 8 }).await, DONE, "again: nothing changes");
        assert_eq!(sm.one(KvCommand::Reshard { from: 16, to: 32 }).await, REFUSED, "the tables are cut by 8");
        assert_eq!(sm.sm.modulus().unwrap(), Some(8));
        assert_eq!(sm.sm.owned().unwrap(), (0..8).collect());
        let stats = sm.sm.stats().unwrap();
        assert!(stats.keys().all(|s| *s < 8) && stats.len() == 8, "{stats:?}");
        for (shard, st) in &stats {
            let rows = sm.rows(*shard);
            assert_eq!(st.keys as usize, rows.len());
            assert!(rows.iter().all(|(k, _)| radiant_proto::shard_of(k, 8) == *shard), "shard {shard}");
        }
        let after = stats.values().fold(ShardStats::default(), |mut a, s| {
            a.keys += s.keys;
            a.bytes += s.bytes;
            a.sum = a.sum.wrapping_add(s.sum);
            a
        });
        assert_eq!(after, before, "no row lost or doubled");
        for k in &keys {
            let (s4, s8) = (radiant_proto::shard_of(k.as_bytes(), 4), radiant_proto::shard_of(k.as_bytes(), 8));
            for hint in [s4, s8] {
                let read = sm.sm.read_key(hint, k.as_bytes(), false).unwrap().map(|(v, _)| v);
                assert_eq!(read, Some(Some(k.clone().into_bytes())));
            }
        }
        // A scan under the old count covers both children; under the new one, one table.
        let old = sm.sm.scan_served(1, 4, b"", usize::MAX, false).unwrap().unwrap();
        let expected: Vec<&String> = keys.iter().filter(|k| radiant_proto::shard_of(k.as_bytes(), 4) == 1).collect();
        assert_eq!(old.len(), expected.len());
        assert!(sm.sm.scan_served(1, 32, b"", 10, false).unwrap().is_none(), "two steps apart");
        // Writes named with the old count land in the new tables.
        sm.one(put(0, "late", "v")).await;
        let s8 = radiant_proto::shard_of(b"late", 8);
        assert!(sm.rows(s8).iter().any(|(k, _)| k == b"late"));

        assert_eq!(sm.one(KvCommand::Reshard { from: 8, to: 4 }).await, DONE);
        assert_eq!(sm.sm.modulus().unwrap(), Some(4));
        assert_eq!(sm.sm.owned().unwrap(), (0..4).collect());
        for k in keys.iter().chain([&"late".to_string()]) {
            let s4 = radiant_proto::shard_of(k.as_bytes(), 4);
            assert!(sm.sm.read_key(s4, k.as_bytes(), false).unwrap().unwrap().0.is_some(), "{k}");
        }
        assert!(sm.sm.stats().unwrap().keys().all(|s| *s < 4));
        // A tracked shard blocks a reshard.
        sm.one(KvCommand::Track { shard: 2, move_id: 9 }).await;
        assert_eq!(sm.one(KvCommand::Reshard { from: 4, to: 8 }).await, REFUSED);
        // A retired replica leaves no cut count behind for a later replica of the order.
        KvStateMachine::purge(&sm.sm.db, dir.path(), 1).unwrap();
        assert_eq!(sm.sm.modulus().unwrap(), None);
    }
}
