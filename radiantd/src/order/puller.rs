//! The destination side of a shard move: the herald pulls the shard from the source order
//! chunk by chunk and proposes each chunk to its own log (`Ingest`), so every replica of the
//! destination installs the same rows at the same point and a new herald resumes from the
//! cursor the log holds.
//!
//! A pull makes passes. The base pass copies every row while the source serves; each delta
//! pass then copies the keys written since the last pass began (the source records them from
//! its `Track` on). Once a delta pass is small the pull reports *converged* and keeps making
//! passes until a pass begins at a frozen source (it released the shard: nothing can change
//! any more); that pass is the last, and the destination seals the rows against the frozen
//! source's digest. Each pass's watermark is the smallest source log index its chunks were
//! read at, so a change that lands between two chunks is in the next pass.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use radiant_proto as pb;
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;

use super::OrderReplica;
use super::shard_move::MoveCursor;
use super::shard_move::MoveRow;
use super::shard_move::ShardStats;
use super::state_machine::KvCommand;
use super::state_machine::OrderConfig;
use crate::host::Host;
use crate::identity::OrderId;

/// Bytes a pull asks for per chunk: one Raft entry of the destination each. redb stores an
/// entry in a page of the next power of two, so the budget leaves room under 1 MiB for the
/// entry's cursor (a key), its framing and the page header: a chunk of exactly 1 MiB of rows
/// would take a 2 MiB page in every destination replica's log.
pub const CHUNK_BYTES: u32 = 1024 * 1024 - 16 * 1024;

/// A delta pass at most this large counts as converged: the final pass after the freeze
/// will be about as small, so the unavailable window stays short.
const CONVERGED_BYTES: u64 = 256 * 1024;

/// Ingests proposed and not yet applied at once. One 1 MiB entry takes about 20 ms to commit
/// (appended, fsynced, replicated to two followers that fsync, applied), while its export
/// takes about 4 ms: with several in flight the log commits them in overlapping rounds.
/// Chunks of one pass hold disjoint keys, so their order of commit does not matter; a pass
/// ends only when all of its chunks are applied.
const MAX_INFLIGHT: usize = 4;

/// How often a converged pull looks again for the freeze.
const CONVERGED_POLL: Duration = Duration::from_millis(5);

/// Largest export response accepted: a chunk plus one row at the Kv value limit.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// One pull running on this herald, as its reports show it.
pub struct Pull {
    /// The move.
    pub move_id: u64,
    /// The last delta pass was small.
    pub converged: AtomicBool,
    /// Bytes ingested so far by this pull (since this herald started it).
    pub bytes_done: AtomicU64,
    /// Stops it.
    pub cancel: CancellationToken,
}

/// The pulls running on a replica, by shard.
#[derive(Default)]
pub struct Pulls(Mutex<std::collections::BTreeMap<u32, Arc<Pull>>>);

impl Pulls {
    /// The pull of `shard`, if one runs.
    pub fn get(&self, shard: u32) -> Option<Arc<Pull>> {
        self.lock().get(&shard).cloned()
    }

    /// Registers a pull unless one for the same move runs; a pull of an older move is
    /// cancelled. Returns the new pull, or `None` if there was nothing to start.
    fn begin(&self, shard: u32, move_id: u64) -> Option<Arc<Pull>> {
        let mut pulls = self.lock();
        if let Some(p) = pulls.get(&shard) {
            if p.move_id >= move_id {
                return None;
            }
            p.cancel.cancel();
        }
        let pull = Arc::new(Pull {
            move_id,
            converged: AtomicBool::new(false),
            bytes_done: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        });
        pulls.insert(shard, pull.clone());
        Some(pull)
    }

    fn end(&self, shard: u32, pull: &Arc<Pull>) {
        let mut pulls = self.lock();
        if pulls.get(&shard).is_some_and(|p| Arc::ptr_eq(p, pull)) {
            pulls.remove(&shard);
        }
    }

