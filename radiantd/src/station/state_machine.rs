//! The station's state machine: the cluster map, persisted in the node's redb file.
//!
//! The map is small and changes rarely, so every applied batch is written back whole, durably,
//! together with the last applied log id; a restart resumes from there instead of replaying
//! the whole log.

use std::io;
use std::sync::Arc;
use std::sync::RwLock;

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
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::TableDefinition;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use super::journal::Filter;
use super::journal::JOURNAL_CAP;
use super::journal::JournalEntry;
use super::legacy::SmStateV1;
use super::legacy::SnapshotV1;
use super::map::ClusterMap;
use super::map::StationCommand;
use super::map::StationResponse;
use crate::raft::codec;

openraft::declare_raft_types!(
    /// Types of the station's Raft group.
    pub StationConfig:
        D = StationCommand,
        R = StationResponse,
);

/// The station's Raft handle.
pub type StationRaft = openraft::Raft<StationConfig, StationStateMachine>;

const STATION_SM: TableDefinition<&str, &[u8]> = TableDefinition::new("station_sm");
/// The journal, by sequence number; each value a stored (versioned) [`JournalEntry`].
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("station_journal");
const STATE: &str = "state";
const SNAPSHOT: &str = "snapshot";

/// What the state machine persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmState {
    /// Last applied log id.
    pub last_applied: Option<LogIdOf<StationConfig>>,
    /// Last applied membership.
    pub last_membership: StoredMembershipOf<StationConfig>,
    /// The map.
    pub map: ClusterMap,
    /// Sequence number of the last journal entry written.
    pub journal_seq: u64,
}

/// A snapshot as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<StationConfig>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// Read access to the map for the RPC handlers and the coordinator; `epoch` ticks on every
/// applied change so waiters need not poll.
#[derive(Clone)]
pub struct MapView {
    state: Arc<RwLock<SmState>>,
    epoch: watch::Receiver<u64>,
    db: Arc<Database>,
}

impl MapView {
    /// A copy of the current map.
    pub fn map(&self) -> ClusterMap {
        self.state.read().unwrap_or_else(|p| p.into_inner()).map.clone()
    }

    /// Runs `f` on the current map without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&ClusterMap) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()).map)
    }

    /// A receiver that changes whenever the map does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.clone()
    }

    /// Journal entries after `after_epoch` that match `filter`, oldest first, at most the
    /// `limit` most recent (0: all).
    pub fn journal(&self, filter: &Filter, after_epoch: u64, limit: usize) -> io::Result<Vec<JournalEntry>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = match txn.open_table(JOURNAL) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(io_err(e)),
        };
        let mut out = Vec::new();
        for item in table.iter().map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            let e: JournalEntry = codec::decode_stored(v.value())?;
            if e.epoch > after_epoch && e.concerns(filter) {
                out.push(e);
            }
        }
        if limit > 0 && out.len() > limit {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }
}

/// Writes journal entries and drops those older than the cap, in the caller's transaction.
fn write_journal(txn: &redb::WriteTransaction, entries: &[JournalEntry], last_seq: u64) -> io::Result<()> {
    let mut t = txn.open_table(JOURNAL).map_err(io_err)?;
    for e in entries {
        t.insert(e.seq, codec::encode_stored(e)?.as_slice()).map_err(io_err)?;
    }
    if last_seq > JOURNAL_CAP {
        let keep_from = last_seq - JOURNAL_CAP + 1;
        t.retain_in(..keep_from, |_, _| false).map_err(io_err)?;
    }
    Ok(())
}

/// The station's state machine.
#[derive(Clone)]
pub struct StationStateMachine {
    db: Arc<Database>,
    state: Arc<RwLock<SmState>>,
    epoch_tx: Arc<watch::Sender<u64>>,
}

fn io_err(e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(e.into())
}

impl StationStateMachine {
    /// Deletes the station's state on this node (its station replica was retired).
    pub fn purge(db: &Database) -> io::Result<()> {
        let txn = db.begin_write().map_err(io_err)?;
        txn.delete_table(STATION_SM).map_err(io_err)?;
        txn.delete_table(JOURNAL).map_err(io_err)?;
        txn.commit().map_err(io_err)
    }

    /// Loads the persisted state (or starts empty).
    pub fn open(db: Arc<Database>) -> io::Result<(Self, MapView)> {
        {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(STATION_SM).map_err(io_err)?;
            txn.open_table(JOURNAL).map_err(io_err)?;
            txn.commit().map_err(io_err)?;
        }
        let state: SmState = {
            let txn = db.begin_read().map_err(io_err)?;
            let table = txn.open_table(STATION_SM).map_err(io_err)?;
            match table.get(STATE).map_err(io_err)? {
                Some(v) => codec::decode_stored_or_legacy::<SmState, SmStateV1>(v.value())?,
                None => SmState::default(),
            }
        };
        let (tx, rx) = watch::channel(state.map.epoch);
        let state = Arc::new(RwLock::new(state));
        let view = MapView { state: state.clone(), epoch: rx, db: db.clone() };
        Ok((Self { db, state, epoch_tx: Arc::new(tx) }, view))
    }

