//! The planner: a pure function from the cluster map and the observations to the actions that
//! bring the cluster closer to what the map wants, most urgent first. Each rule below is one
//! function; `coordinator/tests.rs` states each as a specification.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::Action;
use super::ActionKey;
use super::CATCHUP_SLACK;
use super::CATCHUP_STALL_MS;
use super::HERALD_RETRY_MS;
use super::HeraldCmd;
use super::MembershipReport;
use super::Observed;
use super::SPAWN_RETRY_MS;
use crate::identity::NodeId;
use crate::station::map::ClusterMap;
use crate::station::map::Group;
use crate::station::map::Intent;
use crate::station::map::MapChange;
use crate::station::map::MemberInfo;
use crate::station::map::OrderId;
use crate::station::map::Reconfig;
use crate::station::map::STATION;
use crate::station::map::group_name;

pub(super) fn commit(change: MapChange, reason: String) -> Action {
    Action::Commit { change, reason }
}

/// A node's name for the journal, or its id if the map does not know it.
fn name_of(map: &ClusterMap, id: NodeId) -> String {
    map.nodes.get(&id).map(|n| n.name.clone()).unwrap_or_else(|| id.to_string())
}

pub(super) fn member_info(map: &ClusterMap, id: NodeId) -> Option<MemberInfo> {
    map.nodes.get(&id).map(|n| MemberInfo { id, name: n.name.clone(), addr: n.addr.clone() })
}

/// How long a node has been silent; a fresh bondsmith counts from its own start.
fn silent_for(obs: &Observed, id: NodeId) -> u64 {
    if id == obs.me {
        return 0;
    }
    let since = obs.last_seen.get(&id).copied().unwrap_or(0).max(obs.leader_since_ms);
    obs.now_ms.saturating_sub(since)
}

pub(super) fn alive(map: &ClusterMap, obs: &Observed, id: NodeId) -> bool {
    id == obs.me || obs.last_seen.get(&id).is_some_and(|&t| obs.now_ms.saturating_sub(t) < map.settings.down_after_ms)
}

/// Whether this bondsmith has led long enough to judge liveness (it heard every live node).
fn settled(map: &ClusterMap, obs: &Observed) -> bool {
    obs.now_ms.saturating_sub(obs.leader_since_ms) >= map.settings.down_after_ms
}

/// Plans the actions that bring the cluster in line with the map, most urgent first.
pub fn plan(map: &ClusterMap, obs: &Observed) -> Vec<Action> {
    if map.cluster_id.is_empty() {
        let b = &obs.bootstrap;
        return vec![commit(
            MapChange::Init {
                cluster_id: b.cluster_id.clone(),
                shards: b.shards,
                replicas: b.replicas,
                station: b.station.clone(),
                max_key_bytes: obs.limits.0,
                max_value_bytes: obs.limits.1,
            },
            "station quorum reached for the first time".into(),
        )];
    }
    let mut out = Vec::new();
    plan_bondsmith(map, obs, &mut out);
    plan_registrations(map, obs, &mut out);
    plan_liveness(map, obs, &mut out);
    plan_orders(map, obs, &mut out);
    plan_leadership(map, obs, &mut out);
    plan_spread(map, obs, &mut out);
    plan_replacements(map, obs, &mut out);
    plan_removals(map, obs, &mut out);
    plan_replicas(map, obs, &mut out);
    plan_shards(map, obs, &mut out);
    out
}

fn plan_bondsmith(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    if map.bondsmith != Some(obs.me) {
        let reason = match map.bondsmith {
            None => "first bondsmith elected".to_string(),
            Some(old) => format!("station leadership moved from {}", name_of(map, old)),
        };
        out.push(commit(MapChange::SetBondsmith { id: obs.me }, reason));
    }
}

fn plan_registrations(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    for (id, a) in &obs.announced {
        let reason = match map.nodes.get(id) {
            Some(n) if n.intent == Intent::Removed && n.incarnation == a.incarnation => continue,
            None => format!("node up: {} at {} phoned home", a.node.name, a.node.addr),
            Some(n) if !n.joined => format!("node up: station member {} joined as a satellite", n.name),
            Some(n) if n.incarnation != a.incarnation => format!(
                "node up: {} came back with a new data dir (incarnation {:x}, was {:x}): a new node to every group",
                a.node.name, a.incarnation, n.incarnation
            ),
            Some(n) if n.addr != a.node.addr || n.name != a.node.name => {
                format!("node up: {} now at {} (was {} at {})", a.node.name, a.node.addr, n.name, n.addr)
            }
            Some(_) => continue,
        };
        let change = MapChange::Register { node: a.node.clone(), capacity: a.capacity, incarnation: a.incarnation };
        out.push(commit(change, reason));
    }
}

