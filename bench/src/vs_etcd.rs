//! Radiant against etcd 3.4 on the same machine in the same run: puts by value size, and the
//! figures the write-path issue asks for.
//!
//! Both clusters are up for the whole run: one Radiant order of 3 and one etcd cluster of 3,
//! all on loopback. For every workload it runs PAIRS pairs of SECONDS-long phases (defaults 3
//! and 3) that alternate between the two systems (the first of a pair alternates too), because
//! this disk's speed drifts from one minute to the next and a block of one followed by a block
//! of the other compares two different disks. Both load generators are the same tonic client
//! stack (Radiant's client crate, and a slice of etcd's KV API compiled from its proto), talking
//! to the Raft leader. It prints one JSON line per phase and then a Markdown table.
//!
//!   cargo build --release --workspace && target/release/bench-vs-etcd [PAIRS] [SECONDS]
//!   target/release/bench-vs-etcd writepath [PAIRS] [SECONDS]
//!
//! Without a mode: puts of 256 B, 4 KiB, 64 KiB and 1 MiB values over 1,000 keys, at 1 and 16
//! clients.
//!
//! `writepath`: the write-path issue's workload, 256-byte values over 10,000 keys, every key
//! written once on both systems before the first phase (so gets always find a value and puts
//! overwrite): puts at 1 client, puts at 64 clients, linearizable gets at 64 clients (Radiant:
//! `Client::get` with `stale = false`; etcd: `KV.Range` with its default `serializable =
//! false`, which goes through the leader's ReadIndex). Then, with both clusters left idle for
//! 5 s, the resident memory (VmRSS in /proc/PID/status) of each of the three `radiantd` and
//! each of the three `etcd` processes: one JSON line per process, and the median of each
//! system's three in the table. Last, the targets against the measured ratios: puts/s
//! at 64 clients >= 1.5x etcd; put p50 at 1 client <= etcd (goal 0.8x); put p99 at 64 clients
//! <= etcd; gets/s at 64 clients >= 3x etcd.
//!
//! What the figures are: ops/s (and MiB/s of values) are the median over the pairs of each
//! phase's successful operations per second. p50 / p99 are the medians over the pairs of each
//! phase's latency percentiles, successful operations only. Radiant/etcd is the median of the
//! per-pair ratios (for throughput, and in the target check for p50 and p99 too), never a
//! ratio of medians. Errors are failed calls summed over all phases, plus, for gets, reads that
//! found no value (`misses` in the JSON; every key was written, so each miss is a wrong answer).
//!
//! Needs `etcd` and `etcdctl` on PATH (Debian: `apt-get install etcd-server etcd-client`),
//! or their paths in ETCD and ETCDCTL.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
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
use tokio::runtime::Runtime;
use tonic::transport::Channel;

mod etcdpb {
    #![allow(missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

use etcdpb::PutRequest;
use etcdpb::RangeRequest;
use etcdpb::kv_client::KvClient;

const SIZES: [usize; 4] = [256, 4096, 64 * 1024, 1024 * 1024];
const CLIENTS: [usize; 2] = [1, 16];
const KEYS: u64 = 1000;

/// The write-path issue's workload: value size, key count, and (op, clients) per workload.
const WRITEPATH_SIZE: usize = 256;
const WRITEPATH_KEYS: u64 = 10_000;
const WRITEPATH: [(Op, usize); 3] = [(Op::Put, 1), (Op::Put, 64), (Op::Get, 64)];
/// Concurrent writers of the preload.
const PRELOAD_CLIENTS: u64 = 64;
/// How long both clusters sit idle before their memory is read.
const IDLE: Duration = Duration::from_secs(5);

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    /// A linearizable read of one key.
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
        }
    }
}

/// What the phases of one table row run.
#[derive(Clone, Copy)]
struct Workload {
    op: Op,
    size: usize,
    clients: usize,
    keys: u64,
}

/// How one operation ended.
enum Outcome {
    Done,
    /// A get that found no value.
    Miss,
    Failed,
}

