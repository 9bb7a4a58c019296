//! The cluster map: what the station's Raft log agrees on.
//!
//! Every change is a [`MapChange`] proposed with the epoch it was planned at; it applies only
//! if the map is still at that epoch, and then moves the epoch by one and journals the change
//! with its reason. A change planned by a bondsmith that has since been deposed, or planned
//! twice, is refused as [`StationResponse::Stale`] instead of being applied on a map it was
//! not planned for.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use super::journal::Subjects;
use super::moves::MovePhase;
use super::moves::PlannedMove;
use super::moves::ShardMove;
use super::reshard::Reshard;
use super::settings::Settings;
use crate::identity::NodeId;

/// A node as the station knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: NodeId,
    /// Name from its config.
    pub name: String,
    /// Advertise address.
    pub addr: String,
    /// Capacity it announced (bytes of disk it offers; 0 when unknown).
    pub capacity: u64,
    /// It phoned home and may be given an order.
    pub joined: bool,
    /// Heartbeats arrive.
    pub up: bool,
    /// Its data dir's incarnation as last registered (0 for a station member that has not
    /// joined yet).
    pub incarnation: u64,
    /// What an operator asked of the node.
    pub intent: Intent,
}

/// An operator's intent for a node: it survives bondsmith failovers because it is in the map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intent {
    /// Serve as usual.
    #[default]
    Serve,
    /// Lead nothing (Rocinante's "not ready"): leaderships move to caught-up voters.
    Drain,
    /// Drain, then give every membership to a spare, then retire.
    Remove,
    /// Removed: services stopped, never back under this identity (this incarnation).
    Removed,
}

pub use crate::identity::OrderId;

/// The group id the station's Raft group goes by where a group is named (replacements, replica
/// starts and retirements): order ids start at 1, and the transport already names the
/// station's group 0.
pub const STATION: OrderId = 0;

/// Names a group for the journal.
pub fn group_name(group: OrderId) -> String {
    if group == STATION { "the station".to_string() } else { format!("order {group}") }
}

/// Default Kv key limit.
pub const DEFAULT_MAX_KEY_BYTES: u32 = 4 * 1024;
/// Default Kv value limit.
pub const DEFAULT_MAX_VALUE_BYTES: u32 = 1024 * 1024;

/// A replica group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// Order id.
    pub id: OrderId,
    /// Its radiants.
    pub members: Vec<NodeId>,
    /// Its Raft leader as last registered.
    pub herald: Option<NodeId>,
    /// The Raft term of that registration: an older term never overwrites a newer one.
    pub herald_term: u64,
    /// The membership change under way, if any (one per order at a time).
    pub reconfig: Option<Reconfig>,
    /// Nodes replaced out of this order: their copy of its log may be gone or stale, so they
    /// never become members of it again (openraft forbids reusing a member id whose log was
    /// lost).
    pub retired: BTreeSet<NodeId>,
    /// The incarnation each member had when it became one: a member that comes back with
    /// another has lost its copy of the order's log, and counts as dead for the order.
    pub incarnations: BTreeMap<NodeId, u64>,
}

/// A member being replaced: `add` joins as a learner, catches up, and is swapped for `remove`
/// in one joint membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconfig {
    /// The spare taking the place.
    pub add: NodeId,
    /// The member leaving.
    pub remove: NodeId,
    /// The map epoch the replacement began at.
    pub since_epoch: u64,
}

/// A Raft group's membership as the map plans it: an order's, or the station's.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    /// The order, or [`STATION`].
    pub id: OrderId,
    /// Its voters.
    pub members: &'a [NodeId],
    /// The replacement under way.
    pub reconfig: Option<&'a Reconfig>,
    /// Nodes replaced out of it.
    pub retired: &'a BTreeSet<NodeId>,
}

struct GroupMut<'a> {
    members: &'a mut Vec<NodeId>,
    reconfig: &'a mut Option<Reconfig>,
    retired: &'a mut BTreeSet<NodeId>,
}

