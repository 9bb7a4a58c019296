//! The recovery coordinator's planner: a pure function from the cluster map and what the
//! bondsmith observed to the next changes to make.
//!
//! No I/O happens here. [`crate::station::coordinator_loop`] feeds it the map and the
//! observations, proposes what it returns through the station's log, and calls it again:
//! reconcile, don't script. Because it only compares desired with observed state, a new
//! bondsmith that knows nothing of its predecessor's progress simply plans again.

use std::collections::BTreeMap;
use std::collections::HashMap;

use crate::identity::NodeId;
use crate::station::map::ClusterMap;
use crate::station::map::MapChange;
use crate::station::map::MemberInfo;

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
    /// Silence after which a node is down.
    pub down_after_ms: u64,
    /// The bootstrap parameters.
    pub bootstrap: BootstrapPlan,
    /// Nodes that asked to join.
    pub announced: BTreeMap<NodeId, Announce>,
    /// Last heartbeat of each node.
    pub last_seen: HashMap<NodeId, u64>,
}

/// One change with the reason that goes to the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The change.
    pub change: MapChange,
    /// Why.
    pub reason: String,
}

impl Observed {
    fn alive(&self, id: NodeId) -> bool {
        id == self.me || self.last_seen.get(&id).is_some_and(|&t| self.now_ms.saturating_sub(t) < self.down_after_ms)
    }
}

/// Plans the changes that bring the map in line with what was observed, most urgent first.
pub fn plan(map: &ClusterMap, obs: &Observed) -> Vec<Planned> {
    if map.cluster_id.is_empty() {
        let b = &obs.bootstrap;
        return vec![Planned {
            change: MapChange::Init {
                cluster_id: b.cluster_id.clone(),
                shards: b.shards,
                replicas: b.replicas,
                station: b.station.clone(),
            },
            reason: "station quorum reached for the first time".into(),
        }];
    }
    let mut out = Vec::new();
    if map.bondsmith != Some(obs.me) {
        let reason = match map.bondsmith {
            None => "first bondsmith elected".to_string(),
            Some(old) => format!("station leadership moved from {}", name_of(map, old)),
        };
        out.push(Planned { change: MapChange::SetBondsmith { id: obs.me }, reason });
    }
    for (id, a) in &obs.announced {
        let reason = match map.nodes.get(id) {
            None => format!("node up: {} at {} phoned home", a.node.name, a.node.addr),
            Some(n) if !n.joined => format!("node up: station member {} joined as a satellite", n.name),
            Some(n) if n.addr != a.node.addr || n.name != a.node.name => {
                format!("node up: {} now at {} (was {} at {})", a.node.name, a.node.addr, n.name, n.addr)
            }
            Some(_) => continue,
        };
        out.push(Planned { change: MapChange::Register { node: a.node.clone(), capacity: a.capacity }, reason });
    }
    let settled = obs.now_ms.saturating_sub(obs.leader_since_ms) >= obs.down_after_ms;
    for node in map.nodes.values() {
        let alive = obs.alive(node.id);
        if node.up && !alive && settled {
            let reason = match obs.last_seen.get(&node.id) {
                Some(t) => format!("heartbeat lost: none for {} ms", obs.now_ms.saturating_sub(*t)),
                None => format!(
                    "heartbeat lost: none since this bondsmith took over {} ms ago",
                    obs.now_ms - obs.leader_since_ms
                ),
            };
            out.push(Planned { change: MapChange::MarkDown { id: node.id }, reason });
        } else if !node.up && alive {
            out.push(Planned { change: MapChange::MarkUp { id: node.id }, reason: "heartbeat resumed".into() });
        }
    }
    out
}

/// A node's name for the journal, or its id if the map does not know it.
fn name_of(map: &ClusterMap, id: NodeId) -> String {
    map.nodes.get(&id).map(|n| n.name.clone()).unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests;
