//! A lab of network namespaces, one per radiantd, so that faults can cut real links: each
//! node lives in its own namespace with one veth into a bridge in the root namespace, where
//! the test and its clients run. Partitions are iptables rules inside a node's namespace, so
//! they drop packets in the kernel, in both TCP directions, and nothing leaks around them
//! (a user-space proxy misses connections a node dials itself).
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking): each lab takes one
//! /24 of it, `198.(18 + n / 256).(n % 256).0/24`, the bridge is `.1` and node `i` is `.(10 + i)`.
//! No traffic leaves the bridge: there is no route or forwarding out of the lab.
//!
//! A lab needs root, `ip` and `iptables`; [`Lab::available`] says why not where they are
//! missing, so a test can skip with that reason.

use std::process::Command;
use std::process::Stdio;

/// One lab: a bridge and the namespaces of its nodes. Dropping it deletes them.
pub struct Lab {
    id: u32,
    subnet: String,
    nodes: std::sync::Mutex<Vec<String>>,
}

/// Runs a command, returning its stderr as the error if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        panic!("lab setup: {e}");
    }
}

/// Whether `program` runs at all (`--version`).
fn present(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

impl Lab {
    /// `Ok` if labs can be built here, else the reason they cannot.
    pub fn available() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (network namespaces and iptables)".into());
        }
        for p in ["ip", "iptables"] {
            if !present(p) {
                return Err(format!("needs `{p}` (apt-get install iproute2 iptables)"));
            }
        }
        Ok(())
    }

    /// Builds an empty lab (the bridge); nodes join with [`Lab::add`].
    pub fn create() -> Lab {
        use std::sync::atomic::AtomicU32;
        use std::sync::atomic::Ordering;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id().wrapping_mul(7).wrapping_add(n)) % 500;
        let subnet = format!("198.{}.{}", 18 + id / 256, id % 256);
        let lab = Lab { id, subnet, nodes: std::sync::Mutex::new(Vec::new()) };
        // A lab of a run that crashed may still be there under the same name.
        let _ = run("ip", &["link", "del", &lab.bridge()]);
        must("ip", &["link", "add", &lab.bridge(), "type", "bridge"]);
        must("ip", &["addr", "add", &format!("{}.1/24", lab.subnet), "dev", &lab.bridge()]);
        must("ip", &["link", "set", &lab.bridge(), "up"]);
        lab
    }

    fn bridge(&self) -> String {
        format!("rad{}br", self.id)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("rad{}n{i}", self.id)
    }

    /// The address of node `i`.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// Creates node `i`'s namespace, linked to the bridge; returns its address.
    pub fn add(&self, i: usize) -> String {
        let (ns, veth, peer) = (self.ns(i), format!("rad{}v{i}", self.id), format!("rad{}p{i}", self.id));
        let _ = run("ip", &["netns", "del", &ns]);
        let _ = run("ip", &["link", "del", &veth]);
        must("ip", &["netns", "add", &ns]);
        must("ip", &["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        must("ip", &["link", "set", &peer, "netns", &ns]);
        must("ip", &["link", "set", &veth, "master", &self.bridge()]);
        must("ip", &["link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            must("ip", &all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["link", "set", &peer, "name", "eth0"]);
        inside(&["addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).push(ns);
        self.ip(i)
    }

    /// Runs iptables inside node `i`'s namespace.
    fn iptables(&self, i: usize, args: &[&str]) {
        let ns = self.ns(i);
        let mut all = vec!["netns", "exec", &ns, "iptables", "-w"];
        all.extend_from_slice(args);
        must("ip", &all);
    }

    /// Drops what node `i` receives from `peers` (`incoming`) and what it sends to them
    /// (`outgoing`). Both TCP directions of a connection cross the same rules, so a one-way
    /// cut also stops the acknowledgements coming back: that is what a one-way partition
    /// means for TCP.
    pub fn cut(&self, i: usize, peers: &[usize], incoming: bool, outgoing: bool) {
        for &p in peers {
            let ip = self.ip(p);
            if incoming {
                self.iptables(i, &["-A", "INPUT", "-s", &ip, "-j", "DROP"]);
            }
            if outgoing {
                self.iptables(i, &["-A", "OUTPUT", "-d", &ip, "-j", "DROP"]);
            }
        }
    }

    /// Drops `percent` % of the packets node `i` receives and sends, at random (a flaky link
    /// or switch, not a cut): TCP retransmits, so requests slow down and some time out.
    pub fn flaky(&self, i: usize, percent: u32) {
        let p = format!("{:.2}", f64::from(percent.min(100)) / 100.0);
        for chain in ["INPUT", "OUTPUT"] {
            self.iptables(i, &["-A", chain, "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"]);
        }
    }

    /// Packets dropped so far by the rules in node `i`'s namespace: the proof that a
    /// partition or a flaky link was felt.
    pub fn dropped(&self, i: usize) -> u64 {
        let ns = self.ns(i);
        let Ok(out) =
            Command::new("ip").args(["netns", "exec", &ns, "iptables", "-w", "-L", "-v", "-n", "-x"]).output()
        else {
            return 0;
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("DROP") && !l.starts_with("Chain"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Removes every rule in node `i`'s namespace.
    pub fn heal(&self, i: usize) {
        self.iptables(i, &["-F", "INPUT"]);
        self.iptables(i, &["-F", "OUTPUT"]);
    }

    /// Removes every rule of every node.
    pub fn heal_all(&self) {
        let count = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).len();
        for i in 0..count {
            self.heal(i);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.nodes.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = run("ip", &["netns", "del", &ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}
