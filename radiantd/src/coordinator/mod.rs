//! The recovery coordinator's planner: a pure function from the cluster map and what the
//! bondsmith observed to the next changes to make.
//!
//! No I/O happens here. [`crate::station::coordinator_loop`] feeds it the map and the
//! observations, proposes what it returns through the station's log, and calls it again:
//! reconcile, don't script. Because it only compares desired with observed state, a new
//! bondsmith that knows nothing of its predecessor's progress simply plans again.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use crate::identity::NodeId;
use crate::station::map::ClusterMap;
use crate::station::map::MapChange;
use crate::station::map::MemberInfo;
use crate::station::map::OrderId;

/// How long after asking a node to start an order replica the bondsmith asks again, if the
/// node's heartbeats still do not report it.
pub const SPAWN_RETRY_MS: u64 = 3_000;

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
    /// Kv limits chosen at bootstrap.
    pub limits: (u32, u32),
    /// Nodes that asked to join.
    pub announced: BTreeMap<NodeId, Announce>,
    /// Last heartbeat of each node.
    pub last_seen: HashMap<NodeId, u64>,
    /// The order replicas each node reported in its last heartbeat.
    pub replicas: HashMap<NodeId, BTreeSet<OrderId>>,
    /// The herald each order's leader reported, with its Raft term.
    pub heralds: BTreeMap<OrderId, (NodeId, u64)>,
    /// When the bondsmith last asked a node to start an order's replica.
    pub spawned_at: HashMap<(NodeId, OrderId), u64>,
    /// What each order's herald last reported: the shards its log says it serves, and which of
    /// those hold data.
    pub shard_reports: BTreeMap<OrderId, ShardReport>,
}

/// A herald's report on its order's shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardReport {
    /// Shards the order serves (acquired and not released, per its log).
    pub owned: BTreeSet<u32>,
    /// Shards whose table holds data.
    pub nonempty: BTreeSet<u32>,
}

/// An order replica the bondsmith must ask a node to start (an action with I/O, carried out by
/// the runtime through the node's supervisor; the supervisor's spawn is idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnReplica {
    /// The node.
    pub node: MemberInfo,
    /// The order.
    pub order: OrderId,
    /// The order's members, the initial membership of its Raft group.
    pub members: Vec<MemberInfo>,
    /// Why.
    pub reason: String,
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
                max_key_bytes: obs.limits.0,
                max_value_bytes: obs.limits.1,
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
    plan_orders(map, obs, &mut out);
    out
}

/// Spare nodes: joined, up, in no order; by id, so formation is deterministic.
fn spares(map: &ClusterMap) -> Vec<NodeId> {
    map.nodes.values().filter(|n| n.joined && n.up && map.order_of(n.id).is_none()).map(|n| n.id).collect()
}

fn plan_orders(map: &ClusterMap, obs: &Observed, out: &mut Vec<Planned>) {
    let spare = spares(map);
    let r = map.replicas.max(1) as usize;
    if spare.len() >= r {
        let members: Vec<NodeId> = spare[..r].to_vec();
        let names: Vec<String> = members.iter().map(|m| name_of(map, *m)).collect();
        out.push(Planned {
            change: MapChange::FormOrder { id: map.next_order_id, members },
            reason: format!(
                "{} spare nodes, {r} per order: {} form order {}",
                spare.len(),
                names.join(","),
                map.next_order_id
            ),
        });
    }
    for (order, (node, term)) in &obs.heralds {
        let Some(o) = map.orders.get(order) else { continue };
        let newer = *term > o.herald_term || (*term == o.herald_term && o.herald != Some(*node));
        if newer && o.members.contains(node) {
            out.push(Planned {
                change: MapChange::SetHerald { order: *order, node: *node, term: *term },
                reason: format!("herald registered: {} leads order {order} in term {term}", name_of(map, *node)),
            });
        }
    }
    // Shards are placed once no further order can form and every order has a herald: with no
    // data transfer yet, a shard stays where it is first placed.
    let unassigned: Vec<u32> =
        map.shard_orders.iter().enumerate().filter(|(_, o)| **o == 0).map(|(s, _)| s as u32).collect();
    let ready = !map.orders.is_empty() && map.orders.values().all(|o| o.herald.is_some());
    if !unassigned.is_empty() && ready && spare.len() < r {
        let assignments = balance(map, &unassigned);
        let orders = map.orders.len();
        out.push(Planned {
            change: MapChange::AssignShards { assignments },
            reason: format!("{} unassigned shards, {orders} orders with heralds: spread evenly", unassigned.len()),
        });
    }
    plan_moves(map, obs, out, unassigned.is_empty() && ready);
}

