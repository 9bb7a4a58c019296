//! Shard moves with data: a cluster that grows after its first writes rebalances by moving
//! shards between orders while clients keep reading and writing, linearizably; a dry run
//! shows what will move and changes nothing; the move rate follows its setting.

use std::time::Duration;
use std::time::Instant;

use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::status;
use radiant_tests::wait_until;
use radiant_tests::workload;
use radiant_tests::workload::Workload;
use serde_json::Value;

/// Writes `n` keys `pre-{i}` with values of `size` bytes; returns the keys and values.
fn write_keys(rt: &tokio::runtime::Runtime, c: &Cluster, n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    let client = c.client();
    let rows: Vec<(String, Vec<u8>)> =
        (0..n).map(|i| (format!("pre-{i}"), format!("{i:08}").into_bytes().repeat(size / 8))).collect();
    rt.block_on(async {
        for (k, v) in &rows {
            client.put(k.as_bytes(), v).await.unwrap_or_else(|e| panic!("put {k}: {e}"));
        }
    });
    rows
}

/// Reads every row back through a fresh client.
fn check_keys(rt: &tokio::runtime::Runtime, c: &Cluster, rows: &[(String, Vec<u8>)]) {
    let client = c.client();
    rt.block_on(async {
        for (k, v) in rows {
            let got = client.get(k.as_bytes(), false).await.unwrap_or_else(|e| panic!("get {k}: {e}"));
            assert!(got.as_deref() == Some(v.as_slice()), "{k} after the moves: {:?} bytes", got.map(|g| g.len()));
        }
    });
}

fn reasons(c: &Cluster) -> Vec<String> {
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    events.as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap_or_default().to_string()).collect()
}

fn order_shards(s: &Value) -> Vec<u64> {
    s["orders"].as_array().map(|o| o.iter().map(|o| o["shards"].as_u64().unwrap_or(0)).collect()).unwrap_or_default()
}

