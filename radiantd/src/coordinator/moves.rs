//! Planning shard moves: which shards each order's log serves, each move's next step, the
//! queue a rebalance leaves, and the balanced placement itself ([`rebalance_plan`]).
//!
//! Every rule decides from the map and the heralds' own reports only, like the rest of the
//! planner: a step whose command was lost is decided again once [`MOVE_RETRY_MS`] has passed
//! and the report still does not show it. A step that deletes data (`Drop`) is planned only
//! for a shard the map gives to another order and that the order's log no longer serves.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::Action;
use super::HERALD_RETRY_MS;
use super::HeraldCmd;
use super::MOVE_RETRY_MS;
use super::Observed;
use super::ShardReport;
use super::ShardSize;
use super::action::MoveStep;
use super::planner::alive;
use super::planner::commit;
use super::planner::member_info;
use crate::station::map::ClusterMap;
use crate::station::map::MapChange;
use crate::station::map::MemberInfo;
use crate::station::map::OrderId;
use crate::station::moves::MovePhase;
use crate::station::moves::PlannedMove;
use crate::station::moves::ShardMove;

/// Plans ownership, the moves under way, stray move state, the queue and (with
/// `auto_rebalance`, once every shard is `placed`) a rebalance.
pub(super) fn plan(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>, placed: bool) {
    if plan_reshard(map, obs, out) {
        return; // the orders' logs count shards differently until the map follows
    }
    plan_ownership(map, obs, out);
    for (&shard, m) in &map.moves {
        plan_move(map, obs, shard, m, out);
    }
    plan_cleanup(map, obs, out);
    plan_queue(map, obs, out);
    if placed {
        plan_auto_rebalance(map, obs, out);
    }
}

/// An order's herald and its report, if the report comes from the herald the map names.
fn herald_report<'a>(map: &ClusterMap, obs: &'a Observed, order: OrderId) -> Option<(MemberInfo, &'a ShardReport)> {
    let o = map.orders.get(&order)?;
    let herald = o.herald.filter(|h| alive(map, obs, *h))?;
    if obs.heralds.get(&order).is_none_or(|(h, _)| *h != herald) {
        return None; // the report is from another leader than the map's herald
    }
    Some((member_info(map, herald)?, obs.shard_reports.get(&order)?))
}

fn move_step(order: OrderId, herald: MemberInfo, step: MoveStep, shard: u32, move_id: u64, reason: String) -> Action {
    Action::Herald { order, herald, cmd: HeraldCmd::Move { step, shard, move_id }, reason }
}

/// Plans a move step unless the same step was carried out so lately that its effect may
/// not show in the reports yet.
fn push_step(obs: &Observed, out: &mut Vec<Action>, action: Action) {
    if !obs.recently_sent(&action, MOVE_RETRY_MS) {
        out.push(action);
    }
}

/// Each herald is told which shards its order's log must serve: the map's assignment, minus
/// a shard a move has frozen (its source released it; its destination has not switched).
fn plan_ownership(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    for o in map.orders.values() {
        let Some((herald, report)) = herald_report(map, obs, o.id) else { continue };
        let assigned: BTreeSet<u32> = (0..map.shards).filter(|s| map.serving_order(*s) == Some(o.id)).collect();
        let release: Vec<u32> = report.owned.difference(&assigned).copied().collect();
        let acquire: Vec<u32> = assigned.difference(&report.owned).copied().collect();
        if release.is_empty() && acquire.is_empty() {
            continue;
        }
        let reason =
            format!("order {}'s log serves {} shards, the map gives it {}", o.id, report.owned.len(), assigned.len());
        let cmd = HeraldCmd::Shards { acquire, release, epoch: map.epoch };
        let action = Action::Herald { order: o.id, herald, cmd, reason };
        if !obs.recently_sent(&action, HERALD_RETRY_MS) {
            out.push(action);
        }
    }
}

