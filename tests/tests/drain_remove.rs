//! Operator intents: `drain` moves every leadership a node holds to a caught-up voter while
//! clients write; `remove` gives each place a node holds to a spare and stops it, or is
//! refused up front, with the reason and exit code 5, when it could not finish.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Instant;

use radiant_client::ClientError;
use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::status;
use radiant_tests::wait_until;

#[test]
fn drain_moves_leadership_under_load_and_remove_replaces_then_retires_or_is_refused() {
    radiant_tests::init_logging();
    // A station of one (node 0) and four satellites: an order of three and one spare.
    let c = Cluster::start(5);
    c.bootstrap(&[0]);
    c.join(&[0], &[1, 2, 3, 4]);
    let s = c.wait_status(0, "an order with a herald and every shard placed", |s| {
        status::herald(s, 1).is_some() && s["shards"]["assigned"] == 64
    });
    let members = status::order_nodes(&s, 1, "members");
    let herald = status::herald(&s, 1).unwrap();
    let spare = (1..5).map(|i| c.nodes[i].name.clone()).find(|n| !members.contains(n)).unwrap();

    tracing::info!("--- drain the herald {herald} while 4 clients write");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop, failed, unknown, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let worst = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop, failed, unknown, acked, worst) =
                (c.client(), stop.clone(), failed.clone(), unknown.clone(), acked.clone(), worst.clone());
            rt.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let t = Instant::now();
                    match client.put(format!("w{w}-{i}").as_bytes(), b"v").await {
                        Ok(()) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            worst.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                        }
                        Err(ClientError::Unknown(_)) => {
                            unknown.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!("write failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    wait_until(DEADLINE, "writes flowing", || (acked.load(Ordering::Relaxed) > 100).then_some(()));
    let drained = c.ctl_ok(&["drain", &herald]);
    assert!(drained["status"].as_str().unwrap().contains("leads nothing"), "{drained}");
    let s = c.status_via(0).unwrap();
    let new = status::herald(&s, 1).unwrap();
    assert_ne!(new, herald, "{s}");
    assert_eq!(status::state(&s, &herald), "draining");
    let before = acked.load(Ordering::Relaxed);
    wait_until(DEADLINE, "writes flowing after the drain", || {
        (acked.load(Ordering::Relaxed) > before + 100).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in writers {
            w.await.unwrap();
        }
    });
    let (failed, unknown) = (failed.load(Ordering::Relaxed), unknown.load(Ordering::Relaxed));
    tracing::info!(failed, unknown, worst_ms = worst.load(Ordering::Relaxed), "--- herald moved to {new}");
    assert_eq!(failed, 0, "no write fails during a drain");
    assert!(unknown <= 4, "at most the writes in flight at the handover are unknown: {unknown}");

    tracing::info!("--- drain again: idempotent; undrain: it serves again");
    c.ctl_ok(&["drain", &herald]);
    c.ctl_ok(&["undrain", &herald]);
    c.wait_status(0, "undrained", |s| status::state(s, &herald) == "member");

    let victim = members.iter().find(|m| **m != new).unwrap().clone();
    tracing::info!("--- remove {victim}: spare {spare} takes its place, then it is removed");
    let removed = c.ctl_ok(&["remove", &victim]);
    assert!(removed["status"].as_str().unwrap().contains("removed"), "{removed}");
    let s = c.status_via(0).unwrap();
    let now = status::order_nodes(&s, 1, "members");
    assert!(now.contains(&spare) && !now.contains(&victim), "{s}");
    assert_eq!(status::state(&s, &victim), "removed");
    let v = c.index_of(&victim);
    let addr = c.nodes[v].addr.clone();
    wait_until(DEADLINE, "the removed node's services stopped", || {
        rt.block_on(async {
            let mut sup =
                radiant_proto::supervisor_client::SupervisorClient::connect(format!("http://{addr}")).await.ok()?;
            let list = sup.list(radiant_proto::ListRequest {}).await.ok()?.into_inner();
            list.services.is_empty().then_some(())
        })
    });
    c.ctl_ok(&["remove", &victim]); // idempotent

    tracing::info!("--- remove another member with no spare left: refused, nothing changes");
    let other = now.iter().find(|m| **m != new).unwrap().clone();
    let epoch = s["epoch"].as_u64().unwrap();
    let out = c.ctl_at(&c.nodes[0].addr, &["remove", &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains(&format!("no spare node can take {other}'s place in order 1")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let s = c.status_via(0).unwrap();
    assert_eq!(s["epoch"].as_u64().unwrap(), epoch, "a refused removal changes nothing");
    assert_eq!(status::state(&s, &other), "member");
    let out = c.ctl_at(&c.nodes[0].addr, &["drain", "no-such-node"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
}
