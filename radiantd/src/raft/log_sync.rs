//! Group commit for the Raft logs of one node.
//!
//! An append is written to its group's log file at once, readable but not yet durable, so
//! openraft replicates it while this node's sync thread fdatasyncs it; only then is openraft
//! told it is persisted. The herald's fsync thus overlaps its followers' appends instead of
//! preceding them, and one fsync round covers every append of every group that arrived
//! meanwhile. The logs themselves are [`super::wal`] files; the state machines stay in redb.
//!
//! Why this is safe:
//! - An append is reported persisted only after an fsync that began after it was written.
//! - openraft issue #2118: a node that becomes leader counts its whole log as flushed without
//!   waiting for appends still in flight. Every leader saved its vote after its last append
//!   (a candidate's vote comes before any entry of its term, and accepting another leader's
//!   entries means that leader's vote was saved), and [`LogSync::durable`] syncs every log of
//!   the node, so that vote made every earlier append durable: no append is in flight when a
//!   node can become leader. `a_vote_makes_every_earlier_append_durable` (raft/log_store.rs)
//!   fails when a vote does not flush; the fault suite's `election_with_appends_unsynced`
//!   elects a node whose syncs are held and then cuts the power.
//! - Truncations, purges and votes are durable before they return, and they report the appends
//!   queued before them, in order, so no completion ever arrives behind one of them.
//! - Applied state machine batches are redb commits without an fsync, replayed from the log
//!   after a crash; before the log is purged, [`LogSync::state_machine_barrier`] makes them
//!   durable, so the log never loses an entry the state machines still need.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;

use redb::Database;

use super::GroupId;
use super::wal::Opener;
use super::wal::Wal;

/// Tells openraft an append is persisted (or failed).
pub type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// What the Raft tasks and the sync thread share.
struct Shared {
    db: Arc<Database>,
    dir: PathBuf,
    opener: Opener,
    wals: Mutex<BTreeMap<GroupId, Arc<Wal>>>,
    /// Appends written but not yet reported, oldest first.
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Held across "take the queue, sync, report": completions leave in order.
    sync: Mutex<()>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Completion>,
    closed: bool,
}

/// A node's Raft logs and their group committer; cheap to clone. The sync thread stops when
/// the last clone drops.
#[derive(Clone)]
pub struct LogSync {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogSync {
    /// The logs under `dir` (one directory per group), and their sync thread; `db` is the
    /// state machines' database.
    pub fn new(db: Arc<Database>, dir: PathBuf) -> Self {
        let sync = Self::held(db, dir, Arc::new(crate::disk::open_file));
        let thread = sync.handle.shared.clone();
        // A node must not run without its syncer; failing to start a thread is not recoverable.
        if let Err(e) = std::thread::Builder::new().name("log-sync".into()).spawn(move || run(&thread)) {
            super::stop_on_storage_failure("starting the log sync thread", &e);
        }
        sync
    }

