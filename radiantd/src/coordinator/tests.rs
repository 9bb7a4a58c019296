use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::*;
use crate::coordinator::action::MoveStep;
use crate::station::map::ClusterMap;
use crate::station::map::Intent;
use crate::station::map::MapChange;
use crate::station::map::OrderRecord;
use crate::station::map::STATION;
use crate::station::map::StationCommand;
use crate::station::map::StationResponse;
use crate::station::moves::MovePhase;
use crate::station::moves::PlannedMove;
use crate::station::moves::ShardMove;

fn member(id: NodeId) -> MemberInfo {
    MemberInfo { id, name: format!("n{id}"), addr: format!("127.0.0.1:{}", 7000 + id) }
}

fn observed(me: NodeId) -> Observed {
    let bootstrap = BootstrapPlan {
        cluster_id: "c".into(),
        shards: 64,
        replicas: 3,
        station: vec![member(1), member(2), member(3)],
    };
    let mut obs = Observed::new(me, bootstrap, (4096, 1 << 20));
    obs.now_ms = 10_000;
    obs.last_seen = [(1, 9_000), (2, 9_000), (3, 9_000)].into_iter().collect();
    obs
}

/// The map changes of a plan, with their reasons.
fn commits(actions: &[Action]) -> Vec<(MapChange, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { change, reason } => Some((change.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

/// The replica starts of a plan.
fn starts(actions: &[Action]) -> Vec<Action> {
    actions.iter().filter(|a| matches!(a, Action::StartReplica { .. })).cloned().collect()
}

/// Applies a map change as the station's log would.
fn apply(map: &mut ClusterMap, change: MapChange, reason: &str) {
    let cmd = StationCommand { expected_epoch: map.epoch, at_unix_ms: 0, by: 1, change, reason: reason.into() };
    assert!(matches!(map.apply(&cmd), StationResponse::Applied { .. }), "{cmd}");
}

/// Applies plans the way the runtime does, the first map change of each, re-planning after
/// each; I/O actions are left to the test, which plays their effect into the observations.
fn converge(map: &mut ClusterMap, obs: &Observed) -> Vec<String> {
    let mut reasons = Vec::new();
    for _ in 0..100 {
        let Some((change, reason)) = commits(&plan(map, obs)).into_iter().next() else {
            return reasons;
        };
        apply(map, change, &reason);
        reasons.push(reason);
    }
    panic!("plan did not converge: {reasons:?}");
}

#[test]
fn empty_map_is_initialized_then_bondsmith_recorded() {
    let mut map = ClusterMap::default();
    let obs = observed(2);
    let first = commits(&plan(&map, &obs));
    assert_eq!(first.len(), 1);
    assert!(matches!(first[0].0, MapChange::Init { .. }));
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
    obs.announced.insert(4, Announce { node: member(4), capacity: 10, incarnation: 4 });
    obs.announced.insert(2, Announce { node: member(2), capacity: 0, incarnation: 2 });
    obs.last_seen.insert(4, 9_500);
    let planned = commits(&plan(&map, &obs));
    assert_eq!(planned.len(), 2, "{planned:?}");
    assert!(planned.iter().any(|(_, reason)| reason.contains("station member n2 joined")));
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
    let planned = commits(&plan(&map, &obs));
    assert_eq!(planned, vec![(MapChange::MarkDown { id: 3 }, "heartbeat lost: none for 5000 ms".into())]);
    converge(&mut map, &obs);
    assert_eq!(map.state(&map.nodes[&3]), "down");
    obs.last_seen.insert(3, 9_900);
    assert_eq!(commits(&plan(&map, &obs))[0].0, MapChange::MarkUp { id: 3 });
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
    let planned = commits(&plan(&map, &fresh));
    assert_eq!(planned, vec![(MapChange::SetBondsmith { id: 3 }, "station leadership moved from n1".into())]);
}

fn join_spares(map: &mut ClusterMap, obs: &mut Observed, ids: std::ops::RangeInclusive<NodeId>) {
    for id in ids {
        obs.announced.insert(id, Announce { node: member(id), capacity: 1, incarnation: id });
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

    let spawns = starts(&plan(&map, &obs));
    assert_eq!(spawns.len(), 6);
    // A bondsmith that just took over asks only nodes whose heartbeats it has seen.
    let mut fresh = obs.clone();
    fresh.leader_since_ms = fresh.now_ms - 10;
    assert!(starts(&plan(&map, &fresh)).is_empty());
    fresh.replicas.insert(4, Default::default());
    assert_eq!(starts(&plan(&map, &fresh)).len(), 1);
    let Action::StartReplica { members, initialize, .. } = &spawns[0] else { unreachable!() };
    assert_eq!(members.len(), 3);
    assert!(*initialize, "the members an order is formed with initialize its group");
    // Asked recently (or still asking): not asked again; reported running: not asked at all.
    obs.recent.insert(ActionKey::Replica(4, 1), 9_999);
    obs.recent.insert(ActionKey::Replica(7, 2), u64::MAX);
    obs.replicas.insert(5, [1].into_iter().collect());
    assert_eq!(starts(&plan(&map, &obs)).len(), 3);

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
    assert!(commits(&plan(&map, &obs)).is_empty());
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

/// Station 1..3, spares 4..=8 joined: order 1 = {4, 5, 6} led by 4, spares 7 and 8, every
/// replica reported running, `replace_after_ms` = 2000.
fn order_with_two_spares() -> (ClusterMap, Observed) {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    join_spares(&mut map, &mut obs, 4..=8);
    assert_eq!(map.orders[&1].members, vec![4, 5, 6]);
    apply(&mut map, MapChange::Set { name: "replace_after_ms".into(), value: "2000".into() }, "test");
    for n in 4..=6 {
        obs.replicas.insert(n, [1].into_iter().collect());
    }
    for n in 7..=8 {
        obs.replicas.insert(n, BTreeSet::new());
    }
    obs.heralds.insert(1, (4, 1));
    obs.memberships.insert(1, MembershipReport { voters: [4, 5, 6].into(), last_log_index: 100, ..Default::default() });
    converge(&mut map, &obs);
    assert_eq!(map.orders[&1].herald, Some(4));
    (map, obs)
}

fn herald_cmds(actions: &[Action]) -> Vec<HeraldCmd> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Herald { cmd, .. } => Some(cmd.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_dead_member_is_replaced_by_a_spare_through_a_learner_and_one_joint_swap() {
    let (mut map, mut obs) = order_with_two_spares();
    assert!(plan(&map, &obs).is_empty(), "a healthy order needs nothing");

    // Node 6 falls silent for 5 s: down after 3 s, replaced after 2 s more of the setting.
    obs.last_seen.insert(6, 5_000);
    let reasons = converge(&mut map, &obs);
    assert!(
        reasons.iter().any(|r| r.contains("n6 has been down for 5000 ms") && r.contains("spare n7")),
        "{reasons:?}"
    );
    let r = map.orders[&1].reconfig.clone().expect("a replacement under way");
    assert_eq!((r.add, r.remove), (7, 6));
    assert_eq!(map.state(&map.nodes[&7]), "member", "the learner is no spare any more");
    assert_eq!(map.orders[&1].members, vec![4, 5, 6], "members change only once the group did");

    // The spare starts a replica that joins as a learner: it never initializes the group.
    let starts = starts(&plan(&map, &obs));
    let [Action::StartReplica { node, members, initialize, .. }] = starts.as_slice() else { panic!("{starts:?}") };
    assert_eq!(node.id, 7);
    assert!(!initialize);
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![4, 5, 6, 7]);

    // Running: the herald adds it as a learner.
    obs.replicas.insert(7, [1].into_iter().collect());
    assert!(matches!(herald_cmds(&plan(&map, &obs)).as_slice(), [HeraldCmd::AddLearner(m)] if m.id == 7));

    // A learner far behind is not promoted; one within the slack is swapped for node 6.
    let behind = MembershipReport {
        voters: [4, 5, 6].into(),
        learners: [7].into(),
        matched: [(5, 100), (7, 10)].into(),
        last_log_index: 100,
        ..Default::default()
    };
    obs.memberships.insert(1, behind.clone());
    assert!(herald_cmds(&plan(&map, &obs)).is_empty());
    obs.memberships.insert(1, MembershipReport { matched: [(5, 100), (7, 90)].into(), ..behind });
    assert_eq!(herald_cmds(&plan(&map, &obs)), vec![HeraldCmd::SetVoters(vec![4, 5, 7])]);
    // Asked just now: not asked again until the herald's report can show the result.
    obs.recent.insert(ActionKey::Membership(1), 9_999);
    assert!(herald_cmds(&plan(&map, &obs)).is_empty());
    obs.recent.clear();

    // A herald that failed between the two entries left the group joint: ask again.
    let joint = MembershipReport { voters: [4, 5, 7].into(), joint: true, last_log_index: 102, ..Default::default() };
    obs.memberships.insert(1, joint);
    assert_eq!(herald_cmds(&plan(&map, &obs)), vec![HeraldCmd::SetVoters(vec![4, 5, 7])]);
    assert!(commits(&plan(&map, &obs)).is_empty(), "the map waits for the final configuration");

    // The group runs {4, 5, 7}: the map follows, and node 6 is retired from order 1.
    obs.memberships.insert(1, MembershipReport { voters: [4, 5, 7].into(), last_log_index: 103, ..Default::default() });
    let reasons = converge(&mut map, &obs);
    assert!(reasons.iter().any(|r| r.contains("runs with n7 in place of n6")), "{reasons:?}");
    assert_eq!(map.orders[&1].members, vec![4, 5, 7]);
    assert!(map.orders[&1].reconfig.is_none());
    assert!(map.orders[&1].retired.contains(&6));
    let left = plan(&map, &obs);
    assert!(left.is_empty(), "{left:?}");

    // Node 6 comes back with its old replica: it is stopped and purged, never re-added.
    obs.last_seen.insert(6, 9_950);
    converge(&mut map, &obs);
    let actions = plan(&map, &obs);
    assert!(
        matches!(actions.as_slice(), [Action::RetireReplica { node, order: 1, .. }] if node.id == 6),
        "{actions:?}"
    );
    obs.replicas.insert(6, BTreeSet::new());
    assert_eq!(map.state(&map.nodes[&6]), "spare");
    // Should order 1 lose another member, node 6 is never the one to take its place.
    obs.last_seen.insert(5, 5_000);
    obs.last_seen.insert(8, 5_000);
    converge(&mut map, &obs);
    assert!(map.orders[&1].reconfig.is_none(), "only n6 is spare, and it was in order 1 before");
}

#[test]
fn no_replacement_without_a_live_majority_a_fresh_spare_or_auto_replace() {
    // Two of three down: the joint configuration could never commit, so nothing starts.
    let (mut map, mut obs) = order_with_two_spares();
    obs.last_seen.insert(5, 5_000);
    obs.last_seen.insert(6, 5_000);
    converge(&mut map, &obs);
    assert!(map.orders[&1].reconfig.is_none());

    // Down, but not yet for replace_after_ms.
    let (mut map, mut obs) = order_with_two_spares();
    apply(&mut map, MapChange::Set { name: "replace_after_ms".into(), value: "60000".into() }, "test");
    obs.last_seen.insert(6, 5_000);
    converge(&mut map, &obs);
    assert_eq!(map.state(&map.nodes[&6]), "down");
    assert!(map.orders[&1].reconfig.is_none());

    // auto_replace off.
    let (mut map, mut obs) = order_with_two_spares();
    apply(&mut map, MapChange::Set { name: "auto_replace".into(), value: "false".into() }, "test");
    obs.last_seen.insert(6, 5_000);
    converge(&mut map, &obs);
    assert!(map.orders[&1].reconfig.is_none());

    // No spare alive.
    let (mut map, mut obs) = order_with_two_spares();
    for n in [6, 7, 8] {
        obs.last_seen.insert(n, 5_000);
    }
    converge(&mut map, &obs);
    assert!(map.orders[&1].reconfig.is_none());

    // A fresh bondsmith first waits to hear from everybody.
    let (mut map, mut obs) = order_with_two_spares();
    obs.last_seen.insert(6, 5_000);
    obs.leader_since_ms = 9_000;
    converge(&mut map, &obs);
    assert!(map.orders[&1].reconfig.is_none());
}

#[test]
fn a_learner_that_dies_or_stalls_is_abandoned_and_removed_from_the_group() {
    let (mut map, mut obs) = order_with_two_spares();
    obs.last_seen.insert(6, 5_000);
    converge(&mut map, &obs);
    assert_eq!(map.orders[&1].reconfig.as_ref().map(|r| r.add), Some(7));
    obs.replicas.insert(7, [1].into_iter().collect());
    obs.memberships.insert(
        1,
        MembershipReport {
            voters: [4, 5, 6].into(),
            learners: [7].into(),
            matched: [(7, 10)].into(),
            last_log_index: 100,
            ..Default::default()
        },
    );

    // No progress for a minute: abandoned; the group's learner is removed; spare 8 is next.
    obs.learner_progress.insert((1, 7), (10, obs.now_ms));
    // A minute passes with every node heartbeating.
    obs.now_ms += CATCHUP_STALL_MS;
    for t in obs.last_seen.values_mut() {
        *t += CATCHUP_STALL_MS;
    }
    let reasons = converge(&mut map, &obs);
    assert!(reasons.iter().any(|r| r.contains("made no progress")), "{reasons:?}");
    assert_eq!(map.orders[&1].reconfig.as_ref().map(|r| r.add), Some(8), "{reasons:?}");
    let cmds = herald_cmds(&plan(&map, &obs));
    assert!(cmds.contains(&HeraldCmd::RemoveLearner(7)), "{cmds:?}");
    let actions = plan(&map, &obs);
    assert!(actions.iter().any(|a| matches!(a, Action::RetireReplica { node, .. } if node.id == 7)), "{actions:?}");

    // The next learner dies before catching up: abandoned too.
    obs.last_seen.insert(8, 5_000);
    let reasons = converge(&mut map, &obs);
    assert!(reasons.iter().any(|r| r.contains("n8 went down before it caught up")), "{reasons:?}");
}

#[test]
fn a_member_back_with_a_wiped_data_dir_is_a_new_node_and_is_replaced_at_once() {
    let (mut map, mut obs) = order_with_two_spares();
    // Node 6 restarts with an empty data dir: same id (same address), new incarnation. It
    // must never run order 1's replica again under that id, even though it is alive.
    obs.replicas.insert(6, BTreeSet::new());
    obs.incarnations.insert(6, 0x66);
    let actions = plan(&map, &obs);
    assert!(!actions.iter().any(|a| matches!(a, Action::StartReplica { node, .. } if node.id == 6)), "{actions:?}");
    // Its phone-home carries the new incarnation: registered anew, replaced with no wait.
    obs.announced.insert(6, Announce { node: member(6), capacity: 1, incarnation: 0x66 });
    let reasons = converge(&mut map, &obs);
    assert!(reasons.iter().any(|r| r.contains("came back with a new data dir")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("n6 lost its data dir")), "{reasons:?}");
    assert_eq!(map.orders[&1].reconfig.as_ref().map(|r| (r.add, r.remove)), Some((7, 6)));
    assert_eq!(map.nodes[&6].incarnation, 0x66);
}

#[test]
fn a_dead_station_member_is_replaced_by_a_spare_and_never_the_bondsmith_itself() {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    join_spares(&mut map, &mut obs, 4..=5);
    apply(&mut map, MapChange::Set { name: "replace_after_ms".into(), value: "0".into() }, "test");
    for n in 1..=3 {
        obs.replicas.insert(n, [STATION].into_iter().collect());
    }
    for n in 4..=5 {
        obs.replicas.insert(n, BTreeSet::new());
    }
    let report = MembershipReport { voters: [1, 2, 3].into(), last_log_index: 50, ..Default::default() };
    obs.memberships.insert(STATION, report);
    assert!(commits(&plan(&map, &obs)).is_empty());

    // Station member 3 dies: spare 4 takes its place, joining as a learner of the station.
    obs.last_seen.insert(3, 5_000);
    let reasons = converge(&mut map, &obs);
    assert!(reasons.iter().any(|r| r.contains("spare n4 takes its place in the station")), "{reasons:?}");
    let starts = starts(&plan(&map, &obs));
    let [Action::StartReplica { node, order: STATION, members, initialize: false, .. }] = starts.as_slice() else {
        panic!("{starts:?}")
    };
    assert_eq!((node.id, members.len()), (4, 4));
    obs.replicas.insert(4, [STATION].into_iter().collect());
    let actions = plan(&map, &obs);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Herald { order: STATION, herald, cmd: HeraldCmd::AddLearner(m), .. }
            if herald.id == 1 && m.id == 4)),
        "the bondsmith adds the learner to its own group: {actions:?}"
    );
    let caught_up = MembershipReport {
        voters: [1, 2, 3].into(),
        learners: [4].into(),
        matched: [(4, 50)].into(),
        last_log_index: 50,
        ..Default::default()
    };
    obs.memberships.insert(STATION, caught_up);
    assert_eq!(herald_cmds(&plan(&map, &obs)), vec![HeraldCmd::SetVoters(vec![1, 2, 4])]);
    obs.memberships.insert(STATION, MembershipReport { voters: [1, 2, 4].into(), ..Default::default() });
    converge(&mut map, &obs);
    assert_eq!(map.station, vec![1, 2, 4]);
    assert!(map.station_retired.contains(&3));

    // The bondsmith never plans its own replacement, however long it has been "silent".
    obs.last_seen.remove(&1);
    let planned = commits(&plan(&map, &obs));
    assert!(!planned.iter().any(|(c, _)| matches!(c, MapChange::BeginReplace { remove: 1, .. })), "{planned:?}");
}

#[test]
fn a_draining_herald_hands_over_to_the_most_caught_up_serving_voter() {
    let (mut map, mut obs) = order_with_two_spares();
    let report = MembershipReport {
        voters: [4, 5, 6].into(),
        matched: [(5, 90), (6, 100)].into(),
        last_log_index: 100,
        ..Default::default()
    };
    obs.memberships.insert(1, report);
    apply(&mut map, MapChange::SetIntent { id: 4, intent: Intent::Drain }, "operator");
    assert_eq!(map.state(&map.nodes[&4]), "draining");
    assert_eq!(herald_cmds(&plan(&map, &obs)), vec![HeraldCmd::TransferLeader(6)]);
    // A draining voter is no target, however caught up.
    apply(&mut map, MapChange::SetIntent { id: 6, intent: Intent::Drain }, "operator");
    assert_eq!(herald_cmds(&plan(&map, &obs)), vec![HeraldCmd::TransferLeader(5)]);
    // Drained nodes are no spares; undrained, they serve again.
    apply(&mut map, MapChange::SetIntent { id: 6, intent: Intent::Serve }, "operator");
    apply(&mut map, MapChange::SetIntent { id: 7, intent: Intent::Drain }, "operator");
    obs.last_seen.insert(6, 5_000);
    converge(&mut map, &obs);
    assert_eq!(map.orders[&1].reconfig.as_ref().map(|r| r.add), Some(8), "n7 drains, n8 takes the place");
}

#[test]
fn remove_is_refused_up_front_with_the_reason_and_otherwise_replaces_then_retires() {
    let (mut map, mut obs) = order_with_two_spares();
    assert_eq!(can_remove(&map, &obs, 42), Err("there is no node 42 in this cluster".into()));
    // A spare can go at once; a member needs a spare to take its place.
    assert_eq!(can_remove(&map, &obs, 7), Ok(()));
    assert_eq!(can_remove(&map, &obs, 5), Ok(()));
    for n in [7, 8] {
        obs.last_seen.insert(n, 5_000);
    }
    converge(&mut map, &obs);
    assert_eq!(can_remove(&map, &obs, 5), Err("no spare node can take n5's place in order 1; join one first".into()));
    obs.last_seen.insert(7, 9_990);
    obs.last_seen.insert(6, 5_000);
    let e = can_remove(&map, &obs, 5).unwrap_err();
    assert_eq!(e, "order 1 would lose its majority: only 1 of its 2 other members are up");
    obs.last_seen.insert(6, 9_990);
    converge(&mut map, &obs);
    assert_eq!(can_remove(&map, &obs, 5), Ok(()));
    // A station of one cannot lose its only member.
    let mut solo = ClusterMap::default();
    let mut solo_obs = observed(1);
    solo_obs.bootstrap.station = vec![member(1)];
    converge(&mut solo, &solo_obs);
    assert!(can_remove(&solo, &solo_obs, 1).unwrap_err().contains("only member of the station"));

    // Remove n5: replaced like a dead member, with no wait, then removed.
    apply(&mut map, MapChange::SetIntent { id: 5, intent: Intent::Remove }, "operator");
    let reasons = converge(&mut map, &obs);
    assert_eq!(map.orders[&1].reconfig.as_ref().map(|r| (r.add, r.remove)), Some((7, 5)), "{reasons:?}");
    let e = can_remove(&map, &obs, 4).unwrap_err();
    assert!(e.starts_with("a change is already under way in order 1 (n7 is replacing n5)"), "{e}");
    obs.memberships.insert(1, MembershipReport { voters: [4, 6, 7].into(), ..Default::default() });
    let reasons = converge(&mut map, &obs);
    assert!(reasons.iter().any(|r| r == "n5 holds no place in any group any more: removed"), "{reasons:?}");
    assert_eq!(map.state(&map.nodes[&5]), "removed");
    let actions = plan(&map, &obs);
    assert!(actions.iter().any(|a| matches!(a, Action::StopServices { node, .. } if node.id == 5)), "{actions:?}");
    // It cannot come back under its old identity; a wiped data dir is a new node.
    let again = MapChange::Register { node: member(5), capacity: 1, incarnation: 5 };
    let cmd = StationCommand { expected_epoch: map.epoch, at_unix_ms: 0, by: 1, change: again, reason: "t".into() };
    assert!(matches!(map.apply(&cmd), StationResponse::Rejected { .. }));
    apply(&mut map, MapChange::Register { node: member(5), capacity: 1, incarnation: 0x55 }, "wiped");
    assert_eq!(map.nodes[&5].intent, Intent::Serve);
}

#[test]
fn heralds_are_told_which_shards_their_log_must_serve() {
    let (mut map, mut obs) = order_with_two_spares();
    assert_eq!(map.shard_count(1), 64);
    // The herald's log serves nothing yet: it is told to acquire all 64 at this epoch.
    obs.shard_reports.insert(1, ShardReport::default());
    let cmds = herald_cmds(&plan(&map, &obs));
    assert_eq!(cmds, vec![HeraldCmd::Shards { acquire: (0..64).collect(), release: vec![], epoch: map.epoch }]);
    // Serving them all: nothing to say; a shard moving away is released, never acquired.
    obs.shard_reports.insert(1, ShardReport { owned: (0..64).collect(), ..Default::default() });
    assert!(herald_cmds(&plan(&map, &obs)).is_empty());
    // A shard a move has frozen is released.
    let frozen = ShardMove { id: 1, from: 1, to: 2, phase: MovePhase::Frozen, keys: 0, bytes: 0 };
    map.moves.insert(63, frozen);
    let cmds: Vec<HeraldCmd> =
        herald_cmds(&plan(&map, &obs)).into_iter().filter(|c| matches!(c, HeraldCmd::Shards { .. })).collect();
    assert_eq!(cmds, vec![HeraldCmd::Shards { acquire: vec![], release: vec![63], epoch: map.epoch }]);
    // A report from a node that is not the map's herald is no basis for a command.
    obs.heralds.insert(1, (5, 9));
    assert!(herald_cmds(&plan(&map, &obs)).iter().all(|c| !matches!(c, HeraldCmd::Shards { .. })));
}

#[test]
fn a_node_leading_the_station_and_an_order_hands_the_order_to_a_member_that_leads_nothing() {
    // Stations members 1..3 joined too: order 1 = {1, 2, 3}; the bondsmith (1) also leads it.
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    for id in 1..=3 {
        obs.announced.insert(id, Announce { node: member(id), capacity: 1, incarnation: id });
        obs.last_seen.insert(id, 9_900);
    }
    converge(&mut map, &obs);
    assert_eq!(map.orders[&1].members, vec![1, 2, 3]);
    obs.heralds.insert(1, (1, 1));
    converge(&mut map, &obs);
    let report = MembershipReport {
        voters: [1, 2, 3].into(),
        matched: [(2, 40), (3, 50)].into(),
        last_log_index: 50,
        ..Default::default()
    };
    obs.memberships.insert(1, report.clone());
    assert_eq!(herald_cmds(&plan(&map, &obs)), vec![HeraldCmd::TransferLeader(3)]);
    // Not while a node is down or a change is under way.
    obs.last_seen.insert(2, 5_000);
    converge(&mut map, &obs);
    assert!(herald_cmds(&plan(&map, &obs)).iter().all(|c| !matches!(c, HeraldCmd::TransferLeader(_))));
    // Once another node leads the order, nothing to do.
    obs.last_seen.insert(2, 9_990);
    converge(&mut map, &obs);
    obs.heralds.insert(1, (3, 2));
    converge(&mut map, &obs);
    assert!(herald_cmds(&plan(&map, &obs)).is_empty());
}

/// What the heralds of a test cluster hold, changed by the planner's commands the way their
/// logs would change: a model of the order side of a move, for the planner's rules.
#[derive(Default)]
struct Heralds {
    reports: BTreeMap<OrderId, ShardReport>,
}

impl Heralds {
    /// Carries out one herald command on `order`.
    fn run(&mut self, order: OrderId, cmd: &HeraldCmd) {
        let frozen_sources: BTreeMap<u32, ShardSize> = self
            .reports
            .values()
            .flat_map(|r| r.tracking.keys().filter(|s| !r.owned.contains(s)).map(|s| (*s, r.sizes[s])))
            .collect();
        let r = self.reports.entry(order).or_default();
        match cmd {
            HeraldCmd::Shards { acquire, release, .. } => {
                for s in acquire {
                    match r.incoming.get(s) {
                        Some(i) if !i.sealed => continue,
                        Some(_) => {
                            r.incoming.remove(s);
                        }
                        None => {}
                    }
                    r.owned.insert(*s);
                }
                for s in release {
                    r.owned.remove(s);
                }
            }
            HeraldCmd::Move { step: MoveStep::Track, shard, move_id } if r.owned.contains(shard) => {
                r.tracking.insert(*shard, *move_id);
            }
            HeraldCmd::Move { step: MoveStep::Untrack, shard, .. } => {
                r.tracking.remove(shard);
            }
            HeraldCmd::Move { step: MoveStep::Drop, shard, .. } if !r.owned.contains(shard) => {
                r.tracking.remove(shard);
                r.incoming.remove(shard);
                r.nonempty.remove(shard);
                r.sizes.remove(shard);
            }
            HeraldCmd::Reshard { from, to } => {
                let recut = |set: &BTreeSet<u32>| -> BTreeSet<u32> {
                    if to > from {
                        set.iter().flat_map(|s| [*s, *s + from]).collect()
                    } else {
                        set.iter().map(|s| s % to).collect()
                    }
                };
                r.owned = recut(&r.owned);
                r.nonempty = recut(&r.nonempty);
                let mut sizes = BTreeMap::new();
                for (s, z) in &r.sizes {
                    if to > from {
                        let half = ShardSize { keys: z.keys / 2, bytes: z.bytes / 2 };
                        sizes.insert(*s, half);
                        sizes.insert(*s + from, half);
                    } else {
                        let e: &mut ShardSize = sizes.entry(*s % to).or_default();
                        (e.keys, e.bytes) = (e.keys + z.keys, e.bytes + z.bytes);
                    }
                }
                r.sizes = sizes;
                r.modulus = Some(*to);
            }
            HeraldCmd::Move { step: MoveStep::Pull { .. }, shard, move_id } => {
                // The pull converges at once; it seals once the source is frozen.
                let sealed = frozen_sources.get(shard).copied();
                let i = IncomingReport {
                    move_id: *move_id,
                    sealed: sealed.is_some(),
                    pulling: sealed.is_none(),
                    converged: true,
                    bytes_done: 0,
                };
                r.incoming.insert(*shard, i);
                if let Some(size) = sealed {
                    r.sizes.insert(*shard, size);
                    r.nonempty.insert(*shard);
                }
            }
            _ => {}
        }
    }

    /// A running pull seals once its source is frozen (it keeps polling for that).
    fn settle_pulls(&mut self) {
        let frozen: BTreeMap<(u32, u64), ShardSize> = self
            .reports
            .values()
            .flat_map(|r| {
                r.tracking.iter().filter(|(s, _)| !r.owned.contains(s)).map(|(s, id)| ((*s, *id), r.sizes[s]))
            })
            .collect();
        for r in self.reports.values_mut() {
            for (s, i) in r.incoming.iter_mut() {
                if let Some(size) = frozen.get(&(*s, i.move_id)).filter(|_| i.pulling) {
                    (i.sealed, i.pulling) = (true, false);
                    r.sizes.insert(*s, *size);
                    r.nonempty.insert(*s);
                }
            }
        }
    }

    /// Orders whose logs serve `shard`.
    fn servers(&self, shard: u32) -> Vec<OrderId> {
        self.reports.iter().filter(|(_, r)| r.owned.contains(&shard)).map(|(o, _)| *o).collect()
    }
}

/// Runs plans to the end: every map change applied, every herald command played into the
/// model, the reports handed to the planner; asserts after each step that no shard is served
/// by two orders. Returns the reasons of the map changes.
fn run_cluster(map: &mut ClusterMap, obs: &mut Observed, heralds: &mut Heralds) -> Vec<String> {
    run_cluster_with(map, obs, heralds, true)
}

/// [`run_cluster`], with pulls that seal (`pulls_seal`) or never do (a slow destination).
fn run_cluster_with(map: &mut ClusterMap, obs: &mut Observed, heralds: &mut Heralds, pulls_seal: bool) -> Vec<String> {
    let mut reasons = Vec::new();
    for _ in 0..2_000 {
        obs.shard_reports = heralds.reports.clone();
        // Replica starts and leadership transfers are not this model's business.
        let actions: Vec<Action> = plan(map, obs)
            .into_iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Commit { .. }
                        | Action::Herald {
                            cmd: HeraldCmd::Shards { .. } | HeraldCmd::Move { .. } | HeraldCmd::Reshard { .. },
                            ..
                        }
                )
            })
            .collect();
        if actions.is_empty() {
            return reasons;
        }
        let mut changed = false;
        for a in &actions {
            match a {
                Action::Commit { change, reason } if !changed => {
                    apply(map, change.clone(), reason);
                    reasons.push(reason.clone());
                    changed = true;
                }
                Action::Herald { order, cmd, .. } => heralds.run(*order, cmd),
                _ => {}
            }
        }
        for s in 0..map.shards {
            assert!(heralds.servers(s).len() <= 1, "shard {s} served by {:?}", heralds.servers(s));
        }
        if pulls_seal {
            heralds.settle_pulls();
        }
    }
    panic!("the cluster did not settle: {:?}", &reasons[reasons.len().saturating_sub(10)..]);
}