fn plan_liveness(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    let settled = settled(map, obs);
    for node in map.nodes.values() {
        let alive = alive(map, obs, node.id);
        if node.up && !alive && settled {
            let reason = match obs.last_seen.get(&node.id) {
                Some(t) => format!("heartbeat lost: none for {} ms", obs.now_ms.saturating_sub(*t)),
                None => format!(
                    "heartbeat lost: none since this bondsmith took over {} ms ago",
                    obs.now_ms - obs.leader_since_ms
                ),
            };
            out.push(commit(MapChange::MarkDown { id: node.id }, reason));
        } else if !node.up && alive {
            out.push(commit(MapChange::MarkUp { id: node.id }, "heartbeat resumed".into()));
        }
    }
}

/// Spare nodes: joined, up, in no order and joining no group, and (as far as heartbeats tell)
/// running no order replica; by id, so choices are deterministic.
fn spares(map: &ClusterMap, obs: &Observed) -> Vec<NodeId> {
    map.nodes
        .values()
        .filter(|n| n.joined && n.up && n.intent == Intent::Serve)
        .filter(|n| map.order_of(n.id).is_none() && map.learner_of(n.id).is_none())
        .filter(|n| obs.replicas.get(&n.id).is_none_or(|r| r.iter().all(|g| *g == STATION)))
        .map(|n| n.id)
        .collect()
}

fn plan_orders(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    let spare = spares(map, obs);
    let r = map.replicas.max(1) as usize;
    // Spares fill dead members' places first; only what is left over forms new orders.
    let wanted = map.groups().filter(|g| g.reconfig.is_none() && replace_victim(map, obs, *g).is_some()).count();
    if spare.len() >= r + wanted {
        let members: Vec<NodeId> = spare[wanted..wanted + r].to_vec();
        let names: Vec<String> = members.iter().map(|m| name_of(map, *m)).collect();
        out.push(commit(
            MapChange::FormOrder { id: map.next_order_id, members },
            format!("{} spare nodes, {r} per order: {} form order {}", spare.len(), names.join(","), map.next_order_id),
        ));
    }
    for (order, (node, term)) in &obs.heralds {
        let Some(o) = map.orders.get(order) else { continue };
        let newer = *term > o.herald_term || (*term == o.herald_term && o.herald != Some(*node));
        if newer && o.members.contains(node) {
            out.push(commit(
                MapChange::SetHerald { order: *order, node: *node, term: *term },
                format!("herald registered: {} leads order {order} in term {term}", name_of(map, *node)),
            ));
        }
    }
}

/// Whether member `m` of group `g` came back with another data dir than it joined with: it
/// lost its copy of the group's log, and must never run the group's replica again under its
/// id. (Known for orders; a wiped station member runs no station replica and shows as down.)
fn wiped(map: &ClusterMap, obs: &Observed, g: Group<'_>, m: NodeId) -> bool {
    let Some(o) = map.orders.get(&g.id) else { return false };
    let Some(&joined) = o.incarnations.get(&m).filter(|i| **i != 0) else { return false };
    let now = obs.incarnations.get(&m).or_else(|| map.nodes.get(&m).map(|n| &n.incarnation)).copied().unwrap_or(0);
    now != 0 && now != joined
}

/// A member that can take part in its group: alive, with the log it joined with.
fn live_member(map: &ClusterMap, obs: &Observed, g: Group<'_>, m: NodeId) -> bool {
    alive(map, obs, m) && !wiped(map, obs, g, m)
}

