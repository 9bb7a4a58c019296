//! Shard moves survive the death of every party: the destination herald, the source herald
//! and the bondsmith are each killed while a shard is being copied (the copy slowed down by
//! `move_rate_mib` so the kill lands mid-copy), while one is frozen and right after one
//! switched; the moves resume or finish, clients keep a linearizable history, and every
//! acknowledged write is there afterwards.

use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::status;
use radiant_tests::wait_until;
use radiant_tests::workload;
use radiant_tests::workload::Workload;
use serde_json::Value;

/// The move being copied now, with some bytes done: `(shard, from, to)`.
fn copying(c: &Cluster, via: usize) -> Option<(u64, u64, u64)> {
    let out = c.ctl_at(&c.nodes[via].addr, &["moves"]);
    let m: Value = serde_json::from_slice(&out.stdout).ok()?;
    m["moves"]
        .as_array()?
        .iter()
        .find(|m| m["phase"] == "copying" && m["bytes_done"].as_u64() > Some(0))
        .map(|m| (m["shard"].as_u64().unwrap_or(0), m["from"].as_u64().unwrap_or(0), m["to"].as_u64().unwrap_or(0)))
}

/// A value of 256 KiB that names its key's number.
fn value(i: usize) -> Vec<u8> {
    format!("{i:08}").into_bytes().repeat(256 * 1024 / 8)
}