/// Two orders, order 1 serving all 64 shards (shards 0..8 with 1 MiB each, the rest small),
/// order 2 formed later and serving none; every herald registered and reporting.
fn two_orders_one_full() -> (ClusterMap, Observed, Heralds) {
    let mut map = ClusterMap::default();
    let mut obs = observed(1);
    converge(&mut map, &obs);
    join_spares(&mut map, &mut obs, 4..=6);
    obs.heralds.insert(1, (4, 1));
    converge(&mut map, &obs);
    let mut heralds = Heralds::default();
    let r = heralds.reports.entry(1).or_default();
    for s in 0..64u32 {
        r.owned.insert(s);
        r.nonempty.insert(s);
        let bytes = if s < 8 { 1 << 20 } else { 1000 + u64::from(s) };
        r.sizes.insert(s, ShardSize { keys: 10, bytes });
    }
    apply(&mut map, MapChange::Set { name: "auto_rebalance".into(), value: "false".into() }, "test");
    join_spares(&mut map, &mut obs, 7..=9);
    obs.heralds.insert(2, (7, 1));
    heralds.reports.entry(2).or_default();
    run_cluster(&mut map, &mut obs, &mut heralds);
    (map, obs, heralds)
}

#[test]
fn with_auto_rebalance_off_nothing_moves_until_asked() {
    let (map, _, heralds) = two_orders_one_full();
    assert_eq!((map.shard_count(1), map.shard_count(2)), (64, 0));
    assert!(map.moves.is_empty() && map.planned_moves.is_empty());
    assert_eq!(heralds.reports[&1].owned.len(), 64);
}

