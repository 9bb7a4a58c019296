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
        announced: BTreeMap::new(),
        last_seen: [(1, 9_000), (2, 9_000), (3, 9_000)].into_iter().collect(),
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
    assert_eq!(map.nodes[&4].state(), "spare");
    assert_eq!(map.nodes[&2].state(), "spare");
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
    assert_eq!(map.nodes[&3].state(), "down");
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
