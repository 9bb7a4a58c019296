//! The journal: the replicated record of recovery actions, each with its kind, the nodes,
//! orders and shards it concerns, its reason and its outcome.
//!
//! It lives in its own table beside the cluster map (not inside it), so reading the map never
//! copies ten thousand entries, and a subject's history can be read back as the chain of
//! entries that explains its present state (`radiantctl events --explain`).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;

use super::map::MapChange;
use super::map::OrderId;
use super::map::StationCommand;
use crate::identity::NodeId;

/// The journal keeps this many most recent entries.
pub const JOURNAL_CAP: u64 = 10_000;

/// What an entry concerns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subjects {
    /// Nodes.
    pub nodes: BTreeSet<NodeId>,
    /// Orders (0: the station).
    pub orders: BTreeSet<OrderId>,
    /// Shards.
    pub shards: BTreeSet<u32>,
}

/// One journaled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// The map epoch the change produced (a record of an action outside the map: the epoch it
    /// was decided at).
    pub epoch: u64,
    /// Wall-clock time the bondsmith planned it.
    pub at_unix_ms: u64,
    /// A stable name of the kind of action (`form_order`, `begin_replace`, `start_replica`...).
    pub kind: String,
    /// What it concerns.
    pub subjects: Subjects,
    /// What was done, in words.
    pub action: String,
    /// Why.
    pub reason: String,
    /// How it went: `applied` for a map change, or an I/O action's `decided`, `done` or
    /// `failed: ...`.
    pub outcome: String,
    /// Which bondsmith decided it.
    pub bondsmith: NodeId,
}

impl JournalEntry {
    /// The entry for an applied command.
    pub fn of(seq: u64, epoch: u64, cmd: &StationCommand) -> Self {
        let (kind, outcome) = match &cmd.change {
            MapChange::Record { kind, outcome, .. } => (kind.clone(), outcome.clone()),
            c => (c.kind().to_string(), "applied".to_string()),
        };
        let action = match &cmd.change {
            MapChange::Record { action, .. } => action.clone(),
            c => c.to_string(),
        };
        JournalEntry {
            seq,
            epoch,
            at_unix_ms: cmd.at_unix_ms,
            kind,
            subjects: cmd.change.subjects(),
            action,
            reason: cmd.reason.clone(),
            outcome,
            bondsmith: cmd.by,
        }
    }

    /// Whether the entry concerns the subject a filter names.
    pub fn concerns(&self, filter: &Filter) -> bool {
        match filter {
            Filter::All => true,
            Filter::Node(n) => self.subjects.nodes.contains(n),
            Filter::Order(o) => self.subjects.orders.contains(o),
            Filter::Shard(s) => self.subjects.shards.contains(s),
        }
    }
}

/// Which entries to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Every entry.
    All,
    /// Entries about a node.
    Node(NodeId),
    /// Entries about an order (0: the station).
    Order(OrderId),
    /// Entries about a shard.
    Shard(u32),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::station::map::MemberInfo;

    fn cmd(change: MapChange) -> StationCommand {
        StationCommand { expected_epoch: 1, at_unix_ms: 5, by: 9, change, reason: "why".into() }
    }

    #[test]
    fn entries_are_typed_with_their_subjects() {
        let e = JournalEntry::of(3, 2, &cmd(MapChange::BeginReplace { order: 4, add: 11, remove: 12 }));
        assert_eq!((e.kind.as_str(), e.outcome.as_str(), e.seq, e.epoch), ("begin_replace", "applied", 3, 2));
        assert_eq!(e.subjects.nodes, [11, 12].into());
        assert_eq!(e.subjects.orders, [4].into());
        assert!(e.concerns(&Filter::Node(12)) && e.concerns(&Filter::Order(4)) && !e.concerns(&Filter::Shard(0)));

        let assign = JournalEntry::of(4, 3, &cmd(MapChange::AssignShards { assignments: vec![(0, 1), (5, 2)] }));
        assert_eq!(assign.subjects.shards, [0, 5].into());
        assert_eq!(assign.subjects.orders, [1, 2].into());

        let node = MemberInfo { id: 7, name: "n7".into(), addr: "h:1".into() };
        let record = MapChange::Record {
            kind: "start_replica".into(),
            action: "start order 1's replica on n7".into(),
            outcome: "done".into(),
            subjects: Subjects { nodes: [node.id].into(), orders: [1].into(), shards: BTreeSet::new() },
        };
        let e = JournalEntry::of(5, 3, &cmd(record));
        assert_eq!((e.kind.as_str(), e.outcome.as_str()), ("start_replica", "done"));
        assert!(e.concerns(&Filter::Node(7)) && e.concerns(&Filter::Order(1)));
    }
}
