//! A recorded workload: concurrent clients putting, deleting and reading a small key space
//! while a test injects faults, then a final read of every key, and the whole history checked
//! key by key by the linearizability checker ([`radiant_lincheck`]). A stale read, a lost
//! acknowledged write or a write applied twice all fail the check.
//!
//! Outcomes are recorded as the client classifies them: a write that failed with
//! [`ClientError::Unknown`] may have been applied, at any later time, so it is recorded as
//! [`Outcome::Unknown`] and its client goes on under a new id (its request may still be in
//! flight); any other error means nothing was applied ([`Outcome::Failed`], which the checker
//! drops). A read that failed tells nothing and is not recorded.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use radiant_client::ClientError;
use radiant_client::Options;
use radiant_lincheck::Input;
use radiant_lincheck::Operation;
use radiant_lincheck::Outcome;
use radiant_lincheck::Output;
use radiant_lincheck::Report;
use radiant_lincheck::Verdict;

use crate::ownership;
use crate::ownership::ServedOp;

/// How long the checker may spend on one key before giving up (which fails the test). The
/// workloads' histories take milliseconds; this only bounds a pathological one.
const CHECK_LIMIT_PER_KEY: Duration = Duration::from_secs(60);

/// A small seeded generator, so a failing schedule can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration uniformly in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next_u64() % span)
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// 40 % puts, 10 % deletes, 50 % linearizable gets.
    ReadWrite,
    /// Only linearizable gets.
    Reads,
}

/// The seed of a workload: `RADIANT_TEST_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("RADIANT_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// How a write ended, as the checker needs it.
fn outcome<T>(result: Result<T, ClientError>, ret: u64, output: impl FnOnce(T) -> Output) -> Outcome {
    match result {
        Ok(v) => Outcome::Ok { output: output(v), ret },
        Err(ClientError::Unknown(_)) => Outcome::Unknown,
        Err(_) => Outcome::Failed, // certainly not applied
    }
}

fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Clients running in the background and the history they record.
pub struct Workload {
    rt: tokio::runtime::Runtime,
    history: Arc<Mutex<Vec<Operation>>>,
    /// The completed operations with the ownership that served them (see [`ownership`]).
    served: Arc<Mutex<Vec<ServedOp>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    start: Instant,
    keys: u64,
    seed: u64,
    /// The next unused client id: clients take one after an unknown outcome.
    next_id: Arc<AtomicU64>,
}

impl Workload {
    /// Starts `clients` clients over `keys` keys, seeded with the nodes at `seeds`.
    pub fn start(seeds: Vec<String>, seed: u64, clients: usize, keys: u64) -> Workload {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        tracing::info!(seed, clients, keys, "--- workload starts");
        let mut w = Workload {
            rt,
            history: Arc::default(),
            served: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
            start: Instant::now(),
            keys,
            seed,
            next_id: Arc::new(AtomicU64::new(0)),
        };
        for _ in 0..clients {
            w.spawn_client(seeds.clone(), Mix::ReadWrite);
        }
        w
    }

    /// Adds a client that only reads, seeded with `seed` alone. A reader refreshes its map only
    /// when a node refuses or redirects it, so it keeps asking the herald its map names for
    /// as long as that node answers: such a client is what meets a deposed herald, or the
    /// source of a moved shard, that still serves reads. The other clients move on to the new
    /// herald once a write of theirs times out or is refused.
    pub fn add_reader(&mut self, seed: String) {
        self.spawn_client(vec![seed], Mix::Reads);
    }