/// The cluster map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Empty until the first bondsmith initializes the map.
    pub cluster_id: String,
    /// Grows by one with every change.
    pub epoch: u64,
    /// Number of shards, fixed at bootstrap.
    pub shards: u32,
    /// Replicas per order.
    pub replicas: u32,
    /// Current bondsmith, as last recorded.
    pub bondsmith: Option<NodeId>,
    /// Station members.
    pub station: Vec<NodeId>,
    /// Every registered node.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// The orders.
    pub orders: BTreeMap<OrderId, OrderRecord>,
    /// `shard_orders[s]` serves shard `s`; 0 means not assigned.
    pub shard_orders: Vec<OrderId>,
    /// The id the next order gets.
    pub next_order_id: OrderId,
    /// Largest key the Kv service accepts.
    pub max_key_bytes: u32,
    /// Largest value the Kv service accepts.
    pub max_value_bytes: u32,
    /// Shard moves under way, by shard; until a move switches, `shard_orders` names its
    /// source.
    pub moves: BTreeMap<u32, ShardMove>,
    /// Cluster settings.
    pub settings: Settings,
    /// The station member being replaced, if any.
    pub station_reconfig: Option<Reconfig>,
    /// Nodes replaced out of the station; they never rejoin it.
    pub station_retired: BTreeSet<NodeId>,
    /// Moves a rebalance planned that have not begun, in the order they will.
    pub planned_moves: Vec<PlannedMove>,
    /// A change of the shard count under way (`fracture`, `consolidate`).
    pub reshard: Option<Reshard>,
}

/// A station member, as given at bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub id: NodeId,
    /// Name.
    pub name: String,
    /// Address.
    pub addr: String,
}

/// A change to the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapChange {
    /// Creates the map (only at epoch 0).
    Init {
        /// Cluster id chosen by `radiantctl bootstrap`.
        cluster_id: String,
        /// Shard count.
        shards: u32,
        /// Replicas per order.
        replicas: u32,
        /// The station members.
        station: Vec<MemberInfo>,
        /// Kv key limit.
        max_key_bytes: u32,
        /// Kv value limit.
        max_value_bytes: u32,
    },
    /// Records who the bondsmith is.
    SetBondsmith {
        /// The new bondsmith.
        id: NodeId,
    },
    /// Adds a node, or marks a known one as joined, with its current address.
    Register {
        /// The node.
        node: MemberInfo,
        /// Announced capacity.
        capacity: u64,
        /// Its data dir's incarnation.
        incarnation: u64,
    },
    /// Heartbeats stopped.
    MarkDown {
        /// The node.
        id: NodeId,
    },
    /// Heartbeats resumed.
    MarkUp {
        /// The node.
        id: NodeId,
    },
    /// Makes spare nodes an order.
    FormOrder {
        /// The new order's id (the map's `next_order_id`).
        id: OrderId,
        /// Its members.
        members: Vec<NodeId>,
    },
    /// Records an order's herald.
    SetHerald {
        /// The order.
        order: OrderId,
        /// Its herald.
        node: NodeId,
        /// The herald's Raft term.
        term: u64,
    },
    /// Places unassigned shards on orders.
    AssignShards {
        /// `(shard, order)` pairs.
        assignments: Vec<(u32, OrderId)>,
    },
    /// Starts handing an empty shard over to another order: its order must release it.
    BeginMove {
        /// The shard.
        shard: u32,
        /// The destination order.
        to: OrderId,
    },
    /// The source released the shard empty: the destination serves it from now on.
    CompleteMove {
        /// The shard.
        shard: u32,
    },
    /// The handover is abandoned (the shard got data before its release); the source keeps it.
    CancelMove {
        /// The shard.
        shard: u32,
    },
    /// Changes a cluster setting.
    Set {
        /// Setting name.
        name: String,
        /// New value, as text (validated on apply).
        value: String,
    },
    /// Starts replacing a member of an order (or of the station, [`STATION`]) with a spare.
    BeginReplace {
        /// The order, or [`STATION`].
        order: OrderId,
        /// The spare.
        add: NodeId,
        /// The member it replaces.
        remove: NodeId,
    },
    /// The group runs with the spare in place of the member: the map follows. Names the
    /// replacement it completes, and applies only to that one.
    CompleteReplace {
        /// The order, or [`STATION`].
        order: OrderId,
        /// The spare.
        add: NodeId,
        /// The member it replaced.
        remove: NodeId,
    },
    /// The replacement is abandoned (the spare died or never caught up); members unchanged.
    AbortReplace {
        /// The order, or [`STATION`].
        order: OrderId,
        /// The spare.
        add: NodeId,
        /// The member it was to replace.
        remove: NodeId,
    },
    /// Sets an operator's intent for a node (drain, undrain, remove, or removed when its
    /// memberships are all given away).
    SetIntent {
        /// The node.
        id: NodeId,
        /// The intent.
        intent: Intent,
    },
    /// Journals an action carried out outside the map (a replica started or stopped, a
    /// command to a herald) with its outcome. Applied at any epoch and leaves the epoch as
    /// it is: the action was decided on an earlier map and only its record is added.
    Record {
        /// The action's kind (`start_replica`, `retire_replica`, ...).
        kind: String,
        /// What was done.
        action: String,
        /// How it went.
        outcome: String,
        /// What it concerns.
        subjects: Subjects,
    },
    // New variants go last: postcard numbers variants, and old station logs must decode.
    /// Queues a rebalance's moves (replacing any queue); refused if a move's source is no
    /// longer where the shard is headed.
    PlanMoves {
        /// The moves, in the order they will begin.
        moves: Vec<PlannedMove>,
    },
    /// Begins a move with data: the source keeps serving while the destination copies. The
    /// move's id is the epoch this change creates. Leaves the queue without the shard.
    StartMove {
        /// The shard.
        shard: u32,
        /// Destination order.
        to: OrderId,
        /// Keys, as last reported.
        keys: u64,
        /// Bytes, as last reported.
        bytes: u64,
    },
    /// The destination has nearly caught up: the source is to release the shard.
    FreezeMove {
        /// The shard.
        shard: u32,
        /// The move.
        id: u64,
    },
    /// The destination sealed the shard against the frozen source's digest: it owns the shard.
    SwitchMove {
        /// The shard.
        shard: u32,
        /// The move.
        id: u64,
    },
    /// The destination serves and the source's copy is gone: the move is over.
    FinishMove {
        /// The shard.
        shard: u32,
        /// The move.
        id: u64,
    },
    /// Abandons a move that has not switched; the source serves the shard again.
    AbortMove {
        /// The shard.
        shard: u32,
        /// The move.
        id: u64,
    },
    /// Empties the move queue and abandons every move that has not switched.
    CancelMoves,
    /// Starts changing the shard count to `to` (twice or half the count now).
    BeginReshard {
        /// The new count.
        to: u32,
    },
    /// Every order's log cuts its tables by `to`: the map takes the new count.
    CompleteReshard {
        /// The new count.
        to: u32,
    },
}

