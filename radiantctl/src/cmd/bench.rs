//! `radiantctl bench`: closed-loop load against the cluster, with latency percentiles.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use indicatif::ProgressBar;
use indicatif::ProgressStyle;
use radiant_client::Client;
use radiant_client::Options;
use serde_json::json;

use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::print_json;

/// Which operation the load issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// Writes only.
    Put,
    /// Linearizable reads only (the keys are written first).
    Get,
    /// Half writes, half reads.
    Mixed,
}

/// What the benchmark was asked.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent clients.
    pub clients: usize,
    /// Measured duration.
    pub seconds: u64,
    /// Operation.
    pub op: BenchOp,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key space.
    pub keys: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("bench-{i:08}").into_bytes()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Runs the benchmark and prints its result.
pub async fn run(endpoint: &str, output: Output, args: &BenchArgs) -> Result<()> {
    if args.clients == 0 || args.seconds == 0 || args.keys == 0 {
        return Err(CtlError::Usage("--clients, --seconds and --keys must be above 0".into()));
    }
    let client = Client::new(vec![endpoint.to_string()], Options::default());
    let value = vec![b'x'; args.value_size];
    if args.op != BenchOp::Put {
        let bar = ProgressBar::new(args.keys).with_style(
            ProgressStyle::with_template("loading {pos}/{len} keys {bar:30}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let next = Arc::new(AtomicU64::new(0));
        let loaders: Vec<_> = (0..args.clients.min(64))
            .map(|_| {
                let (client, next, value, bar) = (client.clone(), next.clone(), value.clone(), bar.clone());
                let keys = args.keys;
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= keys {
                            return Ok(());
                        }
                        client.put(&key(i), &value).await?;
                        bar.inc(1);
                    }
                })
            })
            .collect();
        for l in loaders {
            l.await
                .map_err(|e| CtlError::Failed(e.to_string()))?
                .map_err(|e: radiant_client::ClientError| CtlError::Unavailable(format!("loading keys: {e}")))?;
        }
        bar.finish_and_clear();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|c| {
            let (client, value, stop, errors, done) =
                (client.clone(), value.clone(), stop.clone(), errors.clone(), done.clone());
            let (op, keys) = (args.op, args.keys);
            tokio::spawn(async move {
                let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = key(x % keys);
                    let write = match op {
                        BenchOp::Put => true,
                        BenchOp::Get => false,
                        BenchOp::Mixed => n.is_multiple_of(2),
                    };
                    n += 1;
                    let t = Instant::now();
                    let ok =
                        if write { client.put(&k, &value).await.is_ok() } else { client.get(&k, false).await.is_ok() };
                    if ok {
                        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat
            })
        })
        .collect();
    let bar = ProgressBar::new(args.seconds).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for s in 1..=args.seconds {
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + Duration::from_secs(s))).await;
        bar.set_position(s);
        bar.set_message(format!("{:.0} ops/s", done.load(Ordering::Relaxed) as f64 / s as f64));
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.map_err(|e| CtlError::Failed(e.to_string()))?);
    }
    bar.finish_and_clear();
    lat.sort_unstable();
    let ops = lat.len() as u64;
    let (p50, p99, p999) = (percentile(&lat, 0.50), percentile(&lat, 0.99), percentile(&lat, 0.999));
    let errors = errors.load(Ordering::Relaxed);
    let rate = ops as f64 / elapsed;
    match output {
        Output::Json => print_json(&json!({
            "op": format!("{:?}", args.op).to_lowercase(),
            "clients": args.clients,
            "seconds": elapsed,
            "value_size": args.value_size,
            "keys": args.keys,
            "ops": ops,
            "ops_per_sec": rate,
            "p50_us": p50,
            "p99_us": p99,
            "p999_us": p999,
            "errors": errors,
        })),
        Output::Table => {
            println!(
                "{:?} x{} clients, {}-byte values, {} keys, {elapsed:.1} s",
                args.op, args.clients, args.value_size, args.keys
            );
            println!("ops {ops}  ({rate:.0} ops/s)  errors {errors}");
            println!("latency p50 {p50} us  p99 {p99} us  p99.9 {p999} us");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
