//! Snapshot transfer: one order of 3 holding GIB GiB (1 MiB values); a follower is stopped,
//! enough writes follow for the leader to build a new snapshot and purge the log behind it,
//! and the follower is restarted, so that it can only catch up from the streamed snapshot.
//! Repeats RUNS times and prints, per run and as medians, from the two nodes' logs:
//!
//! - **stream**: the receiver's time from the head to a complete, checksummed, fsynced file;
//! - **install**: its time to load the file into redb;
//! - **end to end**: the sender's time from the first chunk to the install's reply;
//! - the follower's peak resident memory, which shows that nothing holds the whole order.
//!
//!   cargo build --release --workspace && target/release/bench-snapshot-transfer [RUNS] [GIB]

use std::time::Duration;
use std::time::Instant;

use radiant_client::Options;
use radiant_tests::Cluster;
use radiant_tests::status;
use radiant_tests::wait_until;

const MIB: usize = 1024 * 1024;

/// Entries between snapshots. Large, so that loading the data builds few snapshots; the
/// writes of each run then trigger exactly one build.
const SNAPSHOT_LOGS: usize = 1000;

/// One `key=value` field of a tracing line, with the terminal colours stripped.
fn field(line: &str, name: &str) -> Option<u64> {
    let plain: String = {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let at = plain.find(&format!(" {name}="))? + name.len() + 2;
    plain[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Peak resident memory (VmHWM) of the radiantd process started with `config`, in MiB: how
/// much memory receiving and installing the snapshot took.
fn peak_rss_mib(config: &std::path::Path) -> Option<u64> {
    let config = config.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").ok()? {
        let dir = entry.ok()?.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else { continue };
        if !String::from_utf8_lossy(&cmdline).contains(&config) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        return Some(kib / 1024);
    }
    None
}

fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let gib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let values = gib * 1024;
    let mut c = Cluster::start_with(3, &format!("snapshot_logs = {SNAPSHOT_LOGS}"));
    let s = c.full_cluster();
    let herald = status::herald(&s, 1).expect("herald");
    let h = c.index_of(&herald);
    let f = (0..3).find(|&i| i != h).expect("a follower");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let opts = Options { op_timeout: Duration::from_secs(60), rpc_timeout: Duration::from_secs(10) };
    let client = radiant_client::Client::new(c.addrs(&[0, 1, 2]), opts.clone());

    let put_all = |keys: Vec<(Vec<u8>, Vec<u8>)>, writers: usize| {
        let client = client.clone();
        rt.block_on(async move {
            let keys = std::sync::Arc::new(keys);
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let (client, keys) = (client.clone(), keys.clone());
                    tokio::spawn(async move {
                        for (k, v) in keys.iter().skip(w).step_by(writers) {
                            client.put(k, v).await.map_err(|e| format!("put: {e}"))?;
                        }
                        Ok::<_, String>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await.map_err(|e| e.to_string())??;
            }
            Ok::<_, String>(())
        })
    };
    // On a failure, keep the nodes' logs: the cluster's directory goes with the process.
    let check = |r: Result<(), String>, c: &Cluster| {
        if let Err(e) = r {
            for n in &c.nodes {
                let to = std::env::temp_dir().join(format!("bench-snapshot-{}.log", n.name));
                let _ = std::fs::write(&to, n.log());
                eprintln!("log of {} kept in {}", n.name, to.display());
            }
            panic!("{e}");
        }
    };

    println!("loading {values} values of 1 MiB ...");
    let started = Instant::now();
    let data: Vec<(Vec<u8>, Vec<u8>)> = (0..values)
        .map(|i| {
            let mut v = vec![(i % 251) as u8; MIB];
            v[..8].copy_from_slice(&(i as u64).to_le_bytes());
            (format!("big-{i:05}").into_bytes(), v)
        })
        .collect();
    check(put_all(data, 4), &c);
    // Only one follower needs to keep up with the writes; the other may have fallen behind the
    // log the leader keeps and be catching up from a snapshot itself. Wait until both hold the
    // last value: once one is stopped, the other is the quorum.
    let last = format!("big-{:05}", values - 1).into_bytes();
    for i in (0..3).filter(|&i| i != h) {
        let addr = format!("http://{}", c.nodes[i].addr);
        wait_until(Duration::from_secs(600), "every follower to hold the data", || {
            rt.block_on(async {
                let mut kv = radiant_proto::kv_client::KvClient::connect(addr.clone()).await.ok()?;
                let req = radiant_proto::GetRequest { key: last.clone(), stale: true };
                kv.get(req).await.ok()?.into_inner().value.map(|_| ())
            })
        });
    }
    println!("loaded in {:.1} s", started.elapsed().as_secs_f64());

    println!(
        "run  bytes        stream_ms  stream_MiB/s  install_ms  end_to_end_ms  end_to_end_MiB/s  follower_peak_rss_MiB"
    );
    let (mut stream_rates, mut e2e_rates, mut installs) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        c.nodes[f].kill9();
        let received_before = lines_with(&c.nodes[f].log(), "received and installed a snapshot").len();
        let sent_before = lines_with(&c.nodes[h].log(), "sent a snapshot").len();
        let built_before = lines_with(&c.nodes[h].log(), "built snapshot").len();
        // Enough small writes for one more snapshot build on the leader and a purge of the log
        // the stopped follower would need.
        let small: Vec<_> =
            (0..SNAPSHOT_LOGS + 50).map(|i| (format!("run{run}-{i}").into_bytes(), b"v".to_vec())).collect();
        check(put_all(small, 32), &c);
        // The follower must come back only once the log it needs is gone.
        wait_until(Duration::from_secs(600), "the leader to build a snapshot", || {
            (lines_with(&c.nodes[h].log(), "built snapshot").len() > built_before).then_some(())
        });
        c.nodes[f].start();
        let deadline = Duration::from_secs(600);
        let received = wait_until(deadline, "the follower to install a snapshot", || {
            let log = c.nodes[f].log();
            let lines = lines_with(&log, "received and installed a snapshot");
            lines.get(received_before).map(|l| l.to_string())
        });
        let sent = wait_until(deadline, "the leader's report", || {
            let log = c.nodes[h].log();
            lines_with(&log, "sent a snapshot").get(sent_before).map(|l| l.to_string())
        });
        let bytes = field(&received, "bytes").expect("bytes");
        let stream_ms = field(&received, "received_ms").expect("received_ms");
        let install_ms = field(&received, "installed_ms").expect("installed_ms");
        let e2e_ms = field(&sent, "ms").expect("ms");
        let mib = bytes as f64 / MIB as f64;
        let stream_rate = mib / (stream_ms.max(1) as f64 / 1e3);
        let e2e_rate = mib / (e2e_ms.max(1) as f64 / 1e3);
        let rss = peak_rss_mib(&c.nodes[f].config_path()).map_or("?".to_string(), |m| m.to_string());
        println!(
            "{run:>3}  {bytes:>11}  {stream_ms:>9}  {stream_rate:>12.0}  {install_ms:>10}  {e2e_ms:>13}  {e2e_rate:>16.0}  {rss:>21}"
        );
        stream_rates.push(stream_rate);
        e2e_rates.push(e2e_rate);
        installs.push(install_ms as f64);
    }
    println!(
        "median over {runs} runs: stream {:.0} MiB/s, install {:.0} ms, end to end {:.0} MiB/s",
        median(stream_rates),
        median(installs),
        median(e2e_rates)
    );
}