    /// Stops every pull (the replica stops or loses leadership).
    pub fn cancel_all(&self) {
        for p in self.lock().values() {
            p.cancel.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u32, Arc<Pull>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a pull needs to know of the source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Source order.
    pub order: OrderId,
    /// Its members' addresses, its herald first.
    pub addrs: Vec<String>,
}

/// Why a pull stopped before sealing.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("this replica is no longer the herald")]
    NotHerald,
    #[error("the destination's log refused the step (another move, or the shard is served here)")]
    Refused,
    #[error("cancelled")]
    Cancelled,
}

/// Starts pulling `shard` for move `move_id` in the background, unless a pull of that move
/// runs already.
pub fn start(replica: Arc<OrderReplica>, host: Arc<Host>, shard: u32, move_id: u64, source: Source) {
    let Some(pull) = replica.pulls.begin(shard, move_id) else { return };
    tokio::spawn(async move {
        let order = replica.order;
        tracing::info!(order, shard, move_id, from = source.order, "pulling shard");
        let result = run(&replica, &host, shard, &pull, &source).await;
        match &result {
            Ok(()) => tracing::info!(order, shard, move_id, "shard sealed"),
            Err(e) => tracing::info!(order, shard, move_id, "pull stopped: {e}"),
        }
        replica.pulls.end(shard, &pull);
        host.report_now();
    });
}

/// The in-memory state of the pass under way.
struct Pass {
    cursor: MoveCursor,
    /// The pass began at a frozen source.
    began_frozen: bool,
    bytes: u64,
}

async fn run(replica: &OrderReplica, host: &Host, shard: u32, pull: &Pull, source: &Source) -> Result<(), PullError> {
    let move_id = pull.move_id;
    let mut cursor = prepare(replica, shard, move_id, pull).await?;
    // The cursor the log holds once every proposed chunk is in: each chunk names it, so one
    // that would land after a gap is refused (see `KvCommand::Ingest`).
    let mut logged = cursor.clone();
    let mut pass = Pass { cursor: cursor.clone(), began_frozen: false, bytes: 0 };
    let mut backoff = Duration::from_millis(50);
    let mut addr_index = 0usize;
    let mut inflight: VecDeque<Ingest> = VecDeque::new();
    loop {
        if pull.cancel.is_cancelled() {
            return Err(PullError::Cancelled);
        }
        if !replica.is_herald() {
            return Err(PullError::NotHerald);
        }
        let addr = &source.addrs[addr_index % source.addrs.len().max(1)];
        let chunk = match export(host, replica, shard, move_id, source, addr, &cursor).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(order = replica.order, shard, "export from {addr} failed: {e}");
                addr_index += 1;
                sleep_or_cancel(pull, backoff).await?;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let starting = cursor.after_key.is_none();
        if starting {
            pass = Pass { cursor: cursor.clone(), began_frozen: chunk.frozen, bytes: 0 };
        }
        let rows: Vec<MoveRow> = chunk.rows.into_iter().map(row_from_proto).collect();
        let bytes: u64 = rows.iter().map(|r| (r.key.len() + r.value.as_ref().map_or(0, |v| v.len())) as u64).sum();
        pass.bytes += bytes;
        let read_at = chunk.applied_index;
        let mut next = cursor.clone();
        next.pass_index = if starting { read_at } else { next.pass_index.min(read_at) };
        next.after_key = rows.last().map(|r| ByteBuf::from(r.key.clone()));
        let finished = !chunk.more;
        if finished {
            next.watermark = next.pass_index;
            next.after_key = None;
            next.base_done = true;
        }
        if !rows.is_empty() || (finished && !cursor.base_done) {
            fail::fail_point!("move-ingest-before", |_| Err(PullError::Cancelled));
            let cmd = KvCommand::Ingest { shard, move_id, follows: logged.clone(), rows, cursor: next.clone() };
            // Proposed here, in the pull's order; only the wait for its commit runs beside.
            let (responder, commit) = openraft::impls::ProgressResponder::complete_only();
            if replica.raft.client_write_ff(cmd, Some(responder)).await.is_err() {
                return Err(PullError::NotHerald);
            }
            logged = next.clone();
            inflight.push_back(Ingest { bytes, commit });
            while inflight.len() >= MAX_INFLIGHT || (finished && !inflight.is_empty()) {
                if let Some(i) = inflight.pop_front() {
                    i.finish(pull).await?;
                }
            }
        }
        cursor = next;
        if !finished {
            continue;
        }
        // The digest is the last chunk's: it counts only if that replica, too, had frozen
        // (a pass that failed over to a lagging replica goes round again).
        if pass.began_frozen && pass.cursor.base_done && chunk.frozen {
            let digest = chunk.stats.map(stats_from_proto).unwrap_or_default();
            return seal(replica, shard, move_id, digest).await;
        }
        if pass.cursor.base_done && pass.bytes <= CONVERGED_BYTES && !pull.converged.swap(true, Ordering::AcqRel) {
            tracing::info!(order = replica.order, shard, move_id, "pull converged; waiting for the freeze");
            host.report_now();
        }
        if pull.converged.load(Ordering::Acquire) {
            sleep_or_cancel(pull, CONVERGED_POLL).await?;
        }
    }
}

/// An `Ingest` proposed to the destination's log and not yet known to be applied.
struct Ingest {
    bytes: u64,
    commit: openraft::alias::OneshotReceiverOf<OrderConfig, openraft::raft::ClientWriteResult<OrderConfig>>,
}

impl Ingest {
    /// Waits until it is applied; refused or not committed ends the pull (the next pull
    /// resumes from the cursor the log holds).
    async fn finish(self, pull: &Pull) -> Result<(), PullError> {
        match self.commit.await {
            Ok(Ok(r)) if r.data.refused => Err(PullError::Refused),
            Ok(Ok(_)) => {
                pull.bytes_done.fetch_add(self.bytes, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(PullError::NotHerald),
        }
    }
}

/// Makes sure the destination's log receives this move, and returns where its pull stands.
/// `Prepare` is written even when the move is known here: the same move keeps its progress,
/// and once it is applied this replica has applied every entry an earlier herald left, so
/// the cursor read next is the log's last.
async fn prepare(replica: &OrderReplica, shard: u32, move_id: u64, pull: &Pull) -> Result<MoveCursor, PullError> {
    write(replica, KvCommand::Prepare { shard, move_id }).await?;
    let incoming = replica.sm.move_state().ok().and_then(|m| m.incoming.get(&shard).cloned());
    match incoming.filter(|i| i.move_id == move_id) {
        Some(i) if i.sealed => Err(PullError::Cancelled), // nothing left to pull
        Some(i) => {
            pull.bytes_done.store(0, Ordering::Relaxed);
            Ok(i.cursor)
        }
        None => Err(PullError::Refused),
    }
}

async fn seal(replica: &OrderReplica, shard: u32, move_id: u64, digest: ShardStats) -> Result<(), PullError> {
    fail::fail_point!("move-seal-before", |_| Err(PullError::Cancelled));
    match write(replica, KvCommand::Seal { shard, move_id, digest }).await {
        Ok(()) => Ok(()),
        Err(PullError::Refused) => {
            let mine = replica.sm.stats().ok().and_then(|s| s.get(&shard).copied()).unwrap_or_default();
            tracing::error!(
                order = replica.order,
                shard,
                move_id,
                "the copied rows do not match the frozen source: {mine:?} here, {digest:?} there; the move waits"
            );
            Err(PullError::Refused)
        }
        Err(e) => Err(e),
    }
}

async fn write(replica: &OrderReplica, cmd: KvCommand) -> Result<(), PullError> {
    match replica.raft.client_write(cmd).await {
        Ok(r) if r.data.refused => Err(PullError::Refused),
        Ok(_) => Ok(()),
        Err(_) => Err(PullError::NotHerald),
    }
}

async fn sleep_or_cancel(pull: &Pull, d: Duration) -> Result<(), PullError> {
    tokio::select! {
        _ = pull.cancel.cancelled() => Err(PullError::Cancelled),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

async fn export(
    host: &Host,
    replica: &OrderReplica,
    shard: u32,
    move_id: u64,
    source: &Source,
    addr: &str,
    cursor: &MoveCursor,
) -> Result<pb::ExportShardResponse, String> {
    let ch = host.peers.channel(addr).map_err(|e| e.to_string())?;
    let mut client = pb::herald_client::HeraldClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut req = tonic::Request::new(pb::ExportShardRequest {
        cluster_id: replica.spec.cluster_id.clone(),
        order_id: source.order,
        shard,
        move_id,
        delta: cursor.base_done,
        after_index: cursor.watermark,
        after_key: cursor.after_key.as_ref().map(|k| k.to_vec()),
        limit_bytes: CHUNK_BYTES,
    });
    req.set_timeout(Duration::from_secs(30));
    client.export_shard(req).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
}

fn row_from_proto(r: pb::MoveRow) -> MoveRow {
    MoveRow { key: r.key, value: r.value.map(ByteBuf::from) }
}

/// The proto form of a row.
pub fn row_to_proto(r: MoveRow) -> pb::MoveRow {
    pb::MoveRow { key: r.key, value: r.value.map(|v| v.into_vec()) }
}

fn stats_from_proto(s: pb::ShardStat) -> ShardStats {
    ShardStats { keys: s.keys, bytes: s.bytes, sum: s.sum }
}

/// The proto form of a shard's stats.
pub fn stats_to_proto(shard: u32, s: &ShardStats) -> pb::ShardStat {
    pb::ShardStat { shard, keys: s.keys, bytes: s.bytes, sum: s.sum }
}
