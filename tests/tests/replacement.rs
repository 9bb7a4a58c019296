//! Recovery that changes the cluster: an order member that dies for good is replaced by a
//! spare with no operator command (learner, catch-up, one joint membership change), while
//! clients keep reading and writing; the replacements end up holding every acknowledged write.

use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::status;
use radiant_tests::wait_until;
use radiant_tests::workload;
use radiant_tests::workload::Workload;

/// Kills `victim` for good and waits until a spare has taken its place in order 1.
fn kill_and_wait_for_replacement(c: &mut Cluster, victim: &str) -> String {
    tracing::info!("--- kill -9 {victim} for good");
    let i = c.index_of(victim);
    c.nodes[i].kill9();
    let s = c.wait_status(0, &format!("{victim} replaced in order 1"), |s| {
        let members = status::order_nodes(s, 1, "members");
        members.len() == 3
            && !members.iter().any(|m| m == victim)
            && status::order_nodes(s, 1, "retired").iter().any(|r| r == victim)
            && status::order_nodes(s, 1, "learners").is_empty()
    });
    let members = status::order_nodes(&s, 1, "members");
    tracing::info!(?members, "--- {victim} replaced");
    members.into_iter().find(|m| !m.is_empty()).unwrap_or_default()
}

#[test]
fn dead_members_are_replaced_and_the_replacements_hold_every_acknowledged_write() {
    radiant_tests::init_logging();
    // A station of one (node 0) and five satellites: one order of three and two spares.
    let mut c = Cluster::start(6);
    c.bootstrap(&[0]);
    c.join(&[0], &[1, 2, 3, 4, 5]);
    let s = c.wait_status(0, "an order with a herald and every shard placed", |s| {
        status::herald(s, 1).is_some() && s["shards"]["assigned"] == 64
    });
    let original = status::order_nodes(&s, 1, "members");
    assert_eq!(original.len(), 3, "{s}");
    let spares: Vec<String> = (1..6).map(|i| c.nodes[i].name.clone()).filter(|n| !original.contains(n)).collect();
    assert!(spares.iter().all(|n| status::state(&s, n) == "spare"), "{s}");

    tracing::info!("--- replace_after_ms set low through radiantctl set");
    let set = c.ctl_ok(&["set", "replace_after_ms", "500"]);
    assert_eq!(set["setting"]["value"], "500", "{set}");

    let everyone = c.addrs(&[0, 1, 2, 3, 4, 5]);
    let load = Workload::start(everyone, workload::seed(0x5eed_6006), 4, 20);
    wait_until(DEADLINE, "some history before the first fault", || (load.completed() >= 100).then_some(()));

    kill_and_wait_for_replacement(&mut c, &original[0]);
    kill_and_wait_for_replacement(&mut c, &original[1]);

    tracing::info!("--- kill -9 the last original member {}: only the replacements are left", original[2]);
    let last = c.index_of(&original[2]);
    c.nodes[last].kill9();
    c.wait_status(0, "a herald among the replacements", |s| {
        status::herald(s, 1).is_some_and(|h| spares.contains(&h)) && status::state(s, &original[2]) == "down"
    });
    let before = load.completed();
    wait_until(DEADLINE, "history served by the replacements alone", || {
        (load.completed() >= before + 100).then_some(())
    });

    let survivors: Vec<usize> = spares.iter().map(|n| c.index_of(n)).chain([0]).collect();
    let completed = load.finish(c.addrs(&survivors), 200, || c.logs());
    tracing::info!(completed, "--- history linearizable, every acknowledged write read back");

    let s = c.status_via(0).expect("status");
    let members = status::order_nodes(&s, 1, "members");
    assert!(spares.iter().all(|n| members.contains(n)), "both spares are members: {s}");
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let reasons: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    for victim in &original[..2] {
        assert!(reasons.iter().any(|r| r.contains(&format!("{victim} has been down"))), "{reasons:?}");
    }
    assert!(reasons.iter().any(|r| r.contains("caught up with order 1")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("operator: radiantctl set replace_after_ms 500")), "{reasons:?}");

    tracing::info!("--- events --explain tells why {} is where it is", original[0]);
    let chain = c.ctl_ok(&["events", "--explain", "--node", &original[0]]);
    let kinds: Vec<&str> = chain.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["register", "form_order", "mark_down", "begin_replace", "complete_replace"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let order = c.ctl_ok(&["events", "--explain", "--order", "1"]);
    let kinds: Vec<&str> = order.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["start_replica", "add_learner", "set_voters", "complete_replace"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(order.as_array().unwrap().iter().all(|e| e["orders"].as_array().unwrap().contains(&1.into())), "{order}");
}

#[test]
fn settings_are_listed_changed_through_the_log_and_bad_ones_refused() {
    radiant_tests::init_logging();
    let c = Cluster::start(1);
    c.bootstrap(&[0]);
    let list = c.ctl_ok(&["settings"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "down_after_ms",
            "replace_after_ms",
            "auto_replace",
            "snapshot_rate_mib",
            "move_rate_mib",
            "move_concurrency",
            "auto_rebalance"
        ]
    );
    assert!(list.as_array().unwrap().iter().all(|s| s["value"] == s["default"] && s["meaning"] != ""), "{list}");
    let epoch = c.ctl_ok(&["status"])["epoch"].as_u64().unwrap();

    let set = c.ctl_ok(&["set", "auto_replace", "false"]);
    assert_eq!(set["setting"]["value"], "false");
    assert!(set["epoch"].as_u64().unwrap() > epoch, "a change moves the epoch: {set}");
    let list = c.ctl_ok(&["settings"]);
    let auto = list.as_array().unwrap().iter().find(|s| s["name"] == "auto_replace").unwrap();
    assert_eq!((auto["value"].as_str(), auto["default"].as_str()), (Some("false"), Some("true")));

    for (args, says) in [
        (["set", "no_such_setting", "1"], "unknown setting"),
        (["set", "down_after_ms", "10"], "bad value"),
        (["set", "auto_replace", "maybe"], "bad value"),
    ] {
        let out = c.ctl_at(&c.nodes[0].addr, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.contains(says) && err.lines().count() == 1, "{args:?}: {err}");
    }
    let after = c.ctl_ok(&["status"])["epoch"].as_u64().unwrap();
    assert_eq!(after, set["epoch"].as_u64().unwrap(), "refused changes change nothing");
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    assert!(
        events.as_array().unwrap().iter().any(|e| e["action"] == "set auto_replace = false"
            && e["reason"] == "operator: radiantctl set auto_replace false"),
        "{events}"
    );

    // The snapshot rate reaches the node's limiter with the next heartbeat.
    c.ctl_ok(&["set", "snapshot_rate_mib", "25"]);
    radiant_tests::wait_until(radiant_tests::DEADLINE, "the node to apply the snapshot rate", || {
        c.nodes[0]
            .log()
            .lines()
            .any(|l| l.contains("bulk transfer rate limit changed") && l.ends_with("25"))
            .then_some(())
    });
}

#[test]
fn a_replacement_completes_when_the_herald_and_the_bondsmith_die_in_the_middle() {
    radiant_tests::init_logging();
    // A station of three that serves no shards, an order of three and one spare.
    let mut c = Cluster::start(7);
    c.bootstrap(&[0, 1, 2]);
    c.join(&[0, 1, 2], &[3, 4, 5, 6]);
    let s = c.wait_status(0, "an order with a herald and every shard placed", |s| {
        status::herald(s, 1).is_some() && s["shards"]["assigned"] == 64
    });
    let original = status::order_nodes(&s, 1, "members");
    let herald = status::herald(&s, 1).unwrap();
    let victim = original.iter().find(|m| **m != herald).unwrap().clone();
    let spare = (3..7).map(|i| c.nodes[i].name.clone()).find(|n| !original.contains(n)).unwrap();
    c.ctl_ok(&["set", "replace_after_ms", "0"]);
    let client = c.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..100 {
            client.put(format!("before-{i}").as_bytes(), b"v").await.unwrap();
        }
    });

    tracing::info!("--- kill -9 {victim} for good; wait until its replacement has begun");
    let v = c.index_of(&victim);
    c.nodes[v].kill9();
    c.wait_status(0, "a replacement under way", |s| status::order_nodes(s, 1, "learners") == [spare.clone()]);

    let s = c.status_via(0).expect("status");
    let bondsmith = status::bondsmith(&s).unwrap();
    let herald = status::herald(&s, 1).unwrap();
    tracing::info!("--- kill -9 the herald {herald} and the bondsmith {bondsmith} mid-replacement, restart both");
    let (h, b) = (c.index_of(&herald), c.index_of(&bondsmith));
    c.nodes[h].kill9();
    if b != h {
        c.nodes[b].kill9();
    }
    c.nodes[h].start();
    if b != h {
        c.nodes[b].start();
    }

    let alive = (0..7).find(|&i| i != h && i != b && i != v).unwrap();
    let s = c.wait_status(alive, "the replacement completed", |s| {
        let members = status::order_nodes(s, 1, "members");
        members.len() == 3
            && members.contains(&spare)
            && !members.contains(&victim)
            && status::order_nodes(s, 1, "learners").is_empty()
            && status::herald(s, 1).is_some()
    });
    tracing::info!(members = ?status::order_nodes(&s, 1, "members"), "--- replaced");
    rt.block_on(async {
        for i in 0..100 {
            let v = client.get(format!("before-{i}").as_bytes(), false).await.unwrap();
            assert_eq!(v.as_deref(), Some(&b"v"[..]), "before-{i}");
        }
        client.put(b"after", b"v").await.unwrap();
    });
}