#[test]
fn the_balanced_plan_moves_the_fewest_bytes() {
    let (map, obs, _) = two_orders_one_full();
    let sizes = super::moves::shard_sizes(&map, &obs).expect("every order reported");
    let plan = rebalance_plan(&map, &sizes);
    assert_eq!(plan.len(), 32, "64 shards on 2 orders: 32 each");
    assert!(plan.iter().all(|m| m.from == 1 && m.to == 2));
    assert!(plan.iter().all(|m| m.shard >= 8), "the eight large shards stay: {plan:?}");
    // Three orders: 64 = 21 + 21 + 22; the order that keeps 22 is the one that saves most.
    let mut three = map.clone();
    three.orders.insert(3, OrderRecord { id: 3, ..three.orders[&2].clone() });
    let plan = rebalance_plan(&three, &sizes);
    assert_eq!(plan.len(), 42);
    let to = |o| plan.iter().filter(|m| m.to == o).count();
    assert_eq!((to(2), to(3)), (21, 21));
    assert!(plan.iter().all(|m| m.shard >= 8));
    // Balanced already: nothing to do.
    let mut balanced = map.clone();
    for s in 32..64 {
        balanced.shard_orders[s] = 2;
    }
    assert!(rebalance_plan(&balanced, &sizes).is_empty());
}