/// Hands empty shards from the fullest order to the emptiest until they differ by at most one.
/// Only a shard the source reports empty is moved (data transfer comes later); the source's
/// own log fences it (Release), and the move completes only once the source reports it
/// released and still empty, so no two orders ever serve a shard.
fn plan_moves(map: &ClusterMap, obs: &Observed, out: &mut Vec<Planned>, placed: bool) {
    for (&shard, &to) in &map.moving {
        let from = map.shard_orders[shard as usize];
        let Some(report) = obs.shard_reports.get(&from) else { continue };
        if report.owned.contains(&shard) {
            continue; // not released yet
        }
        if report.nonempty.contains(&shard) {
            out.push(Planned {
                change: MapChange::CancelMove { shard },
                reason: format!(
                    "shard {shard} got data before order {from} released it; moving data is not supported yet"
                ),
            });
        } else {
            out.push(Planned {
                change: MapChange::CompleteMove { shard },
                reason: format!("order {from} released shard {shard} empty: order {to} serves it"),
            });
        }
    }
    if !placed || map.orders.len() < 2 {
        return;
    }
    // Counts as they will be once the moves under way complete.
    let mut counts: BTreeMap<OrderId, usize> = map.orders.keys().map(|o| (*o, 0)).collect();
    for (s, o) in map.shard_orders.iter().enumerate() {
        let owner = map.moving.get(&(s as u32)).unwrap_or(o);
        *counts.entry(*owner).or_default() += 1;
    }
    let Some((&to, &low)) = counts.iter().min_by_key(|(id, n)| (**n, **id)) else { return };
    let Some((&from, &high)) = counts.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))) else { return };
    if high <= low + 1 {
        return;
    }
    let Some(report) = obs.shard_reports.get(&from) else { return };
    let candidate = map.shard_orders.iter().enumerate().rev().map(|(s, o)| (s as u32, *o)).find(|(s, o)| {
        *o == from && !map.moving.contains_key(s) && report.owned.contains(s) && !report.nonempty.contains(s)
    });
    if let Some((shard, _)) = candidate {
        out.push(Planned {
            change: MapChange::BeginMove { shard, to },
            reason: format!(
                "order {from} would serve {high} shards and order {to} {low}: hand over empty shard {shard}"
            ),
        });
    }
}

/// Gives each unassigned shard to the order serving the fewest (ties: lowest id), so order
/// sizes differ by at most one among the receivers and no assigned shard moves.
pub fn balance(map: &ClusterMap, unassigned: &[u32]) -> Vec<(u32, OrderId)> {
    let mut counts: BTreeMap<OrderId, usize> = map.orders.keys().map(|o| (*o, map.shard_count(*o))).collect();
    let mut out = Vec::with_capacity(unassigned.len());
    for &s in unassigned {
        let Some((&order, _)) = counts.iter().min_by_key(|(id, n)| (**n, **id)) else { break };
        out.push((s, order));
        if let Some(n) = counts.get_mut(&order) {
            *n += 1;
        }
    }
    out
}

/// Order replicas to start: members whose heartbeats do not report their order's replica.
pub fn plan_spawns(map: &ClusterMap, obs: &Observed) -> Vec<SpawnReplica> {
    let mut out = Vec::new();
    // A new bondsmith knows nothing of running replicas until the heartbeats arrive: it asks
    // only about nodes it heard from, or once a full down-timeout has passed.
    let settled = obs.now_ms.saturating_sub(obs.leader_since_ms) >= obs.down_after_ms;
    for o in map.orders.values() {
        let members: Vec<MemberInfo> = o
            .members
            .iter()
            .filter_map(|m| map.nodes.get(m))
            .map(|n| MemberInfo { id: n.id, name: n.name.clone(), addr: n.addr.clone() })
            .collect();
        for m in &members {
            let up = map.nodes.get(&m.id).is_some_and(|n| n.up);
            let running = obs.replicas.get(&m.id).is_some_and(|r| r.contains(&o.id));
            let recently =
                obs.spawned_at.get(&(m.id, o.id)).is_some_and(|t| obs.now_ms.saturating_sub(*t) < SPAWN_RETRY_MS);
            let heard = settled || obs.replicas.contains_key(&m.id);
            if up && heard && !running && !recently {
                out.push(SpawnReplica {
                    node: m.clone(),
                    order: o.id,
                    members: members.clone(),
                    reason: format!("{} is a member of order {} but does not run its replica", m.name, o.id),
                });
            }
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