    /// Logs without a sync thread, their files opened by `opener`: appends become durable only
    /// with a durable write, which lets a test hold them unsynced for as long as it likes.
    pub(crate) fn held(db: Arc<Database>, dir: PathBuf, opener: Opener) -> Self {
        let shared = Arc::new(Shared {
            db,
            dir,
            opener,
            wals: Mutex::new(BTreeMap::new()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            sync: Mutex::new(()),
        });
        Self { handle: Arc::new(Handle { shared }) }
    }

    fn group_dir(&self, group: GroupId) -> PathBuf {
        self.handle.shared.dir.join(format!("g{group}"))
    }

    /// The log of `group`, opened (and replayed) on first use.
    pub fn group(&self, group: GroupId) -> io::Result<Arc<Wal>> {
        let shared = &self.handle.shared;
        let mut wals = lock(&shared.wals);
        if let Some(w) = wals.get(&group) {
            return Ok(w.clone());
        }
        let wal = Arc::new(Wal::open(&self.group_dir(group), shared.opener.clone())?);
        wals.insert(group, wal.clone());
        Ok(wal)
    }

    /// Deletes the log of `group`: its replica on this node was retired and must never run
    /// again with this log.
    pub fn drop_group(&self, group: GroupId) -> io::Result<()> {
        let _order = lock(&self.handle.shared.sync);
        lock(&self.handle.shared.wals).remove(&group);
        let dir = self.group_dir(group);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        std::fs::File::open(&self.handle.shared.dir)?.sync_all()
    }

    /// Writes entries to `wal`, then queues `done` for the next sync.
    pub fn append(&self, wal: &Wal, entries: Vec<(u64, Vec<u8>)>, done: Completion) {
        if let Err(e) = wal.append(entries) {
            super::stop_on_storage_failure("writing the Raft log", &e);
        }
        if crate::planted::active(crate::planted::Bug::AppendWithoutFsync) {
            done(Ok(()));
            return;
        }
        let shared = &self.handle.shared;
        lock(&shared.queue).waiting.push(done);
        shared.wake.notify_one();
    }

    /// Writes with `write`, then syncs every log of the node, which makes that write and every
    /// earlier append durable, and reports those appends before returning. Blocking.
    pub fn durable(&self, write: impl FnOnce() -> io::Result<()>) {
        let shared = &self.handle.shared;
        let _order = lock(&shared.sync);
        // Taken before the sync begins: every append taken was written before it.
        let waiting = std::mem::take(&mut lock(&shared.queue).waiting);
        if let Err(e) = write() {
            super::stop_on_storage_failure("writing the Raft log", &e);
        }
        sync_all(shared);
        report(waiting);
    }

    /// Makes every state machine batch applied so far durable (a durable redb commit), before
    /// the log behind them is purged. Blocking.
    pub fn state_machine_barrier(&self) -> io::Result<()> {
        let txn = self.handle.shared.db.begin_write().map_err(|e| io::Error::other(redb::Error::from(e)))?;
        txn.commit().map_err(|e| io::Error::other(redb::Error::from(e)))
    }
}

/// Syncs every log with unsynced writes; a failed fsync stops the node.
fn sync_all(shared: &Shared) {
    let wals: Vec<Arc<Wal>> = lock(&shared.wals).values().filter(|w| w.dirty()).cloned().collect();
    for wal in wals {
        if let Err(e) = sync_one(&wal) {
            super::stop_on_storage_failure("making the Raft log durable", &e);
        }
    }
}

/// Syncs one log. The `disk-commit` failpoint stands for the disk failing it: `return` is an
/// fsync that failed with EIO, `sleep(MS)` one that stalls.
fn sync_one(wal: &Wal) -> io::Result<()> {
    fail::fail_point!("disk-commit", |_| Err(io::Error::from_raw_os_error(libc::EIO)));
    wal.sync()
}

fn report(waiting: Vec<Completion>) {
    if waiting.is_empty() {
        return;
    }
    fail::fail_point!("log-append-after");
    for done in waiting {
        done(Ok(()));
    }
}

/// The sync thread: whenever appends wait, one sync round for all of them.
fn run(shared: &Shared) {
    loop {
        {
            let mut q = lock(&shared.queue);
            while q.waiting.is_empty() && !q.closed {
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.waiting.is_empty() && q.closed {
                return;
            }
        }
        // `sleep(MS)` holds the appends unsynced (not the logs: writes and votes go on).
        fail::fail_point!("log-sync-before");
        let _order = lock(&shared.sync);
        let waiting = std::mem::take(&mut lock(&shared.queue).waiting);
        if waiting.is_empty() {
            continue; // a durable write reported them meanwhile
        }
        let started = std::time::Instant::now();
        sync_all(shared);
        tracing::trace!(appends = waiting.len(), us = started.elapsed().as_micros() as u64, "log sync");
        report(waiting);
    }
}