#[test]
fn a_rebalance_moves_shards_with_their_data_through_every_phase() {
    let (mut map, mut obs, mut heralds) = two_orders_one_full();
    let sizes = super::moves::shard_sizes(&map, &obs).unwrap();
    let planned = rebalance_plan(&map, &sizes);
    apply(&mut map, MapChange::PlanMoves { moves: planned.clone() }, "operator: radiantctl rebalance");
    // One step at a time: the first moves begin, within move_concurrency.
    obs.shard_reports = heralds.reports.clone();
    let first = commits(&plan(&map, &obs));
    assert!(matches!(first[0].0, MapChange::StartMove { .. }), "{first:?}");
    let reasons = run_cluster(&mut map, &mut obs, &mut heralds);
    assert_eq!((map.shard_count(1), map.shard_count(2)), (32, 32));
    assert!(map.moves.is_empty() && map.planned_moves.is_empty());
    for p in &planned {
        let r2 = &heralds.reports[&2];
        assert!(r2.owned.contains(&p.shard) && r2.nonempty.contains(&p.shard), "shard {} arrived", p.shard);
        let r1 = &heralds.reports[&1];
        assert!(!r1.nonempty.contains(&p.shard) && !r1.tracking.contains_key(&p.shard), "the source copy is gone");
    }
    for kind in ["freeze it", "sealed shard", "copy is gone"] {
        assert_eq!(reasons.iter().filter(|r| r.contains(kind)).count(), 32, "{kind}: {reasons:?}");
    }
}

