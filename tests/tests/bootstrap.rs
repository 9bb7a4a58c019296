//! Bootstrap and join, end to end, with real processes.

use radiant_tests::Cluster;
use radiant_tests::status;

#[test]
fn bootstrap_three_join_three_then_both_again_are_idempotent() {
    radiant_tests::init_logging();
    let c = Cluster::start(6);

    tracing::info!("--- bootstrap the station on r1..r3");
    let b = c.bootstrap(&[0, 1, 2]);
    assert_eq!(b["created"], true);
    let cluster_id = b["cluster_id"].as_str().unwrap().to_string();
    assert!(!cluster_id.is_empty());

    tracing::info!("--- join r4..r6");
    let joined = c.join(&[0, 1, 2], &[3, 4, 5]);
    assert_eq!(joined.as_array().unwrap().len(), 3);
    assert!(joined.as_array().unwrap().iter().all(|r| r["result"] == "joined"), "{joined}");

    // Status through a satellite: it forwards to the station. The three satellites also form
    // an order that takes every shard; wait for that to settle.
    let s = c.wait_status(5, "6 nodes registered, one order serving every shard", |s| {
        status::node_count(s) == 6 && s["shards"]["assigned"] == 64
    });
    assert_eq!(s["cluster_id"], cluster_id.as_str());
    assert_eq!(s["station"].as_array().unwrap().len(), 3);
    let bondsmith = status::bondsmith(&s).expect("a bondsmith");
    assert!(["r1", "r2", "r3"].contains(&bondsmith.as_str()));
    let bondsmiths = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["roles"].as_array().unwrap().iter().any(|r| r == "bondsmith"))
        .count();
    assert_eq!(bondsmiths, 1);
    for name in ["r1", "r2", "r3"] {
        assert_eq!(status::state(&s, name), "station");
    }
    for name in ["r4", "r5", "r6"] {
        assert_eq!(status::state(&s, name), "member");
    }
    assert!(s["nodes"][0]["id"].is_string(), "node ids are decimal strings");
    assert!(s["epoch"].as_u64().unwrap() >= 5);
    assert_eq!(s["orders"].as_array().unwrap().len(), 1);
    assert_eq!(s["shards"]["total"], 64);

    tracing::info!("--- bootstrap and join again: nothing changes");
    let epoch = s["epoch"].as_u64().unwrap();
    let again = c.bootstrap(&[0, 1, 2]);
    assert_eq!(again["created"], false);
    assert_eq!(again["cluster_id"], cluster_id.as_str());
    let again = c.join(&[0, 1, 2], &[3, 4, 5]);
    assert!(again.as_array().unwrap().iter().all(|r| r["result"] == "already joined"), "{again}");
    tracing::info!("--- the journal records every action with a reason");
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let events = events.as_array().unwrap();
    // The cluster may still change by itself meanwhile (a loaded machine can cost an order its
    // herald, or a node a heartbeat), but nothing a bootstrap or a join causes may follow.
    let caused: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["epoch"].as_u64().unwrap() > epoch)
        .filter(|e| ["init", "register", "form_order", "assign_shards"].contains(&e["kind"].as_str().unwrap_or("")))
        .collect();
    assert!(caused.is_empty(), "idempotent commands change nothing: {caused:?}");
    // Every map change is there once, by its epoch; records of actions outside the map (a
    // replica started) carry the epoch they were decided at.
    let epochs: std::collections::BTreeSet<u64> = events.iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
    let last = epochs.iter().next_back().copied().unwrap_or(0);
    assert!(last >= epoch);
    assert_eq!(epochs, (1..=last).collect(), "{events:?}");
    assert!(events.iter().any(|e| e["action"].as_str().unwrap().contains("replica on")), "spawns are journaled");
    assert!(events.iter().all(|e| !e["reason"].as_str().unwrap().is_empty()));
    assert!(events.iter().any(|e| e["reason"].as_str().unwrap().contains("phoned home")));
}

#[test]
fn a_node_of_another_cluster_is_refused_and_nothing_changes() {
    radiant_tests::init_logging();
    let c = Cluster::start(4);
    let a = c.bootstrap(&[0, 1, 2]);
    let a_id = a["cluster_id"].as_str().unwrap().to_string();
    tracing::info!("--- r4 becomes a one-node cluster of its own");
    let b = c.bootstrap(&[3]);
    let b_id = b["cluster_id"].as_str().unwrap().to_string();
    assert_ne!(a_id, b_id);

    tracing::info!("--- joining r4 into the first cluster fails naming both ids");
    let station = c.addrs(&[0, 1, 2]).join(",");
    let out = c.ctl_at(&c.nodes[0].addr, &["join", "--bondsmith", &station, &c.nodes[3].addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&a_id) && err.contains(&b_id), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");

    tracing::info!("--- a station mixing both clusters is refused too");
    let mixed = c.addrs(&[0, 1, 3]).join(",");
    let out = c.ctl_at(&c.nodes[0].addr, &["bootstrap", "--station", &mixed]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&a_id) && err.contains(&b_id), "{err}");

    let s = c.status_via(0).unwrap();
    assert_eq!(status::node_count(&s), 3, "first cluster unchanged");
    let s = c.status_via(3).unwrap();
    assert_eq!(s["cluster_id"], b_id.as_str());
    assert_eq!(status::node_count(&s), 1, "second cluster unchanged");
}
