//! The Raft log of one group: openraft's storage interface over the group's [`Wal`].
//!
//! `append` writes its entries at once, readable but not yet durable, and hands its callback to
//! the node's [`LogSync`], which fires it after the next fsync: replication proceeds while this
//! node syncs, and one fsync serves every group's appends of the moment. `save_vote`,
//! `truncate_after` and `purge` are durable before they return and make every earlier append
//! durable too (see [`super::log_sync`] for why openraft relies on that).

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

use super::GroupId;
use super::codec;
use super::log_sync::LogSync;
use super::wal::Wal;

/// The largest append written on the Raft task itself.
const INLINE_APPEND_BYTES: usize = 256 * 1024;

/// The log store of one Raft group.
pub struct LogStore<C> {
    sync: LogSync,
    wal: Arc<Wal>,
    group: GroupId,
    _c: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self { sync: self.sync.clone(), wal: self.wal.clone(), group: self.group, _c: PhantomData }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// The log of `group` among the logs of `sync`, replayed from its files.
    pub fn new(sync: LogSync, group: GroupId) -> io::Result<Self> {
        let wal = sync.group(group)?;
        Ok(Self { sync, wal, group, _c: PhantomData })
    }

    /// Runs `write` on the log and makes it, and every earlier append, durable; off the async
    /// runtime, since it fsyncs.
    async fn durable(&self, write: impl FnOnce(&Wal) -> io::Result<()> + Send + 'static) -> io::Result<()> {
        let (sync, wal) = (self.sync.clone(), self.wal.clone());
        tokio::task::spawn_blocking(move || sync.durable(|| write(&wal))).await.map_err(io::Error::other)
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
        self.wal.read(start, end)?.iter().map(|b| codec::decode_stored::<C::Entry>(b)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.wal.vote().map(|b| codec::decode_stored(&b)).transpose()
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self.wal.purged().map(|b| codec::decode_stored(&b)).transpose()?;
        let last = match self.wal.last_index() {
            Some(i) => self.wal.read(i, i)?.first().map(|b| codec::decode_stored::<C::Entry>(b)).transpose()?,
            None => None,
        };
        Ok(LogState {
            last_log_id: last.map(|e| e.log_id()).or_else(|| last_purged_log_id.clone()),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        fail::fail_point!("log-vote-before");
        let bytes = codec::encode_stored(vote)?;
        self.durable(move |wal| wal.set_vote(bytes)).await?;
        fail::fail_point!("log-vote-after");
        Ok(())
    }

    /// Written without an fsync of its own: the record becomes durable with the next sync,
    /// and a crash that loses the newest one only makes the restarted replica re-apply less at
    /// start and wait for the cluster's commit for the rest, as openraft does when nothing is
    /// saved. Linearizable reads never depend on it: they wait for the herald's read index,
    /// which a new term's leader reaches only through its own commit. An fsync here would cost
    /// every replica one more disk flush per commit round, on the path of every write.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let bytes = codec::encode_stored(&committed)?;
        self.wal.set_committed(bytes).unwrap_or_else(|e| super::stop_on_storage_failure("writing the Raft log", &e));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.wal.committed().map(|b| codec::decode_stored::<Option<LogIdOf<C>>>(&b)).transpose()?.flatten())
    }

    /// Writes the entries into the page cache and returns; the node's sync thread reports them
    /// persisted after its next fsync. A small batch is written on this task (a copy of a few
    /// KiB, cheaper than a thread hop); a large one off the async runtime, so that megabytes of
    /// values do not hold up the tasks sharing this worker.
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        let mut bytes = 0;
        for e in entries {
            let row = codec::encode_stored(&e)?;
            bytes += row.len();
            rows.push((e.index(), row));
        }
        fail::fail_point!("log-append-before");
        let done: super::log_sync::Completion = Box::new(move |r| callback.io_completed(r));
        if bytes <= INLINE_APPEND_BYTES {
            self.sync.append(&self.wal, rows, done);
            return Ok(());
        }
        let (sync, wal) = (self.sync.clone(), self.wal.clone());
        tokio::task::spawn_blocking(move || sync.append(&wal, rows, done)).await.map_err(io::Error::other)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        fail::fail_point!("log-truncate-before");
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        self.durable(move |wal| wal.truncate(from)).await
    }

