//! Shard move benchmark.
//!
//! Per run: a station of one (node 0), order 1 (nodes 1-3) serving 8 shards of 16 MiB each
//! (1 MiB values), then order 2 (nodes 4-6) joins with `auto_rebalance` off. With
//! `move_rate_mib = 0` and `move_concurrency = 1`, `rebalance --dry-run` is taken, then the
//! rebalance runs while 8 clients write 256-byte values and one prober per shard
//! writes to a key of that shard back to back. Reported per run:
//! - each move's copy throughput (start -> freeze, from the journal) and whole duration;
//! - each shard's unavailable window, from the journal (freeze applied -> the destination's
//!   acquire done) and as the prober saw it (the longest gap between two acknowledged writes);
//! - the writers' put p99 while idle (5 s before) and during the rebalance, and failed writes;
//! - the dry run's ETA against the real time from the first start to the last finish.
//!
//!   cargo build --release --workspace && target/release/bench-moves 5
//!
//! `bench-moves throughput MIB RUNS [VALUE_KIB]`: two shards of MIB MiB of VALUE_KIB values
//! (default 1024) on one order, a second order joins, and one shard moves with nothing else
//! running: the copy's MiB/s (start -> freeze).
//!
//! `BENCH_DEBUG=1` also prints the journal and every put slower than 200 ms to stderr.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use radiant_client::Options;
use radiant_tests::Cluster;
use radiant_tests::status;
use serde_json::Value;
use serde_json::json;

const SHARDS: u32 = 8;
const MIB_PER_SHARD: usize = 16;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Keys `prefix-{i}` grouped by shard, `per_shard` of each.
fn keys_by_shard(prefix: &str, per_shard: usize) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut i = 0u64;
    while out.len() < SHARDS as usize || out.values().any(|v| v.len() < per_shard) {
        let k = format!("{prefix}-{i}");
        let v = out.entry(radiant_proto::shard_of(k.as_bytes(), SHARDS)).or_default();
        if v.len() < per_shard {
            v.push(k);
        }
        i += 1;
    }
    out
}

/// Latencies (µs) of the writers' acknowledged puts, with when each started.
type Samples = Arc<Mutex<Vec<(Instant, u64)>>>;