/// The source's members' addresses for the destination's pull, its herald first.
fn source_addrs(map: &ClusterMap, herald: &MemberInfo, from: OrderId) -> Vec<String> {
    let mut addrs = vec![herald.addr.clone()];
    if let Some(o) = map.orders.get(&from) {
        addrs.extend(
            o.members.iter().filter(|m| **m != herald.id).filter_map(|m| map.nodes.get(m)).map(|n| n.addr.clone()),
        );
    }
    addrs
}

/// The next step of one move, from both orders' reports.
fn plan_move(map: &ClusterMap, obs: &Observed, shard: u32, m: &ShardMove, out: &mut Vec<Action>) {
    let src = herald_report(map, obs, m.from);
    let dst = herald_report(map, obs, m.to);
    let incoming = dst.as_ref().and_then(|(_, r)| r.incoming.get(&shard)).filter(|i| i.move_id == m.id);
    match m.phase {
        MovePhase::Copying => {
            let Some((src_herald, src_report)) = &src else { return };
            if src_report.tracking.get(&shard) != Some(&m.id) {
                if src_report.owned.contains(&shard) {
                    let reason = format!("shard {shard} moves to order {}: its writes are recorded from now on", m.to);
                    push_step(obs, out, move_step(m.from, src_herald.clone(), MoveStep::Track, shard, m.id, reason));
                }
                return;
            }
            if incoming.is_some_and(|i| i.converged) {
                let done = incoming.map_or(0, |i| i.bytes_done);
                out.push(commit(
                    MapChange::FreezeMove { shard, id: m.id },
                    format!("order {} has copied shard {shard} ({done} bytes) and caught up: freeze it", m.to),
                ));
                return;
            }
            plan_pull(map, obs, shard, m, src_herald, incoming.is_some_and(|i| i.pulling), out);
        }
        MovePhase::Frozen => {
            if incoming.is_some_and(|i| i.sealed) {
                out.push(commit(
                    MapChange::SwitchMove { shard, id: m.id },
                    format!("order {} sealed shard {shard} against order {}'s frozen digest", m.to, m.from),
                ));
                return;
            }
            if let Some((src_herald, _)) = &src {
                plan_pull(map, obs, shard, m, src_herald, incoming.is_some_and(|i| i.pulling), out);
            }
        }
        MovePhase::Switched => {
            let Some((_, dst_report)) = &dst else { return };
            if !dst_report.owned.contains(&shard) {
                return; // ownership acquires it; the source's copy stays until then
            }
            let Some((src_herald, src_report)) = &src else { return };
            let left = src_report.tracking.contains_key(&shard)
                || src_report.nonempty.contains(&shard)
                || src_report.owned.contains(&shard);
            if !left {
                out.push(commit(
                    MapChange::FinishMove { shard, id: m.id },
                    format!("order {} serves shard {shard} and order {}'s copy is gone", m.to, m.from),
                ));
            } else if !src_report.owned.contains(&shard) {
                let reason = format!("order {} serves shard {shard}: delete order {}'s copy", m.to, m.from);
                push_step(obs, out, move_step(m.from, src_herald.clone(), MoveStep::Drop, shard, m.id, reason));
            }
        }
    }
}

fn plan_pull(
    map: &ClusterMap,
    obs: &Observed,
    shard: u32,
    m: &ShardMove,
    src_herald: &MemberInfo,
    pulling: bool,
    out: &mut Vec<Action>,
) {
    let Some((dst_herald, _)) = herald_report(map, obs, m.to) else { return };
    if pulling {
        return;
    }
    let step = MoveStep::Pull { from: m.from, addrs: source_addrs(map, src_herald, m.from) };
    let reason = match m.phase {
        MovePhase::Frozen => format!("shard {shard} is frozen at order {}: take its last changes and seal", m.from),
        _ => format!("shard {shard} moves from order {} to order {}: copy it", m.from, m.to),
    };
    push_step(obs, out, move_step(m.to, dst_herald, step, shard, m.id, reason));
}

