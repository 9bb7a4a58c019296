//! Linearizability under faults: concurrent clients over many keys while the herald is
//! killed with SIGKILL twice (and restarted). The recorded history, including a final read of
//! every key, is checked per key by the Wing-Gong checker: a stale read, a lost acknowledged
//! write or a write applied twice all fail the test.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use radiant_client::ClientError;
use radiant_client::Options;
use radiant_tests::Cluster;
use radiant_tests::DEADLINE;
use radiant_tests::linearizability::Event;
use radiant_tests::linearizability::Op;
use radiant_tests::linearizability::check;
use radiant_tests::status;
use radiant_tests::wait_until;

const CLIENTS: usize = 8;
const KEYS: u64 = 50;
const RUN_FOR: Duration = Duration::from_secs(12);

/// A small seeded generator, so a failing schedule can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

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
    let seeds = c.addrs(&[0, 1, 2]);
    let seed: u64 = std::env::var("RADIANT_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234);
    tracing::info!(seed, "--- workload starts");

    let history: Arc<Mutex<Vec<Event>>> = Arc::default();
    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let opts = Options { op_timeout: Duration::from_secs(4), rpc_timeout: Duration::from_secs(1) };
    let now = move || start.elapsed().as_nanos() as u64;

    let workers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let history = history.clone();
            let stop = stop.clone();
            let kv = radiant_client::Client::new(seeds.clone(), opts.clone());
            rt.spawn(async move {
                let mut rng = Rng(seed ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("k{}", rng.next() % KEYS);
                    let invoke = now();
                    let (op, ret) = match rng.next() % 10 {
                        0..=3 => {
                            n += 1;
                            let v = format!("c{client}-{n}");
                            match kv.put(key.as_bytes(), v.as_bytes()).await {
                                Ok(()) => (Some(Op::Put(v)), Some(now())),
                                Err(ClientError::Unknown(_)) => (Some(Op::Put(v)), None),
                                Err(_) => (None, None), // certainly not applied
                            }
                        }
                        4 => match kv.delete(key.as_bytes()).await {
                            Ok(existed) => (Some(Op::Del(Some(existed))), Some(now())),
                            Err(ClientError::Unknown(_)) => (Some(Op::Del(None)), None),
                            Err(_) => (None, None),
                        },
                        _ => match kv.get(key.as_bytes(), false).await {
                            Ok(v) => (Some(Op::Get(v.map(|v| String::from_utf8_lossy(&v).into_owned()))), Some(now())),
                            Err(_) => (None, None),
                        },
                    };
                    if let Some(op) = op {
                        history.lock().unwrap().push(Event { key, op, invoke, ret, client });
                    }
                }
            })
        })
        .collect();

    // Faults, on this thread: two herald kills, spaced through the run.
    std::thread::sleep(Duration::from_secs(2)); // let the workload build up history first
    kill_the_herald(&mut c);
    std::thread::sleep(Duration::from_secs(2));
    kill_the_herald(&mut c);
    while start.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            w.await.unwrap();
        }
    });

    tracing::info!("--- final reads of every key");
    let kv = radiant_client::Client::new(c.addrs(&[0, 1, 2]), Options::default());
    rt.block_on(async {
        for k in 0..KEYS {
            let key = format!("k{k}");
            let invoke = now();
            let v = kv.get(key.as_bytes(), false).await.unwrap_or_else(|e| panic!("final read of {key}: {e}"));
            let ret = Some(now());
            let op = Op::Get(v.map(|v| String::from_utf8_lossy(&v).into_owned()));
            history.lock().unwrap().push(Event { key, op, invoke, ret, client: CLIENTS });
        }
    });

    let history = history.lock().unwrap().clone();
    let completed = history.iter().filter(|e| e.ret.is_some()).count();
    let unknown = history.len() - completed;
    tracing::info!(ops = history.len(), completed, unknown, "--- checking the history");
    assert!(completed > 500, "too little history to mean anything: {completed} completed operations");
    if let Err(v) = check(&history) {
        let lines: Vec<String> = v.history.iter().map(|e| format!("{e:?}")).collect();
        panic!("history of {} is not linearizable (seed {seed}):\n{}\n{}", v.key, lines.join("\n"), c.logs());
    }
}
