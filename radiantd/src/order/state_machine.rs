//! An order's state machine: one redb table per shard, in the node's database file.
//!
//! Applied batches are committed with `Durability::None`: the Raft log is the durable record
//! (its appends are fsynced, and every fsynced commit also persists the earlier non-durable
//! ones), so an applied batch lost in a crash is simply applied again from the log. Snapshots
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
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use redb::Database;
use redb::Durability;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::ReadableTableMetadata;
use redb::TableDefinition;
use redb::TableHandle;
use serde::Deserialize;
use serde::Serialize;

use super::shard_move::ExportChunk;
use super::shard_move::ExportError;
use super::shard_move::ExportMode;
use super::shard_move::MoveCursor;
use super::shard_move::MoveRow;
use super::shard_move::MoveState;
use super::shard_move::ShardStats;
use super::snapshot_file::SnapshotDir;
use super::snapshot_file::SnapshotFile;
use super::snapshot_format::SnapshotHeader;
use super::snapshot_format::SnapshotReader;
use super::snapshot_format::SnapshotWriter;
use crate::identity::OrderId;
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
    /// Destination: rows pulled from the source, and where the pull stands after them.
    Ingest {
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
            KvCommand::Ingest { shard, move_id, rows, .. } => {
                write!(f, "ingest {} rows of shard {shard} in move {move_id}", rows.len())
            }
            KvCommand::Seal { shard, move_id, .. } => write!(f, "seal shard {shard} in move {move_id}"),
            KvCommand::Drop { shard, move_id } => write!(f, "drop shard {shard} after move {move_id}"),
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
}

openraft::declare_raft_types!(
    /// Types of an order's Raft group.
    pub OrderConfig:
        D = KvCommand,
        R = KvResponse,
);

/// An order's Raft handle.
pub type OrderRaft = openraft::Raft<OrderConfig, KvStateMachine>;

const META: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("order_meta");
const APPLIED: &str = "applied";
/// Where versions before snapshot files kept a whole copy of the snapshot; deleted on open.
const LEGACY_SNAPSHOT: &str = "snapshot";
/// Which file is the current snapshot ([`CurrentSnapshot`]).
const SNAPSHOT_FILE: &str = "snapshot_file";

/// Buffer of the snapshot file readers and writers: large sequential I/O.
const FILE_BUFFER: usize = 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogIdOf<OrderConfig>>,
    last_membership: StoredMembershipOf<OrderConfig>,
    /// The shards this order serves, as its own log decided.
    owned: BTreeSet<u32>,
    /// The map epoch each shard was last released at. An acquire decided on an older map is
    /// ignored: it may have been decided before a handover that has completed since.
    released_at: BTreeMap<u32, u64>,
}

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

fn io_err(e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(e.into())
}

fn table_name(order: OrderId, shard: u32) -> String {
    format!("kv_o{order}_s{shard}")
}

/// The shard tables of `order` in the database, with their shard numbers.
fn shard_tables(txn: &redb::ReadTransaction, order: OrderId) -> io::Result<Vec<(u32, String)>> {
    let prefix = format!("kv_o{order}_s");
    Ok(txn
        .list_tables()
        .map_err(io_err)?
        .filter_map(|h| {
            let name = h.name().to_string();
            let shard = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((shard, name))
        })
        .collect())
}

/// An open shard table in a write transaction.
type ShardTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