fn run_once(run: usize) -> Value {
    let c = Cluster::start(7);
    c.ctl_ok(&["bootstrap", "--station", &c.nodes[0].addr, "--shards", &SHARDS.to_string()]);
    c.ctl_ok(&["set", "auto_rebalance", "false"]);
    c.ctl_ok(&["set", "move_rate_mib", "0"]);
    c.ctl_ok(&["set", "move_concurrency", "1"]);
    c.join(&[0], &[1, 2, 3]);
    c.wait_status(0, "order 1 serving every shard", |s| s["orders"][0]["shards"] == SHARDS);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let opts = Options { op_timeout: Duration::from_secs(10), rpc_timeout: Duration::from_secs(2) };
    let client = radiant_client::Client::new(c.addrs(&[0, 1, 2, 3]), opts.clone());
    let value = vec![7u8; 1 << 20];
    rt.block_on(async {
        let keys = keys_by_shard("load", MIB_PER_SHARD);
        let mut tasks = Vec::new();
        for ks in keys.into_values() {
            let (client, value) = (client.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                for k in ks {
                    client.put(k.as_bytes(), &value).await.expect("load");
                }
            }));
        }
        for t in tasks {
            t.await.expect("loader");
        }
    });
    c.join(&[0], &[4, 5, 6]);
    c.wait_status(0, "order 2 with a herald", |s| status::herald(s, 2).is_some());
    let everyone = c.addrs(&(0..7).collect::<Vec<_>>());
    let client = radiant_client::Client::new(everyone.clone(), opts);

    let dry_run = c.ctl_ok(&["rebalance", "--dry-run"]);
    let probe_keys = keys_by_shard("probe", 1);

    // Writers and probers.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let samples: Samples = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let (client, stop, failed, samples) = (client.clone(), stop.clone(), failed.clone(), samples.clone());
        tasks.push(rt.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                let key = format!("w{w}-{}", i % 500);
                match client.put(key.as_bytes(), &[1u8; 256]).await {
                    Ok(()) => {
                        let us = t.elapsed().as_micros() as u64;
                        if us > 200_000 && std::env::var("BENCH_DEBUG").is_ok() {
                            let unix = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_millis())
                                .unwrap_or(0);
                            eprintln!(
                                "slow put {us} us shard {} done at {unix}",
                                radiant_proto::shard_of(key.as_bytes(), SHARDS)
                            );
                        }
                        samples.lock().expect("samples").push((t, us))
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let gaps: Arc<Mutex<BTreeMap<u32, u64>>> = Arc::default();
    // Every shard is probed: the plan is made again when applied, from sizes the writers
    // have changed meanwhile, and may pick other shards of the same size.
    for s in probe_keys.keys() {
        let key = probe_keys[s][0].clone();
        let (client, stop, gaps, s) = (client.clone(), stop.clone(), gaps.clone(), *s);
        tasks.push(rt.spawn(async move {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if client.put(key.as_bytes(), b"p").await.is_ok() {
                    let gap = last.elapsed().as_micros() as u64;
                    let mut g = gaps.lock().expect("gaps");
                    let e = g.entry(s).or_default();
                    *e = (*e).max(gap);
                    last = Instant::now();
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(5));
    let rebalance_at = Instant::now();
    gaps.lock().expect("gaps").clear();
    let plan = c.ctl_ok(&["rebalance", "--no-wait"]);
    let moving: Vec<u32> =
        plan["moves"].as_array().expect("moves").iter().filter_map(|m| m["shard"].as_u64()).map(|s| s as u32).collect();
    c.wait_status(0, "4 shards each, no move under way", |s| {
        s["orders"].as_array().is_some_and(|o| o.iter().all(|o| o["shards"] == SHARDS / 2))
            && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    let done_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });

    let samples = samples.lock().expect("samples").clone();
    let p99 = |from: Instant, to: Instant| {
        let mut v: Vec<u64> = samples.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, l)| *l).collect();
        v.sort_unstable();
        percentile(&v, 0.99)
    };
    let idle_p99 = p99(rebalance_at - Duration::from_secs(5), rebalance_at);
    let moving_p99 = p99(rebalance_at, done_at);

    // The journal's timeline of each move.
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let at = |kind: &str, shard: u32, outcome: &str| -> Option<u64> {
        events.as_array()?.iter().find(|e| {
            e["kind"] == kind
                && e["outcome"] == outcome
                && e["shards"].as_array().is_some_and(|s| s.contains(&json!(shard)))
        })?["at_unix_ms"]
            .as_u64()
    };
    let acquire_done = |shard: u32| -> Option<u64> {
        events.as_array()?.iter().find(|e| {
            e["kind"] == "serve_shards"
                && e["outcome"] == "done"
                && e["orders"].as_array().is_some_and(|o| o.contains(&json!(2)))
                && e["shards"].as_array().is_some_and(|s| s.contains(&json!(shard)))
        })?["at_unix_ms"]
            .as_u64()
    };
    let bytes_of = |shard: u32| {
        plan["moves"].as_array().and_then(|m| m.iter().find(|m| m["shard"] == shard)).and_then(|m| m["bytes"].as_u64())
    };
    if std::env::var("BENCH_DEBUG").is_ok() {
        eprintln!("moving {moving:?} rebalance at {rebalance_at:?}");
        for e in events.as_array().into_iter().flatten() {
            eprintln!("{} {} {} {} {}", e["at_unix_ms"], e["kind"], e["outcome"], e["shards"], e["orders"]);
        }
    }
    let mut moves = Vec::new();
    for &s in &moving {
        let (Some(start), Some(freeze), Some(finish), Some(acquired)) = (
            at("start_move", s, "applied"),
            at("freeze_move", s, "applied"),
            at("finish_move", s, "applied"),
            acquire_done(s),
        ) else {
            continue;
        };
        let bytes = bytes_of(s).unwrap_or(0);
        let copy_s = (freeze.saturating_sub(start)) as f64 / 1000.0;
        moves.push(json!({
            "shard": s,
            "bytes": bytes,
            "copy_mib_per_s": bytes as f64 / (1 << 20) as f64 / copy_s.max(0.001),
            "move_s": (finish - start) as f64 / 1000.0,
            "window_ms_journal": acquired.saturating_sub(freeze),
            "window_ms_client": gaps.lock().expect("gaps").get(&s).copied().unwrap_or(0) / 1000,
        }));
    }
    let first = moving.iter().filter_map(|s| at("start_move", *s, "applied")).min().unwrap_or(0);
    let last = moving.iter().filter_map(|s| at("finish_move", *s, "applied")).max().unwrap_or(0);
    json!({
        "run": run,
        "moves": moves,
        "eta_s_dry_run": dry_run["eta_s"],
        "eta_s_applied": plan["eta_s"],
        "dry_run_bytes": dry_run["total_bytes"],
        "applied_bytes": plan["total_bytes"],
        "real_s": (last.saturating_sub(first)) as f64 / 1000.0,
        "put_p99_us_idle": idle_p99,
        "put_p99_us_rebalance": moving_p99,
        "failed_writes": failed.load(Ordering::Relaxed),
        "rebalance_wall_s": (done_at - rebalance_at).as_secs_f64(),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// One shard of `mib` MiB moved with nothing else running: the copy's throughput.
fn throughput_once(mib: usize, value_kib: usize) -> Value {
    let c = Cluster::start(7);
    c.ctl_ok(&["bootstrap", "--station", &c.nodes[0].addr, "--shards", "2"]);
    c.ctl_ok(&["set", "auto_rebalance", "false"]);
    c.ctl_ok(&["set", "move_rate_mib", "0"]);
    c.join(&[0], &[1, 2, 3]);
    c.wait_status(0, "order 1 serving every shard", |s| s["orders"][0]["shards"] == 2);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let opts = Options { op_timeout: Duration::from_secs(30), rpc_timeout: Duration::from_secs(10) };
    let client = radiant_client::Client::new(c.addrs(&[0, 1, 2, 3]), opts);
    let value = vec![7u8; value_kib << 10];
    let per_shard_values = (mib << 10) / value_kib.max(1);
    rt.block_on(async {
        let mut tasks = Vec::new();
        let mut i = 0u64;
        let mut per_shard = [0usize; 2];
        while per_shard.iter().any(|n| *n < per_shard_values) {
            let k = format!("big-{i}");
            i += 1;
            let s = radiant_proto::shard_of(k.as_bytes(), 2) as usize;
            if per_shard[s] >= per_shard_values {
                continue;
            }
            per_shard[s] += 1;
            let (client, value) = (client.clone(), value.clone());
            // The same value again is harmless, so a write whose outcome is unknown (the
            // herald changed under the load) is simply written again.
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    match client.put(k.as_bytes(), &value).await {
                        Err(radiant_client::ClientError::Unknown(_)) => continue,
                        r => return r.expect("load"),
                    }
                }
                panic!("load: {k}: outcome unknown ten times");
            }));
            if tasks.len() >= ((8 << 10) / value_kib.max(1)).clamp(8, 32) {
                for t in tasks.drain(..) {
                    t.await.expect("loader");
                }
            }
        }
        for t in tasks {
            t.await.expect("loader");
        }
    });
    c.join(&[0], &[4, 5, 6]);
    c.wait_status(0, "order 2 with a herald", |s| status::herald(s, 2).is_some());
    let plan = c.ctl_ok(&["rebalance", "--no-wait"]);
    let shard = plan["moves"][0]["shard"].as_u64().expect("one move") as u32;
    let bytes = plan["moves"][0]["bytes"].as_u64().unwrap_or(0);
    c.wait_status(0, "1 shard each, no move under way", |s| {
        s["orders"].as_array().is_some_and(|o| o.iter().all(|o| o["shards"] == 1))
            && s["moves"].as_array().is_some_and(|m| m.is_empty())
    });
    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let at = |kind: &str| -> u64 {
        events
            .as_array()
            .and_then(|a| {
                a.iter().find(|e| {
                    e["kind"] == kind
                        && e["outcome"] == "applied"
                        && e["shards"].as_array().is_some_and(|s| s.contains(&json!(shard)))
                })
            })
            .and_then(|e| e["at_unix_ms"].as_u64())
            .unwrap_or(0)
    };
    let (start, freeze, finish) = (at("start_move"), at("freeze_move"), at("finish_move"));
    if std::env::var("BENCH_DEBUG").is_ok() {
        for n in &c.nodes[4..] {
            for l in n.log().lines().filter(|l| l.contains(" chunk ")).take(40) {
                eprintln!("{l}");
            }
        }
    }
    let copy_s = freeze.saturating_sub(start) as f64 / 1000.0;
    json!({
        "mib": bytes as f64 / (1 << 20) as f64,
        "copy_s": copy_s,
        "copy_mib_per_s": bytes as f64 / (1 << 20) as f64 / copy_s.max(0.001),
        "move_s": finish.saturating_sub(start) as f64 / 1000.0,
    })
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("throughput") {
        args.next();
        let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
        let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
        let value_kib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
        let mut rates = Vec::new();
        for _ in 0..runs {
            let r = throughput_once(mib, value_kib);
            println!("{r}");
            rates.push(r["copy_mib_per_s"].as_f64().unwrap_or(0.0));
        }
        println!(
            "{}",
            json!({"summary": {"runs": runs, "mib": mib, "value_kib": value_kib, "copy_mib_per_s_median": median(rates)}})
        );
        return;
    }
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut all = Vec::new();
    for run in 0..runs {
        let r = run_once(run);
        println!("{r}");
        all.push(r);
    }
    let per_move = |field: &str| -> Vec<f64> {
        all.iter()
            .flat_map(|r| r["moves"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m[field].as_f64())
            .collect()
    };
    let mut windows = per_move("window_ms_journal");
    windows.sort_by(|a, b| a.total_cmp(b));
    let mut client_windows = per_move("window_ms_client");
    client_windows.sort_by(|a, b| a.total_cmp(b));
    let pick = |v: &[f64], p: f64| {
        if v.is_empty() { 0.0 } else { v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1] }
    };
    let field = |f: &str| all.iter().filter_map(|r| r[f].as_f64()).collect::<Vec<_>>();
    println!(
        "{}",
        json!({
            "summary": {
                "runs": runs,
                "moves": windows.len(),
                "copy_mib_per_s_median": median(per_move("copy_mib_per_s")),
                "move_s_median": median(per_move("move_s")),
                "window_ms_journal_p50": pick(&windows, 0.5),
                "window_ms_journal_p99": pick(&windows, 0.99),
                "window_ms_client_p50": pick(&client_windows, 0.5),
                "window_ms_client_p99": pick(&client_windows, 0.99),
                "put_p99_us_idle_median": median(field("put_p99_us_idle")),
                "put_p99_us_rebalance_median": median(field("put_p99_us_rebalance")),
                "failed_writes_total": field("failed_writes").iter().sum::<f64>(),
                "eta_s_dry_run_median": median(field("eta_s_dry_run")),
                "eta_s_applied_median": median(field("eta_s_applied")),
                "real_s_median": median(field("real_s")),
            }
        })
    );
}
