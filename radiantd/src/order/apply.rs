//! Applying an order's log: each batch of committed entries in one write transaction, every
//! decision made from the entry and the order's state as the batch so far left it, so that
//! every replica decides alike. Kept apart from the state machine's reads and snapshots
//! ([`super::state_machine`]), so that the code every replica must run the same way sits in
//! one place.

use std::collections::BTreeMap;
use std::io;

use openraft::EntryPayload;
use openraft::alias::EntryOf;
use openraft::alias::StoredMembershipOf;
use redb::Database;
use redb::Durability;
use redb::ReadableTable;

use super::layout;
use super::shard_move::Incoming;
use super::shard_move::MoveCursor;
use super::shard_move::MoveRow;
use super::shard_move::ShardStats;
use super::state_machine::KvCommand;
use super::state_machine::KvResponse;
use super::state_machine::OrderConfig;
use super::tables::META;
use super::tables::OrderState;
use super::tables::dirty_name;
use super::tables::dirty_table;
use super::tables::io_err;
use super::tables::numbered_tables;
use super::tables::shard_prefix;
use super::tables::shard_table;
use super::tables::table_name;
use super::tables::write_row;
use crate::identity::OrderId;

/// Applies entries in one write transaction with `Durability::None` (see the module comment of
/// [`super::state_machine`]), writing back the order's state with them.
pub(super) fn apply_batch(
    db: &Database,
    order: OrderId,
    entries: &[EntryOf<OrderConfig>],
) -> io::Result<Vec<KvResponse>> {
    let mut txn = db.begin_write().map_err(io_err)?;
    txn.set_durability(Durability::None).map_err(io::Error::other)?;
    let before = OrderState::read(&txn.open_table(META).map_err(io_err)?, order)?;
    let mut batch = Batch { txn: &txn, order, state: before.clone() };
    let out = entries.iter().map(|e| batch.entry(e)).collect::<io::Result<Vec<_>>>()?;
    let state = batch.state;
    state.write(&mut txn.open_table(META).map_err(io_err)?, order, Some(&before))?;
    if let Err(e) = txn.commit() {
        crate::raft::stop_on_storage_failure("writing applied entries", &io_err(e));
    }
    Ok(out)
}

/// The answer to a move command: `applied` false means it changed nothing.
fn move_response(applied: bool) -> KvResponse {
    KvResponse { refused: !applied, ..Default::default() }
}

/// One batch of entries being applied: their write transaction and the order's state as the
/// entries so far left it. Every decision reads only this state and the entry, so every
/// replica decides alike.
struct Batch<'t> {
    txn: &'t redb::WriteTransaction,
    order: OrderId,
    state: OrderState,
}

