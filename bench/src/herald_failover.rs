//! Herald failover: one order of 3, a client writing continuously; SIGKILL the herald and
//! measure the time from the kill to the next acknowledged write. Repeats RUNS times (the
//! killed node is restarted and the cluster left to settle between runs) and prints p50/p99.
//!
//!   cargo build --release --workspace && target/release/bench-herald-failover [RUNS]

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use radiant_client::Options;
use radiant_proto::supervisor_client::SupervisorClient;
use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::status;
use radiant_tests::wait_until;

/// The one node whose replica of order 1 says it leads, if exactly one does.
async fn local_herald(c: &Cluster) -> Option<usize> {
    let mut leaders = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let call = async {
            let mut s = SupervisorClient::connect(format!("http://{}", n.addr)).await.ok()?;
            let st = s.status(radiant_proto::StatusRequest {}).await.ok()?.into_inner();
            Some(st.replicas.iter().any(|r| r.order_id == 1 && r.herald))
        };
        if tokio::time::timeout(Duration::from_secs(1), call).await.ok().flatten() == Some(true) {
            leaders.push(i);
        }
    }
    (leaders.len() == 1).then(|| leaders[0])
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let mut c = Cluster::start(3);
    c.full_cluster();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = radiant_client::Client::new(
        c.addrs(&[0, 1, 2]),
        Options { op_timeout: Duration::from_secs(30), rpc_timeout: Duration::from_millis(500) },
    );
    // The instant of every acknowledged write.
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let writer = {
        let (acks, client) = (acks.clone(), client.clone());
        rt.spawn(async move {
            let mut i = 0u64;
            loop {
                i += 1;
                if client.put(format!("probe-{}", i % 100).as_bytes(), b"v").await.is_ok() {
                    acks.lock().expect("acks").push(Instant::now());
                }
            }
        })
    };
    let mut gaps = Vec::new();
    println!("run  kill_to_next_write_ms");
    for run in 1..=runs {
        wait_until(DEADLINE, "writes flowing", || (acks.lock().expect("acks").len() > 50).then_some(()));
        // The node that leads order 1 now, by its own Raft state: the station's map can lag a
        // leadership change (a restarted node may be handed the order back), and killing a
        // follower would measure nothing.
        let i = wait_until(DEADLINE, "one node leading order 1", || rt.block_on(local_herald(&c)));
        let herald = c.nodes[i].name.clone();
        let killed = Instant::now();
        c.nodes[i].kill9();
        let next = wait_until(DEADLINE, "a write after the kill", || {
            acks.lock().expect("acks").iter().find(|t| **t > killed).copied()
        });
        let gap = next.duration_since(killed).as_secs_f64() * 1e3;
        println!("{run:>3}  {gap:>8.0}");
        gaps.push(gap);
        c.nodes[i].start();
        let reader = (0..3).find(|&j| j != i).expect("reader");
        wait_until(DEADLINE, "the restarted node back", || {
            c.status_via(reader).filter(|s| status::state(s, &herald) == "member").map(|_| ())
        });
        acks.lock().expect("acks").clear();
    }
    writer.abort();
    gaps.sort_by(|a, b| a.total_cmp(b));
    let pick = |p: f64| gaps[((gaps.len() as f64 * p).ceil() as usize).clamp(1, gaps.len()) - 1];
    println!(
        "kill -> next acknowledged write: p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({runs} runs)",
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
}