    fn spawn_client(&mut self, seeds: Vec<String>, mix: Mix) {
        let (history, stop, next_id) = (self.history.clone(), self.stop.clone(), self.next_id.clone());
        let served_ops = self.served.clone();
        let client = next_id.fetch_add(1, Ordering::Relaxed);
        let (start, keys) = (self.start, self.keys);
        let opts = Options { op_timeout: Duration::from_secs(4), rpc_timeout: Duration::from_secs(1) };
        let kv = radiant_client::Client::new(seeds, opts);
        let mut rng = Rng::new(self.seed ^ (client + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let worker = self.rt.spawn(async move {
            let now = || start.elapsed().as_nanos() as u64;
            let mut id = client;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", rng.next_u64() % keys);
                let call = now();
                let dice = if mix == Mix::Reads { 9 } else { rng.next_u64() % 10 };
                let mut served = None;
                let (input, outcome) = match dice {
                    0..=3 => {
                        n += 1;
                        let v = format!("c{client}-{n}");
                        let r = kv.put_served(key.as_bytes(), v.as_bytes()).await;
                        (
                            Input::Put(v),
                            outcome(r, now(), |s| {
                                served = Some(s);
                                Output::Put
                            }),
                        )
                    }
                    4 => {
                        let r = kv.delete_served(key.as_bytes()).await;
                        (
                            Input::Delete,
                            outcome(r, now(), |(existed, s)| {
                                served = Some(s);
                                Output::Delete(existed)
                            }),
                        )
                    }
                    _ => match kv.get_served(key.as_bytes(), false).await {
                        Ok((v, s)) => {
                            served = Some(s);
                            (Input::Get, Outcome::Ok { output: Output::Get(text(v)), ret: now() })
                        }
                        Err(_) => continue, // a failed read tells nothing
                    },
                };
                if let (Some(s), Outcome::Ok { ret, .. }) = (served, &outcome) {
                    let op =
                        ServedOp { key: key.clone(), call, ret: *ret, order: s.order_id, owner_epoch: s.owner_epoch };
                    served_ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
                }
                let unknown = outcome == Outcome::Unknown;
                let op = Operation { client: id, key, input, call, outcome };
                history.lock().unwrap_or_else(|p| p.into_inner()).push(op);
                if unknown {
                    // The request may still be pending: this client's next one must
                    // not look sequential after it.
                    id = next_id.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        self.workers.push(worker);
    }

    /// How long the workload has run.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Operations that completed so far.
    pub fn completed(&self) -> usize {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.iter().filter(|o| o.ret().is_some()).count()
    }

    /// The operations recorded so far, in the order they ended.
    pub fn history(&self) -> Vec<Operation> {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the clients, reads every key once more through `final_seeds`, and checks the
    /// history; returns it with the checker's report. Panics only if a final read fails.
    pub fn stop_and_check(self, final_seeds: Vec<String>) -> (Vec<Operation>, Report) {
        self.stop.store(true, Ordering::Relaxed);
        let start = self.start;
        let now = move || start.elapsed().as_nanos() as u64;
        let history = self.history.clone();
        let reader = self.next_id.fetch_add(1, Ordering::Relaxed);
        let keys = self.keys;
        self.rt.block_on(async {
            for w in self.workers {
                w.await.expect("workload client");
            }
            tracing::info!("--- final reads of every key");
            let kv = radiant_client::Client::new(final_seeds, Options::default());
            for k in 0..keys {
                let key = format!("k{k}");
                let call = now();
                let v = kv.get(key.as_bytes(), false).await.unwrap_or_else(|e| panic!("final read of {key}: {e}"));
                let op = Operation::ok(reader, key, Input::Get, call, now(), Output::Get(text(v)));
                history.lock().unwrap_or_else(|p| p.into_inner()).push(op);
            }
        });
        let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let opts = radiant_lincheck::Options { per_key_limit: CHECK_LIMIT_PER_KEY, ..Default::default() };
        let report = radiant_lincheck::check(&history, &opts);
        (history, report)
    }

    /// Stops the clients, reads every key once more through `final_seeds`, and checks the
    /// history; panics with the checker's report (the operations that show a violation), the
    /// seed and `context` if it is not linearizable, if the checker gave up on a key (that
    /// is not a pass), or if the history is too short to mean anything. Returns the completed
    /// operation count.
    pub fn finish(self, final_seeds: Vec<String>, min_completed: usize, context: impl FnOnce() -> String) -> usize {
        let seed = self.seed;
        let served = self.served.clone();
        let (history, report) = self.stop_and_check(final_seeds);
        let overlaps = ownership::overlaps(&served.lock().unwrap_or_else(|p| p.into_inner()));
        assert!(
            overlaps.is_empty(),
            "two orders served a shard at once (seed {seed}; RADIANT_TEST_SEED={seed} replays the workload):\n{}\n{}",
            overlaps.join("\n"),
            context()
        );
        let completed = history.iter().filter(|o| o.ret().is_some()).count();
        let unknown = history.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        let failed = history.iter().filter(|o| o.outcome == Outcome::Failed).count();
        tracing::info!(
            ops = history.len(),
            completed,
            unknown,
            failed,
            "--- checked the history: {}",
            report.summary()
        );
        assert!(completed >= min_completed, "too little history to mean anything: {completed} completed operations");
        match report.verdict {
            Verdict::Linearizable => completed,
            Verdict::NotLinearizable => panic!(
                "history is not linearizable (seed {seed}; RADIANT_TEST_SEED={seed} replays the workload):\n{report}\n{}",
                context()
            ),
            Verdict::Unknown => panic!(
                "the checker gave up, which is not a pass (seed {seed}; RADIANT_TEST_SEED={seed} replays the \
                 workload):\n{report}\n{}",
                context()
            ),
        }
    }
}