impl<'t> Batch<'t> {
    fn entry(&mut self, entry: &EntryOf<OrderConfig>) -> io::Result<KvResponse> {
        self.state.applied.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => Ok(KvResponse::default()),
            EntryPayload::Normal(cmd) => self.command(entry.log_id.index, cmd),
            EntryPayload::Membership(m) => {
                self.state.applied.last_membership =
                    StoredMembershipOf::<OrderConfig>::new(Some(entry.log_id), m.clone());
                Ok(KvResponse::default())
            }
        }
    }

    fn command(&mut self, index: u64, cmd: &KvCommand) -> io::Result<KvResponse> {
        let applied = match cmd {
            KvCommand::Put { shard, key, value } => return self.write(index, *shard, key, Some(value)),
            KvCommand::Delete { shard, key } => return self.write(index, *shard, key, None),
            KvCommand::Acquire { shards, epoch } => {
                self.acquire(shards, *epoch);
                true
            }
            KvCommand::Release { shards, epoch } => {
                self.release(shards, *epoch);
                true
            }
            KvCommand::Track { shard, move_id } => self.track(*shard, *move_id)?,
            KvCommand::Untrack { shard, move_id } => self.untrack(*shard, *move_id)?,
            KvCommand::Prepare { shard, move_id } => self.prepare(*shard, *move_id)?,
            KvCommand::Ingest { shard, move_id, follows, rows, cursor } => {
                self.ingest(*shard, *move_id, Some(follows), rows, cursor)?
            }
            KvCommand::LegacyIngest { shard, move_id, rows, cursor } => {
                self.ingest(*shard, *move_id, None, rows, cursor)?
            }
            KvCommand::Seal { shard, move_id, digest } => self.seal(*shard, *move_id, digest)?,
            KvCommand::Drop { shard, move_id } => self.drop_shard(*shard, *move_id)?,
            KvCommand::Reshard { from, to } => self.reshard(*from, *to)?,
        };
        Ok(move_response(applied))
    }

    fn owns(&self, shard: u32) -> bool {
        self.state.applied.owned.contains(&shard)
    }

    /// A client's Put (`Some`) or Delete (`None`), refused unless the order serves the shard;
    /// on a tracked shard the key also goes into the dirty table with this entry's index.
    fn write(&mut self, index: u64, hint: u32, key: &[u8], value: Option<&[u8]>) -> io::Result<KvResponse> {
        let shard = layout::key_shard(key, hint, self.state.modulus);
        if !self.owns(shard) {
            return Ok(KvResponse { wrong_shard: true, ..Default::default() });
        }
        let existed = self.write_rows(shard, [(key, value)])? == 1;
        if self.state.moves.tracking.contains_key(&shard) {
            self.txn
                .open_table(dirty_table(&dirty_name(self.order, shard)))
                .map_err(io_err)?
                .insert(key, index)
                .map_err(io_err)?;
        }
        let owner_epoch = self.state.acquired_at.get(&shard).copied().unwrap_or(0);
        Ok(KvResponse { existed, owner_epoch, ..Default::default() })
    }

    /// Writes rows into a shard table, keeping its stats; how many of the keys existed.
    fn write_rows<'r>(
        &mut self,
        shard: u32,
        rows: impl IntoIterator<Item = (&'r [u8], Option<&'r [u8]>)>,
    ) -> io::Result<usize> {
        let txn = self.txn;
        let mut t = txn.open_table(shard_table(&table_name(self.order, shard))).map_err(io_err)?;
        let stats = self.state.stats.entry(shard).or_default();
        let mut existed = 0;
        for (key, value) in rows {
            existed += usize::from(write_row(&mut t, stats, key, value)?);
        }
        if *stats == ShardStats::default() {
            self.state.stats.remove(&shard);
        }
        Ok(existed)
    }

    /// Deletes a shard's table and its stats.
    fn delete_rows(&mut self, shard: u32) -> io::Result<()> {
        self.txn.delete_table(shard_table(&table_name(self.order, shard))).map_err(io_err)?;
        self.state.stats.remove(&shard);
        Ok(())
    }

    /// Starts serving the shards, except one released at this epoch or later (the acquire
    /// was decided before that handover) and one still being received but not sealed (its
    /// rows are not known to be complete).
    fn acquire(&mut self, shards: &[u32], epoch: u64) {
        for s in shards {
            if self.state.moves.incoming.get(s).is_some_and(|i| !i.sealed) {
                tracing::warn!(order = self.order, shard = s, epoch, "not acquiring a shard whose move is not sealed");
                continue;
            }
            if self.state.applied.released_at.get(s).is_none_or(|r| epoch > *r) {
                if self.state.applied.owned.insert(*s) {
                    self.state.acquired_at.insert(*s, epoch);
                }
                self.state.moves.incoming.remove(s);
            }
        }
    }

    /// Stops serving the shards. Tracking and dirty tables stay: the destination pulls the
    /// final delta from the frozen rows.
    fn release(&mut self, shards: &[u32], epoch: u64) {
        for s in shards {
            self.state.applied.owned.remove(s);
            self.state.applied.released_at.insert(*s, epoch);
        }
    }

    /// Source: records writes to an owned shard from here on. Tracking it for another move
    /// starts a fresh dirty table, since that move's destination pulls from its own base.
    fn track(&mut self, shard: u32, move_id: u64) -> io::Result<bool> {
        if !self.owns(shard) {
            return Ok(false);
        }
        if self.state.moves.tracking.get(&shard) == Some(&move_id) {
            return Ok(true);
        }
        let name = dirty_name(self.order, shard);
        self.txn.delete_table(dirty_table(&name)).map_err(io_err)?;
        self.txn.open_table(dirty_table(&name)).map_err(io_err)?;
        self.state.moves.tracking.insert(shard, move_id);
        Ok(true)
    }

    /// Source of a cancelled move: stops recording and drops the dirty table.
    fn untrack(&mut self, shard: u32, move_id: u64) -> io::Result<bool> {
        if self.state.moves.tracking.get(&shard) != Some(&move_id) {
            return Ok(false);
        }
        self.state.moves.tracking.remove(&shard);
        self.txn.delete_table(dirty_table(&dirty_name(self.order, shard))).map_err(io_err)?;
        Ok(true)
    }

    /// Destination: opens the incoming slot, emptying the table of whatever an earlier
    /// attempt left. The same move again keeps its progress (a new herald proposing again).
    fn prepare(&mut self, shard: u32, move_id: u64) -> io::Result<bool> {
        if self.owns(shard) {
            return Ok(false);
        }
        match self.state.moves.incoming.get(&shard) {
            Some(i) if i.move_id == move_id => return Ok(true),
            // A late command of an earlier move (a deposed bondsmith's) must not wipe a later
            // move's copy.
            Some(i) if i.move_id > move_id => return Ok(false),
            _ => {}
        }
        self.delete_rows(shard)?;
        let incoming = Incoming { move_id, cursor: MoveCursor::default(), sealed: false };
        self.state.moves.incoming.insert(shard, incoming);
        Ok(true)
    }

    /// Destination: writes pulled rows and the pull's progress, if the chunk continues from
    /// the cursor the log holds (`follows`; `None` for entries of earlier versions). Rows are
    /// whole values keyed like the source's, so ingesting a chunk again changes nothing.
    fn ingest(
        &mut self,
        shard: u32,
        move_id: u64,
        follows: Option<&MoveCursor>,
        rows: &[MoveRow],
        cursor: &MoveCursor,
    ) -> io::Result<bool> {
        let Some(incoming) = self.state.moves.incoming.get(&shard) else { return Ok(false) };
        if incoming.move_id != move_id || incoming.sealed || self.owns(shard) {
            return Ok(false);
        }
        if follows.is_some_and(|f| *f != incoming.cursor) {
            tracing::debug!(
                order = self.order,
                shard,
                move_id,
                "a chunk that does not follow the log's cursor: refused"
            );
            return Ok(false);
        }
        self.write_rows(shard, rows.iter().map(|r| (r.key.as_slice(), r.value.as_ref().map(|v| v.as_slice()))))?;
        if let Some(i) = self.state.moves.incoming.get_mut(&shard) {
            i.cursor = cursor.clone();
        }
        Ok(true)
    }

    /// Destination: marks the rows complete if their stats equal the frozen source's digest.
    fn seal(&mut self, shard: u32, move_id: u64, digest: &ShardStats) -> io::Result<bool> {
        let have = self.state.stats.get(&shard).copied().unwrap_or_default();
        if self.state.moves.incoming.get(&shard).is_none_or(|i| i.move_id != move_id) {
            return Ok(false);
        }
        if have != *digest {
            // The copy is wrong, and no later delta can tell which rows: start it over. Pulls
            // resume from the cursor the log holds, which now asks for a new base.
            tracing::warn!(order = self.order, shard, move_id, ?have, source = ?digest, "rows do not match the source's digest: not sealed; the copy starts over");
            self.delete_rows(shard)?;
            if let Some(i) = self.state.moves.incoming.get_mut(&shard) {
                i.cursor = MoveCursor::default();
            }
            return Ok(false);
        }
        if let Some(i) = self.state.moves.incoming.get_mut(&shard) {
            i.sealed = true;
        }
        Ok(true)
    }

    /// Cuts the order's tables by `to` instead of `from`. Refused while a move runs here (its
    /// cursors name keys of one table) or if the order is cut by another count; applying it
    /// again changes nothing.
    fn reshard(&mut self, from: u32, to: u32) -> io::Result<bool> {
        let current = self.state.modulus.unwrap_or(from);
        if current == to && self.state.modulus.is_some() {
            return Ok(true);
        }
        let moving = !self.state.moves.tracking.is_empty() || !self.state.moves.incoming.is_empty();
        if current != from || moving || from == 0 || to == 0 {
            return Ok(false);
        }
        if to == from * 2 {
            self.fracture(from)?;
        } else if from == to * 2 {
            self.consolidate(to)?;
        } else {
            return Ok(false);
        }
        self.state.modulus = Some(to);
        tracing::info!(order = self.order, from, to, "tables cut by the new shard count");
        Ok(true)
    }

    /// Copies the rows of table `from` whose key passes `pick` into table `to`, keeping its
    /// stats; returns the keys copied.
    fn copy_rows(&mut self, from: u32, to: u32, pick: impl Fn(&[u8]) -> bool) -> io::Result<Vec<Vec<u8>>> {
        let txn = self.txn;
        let src = txn.open_table(shard_table(&table_name(self.order, from))).map_err(io_err)?;
        let mut dst = txn.open_table(shard_table(&table_name(self.order, to))).map_err(io_err)?;
        let stats = self.state.stats.entry(to).or_default();
        let mut copied = Vec::new();
        for item in src.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            if pick(k.value()) {
                write_row(&mut dst, stats, k.value(), Some(v.value()))?;
                copied.push(k.value().to_vec());
            }
        }
        if *stats == ShardStats::default() {
            self.state.stats.remove(&to);
        }
        Ok(copied)
    }

    /// Splits each table `s` (of `from`) into `s` and `s + from`: the rows whose key hashes
    /// to the second child are copied to its table as the parent is read, then deleted from
    /// the parent (only their keys are held in memory); ownership and release epochs pass to
    /// both children.
    fn fracture(&mut self, from: u32) -> io::Result<()> {
        let to = from * 2;
        let tables = numbered_tables(self.txn.list_tables().map_err(io_err)?, &shard_prefix(self.order));
        for (shard, _) in tables.into_iter().filter(|(s, _)| *s < from) {
            let moved = self.copy_rows(shard, shard + from, |k| radiant_proto::shard_of(k, to) != shard)?;
            self.write_rows(shard, moved.iter().map(|k| (k.as_slice(), None)))?;
        }
        let acquired = &mut self.state.acquired_at;
        *acquired = acquired.iter().flat_map(|(s, e)| [(*s, *e), (*s + from, *e)]).collect();
        let a = &mut self.state.applied;
        a.owned = a.owned.iter().flat_map(|s| [*s, *s + from]).collect();
        a.released_at = a.released_at.iter().flat_map(|(s, e)| [(*s, *e), (*s + from, *e)]).collect();
        Ok(())
    }

    /// Merges each table `c + to` into its sibling `c` (the map put both on this order).
    fn consolidate(&mut self, to: u32) -> io::Result<()> {
        let tables = numbered_tables(self.txn.list_tables().map_err(io_err)?, &shard_prefix(self.order));
        for (shard, _) in tables.into_iter().filter(|(s, _)| *s >= to) {
            self.copy_rows(shard, shard % to, |_| true)?;
            self.delete_rows(shard)?;
        }
        // Siblings merge into one shard: its ownership is as new as the newer of theirs.
        let mut acquired: BTreeMap<u32, u64> = BTreeMap::new();
        for (s, e) in &self.state.acquired_at {
            let r = acquired.entry(s % to).or_default();
            *r = (*r).max(*e);
        }
        self.state.acquired_at = acquired;
        let a = &mut self.state.applied;
        a.owned = a.owned.iter().map(|s| s % to).collect();
        let mut released: BTreeMap<u32, u64> = BTreeMap::new();
        for (s, e) in &a.released_at {
            let r = released.entry(s % to).or_default();
            *r = (*r).max(*e);
        }
        a.released_at = released;
        Ok(())
    }

    /// Either side, on a shard the order does not serve: deletes its rows, dirty table, stats
    /// and move state. Refused for another move's shard; a shard no move knows holds leftover
    /// rows, which any move may clear.
    fn drop_shard(&mut self, shard: u32, move_id: u64) -> io::Result<bool> {
        let moves = &self.state.moves;
        let tracked = moves.tracking.get(&shard).copied();
        let incoming = moves.incoming.get(&shard).map(|i| i.move_id);
        let ours = tracked == Some(move_id) || incoming == Some(move_id) || (tracked.is_none() && incoming.is_none());
        if self.owns(shard) || !ours {
            return Ok(false);
        }
        self.delete_rows(shard)?;
        self.txn.delete_table(dirty_table(&dirty_name(self.order, shard))).map_err(io_err)?;
        self.state.moves.tracking.remove(&shard);
        self.state.moves.incoming.remove(&shard);
        Ok(true)
    }
}
