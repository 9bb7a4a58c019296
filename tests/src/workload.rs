//! A recorded workload: concurrent clients putting, deleting and reading a small key space
//! while a test injects faults, then a final read of every key, and the whole history checked
//! by the Wing-Gong checker ([`crate::linearizability`]). A stale read, a lost acknowledged
//! write or a write applied twice all fail the check.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use radiant_client::ClientError;
use radiant_client::Options;

use crate::linearizability::Event;
use crate::linearizability::Op;
use crate::linearizability::check;

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

/// The seed of a workload: `RADIANT_TEST_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("RADIANT_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Clients running in the background and the history they record.
pub struct Workload {
    rt: tokio::runtime::Runtime,
    history: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    start: Instant,
    clients: usize,
    keys: u64,
    seed: u64,
}

impl Workload {
    /// Starts `clients` clients over `keys` keys, seeded with the nodes at `seeds`.
    pub fn start(seeds: Vec<String>, seed: u64, clients: usize, keys: u64) -> Workload {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let history: Arc<Mutex<Vec<Event>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let opts = Options { op_timeout: Duration::from_secs(4), rpc_timeout: Duration::from_secs(1) };
        tracing::info!(seed, clients, keys, "--- workload starts");
        let workers = (0..clients)
            .map(|client| {
                let (history, stop) = (history.clone(), stop.clone());
                let kv = radiant_client::Client::new(seeds.clone(), opts.clone());
                rt.spawn(async move {
                    let now = || start.elapsed().as_nanos() as u64;
                    let mut rng = Rng(seed ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("k{}", rng.next() % keys);
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
                                Ok(v) => {
                                    (Some(Op::Get(v.map(|v| String::from_utf8_lossy(&v).into_owned()))), Some(now()))
                                }
                                Err(_) => (None, None),
                            },
                        };
                        if let Some(op) = op {
                            history.lock().unwrap_or_else(|p| p.into_inner()).push(Event {
                                key,
                                op,
                                invoke,
                                ret,
                                client,
                            });
                        }
                    }
                })
            })
            .collect();
        Workload { rt, history, stop, workers, start, clients, keys, seed }
    }

    /// How long the workload has run.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Operations that completed so far.
    pub fn completed(&self) -> usize {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|e| e.ret.is_some()).count()
    }

    /// Stops the clients, reads every key once more through `final_seeds`, and checks the
    /// history; panics with the offending key's history (and `context`) if it is not
    /// linearizable or too short to mean anything. Returns the completed operation count.
    pub fn finish(self, final_seeds: Vec<String>, min_completed: usize, context: impl FnOnce() -> String) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let start = self.start;
        let now = move || start.elapsed().as_nanos() as u64;
        let history = self.history.clone();
        let (keys, clients) = (self.keys, self.clients);
        self.rt.block_on(async {
            for w in self.workers {
                w.await.expect("workload client");
            }
            tracing::info!("--- final reads of every key");
            let kv = radiant_client::Client::new(final_seeds, Options::default());
            for k in 0..keys {
                let key = format!("k{k}");
                let invoke = now();
                let v = kv.get(key.as_bytes(), false).await.unwrap_or_else(|e| panic!("final read of {key}: {e}"));
                let op = Op::Get(v.map(|v| String::from_utf8_lossy(&v).into_owned()));
                let event = Event { key, op, invoke, ret: Some(now()), client: clients };
                history.lock().unwrap_or_else(|p| p.into_inner()).push(event);
            }
        });
        let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let completed = history.iter().filter(|e| e.ret.is_some()).count();
        let unknown = history.len() - completed;
        tracing::info!(ops = history.len(), completed, unknown, "--- checking the history");
        assert!(completed >= min_completed, "too little history to mean anything: {completed} completed operations");
        if let Err(v) = check(&history) {
            let lines: Vec<String> = v.history.iter().map(|e| format!("{e:?}")).collect();
            panic!(
                "history of {} is not linearizable (seed {}):\n{}\n{}",
                v.key,
                self.seed,
                lines.join("\n"),
                context()
            );
        }
        completed
    }
}
