//! Snapshots of orders too large for one message: a follower that fell behind an order of
//! hundreds of megabytes catches up through the streamed snapshot.

use std::time::Duration;
use std::time::Instant;

use radiant_tests::Cluster;

const MIB: usize = 1024 * 1024;

/// Values larger than any one gRPC message the old transport could carry in total (256 MiB
/// was its cap, and 10 s its deadline for the whole transfer).
const VALUES: usize = 220;

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; MIB];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

fn key(i: usize) -> Vec<u8> {
    format!("big-{i:03}").into_bytes()
}

#[test]
fn a_follower_of_a_large_order_catches_up_through_a_streamed_snapshot() {
    radiant_tests::init_logging();
    // Snapshots every 100 entries, keeping 20 behind: the follower's gap of 220 entries is
    // purged from the log, and rebuilding a 200 MiB snapshot every 20 entries (as the small
    // snapshot test does) would only slow the test down.
    let mut c = Cluster::start_with(3, "snapshot_logs = 100");
    let s = c.full_cluster();
    let herald = radiant_tests::status::herald(&s, 1).unwrap();
    let f = (0..3).find(|&i| c.nodes[i].name != herald).unwrap();
    tracing::info!("--- stop follower {} and write {VALUES} values of 1 MiB", c.nodes[f].name);
    c.nodes[f].kill9();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = radiant_client::Client::new(
        c.addrs(&(0..3).filter(|&i| i != f).collect::<Vec<_>>()),
        radiant_client::Options::default(),
    );
    let started = Instant::now();
    rt.block_on(async {
        // Four writers: the log's fsyncs are shared by the entries in flight.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let client = client.clone();
                tokio::spawn(async move {
                    for i in (w..VALUES).step_by(4) {
                        client.put(&key(i), &value(i)).await.unwrap_or_else(|e| panic!("put {i}: {e}"));
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
    tracing::info!("--- wrote {VALUES} MiB in {:?}; restart the follower", started.elapsed());

    let started = Instant::now();
    c.nodes[f].start();
    // Stale reads straight over gRPC: the client library would follow a redirect to the herald
    // while the follower's replica is not running yet.
    let addr = c.nodes[f].addr.clone();
    let local = |key: Vec<u8>| {
        let addr = addr.clone();
        async move {
            let mut kv = radiant_proto::kv_client::KvClient::connect(format!("http://{addr}")).await.ok()?;
            let r = kv.get(radiant_proto::GetRequest { key, stale: true }).await.ok()?;
            r.into_inner().value
        }
    };
    rt.block_on(async {
        let deadline = Instant::now() + radiant_tests::DEADLINE * 3;
        while local(key(VALUES - 1)).await.is_none() {
            assert!(Instant::now() < deadline, "follower never caught up:\n{}", c.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tracing::info!("--- the follower caught up in {:?}; check every value on it", started.elapsed());
    let log = c.nodes[f].log();
    assert!(log.contains("installed snapshot"), "the follower caught up without a snapshot:\n{log}");
    rt.block_on(async {
        for i in 0..VALUES {
            assert!(local(key(i)).await == Some(value(i)), "value {i} on the follower");
        }
    });

    // The received snapshot is the follower's current one, on disk only. It covers the log up
    // to the leader's last build (every 100 entries); the entries after it came from the log.
    let dir = c.nodes[f].dir.join("data/snapshots/o1");
    let snaps: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    assert_eq!(snaps.len(), 1, "one snapshot file, no leftovers: {snaps:?}");
    assert!(snaps[0].0.ends_with(".snap") && snaps[0].1 >= 150 * MIB as u64, "{snaps:?}");
}
