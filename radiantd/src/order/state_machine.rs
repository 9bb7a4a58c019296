//! An order's state machine: one redb table per shard, in the node's database file.
//!
//! Applied batches are committed with `Durability::None`: the Raft log is the durable record
//! (its appends are fsynced, and every fsynced commit also persists the earlier non-durable
//! ones), so an applied batch lost in a crash is simply applied again from the log. Snapshots
//! are written durably, because the log is purged behind them.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::io;
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
use serde_bytes::ByteBuf;

use crate::raft::codec;
use crate::station::map::OrderId;

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
const SNAPSHOT: &str = "snapshot";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogIdOf<OrderConfig>>,
    last_membership: StoredMembershipOf<OrderConfig>,
    /// The shards this order serves, as its own log decided.
    owned: BTreeSet<u32>,
    /// The map epoch each shard was last released at. An acquire decided on an older map is
    /// ignored: it may have been decided before a handover that has completed since.
    released_at: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<OrderConfig>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// All of an order's data, by shard: the snapshot format. Keys and values are `ByteBuf`s so
/// serde hands each to postcard as one byte string, not one element at a time.
type ShardData = BTreeMap<u32, Vec<(ByteBuf, ByteBuf)>>;

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

/// The state machine of one order on this node.
#[derive(Clone)]
pub struct KvStateMachine {
    db: Arc<Database>,
    order: OrderId,
}

impl KvStateMachine {
    /// Opens (or creates) the order's state in `db`.
    pub fn open(db: Arc<Database>, order: OrderId) -> io::Result<Self> {
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(META).map_err(io_err)?;
        txn.commit().map_err(io_err)?;
        Ok(Self { db, order })
    }

    /// Deletes this order's data and applied state on this node (its replica here was retired).
    pub fn purge(db: &Database, order: OrderId) -> io::Result<()> {
        let tables = shard_tables(&db.begin_read().map_err(io_err)?, order)?;
        let txn = db.begin_write().map_err(io_err)?;
        for (_, name) in tables {
            txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(io_err)?;
        }
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            for key in [APPLIED, SNAPSHOT] {
                meta.remove((order, key)).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(META).map_err(io_err)?;
        match t.get((self.order, key)).map_err(io_err)? {
            Some(v) => Ok(Some(codec::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// The shards this order serves, per its applied log.
    pub fn owned(&self) -> io::Result<BTreeSet<u32>> {
        Ok(self.meta::<Applied>(APPLIED)?.unwrap_or_default().owned)
    }

    /// Which of this order's shard tables hold data.
    pub fn nonempty(&self) -> io::Result<BTreeSet<u32>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let mut out = BTreeSet::new();
        for (shard, name) in self.shard_tables(&txn)? {
            let t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(io_err)?;
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
        let t = match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
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
        let t = match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
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

    /// The applied state and all data, read in one transaction so they match.
    fn dump(&self) -> io::Result<(Applied, ShardData)> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let applied: Applied = match txn.open_table(META).map_err(io_err)?.get((self.order, APPLIED)).map_err(io_err)? {
            Some(v) => codec::decode(v.value())?,
            None => Applied::default(),
        };
        let mut out = ShardData::new();
        for (shard, name) in self.shard_tables(&txn)? {
            let t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(io_err)?;
            let mut rows = Vec::new();
            for item in t.iter().map_err(io_err)? {
                let (k, v) = item.map_err(io_err)?;
                rows.push((ByteBuf::from(k.value()), ByteBuf::from(v.value())));
            }
            out.insert(shard, rows);
        }
        Ok((applied, out))
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
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<OrderConfig, Vec<u8>>, io::Error> {
        let this = self.clone();
        self.blocking(move |db, order| {
            let (applied, data) = this.dump()?;
            let data = codec::encode(&(&applied.owned, &applied.released_at, &data))?;
            let meta = SnapshotMetaOf::<OrderConfig> {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership,
            };
            let stored = codec::encode(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(META).map_err(io_err)?.insert((order, SNAPSHOT), stored.as_slice()).map_err(io_err)?;
            txn.commit().map_err(io_err)?;
            Ok(SnapshotOf::<OrderConfig, Vec<u8>> { meta, snapshot: data })
        })
        .await
    }
}

impl RaftStateMachine<OrderConfig> for KvStateMachine {
    type SnapshotData = Vec<u8>;
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
                            let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(io_err)?;
                            let existed = t.insert(key.as_slice(), value.as_slice()).map_err(io_err)?.is_some();
                            KvResponse { existed, wrong_shard: false }
                        }
                        EntryPayload::Normal(KvCommand::Delete { shard, key }) => {
                            let name = table_name(order, *shard);
                            let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(io_err)?;
                            let existed = t.remove(key.as_slice()).map_err(io_err)?.is_some();
                            KvResponse { existed, wrong_shard: false }
                        }
                        EntryPayload::Membership(m) => {
                            applied.last_membership =
                                StoredMembershipOf::<OrderConfig>::new(Some(entry.log_id), m.clone());
                            KvResponse::default()
                        }
                    };
                    out.push((responder, resp));
                }
                let bytes = codec::encode(&applied)?;
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
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let (owned, released_at, data): (BTreeSet<u32>, BTreeMap<u32, u64>, ShardData) = codec::decode(&snapshot)?;
        let applied = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            owned,
            released_at,
        };
        let stored = codec::encode(&StoredSnapshot { meta: meta.clone(), data: snapshot })?;
        let this = self.clone();
        self.blocking(move |db, order| {
            let existing = {
                let r = db.begin_read().map_err(io_err)?;
                this.shard_tables(&r)?
            };
            let txn = db.begin_write().map_err(io_err)?;
            for (_, name) in existing {
                txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(io_err)?;
            }
            for (shard, rows) in data {
                let name = table_name(order, shard);
                let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(io_err)?;
                for (k, v) in rows {
                    t.insert(k.as_slice(), v.as_slice()).map_err(io_err)?;
                }
            }
            let mut m = txn.open_table(META).map_err(io_err)?;
            m.insert((order, APPLIED), codec::encode(&applied)?.as_slice()).map_err(io_err)?;
            m.insert((order, SNAPSHOT), stored.as_slice()).map_err(io_err)?;
            drop(m);
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<OrderConfig, Vec<u8>>>, io::Error> {
        Ok(self
            .meta::<StoredSnapshot>(SNAPSHOT)?
            .map(|s| SnapshotOf::<OrderConfig, Vec<u8>> { meta: s.meta, snapshot: s.data }))
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

        type PlainShardData = BTreeMap<u32, Vec<(Vec<u8>, Vec<u8>)>>;
        let rows: PlainShardData = [(5, vec![(b"a".to_vec(), vec![1; 300])])].into();
        let data: ShardData = [(5, vec![(ByteBuf::from(b"a".to_vec()), ByteBuf::from(vec![1; 300]))])].into();
        assert_eq!(codec::encode(&data).unwrap(), codec::encode(&rows).unwrap());
    }
}