#[test]
fn a_move_advances_only_on_reports_of_the_same_move() {
    let (mut map, mut obs, mut heralds) = two_orders_one_full();
    let p = PlannedMove { shard: 40, from: 1, to: 2, keys: 10, bytes: 1040 };
    apply(&mut map, MapChange::PlanMoves { moves: vec![p] }, "test");
    apply(&mut map, MapChange::StartMove { shard: 40, to: 2, keys: 10, bytes: 1040 }, "test");
    let id = map.moves[&40].id;
    // The destination reports a converged pull, but of an earlier move: no freeze.
    heralds.reports.get_mut(&1).unwrap().tracking.insert(40, id);
    let stale = IncomingReport { move_id: id - 1, converged: true, pulling: true, ..Default::default() };
    heralds.reports.get_mut(&2).unwrap().incoming.insert(40, stale);
    obs.shard_reports = heralds.reports.clone();
    assert!(commits(&plan(&map, &obs)).iter().all(|(c, _)| !matches!(c, MapChange::FreezeMove { .. })));
    // Its own move's report does.
    let mine = IncomingReport { move_id: id, converged: true, pulling: true, ..Default::default() };
    heralds.reports.get_mut(&2).unwrap().incoming.insert(40, mine);
    obs.shard_reports = heralds.reports.clone();
    assert!(commits(&plan(&map, &obs)).iter().any(|(c, _)| *c == MapChange::FreezeMove { shard: 40, id }));
    apply(&mut map, MapChange::FreezeMove { shard: 40, id }, "test");
    // No switch before the seal; no finish before the destination serves.
    assert!(commits(&plan(&map, &obs)).iter().all(|(c, _)| !matches!(c, MapChange::SwitchMove { .. })));
    let sealed = IncomingReport { move_id: id, sealed: true, ..Default::default() };
    heralds.reports.get_mut(&2).unwrap().incoming.insert(40, sealed);
    heralds.reports.get_mut(&1).unwrap().owned.remove(&40);
    obs.shard_reports = heralds.reports.clone();
    apply(&mut map, MapChange::SwitchMove { shard: 40, id }, "test");
    assert!(commits(&plan(&map, &obs)).iter().all(|(c, _)| !matches!(c, MapChange::FinishMove { .. })));
    // There is no way back after the switch.
    let cmd = StationCommand {
        expected_epoch: map.epoch,
        at_unix_ms: 0,
        by: 1,
        change: MapChange::AbortMove { shard: 40, id },
        reason: String::new(),
    };
    assert!(matches!(map.apply(&cmd), StationResponse::Rejected { .. }));
    run_cluster(&mut map, &mut obs, &mut heralds);
    assert_eq!(map.shard_orders[40], 2);
    assert!(map.moves.is_empty());
}

