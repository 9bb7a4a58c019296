//! The Raft log of one group, kept in the node's single redb file.
//!
//! Every write is a redb transaction with `Durability::Immediate`, so `append` fires its
//! callback only after the entries are fsynced, and `save_vote` returns only once the vote is
//! durable: the two rules openraft relies on to never lose an acknowledged write. openraft
//! already hands us every entry that queued up while the previous append was on disk, so
//! concurrent proposals share one fsync.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use redb::Database;
use redb::Durability;
use redb::ReadableDatabase;
use redb::TableDefinition;

use super::GroupId;
use super::codec;

const LOGS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

/// Creates the log tables, so readers never meet a missing table.
pub fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(LOGS)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(())
}

/// Deletes every log entry and meta record (vote, committed, purged) of `group`: its replica
/// on this node was retired and must never run again with this log.
pub fn purge_group(db: &Database, group: GroupId) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(LOGS)?.retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
    {
        let mut meta = txn.open_table(META)?;
        for key in [VOTE, COMMITTED, PURGED] {
            meta.remove((group, key))?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn io_err(e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(e.into())
}

/// Commits a log write. The `disk-commit` failpoint stands for the disk failing it: `return`
/// is an fsync that failed with EIO, `sleep(MS)` one that stalls.
fn commit(txn: redb::WriteTransaction) -> io::Result<()> {
    fail::fail_point!("disk-commit", |_| Err(io::Error::from_raw_os_error(libc::EIO)));
    txn.commit().map_err(io_err)
}

/// The log store of one Raft group.
pub struct LogStore<C> {
    db: Arc<Database>,
    group: GroupId,
    _c: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self { db: self.db.clone(), group: self.group, _c: PhantomData }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// The log of `group` in `db` (whose tables [`create_tables`] made).
    pub fn new(db: Arc<Database>, group: GroupId) -> Self {
        Self { db, group, _c: PhantomData }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        match table.get((self.group, key)).map_err(io_err)? {
            Some(v) => Ok(Some(codec::decode_stored(v.value())?)),
            None => Ok(None),
        }
    }

    /// Runs a durable write transaction off the async runtime.
    async fn write<F>(&self, f: F) -> io::Result<()>
    where
        F: FnOnce(&redb::WriteTransaction, GroupId) -> Result<(), redb::Error> + Send + 'static,
    {
        self.write_with(Durability::Immediate, f).await
    }

    /// Runs a write transaction of the given durability off the async runtime.
    async fn write_with<F>(&self, durability: Durability, f: F) -> io::Result<()>
    where
        F: FnOnce(&redb::WriteTransaction, GroupId) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let group = self.group;
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(durability).map_err(io::Error::other)?;
            f(&txn, group).map_err(io_err)?;
            commit(txn).unwrap_or_else(|e| super::stop_on_storage_failure("making the Raft log durable", &e));
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> io::Result<()> {
        let bytes = codec::encode_stored(value)?;
        self.write_with(durability, move |txn, group| {
            txn.open_table(META)?.insert((group, key), bytes.as_slice())?;
            Ok(())
        })
        .await
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(0) => return Ok(vec![]),
            Bound::Excluded(x) => x - 1,
            Bound::Unbounded => u64::MAX,
        };
        if start > end {
            return Ok(vec![]);
        }
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOGS).map_err(io_err)?;
        let mut out = Vec::new();
        for item in table.range((self.group, start)..=(self.group, end)).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            out.push(codec::decode_stored::<C::Entry>(v.value())?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.get_meta(VOTE)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self.get_meta(PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOGS).map_err(io_err)?;
            let mut range = table.range((self.group, 0)..=(self.group, u64::MAX)).map_err(io_err)?;
            match range.next_back() {
                Some(item) => {
                    let (_, v) = item.map_err(io_err)?;
                    Some(codec::decode_stored::<C::Entry>(v.value())?.log_id())
                }
                None => None,
            }
        };
        Ok(LogState { last_log_id: last.or_else(|| last_purged_log_id.clone()), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        fail::fail_point!("log-vote-before");
        self.put_meta(VOTE, vote, Durability::Immediate).await?;
        fail::fail_point!("log-vote-after");
        Ok(())
    }

    /// Saved without an fsync of its own: the record becomes durable with the next log append
    /// or vote (redb commits in order), and a crash that loses the newest one only makes the
    /// restarted replica re-apply less at start and wait for the cluster's commit for the rest,
    /// as openraft does when nothing is saved. Linearizable reads never depend on it: they wait
    /// for the herald's read index, which a new term's leader reaches only through its own
    /// commit. An fsync here would cost every replica one more disk flush per commit round, on
    /// the path of every write.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.put_meta(COMMITTED, &committed, Durability::None).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.get_meta::<Option<LogIdOf<C>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.index(), codec::encode_stored(&e)?));
        }
        fail::fail_point!("log-append-before");
        let started = std::time::Instant::now();
        let durability = if crate::planted::active(crate::planted::Bug::AppendWithoutFsync) {
            Durability::None
        } else {
            Durability::Immediate
        };
        let res = self
            .write_with(durability, move |txn, group| {
                let mut t = txn.open_table(LOGS)?;
                for (index, bytes) in &rows {
                    t.insert((group, *index), bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        tracing::trace!(group = self.group, us = started.elapsed().as_micros() as u64, "log append");
        // The commit above is durable (fsynced) when it returns: only now may openraft count
        // these entries as persisted. Completing before `append` returns avoids the
        // asynchronous-flush hazard of openraft issue #2118.
        match res {
            Ok(()) => {
                fail::fail_point!("log-append-after");
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        fail::fail_point!("log-truncate-before");
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        self.write(move |txn, group| {
            txn.open_table(LOGS)?.retain_in((group, from)..=(group, u64::MAX), |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        fail::fail_point!("log-purge-before");
        let bytes = codec::encode_stored(&log_id)?;
        let upto = log_id.index();
        self.write(move |txn, group| {
            txn.open_table(META)?.insert((group, PURGED), bytes.as_slice())?;
            txn.open_table(LOGS)?.retain_in((group, 0)..=(group, upto), |_, _| false)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::log::StoreBuilder;
    use openraft::testing::log::Suite;

    use super::*;
    use crate::station::state_machine::StationConfig;
    use crate::station::state_machine::StationStateMachine;

    /// Each build is a fresh database holding a neighbour group's log too, so the suite also
    /// checks that groups sharing the file never see each other's entries.
    struct Builder;

    impl StoreBuilder<StationConfig, LogStore<StationConfig>, StationStateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore<StationConfig>, StationStateMachine), StorageError<StationConfig>>
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Arc::new(Database::create(dir.path().join("t.redb")).expect("create db"));
            create_tables(&db).expect("tables");
            let mut neighbour = LogStore::<StationConfig>::new(db.clone(), 7);
            let entries: Vec<_> = (0..30)
                .map(|i| openraft::Entry {
                    log_id: openraft::LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 9, node_id: 9 }, i),
                    payload: openraft::EntryPayload::Blank,
                })
                .collect();
            neighbour.append(entries, IOFlushed::noop()).await.expect("neighbour append");
            let (sm, _) = StationStateMachine::open(db.clone()).expect("sm");
            Ok((dir, LogStore::new(db, 3), sm))
        }
    }

    #[tokio::test]
    async fn openraft_conformance_suite() {
        Suite::test_all(Builder).await.expect("openraft log-store suite");
    }
}
