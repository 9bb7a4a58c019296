//! The source side of a shard move: the chunks its destination pulls ([`super::puller`]),
//! read in one read transaction from the shard's table (a base pass) or from its dirty table
//! (a delta pass). Nothing here writes: the source records what changes as it applies its log
//! ([`super::apply`]); this only reads what that left.

use std::io;
use std::ops::Bound;

use redb::Database;
use redb::ReadableDatabase;
use serde_bytes::ByteBuf;

use super::shard_move::ExportChunk;
use super::shard_move::ExportError;
use super::shard_move::ExportMode;
use super::shard_move::MoveRow;
use super::tables::META;
use super::tables::OrderState;
use super::tables::dirty_name;
use super::tables::dirty_table;
use super::tables::io_err;
use super::tables::open_read;
use super::tables::shard_table;
use super::tables::table_name;
use crate::identity::OrderId;

/// One chunk of `shard` of `order` for the destination of move `move_id`, as
/// [`super::state_machine::KvStateMachine::export`] describes it.
pub(super) fn chunk(
    db: &Database,
    order: OrderId,
    shard: u32,
    move_id: u64,
    mode: ExportMode,
    after_key: Option<&[u8]>,
    limit_bytes: usize,
) -> Result<ExportChunk, ExportError> {
    let txn = db.begin_read().map_err(io_err)?;
    let state = OrderState::read(&txn.open_table(META).map_err(io_err)?, order)?;
    if state.moves.tracking.get(&shard) != Some(&move_id) {
        return Err(ExportError::NotTracking { order, shard, move_id });
    }
    let rows = open_read(&txn, shard_table(&table_name(order, shard)))?;
    let lower = after_key.map_or(Bound::Unbounded, Bound::Excluded);
    let (rows, more) = match mode {
        ExportMode::Base => match &rows {
            Some(t) => take_rows(base_rows(t, lower)?, limit_bytes)?,
            None => (Vec::new(), false),
        },
        ExportMode::Delta { after_index } => match open_read(&txn, dirty_table(&dirty_name(order, shard)))? {
            Some(dirty) => take_rows(delta_rows(&dirty, rows.as_ref(), lower, after_index)?, limit_bytes)?,
            None => (Vec::new(), false),
        },
    };
    Ok(ExportChunk {
        applied_index: state.applied.last_applied.map_or(0, |l| l.index),
        rows,
        more,
        frozen: !state.applied.owned.contains(&shard),
        stats: state.stats.get(&shard).copied().unwrap_or_default(),
    })
}

/// A read-only shard table (`&[u8]` values) or dirty table (`u64` values).
type ReadTable<V> = redb::ReadOnlyTable<&'static [u8], V>;

/// The rows of a shard table after `lower`, in key order.
fn base_rows(
    t: &ReadTable<&'static [u8]>,
    lower: Bound<&[u8]>,
) -> io::Result<impl Iterator<Item = io::Result<MoveRow>> + use<>> {
    let range = t.range::<&[u8]>((lower, Bound::Unbounded)).map_err(io_err)?;
    Ok(range.map(|item| {
        let (k, v) = item.map_err(io_err)?;
        Ok(MoveRow { key: k.value().to_vec(), value: Some(ByteBuf::from(v.value().to_vec())) })
    }))
}

/// The keys of a dirty table after `lower` last written after `after_index`, in key order,
/// each with its value now (`None`: deleted since). A key written again after a pull shows in
/// the next delta, since its index moved past the pull's.
fn delta_rows<'t>(
    dirty: &ReadTable<u64>,
    rows: Option<&'t ReadTable<&'static [u8]>>,
    lower: Bound<&[u8]>,
    after_index: u64,
) -> io::Result<impl Iterator<Item = io::Result<MoveRow>> + 't> {
    let range = dirty.range::<&[u8]>((lower, Bound::Unbounded)).map_err(io_err)?;
    Ok(range.filter_map(move |item| match item {
        Err(e) => Some(Err(io_err(e))),
        Ok((_, index)) if index.value() <= after_index => None,
        Ok((key, _)) => Some(current_row(rows, key.value())),
    }))
}

/// A key with its value in the shard table, if the table and the key exist.
fn current_row(rows: Option<&ReadTable<&'static [u8]>>, key: &[u8]) -> io::Result<MoveRow> {
    let value = match rows {
        Some(t) => t.get(key).map_err(io_err)?.map(|v| ByteBuf::from(v.value().to_vec())),
        None => None,
    };
    Ok(MoveRow { key: key.to_vec(), value })
}

/// Takes rows while their key and value bytes stay within `limit_bytes` (at least one, so a
/// row larger than the limit still moves), and says whether any row is left after them.
/// Never passing the limit matters: the destination stores each chunk as one log entry, and
/// redb gives an entry a page of the next power of two, so a chunk one row past 1 MiB would
/// cost a 2 MiB page on every destination replica.
fn take_rows(rows: impl Iterator<Item = io::Result<MoveRow>>, limit_bytes: usize) -> io::Result<(Vec<MoveRow>, bool)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let row = row?;
        let size = row.key.len() + row.value.as_ref().map_or(0, |v| v.len());
        if !out.is_empty() && bytes + size > limit_bytes {
            return Ok((out, true));
        }
        bytes += size;
        out.push(row);
    }
    Ok((out, false))
}
