//! Shard moves as the cluster map records them: each move's phase, and the queue a rebalance
//! leaves for the coordinator to start within `move_concurrency`.
//!
//! A move's id is the map epoch it began at. It fences every step on both orders (their logs
//! refuse a command of another move), so a deposed bondsmith's late command, or a herald's
//! report about an earlier attempt, can never advance this one. The phases only go forward,
//! and the owner in `shard_orders` changes in exactly one of them:
//!
//! ```text
//! Copying --FreezeMove--> Frozen --SwitchMove--> Switched --FinishMove--> (gone)
//!    \______________________/ AbortMove: only before the switch
//! ```
//!
//! Copying: the source serves and records the shard's writes, the destination pulls.
//! Frozen: the source has released the shard (no order serves it), the destination pulls the
//! last changes and seals them against the source's digest. Switched: the map names the
//! destination, which acquires the shard; the source deletes its copy once the destination
//! serves. There is no way back after the switch: the destination may already serve.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use super::map::ClusterMap;
use super::map::OrderId;

/// Where a move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MovePhase {
    /// The destination copies while the source serves.
    Copying,
    /// The source released the shard; the destination takes the last changes.
    Frozen,
    /// The destination owns the shard in the map; the source's copy is deleted next.
    Switched,
}

impl fmt::Display for MovePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MovePhase::Copying => "copying",
            MovePhase::Frozen => "frozen",
            MovePhase::Switched => "switched",
        })
    }
}

/// A move under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMove {
    /// The map epoch the move began at: its fencing token.
    pub id: u64,
    /// Source order.
    pub from: OrderId,
    /// Destination order.
    pub to: OrderId,
    /// Phase.
    pub phase: MovePhase,
    /// Keys of the shard when the move was planned.
    pub keys: u64,
    /// Bytes of the shard when the move was planned.
    pub bytes: u64,
}

/// A move a rebalance planned, waiting for a free slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// Shard.
    pub shard: u32,
    /// Its order when planned.
    pub from: OrderId,
    /// Where it goes.
    pub to: OrderId,
    /// Keys when planned.
    pub keys: u64,
    /// Bytes when planned.
    pub bytes: u64,
}

impl ClusterMap {
    /// The order that serves `shard` once the moves under way are done.
    pub fn destined_owner(&self, shard: u32) -> OrderId {
        match self.moves.get(&shard) {
            Some(m) => m.to,
            None => self.shard_orders.get(shard as usize).copied().unwrap_or(0),
        }
    }

    /// The orders whose logs serve `shard` per the map: its owner, except while a move has
    /// frozen it (the source released it and the destination does not own it yet).
    pub fn serving_order(&self, shard: u32) -> Option<OrderId> {
        let owner = self.shard_orders.get(shard as usize).copied().filter(|o| *o != 0)?;
        match self.moves.get(&shard) {
            Some(m) if m.phase == MovePhase::Frozen => None,
            _ => Some(owner),
        }
    }

    pub(super) fn plan_moves(&mut self, moves: &[PlannedMove]) -> Result<(), String> {
        for m in moves {
            let owner = self.destined_owner(m.shard);
            if owner == 0 || owner != m.from {
                return Err(format!(
                    "shard {} is on order {owner}, not {}: the layout changed, plan again",
                    m.shard, m.from
                ));
            }
            if !self.orders.contains_key(&m.to) || m.to == m.from {
                return Err(format!("shard {} cannot go to order {}", m.shard, m.to));
            }
        }
        self.planned_moves = moves.to_vec();
        Ok(())
    }

    pub(super) fn start_move(&mut self, shard: u32, to: OrderId, keys: u64, bytes: u64) -> Result<(), String> {
        let from = self.shard_orders.get(shard as usize).copied().ok_or_else(|| format!("no shard {shard}"))?;
        // Whatever happens, this shard's queue entry and the entries the layout has outrun
        // leave the queue, so one bad entry never blocks the others.
        self.planned_moves.retain(|p| p.shard != shard);
        let stale: Vec<u32> = self
            .planned_moves
            .iter()
            .filter(|p| self.shard_orders.get(p.shard as usize) != Some(&p.from) || self.moves.contains_key(&p.shard))
            .map(|p| p.shard)
            .collect();
        self.planned_moves.retain(|p| !stale.contains(&p.shard));
        if from == 0 || from == to {
            return Err(format!("shard {shard} is not served by another order"));
        }
        if self.moves.contains_key(&shard) {
            return Err(format!("shard {shard} is already moving"));
        }
        if !self.orders.contains_key(&to) {
            return Err(format!("unknown order {to}"));
        }
        let id = self.epoch + 1;
        self.moves.insert(shard, ShardMove { id, from, to, phase: MovePhase::Copying, keys, bytes });
        Ok(())
    }

    fn move_mut(&mut self, shard: u32, id: u64) -> Result<&mut ShardMove, String> {
        match self.moves.get_mut(&shard) {
            Some(m) if m.id == id => Ok(m),
            Some(m) => Err(format!("shard {shard} is in move {}, not {id}", m.id)),
            None => Err(format!("shard {shard} is not moving")),
        }
    }

    pub(super) fn advance_move(&mut self, shard: u32, id: u64, to: MovePhase) -> Result<(), String> {
        let m = self.move_mut(shard, id)?;
        let expected = match to {
            MovePhase::Copying => return Err("a move begins copying".into()),
            MovePhase::Frozen => MovePhase::Copying,
            MovePhase::Switched => MovePhase::Frozen,
        };
        if m.phase != expected {
            return Err(format!("move {id} of shard {shard} is {}, not {expected}", m.phase));
        }
        m.phase = to;
        if to == MovePhase::Switched {
            let dest = m.to;
            self.shard_orders[shard as usize] = dest;
        }
        Ok(())
    }

    pub(super) fn finish_move(&mut self, shard: u32, id: u64) -> Result<(), String> {
        let m = self.move_mut(shard, id)?;
        if m.phase != MovePhase::Switched {
            return Err(format!("move {id} of shard {shard} has not switched"));
        }
        self.moves.remove(&shard);
        Ok(())
    }

    pub(super) fn abort_move(&mut self, shard: u32, id: u64) -> Result<(), String> {
        let m = self.move_mut(shard, id)?;
        if m.phase == MovePhase::Switched {
            return Err(format!("move {id} of shard {shard} has switched; it can only finish"));
        }
        self.moves.remove(&shard);
        Ok(())
    }

    pub(super) fn cancel_moves(&mut self) -> Result<(), String> {
        if self.planned_moves.is_empty() && self.moves.values().all(|m| m.phase == MovePhase::Switched) {
            return Err("no move to cancel".into());
        }
        self.planned_moves.clear();
        self.moves.retain(|_, m| m.phase == MovePhase::Switched);
        Ok(())
    }
}
