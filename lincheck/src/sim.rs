//! A simulated store of linearizable registers, to generate histories the checker must
//! accept, as large as a test or benchmark wants, from a seed.
//!
//! Clients issue one operation at a time on random keys. Each operation takes effect at a
//! random instant between its call and its return, and the outputs come from applying the
//! operations to real registers in the order of those instants, so every history is
//! linearizable by construction. Some writes end in an unknown outcome: the client gives up
//! after a timeout and takes a new id, and the write takes effect (or not) at a random time
//! after its call, possibly after the timeout. Some writes fail and have no effect.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::history::ClientId;
use crate::history::Input;
use crate::history::Operation;
use crate::history::Outcome;
use crate::history::Output;

/// The shape of a simulated history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Operations to generate.
    pub ops: usize,
    /// Clients issuing them concurrently.
    pub clients: usize,
    /// Keys they spread over (`k0`, `k1`, ...).
    pub keys: usize,
    /// The seed: the same config gives the same history.
    pub seed: u64,
    /// Writes in a thousand whose outcome is unknown; half of them take effect.
    pub unknown_per_mille: u32,
    /// Writes in a thousand that fail with no effect.
    pub failed_per_mille: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { ops: 100_000, clients: 12, keys: 64, seed: 1, unknown_per_mille: 20, failed_per_mille: 10 }
    }
}

/// Latency bounds, in nanoseconds: call to effect and effect to return each take 1 µs to
/// 2 ms; an unknown write takes effect up to 20 ms after its call, while its client gives up
/// after 5 ms.
const MIN_LATENCY: u64 = 1_000;
const MAX_LATENCY: u64 = 2_000_000;
const LATE: u64 = 20_000_000;
const TIMEOUT: u64 = 5_000_000;
const THINK: u64 = 500_000;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How a generated operation ends.
enum Fate {
    Returns(u64),
    Unknown,
    Fails,
}

/// One generated operation before the outputs are known.
struct Planned {
    client: ClientId,
    key: usize,
    input: Input,
    call: u64,
    /// When it takes effect, if it does.
    effect: Option<u64>,
    fate: Fate,
}

/// Generates a linearizable history, in call order: gets, puts, compare-and-sets and deletes
/// in the ratio 40:35:10:5 (a compare-and-set mostly expects the key's latest written value).
pub fn simulate(cfg: &SimConfig) -> Vec<Operation> {
    let mut rng = Rng(cfg.seed);
    let keys = cfg.keys.max(1);
    let clients = cfg.clients.max(1);
    let mut ids: Vec<ClientId> = (0..clients as u64).collect();
    let mut next_id = clients as u64;
    let mut counters = vec![0u64; clients];
    let mut last_written: Vec<Option<String>> = vec![None; keys];
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> = (0..clients).map(|c| Reverse((rng.below(THINK), c))).collect();
    let mut planned: Vec<Planned> = Vec::with_capacity(cfg.ops);
    while planned.len() < cfg.ops {
        let Some(Reverse((call, c))) = ready.pop() else { break };
        let key = rng.below(keys as u64) as usize;
        let mut value = || {
            counters[c] += 1;
            format!("c{c}-{}", counters[c])
        };
        let input = match rng.below(90) {
            0..40 => Input::Get,
            40..75 => Input::Put(value()),
            75..85 => {
                let expect = if rng.below(4) == 0 { None } else { last_written[key].clone() };
                Input::Cas { expect, new: value() }
            }
            _ => Input::Delete,
        };
        if let Input::Put(v) | Input::Cas { new: v, .. } = &input {
            last_written[key] = Some(v.clone());
        }
        let effect = call + MIN_LATENCY + rng.below(MAX_LATENCY);
        let ret = effect + MIN_LATENCY + rng.below(MAX_LATENCY);
        let roll = if input == Input::Get { u64::MAX } else { rng.below(1000) };
        let unknown = u64::from(cfg.unknown_per_mille);
        let (effect, fate, free_at) = if roll < unknown {
            let late = (rng.below(2) == 0).then(|| call + MIN_LATENCY + rng.below(LATE));
            (late, Fate::Unknown, call + TIMEOUT)
        } else if roll < unknown + u64::from(cfg.failed_per_mille) {
            (None, Fate::Fails, call + MIN_LATENCY + rng.below(MAX_LATENCY))
        } else {
            (Some(effect), Fate::Returns(ret), ret)
        };
        let client = ids[c];
        if matches!(fate, Fate::Unknown) {
            // Its request may still be in flight: the client goes on under a new id.
            ids[c] = next_id;
            next_id += 1;
        }
        planned.push(Planned { client, key, input, call, effect, fate });
        ready.push(Reverse((free_at + rng.below(THINK), c)));
    }

    let mut by_effect: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].effect.is_some()).collect();
    by_effect.sort_by_key(|&i| (planned[i].effect, i));
    let mut registers: Vec<Option<String>> = vec![None; keys];
    let mut outputs: Vec<Option<Output>> = (0..planned.len()).map(|_| None).collect();
    for i in by_effect {
        let p = &planned[i];
        let register = &mut registers[p.key];
        outputs[i] = Some(match &p.input {
            Input::Get => Output::Get(register.clone()),
            Input::Put(v) => {
                *register = Some(v.clone());
                Output::Put
            }
            Input::Delete => Output::Delete(register.take().is_some()),
            Input::Cas { expect, new } => {
                let ok = register == expect;
                if ok {
                    *register = Some(new.clone());
                }
                Output::Cas(ok)
            }
        });
    }
    planned
        .into_iter()
        .zip(outputs)
        .map(|(p, output)| {
            let outcome = match (p.fate, output) {
                (Fate::Returns(ret), Some(output)) => Outcome::Ok { output, ret },
                (Fate::Fails, _) => Outcome::Failed,
                (Fate::Unknown | Fate::Returns(_), _) => Outcome::Unknown,
            };
            Operation { client: p.client, key: format!("k{}", p.key), input: p.input, call: p.call, outcome }
        })
        .collect()
}

/// Turns one successful get past the middle of `history` into a stale read, for tests and
/// benchmarks that need a violation: it now returns the value of a put that, like another
/// put after it, returned before the get was called. (With unique values, as [`simulate`]
/// writes, no order explains it.) Returns the get's index, or `None` if no get qualifies.
pub fn stale_read(history: &mut [Operation]) -> Option<usize> {
    let known_put = |o: &Operation| matches!((&o.input, &o.outcome), (Input::Put(_), Outcome::Ok { .. }));
    let (r, stale) = (history.len() / 2..history.len()).find_map(|r| {
        let read = &history[r];
        if !matches!(read.outcome, Outcome::Ok { output: Output::Get(_), .. }) {
            return None;
        }
        let before = |o: &&Operation| o.key == read.key && known_put(o) && o.ret().is_some_and(|t| t < read.call);
        let later = history[..r].iter().filter(before).map(|o| o.call).max()?;
        let stale = history[..r].iter().filter(before).find(|w| w.ret().is_some_and(|t| t < later))?;
        match &stale.input {
            Input::Put(v) => Some((r, v.clone())),
            _ => None,
        }
    })?;
    if let Outcome::Ok { output, .. } = &mut history[r].outcome {
        *output = Output::Get(Some(stale));
    }
    Some(r)
}