#[test]
fn a_later_order_takes_half_the_shards_with_their_data_under_a_linearizable_history() {
    radiant_tests::init_logging();
    let c = Cluster::start(6);
    c.bootstrap(&[0, 1, 2]);
    c.join(&[0, 1, 2], &[0, 1, 2]);
    c.wait_status(0, "one order serving every shard", |s| s["orders"][0]["shards"] == 64);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    tracing::info!("--- 640 keys of 2 KiB: every shard holds data");
    let rows = write_keys(&rt, &c, 640, 2048);

    let load = Workload::start(c.addrs(&[0, 1, 2, 3, 4, 5]), workload::seed(0x5eed_7007), 8, 40);
    wait_until(DEADLINE, "some history before the moves", || (load.completed() >= 100).then_some(()));

    tracing::info!("--- three more nodes join: a second order forms and half the shards move to it");
    c.join(&[0, 1, 2], &[3, 4, 5]);
    let s = c.wait_status(0, "two orders of 32 shards, no move under way", |s| {
        order_shards(s) == [32, 32] && s["shards"]["moving"] == 0 && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    let before = load.completed();
    wait_until(DEADLINE, "history after the moves", || (load.completed() >= before + 100).then_some(()));
    let completed = load.finish(c.addrs(&[0, 1, 2, 3, 4, 5]), 300, || c.logs());
    tracing::info!(completed, "--- history linearizable across 32 moves");
    check_keys(&rt, &c, &rows);

    let reasons = reasons(&c);
    for says in ["orders serve 0 to 64 shards: move 32 shards", "freeze it", "sealed shard", "copy is gone"] {
        assert!(reasons.iter().any(|r| r.contains(says)), "{says:?} missing from {reasons:?}");
    }
    // Why is this shard where it is? Its placement and its move.
    let moved = s["orders"][1]["id"].as_u64().unwrap();
    let shards = c.ctl_ok(&["shards"]);
    let shard = shards.as_array().unwrap().iter().find(|r| r["order"] == moved).unwrap()["shard"].as_u64().unwrap();
    let chain = c.ctl_ok(&["events", "--explain", "--shard", &shard.to_string()]);
    let kinds: Vec<&str> = chain.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["assign_shards", "start_move", "freeze_move", "switch_move", "finish_move"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

/// The sum of the bytes the journal's move starts name.
fn started_bytes(c: &Cluster) -> u64 {
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "start_move" && e["outcome"] == "applied")
        .filter_map(|e| {
            let action = e["action"].as_str()?;
            let bytes = action.rsplit(", ").next()?.strip_suffix(" bytes)")?;
            bytes.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn a_dry_run_changes_nothing_and_the_move_rate_follows_its_setting() {
    radiant_tests::init_logging();
    let c = Cluster::start(6);
    c.ctl_ok(&["bootstrap", "--station", &c.addrs(&[0, 1, 2]).join(","), "--shards", "4"]);
    c.ctl_ok(&["set", "auto_rebalance", "false"]);
    c.join(&[0, 1, 2], &[0, 1, 2]);
    c.wait_status(0, "one order serving every shard", |s| s["orders"][0]["shards"] == 4);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    tracing::info!("--- 24 MiB in 4 shards");
    let rows = write_keys(&rt, &c, 96, 256 * 1024);
    c.join(&[0, 1, 2], &[3, 4, 5]);
    let before = c.wait_status(0, "a second order with a herald", |s| {
        s["orders"].as_array().is_some_and(|o| o.len() == 2 && o.iter().all(|o| o["herald"].is_string()))
    });
    assert_eq!(order_shards(&before), [4, 0], "auto_rebalance is off: nothing moves by itself");

    let plan = c.ctl_ok(&["rebalance", "--dry-run"]);
    let moves = plan["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 2, "{plan}");
    let total = plan["total_bytes"].as_u64().unwrap();
    assert!(total > 10 << 20, "about half of 24 MiB: {plan}");
    assert!(moves.iter().all(|m| m["from"] == 1 && m["to"] == 2 && m["eta_s"].as_f64().unwrap() > 0.0), "{plan}");
    let after = c.status_via(0).unwrap();
    assert_eq!(after["moves"], before["moves"], "a dry run moves nothing");
    assert_eq!(order_shards(&after), [4, 0]);

    tracing::info!("--- move_rate_mib 1, then rebalance: the copy crawls");
    c.ctl_ok(&["set", "move_rate_mib", "1"]);
    c.ctl_ok(&["set", "move_concurrency", "1"]);
    let applied = c.ctl_ok(&["rebalance", "--no-wait"]);
    assert_eq!(applied["moves"].as_array().unwrap().len(), 2, "{applied}");
    let progress = |c: &Cluster| -> Option<u64> {
        let m = c.ctl_ok(&["moves"]);
        m["moves"].as_array()?.iter().find(|m| m["phase"] == "copying").and_then(|m| m["bytes_done"].as_u64())
    };
    let start = wait_until(DEADLINE, "a copy under way", || progress(&c).filter(|b| *b > 0));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let done = progress(&c).unwrap_or(start);
    let rate = (done - start) as f64 / t0.elapsed().as_secs_f64() / (1 << 20) as f64;
    tracing::info!(rate, "--- measured MiB/s at move_rate_mib = 1");
    assert!(rate < 2.5, "the move follows move_rate_mib = 1: {rate:.2} MiB/s");

    tracing::info!("--- move_rate_mib 0 (unlimited): the moves finish");
    c.ctl_ok(&["set", "move_rate_mib", "0"]);
    let t1 = Instant::now();
    c.wait_status(0, "two orders of 2 shards, no move under way", |s| {
        order_shards(s) == [2, 2] && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    tracing::info!(secs = t1.elapsed().as_secs_f64(), "--- finished once unthrottled");
    let moved = started_bytes(&c);
    let diff = (moved as f64 - total as f64).abs() / total as f64;
    assert!(diff <= 0.05, "the dry run said {total} bytes; the moves began with {moved}");
    check_keys(&rt, &c, &rows);
    let idle = c.ctl_ok(&["moves"]);
    assert!(idle["moves"].as_array().unwrap().is_empty() && idle["queued"].as_array().unwrap().is_empty(), "{idle}");
    let s = c.status_via(0).unwrap();
    assert_eq!(status::order_nodes(&s, 2, "members").len(), 3);
}

#[test]
fn a_fracture_under_load_and_a_consolidation_keep_every_key() {
    radiant_tests::init_logging();
    let c = Cluster::start(6);
    let s = c.full_cluster();
    assert_eq!(order_shards(&s), [32, 32]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let rows = write_keys(&rt, &c, 300, 64);
    let load = Workload::start(c.addrs(&[0, 1, 2, 3, 4, 5]), workload::seed(0x5eed_700a), 4, 20);
    wait_until(DEADLINE, "some history first", || (load.completed() >= 100).then_some(()));

    tracing::info!("--- fracture: 64 -> 128 shards under load");
    let f = c.ctl_ok(&["fracture"]);
    assert_eq!((f["from"].as_u64(), f["to"].as_u64()), (Some(64), Some(128)), "{f}");
    let s = c.wait_status(0, "128 shards", |s| s["shards"]["total"] == 128 && s["shards"]["resharding_to"].is_null());
    assert_eq!(order_shards(&s), [64, 64], "children stay on their parent's order: {s}");
    assert!(s["moves"].as_array().unwrap().is_empty(), "no data crossed orders");
    check_keys(&rt, &c, &rows);
    let scanned = rt.block_on(c.client().scan(b"pre-", 0, false)).unwrap();
    assert_eq!(scanned.len(), rows.len(), "a scan sees every key under the new count");

    tracing::info!("--- consolidate: 128 -> 64 shards under load");
    let before = load.completed();
    let cons = c.ctl_ok(&["consolidate"]);
    assert_eq!(cons["to"].as_u64(), Some(64), "{cons}");
    let s = c.wait_status(0, "64 shards", |s| s["shards"]["total"] == 64 && s["shards"]["resharding_to"].is_null());
    assert_eq!(order_shards(&s), [32, 32]);
    wait_until(DEADLINE, "writes go on", || (load.completed() >= before + 100).then_some(()));
    let completed = load.finish(c.addrs(&[0, 1, 2, 3, 4, 5]), 300, || c.logs());
    tracing::info!(completed, "--- history linearizable through both");
    check_keys(&rt, &c, &rows);
    let scanned = rt.block_on(c.client().scan(b"pre-", 0, false)).unwrap();
    assert_eq!(scanned.len(), rows.len());

    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let kinds: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["begin_reshard", "reshard_tables", "complete_reshard"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}