fn key(k: u64) -> Vec<u8> {
    format!("bench-{k:08}").into_bytes()
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

    /// A linearizable read: Radiant's default, and etcd's (`serializable` left false).
    async fn get(&mut self, key: Vec<u8>) -> Outcome {
        match self {
            Target::Radiant(c) => match c.get(&key, false).await {
                Ok(Some(_)) => Outcome::Done,
                Ok(None) => Outcome::Miss,
                Err(_) => Outcome::Failed,
            },
            Target::Etcd(c) => match c.range(RangeRequest { key, ..Default::default() }).await {
                Ok(r) if r.get_ref().kvs.is_empty() => Outcome::Miss,
                Ok(_) => Outcome::Done,
                Err(_) => Outcome::Failed,
            },
        }
    }

    async fn run(&mut self, op: Op, key: Vec<u8>, value: &[u8]) -> Outcome {
        match op {
            Op::Put => {
                if self.put(key, value.to_vec()).await {
                    Outcome::Done
                } else {
                    Outcome::Failed
                }
            }
            Op::Get => self.get(key).await,
        }
    }
}

struct Phase {
    ops_per_sec: f64,
    p50_us: u32,
    p99_us: u32,
    errors: u64,
    misses: u64,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn phase(target: &Target, w: Workload, secs: u64) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..w.clients)
        .map(|c| {
            let (mut target, stop) = (target.clone(), stop.clone());
            tokio::spawn(async move {
                let value = vec![b'x'; w.size];
                let (mut lat, mut errors, mut misses) = (Vec::<u32>::new(), 0u64, 0u64);
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let t = Instant::now();
                    match target.run(w.op, key(x % w.keys), &value).await {
                        Outcome::Done => lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                        Outcome::Miss => misses += 1,
                        Outcome::Failed => errors += 1,
                    }
                }
                (lat, errors, misses)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors, mut misses) = (Vec::new(), 0, 0);
    for w in workers {
        let (l, e, m) = w.await.expect("worker");
        lat.extend(l);
        errors += e;
        misses += m;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    Phase {
        ops_per_sec: lat.len() as f64 / elapsed,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        errors,
        misses,
    }
}

/// Writes keys `0..keys` once each, from [`PRELOAD_CLIENTS`] concurrent writers; returns how
/// many puts failed.
async fn preload(target: &Target, keys: u64, size: usize) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..PRELOAD_CLIENTS)
        .map(|_| {
            let (mut target, next) = (target.clone(), next.clone());
            tokio::spawn(async move {
                let value = vec![b'x'; size];
                let mut failed = 0u64;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= keys {
                        return failed;
                    }
                    if !target.put(key(k), value.clone()).await {
                        failed += 1;
                    }
                }
            })
        })
        .collect();
    let mut failed = 0;
    for w in workers {
        failed += w.await.expect("preload worker");
    }
    failed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// The phases of one workload, `[radiant, etcd]` per pair.
struct Row {
    w: Workload,
    pairs: Vec<[Phase; 2]>,
}

impl Row {
    /// Median over the pairs of `f` of system `sys` (0 Radiant, 1 etcd).
    fn median(&self, sys: usize, f: fn(&Phase) -> f64) -> f64 {
        median(self.pairs.iter().map(|p| f(&p[sys])).collect())
    }

    /// Median over the pairs of Radiant's `f` divided by etcd's.
    fn ratio(&self, f: fn(&Phase) -> f64) -> f64 {
        median(self.pairs.iter().map(|[r, e]| if f(e) > 0.0 { f(r) / f(e) } else { f64::NAN }).collect())
    }

    /// Failed calls and misses of system `sys`, summed over all its phases.
    fn errors(&self, sys: usize) -> u64 {
        self.pairs.iter().map(|p| p[sys].errors + p[sys].misses).sum()
    }

    /// "p50 / p99 ms" of system `sys`.
    fn latency(&self, sys: usize) -> String {
        let ms = |f: fn(&Phase) -> f64| self.median(sys, f) / 1000.0;
        format!("{:.2} / {:.2} ms", ms(|p| f64::from(p.p50_us)), ms(|p| f64::from(p.p99_us)))
    }
}

