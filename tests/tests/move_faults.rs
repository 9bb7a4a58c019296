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

#[test]
fn moves_finish_when_the_destination_herald_the_source_herald_and_the_bondsmith_die_mid_copy() {
    radiant_tests::init_logging();
    // A station of three that serves no shards; two orders of three.
    let mut c = Cluster::start(9);
    c.ctl_ok(&["bootstrap", "--station", &c.addrs(&[0, 1, 2]).join(","), "--shards", "8"]);
    c.ctl_ok(&["set", "auto_rebalance", "false"]);
    c.join(&[0, 1, 2], &[3, 4, 5]);
    c.wait_status(0, "order 1 serving every shard", |s| s["orders"][0]["shards"] == 8);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = c.client();
    tracing::info!("--- 16 MiB in 8 shards");
    let value = |i: usize| format!("{i:08}").into_bytes().repeat(256 * 1024 / 8);
    rt.block_on(async {
        for i in 0..64 {
            client.put(format!("pre-{i}").as_bytes(), &value(i)).await.unwrap();
        }
    });
    c.join(&[0, 1, 2], &[6, 7, 8]);
    c.wait_status(0, "order 2 with a herald", |s| status::herald(s, 2).is_some());

    let everyone: Vec<usize> = (0..9).collect();
    let load = Workload::start(c.addrs(&everyone), workload::seed(0x5eed_7008), 4, 20);
    wait_until(DEADLINE, "some history before the moves", || (load.completed() >= 50).then_some(()));
    c.ctl_ok(&["set", "move_rate_mib", "1"]);
    c.ctl_ok(&["set", "move_concurrency", "1"]);
    c.ctl_ok(&["rebalance", "--no-wait"]);

    for role in ["destination herald", "source herald", "bondsmith"] {
        let (shard, from, to) = wait_until(DEADLINE, "a shard being copied", || copying(&c, 0));
        let s = c.status_via(0).expect("status");
        let victim = match role {
            "destination herald" => status::herald(&s, to),
            "source herald" => status::herald(&s, from),
            _ => status::bondsmith(&s),
        }
        .expect("someone to kill");
        tracing::info!("--- kill -9 the {role} {victim} while shard {shard} is copied; restart it");
        let i = c.index_of(&victim);
        c.nodes[i].kill9();
        c.nodes[i].start();
        let alive = if i == 0 { 1 } else { 0 };
        c.wait_status(alive, "every node up again", |s| {
            s["nodes"].as_array().is_some_and(|n| n.iter().all(|n| n["state"] != "down"))
        });
    }

    tracing::info!("--- unthrottled: the moves finish");
    c.ctl_ok(&["set", "move_rate_mib", "0"]);
    c.wait_status(0, "4 shards each, no move under way", |s| {
        s["orders"].as_array().is_some_and(|o| o.iter().all(|o| o["shards"] == 4))
            && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    let completed = load.finish(c.addrs(&everyone), 150, || c.logs());
    tracing::info!(completed, "--- history linearizable");
    rt.block_on(async {
        for i in 0..64 {
            let got = client.get(format!("pre-{i}").as_bytes(), false).await.unwrap();
            assert!(got.as_deref() == Some(value(i).as_slice()), "pre-{i} after the moves");
        }
    });
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
    let mut c = Cluster::start(9);
    c.ctl_ok(&["bootstrap", "--station", &c.addrs(&[0, 1, 2]).join(","), "--shards", "32"]);
    c.ctl_ok(&["set", "auto_rebalance", "false"]);
    c.ctl_ok(&["set", "move_concurrency", "1"]);
    // About a second of copying per move, so that moves are left for every kill.
    c.ctl_ok(&["set", "move_rate_mib", "1"]);
    c.join(&[0, 1, 2], &[3, 4, 5]);
    c.wait_status(0, "order 1 serving every shard", |s| s["orders"][0]["shards"] == 32);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = c.client();
    let value = |i: usize| format!("{i:08}").into_bytes().repeat(256 * 1024 / 8);
    rt.block_on(async {
        for i in 0..128 {
            client.put(format!("pre-{i}").as_bytes(), &value(i)).await.unwrap();
        }
    });
    c.join(&[0, 1, 2], &[6, 7, 8]);
    c.wait_status(0, "order 2 with a herald", |s| status::herald(s, 2).is_some());
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
        let s = c.status_via(3).expect("status");
        let victim = match role {
            "destination herald" => status::herald(&s, to),
            "source herald" => status::herald(&s, from),
            _ => status::bondsmith(&s),
        }
        .expect("someone to kill");
        tracing::info!("--- kill -9 the {role} {victim} with shard {shard} {phase}; restart it");
        let i = c.index_of(&victim);
        c.nodes[i].kill9();
        c.nodes[i].start();
        c.wait_status(3, "every node up again", |s| {
            s["nodes"].as_array().is_some_and(|n| n.iter().all(|n| n["state"] != "down"))
        });
    }
    c.ctl_ok(&["set", "move_rate_mib", "0"]);
    c.wait_status(3, "16 shards each, no move under way", |s| {
        s["orders"].as_array().is_some_and(|o| o.iter().all(|o| o["shards"] == 16))
            && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    let completed = load.finish(c.addrs(&everyone), 150, || c.logs());
    tracing::info!(completed, "--- history linearizable");
    rt.block_on(async {
        for i in 0..128 {
            let got = client.get(format!("pre-{i}").as_bytes(), false).await.unwrap();
            assert!(got.as_deref() == Some(value(i).as_slice()), "pre-{i} after the moves");
        }
    });
}