/// The member of `g` to replace, if any: one whose data dir was wiped at once, else one that
/// has been down long enough. Never the bondsmith itself.
fn replace_victim(map: &ClusterMap, obs: &Observed, g: Group<'_>) -> Option<NodeId> {
    if !map.settings.auto_replace || !settled(map, obs) {
        return None;
    }
    let replace_after = map.settings.replace_after_ms.max(map.settings.down_after_ms);
    let candidates = || g.members.iter().copied().filter(|m| *m != obs.me);
    candidates()
        .find(|m| intent(map, *m) == Intent::Remove)
        .or_else(|| candidates().find(|m| wiped(map, obs, g, *m)))
        .or_else(|| candidates().find(|m| !alive(map, obs, *m) && silent_for(obs, *m) >= replace_after))
}

fn intent(map: &ClusterMap, id: NodeId) -> Intent {
    map.nodes.get(&id).map_or(Intent::Serve, |n| n.intent)
}

/// Whether a node must lead nothing (it is draining, being removed, or removed).
fn leads_nothing(map: &ClusterMap, id: NodeId) -> bool {
    intent(map, id) != Intent::Serve
}

/// A draining node hands each leadership it holds to the voter that has matched the most of
/// the log (and is alive, serving, and has its log); the leader itself waits until that voter
/// has matched all of it before it transfers.
fn plan_leadership(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    for g in map.groups() {
        let Some(leader) = leader_of(map, obs, g) else { continue };
        if !leads_nothing(map, leader.id) || obs.recently(ActionKey::Membership(g.id), HERALD_RETRY_MS) {
            continue;
        }
        let Some(report) = obs.memberships.get(&g.id).filter(|r| !r.joint) else { continue };
        let target = report
            .voters
            .iter()
            .copied()
            .filter(|v| *v != leader.id && live_member(map, obs, g, *v) && !leads_nothing(map, *v))
            .max_by_key(|v| (report.matched.get(v).copied().unwrap_or(0), std::cmp::Reverse(*v)));
        let Some(to) = target else { continue };
        out.push(Action::Herald {
            order: g.id,
            herald: leader.clone(),
            cmd: HeraldCmd::TransferLeader(to),
            reason: format!(
                "{} is draining: it hands the leadership of {} to {}",
                leader.name,
                group_name(g.id),
                name_of(map, to)
            ),
        });
    }
}

/// Leaderships spread over the nodes: once things settle (every node up, no change under way),
/// a node that leads two groups (the station and an order) hands the order to one of its
/// members that leads nothing, so one node's failure costs one election, not two.
fn plan_spread(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    let calm = settled(map, obs)
        && map.nodes.values().all(|n| n.up || n.intent == Intent::Removed)
        && map.groups().all(|g| g.reconfig.is_none());
    if !calm {
        return;
    }
    let leaders: Vec<(OrderId, NodeId)> =
        map.groups().filter_map(|g| leader_of(map, obs, g).map(|l| (g.id, l.id))).collect();
    let leads = |n: NodeId| leaders.iter().filter(|(_, l)| *l == n).count();
    for o in map.orders.values() {
        let Some(g) = map.group(o.id) else { continue };
        let Some(herald) = leader_of(map, obs, g) else { continue };
        if leads(herald.id) < 2 || obs.recently(ActionKey::Membership(o.id), HERALD_RETRY_MS) {
            continue;
        }
        let Some(report) = obs.memberships.get(&o.id).filter(|r| !r.joint) else { continue };
        let target = report
            .voters
            .iter()
            .copied()
            .filter(|v| leads(*v) == 0 && live_member(map, obs, g, *v) && !leads_nothing(map, *v))
            .filter(|v| caught_up(report, *v))
            .max_by_key(|v| (report.matched.get(v).copied().unwrap_or(0), std::cmp::Reverse(*v)));
        let Some(to) = target else { continue };
        out.push(Action::Herald {
            order: o.id,
            herald: herald.clone(),
            cmd: HeraldCmd::TransferLeader(to),
            reason: format!(
                "{} leads {} groups while {} leads none: it hands order {} over",
                herald.name,
                leads(herald.id),
                name_of(map, to),
                o.id
            ),
        });
    }
}

