use std::collections::BTreeSet;

use super::*;
use crate::station::map::StationCommand;
use crate::station::map::StationResponse;

fn member(id: NodeId) -> MemberInfo {
    MemberInfo { id, name: format!("n{id}"), addr: format!("127.0.0.1:{}", 7000 + id) }
}

fn observed(me: NodeId) -> Observed {
    Observed {
        me,
        now_ms: 10_000,
        leader_since_ms: 0,
        down_after_ms: 3_000,
        bootstrap: BootstrapPlan {
            cluster_id: "c".into(),
            shards: 64,
            replicas: 3,
            station: vec![member(1), member(2), member(3)],
        },
        limits: (4096, 1 << 20),
        announced: BTreeMap::new(),
        last_seen: [(1, 9_000), (2, 9_000), (3, 9_000)].into_iter().collect(),
        replicas: HashMap::new(),
        heralds: BTreeMap::new(),
        spawned_at: HashMap::new(),
        shard_reports: BTreeMap::new(),
    }
}

/// Applies plans the way the runtime does, one at a time, re-planning after each.
fn converge(map: &mut ClusterMap, obs: &Observed) -> Vec<String> {
    let mut reasons = Vec::new();
    for _ in 0..100 {
        let Some(p) = plan(map, obs).into_iter().next() else {
            return reasons;
        };
        let cmd = StationCommand {
            expected_epoch: map.epoch,
            at_unix_ms: 0,
            by: obs.me,
            change: p.change,
            reason: p.reason.clone(),
        };
        assert!(matches!(map.apply(&cmd), StationResponse::Applied { .. }), "{cmd}");
        reasons.push(p.reason);
    }
    panic!("plan did not converge: {reasons:?}");
}

#[test]
fn empty_map_is_initialized_then_bondsmith_recorded() {
    let mut map = ClusterMap::default();
    let obs = observed(2);
    let first = plan(&map, &obs);
    assert_eq!(first.len(), 1);
    assert!(matches!(first[0].change, MapChange::Init { .. }));
    let reasons = converge(&mut map, &obs);
    assert_eq!(reasons.len(), 2);
    assert_eq!(map.bondsmith, Some(2));
    assert_eq!(map.nodes.len(), 3);
    assert!(plan(&map, &obs).is_empty(), "a converged map needs no action");
}

#[test]
fn announced_nodes_are_registered_once() {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    obs.announced.insert(4, Announce { node: member(4), capacity: 10 });
    obs.announced.insert(2, Announce { node: member(2), capacity: 0 });
    obs.last_seen.insert(4, 9_500);
    let planned = plan(&map, &obs);
    assert_eq!(planned.len(), 2, "{planned:?}");
    assert!(planned.iter().any(|p| p.reason.contains("station member n2 joined")));
    converge(&mut map, &obs);
    assert_eq!(map.state(&map.nodes[&4]), "spare");
    assert_eq!(map.state(&map.nodes[&2]), "spare");
    assert!(plan(&map, &obs).is_empty());
}

#[test]
fn silent_nodes_go_down_and_come_back() {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    obs.last_seen.insert(3, 5_000);
    let planned = plan(&map, &obs);
    assert_eq!(
        planned,
        vec![Planned { change: MapChange::MarkDown { id: 3 }, reason: "heartbeat lost: none for 5000 ms".into() }]
    );
    converge(&mut map, &obs);
    assert_eq!(map.state(&map.nodes[&3]), "down");
    obs.last_seen.insert(3, 9_900);
    assert_eq!(plan(&map, &obs)[0].change, MapChange::MarkUp { id: 3 });
}

#[test]
fn a_new_bondsmith_waits_before_judging_liveness() {
    let mut map = ClusterMap::default();
    let obs = observed(1);
    converge(&mut map, &obs);
    // Node 3 took over just now and has heard from nobody yet.
    let mut fresh = observed(3);
    fresh.last_seen.clear();
    fresh.leader_since_ms = 9_000;
    let planned = plan(&map, &fresh);
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].change, MapChange::SetBondsmith { id: 3 });
    assert_eq!(planned[0].reason, "station leadership moved from n1");
}

fn join_spares(map: &mut ClusterMap, obs: &mut Observed, ids: std::ops::RangeInclusive<NodeId>) {
    for id in ids {
        obs.announced.insert(id, Announce { node: member(id), capacity: 1 });
        obs.last_seen.insert(id, 9_900);
    }
    converge(map, obs);
}

