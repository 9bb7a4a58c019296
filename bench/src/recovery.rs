//! Recovery benchmarks.
//!
//! `drain RUNS`: one order of 3, one client writing continuously; drain the herald's node,
//! wait until it leads nothing, undrain it, RUNS times. Per run: failed writes, the longest
//! write (the stall) and the p99 of writes started during the drain.
//!
//! `replace MIB`: one order of 3 and a spare; load MIB MiB (1 MiB values), set
//! `replace_after_ms = 0` and `down_after_ms = 1000`, SIGKILL a member that is not the herald
//! and time, from the journal, the kill -> marked down -> replacement begun -> replacement
//! voting (the map follows the group's membership).
//!
//!   cargo build --release --workspace && target/release/bench-recovery drain 10
//!   cargo build --release --workspace && target/release/bench-recovery replace 256

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use radiant_client::Options;
use radiant_tests::Cluster;
use radiant_tests::status;
use serde_json::json;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A station of one (node 0) and `satellites` satellites, waiting until order 1 serves all.
fn cluster(satellites: usize) -> Cluster {
    let c = Cluster::start(satellites + 1);
    c.bootstrap(&[0]);
    c.join(&[0], &(1..=satellites).collect::<Vec<_>>());
    c.wait_status(0, "an order with a herald and every shard placed", |s| {
        status::herald(s, 1).is_some() && s["shards"]["assigned"] == s["shards"]["total"]
    });
    c
}

fn drain(runs: usize) {
    let c = cluster(3);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = radiant_client::Client::new(
        c.addrs(&[0, 1, 2, 3]),
        Options { op_timeout: Duration::from_secs(10), rpc_timeout: Duration::from_secs(2) },
    );
    // (start, latency in µs) of every acknowledged write; failures counted.
    let writes: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let (failed, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let writer = {
        let (writes, failed, stop, client) = (writes.clone(), failed.clone(), stop.clone(), client.clone());
        rt.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                match client.put(format!("drain-{}", i % 1000).as_bytes(), b"v").await {
                    Ok(()) => writes.lock().expect("writes").push((t, t.elapsed().as_micros() as u64)),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let mut stalls = Vec::new();
    for run in 0..runs {
        let s = c.status_via(0).expect("status");
        let herald = status::herald(&s, 1).expect("herald");
        let failed_before = failed.load(Ordering::Relaxed);
        let from = Instant::now();
        c.ctl_ok(&["drain", &herald]);
        let to = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let mut during: Vec<u64> = writes
            .lock()
            .expect("writes")
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to + Duration::from_millis(200))
            .map(|(_, l)| *l)
            .collect();
        during.sort_unstable();
        let stall = during.last().copied().unwrap_or(0);
        let line = json!({
            "run": run, "drained": herald, "drain_ms": to.duration_since(from).as_millis() as u64,
            "writes_during": during.len(), "p99_us": percentile(&during, 0.99), "stall_us": stall,
            "failed": failed.load(Ordering::Relaxed) - failed_before,
        });
        println!("{line}");
        stalls.push(stall);
        c.ctl_ok(&["undrain", &herald]);
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = rt.block_on(writer);
    let mut idle: Vec<u64> = writes.lock().expect("writes").iter().map(|(_, l)| *l).collect();
    idle.sort_unstable();
    stalls.sort_unstable();
    println!(
        "{}",
        json!({"runs": runs, "stall_p50_us": percentile(&stalls, 0.5), "stall_max_us": stalls.last(),
               "failed_total": failed.load(Ordering::Relaxed), "all_writes_p99_us": percentile(&idle, 0.99)})
    );
}

fn replace(mib: usize) {
    let mut c = cluster(4);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = radiant_client::Client::new(
        c.addrs(&[0, 1, 2, 3, 4]),
        Options { op_timeout: Duration::from_secs(60), rpc_timeout: Duration::from_secs(30) },
    );
    let loaded = Instant::now();
    rt.block_on(async {
        let value = vec![b'x'; 1 << 20];
        let next = Arc::new(AtomicU64::new(0));
        let loaders: Vec<_> = (0..8)
            .map(|_| {
                let (client, next, value) = (client.clone(), next.clone(), value.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= mib as u64 {
                            return;
                        }
                        client.put(format!("big-{i:06}").as_bytes(), &value).await.expect("load");
                    }
                })
            })
            .collect();
        for l in loaders {
            l.await.expect("loader");
        }
    });
    eprintln!("loaded {mib} MiB in {:?}", loaded.elapsed());
    c.ctl_ok(&["set", "down_after_ms", "1000"]);
    c.ctl_ok(&["set", "replace_after_ms", "0"]);
    let s = c.status_via(0).expect("status");
    let herald = status::herald(&s, 1).expect("herald");
    let members = status::order_nodes(&s, 1, "members");
    let victim = members.iter().find(|m| **m != herald).expect("a follower").clone();
    let killed_at = unix_ms();
    let i = c.index_of(&victim);
    c.nodes[i].kill9();
    let done = Instant::now();
    c.wait_status(0, "the victim replaced", |s| {
        status::order_nodes(s, 1, "retired").contains(&victim) && status::order_nodes(s, 1, "learners").is_empty()
    });
    let waited = done.elapsed();
    let chain = c.ctl_ok(&["events", "--explain", "--node", &victim]);
    let at = |kind: &str| {
        chain.as_array().and_then(|a| a.iter().rev().find(|e| e["kind"] == kind)).and_then(|e| e["at_unix_ms"].as_u64())
    };
    let (down, begun, voting) = (at("mark_down"), at("begin_replace"), at("complete_replace"));
    let since = |t: Option<u64>| t.map(|t| t.saturating_sub(killed_at));
    println!(
        "{}",
        json!({"mib": mib, "kill_to_down_ms": since(down), "kill_to_begin_ms": since(begun),
               "kill_to_voting_ms": since(voting),
               "begin_to_voting_ms": begun.zip(voting).map(|(b, v)| v.saturating_sub(b)),
               "observed_ms": waited.as_millis() as u64})
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next().and_then(|a| a.parse().ok())) {
        (Some("drain"), n) => drain(n.unwrap_or(10)),
        (Some("replace"), n) => replace(n.unwrap_or(256)),
        _ => {
            eprintln!("usage: bench-recovery drain [RUNS] | replace [MIB]");
            std::process::exit(2);
        }
    }
}