/// A node being removed is retired once every place it held is taken; a removed node that is
/// still heard from is asked to stop its services.
fn plan_removals(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    for n in map.nodes.values() {
        let member = map.groups().any(|g| g.members.contains(&n.id)) || map.learner_of(n.id).is_some();
        match n.intent {
            Intent::Remove if !member => out.push(commit(
                MapChange::SetIntent { id: n.id, intent: Intent::Removed },
                format!("{} holds no place in any group any more: removed", n.name),
            )),
            Intent::Removed if alive(map, obs, n.id) && !obs.recently(ActionKey::Node(n.id), SPAWN_RETRY_MS) => {
                if let Some(node) = member_info(map, n.id) {
                    out.push(Action::StopServices { node, reason: format!("{} was removed", n.name) });
                }
            }
            _ => {}
        }
    }
}

/// Whether `id` can be removed now; `Err` says why not in one sentence. A removal that could
/// not finish (no spare to take a place, a group that would lose its majority, a change
/// already under way) is refused up front, so that nothing changes.
pub fn can_remove(map: &ClusterMap, obs: &Observed, id: NodeId) -> Result<(), String> {
    let node = map.nodes.get(&id).ok_or_else(|| format!("there is no node {id} in this cluster"))?;
    let name = &node.name;
    if matches!(node.intent, Intent::Remove | Intent::Removed) {
        return Ok(());
    }
    if let Some(g) = map.learner_of(id) {
        return Err(format!("{name} is joining {} right now; retry once that change is done", group_name(g)));
    }
    let mut free: Vec<NodeId> = spares(map, obs).into_iter().filter(|s| *s != id && alive(map, obs, *s)).collect();
    for g in map.groups().filter(|g| g.members.contains(&id)) {
        let group = group_name(g.id);
        if g.members.len() == 1 {
            return Err(format!("{name} is the only member of {group}; nothing could take over from it"));
        }
        if let Some(r) = g.reconfig {
            return Err(format!(
                "a change is already under way in {group} ({} is replacing {}); retry once it is done",
                name_of(map, r.add),
                name_of(map, r.remove)
            ));
        }
        let others = g.members.len() - 1;
        let live = g.members.iter().filter(|m| **m != id && live_member(map, obs, g, **m)).count();
        if live <= g.members.len() / 2 {
            return Err(format!("{group} would lose its majority: only {live} of its {others} other members are up"));
        }
        let Some(pos) = free.iter().position(|s| !g.retired.contains(s) && !g.members.contains(s)) else {
            return Err(format!("no spare node can take {name}'s place in {group}; join one first"));
        };
        free.remove(pos);
    }
    Ok(())
}

/// Whether enough of `voters` can vote to commit (a strict majority).
fn has_quorum(map: &ClusterMap, obs: &Observed, g: Group<'_>, voters: &BTreeSet<NodeId>) -> bool {
    let joining = g.reconfig.map(|r| r.add);
    let can_vote = |v: NodeId| live_member(map, obs, g, v) || (joining == Some(v) && alive(map, obs, v));
    voters.iter().filter(|v| can_vote(**v)).count() > voters.len() / 2
}

/// Who carries out a group's membership changes: an order's herald, or for the station the
/// bondsmith itself.
fn leader_of(map: &ClusterMap, obs: &Observed, g: Group<'_>) -> Option<MemberInfo> {
    if g.id == STATION {
        return member_info(map, obs.me);
    }
    map.orders.get(&g.id).and_then(|o| o.herald).filter(|h| alive(map, obs, *h)).and_then(|h| member_info(map, h))
}

fn runs_replica(obs: &Observed, node: NodeId, group: OrderId) -> bool {
    obs.replicas.get(&node).is_some_and(|s| s.contains(&group))
}

/// Replacing dead members (of orders and of the station): pick a spare, start it as a
/// learner, have the group's leader add it, wait until it caught up, then swap it for the dead
/// member in one joint change.
fn plan_replacements(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    let mut taken = BTreeSet::new();
    for g in map.groups() {
        match g.reconfig {
            None => {
                let Some(victim) = replace_victim(map, obs, g) else { continue };
                let rest: BTreeSet<NodeId> = g.members.iter().copied().filter(|m| *m != victim).collect();
                let live = rest.iter().filter(|m| live_member(map, obs, g, **m)).count();
                if live <= g.members.len() / 2 {
                    // Both configurations of the swap need a live majority; without one the
                    // group cannot change safely and waits for its members to come back.
                    continue;
                }
                let spare = spares(map, obs).into_iter().find(|s| {
                    !g.retired.contains(s) && !taken.contains(s) && alive(map, obs, *s) && !g.members.contains(s)
                });
                let Some(add) = spare else { continue };
                taken.insert(add);
                let why = if wiped(map, obs, g, victim) {
                    format!("{} lost its data dir (new incarnation)", name_of(map, victim))
                } else {
                    format!(
                        "{} has been down for {} ms (replace_after_ms = {})",
                        name_of(map, victim),
                        silent_for(obs, victim),
                        map.settings.replace_after_ms
                    )
                };
                out.push(commit(
                    MapChange::BeginReplace { order: g.id, add, remove: victim },
                    format!("{why}: spare {} takes its place in {}", name_of(map, add), group_name(g.id)),
                ));
            }
            Some(r) => plan_replacement_step(map, obs, g, r, out),
        }
    }
}

