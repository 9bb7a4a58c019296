//! The one action type of the recovery coordinator: what the planner decides and the runtime
//! carries out. A map change goes through the station's log; the others are requests to a
//! node's supervisor or to an order's herald, and the runtime journals each of those too.

use std::fmt;

use crate::identity::NodeId;
use crate::station::journal::Subjects;
use crate::station::map::MapChange;
use crate::station::map::MemberInfo;
use crate::station::map::OrderId;
use crate::station::map::group_name;

/// One step toward the desired cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Change the map (through the station's log, at the epoch it was planned at).
    Commit {
        /// The change.
        change: MapChange,
        /// Why, for the journal.
        reason: String,
    },
    /// Ask a node's supervisor to run a replica of an order.
    StartReplica {
        /// The node.
        node: MemberInfo,
        /// The order.
        order: OrderId,
        /// The order's members (with `node`).
        members: Vec<MemberInfo>,
        /// True for the members an order is formed with, which initialize its group; a
        /// replacement joins as a learner and must never initialize (it would start a second,
        /// conflicting log).
        initialize: bool,
        /// Why.
        reason: String,
    },
    /// Ask a node's supervisor to stop its replica of an order and delete that replica's data.
    RetireReplica {
        /// The node.
        node: MemberInfo,
        /// The order.
        order: OrderId,
        /// Why.
        reason: String,
    },
    /// Ask a removed node to stop every service it runs.
    StopServices {
        /// The node.
        node: MemberInfo,
        /// Why.
        reason: String,
    },
    /// Ask a group's leader (an order's herald; for the station, this bondsmith) to change
    /// its group's membership or hand over its leadership.
    Herald {
        /// The order.
        order: OrderId,
        /// Its herald.
        herald: MemberInfo,
        /// What to do.
        cmd: HeraldCmd,
        /// Why.
        reason: String,
    },
}

/// A membership command for a herald.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeraldCmd {
    /// Add a node as a learner (it receives the log but does not vote).
    AddLearner(MemberInfo),
    /// Make exactly these nodes the voters, through a joint configuration; voters left out
    /// are removed from the group.
    SetVoters(Vec<NodeId>),
    /// Remove a learner that will not be promoted.
    RemoveLearner(NodeId),
    /// Hand leadership to this voter, once it has matched the leader's whole log (a transfer
    /// to a lagging voter leaves the group leaderless for an election timeout).
    TransferLeader(NodeId),
    /// Make the order's log agree with the map about which shards it serves: release these
    /// (the fence of a handover) and acquire those, decided on the map at `epoch` (an acquire
    /// older than a shard's last release is ignored by the order's state machine).
    Shards {
        /// Shards the map gives the order that its log does not serve yet.
        acquire: Vec<u32>,
        /// Shards its log serves that the map moves away or gives to another order.
        release: Vec<u32>,
        /// The map epoch of the decision.
        epoch: u64,
    },
    /// Cut the order's tables by another shard count.
    Reshard {
        /// The count now.
        from: u32,
        /// The new count.
        to: u32,
    },
    /// A step of a shard move on this order (see [`MoveStep`]).
    Move {
        /// What to do.
        step: MoveStep,
        /// The shard.
        shard: u32,
        /// The move (its fencing token).
        move_id: u64,
    },
}

/// What an I/O action acts on: the runtime runs one action per key at a time, and the planner
/// does not repeat one whose effect the observations cannot show yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKey {
    /// A node's replica of an order.
    Replica(NodeId, OrderId),
    /// An order's membership.
    Membership(OrderId),
    /// A node as a whole.
    Node(NodeId),
    /// Which shards an order serves.
    Shards(OrderId),
    /// A move's step on one order.
    Move(OrderId, u32),
}

impl Action {
    /// The key of an I/O action; `None` for map changes, which the epoch fences instead.
    pub fn key(&self) -> Option<ActionKey> {
        match self {
            Action::Commit { .. } => None,
            Action::StartReplica { node, order, .. } | Action::RetireReplica { node, order, .. } => {
                Some(ActionKey::Replica(node.id, *order))
            }
            Action::Herald { order, cmd: HeraldCmd::Shards { .. } | HeraldCmd::Reshard { .. }, .. } => {
                Some(ActionKey::Shards(*order))
            }
            Action::Herald { order, cmd: HeraldCmd::Move { shard, .. }, .. } => Some(ActionKey::Move(*order, *shard)),
            Action::Herald { order, .. } => Some(ActionKey::Membership(*order)),
            Action::StopServices { node, .. } => Some(ActionKey::Node(node.id)),
        }
    }

