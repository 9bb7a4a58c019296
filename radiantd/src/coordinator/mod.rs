//! The recovery coordinator: one pure planner ([`planner::plan`]: cluster map + what the
//! bondsmith observed -> [`Action`]s) and one executor on the bondsmith ([`runtime`]) that
//! carries the actions out and journals each.
//!
//! The planner does no I/O and remembers nothing: the runtime calls it on every event and
//! tick, executes what it returns, and calls it again (reconcile, don't script). Because it
//! only compares desired with observed state, a new bondsmith that knows nothing of its
//! predecessor's progress simply plans again, and a change left half done by a crash (a
//! replacement between its learner and its swap) is picked up where the reports say it is.

pub mod action;
pub mod moves;
pub mod planner;
pub mod runtime;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

pub use action::Action;
pub use action::ActionKey;
pub use action::HeraldCmd;
pub use moves::rebalance_plan;
pub use planner::balance;
pub use planner::can_remove;
pub use planner::plan;

use crate::identity::NodeId;
use crate::station::map::MemberInfo;
use crate::station::map::OrderId;

/// How long after a request to a node's supervisor the bondsmith repeats it, if the node's
/// heartbeats still do not show its effect.
pub const SPAWN_RETRY_MS: u64 = 3_000;

/// How long after a membership command to a herald the bondsmith repeats it, if the herald's
/// reports still do not show its effect (a report follows within a liveness interval).
pub const HERALD_RETRY_MS: u64 = 1_500;

/// A learner within this many entries of its herald's last log index counts as caught up.
pub const CATCHUP_SLACK: u64 = 64;

/// How long after a move command to a herald the bondsmith repeats it, if the herald's
/// reports still do not show its effect.
pub const MOVE_RETRY_MS: u64 = 1_000;

/// A learner whose matched index has not moved for this long is abandoned.
pub const CATCHUP_STALL_MS: u64 = 60_000;

/// What the cluster was bootstrapped with (from the station spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPlan {
    /// Cluster id.
    pub cluster_id: String,
    /// Shard count.
    pub shards: u32,
    /// Replicas per order.
    pub replicas: u32,
    /// Station members.
    pub station: Vec<MemberInfo>,
}

/// A node that phoned home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Who.
    pub node: MemberInfo,
    /// Capacity it offers.
    pub capacity: u64,
    /// Its data dir's incarnation.
    pub incarnation: u64,
}

/// What the bondsmith knows beyond the map. Times are milliseconds on a monotonic clock.
#[derive(Debug, Clone)]
pub struct Observed {
    /// This bondsmith.
    pub me: NodeId,
    /// Now.
    pub now_ms: u64,
    /// When this node became bondsmith: liveness verdicts wait for a full `down_after_ms`
    /// after it, so a fresh bondsmith does not mark everybody down before hearing from them.
    pub leader_since_ms: u64,
    /// The bootstrap parameters.
    pub bootstrap: BootstrapPlan,
    /// Kv limits chosen at bootstrap.
    pub limits: (u32, u32),
    /// Nodes that asked to join.
    pub announced: BTreeMap<NodeId, Announce>,
    /// Last heartbeat of each node.
    pub last_seen: HashMap<NodeId, u64>,
    /// The incarnation each node last announced or heartbeat with.
    pub incarnations: HashMap<NodeId, u64>,
    /// The order replicas each node reported in its last heartbeat.
    pub replicas: HashMap<NodeId, BTreeSet<OrderId>>,
    /// The herald each order's leader reported, with its Raft term.
    pub heralds: BTreeMap<OrderId, (NodeId, u64)>,
    /// I/O actions carried out lately (or still running, at `u64::MAX`), by what they act on,
    /// with the time they finished.
    pub recent: HashMap<ActionKey, u64>,
    /// The last action carried out on each key, as text: a different command on the same
    /// subject need not wait for the retry window of the previous one.
    pub last_sent: HashMap<ActionKey, String>,
    /// What each order's herald last reported: the shards its log says it serves, and which of
    /// those hold data.
    pub shard_reports: BTreeMap<OrderId, ShardReport>,
    /// What each order's herald last reported of its group's membership.
    pub memberships: BTreeMap<OrderId, MembershipReport>,
    /// For each learner, its matched log index and since when it has not moved.
    pub learner_progress: HashMap<(OrderId, NodeId), (u64, u64)>,
}

/// A herald's report on its order's shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardReport {
    /// Shards the order serves (acquired and not released, per its log).
    pub owned: BTreeSet<u32>,
    /// Shards whose table holds data.
    pub nonempty: BTreeSet<u32>,
    /// Keys and bytes of each shard table.
    pub sizes: BTreeMap<u32, ShardSize>,
    /// Shards the order's log records writes of, as the source of these moves.
    pub tracking: BTreeMap<u32, u64>,
    /// Shards the order is receiving.
    pub incoming: BTreeMap<u32, IncomingReport>,
    /// The shard count its tables are cut by, once it resharded.
    pub modulus: Option<u32>,
}

/// Keys and bytes of a shard, as its order's herald reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSize {
    /// Keys.
    pub keys: u64,
    /// Key plus value bytes.
    pub bytes: u64,
}

/// A destination's report on a shard it receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncomingReport {
    /// The move.
    pub move_id: u64,
    /// Its rows match the frozen source's digest.
    pub sealed: bool,
    /// A pull runs on the herald.
    pub pulling: bool,
    /// The pull's last delta was small: the source may freeze.
    pub converged: bool,
    /// Bytes pulled so far.
    pub bytes_done: u64,
}

/// A herald's report on its group's membership, as its Raft metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipReport {
    /// Voters of the last configuration (the new one, if joint).
    pub voters: BTreeSet<NodeId>,
    /// Learners.
    pub learners: BTreeSet<NodeId>,
    /// The group is in a joint configuration (a change is half done).
    pub joint: bool,
    /// The log index each follower and learner has matched.
    pub matched: BTreeMap<NodeId, u64>,
    /// The herald's last log index.
    pub last_log_index: u64,
}

impl Observed {
    /// Whether an I/O action on `key` finished within `window_ms`, or is still running.
    pub fn recently(&self, key: ActionKey, window_ms: u64) -> bool {
        self.recent.get(&key).is_some_and(|t| *t == u64::MAX || self.now_ms.saturating_sub(*t) < window_ms)
    }

    /// Whether `action` should wait: an action on its subject still runs, or this very action
    /// finished within `window_ms` (its effect may not show in the reports yet).
    pub fn recently_sent(&self, action: &Action, window_ms: u64) -> bool {
        let Some(key) = action.key() else { return false };
        match self.recent.get(&key) {
            Some(&u64::MAX) => true,
            Some(&t) => {
                self.now_ms.saturating_sub(t) < window_ms
                    && self.last_sent.get(&key).is_some_and(|last| *last == action.fingerprint())
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