/// Move state no move in the map accounts for (an abandoned or finished move, an earlier
/// attempt): stop recording, or delete rows the map gives to another order.
fn plan_cleanup(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    for o in map.orders.values() {
        let Some((herald, r)) = herald_report(map, obs, o.id) else { continue };
        let part_of =
            |shard: u32, id: u64| map.moves.get(&shard).is_some_and(|m| m.id == id && (m.from == o.id || m.to == o.id));
        let elsewhere = |shard: u32| map.shard_orders.get(shard as usize).is_some_and(|owner| *owner != o.id);
        let mut steps: Vec<(u32, u64, MoveStep, String)> = Vec::new();
        for (&shard, &id) in &r.tracking {
            if part_of(shard, id) {
                continue;
            }
            if r.owned.contains(&shard) {
                steps.push((
                    shard,
                    id,
                    MoveStep::Untrack,
                    format!("move {id} of shard {shard} is over: stop recording"),
                ));
            } else if elsewhere(shard) {
                steps.push((shard, id, MoveStep::Drop, format!("shard {shard} is another order's: delete this copy")));
            }
        }
        for (&shard, i) in &r.incoming {
            if !part_of(shard, i.move_id) && !r.owned.contains(&shard) && elsewhere(shard) {
                let reason = format!("move {} of shard {shard} was abandoned: delete what was copied", i.move_id);
                steps.push((shard, i.move_id, MoveStep::Drop, reason));
            }
        }
        for &shard in &r.nonempty {
            let involved = map.moves.get(&shard).is_some_and(|m| m.from == o.id || m.to == o.id);
            let accounted = r.tracking.contains_key(&shard) || r.incoming.contains_key(&shard);
            if !r.owned.contains(&shard) && elsewhere(shard) && !involved && !accounted {
                steps.push((
                    shard,
                    0,
                    MoveStep::Drop,
                    format!("shard {shard} is another order's: delete leftover rows"),
                ));
            }
        }
        for (shard, id, step, reason) in steps {
            push_step(obs, out, move_step(o.id, herald.clone(), step, shard, id, reason));
        }
    }
}

/// A change of the shard count: a consolidation first queues the moves that put siblings on
/// one order; then, with no move left, each herald is told to cut its order's tables by the
/// new count, and once all report it the map takes it. Returns whether the orders' logs are
/// being cut, when ownership and moves wait (their shard numbers are the map's old ones).
fn plan_reshard(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) -> bool {
    let Some(r) = &map.reshard else { return false };
    let idle = map.moves.is_empty() && map.planned_moves.is_empty();
    if r.consolidates() && !map.siblings_together(r.to) {
        if idle {
            let moves = map.colocation_moves(r.to);
            out.push(commit(
                MapChange::PlanMoves { moves: moves.clone() },
                format!("consolidate to {} shards: first put {} pairs of siblings on one order", r.to, moves.len()),
            ));
        }
        return false;
    }
    if !idle {
        return false;
    }
    let mut done = true;
    for o in map.orders.values() {
        let Some((herald, report)) = herald_report(map, obs, o.id) else {
            done = false;
            continue;
        };
        if report.modulus == Some(r.to) {
            continue;
        }
        done = false;
        let reason = format!("the shard count goes from {} to {}", r.from, r.to);
        let action = Action::Herald { order: o.id, herald, cmd: HeraldCmd::Reshard { from: r.from, to: r.to }, reason };
        if !obs.recently_sent(&action, HERALD_RETRY_MS) {
            out.push(action);
        }
    }
    if done {
        out.push(commit(
            MapChange::CompleteReshard { to: r.to },
            format!("every order cuts its tables by {} shards", r.to),
        ));
    }
    true
}

/// Moves still taking a slot of `move_concurrency`: all but those whose destination already
/// serves (only the source's deletion is left).
fn active_moves(map: &ClusterMap, obs: &Observed) -> usize {
    map.moves
        .iter()
        .filter(|(s, m)| {
            m.phase != MovePhase::Switched || obs.shard_reports.get(&m.to).is_none_or(|r| !r.owned.contains(s))
        })
        .count()
}