#[test]
fn a_member_whose_data_dir_is_wiped_comes_back_as_a_new_node_and_is_replaced() {
    radiant_tests::init_logging();
    // A station of one (node 0) and four satellites: one order of three and one spare.
    let mut c = Cluster::start(5);
    c.bootstrap(&[0]);
    c.join(&[0], &[1, 2, 3, 4]);
    let s = c.wait_status(0, "an order with a herald and every shard placed", |s| {
        status::herald(s, 1).is_some() && s["shards"]["assigned"] == 64
    });
    let original = status::order_nodes(&s, 1, "members");
    let herald = status::herald(&s, 1).unwrap();
    let victim = original.iter().find(|m| **m != herald).unwrap().clone();
    let spare = (1..5).map(|i| c.nodes[i].name.clone()).find(|n| !original.contains(n)).unwrap();
    let client = c.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..50 {
            client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
        }
    });

    tracing::info!("--- kill -9 {victim}, wipe its data dir, start it and join it again");
    let v = c.index_of(&victim);
    c.nodes[v].kill9();
    std::fs::remove_dir_all(c.nodes[v].dir.join("data")).unwrap();
    c.nodes[v].start();
    c.wait_ready(v);
    let joined = c.join(&[0], &[v]);
    assert_eq!(joined[0]["result"], "joined", "{joined}");

    let s = c.wait_status(0, "the wiped member replaced, and itself a spare", |s| {
        let members = status::order_nodes(s, 1, "members");
        members.contains(&spare)
            && !members.contains(&victim)
            && status::order_nodes(s, 1, "retired").contains(&victim)
            && status::state(s, &victim) == "spare"
    });
    tracing::info!(members = ?status::order_nodes(&s, 1, "members"), "--- replaced");
    rt.block_on(async {
        for i in 0..50 {
            assert_eq!(client.get(format!("k{i}").as_bytes(), false).await.unwrap().as_deref(), Some(&b"v"[..]));
        }
    });
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let reasons: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains(&format!("{victim} lost its data dir"))), "{reasons:?}");
    for n in &c.nodes {
        assert!(!n.log().contains("panicked"), "{} panicked:\n{}", n.name, n.log());
    }
}
