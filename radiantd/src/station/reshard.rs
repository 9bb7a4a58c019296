//! Changing the shard count on a live cluster: `fracture` doubles it, `consolidate` halves
//! it. Since `shard = fnv1a64(key) mod S`, shard `s` of `S` is shards `s` and `s + S` of
//! `2S`; the children of a shard start on its order, so a fracture moves no data between
//! orders, and a consolidation first moves siblings onto one order (ordinary shard moves).
//! Then every order cuts its own tables through its log (`Reshard`), and once every herald
//! reports the new count the map takes it: `shards` and `shard_orders` change in one entry.
//! Routers on the old count still reach the right order (siblings share it), and the order
//! finds a key's table from the key, so requests go on throughout.

use serde::Deserialize;
use serde::Serialize;

use super::map::ClusterMap;
use super::map::OrderId;
use super::moves::PlannedMove;

/// Most shards a cluster may have.
pub const MAX_SHARDS: u32 = 4096;

/// A change of the shard count under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reshard {
    /// The count now.
    pub from: u32,
    /// The count asked for.
    pub to: u32,
}

impl Reshard {
    /// Halving (siblings must share an order first).
    pub fn consolidates(&self) -> bool {
        self.to < self.from
    }
}

impl ClusterMap {
    /// For a consolidation to `to` shards: whether every pair of siblings `s`, `s + to` is on
    /// one order.
    pub fn siblings_together(&self, to: u32) -> bool {
        (0..to).all(|s| self.shard_orders.get(s as usize) == self.shard_orders.get((s + to) as usize))
    }

    /// The moves that put every pair of siblings on one order: the upper sibling joins the
    /// lower one's order.
    pub fn colocation_moves(&self, to: u32) -> Vec<PlannedMove> {
        (0..to)
            .filter_map(|s| {
                let (low, high) = (self.shard_orders.get(s as usize)?, self.shard_orders.get((s + to) as usize)?);
                (low != high).then_some(PlannedMove { shard: s + to, from: *high, to: *low, keys: 0, bytes: 0 })
            })
            .collect()
    }

    pub(super) fn begin_reshard(&mut self, to: u32) -> Result<(), String> {
        if let Some(r) = &self.reshard {
            return Err(format!("the shard count is already changing, from {} to {}", r.from, r.to));
        }
        if !self.moves.is_empty() || !self.planned_moves.is_empty() {
            return Err("shard moves are under way: wait for them or run `radiantctl rebalance --cancel`".into());
        }
        if self.shard_orders.contains(&0) {
            return Err("not every shard is placed yet".into());
        }
        let from = self.shards;
        let valid = (to == from * 2 && to <= MAX_SHARDS) || (from.is_multiple_of(2) && to * 2 == from && to >= 1);
        if !valid {
            return Err(format!("the cluster has {from} shards: it can go to {} or {}", from * 2, from / 2));
        }
        self.reshard = Some(Reshard { from, to });
        Ok(())
    }

    pub(super) fn complete_reshard(&mut self, to: u32) -> Result<(), String> {
        let r = self.reshard.clone().filter(|r| r.to == to).ok_or_else(|| format!("no change to {to} shards"))?;
        if r.consolidates() && !self.siblings_together(to) {
            return Err("siblings are not on one order yet".into());
        }
        let orders: Vec<OrderId> = if r.consolidates() {
            self.shard_orders[..to as usize].to_vec()
        } else {
            (0..to).map(|c| self.shard_orders[(c % r.from) as usize]).collect()
        };
        self.shard_orders = orders;
        self.shards = to;
        self.reshard = None;
        Ok(())
    }
}
