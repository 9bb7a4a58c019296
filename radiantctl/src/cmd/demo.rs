//! `radiantctl demo`: a whole cluster on loopback, brought up the way an operator would:
//! start radiantd processes, bootstrap the station, join the rest.

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use crate::client;
use crate::cmd::bootstrap;
use crate::cmd::join;
use crate::cmd::show;
use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::Spinner;

const STATE_FILE: &str = "demo.json";

/// What the demo was asked.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Number of radiants.
    pub nodes: usize,
    /// How many of them form the station.
    pub station: usize,
    /// Where data dirs, configs and logs go.
    pub dir: Option<PathBuf>,
    /// Leave the cluster running and exit.
    pub detach: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoNode {
    name: String,
    addr: String,
    pid: u32,
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoState {
    nodes: Vec<DemoNode>,
}

/// Finds the radiantd binary: beside radiantctl first, then on PATH.
pub fn radiantd_binary() -> Result<PathBuf> {
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        let beside = dir.join("radiantd");
        if beside.is_file() {
            return Ok(beside);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("radiantd");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(CtlError::Failed(
        "radiantd not found beside radiantctl or on PATH; build it with `cargo build --release`".into(),
    ))
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Hold all listeners until every port is chosen so no two nodes get the same one.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .map_err(|e| CtlError::Failed(format!("cannot find free ports: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| CtlError::Failed(format!("cannot find free ports: {e}")))
}

fn io_fail(what: &str, path: &Path, e: std::io::Error) -> CtlError {
    CtlError::Failed(format!("{what} {}: {e}", path.display()))
}

fn start_node(binary: &Path, dir: &Path, name: &str, port: u16) -> Result<(DemoNode, Child)> {
    let node_dir = dir.join(name);
    std::fs::create_dir_all(&node_dir).map_err(|e| io_fail("cannot create", &node_dir, e))?;
    let addr = format!("127.0.0.1:{port}");
    let config = node_dir.join("radiantd.toml");
    let text = format!("name = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n", node_dir.join("data").display());
    std::fs::write(&config, text).map_err(|e| io_fail("cannot write", &config, e))?;
    let log_path = node_dir.join("radiantd.log");
    let log = std::fs::File::create(&log_path).map_err(|e| io_fail("cannot create", &log_path, e))?;
    let log2 = log.try_clone().map_err(|e| io_fail("cannot open", &log_path, e))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--config").arg(&config).stdin(Stdio::null()).stdout(log).stderr(log2);
    // Own process group: Ctrl-C in the terminal reaches radiantctl only, which then stops the
    // nodes cleanly instead of having them killed mid-write.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().map_err(|e| CtlError::Failed(format!("cannot start {}: {e}", binary.display())))?;
    Ok((DemoNode { name: name.to_string(), addr, pid: child.id(), dir: node_dir }, child))
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Stops the given processes: SIGTERM, then SIGKILL after 10 s.
fn stop_pids(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: sending SIGTERM to a pid we started.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: as above; the process ignored SIGTERM for 10 s.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Stops processes this radiantctl started: SIGTERM, then SIGKILL after 10 s; reaps them.
fn stop_children(children: &mut [Child]) {
    for c in children.iter() {
        // SAFETY: sending SIGTERM to a child we started.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for c in children.iter_mut() {
        while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the demo.
pub async fn run(args: &DemoArgs, output: Output) -> Result<()> {
    if ![1, 3, 5].contains(&args.station) {
        return Err(CtlError::Usage(format!("--station must be 1, 3 or 5, not {}", args.station)));
    }
    if args.nodes < args.station || args.nodes > 64 {
        return Err(CtlError::Usage(format!(
            "--nodes must be between --station ({}) and 64, not {}",
            args.station, args.nodes
        )));
    }
    let binary = radiantd_binary()?;
    // Listen for Ctrl-C from the start: the nodes run in their own process group, so if
    // radiantctl died of SIGINT half-way they would be left behind.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CtlError::Failed(format!("cannot watch for Ctrl-C: {e}")))?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("radiant-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_fail("cannot create", &dir, e))?;
    if dir.join(STATE_FILE).exists() {
        return Err(CtlError::Usage(format!(
            "{} already holds a demo; stop it with `radiantctl demo down --dir {}` or pick another --dir",
            dir.display(),
            dir.display()
        )));
    }
    let ports = free_ports(args.nodes)?;
    let mut nodes = Vec::new();
    let mut children = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (node, child) = start_node(&binary, &dir, &format!("r{}", i + 1), *port)?;
        nodes.push(node);
        children.push(child);
    }
    let state = DemoState { nodes };
    let state_json = serde_json::to_vec_pretty(&state).map_err(|e| CtlError::Failed(e.to_string()))?;
    std::fs::write(dir.join(STATE_FILE), state_json).map_err(|e| io_fail("cannot write", &dir, e))?;
    let pids: Vec<u32> = state.nodes.iter().map(|n| n.pid).collect();

    let result = tokio::select! {
        r = bring_up(&state, args) => r,
        _ = interrupt.recv() => Err(CtlError::Interrupted("interrupted while bringing the cluster up".into())),
    };
    if let Err(e) = result {
        stop_children(&mut children);
        let _ = std::fs::remove_file(dir.join(STATE_FILE));
        return Err(match e {
            CtlError::Interrupted(m) => CtlError::Interrupted(format!("{m}; nodes stopped")),
            e => CtlError::Failed(format!("{e} (node logs are in {})", dir.display())),
        });
    }
    let endpoint = state.nodes[0].addr.clone();
    let map = client::get_map(std::slice::from_ref(&endpoint)).await?;
    match output {
        Output::Json => crate::output::print_json(&serde_json::json!({
            "dir": dir,
            "endpoint": endpoint,
            "status": show::map_json(&map),
        })),
        Output::Table => show::print_status(&map),
    }
    if args.detach {
        eprintln!(
            "\ncluster left running; try:\n  radiantctl --endpoint {endpoint} status\nstop it with:\n  radiantctl demo down --dir {}",
            dir.display()
        );
        return Ok(());
    }
    eprintln!("\nendpoint {endpoint}; logs in {}; press Ctrl-C to stop", dir.display());
    interrupt.recv().await;
    eprintln!("stopping {} radiants", pids.len());
    stop_children(&mut children);
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn bring_up(state: &DemoState, args: &DemoArgs) -> Result<()> {
    let addrs: Vec<String> = state.nodes.iter().map(|n| n.addr.clone()).collect();
    let wait = Duration::from_secs(60);
    let spinner = Spinner::new("starting radiants");
    for a in &addrs {
        client::wait_for(wait, || async { client::node_status(a).await.map(|s| s.ready.then_some(())) }).await?;
    }
    drop(spinner);
    let station = addrs[..args.station].to_vec();
    bootstrap::run(&bootstrap::BootstrapArgs {
        station: station.clone(),
        shards: 64,
        replicas: 3,
        max_key_bytes: 4096,
        max_value_bytes: 1024 * 1024,
        wait,
    })
    .await?;
    let satellites = addrs[args.station..].to_vec();
    if !satellites.is_empty() {
        join::run(&join::JoinArgs { bondsmith: station, hosts: satellites, wait }).await?;
    }
    Ok(())
}

/// `radiantctl demo down --dir DIR`: stops a detached demo.
pub fn down(dir: &Path) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| CtlError::Usage(format!("no demo in {}: {e}", dir.display())))?;
    let state: DemoState =
        serde_json::from_slice(&bytes).map_err(|e| CtlError::Failed(format!("{}: {e}", path.display())))?;
    let pids: Vec<u32> = state.nodes.iter().map(|n| n.pid).filter(|p| alive(*p)).collect();
    stop_pids(&pids);
    let _ = std::fs::remove_file(&path);
    println!("stopped {} radiants; data left in {}", pids.len(), dir.display());
    Ok(())
}