fn ops(p: &Phase) -> f64 {
    p.ops_per_sec
}

fn p50(p: &Phase) -> f64 {
    f64::from(p.p50_us)
}

fn p99(p: &Phase) -> f64 {
    f64::from(p.p99_us)
}

/// Runs `pairs` pairs of phases of `w`, alternating which system goes first, and prints one
/// JSON line per phase.
fn run_workload(rt: &Runtime, targets: &[Target; 2], w: Workload, pairs: usize, secs: u64) -> Row {
    let mut row = Row { w, pairs: Vec::new() };
    for pair in 0..pairs {
        let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut got = [None, None];
        for i in order {
            let p = rt.block_on(phase(&targets[i], w, secs));
            println!(
                "{}",
                json!({"system": targets[i].name(), "op": w.op.name(), "value_size": w.size, "clients": w.clients,
                       "keys": w.keys, "pair": pair, "ops_per_sec": p.ops_per_sec,
                       "mib_per_sec": p.ops_per_sec * w.size as f64 / 1048576.0,
                       "p50_us": p.p50_us, "p99_us": p.p99_us, "errors": p.errors, "misses": p.misses})
            );
            got[i] = Some(p);
        }
        let [Some(r), Some(e)] = got else { unreachable!("both phases ran") };
        row.pairs.push([r, e]);
    }
    row
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Puts by value size: the table of the run without a mode.
fn by_size(rt: &Runtime, targets: &[Target; 2], pairs: usize, secs: u64) {
    let mut table = Vec::new();
    for size in SIZES {
        for clients in CLIENTS {
            table.push(run_workload(rt, targets, Workload { op: Op::Put, size, clients, keys: KEYS }, pairs, secs));
        }
    }

    println!();
    println!(
        "| value | clients | Radiant puts/s | etcd puts/s | Radiant/etcd | Radiant MiB/s | etcd MiB/s | Radiant p50 / p99 | etcd p50 / p99 | errors R/E |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in table {
        let mib = |x: f64| x * row.w.size as f64 / 1048576.0;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {:.1} | {:.1} | {} | {} | {}/{} |",
            size_label(row.w.size),
            row.w.clients,
            row.median(0, ops),
            row.median(1, ops),
            row.ratio(ops),
            mib(row.median(0, ops)),
            mib(row.median(1, ops)),
            row.latency(0),
            row.latency(1),
            row.errors(0),
            row.errors(1),
        );
    }
}

/// The pid of the process started with `--config <config>`: the test harness keeps its
/// children's pids to itself, and every node's config path is unique to its cluster.
fn pid_started_with(config: &Path) -> Option<u32> {
    let want = config.as_os_str().as_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.windows(2).any(|a| a[0] == b"--config" && a[1] == want).then_some(pid)
    })
}

/// VmRSS of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Prints one JSON line per process and returns the median VmRSS in MiB of those read.
fn idle_rss(system: &str, procs: &[(String, Option<u32>)]) -> f64 {
    let mut mib = Vec::new();
    for (name, pid) in procs {
        let kib = pid.and_then(vm_rss_kib);
        if kib.is_none() {
            eprintln!("bench-vs-etcd: no VmRSS for {system} {name} (pid {pid:?})");
        }
        println!(
            "{}",
            json!({"system": system, "memory": "idle_vm_rss", "process": name, "pid": pid,
                   "idle_s": IDLE.as_secs(), "vm_rss_kib": kib})
        );
        mib.extend(kib.map(|k| k as f64 / 1024.0));
    }
    median(mib)
}