#[test]
fn six_spares_make_two_orders_then_shards_split_evenly_once_heralds_registered() {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    join_spares(&mut map, &mut obs, 4..=9);
    assert_eq!(map.orders.len(), 2);
    assert_eq!(map.orders[&1].members, vec![4, 5, 6]);
    assert_eq!(map.orders[&2].members, vec![7, 8, 9]);
    assert_eq!(map.state(&map.nodes[&4]), "member");
    assert!(map.shard_orders.iter().all(|o| *o == 0), "no shards before heralds register");

    let spawns = plan_spawns(&map, &obs);
    assert_eq!(spawns.len(), 6);
    // A bondsmith that just took over asks only nodes whose heartbeats it has seen.
    let mut fresh = obs.clone();
    fresh.leader_since_ms = fresh.now_ms - 10;
    assert!(plan_spawns(&map, &fresh).is_empty());
    fresh.replicas.insert(4, Default::default());
    assert_eq!(plan_spawns(&map, &fresh).len(), 1);
    assert_eq!(spawns[0].members.len(), 3);
    // Asked recently: not asked again; reported running: not asked at all.
    obs.spawned_at.insert((4, 1), 9_999);
    obs.replicas.insert(5, [1].into_iter().collect());
    assert_eq!(plan_spawns(&map, &obs).len(), 4);

    obs.heralds.insert(1, (5, 2));
    converge(&mut map, &obs);
    assert!(map.shard_orders.iter().all(|o| *o == 0), "order 2 has no herald yet");
    obs.heralds.insert(2, (9, 1));
    converge(&mut map, &obs);
    assert_eq!(map.shard_count(1), 32);
    assert_eq!(map.shard_count(2), 32);
    assert_eq!(map.roles(5), vec!["satellite", "herald"]);

    // A stale report (older term) does not overwrite; a newer one does.
    obs.heralds.insert(1, (4, 1));
    assert!(plan(&map, &obs).is_empty());
    obs.heralds.insert(1, (4, 3));
    converge(&mut map, &obs);
    assert_eq!(map.orders[&1].herald, Some(4));
}

#[test]
fn balance_is_deterministic_and_moves_nothing() {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    join_spares(&mut map, &mut obs, 4..=6);
    obs.heralds.insert(1, (4, 1));
    converge(&mut map, &obs);
    assert_eq!(map.shard_count(1), 64);
    // A later order gets no shard from placement: they all are placed already.
    join_spares(&mut map, &mut obs, 7..=9);
    obs.heralds.insert(2, (7, 1));
    converge(&mut map, &obs);
    assert_eq!(map.shard_count(1), 64);
    assert_eq!(map.shard_count(2), 0);
    let a = balance(&map, &[1, 2, 3]);
    assert_eq!(a, vec![(1, 2), (2, 2), (3, 2)]);
}

#[test]
fn empty_shards_move_to_a_later_order_through_release_and_only_then() {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    join_spares(&mut map, &mut obs, 4..=6);
    obs.heralds.insert(1, (4, 1));
    converge(&mut map, &obs);
    join_spares(&mut map, &mut obs, 7..=9);
    obs.heralds.insert(2, (7, 1));
    converge(&mut map, &obs);
    assert!(map.moving.is_empty(), "no move without a report from order 1's herald");

    // Order 1 serves everything; shards 60..64 hold data.
    let all: BTreeSet<u32> = (0..64).collect();
    let full: BTreeSet<u32> = (60..64).collect();
    obs.shard_reports.insert(1, ShardReport { owned: all.clone(), nonempty: full.clone() });
    converge(&mut map, &obs);
    assert_eq!(map.moving.len(), 32, "enough moves begun to balance");
    assert!(map.moving.keys().all(|s| !full.contains(s)), "only empty shards move");
    assert_eq!(map.shard_count(1), 64, "nothing changes hands before the release");

    // Order 1 released them, all empty but one that got a write meanwhile.
    let moving: Vec<u32> = map.moving.keys().copied().collect();
    let written = moving[0];
    let owned: BTreeSet<u32> = all.iter().copied().filter(|s| !map.moving.contains_key(s)).collect();
    let mut nonempty = full.clone();
    nonempty.insert(written);
    obs.shard_reports.insert(1, ShardReport { owned: owned.clone(), nonempty: nonempty.clone() });
    let planned = plan(&map, &obs);
    assert!(planned.iter().any(|p| p.change == MapChange::CancelMove { shard: written }));
    assert_eq!(planned.iter().filter(|p| matches!(p.change, MapChange::CompleteMove { .. })).count(), 31);
    // The cancelled shard is re-acquired by order 1; another empty one is moved instead.
    let mut reacquired = owned;
    reacquired.insert(written);
    obs.shard_reports.insert(1, ShardReport { owned: reacquired, nonempty });
    for _ in 0..10 {
        converge(&mut map, &obs);
        let owned: BTreeSet<u32> =
            (0..64).filter(|s| map.shard_orders[*s as usize] == 1 && !map.moving.contains_key(s)).collect();
        obs.shard_reports.insert(1, ShardReport { owned, nonempty: obs.shard_reports[&1].nonempty.clone() });
    }
    assert_eq!(map.shard_count(1), 32);
    assert_eq!(map.shard_count(2), 32);
    assert!(map.moving.is_empty());
    assert_eq!(map.shard_orders[written as usize], 1, "the shard with data stayed");
}
