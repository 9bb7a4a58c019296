//! A linearizability checker for histories of Radiant's key-value operations.
//!
//! Clients record every request as an [`Operation`]: key, input, call time, and either the
//! output with its return time, [`Outcome::Unknown`] (the request may have taken effect at any
//! time after its call, or never) or [`Outcome::Failed`] (certainly no effect). [`check`]
//! decides whether some order of the operations, each taking effect at one instant between
//! its call and its return, explains every output, with each key a register that starts
//! absent.
//!
//! Linearizability is compositional (Herlihy and Wing's locality, Porcupine's
//! P-compositionality): a history is linearizable if and only if each key's subhistory is.
//! Each key is searched on its own (Wing and Gong's algorithm with Lowe's memoization, see
//! `search.rs`), keys spread over threads, each under a time limit. A key whose search runs
//! out of time is [`Verdict::Unknown`], which is never a pass. A key that is not linearizable
//! comes with a [`Violation`]: the few operations that show it.
//!
//! [`sim`] generates histories of a correct register for tests and benchmarks.
#![deny(missing_docs)]

mod history;
mod report;
mod search;
pub mod sim;
#[cfg(test)]
mod tests;
mod visited;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

pub use history::ClientId;
pub use history::Input;
pub use history::Operation;
pub use history::Outcome;
pub use history::Output;
pub use report::GaveUp;
pub use report::KeyReport;
pub use report::KeyResult;
pub use report::Report;
pub use report::Verdict;
pub use report::Violation;

/// How the checker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The longest one key's search may run before that key's verdict is
    /// [`Verdict::Unknown`]. A pathological key (many concurrent operations of unknown
    /// outcome) can take exponential time; this bounds a test's run instead.
    pub per_key_limit: Duration,
    /// How many keys are checked at once.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            per_key_limit: Duration::from_secs(10),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Checks `history` key by key.
pub fn check(history: &[Operation], opts: &Options) -> Report {
    let start = Instant::now();
    let mut by_key: HashMap<&str, Vec<&Operation>> = HashMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut keys: Vec<(&str, Vec<&Operation>)> = by_key.into_iter().collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    // Largest keys first, so one long key does not start last and hold up the others.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| Reverse(keys[i].1.len()));

    let threads = opts.threads.clamp(1, keys.len().max(1));
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let (key, ops) = &keys[i];
            done.push((i, check_key(key, ops, opts.per_key_limit)));
        }
        done
    };
    let done: Vec<(usize, KeyReport)> = if threads == 1 {
        work()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            let joined = handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            joined.flatten().collect()
        })
    };
    let mut reports: Vec<Option<KeyReport>> = vec![None; keys.len()];
    for (i, r) in done {
        reports[i] = Some(r);
    }
    let keys: Vec<KeyReport> = reports.into_iter().flatten().collect();
    let verdict = if keys.iter().any(|k| k.result.verdict() == Verdict::NotLinearizable) {
        Verdict::NotLinearizable
    } else if keys.iter().any(|k| k.result.verdict() == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    Report { verdict, ops: history.len(), keys, elapsed: start.elapsed() }
}

/// Checks one key's operations.
fn check_key(key: &str, ops: &[&Operation], limit: Duration) -> KeyReport {
    let start = Instant::now();
    let report = |result, used, unknown, steps| KeyReport {
        key: key.to_string(),
        ops: used,
        unknown,
        steps,
        elapsed: start.elapsed(),
        result,
    };
    let searched = match search::search(ops, limit) {
        Ok(s) => s,
        Err((i, reason)) => {
            let gave_up = GaveUp::Malformed { op: Box::new(ops[i].clone()), reason };
            return report(KeyResult::Unknown(gave_up), ops.len(), 0, 0);
        }
    };
    let result = match searched.found {
        search::Found::Linearizable => KeyResult::Linearizable,
        search::Found::GaveUp => KeyResult::Unknown(GaveUp::TimeLimit { limit }),
        search::Found::Violation(w) => {
            let op = |i: usize| ops[i].clone();
            let mut concurrent: Vec<Operation> = w.concurrent.iter().map(|&i| op(i)).collect();
            concurrent.sort_by_key(|o| (o.call, o.client));
            // Earlier placed operations matter only if they overlap the window in time; the
            // writer of the current value is shown apart.
            let window_start = concurrent.iter().map(|o| o.call).chain([ops[w.stuck].call]).min().unwrap_or(0);
            let recent = w
                .recent
                .iter()
                .filter(|&&i| Some(i) != w.writer && ops[i].ret().is_none_or(|r| r >= window_start))
                .map(|&i| op(i))
                .collect();
            let writer = w.writer.map(op);
            KeyResult::NotLinearizable(Box::new(Violation {
                key: key.to_string(),
                linearized: w.depth,
                ops: searched.used,
                value: writer.as_ref().and_then(report::written),
                writer,
                recent,
                stuck: op(w.stuck),
                concurrent,
            }))
        }
    };
    report(result, searched.used, searched.unknown, searched.steps)
}
