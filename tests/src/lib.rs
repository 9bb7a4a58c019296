//! A harness for multi-process cluster tests: real `radiantd` processes on loopback, each
//! with its own temporary data dir and an ephemeral port, driven by the real `radiantctl`.
//!
//! Every cluster gets its own loopback address (127.x.y.z), so parallel tests never compete
//! for ports. Waits are conditions with deadlines ([`wait_until`]), never bare sleeps.
#![deny(missing_docs)]

pub mod chaos;
pub mod netns;
pub mod ownership;
pub mod small_disk;
pub mod workload;

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

/// Deadline for anything that involves an election or a phone-home round, generous so that a
/// loaded CI machine does not make tests flaky. Speed is measured by the benchmarks instead.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Directory holding the built `radiantd` and `radiantctl`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RADIANT_BIN_DIR") {
        return PathBuf::from(d);
    }
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("profile dir") } else { dir };
    dir.to_path_buf()
}

/// Path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} is not built; run `cargo build --workspace` first", p.display());
    p
}

/// Polls `f` until it returns `Some` or the deadline passes; panics naming `what`.
pub fn wait_until<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Initializes test logging once (RUST_LOG controls it).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

/// A loopback address of our own: 127.x.y.z from the process id and a counter.
fn loopback_ip() -> String {
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(n.wrapping_mul(40_503));
    format!("127.{}.{}.{}", 1 + (seed >> 16) % 250, (seed >> 8) % 256, 1 + seed % 250)
}

fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// One radiantd process and its files.
pub struct Node {
    /// Name in its config.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// Its directory (config, data dir, log).
    pub dir: PathBuf,
    /// The network namespace it runs in, in a [`netns::Lab`].
    pub netns: Option<String>,
    /// The radiantd binary and extra environment it starts with.
    pub launch: Launch,
    child: Option<Child>,
}

