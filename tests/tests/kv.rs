//! The data path end to end: writes, reads, bad input, and a full restart.

use radiant_client::ClientError;
use radiant_tests::Cluster;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

#[test]
fn put_get_del_scan_through_the_cli_from_any_node() {
    radiant_tests::init_logging();
    let c = Cluster::start(3);
    c.full_cluster();
    for i in 0..3 {
        let out = c.ctl_at(&c.nodes[i].addr, &["put", &format!("user/{i}"), &format!("v{i}")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for i in 0..3 {
        // Read through a node other than the writer: every node routes to the herald.
        let v = c.ctl_ok(&["get", &format!("user/{}", (i + 1) % 3)]);
        assert_eq!(v["value"], format!("v{}", (i + 1) % 3));
    }
    let absent = c.ctl_ok(&["get", "nope"]);
    assert!(absent["value"].is_null());
    let table = radiant_tests::bin("radiantctl");
    let out =
        std::process::Command::new(&table).args(["--endpoint", &c.nodes[1].addr, "get", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    let d = c.ctl_ok(&["del", "user/1"]);
    assert_eq!(d["existed"], true);
    let scan = c.ctl_ok(&["scan", "user/"]);
    let keys: Vec<&str> = scan.as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["user/0", "user/2"], "scan is in key order across shards");
    let limited = c.ctl_ok(&["scan", "user/", "--limit", "1"]);
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let stale = c.ctl_ok(&["get", "user/2", "--stale"]);
    assert_eq!(stale["value"], "v2");
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    radiant_tests::init_logging();
    let c = Cluster::start(3);
    c.full_cluster();
    let client = c.client();
    runtime().block_on(async {
        let big_key = vec![b'k'; 4097];
        match client.put(&big_key, b"v").await {
            Err(ClientError::Invalid(m)) => assert!(m.contains("4096"), "{m}"),
            other => panic!("oversized key: {other:?}"),
        }
        let big_value = vec![b'v'; 1024 * 1024 + 1];
        match client.put(b"k", &big_value).await {
            Err(ClientError::Invalid(m)) => assert!(m.contains("1048576"), "{m}"),
            other => panic!("oversized value: {other:?}"),
        }
        assert!(matches!(client.put(b"", b"v").await, Err(ClientError::Invalid(_))));
        assert_eq!(client.get(b"k", false).await.unwrap(), None, "nothing stored");
        // A value right at the limit is fine, and the node keeps serving.
        client.put(b"k", &vec![b'v'; 1024 * 1024]).await.unwrap();
        assert_eq!(client.get(b"k", false).await.unwrap().map(|v| v.len()), Some(1024 * 1024));
    });
    // An unknown shard, straight over gRPC.
    runtime().block_on(async {
        let mut kv = radiant_proto::kv_client::KvClient::connect(format!("http://{}", c.nodes[0].addr)).await.unwrap();
        let err = kv
            .scan(radiant_proto::ScanRequest { prefix: vec![], limit: 1, stale: false, shard: 999, shards_total: 0 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("no shard 999"), "{}", err.message());
    });
    let out = c.ctl_at(&c.nodes[0].addr, &["put", "", "x"]);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn every_acknowledged_write_survives_killing_every_node() {
    radiant_tests::init_logging();
    let mut c = Cluster::start(3);
    c.full_cluster();
    let rt = runtime();
    let client = c.client();
    rt.block_on(async {
        for i in 0..200 {
            client.put(format!("key-{i}").as_bytes(), format!("value-{i}").as_bytes()).await.unwrap();
        }
    });
    tracing::info!("--- kill -9 every node, start them all again");
    for n in &mut c.nodes {
        n.kill9();
    }
    for n in &mut c.nodes {
        n.start();
    }
    let client = c.client();
    rt.block_on(async {
        for i in 0..200 {
            let v = client.get(format!("key-{i}").as_bytes(), false).await.unwrap_or_else(|e| panic!("key-{i}: {e}"));
            assert_eq!(v, Some(format!("value-{i}").into_bytes()), "key-{i}");
        }
    });
}

#[test]
fn a_follower_that_fell_behind_catches_up_from_a_snapshot() {
    radiant_tests::init_logging();
    // Snapshots every 20 entries, keeping 4 behind: a follower that misses 200 writes can only
    // catch up from a snapshot.
    let mut c = Cluster::start_with(3, "snapshot_logs = 20");
    let s = c.full_cluster();
    let herald = radiant_tests::status::herald(&s, 1).unwrap();
    let f = (0..3).find(|&i| c.nodes[i].name != herald).unwrap();
    tracing::info!("--- stop follower {} and write 200 keys", c.nodes[f].name);
    c.nodes[f].kill9();
    let rt = runtime();
    let client = radiant_client::Client::new(
        c.addrs(&(0..3).filter(|&i| i != f).collect::<Vec<_>>()),
        radiant_client::Options::default(),
    );
    rt.block_on(async {
        for i in 0..200 {
            client.put(format!("snap-{i:03}").as_bytes(), format!("v{i}").as_bytes()).await.unwrap();
        }
    });
    tracing::info!("--- restart it: it must catch up");
    c.nodes[f].start();
    let addr = c.nodes[f].addr.clone();
    rt.block_on(async {
        let local = |key: String| {
            let addr = addr.clone();
            async move {
                let mut kv = radiant_proto::kv_client::KvClient::connect(format!("http://{addr}")).await.ok()?;
                let r = kv.get(radiant_proto::GetRequest { key: key.into_bytes(), stale: true }).await.ok()?;
                r.into_inner().value
            }
        };
        let deadline = tokio::time::Instant::now() + radiant_tests::DEADLINE;
        while local("snap-199".into()).await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "follower never caught up:\n{}", c.logs());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for i in 0..200 {
            assert_eq!(
                local(format!("snap-{i:03}")).await,
                Some(format!("v{i}").into_bytes()),
                "snap-{i:03} on the follower"
            );
        }
    });
}

#[test]
fn kv_against_a_node_outside_any_cluster_fails_at_once() {
    let c = Cluster::start(1);
    let started = std::time::Instant::now();
    let out = c.ctl_at(&c.nodes[0].addr, &["put", "k", "v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not part of a cluster"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "no retrying for the whole timeout");
}