impl fmt::Display for MapChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapChange::Init { cluster_id, shards, replicas, station, .. } => write!(
                f,
                "init cluster {cluster_id} (shards={shards}, replicas={replicas}, station={})",
                station.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(",")
            ),
            MapChange::SetBondsmith { id } => write!(f, "bondsmith is now {id}"),
            MapChange::Register { node, capacity, incarnation } => write!(
                f,
                "register node {} ({}, {}, capacity {capacity}, incarnation {incarnation:x})",
                node.id, node.name, node.addr
            ),
            MapChange::MarkDown { id } => write!(f, "mark node {id} down"),
            MapChange::MarkUp { id } => write!(f, "mark node {id} up"),
            MapChange::FormOrder { id, members } => write!(
                f,
                "form order {id} from nodes {}",
                members.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",")
            ),
            MapChange::SetHerald { order, node, term } => write!(f, "herald of order {order} is {node} (term {term})"),
            MapChange::AssignShards { assignments } => {
                let mut per_order: BTreeMap<OrderId, usize> = BTreeMap::new();
                for (_, o) in assignments {
                    *per_order.entry(*o).or_default() += 1;
                }
                let parts: Vec<String> = per_order.iter().map(|(o, n)| format!("{n} to order {o}")).collect();
                write!(f, "assign {} shards: {}", assignments.len(), parts.join(", "))
            }
            MapChange::BeginMove { shard, to } => write!(f, "begin moving shard {shard} to order {to}"),
            MapChange::CompleteMove { shard } => write!(f, "complete the move of shard {shard}"),
            MapChange::CancelMove { shard } => write!(f, "cancel the move of shard {shard}"),
            MapChange::PlanMoves { moves } => {
                let bytes: u64 = moves.iter().map(|m| m.bytes).sum();
                write!(f, "queue {} shard moves ({bytes} bytes)", moves.len())
            }
            MapChange::StartMove { shard, to, keys, bytes } => {
                write!(f, "begin moving shard {shard} to order {to} ({keys} keys, {bytes} bytes)")
            }
            MapChange::FreezeMove { shard, id } => write!(f, "freeze shard {shard} for move {id}"),
            MapChange::SwitchMove { shard, id } => write!(f, "switch shard {shard} to its destination (move {id})"),
            MapChange::FinishMove { shard, id } => write!(f, "finish move {id} of shard {shard}"),
            MapChange::AbortMove { shard, id } => write!(f, "abandon move {id} of shard {shard}"),
            MapChange::CancelMoves => write!(f, "cancel the queued moves and those not switched"),
            MapChange::BeginReshard { to } => write!(f, "begin changing the shard count to {to}"),
            MapChange::CompleteReshard { to } => write!(f, "the cluster has {to} shards"),
            MapChange::Set { name, value } => write!(f, "set {name} = {value}"),
            MapChange::BeginReplace { order, add, remove } => {
                write!(f, "begin replacing node {remove} by node {add} in {}", group_name(*order))
            }
            MapChange::CompleteReplace { order, add, remove } => {
                write!(f, "node {add} replaced node {remove} in {}", group_name(*order))
            }
            MapChange::AbortReplace { order, add, remove } => {
                write!(f, "abandon replacing node {remove} by node {add} in {}", group_name(*order))
            }
            MapChange::Record { action, outcome, .. } => write!(f, "{action}: {outcome}"),
            MapChange::SetIntent { id, intent } => write!(
                f,
                "node {id}: {}",
                match intent {
                    Intent::Serve => "serve (undrained)",
                    Intent::Drain => "drain",
                    Intent::Remove => "remove",
                    Intent::Removed => "removed",
                }
            ),
        }
    }
}