/// Begins the next queued move while fewer than `move_concurrency` run.
fn plan_queue(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    if map.planned_moves.is_empty() || active_moves(map, obs) >= map.settings.move_concurrency.max(1) as usize {
        return;
    }
    let valid = map.planned_moves.iter().find(|p| {
        map.shard_orders.get(p.shard as usize) == Some(&p.from)
            && !map.moves.contains_key(&p.shard)
            && map.orders.contains_key(&p.to)
    });
    match valid {
        Some(p) => {
            let size = obs.shard_reports.get(&p.from).and_then(|r| r.sizes.get(&p.shard)).copied();
            let (keys, bytes) = size.map_or((p.keys, p.bytes), |s| (s.keys, s.bytes));
            out.push(commit(
                MapChange::StartMove { shard: p.shard, to: p.to, keys, bytes },
                format!(
                    "rebalance: shard {} ({keys} keys, {bytes} bytes) from order {} to order {}; {} more queued",
                    p.shard,
                    p.from,
                    p.to,
                    map.planned_moves.len() - 1
                ),
            ));
        }
        None => out.push(commit(
            MapChange::PlanMoves { moves: Vec::new() },
            "the layout outran every queued move: drop the queue".into(),
        )),
    }
}

/// The size of every shard as its owner's herald reports it, or `None` until every order
/// with shards has reported.
pub fn shard_sizes(map: &ClusterMap, obs: &Observed) -> Option<BTreeMap<u32, ShardSize>> {
    let mut sizes = BTreeMap::new();
    for s in 0..map.shards {
        let owner = map.shard_orders.get(s as usize).copied().filter(|o| *o != 0)?;
        let report = obs.shard_reports.get(&owner)?;
        sizes.insert(s, report.sizes.get(&s).copied().unwrap_or_default());
    }
    Some(sizes)
}

fn plan_auto_rebalance(map: &ClusterMap, obs: &Observed, out: &mut Vec<Action>) {
    let busy = !map.moves.is_empty() || !map.planned_moves.is_empty() || map.reshard.is_some();
    if !map.settings.auto_rebalance || busy || map.orders.len() < 2 {
        return;
    }
    let Some(sizes) = shard_sizes(map, obs) else { return };
    let moves = rebalance_plan(map, &sizes);
    if moves.is_empty() {
        return;
    }
    let counts = shard_counts(map);
    let (low, high) = (counts.values().min().copied().unwrap_or(0), counts.values().max().copied().unwrap_or(0));
    let bytes: u64 = moves.iter().map(|m| m.bytes).sum();
    out.push(commit(
        MapChange::PlanMoves { moves: moves.clone() },
        format!(
            "orders serve {low} to {high} shards: move {} shards ({bytes} bytes) so they differ by at most one",
            moves.len()
        ),
    ));
}

/// Shards per order once the moves under way are done.
fn shard_counts(map: &ClusterMap) -> BTreeMap<OrderId, usize> {
    let mut counts: BTreeMap<OrderId, usize> = map.orders.keys().map(|o| (*o, 0)).collect();
    for s in 0..map.shards {
        if let Some(n) = counts.get_mut(&map.destined_owner(s)) {
            *n += 1;
        }
    }
    counts
}