    async fn put(&self, key: &'static str, bytes: Vec<u8>) -> io::Result<()> {
        self.write(move |txn| {
            txn.open_table(STATION_SM).map_err(io_err)?.insert(key, bytes.as_slice()).map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            f(&txn)?;
            txn.commit().map_err(io_err)
        })
        .await
        .map_err(io::Error::other)?
    }

    fn all_journal(&self) -> io::Result<Vec<JournalEntry>> {
        MapView { state: self.state.clone(), epoch: self.epoch_tx.subscribe(), db: self.db.clone() }.journal(
            &Filter::All,
            0,
            0,
        )
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(STATION_SM).map_err(io_err)?;
        Ok(redb::ReadableTable::get(&table, key).map_err(io_err)?.map(|v| v.value().to_vec()))
    }

    fn snapshot_state(&self) -> SmState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace_state(&self, new: SmState) {
        let epoch = new.map.epoch;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = new;
        self.epoch_tx.send_replace(epoch);
    }
}

impl RaftSnapshotBuilder<StationConfig> for StationStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<StationConfig, Vec<u8>>, io::Error> {
        let state = self.snapshot_state();
        // The journal goes with the map: a member that catches up from a snapshot has the
        // history too. (Entries are written in the same transaction as the state, so the two
        // read here agree as of the last applied batch.)
        let journal = self.all_journal()?;
        let data = codec::encode_stored(&(&state.map, state.journal_seq, &journal))?;
        let meta =
            SnapshotMetaOf::<StationConfig> { last_log_id: state.last_applied, last_membership: state.last_membership };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        self.put(SNAPSHOT, codec::encode_stored(&stored)?).await?;
        Ok(SnapshotOf::<StationConfig, Vec<u8>> { meta, snapshot: data })
    }
}

impl RaftStateMachine<StationConfig> for StationStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<StationConfig>>, StoredMembershipOf<StationConfig>), io::Error> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<StationConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut next = self.snapshot_state();
        let mut replies = Vec::new();
        let mut journaled = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            next.last_applied = Some(entry.log_id);
            let resp = match &entry.payload {
                EntryPayload::Blank => StationResponse::Nothing,
                EntryPayload::Normal(cmd) => {
                    let resp = next.map.apply(cmd);
                    if let StationResponse::Applied { epoch } = resp {
                        next.journal_seq += 1;
                        journaled.push(JournalEntry::of(next.journal_seq, epoch, cmd));
                    }
                    resp
                }
                EntryPayload::Membership(m) => {
                    next.last_membership = StoredMembershipOf::<StationConfig>::new(Some(entry.log_id), m.clone());
                    StationResponse::Nothing
                }
            };
            if let Some(r) = responder {
                replies.push((r, resp));
            }
        }
        let (bytes, last_seq) = (codec::encode_stored(&next)?, next.journal_seq);
        fail::fail_point!("station-apply-before");
        self.write(move |txn| {
            txn.open_table(STATION_SM).map_err(io_err)?.insert(STATE, bytes.as_slice()).map_err(io_err)?;
            write_journal(txn, &journaled, last_seq)
        })
        .await?;
        fail::fail_point!("station-apply-after");
        self.replace_state(next);
        for (r, resp) in replies {
            r.send(resp);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<StationConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let (map, journal_seq, journal): (ClusterMap, u64, Vec<JournalEntry>) =
            codec::decode_stored_or_legacy::<_, SnapshotV1>(&snapshot)?;
        let next =
            SmState { last_applied: meta.last_log_id, last_membership: meta.last_membership.clone(), map, journal_seq };
        let stored = codec::encode_stored(&StoredSnapshot { meta: meta.clone(), data: snapshot })?;
        let state = codec::encode_stored(&next)?;
        self.write(move |txn| {
            txn.delete_table(JOURNAL).map_err(io_err)?;
            write_journal(txn, &journal, journal_seq)?;
            let mut t = txn.open_table(STATION_SM).map_err(io_err)?;
            t.insert(SNAPSHOT, stored.as_slice()).map_err(io_err)?;
            t.insert(STATE, state.as_slice()).map_err(io_err)?;
            Ok(())
        })
        .await?;
        self.replace_state(next);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<StationConfig, Vec<u8>>>, io::Error> {
        match self.get(SNAPSHOT)? {
            Some(bytes) => {
                let s: StoredSnapshot = codec::decode_stored(&bytes)?;
                Ok(Some(SnapshotOf::<StationConfig, Vec<u8>> { meta: s.meta, snapshot: s.data }))
            }
            None => Ok(None),
        }
    }
}