fn plan_replacement_step(map: &ClusterMap, obs: &Observed, g: Group<'_>, r: &Reconfig, out: &mut Vec<Action>) {
    let (add, remove, group) = (name_of(map, r.add), name_of(map, r.remove), group_name(g.id));
    let report = obs.memberships.get(&g.id);
    let target: BTreeSet<NodeId> = g.members.iter().copied().filter(|m| *m != r.remove).chain([r.add]).collect();
    if report.is_some_and(|m| m.voters == target && !m.joint) {
        out.push(commit(
            MapChange::CompleteReplace { order: g.id, add: r.add, remove: r.remove },
            format!("{group}'s group runs with {add} in place of {remove}"),
        ));
        return;
    }
    let promoted = report.is_some_and(|m| m.voters.contains(&r.add));
    if !promoted {
        if settled(map, obs) && !alive(map, obs, r.add) {
            out.push(commit(
                MapChange::AbortReplace { order: g.id, add: r.add, remove: r.remove },
                format!("{add} went down before it caught up with {group}"),
            ));
            return;
        }
        let stalled = obs
            .learner_progress
            .get(&(g.id, r.add))
            .is_some_and(|(_, since)| obs.now_ms.saturating_sub(*since) >= CATCHUP_STALL_MS);
        if stalled {
            out.push(commit(
                MapChange::AbortReplace { order: g.id, add: r.add, remove: r.remove },
                format!("{add} made no progress catching up with {group} for {CATCHUP_STALL_MS} ms"),
            ));
            return;
        }
    }
    let running = runs_replica(obs, r.add, g.id);
    if !running && !obs.recently(ActionKey::Replica(r.add, g.id), SPAWN_RETRY_MS) {
        let members: Vec<MemberInfo> = g.members.iter().chain([&r.add]).filter_map(|m| member_info(map, *m)).collect();
        if let Some(node) = member_info(map, r.add) {
            out.push(Action::StartReplica {
                node,
                order: g.id,
                members,
                initialize: false,
                reason: format!("{add} replaces {remove} in {group}: it joins as a learner"),
            });
        }
    }
    let (Some(report), Some(leader)) = (report, leader_of(map, obs, g)) else { return };
    if leader.id == r.remove || obs.recently(ActionKey::Membership(g.id), HERALD_RETRY_MS) {
        return;
    }
    let cmd = if report.joint {
        // A leader that failed between the joint and the final configuration left the group
        // joint; asking for the same voters again finishes the change.
        Some((HeraldCmd::SetVoters(target.iter().copied().collect()), "finish the joint change".to_string()))
    } else if !report.voters.contains(&r.add) && !report.learners.contains(&r.add) {
        running
            .then(|| member_info(map, r.add))
            .flatten()
            .map(|n| (HeraldCmd::AddLearner(n), format!("{add} runs a learner replica of {group}: replicate to it")))
    } else if report.learners.contains(&r.add) && caught_up(report, r.add) {
        let old: BTreeSet<NodeId> = g.members.iter().copied().collect();
        (has_quorum(map, obs, g, &old) && has_quorum(map, obs, g, &target)).then(|| {
            (
                HeraldCmd::SetVoters(target.iter().copied().collect()),
                format!("{add} caught up with {group}: swap it for {remove}"),
            )
        })
    } else {
        None
    };
    if let Some((cmd, reason)) = cmd {
        out.push(Action::Herald { order: g.id, herald: leader, cmd, reason });
    }
}