impl MapChange {
    /// A stable name for the journal's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            MapChange::Init { .. } => "init",
            MapChange::SetBondsmith { .. } => "set_bondsmith",
            MapChange::Register { .. } => "register",
            MapChange::MarkDown { .. } => "mark_down",
            MapChange::MarkUp { .. } => "mark_up",
            MapChange::FormOrder { .. } => "form_order",
            MapChange::SetHerald { .. } => "set_herald",
            MapChange::AssignShards { .. } => "assign_shards",
            MapChange::BeginMove { .. } => "begin_move",
            MapChange::CompleteMove { .. } => "complete_move",
            MapChange::CancelMove { .. } => "cancel_move",
            MapChange::PlanMoves { .. } => "plan_moves",
            MapChange::StartMove { .. } => "start_move",
            MapChange::FreezeMove { .. } => "freeze_move",
            MapChange::SwitchMove { .. } => "switch_move",
            MapChange::FinishMove { .. } => "finish_move",
            MapChange::AbortMove { .. } => "abort_move",
            MapChange::CancelMoves => "cancel_moves",
            MapChange::BeginReshard { .. } => "begin_reshard",
            MapChange::CompleteReshard { .. } => "complete_reshard",
            MapChange::Set { .. } => "set",
            MapChange::BeginReplace { .. } => "begin_replace",
            MapChange::CompleteReplace { .. } => "complete_replace",
            MapChange::AbortReplace { .. } => "abort_replace",
            MapChange::Record { .. } => "record",
            MapChange::SetIntent { .. } => "set_intent",
        }
    }

    /// The nodes, orders and shards the change concerns, for the journal.
    pub fn subjects(&self) -> Subjects {
        let mut s = Subjects::default();
        match self {
            MapChange::Init { station, .. } => {
                s.nodes.extend(station.iter().map(|m| m.id));
                s.orders.insert(STATION);
            }
            MapChange::SetBondsmith { id } => {
                s.nodes.insert(*id);
                s.orders.insert(STATION);
            }
            MapChange::Register { node, .. } => {
                s.nodes.insert(node.id);
            }
            MapChange::MarkDown { id } | MapChange::MarkUp { id } | MapChange::SetIntent { id, .. } => {
                s.nodes.insert(*id);
            }
            MapChange::FormOrder { id, members } => {
                s.nodes.extend(members.iter().copied());
                s.orders.insert(*id);
            }
            MapChange::SetHerald { order, node, .. } => {
                s.nodes.insert(*node);
                s.orders.insert(*order);
            }
            MapChange::AssignShards { assignments } => {
                for (shard, order) in assignments {
                    s.shards.insert(*shard);
                    s.orders.insert(*order);
                }
            }
            MapChange::BeginMove { shard, to } => {
                s.shards.insert(*shard);
                s.orders.insert(*to);
            }
            MapChange::CompleteMove { shard } | MapChange::CancelMove { shard } => {
                s.shards.insert(*shard);
            }
            MapChange::PlanMoves { moves } => {
                for m in moves {
                    s.shards.insert(m.shard);
                    s.orders.extend([m.from, m.to]);
                }
            }
            MapChange::StartMove { shard, to, .. } => {
                s.shards.insert(*shard);
                s.orders.insert(*to);
            }
            MapChange::FreezeMove { shard, .. }
            | MapChange::SwitchMove { shard, .. }
            | MapChange::FinishMove { shard, .. }
            | MapChange::AbortMove { shard, .. } => {
                s.shards.insert(*shard);
            }
            MapChange::CancelMoves | MapChange::BeginReshard { .. } | MapChange::CompleteReshard { .. } => {}
            MapChange::Set { .. } => {}
            MapChange::BeginReplace { order, add, remove } => {
                s.nodes.extend([*add, *remove]);
                s.orders.insert(*order);
            }
            MapChange::CompleteReplace { order, add, remove } | MapChange::AbortReplace { order, add, remove } => {
                s.nodes.extend([*add, *remove]);
                s.orders.insert(*order);
            }
            MapChange::Record { subjects, .. } => s = subjects.clone(),
        }
        s
    }
}