    /// The state machines are made durable first: after a crash, what they lost is applied
    /// again from the log, so the log must still hold it.
    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        fail::fail_point!("log-purge-before");
        let bytes = codec::encode_stored(&log_id)?;
        let upto = log_id.index();
        let sync = self.sync.clone();
        tokio::task::spawn_blocking(move || sync.state_machine_barrier()).await.map_err(io::Error::other)??;
        self.durable(move |wal| wal.purge(upto, bytes)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::StorageError;
    use openraft::alias::OneshotReceiverOf;
    use openraft::testing::log::StoreBuilder;
    use openraft::testing::log::Suite;
    use openraft::type_config::TypeConfigExt;

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
            let db = Arc::new(redb::Database::create(dir.path().join("t.redb")).expect("create db"));
            let sync = LogSync::new(db.clone(), dir.path().join("wal"));
            let mut neighbour = LogStore::<StationConfig>::new(sync.clone(), 7).expect("open log");
            let entries: Vec<_> = (0..30)
                .map(|i| openraft::Entry {
                    log_id: openraft::LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 9, node_id: 9 }, i),
                    payload: openraft::EntryPayload::Blank,
                })
                .collect();
            neighbour.append(entries, IOFlushed::noop()).await.expect("neighbour append");
            let (sm, _) = StationStateMachine::open(db.clone()).expect("sm");
            Ok((dir, LogStore::new(sync, 3).expect("open log"), sm))
        }
    }

    #[tokio::test]
    async fn openraft_conformance_suite() {
        Suite::test_all(Builder).await.expect("openraft log-store suite");
    }

    fn blank(term: u64, index: u64) -> <StationConfig as RaftTypeConfig>::Entry {
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 }, index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    /// Logs on the volatile disk model under `wal`, their syncer without a thread: appends
    /// stay unsynced until a durable write.
    fn held_sync(dir: &tempfile::TempDir, wal: &str) -> LogSync {
        let db = Arc::new(redb::Database::create(dir.path().join(format!("{wal}.redb"))).expect("create db"));
        let opener: crate::raft::wal::Opener = Arc::new(|p: &std::path::Path| {
            let disk = crate::disk::model::ModelDisk::open(p, true).map_err(io::Error::other)?;
            Ok(Arc::new(disk) as Arc<dyn redb::StorageBackend>)
        });
        LogSync::held(db, dir.path().join(wal), opener)
    }

    fn held_log(dir: &tempfile::TempDir) -> LogStore<StationConfig> {
        LogStore::new(held_sync(dir, "wal"), 3).expect("open log")
    }

    /// The log a crash would leave: the files hold only what was synced.
    async fn after_crash(dir: &tempfile::TempDir) -> LogStore<StationConfig> {
        let from = dir.path().join("wal").join("g3");
        let to = dir.path().join("after-crash").join("g3");
        std::fs::create_dir_all(&to).expect("mkdir");
        for e in std::fs::read_dir(&from).expect("read wal dir") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy the synced file");
        }
        LogStore::new(held_sync(dir, "after-crash"), 3).expect("open log after the crash")
    }

    async fn append_held(log: &mut LogStore<StationConfig>) -> OneshotReceiverOf<StationConfig, io::Result<()>> {
        let (tx, rx) = StationConfig::oneshot();
        log.append((1..=5).map(|i| blank(1, i)), IOFlushed::signal(tx)).await.expect("append");
        rx
    }

    /// openraft issue #2118: a node that becomes leader counts its whole log as flushed. That
    /// is true here because saving the vote that precedes any leadership makes every earlier
    /// append durable: appends held unsynced, then a vote, then a crash, and all of them are
    /// there, reported persisted before the vote returned.
    #[tokio::test]
    async fn a_vote_makes_every_earlier_append_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = held_log(&dir);
        let mut flushed = append_held(&mut log).await;
        assert_eq!(log.try_get_log_entries(1..=5).await.expect("read").len(), 5, "readable before synced");
        assert!(flushed.try_recv().is_err(), "not reported persisted before an fsync");

        let vote = openraft::Vote::new(2, 1);
        log.save_vote(&vote).await.expect("save vote");
        assert!(matches!(flushed.try_recv(), Ok(Ok(()))), "reported persisted by the time the vote is saved");

        let mut crashed = after_crash(&dir).await;
        assert_eq!(crashed.try_get_log_entries(1..=5).await.expect("read").len(), 5, "every append survives");
        assert_eq!(crashed.read_vote().await.expect("vote"), Some(vote));
    }

    /// The check above can fail: appends with nothing durable after them (a commit record is
    /// not) are lost in a crash, and were never reported persisted.
    #[tokio::test]
    async fn appends_not_yet_synced_are_lost_in_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = held_log(&dir);
        let mut flushed = append_held(&mut log).await;
        log.save_committed(Some(blank(1, 5).log_id)).await.expect("save committed");
        assert!(flushed.try_recv().is_err(), "not reported persisted");

        let mut crashed = after_crash(&dir).await;
        assert!(crashed.try_get_log_entries(1..=5).await.expect("read").is_empty());
    }
}