#[test]
fn a_frozen_move_cancelled_gives_the_shard_back_without_deleting_it() {
    let (mut map, mut obs, mut heralds) = two_orders_one_full();
    apply(&mut map, MapChange::StartMove { shard: 3, to: 2, keys: 10, bytes: 1 << 20 }, "test");
    // Copy, converge and freeze; the source releases; the destination never seals.
    run_cluster_with(&mut map, &mut obs, &mut heralds, false);
    assert_eq!(map.moves[&3].phase, MovePhase::Frozen);
    assert!(!heralds.reports[&1].owned.contains(&3), "the source released it");
    assert!(heralds.servers(3).is_empty(), "nobody serves a frozen shard");
    apply(&mut map, MapChange::CancelMoves, "operator: radiantctl rebalance --cancel");
    obs.shard_reports = heralds.reports.clone();
    let drops_source = plan(&map, &obs).iter().any(|a| {
        matches!(a, Action::Herald { order: 1, cmd: HeraldCmd::Move { step: MoveStep::Drop, shard: 3, .. }, .. })
    });
    assert!(!drops_source, "the source's copy is the only one: never dropped while the map gives it the shard");
    run_cluster(&mut map, &mut obs, &mut heralds);
    let r1 = &heralds.reports[&1];
    assert!(r1.owned.contains(&3) && r1.nonempty.contains(&3) && !r1.tracking.contains_key(&3));
    assert!(!heralds.reports[&2].incoming.contains_key(&3), "the destination's copy is dropped");
    assert_eq!(map.shard_orders[3], 1);
}