/// Which radiantd a node runs, and with what extra environment.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The binary; the built `radiantd` if `None`.
    pub radiantd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Node {
    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("radiantd.toml")
    }

    /// Starts the process (again).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("radiantd.log"))
            .expect("open log");
        // `ip netns exec` enters the namespace and execs radiantd, so the child's pid is
        // radiantd's own and signals reach it.
        let radiantd = self.launch.radiantd.clone().unwrap_or_else(|| bin("radiantd"));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(radiantd);
                c
            }
            None => Command::new(radiantd),
        };
        let child = cmd
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(self.config_path())
            // Benchmarks look closer with RADIANT_NODE_LOG (for example `info,radiantd::order=debug`).
            .env("RUST_LOG", std::env::var("RADIANT_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn radiantd");
        self.child = Some(child);
    }

    /// SIGKILL: the process dies with no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: signalling a child we own.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the process, if it runs.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling a child we own.
            unsafe {
                libc::kill(c.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open and its peers see silence.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("radiantd.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A set of radiantd processes on one loopback address.
pub struct Cluster {
    /// The nodes, in creation order.
    pub nodes: Vec<Node>,
    ip: String,
    dir: tempfile::TempDir,
    extra_config: String,
    /// The namespaces the nodes run in, if any; dropped after the nodes.
    lab: Option<std::sync::Arc<netns::Lab>>,
    launch: Launch,
}

impl Cluster {
    /// Starts `n` radiantd processes and waits until each answers.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, "")
    }

    /// Like [`Cluster::start`], with extra lines for every node's config.
    pub fn start_with(n: usize, extra_config: &str) -> Cluster {
        let mut c = Cluster {
            nodes: Vec::new(),
            ip: loopback_ip(),
            dir: tempfile::Builder::new().prefix("radiant-test-").tempdir().expect("tempdir"),
            extra_config: extra_config.to_string(),
            lab: None,
            launch: Launch::default(),
        };
        for _ in 0..n {
            c.add_node();
        }
        c
    }

    /// Like [`Cluster::start_with`], each node in its own network namespace of `lab` (see
    /// [`netns::Lab::available`] for what that needs).
    pub fn start_in_lab(n: usize, extra_config: &str, lab: std::sync::Arc<netns::Lab>, launch: Launch) -> Cluster {
        let mut c = Cluster {
            nodes: Vec::new(),
            ip: String::new(),
            dir: tempfile::Builder::new().prefix("radiant-test-").tempdir().expect("tempdir"),
            extra_config: extra_config.to_string(),
            lab: Some(lab),
            launch,
        };
        for _ in 0..n {
            c.add_node();
        }
        c
    }

    /// The lab the nodes run in, if they do.
    pub fn lab(&self) -> Option<&netns::Lab> {
        self.lab.as_deref()
    }

    /// Adds and starts one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let name = format!("r{}", i + 1);
        let dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&dir).expect("node dir");
        // In a lab every node has an address of its own, so the port can be fixed.
        let (addr, netns) = match &self.lab {
            Some(lab) => (format!("{}:7400", lab.add(i)), Some(lab.ns(i))),
            None => (format!("{}:{}", self.ip, free_port(&self.ip)), None),
        };
        let mut config =
            format!("name = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n", dir.join("data").display());
        config.push_str(&self.extra_config);
        config.push('\n');
        // Benchmarks compare timings through this (for example `election_timeout_ms = 300`).
        if let Ok(extra) = std::env::var("RADIANT_EXTRA_CONFIG") {
            config.push_str(&extra.replace(';', "\n"));
            config.push('\n');
        }
        std::fs::write(dir.join("radiantd.toml"), config).expect("write config");
        let mut node = Node { name, addr, dir, netns, launch: self.launch.clone(), child: None };
        node.start();
        self.nodes.push(node);
        self.wait_ready(i);
        i
    }

    /// Waits until node `i` answers its status call.
    pub fn wait_ready(&self, i: usize) {
        let addr = self.nodes[i].addr.clone();
        wait_until(DEADLINE, &format!("{addr} to answer"), || {
            let out = self.ctl_at(&addr, &["status"]);
            // Any answer from radiantd (even "not part of a cluster yet") means it is up.
            let err = String::from_utf8_lossy(&out.stderr);
            (out.status.code() != Some(4) || !err.contains("cannot connect")).then_some(())
        });
    }

    /// Addresses of nodes by index.
    pub fn addrs(&self, idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| self.nodes[i].addr.clone()).collect()
    }

    /// Runs radiantctl with `--endpoint addr --output json`.
    pub fn ctl_at(&self, addr: &str, args: &[&str]) -> Output {
        self.ctl_within(addr, DEADLINE, args)
    }

    /// Runs radiantctl with `--endpoint addr --output json`, waiting at most `wait` for nodes
    /// and elections (a fault scenario must not stall on a partitioned node).
    pub fn ctl_within(&self, addr: &str, wait: Duration, args: &[&str]) -> Output {
        Command::new(bin("radiantctl"))
            .args(["--endpoint", addr, "--output", "json", "--wait", &wait.as_secs().max(1).to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run radiantctl")
    }

    /// Runs radiantctl against node 0, asserting success; returns parsed JSON stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> Value {
        let out = self.ctl_at(&self.nodes[0].addr, args);
        assert!(
            out.status.success(),
            "radiantctl {args:?} failed ({:?}): {}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("radiantctl {args:?}: bad JSON: {e}"))
    }

    /// `radiantctl bootstrap --station` over the given nodes.
    pub fn bootstrap(&self, station: &[usize]) -> Value {
        let list = self.addrs(station).join(",");
        self.ctl_ok(&["bootstrap", "--station", &list])
    }

    /// `radiantctl join --bondsmith <station> <hosts>`.
    pub fn join(&self, station: &[usize], hosts: &[usize]) -> Value {
        let list = self.addrs(station).join(",");
        let mut args = vec!["join".to_string(), "--bondsmith".into(), list];
        args.extend(self.addrs(hosts));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctl_ok(&args)
    }

    /// `radiantctl status` through node `i`, or `None` if it failed.
    pub fn status_via(&self, i: usize) -> Option<Value> {
        self.status_within(i, DEADLINE)
    }

    /// Like [`Cluster::status_via`], waiting at most `wait`.
    pub fn status_within(&self, i: usize, wait: Duration) -> Option<Value> {
        let out = self.ctl_within(&self.nodes[i].addr, wait, &["status"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until the status read through node `i` satisfies `pred`; on timeout, panics
    /// with the last status seen and the tail of every node's log.
    pub fn wait_status(&self, i: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        let mut last = None;
        loop {
            if let Some(s) = self.status_via(i) {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            assert!(
                Instant::now() < end,
                "timed out after {DEADLINE:?} waiting for {what}; last status: {}\n{}",
                last.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A Kv client seeded with every node's address.
    pub fn client(&self) -> radiant_client::Client {
        radiant_client::Client::new(
            self.addrs(&(0..self.nodes.len()).collect::<Vec<_>>()),
            radiant_client::Options::default(),
        )
    }

    /// Bootstraps a station on the first three nodes, joins every node (station members
    /// included) and waits until all orders have heralds and every shard is placed.
    pub fn full_cluster(&self) -> Value {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.bootstrap(&[0, 1, 2]);
        self.join(&[0, 1, 2], &all);
        let orders = self.nodes.len() / 3;
        self.wait_status(0, "orders with heralds and every shard placed", |s| {
            s["orders"].as_array().is_some_and(|o| o.len() == orders && o.iter().all(|o| o["herald"].is_string()))
                && s["shards"]["assigned"] == s["shards"]["total"]
        })
    }

    /// Index of the node named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            s.push_str(&format!("--- {} ({})\n", n.name, n.addr));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    /// With `RADIANT_TEST_KEEP=1`, a failing test leaves its nodes' data and logs behind and
    /// says where.
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("RADIANT_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept the failed test's nodes in {}", self.dir.path().display());
        }
    }
}

/// Helpers to read `radiantctl --output json status`.
pub mod status {
    use serde_json::Value;

    /// The node entry with `name`.
    pub fn node<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
        s["nodes"].as_array()?.iter().find(|n| n["name"] == name)
    }

    /// The state of the node with `name`.
    pub fn state(s: &Value, name: &str) -> String {
        node(s, name).and_then(|n| n["state"].as_str()).unwrap_or("absent").to_string()
    }

    /// The bondsmith's name.
    pub fn bondsmith(s: &Value) -> Option<String> {
        s["bondsmith"]["name"].as_str().map(String::from)
    }

    /// The herald's name of order `id`.
    pub fn herald(s: &Value, id: u64) -> Option<String> {
        let order = s["orders"].as_array()?.iter().find(|o| o["id"] == id)?;
        let herald = order["herald"].as_str()?;
        s["nodes"].as_array()?.iter().find(|n| n["id"] == herald)?["name"].as_str().map(String::from)
    }

    /// The name of the node with id `id` (ids are decimal strings in the JSON).
    pub fn name_of(s: &Value, id: &str) -> Option<String> {
        s["nodes"].as_array()?.iter().find(|n| n["id"] == id)?["name"].as_str().map(String::from)
    }

    /// Names of the nodes in the order's `field` (`members`, `learners`, `retired`).
    pub fn order_nodes(s: &Value, order: u64, field: &str) -> Vec<String> {
        let Some(o) = s["orders"].as_array().and_then(|a| a.iter().find(|o| o["id"] == order)) else {
            return vec![];
        };
        o[field]
            .as_array()
            .map_or(vec![], |ids| ids.iter().filter_map(|id| id.as_str()).filter_map(|id| name_of(s, id)).collect())
    }

    /// Number of nodes.
    pub fn node_count(s: &Value) -> usize {
        s["nodes"].as_array().map_or(0, |a| a.len())
    }
}
