//! One fault per short history: the scenario runner of the fault-injection suite.
//!
//! A scenario brings up a cluster whose nodes each live in a network namespace of a
//! [`Lab`], runs a recorded [`Workload`] against it, injects one fault drawn from its seed
//! (the target, the timing), heals, waits for the cluster to recover within a deadline, and
//! checks the whole history with the linearizability checker. It also checks that the fault
//! really happened (the herald changed, for example): a run whose fault had no effect fails as
//! "not exercised", since it proves nothing.
//!
//! Every scenario prints one line a person or a script can read:
//!
//! ```text
//! chaos: pause_herald seed=0x5eed0003 ops=5123 faults=1 verdict=ok
//! ```
//!
//! The seed is printed first, with the command that replays the same schedule; real processes
//! are not deterministic, so a replay reproduces the schedule, not the interleaving.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

use crate::Cluster;
use crate::Launch;
use crate::netns::Lab;
use crate::status;
use crate::workload::Rng;
use crate::workload::Workload;

/// Clients of a scenario's workload.
const CLIENTS: usize = 8;
/// Keys of a scenario's workload: every one of the 64 shards gets some.
const KEYS: u64 = 128;
/// Operations a stretch of traffic must complete at least.
const MIN_TRAFFIC: usize = 50;
/// How long the cluster has to serve again after the fault is healed.
const RECOVERY: Duration = Duration::from_secs(30);

/// The seed of a run of `scenario`: `RADIANT_CHAOS_SEED` (decimal or 0x-hex) if set, else one
/// from the clock, so that every CI run explores another schedule.
pub fn seed() -> u64 {
    if let Ok(s) = std::env::var("RADIANT_CHAOS_SEED") {
        let parsed = match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        };
        if let Some(v) = parsed {
            return v;
        }
        panic!("RADIANT_CHAOS_SEED={s} is neither decimal nor 0x-hex");
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    nanos ^ (std::process::id() as u64).rotate_left(32)
}

/// Prints a `chaos:` line where a person running the suite sees it: straight to stderr, past
/// the test harness's capture of `println!`, so that CI logs show every verdict and seed.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One fault's start and end on the history's clock (ns since the workload began).
#[derive(Debug, Clone)]
pub struct Fault {
    /// What was done, to whom.
    pub what: String,
    /// When it began.
    pub start_ns: u64,
    /// When it was healed (or the node restarted), if it was.
    pub end_ns: Option<u64>,
}

/// Why a run failed.
pub enum Failure {
    /// The checker rejected the history (or it was too short): the panic the workload raised,
    /// with the checker's report.
    History(Box<dyn std::any::Any + Send>),
    /// Another check failed (not exercised, no recovery, replicas that did not converge).
    Check(String),
}

impl Failure {
    /// Fails the test with it.
    pub fn raise(self) -> ! {
        match self {
            Failure::History(panic) => std::panic::resume_unwind(panic),
            Failure::Check(why) => panic!("{why}"),
        }
    }
}

/// A running scenario: the cluster in its lab, the workload, and the fault timeline.
pub struct Run {
    /// The scenario's name.
    pub name: &'static str,
    /// The run's seed.
    pub seed: u64,
    /// Draws the schedule.
    pub rng: Rng,
    /// The cluster; node `i` runs in the lab's namespace `i`.
    pub cluster: Cluster,
    /// The recorded workload.
    load: Option<Workload>,
    /// The faults so far.
    pub faults: Vec<Fault>,
    /// When the run began, before its cluster came up.
    started: Instant,
    /// Why the workload made no progress in a stretch of traffic, if it did not.
    stuck: Option<String>,
}

/// Whether chaos scenarios can run here; prints the reason and returns false if not. Without
/// root (or without iptables) every scenario is skipped with that message, so a plain `cargo
/// test` on a developer's machine stays green and says what it did not test.
pub fn available(name: &str) -> bool {
    match Lab::available() {
        Ok(()) => true,
        Err(why) => {
            say(&format!("chaos: {name} skipped: {why}"));
            false
        }
    }
}