#[test]
fn an_order_formed_later_gets_its_share_by_itself_with_auto_rebalance() {
    let (mut map, mut obs, mut heralds) = two_orders_one_full();
    let reasons = {
        apply(&mut map, MapChange::Set { name: "auto_rebalance".into(), value: "true".into() }, "test");
        run_cluster(&mut map, &mut obs, &mut heralds)
    };
    assert!(reasons[0].contains("orders serve 0 to 64 shards: move 32 shards"), "{:?}", &reasons[..2]);
    assert_eq!((map.shard_count(1), map.shard_count(2)), (32, 32));
}

#[test]
fn a_fracture_doubles_the_shards_on_their_orders_and_a_consolidation_brings_siblings_together_first() {
    let (mut map, mut obs, mut heralds) = two_orders_one_full();
    let sizes = super::moves::shard_sizes(&map, &obs).unwrap();
    let plan = rebalance_plan(&map, &sizes);
    apply(&mut map, MapChange::PlanMoves { moves: plan }, "rebalance");
    run_cluster(&mut map, &mut obs, &mut heralds);
    let before = map.shard_orders.clone();
    assert_eq!((map.shard_count(1), map.shard_count(2)), (32, 32));

    // Refused while moves are under way, and for any count but double or half.
    let mut busy = map.clone();
    apply(&mut busy, MapChange::StartMove { shard: 1, to: 2, keys: 0, bytes: 0 }, "test");
    for (m, to) in [(&busy, 128), (&map, 96)] {
        let cmd = StationCommand {
            expected_epoch: m.epoch,
            at_unix_ms: 0,
            by: 1,
            change: MapChange::BeginReshard { to },
            reason: String::new(),
        };
        assert!(matches!(m.clone().apply(&cmd), StationResponse::Rejected { .. }), "to {to}");
    }

    apply(&mut map, MapChange::BeginReshard { to: 128 }, "operator: radiantctl fracture");
    let reasons = run_cluster(&mut map, &mut obs, &mut heralds);
    assert_eq!(map.shards, 128);
    assert!(map.reshard.is_none() && map.moves.is_empty(), "no data crossed orders");
    assert!((0..128).all(|c| map.shard_orders[c] == before[c % 64]), "children stay on their parent's order");
    assert!(heralds.reports.values().all(|r| r.modulus == Some(128)));
    assert_eq!((heralds.reports[&1].owned.len(), heralds.reports[&2].owned.len()), (64, 64));
    assert!(reasons.iter().any(|r| r.contains("every order cuts its tables by 128 shards")), "{reasons:?}");

    // Halving: pairs s, s+64 on different orders are moved together first.
    let apart = (0..64).filter(|s| map.shard_orders[*s] != map.shard_orders[*s + 64]).count();
    assert_eq!(apart, 0, "after a fracture every pair is together");
    let sizes = super::moves::shard_sizes(&map, &obs).unwrap();
    let mut uneven = rebalance_plan(&map, &sizes);
    assert!(uneven.is_empty(), "64 + 64 is balanced");
    // Move a few children apart by hand, then consolidate.
    uneven =
        vec![PlannedMove { shard: 70, from: map.shard_orders[70], to: 3 - map.shard_orders[70], keys: 0, bytes: 0 }];
    apply(&mut map, MapChange::PlanMoves { moves: uneven }, "test");
    run_cluster(&mut map, &mut obs, &mut heralds);
    assert_ne!(map.shard_orders[6], map.shard_orders[70]);
    apply(&mut map, MapChange::BeginReshard { to: 64 }, "operator: radiantctl consolidate");
    let reasons = run_cluster(&mut map, &mut obs, &mut heralds);
    assert!(reasons.iter().any(|r| r.contains("first put 1 pairs of siblings on one order")), "{reasons:?}");
    assert_eq!(map.shards, 64);
    assert!(map.reshard.is_none());
    assert!(heralds.reports.values().all(|r| r.modulus == Some(64)));
    assert_eq!(heralds.reports[&1].owned.len() + heralds.reports[&2].owned.len(), 64);
}
