//! Linearizability under faults: concurrent clients over many keys while the herald is
//! killed with SIGKILL twice (and restarted). The recorded history, including a final read of
//! every key, is checked per key by the Wing-Gong checker: a stale read, a lost acknowledged
//! write or a write applied twice all fail the test.

use std::time::Duration;

use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::status;
use radiant_tests::wait_until;
use radiant_tests::workload;
use radiant_tests::workload::Workload;

const CLIENTS: usize = 8;
const KEYS: u64 = 50;
const RUN_FOR: Duration = Duration::from_secs(12);

fn kill_the_herald(c: &mut Cluster) {
    let s = c.wait_status(0, "a registered herald", |s| status::herald(s, 1).is_some());
    let old = status::herald(&s, 1).unwrap();
    let i = c.index_of(&old);
    tracing::info!("--- kill -9 the herald {old}");
    c.nodes[i].kill9();
    let reader = (0..c.nodes.len()).find(|&j| j != i).unwrap();
    wait_until(DEADLINE, "a new herald", || {
        c.status_via(reader).and_then(|s| status::herald(&s, 1)).filter(|h| *h != old)
    });
    tracing::info!("--- restart {old}");
    c.nodes[i].start();
}

#[test]
fn history_stays_linearizable_while_the_herald_is_killed_twice() {
    radiant_tests::init_logging();
    let mut c = Cluster::start(3);
    c.full_cluster();
    let load = Workload::start(c.addrs(&[0, 1, 2]), workload::seed(0x5eed_1234), CLIENTS, KEYS);

    // Faults, on this thread: two herald kills, spaced through the run.
    std::thread::sleep(Duration::from_secs(2)); // let the workload build up history first
    kill_the_herald(&mut c);
    std::thread::sleep(Duration::from_secs(2));
    kill_the_herald(&mut c);
    while load.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(100));
    }
    load.finish(c.addrs(&[0, 1, 2]), 500, || c.logs());
}