fn caught_up(report: &MembershipReport, id: NodeId) -> bool {
    report.matched.get(&id).is_some_and(|m| m + CATCHUP_SLACK >= report.last_log_index)
}

/// Replicas to start and to retire, from what nodes report running: every order member runs
/// its order's replica; a node runs no replica of a group it is not (or no longer) in; a
/// group's leader keeps no learner the map does not plan.
fn plan_replicas(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    // A new bondsmith knows nothing of running replicas until the heartbeats arrive: it asks
    // only about nodes it heard from, or once a full down-timeout has passed.
    let settled = settled(map, obs);
    for o in map.orders.values() {
        let Some(g) = map.group(o.id) else { continue };
        let members: Vec<MemberInfo> = o.members.iter().filter_map(|m| member_info(map, *m)).collect();
        for m in &members {
            let up = map.nodes.get(&m.id).is_some_and(|n| n.up);
            let running = runs_replica(obs, m.id, o.id);
            let heard = settled || obs.replicas.contains_key(&m.id);
            // A wiped member would start an empty replica under its old id: never.
            let fresh = !wiped(map, obs, g, m.id);
            if up && heard && fresh && !running && !obs.recently(ActionKey::Replica(m.id, o.id), SPAWN_RETRY_MS) {
                out.push(Action::StartReplica {
                    node: m.clone(),
                    order: o.id,
                    members: members.clone(),
                    initialize: true,
                    reason: format!("{} is a member of order {} but does not run its replica", m.name, o.id),
                });
            }
        }
    }
    // A node that is down is retired when it is next heard from (its last report is stale).
    let mut stray: BTreeMap<NodeId, Vec<OrderId>> = BTreeMap::new();
    for (node, groups) in obs.replicas.iter().filter(|(n, _)| alive(map, obs, **n)) {
        for group in groups {
            let member = map.group(*group).is_some_and(|g| g.members.contains(node));
            if !member && map.learner_of(*node) != Some(*group) {
                stray.entry(*node).or_default().push(*group);
            }
        }
    }
    for (node, groups) in stray {
        let Some(info) = member_info(map, node) else { continue };
        for group in groups {
            if obs.recently(ActionKey::Replica(node, group), SPAWN_RETRY_MS) {
                continue;
            }
            let retired = map.group(group).is_some_and(|g| g.retired.contains(&node));
            let name = group_name(group);
            out.push(Action::RetireReplica {
                node: info.clone(),
                order: group,
                reason: if retired {
                    format!("{} was replaced in {name}: its copy goes", info.name)
                } else {
                    format!("{} runs a replica of {name} but is not its member", info.name)
                },
            });
        }
    }
    for g in map.groups() {
        let Some(report) = obs.memberships.get(&g.id) else { continue };
        let planned = g.reconfig.map(|r| r.add);
        let Some(extra) = report.learners.iter().copied().find(|l| Some(*l) != planned) else { continue };
        let Some(leader) = leader_of(map, obs, g) else { continue };
        if !obs.recently(ActionKey::Membership(g.id), HERALD_RETRY_MS) && !report.joint {
            out.push(Action::Herald {
                order: g.id,
                herald: leader,
                cmd: HeraldCmd::RemoveLearner(extra),
                reason: format!(
                    "{} is a learner of {} that no replacement needs",
                    name_of(map, extra),
                    group_name(g.id)
                ),
            });
        }
    }
}

fn plan_shards(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    // Shards are placed once no further order can form and every order has a herald; later
    // orders get theirs by rebalancing, with the data.
    let r = map.replicas.max(1) as usize;
    let unassigned: Vec<u32> =
        map.shard_orders.iter().enumerate().filter(|(_, o)| **o == 0).map(|(s, _)| s as u32).collect();
    let ready = !map.orders.is_empty() && map.orders.values().all(|o| o.herald.is_some());
    if !unassigned.is_empty() && ready && spares(map, obs).len() < r {
        let assignments = balance(map, &unassigned);
        let orders = map.orders.len();
        out.push(commit(
            MapChange::AssignShards { assignments },
            format!("{} unassigned shards, {orders} orders with heralds: spread evenly", unassigned.len()),
        ));
    }
    super::moves::plan(map, obs, out, unassigned.is_empty() && ready && spares(map, obs).len() < r);
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