/// A station of three that serves no shards (nodes 0-2), order 1 (nodes 3-5) serving
/// `shards` shards that hold `keys` values of 256 KiB, then order 2 (nodes 6-8) with a herald;
/// `auto_rebalance` off, one move at a time at `move_rate_mib` 1.
fn two_orders(shards: u32, keys: usize) -> (Cluster, tokio::runtime::Runtime) {
    let c = Cluster::start(9);
    c.ctl_ok(&["bootstrap", "--station", &c.addrs(&[0, 1, 2]).join(","), "--shards", &shards.to_string()]);
    c.ctl_ok(&["set", "auto_rebalance", "false"]);
    c.ctl_ok(&["set", "move_concurrency", "1"]);
    // About a second of copying per move, so that the kills land while moves run.
    c.ctl_ok(&["set", "move_rate_mib", "1"]);
    c.join(&[0, 1, 2], &[3, 4, 5]);
    c.wait_status(0, "order 1 serving every shard", |s| s["orders"][0]["shards"] == shards);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = c.client();
    tracing::info!("--- {keys} values of 256 KiB in {shards} shards");
    rt.block_on(async {
        for i in 0..keys {
            // Writing the same value again is harmless, so a write whose outcome is unknown
            // (nine nodes on two cores can cost the herald its leadership) is written again,
            // until the deadline.
            let key = format!("pre-{i}");
            let end = std::time::Instant::now() + radiant_tests::DEADLINE;
            while let Err(e) = client.put(key.as_bytes(), &value(i)).await {
                assert!(std::time::Instant::now() < end, "loading {key}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    });
    c.join(&[0, 1, 2], &[6, 7, 8]);
    c.wait_status(0, "order 2 with a herald", |s| status::herald(s, 2).is_some());
    (c, rt)
}

/// Kills `role` (of the move from `from` to `to`) and restarts it; waits until every node is
/// up again, reading the status through node `via`.
fn kill_and_restart(c: &mut Cluster, role: &str, from: u64, to: u64, via: usize, what: &str) {
    // One status call can fail while a node killed a moment ago restarts, or the station
    // elects: wait for an answer.
    let s = c.wait_status(via, "a status answer", |_| true);
    let victim = match role {
        "destination herald" => status::herald(&s, to),
        "source herald" => status::herald(&s, from),
        _ => status::bondsmith(&s),
    }
    .expect("someone to kill");
    tracing::info!("--- kill -9 the {role} {victim} {what}; restart it");
    let i = c.index_of(&victim);
    c.nodes[i].kill9();
    c.nodes[i].start();
    let via = if i == via { (via + 1) % c.nodes.len() } else { via };
    c.wait_status(via, "every node up again", |s| {
        s["nodes"].as_array().is_some_and(|n| n.iter().all(|n| n["state"] != "down"))
    });
}

/// Every value written by [`two_orders`] reads back.
fn check_values(c: &Cluster, rt: &tokio::runtime::Runtime, keys: usize) {
    let client = c.client();
    rt.block_on(async {
        for i in 0..keys {
            let got = client.get(format!("pre-{i}").as_bytes(), false).await.unwrap();
            assert!(got.as_deref() == Some(value(i).as_slice()), "pre-{i} after the moves");
        }
    });
}

#[test]
fn moves_finish_when_the_destination_herald_the_source_herald_and_the_bondsmith_die_mid_copy() {
    radiant_tests::init_logging();
    let (mut c, rt) = two_orders(8, 64);
    let everyone: Vec<usize> = (0..9).collect();
    let load = Workload::start(c.addrs(&everyone), workload::seed(0x5eed_7008), 4, 20);
    wait_until(DEADLINE, "some history before the moves", || (load.completed() >= 50).then_some(()));
    c.ctl_ok(&["rebalance", "--no-wait"]);

    for role in ["destination herald", "source herald", "bondsmith"] {
        let (shard, from, to) = wait_until(DEADLINE, "a shard being copied", || copying(&c, 0));
        kill_and_restart(&mut c, role, from, to, 0, &format!("while shard {shard} is copied"));
    }

    tracing::info!("--- unthrottled: the moves finish");
    c.ctl_ok(&["set", "move_rate_mib", "0"]);
    c.wait_status(0, "4 shards each, no move under way", |s| {
        s["orders"].as_array().is_some_and(|o| o.iter().all(|o| o["shards"] == 4))
            && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    let completed = load.finish(c.addrs(&everyone), 150, || c.logs());
    tracing::info!(completed, "--- history linearizable");
    check_values(&c, &rt, 64);
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let kinds: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "finish_move").count(), 4, "{kinds:?}");
}

/// Polls the bondsmith's moves every few milliseconds through any of `addrs` until a move is
/// in `phase`; returns `(shard, from, to)`.
fn wait_for_phase(rt: &tokio::runtime::Runtime, addrs: &[String], phase: &str) -> (u32, u64, u64) {
    rt.block_on(async {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            for addr in addrs {
                let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else { continue };
                let mut client = radiant_proto::station_client::StationClient::new(ep.connect_lazy());
                if let Ok(m) = client.moves(radiant_proto::MovesRequest {}).await
                    && let Some(m) = m.into_inner().moves.into_iter().find(|m| m.phase == phase)
                {
                    return (m.shard, m.from, m.to);
                }
                break;
            }
            assert!(tokio::time::Instant::now() < end, "no move reached phase {phase} in {DEADLINE:?}");
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    })
}

#[test]
fn moves_finish_when_each_party_dies_with_a_shard_frozen_or_just_switched() {
    radiant_tests::init_logging();
    let (mut c, rt) = two_orders(32, 128);
    let everyone: Vec<usize> = (0..9).collect();
    let load = Workload::start(c.addrs(&everyone), workload::seed(0x5eed_7009), 4, 20);
    wait_until(DEADLINE, "some history before the moves", || (load.completed() >= 50).then_some(()));
    c.ctl_ok(&["rebalance", "--no-wait"]);

    let station = c.addrs(&[0, 1, 2]);
    for (phase, role) in [
        ("frozen", "destination herald"),
        ("switched", "source herald"),
        ("frozen", "bondsmith"),
        ("switched", "destination herald"),
        ("frozen", "source herald"),
        ("switched", "bondsmith"),
    ] {
        let (shard, from, to) = wait_for_phase(&rt, &station, phase);
        kill_and_restart(&mut c, role, from, to, 3, &format!("with shard {shard} {phase}"));
    }
    c.ctl_ok(&["set", "move_rate_mib", "0"]);
    c.wait_status(3, "16 shards each, no move under way", |s| {
        s["orders"].as_array().is_some_and(|o| o.iter().all(|o| o["shards"] == 16))
            && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    let completed = load.finish(c.addrs(&everyone), 150, || c.logs());
    tracing::info!(completed, "--- history linearizable");
    check_values(&c, &rt, 128);
}