/// An entry of the station's Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationCommand {
    /// The epoch the change was planned at.
    pub expected_epoch: u64,
    /// When it was planned (bondsmith's clock).
    pub at_unix_ms: u64,
    /// The bondsmith that planned it.
    pub by: NodeId,
    /// The change.
    pub change: MapChange,
    /// Why, for the journal.
    pub reason: String,
}

impl fmt::Display for StationCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{} {} ({})", self.expected_epoch, self.change, self.reason)
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StationResponse {
    /// Applied; the map is now at this epoch.
    Applied {
        /// New epoch.
        epoch: u64,
    },
    /// Not applied: the map had moved on to this epoch.
    Stale {
        /// Current epoch.
        epoch: u64,
    },
    /// Not applied: the change makes no sense on this map.
    Rejected {
        /// Why.
        reason: String,
    },
    /// A blank or membership entry: nothing for the map.
    Nothing,
}

impl ClusterMap {
    /// Applies one command deterministically (every replica reaches the same map). What is
    /// `Applied` goes to the journal (the state machine writes it beside the map).
    pub fn apply(&mut self, cmd: &StationCommand) -> StationResponse {
        if let MapChange::Record { .. } = &cmd.change {
            return StationResponse::Applied { epoch: self.epoch };
        }
        if cmd.expected_epoch != self.epoch {
            return StationResponse::Stale { epoch: self.epoch };
        }
        if let Err(reason) = self.apply_change(&cmd.change) {
            return StationResponse::Rejected { reason };
        }
        self.epoch += 1;
        StationResponse::Applied { epoch: self.epoch }
    }

