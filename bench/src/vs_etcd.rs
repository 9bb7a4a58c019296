//! Puts by value size, Radiant against etcd on the same machine in the same run.
//!
//! Both clusters are up for the whole run: one Radiant order of 3 and one etcd cluster of 3,
//! all on loopback. For every value size and client count it runs PAIRS pairs of short phases
//! that alternate between the two systems (the first of a pair alternates too), because this
//! disk's speed drifts from one minute to the next and a block of one followed by a block of
//! the other compares two different disks. It prints one JSON line per phase and then a
//! Markdown table of medians, with the Radiant/etcd throughput ratio taken per pair.
//!
//!   cargo build --release --workspace && target/release/bench-vs-etcd [PAIRS] [SECONDS]
//!
//! Needs `etcd` and `etcdctl` on PATH (Debian: `apt-get install etcd-server etcd-client`),
//! or their paths in ETCD and ETCDCTL.

use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use radiant_client::Client;
use radiant_client::Options;
use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::wait_until;
use serde_json::Value;
use serde_json::json;
use tonic::transport::Channel;

mod etcdpb {
    #![allow(missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

use etcdpb::PutRequest;
use etcdpb::kv_client::KvClient;

const SIZES: [usize; 4] = [256, 4096, 64 * 1024, 1024 * 1024];
const CLIENTS: [usize; 2] = [1, 16];
const KEYS: u64 = 1000;

/// A three-member etcd cluster on 127.0.0.1 with ephemeral ports, stopped on drop.
struct Etcd {
    children: Vec<Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

fn tool(env: &str, name: &str) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(name))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Etcd {
    fn start(dir: tempfile::TempDir) -> Etcd {
        let peers: Vec<String> = (0..3).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let clients: Vec<String> = (0..3).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let initial: Vec<String> = peers.iter().enumerate().map(|(i, p)| format!("e{i}={p}")).collect();
        let mut children = Vec::new();
        for i in 0..3 {
            let log = std::fs::File::create(dir.path().join(format!("e{i}.log"))).expect("etcd log");
            let child = Command::new(tool("ETCD", "etcd"))
                .args(["--name", &format!("e{i}")])
                .args(["--data-dir", &dir.path().join(format!("e{i}")).display().to_string()])
                .args(["--listen-peer-urls", &peers[i], "--initial-advertise-peer-urls", &peers[i]])
                .args(["--listen-client-urls", &clients[i], "--advertise-client-urls", &clients[i]])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                // Room for 1 MiB values, and for their history until compaction frees it.
                .args(["--max-request-bytes", "2097152", "--quota-backend-bytes", "8589934592"])
                .args(["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    eprintln!("bench-vs-etcd: cannot start etcd ({e}); install etcd-server or set ETCD");
                    std::process::exit(2)
                });
            children.push(child);
        }
        Etcd { children, clients, _dir: dir }
    }

    /// The client URL of the current leader, once the cluster has one.
    fn leader(&self) -> Option<String> {
        let out = Command::new(tool("ETCDCTL", "etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.clients.join(","), "endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.iter().find_map(|e| {
            let s = &e["Status"];
            (s["leader"] == s["header"]["member_id"] && s["leader"].as_u64()? != 0)
                .then(|| e["Endpoint"].as_str().map(str::to_string))?
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone)]
enum Target {
    Radiant(Client),
    Etcd(KvClient<Channel>),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Radiant(_) => "radiant",
            Target::Etcd(_) => "etcd",
        }
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> bool {
        match self {
            Target::Radiant(c) => c.put(&key, &value).await.is_ok(),
            Target::Etcd(c) => c.put(PutRequest { key, value, ..Default::default() }).await.is_ok(),
        }
    }
}

struct Phase {
    ops_per_sec: f64,
    p50_us: u32,
    p99_us: u32,
    errors: u64,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn phase(target: &Target, clients: usize, size: usize, secs: u64) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (mut target, stop) = (target.clone(), stop.clone());
            tokio::spawn(async move {
                let value = vec![b'x'; size];
                let (mut lat, mut errors) = (Vec::<u32>::new(), 0u64);
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("bench-{:08}", x % KEYS).into_bytes();
                    let t = Instant::now();
                    if target.put(key, value.clone()).await {
                        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (l, e) = w.await.expect("worker");
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    Phase {
        ops_per_sec: lat.len() as f64 / elapsed,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        errors,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);

    let etcd = Etcd::start(tempfile::Builder::new().prefix("radiant-vs-etcd-").tempdir().expect("tempdir"));
    let radiant = Cluster::start(3);
    radiant.full_cluster();
    let leader = wait_until(DEADLINE, "etcd to elect a leader", || etcd.leader());

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let targets = rt.block_on(async {
        let channel = Channel::from_shared(leader.clone()).expect("etcd url").connect().await.expect("connect to etcd");
        let etcd = KvClient::new(channel).max_decoding_message_size(8 << 20).max_encoding_message_size(8 << 20);
        let radiant = Client::new(
            radiant.addrs(&[0, 1, 2]),
            Options { op_timeout: Duration::from_secs(30), rpc_timeout: Duration::from_secs(10) },
        );
        [Target::Radiant(radiant), Target::Etcd(etcd)]
    });

    let mut table = Vec::new();
    for size in SIZES {
        for clients in CLIENTS {
            let (mut r, mut e, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            for pair in 0..pairs {
                let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
                let mut got = [None, None];
                for i in order {
                    let p = rt.block_on(phase(&targets[i], clients, size, secs));
                    println!(
                        "{}",
                        json!({"system": targets[i].name(), "value_size": size, "clients": clients, "pair": pair,
                               "ops_per_sec": p.ops_per_sec, "mib_per_sec": p.ops_per_sec * size as f64 / 1048576.0,
                               "p50_us": p.p50_us, "p99_us": p.p99_us, "errors": p.errors})
                    );
                    got[i] = Some(p);
                }
                let [Some(rp), Some(ep)] = got else { unreachable!("both phases ran") };
                ratio.push(if ep.ops_per_sec > 0.0 { rp.ops_per_sec / ep.ops_per_sec } else { f64::NAN });
                r.push(rp);
                e.push(ep);
            }
            table.push((size, clients, r, e, ratio));
        }
    }

    println!();
    println!(
        "| value | clients | Radiant puts/s | etcd puts/s | Radiant/etcd | Radiant MiB/s | etcd MiB/s | Radiant p50 / p99 | etcd p50 / p99 | errors R/E |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (size, clients, r, e, ratio) in table {
        let ops = |v: &[Phase]| median(v.iter().map(|p| p.ops_per_sec).collect());
        let lat = |v: &[Phase], f: fn(&Phase) -> u32| median(v.iter().map(|p| f64::from(f(p))).collect()) / 1000.0;
        let errs = |v: &[Phase]| v.iter().map(|p| p.errors).sum::<u64>();
        let mib = |x: f64| x * size as f64 / 1048576.0;
        let label = match size {
            s if s >= 1 << 20 => format!("{} MiB", s >> 20),
            s if s >= 1 << 10 => format!("{} KiB", s >> 10),
            s => format!("{s} B"),
        };
        println!(
            "| {label} | {clients} | {:.0} | {:.0} | {:.2}× | {:.1} | {:.1} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {}/{} |",
            ops(&r),
            ops(&e),
            median(ratio),
            mib(ops(&r)),
            mib(ops(&e)),
            lat(&r, |p| p.p50_us),
            lat(&r, |p| p.p99_us),
            lat(&e, |p| p.p50_us),
            lat(&e, |p| p.p99_us),
            errs(&r),
            errs(&e),
        );
    }
}
