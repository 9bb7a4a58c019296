//! Lowe's cache of visited configurations, extended with subsumption for operations of
//! unknown outcome.
//!
//! A configuration is (known operations placed, unknown operations placed, register state),
//! plus, if the last placed operation was unknown, the state before it (which restricts what
//! may follow, see `Search::place`). All but the unknown set make one 128-bit Zobrist
//! fingerprint, the table's key. The unknown set is interned: since only the earliest pending
//! member of each class is ever placed, it is a count per class.
//!
//! Placing fewer unknown operations never hurts: they need not be placed at all. So a
//! configuration is as good as any visited one with the same key and fewer or equally many
//! unknown operations of each class; and an unrestricted one is as good as a restricted one.
//! If the visited one failed, this one fails too; if it is still being explored, it covers
//! this one. (Proof sketch: take a visited configuration with a completion, the shortest
//! completion of all; its first step leads to a configuration visited or covered by one
//! visited, with a shorter completion.) Without this, every choice of which unknown writes
//! took effect would re-explore the rest of the history.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::hash::Hasher;

/// No node.
const NIL: u32 = u32::MAX;

/// The keys are already random: fold them instead of hashing them again.
#[derive(Default)]
pub(crate) struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, x: u128) {
        self.0 ^= (x as u64) ^ ((x >> 64) as u64);
    }
}

type FoldMap<V> = HashMap<u128, V, BuildHasherDefault<Fold>>;

/// One visited configuration, in the list of those sharing a key.
#[derive(Debug, Clone, Copy)]
struct Node {
    unknown_set: u32,
    next: u32,
}

/// The visited configurations.
#[derive(Default)]
pub(crate) struct Visited {
    /// Key to the first node of its list.
    heads: FoldMap<u32>,
    nodes: Vec<Node>,
    /// Unknown-set fingerprint to its id.
    ids: FoldMap<u32>,
    /// Per unknown-set id: (class, members placed), classes with none left out.
    counts: Vec<Vec<(u32, u32)>>,
}

impl Visited {
    /// The id of the unknown set with fingerprint `fp`: per class, `placed[c]` members, plus
    /// one of class `plus` (`u32::MAX`: none).
    pub(crate) fn unknown_set(&mut self, fp: u128, placed: &[usize], plus: u32) -> u32 {
        let next = self.counts.len() as u32;
        let id = *self.ids.entry(fp).or_insert(next);
        if id == next {
            let count = |c: usize| placed[c] + usize::from(c as u32 == plus);
            self.counts
                .push((0..placed.len()).filter(|&c| count(c) > 0).map(|c| (c as u32, count(c) as u32)).collect());
        }
        id
    }

    /// Whether a configuration with this key was visited with, per class, at most as many
    /// unknown operations placed as `placed` (plus one of class `plus`) says.
    pub(crate) fn covered(&self, key: u128, placed: &[usize], plus: u32) -> bool {
        let mut n = self.heads.get(&key).copied().unwrap_or(NIL);
        while n != NIL {
            let node = self.nodes[n as usize];
            let fewer = |&(c, k): &(u32, u32)| placed[c as usize] + usize::from(c == plus) >= k as usize;
            if self.counts[node.unknown_set as usize].iter().all(fewer) {
                return true;
            }
            n = node.next;
        }
        false
    }

    /// Records a configuration unless [`Visited::covered`]; `false` if it was.
    pub(crate) fn insert(&mut self, key: u128, unknown_set: u32, placed: &[usize], plus: u32) -> bool {
        if self.covered(key, placed, plus) {
            return false;
        }
        let head = self.heads.get(&key).copied().unwrap_or(NIL);
        self.heads.insert(key, self.nodes.len() as u32);
        self.nodes.push(Node { unknown_set, next: head });
        true
    }
}
