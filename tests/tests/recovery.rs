//! Crashes: the bondsmith, a satellite, every node. Nothing here needs an operator command.

use radiant_tests::Cluster;
use radiant_tests::status;

#[test]
fn killing_the_bondsmith_moves_the_coordinator_and_join_still_works() {
    radiant_tests::init_logging();
    let mut c = Cluster::start(4);
    c.bootstrap(&[0, 1, 2]);
    let s = c.wait_status(0, "a bondsmith", |s| status::bondsmith(s).is_some());
    let old = status::bondsmith(&s).unwrap();
    let old_idx = c.nodes.iter().position(|n| n.name == old).unwrap();
    let survivor = (0..3).find(|&i| i != old_idx).unwrap();

    tracing::info!("--- kill -9 the bondsmith {old}");
    c.nodes[old_idx].kill9();
    let s = c.wait_status(survivor, "a new bondsmith", |s| status::bondsmith(s).is_some_and(|b| b != old));
    let new = status::bondsmith(&s).unwrap();
    tracing::info!("--- {new} took over; join r4 through it");
    let joined = c.join(&[survivor], &[3]);
    assert_eq!(joined[0]["result"], "joined");
    let s = c.wait_status(survivor, "r4 spare and the old bondsmith down", |s| {
        status::state(s, "r4") == "spare" && status::state(s, &old) == "down"
    });
    assert_eq!(status::bondsmith(&s).unwrap(), new);
    let events = c.ctl_at(&c.nodes[survivor].addr, &["events", "--limit", "0"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("station leadership moved from"), "{events}");

    tracing::info!("--- the old bondsmith restarts and is back with no command");
    c.nodes[old_idx].start();
    c.wait_status(survivor, "old bondsmith up again", |s| status::state(s, &old) == "station");
}

#[test]
fn restarted_nodes_come_back_alone() {
    radiant_tests::init_logging();
    let mut c = Cluster::start(5);
    let b = c.bootstrap(&[0, 1, 2]);
    let cluster_id = b["cluster_id"].as_str().unwrap().to_string();
    c.join(&[0, 1, 2], &[3, 4]);
    c.wait_status(0, "5 nodes", |s| status::node_count(s) == 5);

    tracing::info!("--- kill -9 satellite r4: marked down");
    c.nodes[3].kill9();
    c.wait_status(0, "r4 down", |s| status::state(s, "r4") == "down");
    tracing::info!("--- restart r4: it relaunches phone-home and is back");
    c.nodes[3].start();
    c.wait_status(0, "r4 spare again", |s| status::state(s, "r4") == "spare");

    tracing::info!("--- kill -9 every node, start them all again");
    let before = c.status_via(0).unwrap();
    for n in &mut c.nodes {
        n.kill9();
    }
    for n in &mut c.nodes {
        n.start();
    }
    let after = c.wait_status(4, "everybody back with a bondsmith", |s| {
        status::bondsmith(s).is_some() && s["nodes"].as_array().unwrap().iter().all(|n| n["state"] != "down")
    });
    assert_eq!(after["cluster_id"], cluster_id.as_str());
    let ids = |s: &serde_json::Value| {
        let mut v: Vec<String> = s["nodes"].as_array().unwrap().iter().map(|n| n["id"].to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&before), ids(&after), "same nodes after a full restart");
    assert!(after["epoch"].as_u64().unwrap() >= before["epoch"].as_u64().unwrap());
}

#[test]
fn sigterm_stops_a_node_cleanly() {
    radiant_tests::init_logging();
    let mut c = Cluster::start(1);
    c.bootstrap(&[0]);
    assert_eq!(c.nodes[0].terminate(), Some(0), "{}", c.logs());
    c.nodes[0].start();
    c.wait_status(0, "single-node station back", |s| status::bondsmith(s).is_some());
}