/// The write-path issue's workloads, idle memory, and the targets.
fn writepath(rt: &Runtime, targets: &[Target; 2], cluster: &Cluster, etcd: &Etcd, pairs: usize, secs: u64) {
    for t in targets {
        let started = Instant::now();
        let failed = rt.block_on(preload(t, WRITEPATH_KEYS, WRITEPATH_SIZE));
        println!(
            "{}",
            json!({"system": t.name(), "preload": WRITEPATH_KEYS, "value_size": WRITEPATH_SIZE,
                   "errors": failed, "seconds": started.elapsed().as_secs_f64()})
        );
    }
    let table: Vec<Row> = WRITEPATH
        .iter()
        .map(|&(op, clients)| {
            let w = Workload { op, size: WRITEPATH_SIZE, clients, keys: WRITEPATH_KEYS };
            run_workload(rt, targets, w, pairs, secs)
        })
        .collect();

    std::thread::sleep(IDLE);
    let radiantd: Vec<_> = cluster.nodes.iter().map(|n| (n.name.clone(), pid_started_with(&n.config_path()))).collect();
    let etcds: Vec<_> = etcd.children.iter().enumerate().map(|(i, c)| (format!("e{i}"), Some(c.id()))).collect();
    let (r_rss, e_rss) = (idle_rss("radiant", &radiantd), idle_rss("etcd", &etcds));

    println!();
    println!("| op | clients | Radiant | etcd | Radiant/etcd | Radiant p50 / p99 | etcd p50 / p99 | errors R/E |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in &table {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {} | {} | {}/{} |",
            if row.w.op == Op::Put { "puts/s" } else { "linearizable gets/s" },
            row.w.clients,
            row.median(0, ops),
            row.median(1, ops),
            row.ratio(ops),
            row.latency(0),
            row.latency(1),
            row.errors(0),
            row.errors(1),
        );
    }
    println!(
        "| idle RSS per process, MiB (median of 3, after {} s idle) | | {r_rss:.1} | {e_rss:.1} | {:.2}× | | | |",
        IDLE.as_secs(),
        if e_rss > 0.0 { r_rss / e_rss } else { f64::NAN },
    );

    let row = |op: Op, clients: usize| table.iter().find(|r| r.w.op == op && r.w.clients == clients);
    let verdict = |ok: bool| if ok { "yes" } else { "no" };
    println!();
    println!("| write-path target | Radiant/etcd (median of per-pair ratios) | met |");
    println!("| --- | --- | --- |");
    if let Some(r) = row(Op::Put, 64) {
        let x = r.ratio(ops);
        println!("| puts/s at 64 clients ≥ 1.5× etcd | {x:.2}× | {} |", verdict(x >= 1.5));
    }
    if let Some(r) = row(Op::Put, 1) {
        let x = r.ratio(p50);
        let met = match x {
            x if x <= 0.8 => "yes, goal 0.8× too",
            x if x <= 1.0 => "yes, goal 0.8× not yet",
            _ => "no",
        };
        println!("| put p50 at 1 client ≤ etcd (goal 0.8×) | {x:.2}× | {met} |");
    }
    if let Some(r) = row(Op::Put, 64) {
        let x = r.ratio(p99);
        println!("| put p99 at 64 clients ≤ etcd | {x:.2}× | {} |", verdict(x <= 1.0));
    }
    if let Some(r) = row(Op::Get, 64) {
        let x = r.ratio(ops);
        println!("| linearizable gets/s at 64 clients ≥ 3× etcd | {x:.2}× | {} |", verdict(x >= 3.0));
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let writepath_mode = args.next_if(|a| a == "writepath").is_some();
    let pairs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);

    let etcd = Etcd::start(tempfile::Builder::new().prefix("radiant-vs-etcd-").tempdir().expect("tempdir"));
    let cluster = Cluster::start(3);
    cluster.full_cluster();
    let leader = wait_until(DEADLINE, "etcd to elect a leader", || etcd.leader());

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let targets = rt.block_on(async {
        let channel = Channel::from_shared(leader.clone()).expect("etcd url").connect().await.expect("connect to etcd");
        let etcd = KvClient::new(channel).max_decoding_message_size(8 << 20).max_encoding_message_size(8 << 20);
        let radiant = Client::new(
            cluster.addrs(&[0, 1, 2]),
            Options { op_timeout: Duration::from_secs(30), rpc_timeout: Duration::from_secs(10) },
        );
        [Target::Radiant(radiant), Target::Etcd(etcd)]
    });

    if writepath_mode {
        writepath(&rt, &targets, &cluster, &etcd, pairs, secs);
    } else {
        by_size(&rt, &targets, pairs, secs);
    }
}