fn shard_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
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
        }
        txn.commit().map_err(io_err)?;
        Ok(Self { db, order, snapshots })
    }

    /// Deletes this order's data, applied state and snapshot files on this node (its replica
    /// here was retired).
    pub fn purge(db: &Database, data_dir: &Path, order: OrderId) -> io::Result<()> {
        let tables = shard_tables(&db.begin_read().map_err(io_err)?, order)?;
        let txn = db.begin_write().map_err(io_err)?;
        for (_, name) in tables {
            txn.delete_table(shard_table(&name)).map_err(io_err)?;
        }
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            for key in [APPLIED, LEGACY_SNAPSHOT, SNAPSHOT_FILE] {
                meta.remove((order, key)).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)?;
        SnapshotDir::new(data_dir, order).remove_all()
    }

    /// The directory of this order's snapshot files, where incoming snapshots are received.
    pub fn snapshot_dir(&self) -> &SnapshotDir {
        &self.snapshots
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(META).map_err(io_err)?;
        match t.get((self.order, key)).map_err(io_err)? {
            Some(v) => Ok(Some(codec::decode_stored(v.value())?)),
            None => Ok(None),
        }
    }

    /// The shards this order serves, per its applied log.
    pub fn owned(&self) -> io::Result<BTreeSet<u32>> {
        Ok(self.meta::<Applied>(APPLIED)?.unwrap_or_default().owned)
    }

    /// Keys, bytes and digest of each shard table of this order, per its applied log.
    pub fn stats(&self) -> io::Result<BTreeMap<u32, ShardStats>> {
        Ok(BTreeMap::new())
    }

    /// The order's move state, per its applied log.
    pub fn move_state(&self) -> io::Result<MoveState> {
        Ok(MoveState::default())
    }

    /// One chunk of `shard` for the destination of move `move_id`, read in one read
    /// transaction: rows after `after_key` (base: the table; delta: keys written after the
    /// index), about `limit_bytes` of them but at least one. Refused unless this replica's
    /// applied log tracks the shard for that move.
    pub fn export(
        &self,
        shard: u32,
        move_id: u64,
        mode: ExportMode,
        after_key: Option<&[u8]>,
        limit_bytes: usize,
    ) -> Result<ExportChunk, ExportError> {
        let _ = (mode, after_key, limit_bytes);
        Err(ExportError::NotTracking { order: self.order, shard, move_id })
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
        let name = table_name(self.order, shard);
        let t = match txn.open_table(shard_table(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        Ok(t.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
    }

    /// Keys of a shard starting with `prefix`, in order, at most `limit`.
    pub fn scan(&self, shard: u32, prefix: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let name = table_name(self.order, shard);
        let t = match txn.open_table(shard_table(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(io_err(e)),
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
        let applied: Applied = match txn.open_table(META).map_err(io_err)?.get((self.order, APPLIED)).map_err(io_err)? {
            Some(v) => codec::decode_stored(v.value())?,
            None => Applied::default(),
        };
        let meta = SnapshotMetaOf::<OrderConfig> {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership.clone(),
        };
        let header = SnapshotHeader { meta: meta.clone(), owned: applied.owned, released_at: applied.released_at };
        let part = self.snapshots.part_path("build");
        let built = (|| {
            let out = BufWriter::with_capacity(FILE_BUFFER, File::create(&part)?);
            let mut w = SnapshotWriter::new(out, &header)?;
            let mut tables = self.shard_tables(&txn)?;
            tables.sort();
            for (shard, name) in tables {
                let t = txn.open_table(shard_table(&name)).map_err(io_err)?;
                for item in t.iter().map_err(io_err)? {
                    let (k, v) = item.map_err(io_err)?;
                    w.record(shard, k.value(), v.value())?;
                }
            }
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

    fn current_record(&self, meta: &SnapshotMetaOf<OrderConfig>, file: &SnapshotFile) -> io::Result<CurrentSnapshot> {
        let name = file
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other(format!("snapshot path {}", file.path.display())))?;
        Ok(CurrentSnapshot { meta: meta.clone(), file: name.to_string(), len: file.len, crc32: file.crc32 })
    }

    /// Replaces the order's state by a snapshot file's, in one write transaction: its shard
    /// tables are deleted, the file's rows inserted, its applied state written, and the file
    /// made current. The file's checksum is only known at its end, so nothing is committed
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
        let existing: Vec<String> = txn
            .list_tables()
            .map_err(io_err)?
            .map(|h| h.name().to_string())
            .filter(|n| n.strip_prefix(&format!("kv_o{}_s", self.order)).is_some_and(|s| s.parse::<u32>().is_ok()))
            .collect();
        for name in existing {
            txn.delete_table(shard_table(&name)).map_err(io_err)?;
        }
        {
            // Records come grouped by shard: keep the current shard's table open.
            let mut table: Option<(u32, ShardTable<'_>)> = None;
            while let Some((shard, k, v)) = r.next()? {
                let t = match &mut table {
                    Some((s, t)) if *s == shard => t,
                    _ => {
                        let name = table_name(self.order, shard);
                        let t = txn.open_table(shard_table(&name)).map_err(io_err)?;
                        &mut table.insert((shard, t)).1
                    }
                };
                t.insert(k, v).map_err(io_err)?;
            }
        }
        let header = r.header().clone();
        let summary = r.summary().ok_or_else(|| io::Error::other("snapshot read stopped before its end"))?;
        let applied = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            owned: header.owned,
            released_at: header.released_at,
        };
        let current = self.snapshots.publish(&file.path, meta.last_log_id.as_ref())?;
        let installed = SnapshotFile { path: current.clone(), len: summary.file_bytes, crc32: summary.crc32 };
        {
            let mut m = txn.open_table(META).map_err(io_err)?;
            m.insert((self.order, APPLIED), codec::encode_stored(&applied)?.as_slice()).map_err(io_err)?;
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
        let mut applied: Applied = self.meta(APPLIED)?.unwrap_or_default();
        let batch = self
            .blocking(move |db, order| {
                let mut txn = db.begin_write().map_err(io_err)?;
                txn.set_durability(Durability::None).map_err(io::Error::other)?;
                let mut out = Vec::with_capacity(batch.len());
                for (entry, responder) in batch {
                    applied.last_applied = Some(entry.log_id);
                    let resp = match &entry.payload {
                        EntryPayload::Blank => KvResponse::default(),
                        EntryPayload::Normal(KvCommand::Put { shard, .. } | KvCommand::Delete { shard, .. })
                            if !applied.owned.contains(shard) =>
                        {
                            KvResponse { wrong_shard: true, ..Default::default() }
                        }
                        EntryPayload::Normal(KvCommand::Acquire { shards, epoch }) => {
                            for s in shards {
                                if applied.released_at.get(s).is_none_or(|r| epoch > r) {
                                    applied.owned.insert(*s);
                                }
                            }
                            KvResponse::default()
                        }
                        EntryPayload::Normal(KvCommand::Release { shards, epoch }) => {
                            for s in shards {
                                applied.owned.remove(s);
                                applied.released_at.insert(*s, *epoch);
                            }
                            KvResponse::default()
                        }
                        EntryPayload::Normal(KvCommand::Put { shard, key, value }) => {
                            let name = table_name(order, *shard);
                            let mut t = txn.open_table(shard_table(&name)).map_err(io_err)?;
                            let existed = t.insert(key.as_slice(), value.as_slice()).map_err(io_err)?.is_some();
                            KvResponse { existed, ..Default::default() }
                        }
                        EntryPayload::Normal(KvCommand::Delete { shard, key }) => {
                            let name = table_name(order, *shard);
                            let mut t = txn.open_table(shard_table(&name)).map_err(io_err)?;
                            let existed = t.remove(key.as_slice()).map_err(io_err)?.is_some();
                            KvResponse { existed, ..Default::default() }
                        }
                        EntryPayload::Normal(
                            KvCommand::Track { .. }
                            | KvCommand::Untrack { .. }
                            | KvCommand::Prepare { .. }
                            | KvCommand::Ingest { .. }
                            | KvCommand::Seal { .. }
                            | KvCommand::Drop { .. },
                        ) => KvResponse { refused: true, ..Default::default() },
                        EntryPayload::Membership(m) => {
                            applied.last_membership =
                                StoredMembershipOf::<OrderConfig>::new(Some(entry.log_id), m.clone());
                            KvResponse::default()
                        }
                    };
                    out.push((responder, resp));
                }
                let bytes = codec::encode_stored(&applied)?;
                txn.open_table(META).map_err(io_err)?.insert((order, APPLIED), bytes.as_slice()).map_err(io_err)?;
                txn.commit().map_err(io_err)?;
                Ok(out)
            })
            .await?;
        for (responder, resp) in batch {
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
        let this = self.clone();
        let meta = meta.clone();
        self.blocking(move |_, _| this.install_snapshot_file(&meta, &snapshot)).await
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
}
