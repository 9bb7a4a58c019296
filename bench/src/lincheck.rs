//! Linearizability checker throughput: operations checked per second.
//!
//! Each run generates a history of OPS operations from a simulated linearizable store
//! (`radiant_lincheck::sim`: CLIENTS clients over KEYS keys, 2% of writes with unknown
//! outcomes, 1% failed) and times the check, which must find it linearizable; then turns one
//! read into a stale read and times the check again, which must find the violation. Prints a
//! JSON line per run and a summary line with the medians.
//!
//!   cargo build --release -p radiant-bench --bin bench-lincheck
//!   target/release/bench-lincheck [OPS=100000] [RUNS=3] [KEYS=64] [CLIENTS=12] [THREADS=1]

use std::time::Duration;
use std::time::Instant;

use radiant_lincheck::Options;
use radiant_lincheck::Outcome;
use radiant_lincheck::Verdict;
use radiant_lincheck::sim;
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Linearizable => "linearizable",
        Verdict::NotLinearizable => "not_linearizable",
        Verdict::Unknown => "unknown",
    }
}

fn arg(i: usize, default: usize) -> usize {
    match std::env::args().nth(i) {
        None => default,
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("usage: bench-lincheck [OPS] [RUNS] [KEYS] [CLIENTS] [THREADS]; {a:?} is not a number");
            std::process::exit(2)
        }),
    }
}

fn main() {
    let (ops, runs, keys, clients, threads) = (arg(1, 100_000), arg(2, 3), arg(3, 64), arg(4, 12), arg(5, 1));
    let opts = Options { per_key_limit: Duration::from_secs(300), threads };
    let (mut rates, mut secs, mut violation_secs) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_ok = true;
    for run in 0..runs {
        let cfg = sim::SimConfig { ops, keys, clients, seed: 1 + run as u64, ..sim::SimConfig::default() };
        let mut history = sim::simulate(&cfg);
        let unknown = history.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        let failed = history.iter().filter(|o| o.outcome == Outcome::Failed).count();

        let t = Instant::now();
        let report = radiant_lincheck::check(&history, &opts);
        let s = t.elapsed().as_secs_f64();
        let steps: u64 = report.keys.iter().map(|k| k.steps).sum();

        let stale = sim::stale_read(&mut history);
        let t = Instant::now();
        let rejected = radiant_lincheck::check(&history, &opts);
        let vs = t.elapsed().as_secs_f64();

        all_ok &=
            report.verdict == Verdict::Linearizable && stale.is_some() && rejected.verdict == Verdict::NotLinearizable;
        rates.push(ops as f64 / s);
        secs.push(s);
        violation_secs.push(vs);
        println!(
            "{}",
            json!({
                "bench": "lincheck", "run": run, "ops": ops, "keys": keys, "clients": clients,
                "threads": threads, "unknown": unknown, "failed": failed, "steps": steps,
                "seconds": s, "ops_per_sec": ops as f64 / s, "verdict": verdict(report.verdict),
                "stale_read_seconds": vs, "stale_read_verdict": verdict(rejected.verdict),
            })
        );
    }
    println!(
        "{}",
        json!({"summary": {
            "bench": "lincheck", "runs": runs, "ops": ops, "keys": keys, "clients": clients,
            "threads": threads, "seconds_median": median(secs),
            "ops_per_sec_median": median(rates), "stale_read_seconds_median": median(violation_secs),
            "verdicts_as_expected": all_ok,
        }})
    );
    if !all_ok {
        std::process::exit(1);
    }
}
