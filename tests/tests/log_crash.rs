//! The Raft log under crashes: nodes are killed with SIGKILL at random moments (drawn from the
//! seed) while 8 clients write as fast as they can, one node at a time and then all three at
//! once, and restarted. Snapshots every 200 entries make the logs purge and delete segments
//! while this happens. Every node must come back (a log with a hole or a corrupt record refuses
//! to open, so a node that starts is a node whose log has neither), and the recorded history,
//! with a final read of every key, must be linearizable: no acknowledged write lost.
//!
//! On a real disk a SIGKILL keeps what the kernel has buffered; the fault suite's
//! `power_cut` and `lost_unsynced_writes` run the same kind of crash on a disk model that
//! loses unsynced writes (tests/tests/chaos.rs).

use std::time::Duration;

use radiant_tests::Cluster;
use radiant_tests::workload;
use radiant_tests::workload::Rng;
use radiant_tests::workload::Workload;

const CLIENTS: usize = 8;
const KEYS: u64 = 50;

#[test]
fn every_acknowledged_write_survives_kills_during_heavy_writes() {
    radiant_tests::init_logging();
    let mut c = Cluster::start_with(3, "snapshot_logs = 200");
    c.full_cluster();
    let seed = workload::seed(0x10c_c4a5);
    let mut rng = Rng::new(seed);
    let load = Workload::start(c.addrs(&[0, 1, 2]), seed, CLIENTS, KEYS);

    for round in 0..4 {
        let completed = load.completed();
        // Let the writes pile up for a while before each crash.
        radiant_tests::wait_until(Duration::from_secs(30), "writes between two crashes", || {
            (load.completed() >= completed + 300).then_some(())
        });
        std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(500)));
        let victims: Vec<usize> = if round == 3 { vec![0, 1, 2] } else { vec![rng.pick(&[0, 1, 2])] };
        tracing::info!("--- round {round}: kill -9 {victims:?}");
        for &i in &victims {
            c.nodes[i].kill9();
        }
        std::thread::sleep(rng.between(Duration::from_millis(100), Duration::from_millis(800)));
        for &i in &victims {
            c.nodes[i].start();
        }
    }
    let completed = load.completed();
    radiant_tests::wait_until(Duration::from_secs(60), "writes after the last crash", || {
        (load.completed() >= completed + 300).then_some(())
    });
    let logs = c.logs();
    for bad in ["has a hole", "is corrupt at byte"] {
        assert!(!logs.contains(bad), "a node's log says {bad:?}:\n{logs}");
    }
    load.finish(c.addrs(&[0, 1, 2]), 1000, || c.logs());
}
