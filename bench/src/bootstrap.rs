//! Bootstrap benchmark: 9 radiants (3 station), real processes on loopback.
//!
//! Measures, per run: bootstrap start → bondsmith elected (radiantctl returns);
//! join start → all 6 satellites registered (radiantctl returns); and SIGKILL of the
//! bondsmith → its successor running the coordinator, taken from the journal timestamp of the
//! successor's first action ("bondsmith is now ..."). Prints each run and the medians.
//!
//!   cargo build --release --workspace && target/release/bench-bootstrap [RUNS]

use std::time::Instant;
use std::time::SystemTime;

use radiant_tests::Cluster;
use radiant_tests::status;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let (mut boot, mut join, mut fail) = (Vec::new(), Vec::new(), Vec::new());
    println!("run  bootstrap_ms  join_ms  failover_ms");
    for run in 1..=runs {
        let mut c = Cluster::start(9);
        let t = Instant::now();
        c.bootstrap(&[0, 1, 2]);
        let b = t.elapsed().as_secs_f64() * 1e3;

        let t = Instant::now();
        c.join(&[0, 1, 2], &[3, 4, 5, 6, 7, 8]);
        let j = t.elapsed().as_secs_f64() * 1e3;

        let s = c.status_via(0).expect("status");
        let old = status::bondsmith(&s).expect("bondsmith");
        let epoch = s["epoch"].as_u64().unwrap_or(0);
        let old_idx = c.nodes.iter().position(|n| n.name == old).expect("bondsmith node");
        let survivor = (0..3).find(|&i| i != old_idx).expect("survivor");
        let killed_at = unix_ms();
        c.nodes[old_idx].kill9();
        let took_over_at = radiant_tests::wait_until(radiant_tests::DEADLINE, "the successor's first action", || {
            let out = c.ctl_at(&c.nodes[survivor].addr, &["events", "--limit", "0"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            v.as_array()?
                .iter()
                .find(|e| {
                    e["epoch"].as_u64().unwrap_or(0) > epoch
                        && e["action"].as_str().is_some_and(|a| a.starts_with("bondsmith is now"))
                })
                .and_then(|e| e["at_unix_ms"].as_u64())
        });
        let f = took_over_at.saturating_sub(killed_at) as f64;
        println!("{run:>3}  {b:>12.0}  {j:>7.0}  {f:>11.0}");
        boot.push(b);
        join.push(j);
        fail.push(f);
    }
    println!(
        "median  bootstrap {:.0} ms  join {:.0} ms  failover {:.0} ms  ({} runs)",
        median(&mut boot),
        median(&mut join),
        median(&mut fail),
        runs
    );
}