    fn apply_change(&mut self, change: &MapChange) -> Result<(), String> {
        match change {
            MapChange::Init { cluster_id, shards, replicas, station, max_key_bytes, max_value_bytes } => {
                if !self.cluster_id.is_empty() {
                    return Err(format!("map already initialized for cluster {}", self.cluster_id));
                }
                self.cluster_id = cluster_id.clone();
                self.shards = *shards;
                self.replicas = *replicas;
                self.station = station.iter().map(|m| m.id).collect();
                self.shard_orders = vec![0; *shards as usize];
                self.next_order_id = 1;
                self.max_key_bytes = *max_key_bytes;
                self.max_value_bytes = *max_value_bytes;
                for m in station {
                    self.nodes.insert(
                        m.id,
                        NodeRecord {
                            id: m.id,
                            name: m.name.clone(),
                            addr: m.addr.clone(),
                            capacity: 0,
                            joined: false,
                            up: true,
                            incarnation: 0,
                            intent: Intent::Serve,
                        },
                    );
                }
            }
            MapChange::SetBondsmith { id } => {
                if !self.station.contains(id) {
                    return Err(format!("node {id} is not a station member"));
                }
                self.bondsmith = Some(*id);
            }
            MapChange::Register { node, capacity, incarnation } => {
                let rec = self.nodes.entry(node.id).or_insert_with(|| NodeRecord {
                    id: node.id,
                    name: node.name.clone(),
                    addr: node.addr.clone(),
                    capacity: *capacity,
                    joined: true,
                    up: true,
                    incarnation: *incarnation,
                    intent: Intent::Serve,
                });
                if rec.intent == Intent::Removed && rec.incarnation == *incarnation {
                    return Err(format!("node {} was removed; it cannot come back under its old identity", node.id));
                }
                if rec.incarnation != *incarnation {
                    // A wiped data dir is a new node: nothing asked of the old one applies.
                    rec.intent = Intent::Serve;
                }
                rec.name = node.name.clone();
                rec.addr = node.addr.clone();
                rec.capacity = *capacity;
                rec.joined = true;
                rec.up = true;
                rec.incarnation = *incarnation;
            }
            MapChange::MarkDown { id } => self.node_mut(*id)?.up = false,
            MapChange::MarkUp { id } => self.node_mut(*id)?.up = true,
            MapChange::FormOrder { id, members } => {
                if *id != self.next_order_id {
                    return Err(format!("order id {id} is not the next one ({})", self.next_order_id));
                }
                if members.is_empty() {
                    return Err("an order needs members".into());
                }
                for m in members {
                    let n = self.nodes.get(m).ok_or_else(|| format!("unknown node {m}"))?;
                    if !n.joined {
                        return Err(format!("node {m} has not joined"));
                    }
                    if let Some(o) = self.order_of(*m) {
                        return Err(format!("node {m} is already in order {o}"));
                    }
                }
                let incarnations =
                    members.iter().map(|m| (*m, self.nodes.get(m).map_or(0, |n| n.incarnation))).collect();
                self.orders.insert(
                    *id,
                    OrderRecord {
                        id: *id,
                        members: members.clone(),
                        herald: None,
                        herald_term: 0,
                        reconfig: None,
                        retired: BTreeSet::new(),
                        incarnations,
                    },
                );
                self.next_order_id += 1;
            }
            MapChange::SetHerald { order, node, term } => {
                let o = self.orders.get_mut(order).ok_or_else(|| format!("unknown order {order}"))?;
                if !o.members.contains(node) {
                    return Err(format!("node {node} is not a member of order {order}"));
                }
                if *term < o.herald_term {
                    return Err(format!("term {term} is older than the registered herald's {}", o.herald_term));
                }
                o.herald = Some(*node);
                o.herald_term = *term;
            }
            MapChange::AssignShards { assignments } => {
                for (shard, order) in assignments {
                    let slot = self.shard_orders.get(*shard as usize).ok_or_else(|| format!("no shard {shard}"))?;
                    if *slot != 0 {
                        return Err(format!("shard {shard} is already served by order {slot}"));
                    }
                    if !self.orders.contains_key(order) {
                        return Err(format!("unknown order {order}"));
                    }
                }
                for (shard, order) in assignments {
                    self.shard_orders[*shard as usize] = *order;
                }
            }
            // Written by the release before moves carried data: an empty shard handed over.
            MapChange::BeginMove { shard, to } => self.start_move(*shard, *to, 0, 0)?,
            MapChange::CompleteMove { shard } => {
                let m = self.moves.remove(shard).ok_or_else(|| format!("shard {shard} is not moving"))?;
                self.shard_orders[*shard as usize] = m.to;
            }
            MapChange::CancelMove { shard } => {
                self.moves.remove(shard).ok_or_else(|| format!("shard {shard} is not moving"))?;
            }
            MapChange::PlanMoves { moves } => self.plan_moves(moves)?,
            MapChange::StartMove { shard, to, keys, bytes } => self.start_move(*shard, *to, *keys, *bytes)?,
            MapChange::FreezeMove { shard, id } => self.advance_move(*shard, *id, MovePhase::Frozen)?,
            MapChange::SwitchMove { shard, id } => self.advance_move(*shard, *id, MovePhase::Switched)?,
            MapChange::FinishMove { shard, id } => self.finish_move(*shard, *id)?,
            MapChange::AbortMove { shard, id } => self.abort_move(*shard, *id)?,
            MapChange::CancelMoves => self.cancel_moves()?,
            MapChange::BeginReshard { to } => self.begin_reshard(*to)?,
            MapChange::CompleteReshard { to } => self.complete_reshard(*to)?,
            MapChange::Set { name, value } => {
                self.settings.set(name, value).map_err(|e| e.to_string())?;
            }
            MapChange::BeginReplace { order, add, remove } => {
                let spare = self.nodes.get(add).ok_or_else(|| format!("unknown node {add}"))?;
                let busy = self.order_of(*add).is_some() || self.learner_of(*add).is_some();
                if !spare.joined || busy || (*order == STATION && self.station.contains(add)) {
                    return Err(format!("node {add} is not a spare"));
                }
                let epoch = self.epoch;
                let g = self.group_mut(*order)?;
                if let Some(r) = g.reconfig {
                    return Err(format!(
                        "{} is already replacing node {} by node {}",
                        group_name(*order),
                        r.remove,
                        r.add
                    ));
                }
                if !g.members.contains(remove) {
                    return Err(format!("node {remove} is not a member of {}", group_name(*order)));
                }
                if g.retired.contains(add) {
                    return Err(format!("node {add} was replaced out of {} before", group_name(*order)));
                }
                *g.reconfig = Some(Reconfig { add: *add, remove: *remove, since_epoch: epoch });
            }
            MapChange::CompleteReplace { order, add, remove } => {
                let incarnation = |map: &ClusterMap, id: NodeId| map.nodes.get(&id).map_or(0, |n| n.incarnation);
                let r = self.group_mut(*order)?.reconfig.clone();
                let r = r
                    .filter(|r| r.add == *add && r.remove == *remove)
                    .ok_or_else(|| format!("{} is not replacing node {remove} by node {add}", group_name(*order)))?;
                let add_incarnation = incarnation(self, r.add);
                let g = self.group_mut(*order)?;
                *g.reconfig = None;
                g.members.retain(|m| *m != r.remove);
                g.members.push(r.add);
                g.retired.insert(r.remove);
                if let Some(o) = self.orders.get_mut(order) {
                    o.incarnations.remove(&r.remove);
                    o.incarnations.insert(r.add, add_incarnation);
                    if o.herald == Some(r.remove) {
                        o.herald = None;
                    }
                }
            }
            MapChange::AbortReplace { order, add, remove } => {
                let g = self.group_mut(*order)?;
                if !g.reconfig.as_ref().is_some_and(|r| r.add == *add && r.remove == *remove) {
                    return Err(format!("{} is not replacing node {remove} by node {add}", group_name(*order)));
                }
                *g.reconfig = None;
            }
            MapChange::Record { .. } => {}
            MapChange::SetIntent { id, intent } => {
                let in_groups = self.groups().any(|g| g.members.contains(id)) || self.learner_of(*id).is_some();
                let n = self.node_mut(*id)?;
                if n.intent == Intent::Removed {
                    return Err(format!("node {id} was removed"));
                }
                if *intent == Intent::Removed && in_groups {
                    return Err(format!("node {id} is still a member of a group"));
                }
                n.intent = *intent;
            }
        }
        Ok(())
    }