/// Scenarios share the machine's two cores: one at a time, or their timings would be the
/// other scenarios' faults.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Run {
    /// Brings up three nodes in a lab, each a station member and all three one order of 3
    /// serving all 64 shards, and starts the workload.
    pub fn start(name: &'static str) -> (Run, std::sync::MutexGuard<'static, ()>) {
        Self::start_with(name, Launch::default(), "")
    }

    /// Like [`Run::start`], the nodes running `launch` (another radiantd build, extra
    /// environment) with `extra_config` lines in their configs.
    pub fn start_with(
        name: &'static str,
        launch: Launch,
        extra_config: &str,
    ) -> (Run, std::sync::MutexGuard<'static, ()>) {
        Self::start_sized(name, launch, extra_config, 3)
    }

    /// Like [`Run::start_with`] with `nodes` nodes, all of them members of order 1 (bootstrapped
    /// with `--replicas NODES`); the first three are the station. Five nodes make the
    /// partitions that need more than one node on each side (halves, a ring, a bridge).
    pub fn start_sized(
        name: &'static str,
        launch: Launch,
        extra_config: &str,
        nodes: usize,
    ) -> (Run, std::sync::MutexGuard<'static, ()>) {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let begun = Instant::now();
        let seed = seed();
        say(&format!(
            "chaos: {name} seed={seed:#x} (replay: RADIANT_CHAOS_SEED={seed:#x} cargo test -p radiant-tests --test chaos {name})"
        ));
        let lab = Arc::new(Lab::create());
        let cluster = Cluster::start_in_lab(nodes, extra_config, lab, launch);
        let everyone: Vec<usize> = (0..nodes).collect();
        if nodes == 3 {
            cluster.full_cluster();
        } else {
            let station = cluster.addrs(&[0, 1, 2]).join(",");
            cluster.ctl_ok(&["bootstrap", "--station", &station, "--replicas", &nodes.to_string()]);
            cluster.join(&[0, 1, 2], &everyone);
            cluster.wait_status(0, "order 1 of every node, with a herald and every shard", |s| {
                s["orders"].as_array().is_some_and(|o| {
                    o.len() == 1
                        && o[0]["herald"].is_string()
                        && o[0]["members"].as_array().is_some_and(|m| m.len() == nodes)
                }) && s["shards"]["assigned"] == s["shards"]["total"]
            });
        }
        let mut load = Workload::start(cluster.addrs(&everyone), seed, CLIENTS, KEYS);
        for n in &cluster.nodes {
            load.add_reader(n.addr.clone());
        }
        let run = Run {
            name,
            seed,
            rng: Rng::new(seed),
            cluster,
            load: Some(load),
            faults: Vec::new(),
            started: begun,
            stuck: None,
        };
        (run, guard)
    }

    fn lab(&self) -> &Lab {
        self.cluster.lab().expect("a chaos cluster runs in a lab")
    }

    fn now_ns(&self) -> u64 {
        self.load.as_ref().map_or_else(|| self.started.elapsed(), |l| l.elapsed()).as_nanos() as u64
    }

    /// Lets the workload run for at least `d` and until it completed [`MIN_TRAFFIC`] more
    /// operations (the history before and after a fault). If it does not get there within
    /// [`RECOVERY`] the run fails at its end, with its verdict line and its artifacts: a
    /// cluster that serves nothing is no history to check.
    pub fn traffic(&mut self, d: Duration) {
        let (from, begun) = (self.completed(), Instant::now());
        loop {
            let done = self.completed().saturating_sub(from);
            if begun.elapsed() >= d && done >= MIN_TRAFFIC {
                return;
            }
            if begun.elapsed() >= d + RECOVERY {
                let why = format!("only {done} operations completed in {:?} of traffic", begun.elapsed());
                self.stuck.get_or_insert(why);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `ops` more operations completed, or `deadline` passed; says whether they
    /// did.
    pub fn progress(&self, ops: usize, deadline: Duration) -> bool {
        let (target, end) = (self.completed() + ops, Instant::now() + deadline);
        while self.completed() < target {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Operations completed so far.
    pub fn completed(&self) -> usize {
        self.load.as_ref().map_or(0, |l| l.completed())
    }

    /// Whether an operation called since fault `i` began waited at least `at_least`, or timed
    /// out with an unknown outcome: the proof that a stall was felt.
    pub fn waited_since(&self, i: usize, at_least: Duration) -> bool {
        let start = self.faults[i].start_ns;
        let history = self.load.as_ref().map(|l| l.history()).unwrap_or_default();
        history.iter().filter(|o| o.call >= start).any(|o| match o.ret() {
            Some(ret) => Duration::from_nanos(ret.saturating_sub(o.call)) >= at_least,
            None => o.outcome == radiant_lincheck::Outcome::Unknown,
        })
    }

    /// Records the start of a fault; returns its index for [`Run::end_fault`].
    pub fn begin_fault(&mut self, what: String) -> usize {
        tracing::info!("--- fault: {what}");
        self.faults.push(Fault { what, start_ns: self.now_ns(), end_ns: None });
        self.faults.len() - 1
    }

    /// Records the end of fault `i`.
    pub fn end_fault(&mut self, i: usize) {
        let now = self.now_ns();
        tracing::info!("--- healed: {}", self.faults[i].what);
        self.faults[i].end_ns = Some(now);
    }

    /// The status as node `i` sees it, with a short wait: during a fault a long wait would
    /// stall the schedule.
    pub fn status_quick(&self, i: usize) -> Option<Value> {
        self.cluster.status_within(i, Duration::from_secs(2))
    }

    /// The index of order 1's herald, as some node's status tells.
    pub fn herald(&self) -> Option<usize> {
        self.herald_of(1)
    }

    /// The index of `order`'s herald, as some node's status tells.
    pub fn herald_of(&self, order: u64) -> Option<usize> {
        (0..self.cluster.nodes.len()).find_map(|i| {
            let s = self.status_quick(i)?;
            Some(self.cluster.index_of(&status::herald(&s, order)?))
        })
    }

    /// The index of the bondsmith, as some node's status tells.
    pub fn bondsmith(&self) -> Option<usize> {
        (0..self.cluster.nodes.len())
            .find_map(|i| Some(self.cluster.index_of(&status::bondsmith(&self.status_quick(i)?)?)))
    }

    /// Adds `n` nodes to the lab and joins them as satellites: with three, a second order
    /// forms and the bondsmith rebalances the shards onto it (moves with data).
    pub fn grow(&mut self, n: usize) {
        let added: Vec<usize> = (0..n).map(|_| self.cluster.add_node()).collect();
        self.cluster.join(&[0, 1, 2], &added);
    }

    /// Waits up to `deadline` until `name` is retired from order 1 and three other members
    /// serve it; returns whether that happened. Asks every node but `name`.
    pub fn replaced(&self, name: &str, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        let ask: Vec<usize> = (0..self.cluster.nodes.len()).filter(|&i| self.cluster.nodes[i].name != name).collect();
        while Instant::now() < end {
            for &i in &ask {
                if let Some(s) = self.status_quick(i) {
                    let members = status::order_nodes(&s, 1, "members");
                    if members.len() == 3
                        && !members.iter().any(|m| m == name)
                        && status::order_nodes(&s, 1, "retired").iter().any(|r| r == name)
                    {
                        return true;
                    }
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Waits up to `deadline` for a shard move in phase `copying`; returns its source and
    /// destination orders.
    pub fn move_copying(&self, deadline: Duration) -> Option<(u64, u64)> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            let s = self.status_quick(0);
            let copying = s.as_ref().and_then(|s| {
                let m = s["moves"].as_array()?.iter().find(|m| m["phase"] == "copying")?;
                Some((m["from"].as_u64()?, m["to"].as_u64()?))
            });
            if copying.is_some() {
                return copying;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits up to `deadline` until no move is under way and every order serves the same
    /// number of shards; `Err` with the last status otherwise.
    pub fn balanced(&self, deadline: Duration) -> Result<(), String> {
        let end = Instant::now() + deadline;
        let mut last = String::from("no status");
        while Instant::now() < end {
            if let Some(s) = self.status_quick(0) {
                let orders = s["orders"].as_array().cloned().unwrap_or_default();
                let counts: Vec<u64> = orders.iter().filter_map(|o| o["shards"].as_u64()).collect();
                let idle = s["moves"].as_array().is_some_and(|m| m.is_empty());
                if idle && counts.len() > 1 && counts.iter().all(|c| *c == counts[0]) {
                    return Ok(());
                }
                last = format!("orders serve {counts:?} shards, moves {}", s["moves"]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("the shards were not balanced within {deadline:?}: {last}"))
    }

    /// Waits up to `deadline` for a node other than `old` to be order 1's herald, asking only
    /// the nodes in `ask`. Returns whether it happened: the proof that a fault on the herald
    /// was felt.
    pub fn herald_moved_from(&self, old: usize, ask: &[usize], deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            for &i in ask {
                let new = self.status_quick(i).and_then(|s| status::herald(&s, 1)).map(|n| self.cluster.index_of(&n));
                if new.is_some_and(|n| n != old) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Whether one of `ask` says, from its own Raft state (its supervisor's `Status`, not the
    /// station's map), that it leads `order`, within `deadline`: a side of a partition that the
    /// station cannot hear from still shows its election here.
    pub fn leads_locally(&self, ask: &[usize], order: u64, deadline: Duration) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            for &i in ask {
                let addr = format!("http://{}", self.cluster.nodes[i].addr);
                let leads = rt.block_on(async {
                    let call = async {
                        let mut c = radiant_proto::supervisor_client::SupervisorClient::connect(addr).await.ok()?;
                        let s = c.status(radiant_proto::StatusRequest {}).await.ok()?.into_inner();
                        Some(s.replicas.iter().any(|r| r.order_id == order && r.herald))
                    };
                    tokio::time::timeout(Duration::from_secs(1), call).await.ok().flatten()
                });
                if leads == Some(true) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Sets failpoint `name` of node `i` to `actions` through its Chaos RPC (the node must run
    /// a `failpoints` build).
    pub fn failpoint(&self, i: usize, name: &str, actions: &str) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let addr = format!("http://{}", self.cluster.nodes[i].addr);
        let req = radiant_proto::SetFailpointRequest { name: name.into(), actions: actions.into() };
        rt.block_on(async {
            let mut c = radiant_proto::chaos_client::ChaosClient::connect(addr).await.map_err(|e| e.to_string())?;
            c.set_failpoint(req).await.map(|_| ()).map_err(|s| s.message().to_string())
        })
    }

    /// Waits up to `deadline` for node `i`'s process to exit by itself; returns whether it did.
    pub fn exited(&mut self, i: usize, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if !self.cluster.nodes[i].is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Partitions the nodes so that each node `i` reaches exactly `sees[i]` (both ways) and
    /// nothing else of the cluster; clients still reach every node.
    pub fn connect_only(&self, sees: &[Vec<usize>]) {
        for (i, reach) in sees.iter().enumerate() {
            let cut: Vec<usize> = (0..sees.len()).filter(|p| *p != i && !reach.contains(p)).collect();
            if !cut.is_empty() {
                self.cut(i, &cut, true, true);
            }
        }
    }

    /// Cuts node `i` from `peers` (see [`Lab::cut`]).
    pub fn cut(&self, i: usize, peers: &[usize], incoming: bool, outgoing: bool) {
        self.lab().cut(i, peers, incoming, outgoing);
    }

    /// Makes node `i`'s link drop `percent` % of its packets (see [`Lab::flaky`]).
    pub fn flaky(&self, i: usize, percent: u32) {
        self.lab().flaky(i, percent);
    }

    /// Packets node `i`'s rules dropped so far (see [`Lab::dropped`]).
    pub fn dropped(&self, i: usize) -> u64 {
        self.lab().dropped(i)
    }

    /// Removes every partition.
    pub fn heal_all(&self) {
        self.lab().heal_all();
    }

    /// Waits until order 1 has a herald and accepts a write again, within [`RECOVERY`].
    fn recovered(&self) -> Result<(), String> {
        let end = Instant::now() + RECOVERY;
        let client = radiant_client::Client::new(
            self.cluster.addrs(&[0, 1, 2]),
            radiant_client::Options { op_timeout: Duration::from_secs(2), rpc_timeout: Duration::from_secs(1) },
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut last = String::new();
        while Instant::now() < end {
            match rt.block_on(client.put(b"chaos-recovered", b"yes")) {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("no write accepted within {RECOVERY:?} of the heal (last error: {last})"))
    }

    /// Waits until the replicas of every order agree on their applied index and the digest of
    /// their rows, once the workload stopped: a replica that lost or doubled a write, or never
    /// caught up, shows here even when no client read the key from it. Then the station's map
    /// must match the memberships the orders' logs hold ([`Run::map_matches`]).
    fn converged(&self, alive: &[usize]) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let end = Instant::now() + RECOVERY;
        let mut last = String::new();
        while Instant::now() < end {
            let digests = rt.block_on(async {
                let mut all = Vec::new();
                // A node killed for good (replaced) has nothing to report.
                for n in alive.iter().map(|&i| &self.cluster.nodes[i]) {
                    let Ok(mut c) =
                        radiant_proto::supervisor_client::SupervisorClient::connect(format!("http://{}", n.addr)).await
                    else {
                        return None;
                    };
                    let status = c.status(radiant_proto::StatusRequest {}).await.ok()?.into_inner();
                    all.extend(status.replicas.into_iter().map(|r| (n.name.clone(), r)));
                }
                Some(all)
            });
            if let Some(digests) = digests {
                let mut by_order: std::collections::BTreeMap<u64, Vec<(String, radiant_proto::ReplicaDigest)>> =
                    std::collections::BTreeMap::new();
                for (name, d) in digests {
                    by_order.entry(d.order_id).or_default().push((name, d));
                }
                let split: Vec<String> = by_order
                    .iter()
                    .filter(|(_, rs)| {
                        let key = |d: &radiant_proto::ReplicaDigest| (d.applied_index, d.keys, d.bytes, d.sum);
                        rs.iter().any(|(_, d)| key(d) != key(&rs[0].1))
                    })
                    .map(|(order, rs)| {
                        let each: Vec<String> = rs
                            .iter()
                            .map(|(n, d)| {
                                format!(
                                    "{n}: applied {} keys {} bytes {} sum {:#x}",
                                    d.applied_index, d.keys, d.bytes, d.sum
                                )
                            })
                            .collect();
                        format!("order {order}: {}", each.join("; "))
                    })
                    .collect();
                if split.is_empty() && by_order.values().all(|rs| rs.len() >= 3) {
                    match self.map_matches(&by_order) {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e,
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                last = split.join(" | ");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("the replicas did not converge within {RECOVERY:?}: {last}"))
    }

    /// Whether no node panicked during the run, but where a failpoint ordered a crash (its
    /// message, on the line after `panicked at`, names the failpoint; two threads can hit one
    /// at once, so each panic is judged by its own message).
    fn no_panics(&self) -> Result<(), String> {
        for n in &self.cluster.nodes {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if !line.contains("panicked at") {
                    continue;
                }
                let message = lines.get(i + 1).copied().unwrap_or("");
                if !line.contains("failpoint") && !message.contains("failpoint") {
                    return Err(format!("{} panicked: {line} {message}", n.name));
                }
            }
        }
        Ok(())
    }

    /// Whether the station's map names, for every order, exactly the voters and learners
    /// that the order's own Raft log has (as its replicas report them in `by_order`), and
    /// whether a replica runs on every member: a map that drifted from the real memberships
    /// would route clients to nodes that do not serve, or count a quorum that does not exist.
    fn map_matches(
        &self,
        by_order: &std::collections::BTreeMap<u64, Vec<(String, radiant_proto::ReplicaDigest)>>,
    ) -> Result<(), String> {
        let status =
            (0..self.cluster.nodes.len()).find_map(|i| self.status_quick(i)).ok_or("no node answered a status call")?;
        let ids = |v: &Value| -> std::collections::BTreeSet<String> {
            v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect()
        };
        let names: std::collections::BTreeMap<String, String> = status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| Some((n["name"].as_str()?.to_string(), n["id"].as_str()?.to_string())))
            .collect();
        for order in status["orders"].as_array().into_iter().flatten() {
            let id = order["id"].as_u64().unwrap_or(0);
            let (members, learners) = (ids(&order["members"]), ids(&order["learners"]));
            let replicas = by_order.get(&id).map(Vec::as_slice).unwrap_or_default();
            for (name, d) in replicas {
                let voters: std::collections::BTreeSet<String> = d.voters.iter().map(u64::to_string).collect();
                let log_learners: std::collections::BTreeSet<String> = d.learners.iter().map(u64::to_string).collect();
                if voters != members || log_learners != learners {
                    return Err(format!(
                        "order {id}: the map has members {members:?} and learners {learners:?}, {name}'s log has \
                         voters {voters:?} and learners {log_learners:?}"
                    ));
                }
            }
            let hosting: std::collections::BTreeSet<String> =
                replicas.iter().filter_map(|(name, _)| names.get(name).cloned()).collect();
            if !members.is_subset(&hosting) {
                return Err(format!("order {id}: members {members:?}, replicas run on {hosting:?}"));
            }
        }
        Ok(())
    }

    /// Keeps what a person needs to study a failed run (every run, with `RADIANT_CHAOS_KEEP`)
    /// under `target/chaos/NAME-SEED/`: every node's directory (log, config, data dir), the
    /// fault timeline and the verdict.
    fn keep_artifacts(&self, verdict: &str) {
        let dest = crate::bin_dir().join("..").join("chaos").join(format!("{}-{:#x}", self.name, self.seed));
        let _ = std::fs::remove_dir_all(&dest);
        if std::fs::create_dir_all(&dest).is_err() {
            return;
        }
        let _ = std::process::Command::new("cp").arg("-a").arg(self.cluster.dir()).arg(dest.join("nodes")).status();
        let mut timeline = format!("seed {:#x}\nverdict {verdict}\n", self.seed);
        for f in &self.faults {
            timeline.push_str(&format!("fault {:?} start_ns {} end_ns {:?}\n", f.what, f.start_ns, f.end_ns));
        }
        let _ = std::fs::write(dest.join("faults.txt"), timeline);
        say(&format!("chaos:   kept the run under {}", dest.display()));
    }

    /// Ends the run: heals everything, waits for recovery, stops the workload, reads every
    /// key, checks the history, and prints the verdict line. `exercised` is `None` if the
    /// fault was felt, else what was missing. Panics (failing the test) on any failed check.
    pub fn finish(self, exercised: Option<String>) {
        if let Err(failure) = self.conclude(exercised) {
            failure.raise();
        }
    }

    /// [`Run::finish`] without the panic.
    pub fn conclude(mut self, exercised: Option<String>) -> Result<(), Failure> {
        self.heal_all();
        for n in &self.cluster.nodes {
            n.resume();
        }
        let mut failure = exercised.map(|why| format!("not exercised: {why}")).or_else(|| self.stuck.take());
        if failure.is_none() {
            failure = self.recovered().err();
        }
        if failure.is_none() {
            failure = self.no_panics().err();
        }
        let load = self.load.take().expect("workload");
        let ops = load.completed();
        let faults = self.faults.len();
        let cluster = &self.cluster;
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            load.finish(cluster.addrs(&[0, 1, 2]), 200, || cluster.logs())
        }));
        if failure.is_none() && checked.is_ok() {
            let alive: Vec<usize> =
                (0..self.cluster.nodes.len()).filter(|&i| self.cluster.nodes[i].is_running()).collect();
            failure = self.converged(&alive).err();
        }
        let verdict = match (&failure, &checked) {
            (None, Ok(_)) => "ok".to_string(),
            (Some(f), _) => format!("FAILED ({f})"),
            (None, Err(_)) => "FAILED (history not linearizable or too short; see the panic)".to_string(),
        };
        if verdict != "ok" || std::env::var_os("RADIANT_CHAOS_KEEP").is_some() {
            self.keep_artifacts(&verdict);
        }
        let ops = checked.as_ref().map_or(ops, |n| *n);
        let secs = self.started.elapsed().as_secs_f64();
        say(&format!(
            "chaos: {} seed={:#x} ops={ops} faults={faults} secs={secs:.1} verdict={verdict}",
            self.name, self.seed
        ));
        for f in &self.faults {
            let end = f.end_ns.map_or("-".to_string(), |e| (e / 1_000_000).to_string());
            say(&format!("chaos:   fault {:?} from {} ms to {end} ms", f.what, f.start_ns / 1_000_000));
        }
        if let Err(panic) = checked {
            return Err(Failure::History(panic));
        }
        if let Some(f) = failure {
            return Err(Failure::Check(format!("{}: {f}\n{}", self.name, self.cluster.logs())));
        }
        Ok(())
    }
}