/// A balanced placement reached with the fewest bytes moved: every order ends with `q` or
/// `q + 1` shards (`q` = shards / orders), counted as the moves under way will leave them.
///
/// An order above its target gives away its smallest shards. Which orders may keep `q + 1`
/// is the only choice, and each choice is independent: letting an order keep one more saves
/// exactly the largest shard it would otherwise give away, so the `r` = shards mod orders
/// orders with the largest saving keep `q + 1`. Shards given away go to the orders below
/// their target, largest shard to the order furthest below. Shards moving now, and unassigned
/// ones, are left alone. Ties break by order id and shard number, so every bondsmith plans
/// alike.
pub fn rebalance_plan(map: &ClusterMap, sizes: &BTreeMap<u32, ShardSize>) -> Vec<PlannedMove> {
    let k = map.orders.len();
    if k < 2 {
        return Vec::new();
    }
    let counts = shard_counts(map);
    let total: usize = counts.values().sum();
    let (q, r) = (total / k, total % k);
    // Each order's movable shards, smallest first.
    let mut movable: BTreeMap<OrderId, Vec<(u64, u32)>> = map.orders.keys().map(|o| (*o, Vec::new())).collect();
    for s in 0..map.shards {
        let owner = map.shard_orders.get(s as usize).copied().unwrap_or(0);
        if owner == 0 || map.moves.contains_key(&s) {
            continue;
        }
        if let Some(v) = movable.get_mut(&owner) {
            v.push((sizes.get(&s).map_or(0, |z| z.bytes), s));
        }
    }
    for v in movable.values_mut() {
        v.sort();
    }
    // The saving of letting an order keep q + 1: the (count - q)-th smallest shard it has.
    let mut savings: Vec<(u64, usize, OrderId)> = counts
        .iter()
        .map(|(o, &c)| {
            let saving = if c > q { movable[o].get(c - q - 1).map_or(0, |(b, _)| *b) } else { 0 };
            (saving, c, *o)
        })
        .collect();
    savings.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let target: BTreeMap<OrderId, usize> =
        savings.iter().enumerate().map(|(i, (_, _, o))| (*o, if i < r { q + 1 } else { q })).collect();
    let mut given: Vec<(u64, u32, OrderId)> = Vec::new();
    for (o, &c) in &counts {
        let excess = c.saturating_sub(target[o]);
        given.extend(movable[o].iter().take(excess).map(|(b, s)| (*b, *s, *o)));
    }
    given.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut deficits: BTreeMap<OrderId, usize> =
        counts.iter().map(|(o, &c)| (*o, target[o].saturating_sub(c))).filter(|(_, d)| *d > 0).collect();
    let mut out = Vec::with_capacity(given.len());
    for (bytes, shard, from) in given {
        let Some((&to, _)) = deficits.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) else { break };
        if let Some(d) = deficits.get_mut(&to) {
            *d -= 1;
            if *d == 0 {
                deficits.remove(&to);
            }
        }
        let keys = sizes.get(&shard).map_or(0, |z| z.keys);
        out.push(PlannedMove { shard, from, to, keys, bytes });
    }
    out
}

/// The rate a move is assumed to go at when `move_rate_mib` is 0 (unlimited): what a 16 MiB
/// move measured under client load on the 2-core machine of bench/RESULTS.md (larger shards
/// went slower there, about 22 MiB/s for 256 MiB).
const UNLIMITED_MOVE_MIB: f64 = 40.0;

/// Time a move takes besides its bytes: the commits of its steps on both orders and the
/// station, the reports in between, and the delta passes (bench/RESULTS.md).
const MOVE_OVERHEAD_S: f64 = 0.1;

/// The estimated seconds one move of `bytes` takes at the current settings.
pub fn eta_s(bytes: u64, settings: &crate::station::settings::Settings) -> f64 {
    let mib = if settings.move_rate_mib == 0 { UNLIMITED_MOVE_MIB } else { f64::from(settings.move_rate_mib) };
    bytes as f64 / (mib * 1024.0 * 1024.0) + MOVE_OVERHEAD_S
}

/// The estimated seconds of a whole plan: its moves' times spread over `move_concurrency`
/// slots (the rate limit is per sending node, so moves from different sources overlap).
pub fn total_eta_s(etas: &[f64], settings: &crate::station::settings::Settings) -> f64 {
    let slots = (settings.move_concurrency.max(1) as usize).min(etas.len().max(1));
    let sum: f64 = etas.iter().sum();
    let longest = etas.iter().copied().fold(0.0, f64::max);
    (sum / slots as f64).max(longest)
}