    /// The group (an order, or [`STATION`]) whose replacement brings `id` in as a learner.
    pub fn learner_of(&self, id: NodeId) -> Option<OrderId> {
        if self.station_reconfig.as_ref().is_some_and(|r| r.add == id) {
            return Some(STATION);
        }
        self.orders.values().find(|o| o.reconfig.as_ref().is_some_and(|r| r.add == id)).map(|o| o.id)
    }

    /// The membership of a group as the map plans it.
    pub fn group(&self, group: OrderId) -> Option<Group<'_>> {
        if group == STATION {
            return Some(Group {
                id: STATION,
                members: &self.station,
                reconfig: self.station_reconfig.as_ref(),
                retired: &self.station_retired,
            });
        }
        self.orders.get(&group).map(|o| Group {
            id: o.id,
            members: &o.members,
            reconfig: o.reconfig.as_ref(),
            retired: &o.retired,
        })
    }

    /// Every group: the station first, then the orders.
    pub fn groups(&self) -> impl Iterator<Item = Group<'_>> {
        std::iter::once(STATION).chain(self.orders.keys().copied()).filter_map(|g| self.group(g))
    }

    fn group_mut(&mut self, group: OrderId) -> Result<GroupMut<'_>, String> {
        if group == STATION {
            return Ok(GroupMut {
                members: &mut self.station,
                reconfig: &mut self.station_reconfig,
                retired: &mut self.station_retired,
            });
        }
        let o = self.orders.get_mut(&group).ok_or_else(|| format!("unknown order {group}"))?;
        Ok(GroupMut { members: &mut o.members, reconfig: &mut o.reconfig, retired: &mut o.retired })
    }

    /// The order a node belongs to.
    pub fn order_of(&self, id: NodeId) -> Option<OrderId> {
        self.orders.values().find(|o| o.members.contains(&id)).map(|o| o.id)
    }

    /// How many shards an order serves.
    pub fn shard_count(&self, order: OrderId) -> usize {
        self.shard_orders.iter().filter(|o| **o == order).count()
    }

    /// A node's state: `removed`, `down`, `draining` (it leads nothing, and if being removed,
    /// its places are being taken), `member` (in an order), `spare` (joined, no order yet) or
    /// `station` (a station member that did not join).
    pub fn state(&self, node: &NodeRecord) -> &'static str {
        match (node.up, node.joined) {
            _ if node.intent == Intent::Removed => "removed",
            (false, _) => "down",
            _ if matches!(node.intent, Intent::Drain | Intent::Remove) => "draining",
            (true, true) if self.order_of(node.id).is_some() || self.learner_of(node.id).is_some() => "member",
            (true, true) => "spare",
            (true, false) => "station",
        }
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut NodeRecord, String> {
        self.nodes.get_mut(&id).ok_or_else(|| format!("unknown node {id}"))
    }

    /// Roles of a node: `station`, `bondsmith`, `satellite`.
    pub fn roles(&self, id: NodeId) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if self.station.contains(&id) {
            roles.push("station");
        } else {
            roles.push("satellite");
        }
        if self.bondsmith == Some(id) {
            roles.push("bondsmith");
        }
        if self.orders.values().any(|o| o.herald == Some(id)) {
            roles.push("herald");
        }
        roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId) -> MemberInfo {
        MemberInfo { id, name: format!("n{id}"), addr: format!("127.0.0.1:{id}") }
    }

    fn cmd(epoch: u64, change: MapChange) -> StationCommand {
        StationCommand { expected_epoch: epoch, at_unix_ms: 1, by: 1, change, reason: "test".into() }
    }

    fn init() -> MapChange {
        MapChange::Init {
            cluster_id: "c1".into(),
            shards: 64,
            replicas: 3,
            station: vec![member(1), member(2), member(3)],
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }

    #[test]
    fn changes_apply_only_at_their_planned_epoch() {
        let mut map = ClusterMap::default();
        assert_eq!(map.apply(&cmd(0, init())), StationResponse::Applied { epoch: 1 });
        assert_eq!(map.nodes.len(), 3);
        // Planned at epoch 0 again (e.g. by a deposed bondsmith): refused, map unchanged.
        assert_eq!(map.apply(&cmd(0, init())), StationResponse::Stale { epoch: 1 });
        let reg = MapChange::Register { node: member(9), capacity: 5, incarnation: 1 };
        assert_eq!(map.apply(&cmd(1, reg)), StationResponse::Applied { epoch: 2 });
        assert_eq!(map.state(&map.nodes[&9]), "spare");
    }

    #[test]
    fn bad_changes_are_rejected_without_moving_the_epoch() {
        let mut map = ClusterMap::default();
        map.apply(&cmd(0, init()));
        let r = map.apply(&cmd(1, MapChange::SetBondsmith { id: 42 }));
        assert!(matches!(r, StationResponse::Rejected { .. }));
        let r = map.apply(&cmd(1, MapChange::MarkDown { id: 42 }));
        assert!(matches!(r, StationResponse::Rejected { .. }));
        assert_eq!(map.epoch, 1);
        assert_eq!(map.apply(&cmd(1, MapChange::SetBondsmith { id: 2 })), StationResponse::Applied { epoch: 2 });
        assert_eq!(map.roles(2), vec!["station", "bondsmith"]);
    }
}