    /// A stable name for the journal's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Commit { change, .. } => change.kind(),
            Action::StartReplica { .. } => "start_replica",
            Action::RetireReplica { .. } => "retire_replica",
            Action::StopServices { .. } => "stop_services",
            Action::Herald { cmd: HeraldCmd::AddLearner(_), .. } => "add_learner",
            Action::Herald { cmd: HeraldCmd::SetVoters(_), .. } => "set_voters",
            Action::Herald { cmd: HeraldCmd::RemoveLearner(_), .. } => "remove_learner",
            Action::Herald { cmd: HeraldCmd::TransferLeader(_), .. } => "transfer_leader",
            Action::Herald { cmd: HeraldCmd::Shards { .. }, .. } => "serve_shards",
            Action::Herald { cmd: HeraldCmd::Move { step, .. }, .. } => step.kind(),
            Action::Herald { cmd: HeraldCmd::Reshard { .. }, .. } => "reshard_tables",
        }
    }

    /// The nodes, orders and shards the action concerns, for the journal.
    pub fn subjects(&self) -> Subjects {
        let mut s = Subjects::default();
        match self {
            Action::Commit { change, .. } => return change.subjects(),
            Action::StartReplica { node, order, .. } | Action::RetireReplica { node, order, .. } => {
                s.nodes.insert(node.id);
                s.orders.insert(*order);
            }
            Action::StopServices { node, .. } => {
                s.nodes.insert(node.id);
            }
            Action::Herald { order, herald, cmd, .. } => {
                s.orders.insert(*order);
                s.nodes.insert(herald.id);
                match cmd {
                    HeraldCmd::AddLearner(n) => {
                        s.nodes.insert(n.id);
                    }
                    HeraldCmd::SetVoters(v) => s.nodes.extend(v.iter().copied()),
                    HeraldCmd::RemoveLearner(n) | HeraldCmd::TransferLeader(n) => {
                        s.nodes.insert(*n);
                    }
                    HeraldCmd::Shards { acquire, release, .. } => {
                        s.shards.extend(acquire.iter().chain(release).copied())
                    }
                    HeraldCmd::Reshard { .. } => {}
                    HeraldCmd::Move { step, shard, .. } => {
                        s.shards.insert(*shard);
                        if let MoveStep::Pull { from, .. } = step {
                            s.orders.insert(*from);
                        }
                    }
                }
            }
        }
        s
    }

    /// What makes two actions on the same subject the same command: its text, except that
    /// a shard command decided on a later map epoch but with the same shards is the same.
    pub fn fingerprint(&self) -> String {
        match self {
            Action::Herald { order, cmd: HeraldCmd::Shards { acquire, release, .. }, .. } => {
                format!("shards {order} +{acquire:?} -{release:?}")
            }
            a => a.to_string(),
        }
    }

    /// Why the action was decided.
    pub fn reason(&self) -> &str {
        match self {
            Action::Commit { reason, .. }
            | Action::StartReplica { reason, .. }
            | Action::RetireReplica { reason, .. }
            | Action::StopServices { reason, .. }
            | Action::Herald { reason, .. } => reason,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Commit { change, .. } => write!(f, "{change}"),
            Action::StartReplica { node, order, initialize: true, .. } => {
                write!(f, "start {}'s replica on {}", group_name(*order), node.name)
            }
            Action::StartReplica { node, order, initialize: false, .. } => {
                write!(f, "start a learner replica of {} on {}", group_name(*order), node.name)
            }
            Action::RetireReplica { node, order, .. } => {
                write!(f, "stop and purge {}'s replica on {}", group_name(*order), node.name)
            }
            Action::Herald { order, cmd: HeraldCmd::AddLearner(n), .. } => {
                write!(f, "add {} to {} as a learner", n.name, group_name(*order))
            }
            Action::Herald { order, cmd: HeraldCmd::SetVoters(v), .. } => write!(
                f,
                "set {}'s voters to {}",
                group_name(*order),
                v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")
            ),
            Action::Herald { order, cmd: HeraldCmd::RemoveLearner(n), .. } => {
                write!(f, "remove learner {n} from {}", group_name(*order))
            }
            Action::Herald { order, cmd: HeraldCmd::TransferLeader(n), .. } => {
                write!(f, "hand the leadership of {} to node {n}", group_name(*order))
            }
            Action::StopServices { node, .. } => write!(f, "stop every service on {}", node.name),
            Action::Herald { order, cmd: HeraldCmd::Reshard { from, to }, .. } => {
                write!(f, "order {order} cuts its tables by {to} shards instead of {from}")
            }
            Action::Herald { order, cmd: HeraldCmd::Move { step, shard, move_id }, .. } => match step {
                MoveStep::Track => write!(f, "order {order} records the writes to shard {shard} (move {move_id})"),
                MoveStep::Untrack => write!(f, "order {order} stops recording shard {shard} (move {move_id})"),
                MoveStep::Drop => write!(f, "order {order} deletes its copy of shard {shard} (move {move_id})"),
                MoveStep::Pull { from, .. } => {
                    write!(f, "order {order} pulls shard {shard} from order {from} (move {move_id})")
                }
            },
            Action::Herald { order, cmd: HeraldCmd::Shards { acquire, release, epoch }, .. } => write!(
                f,
                "order {order} releases shards [{}] and acquires shards [{}] (map epoch {epoch})",
                ranges(release),
                ranges(acquire)
            ),
        }
    }
}

/// Shard numbers as compact ranges for the journal: `0-31,40,42-44`.
/// What an order does for a shard move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveStep {
    /// Source: record the shard's writes from now on (its log's `Track`).
    Track,
    /// Source of an abandoned move: stop recording.
    Untrack,
    /// Either side, once its log does not serve the shard: delete its rows.
    Drop,
    /// Destination: pull the shard from the source order, whose members are at `addrs`
    /// (its herald first).
    Pull {
        /// Source order.
        from: OrderId,
        /// Its members' addresses.
        addrs: Vec<String>,
    },
}

impl MoveStep {
    /// The journal kind of the step.
    pub fn kind(&self) -> &'static str {
        match self {
            MoveStep::Track => "track_shard",
            MoveStep::Untrack => "untrack_shard",
            MoveStep::Drop => "drop_shard",
            MoveStep::Pull { .. } => "pull_shard",
        }
    }
}

/// Shard numbers as ranges: `0-3,40,42-44`.
pub fn ranges(shards: &[u32]) -> String {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn shard_lists_read_as_ranges() {
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[3]), "3");
        assert_eq!(ranges(&[0, 1, 2, 3, 40, 42, 43, 44, 2]), "0-3,40,42-44");
    }
}
