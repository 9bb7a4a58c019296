//! A Wing-Gong linearizability checker for a key-value register, per key.
//!
//! Each key's history is checked on its own (linearizability is compositional). The search
//! linearizes, one at a time, an operation that was invoked before every pending operation
//! returned, and backtracks on a contradiction; failed configurations (linearized set, value)
//! are memoized (Lowe's optimization). An operation with an unknown outcome has no return
//! time: it may take effect at any point after its invocation, or never.

use std::collections::BTreeMap;
use std::collections::HashSet;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put of a value.
    Put(String),
    /// Get that returned this value.
    Get(Option<String>),
    /// Delete; `Some(existed)` when it returned, `None` when its outcome is unknown.
    Del(Option<bool>),
}

/// One operation of a history.
#[derive(Debug, Clone)]
pub struct Event {
    /// The key.
    pub key: String,
    /// The operation.
    pub op: Op,
    /// Invocation time (ns since the test began).
    pub invoke: u64,
    /// Return time, or `None` if the outcome is unknown (a write that may have applied).
    pub ret: Option<u64>,
    /// Which client.
    pub client: usize,
}

/// A violation, for the failure message.
#[derive(Debug)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The operations of that key, in invocation order.
    pub history: Vec<Event>,
}

/// Checks every key; returns the first key whose history is not linearizable.
pub fn check(events: &[Event]) -> Result<usize, Violation> {
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e.clone());
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|e| e.invoke);
        if !linearizable(&ops) {
            return Err(Violation { key: key.to_string(), history: ops });
        }
    }
    Ok(events.len())
}

fn apply(op: &Op, state: &Option<String>) -> Option<Option<String>> {
    match op {
        Op::Put(v) => Some(Some(v.clone())),
        Op::Get(v) => (v == state).then(|| state.clone()),
        Op::Del(Some(existed)) => (*existed == state.is_some()).then_some(None),
        Op::Del(None) => Some(None),
    }
}

/// Whether one key's history (sorted by invocation) is linearizable from an absent key.
pub fn linearizable(ops: &[Event]) -> bool {
    let n = ops.len();
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    search(ops, &mut done, None, &mut seen)
}

fn is_set(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

fn search(
    ops: &[Event],
    done: &mut Vec<u64>,
    state: Option<String>,
    seen: &mut HashSet<(Vec<u64>, Option<String>)>,
) -> bool {
    // Finished when every operation that returned is linearized.
    let pending_known = (0..ops.len()).filter(|&i| !is_set(done, i) && ops[i].ret.is_some());
    let Some(min_ret) = pending_known.filter_map(|i| ops[i].ret).min() else {
        return true;
    };
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    for i in 0..ops.len() {
        if is_set(done, i) {
            continue;
        }
        if ops[i].invoke > min_ret {
            break; // sorted by invocation: nobody later can go first
        }
        if let Some(next) = apply(&ops[i].op, &state) {
            done[i / 64] |= 1 << (i % 64);
            if search(ops, done, next, seen) {
                return true;
            }
            done[i / 64] &= !(1 << (i % 64));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, invoke: u64, ret: Option<u64>) -> Event {
        Event { key: "k".into(), op, invoke, ret, client: 0 }
    }
    fn put(v: &str) -> Op {
        Op::Put(v.into())
    }
    fn get(v: Option<&str>) -> Op {
        Op::Get(v.map(String::from))
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            ev(put("a"), 0, Some(1)),
            ev(get(Some("a")), 2, Some(3)),
            ev(Op::Del(Some(true)), 4, Some(5)),
            ev(get(None), 6, Some(7)),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn stale_read_is_caught() {
        let h = [ev(put("a"), 0, Some(1)), ev(put("b"), 2, Some(3)), ev(get(Some("a")), 4, Some(5))];
        assert!(!linearizable(&h));
    }

    #[test]
    fn concurrent_writes_may_go_either_way_but_not_both() {
        let h = [ev(put("a"), 0, Some(10)), ev(put("b"), 1, Some(9)), ev(get(Some("a")), 11, Some(12))];
        assert!(linearizable(&h));
        let h = [
            ev(put("a"), 0, Some(10)),
            ev(put("b"), 1, Some(9)),
            ev(get(Some("a")), 11, Some(12)),
            ev(get(Some("b")), 13, Some(14)),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn unknown_writes_may_or_may_not_apply() {
        // Applied late: visible after the ambiguous call "ended" for its client.
        let h = [ev(put("a"), 0, None), ev(get(None), 5, Some(6)), ev(get(Some("a")), 7, Some(8))];
        assert!(linearizable(&h));
        // Never applied.
        let h = [ev(put("a"), 0, None), ev(get(None), 5, Some(6))];
        assert!(linearizable(&h));
        // But it cannot un-apply.
        let h = [ev(put("a"), 0, None), ev(get(Some("a")), 5, Some(6)), ev(get(None), 7, Some(8))];
        assert!(!linearizable(&h));
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        let h = [ev(put("a"), 0, Some(1)), ev(get(None), 100, Some(101))];
        assert!(!linearizable(&h));
        let h = [ev(Op::Del(Some(true)), 0, Some(1))];
        assert!(!linearizable(&h), "delete of an absent key cannot report it existed");
    }
}
