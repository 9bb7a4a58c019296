//! One key's search: Wing and Gong's backtracking with Lowe's memoization, over Porcupine's
//! doubly-linked list of call and return entries, with an explicit stack so that a long
//! history cannot overflow the thread's stack.
//!
//! The known operations (those that returned) are entries in a list sorted by time: a call
//! entry and a return entry each. At equal times calls sort before returns, so an operation
//! called at the instant another returned counts as concurrent with it: the permissive choice,
//! because recorder clocks cannot order events that close. A configuration linearizes next
//! one of the operations called before the first return entry in the list (the pending
//! operation that returned first must come before anything called after it), applies it to
//! the register, and removes ("lifts") its two entries; on a dead end the search pops the last
//! choice, puts its entries back ("unlifts") and tries the next candidate.
//!
//! Operations with an unknown outcome have no return entry: they may take effect at any point
//! after their call, or never, and nothing requires them to be placed. They are kept apart in
//! classes of identical effect; two pending ones of a class, both called, are interchangeable,
//! so only the earliest of each class is ever tried. They are tried after the known
//! candidates, so the common case (the write did not apply, or applied late) stays a straight
//! walk. An unknown operation is only placed where the next operation needs it: never when it
//! would leave the register as it is, and never followed by an operation that could have gone
//! first with the same result (see [`Search::place`]).
//!
//! A get or failed compare-and-set that its output allows in the current configuration is
//! placed at once, with no alternatives tried (see [`Search::place_read_only`]): reads among
//! concurrent writes are what makes a register's search branch, and this makes them prune.
//!
//! Values nobody reads (no get returns them, no compare-and-set expects them) are all one
//! state, "present with a value nobody observes": which of them the register holds cannot
//! change any output, and merging them lets configurations meet in the cache.
//!
//! The cache ([`Visited`]) identifies a configuration by 128-bit fingerprints: the XOR of a
//! random 128-bit word per placed operation (Zobrist hashing, updated in O(1) per step instead
//! of hashing a bitset) and one for the register state. Two configurations would have to
//! collide on 128 random bits to be confused (about 10^-20 for a billion states), and a
//! collision could only make the checker reject, never accept, a history. It also treats a
//! configuration with more unknown operations placed as covered by one with fewer.
//!
//! Each rule removes only choices that some remaining one does at least as well, which a
//! brute-force reference checks on random small histories (the crate's tests).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use crate::history::Input;
use crate::history::Operation;
use crate::history::Outcome;
use crate::history::Output;
use crate::visited::Visited;

/// No entry, op or class.
const NIL: u32 = u32::MAX;
/// State id of an absent key.
const ABSENT: u32 = 0;
/// State id of a value nobody observes (see the module docs).
const OPAQUE: u32 = 1;
/// How many of the last placed operations a violation window keeps.
const RECENT: usize = 8;
/// Steps between two reads of the clock for the time limit.
const CLOCK_EVERY: u64 = 1024;

/// An operation compiled against the key's state ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    /// A get that returned this state.
    Read(u32),
    /// A put (known or unknown).
    Write(u32),
    /// A delete that returned whether the key existed.
    Delete(bool),
    /// A delete with an unknown outcome.
    DeleteAny,
    /// A compare-and-set that succeeded.
    CasOk { expect: u32, new: u32 },
    /// A compare-and-set that failed.
    CasFailed { expect: u32 },
    /// A compare-and-set with an unknown outcome: only its success is worth placing, since a
    /// failure has no effect.
    CasAny { expect: u32, new: u32 },
}

impl Step {
    /// The state after this step from `state`, or `None` if its output rules it out there.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Delete(existed) => ((state != ABSENT) == existed).then_some(ABSENT),
            Step::DeleteAny => Some(ABSENT),
            Step::CasOk { expect, new } | Step::CasAny { expect, new } => (state == expect).then_some(new),
            Step::CasFailed { expect } => (state != expect).then_some(state),
        }
    }

    /// Whether it sets the register (so it becomes the writer of the current value).
    fn writes(self) -> bool {
        !self.read_only()
    }

    /// Whether it leaves the register as it is.
    fn read_only(self) -> bool {
        matches!(self, Step::Read(_) | Step::CasFailed { .. })
    }
}

/// One entry of the known operations' list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    time: u64,
    op: u32,
    is_return: bool,
}

/// A key's operations, compiled for the search. Op numbers index `used`.
struct Key {
    /// Indices into the caller's slice of the operations the search uses.
    used: Vec<usize>,
    steps: Vec<Step>,
    unknown: Vec<bool>,
    call: Vec<u64>,
    /// Zobrist word per op, per state id, and per state id before an unknown op.
    z_op: Vec<u128>,
    z_state: Vec<u128>,
    z_before: Vec<u128>,
    entries: Vec<Entry>,
    call_entry: Vec<u32>,
    ret_entry: Vec<u32>,
    known: usize,
    /// Unknown ops by class, each class in call order; classes ordered by first call.
    classes: Vec<Vec<u32>>,
    class_of: Vec<u32>,
}

impl Key {
    /// Drops what carries no information (failed operations, reads with no answer) and
    /// compiles the rest; an error names an operation the checker cannot interpret.
    fn compile(ops: &[&Operation]) -> Result<Key, (usize, String)> {
        let used: Vec<usize> = (0..ops.len())
            .filter(|&i| match (&ops[i].input, &ops[i].outcome) {
                (_, Outcome::Failed) | (Input::Get, Outcome::Unknown) => false,
                (_, Outcome::Ok { .. } | Outcome::Unknown) => true,
            })
            .collect();
        let mut ids: HashMap<&str, u32> = HashMap::new();
        for &i in &used {
            let observed = match (&ops[i].input, &ops[i].outcome) {
                (Input::Get, Outcome::Ok { output: Output::Get(Some(v)), .. }) => v,
                (Input::Cas { expect: Some(e), .. }, _) => e,
                _ => continue,
            };
            let next = ids.len() as u32 + 2;
            ids.entry(observed.as_str()).or_insert(next);
        }
        let id = |v: &str| ids.get(v).copied().unwrap_or(OPAQUE);
        let id_of = |v: &Option<String>| v.as_deref().map_or(ABSENT, id);
        let states = ids.len() + 2;

        let n = used.len();
        let mut steps = Vec::with_capacity(n);
        let mut unknown = Vec::with_capacity(n);
        let mut call = Vec::with_capacity(n);
        let mut entries = Vec::new();
        for (o, &i) in used.iter().enumerate() {
            let op = ops[i];
            if let Some(why) = op.malformed() {
                return Err((i, why));
            }
            let step = match (&op.input, &op.outcome) {
                (Input::Get, Outcome::Ok { output: Output::Get(v), .. }) => Step::Read(id_of(v)),
                (Input::Put(v), _) => Step::Write(id(v)),
                (Input::Delete, Outcome::Ok { output: Output::Delete(existed), .. }) => Step::Delete(*existed),
                (Input::Delete, _) => Step::DeleteAny,
                (Input::Cas { expect, new }, Outcome::Ok { output: Output::Cas(true), .. }) => {
                    Step::CasOk { expect: id_of(expect), new: id(new) }
                }
                (Input::Cas { expect, .. }, Outcome::Ok { output: Output::Cas(false), .. }) => {
                    Step::CasFailed { expect: id_of(expect) }
                }
                (Input::Cas { expect, new }, _) => Step::CasAny { expect: id_of(expect), new: id(new) },
                (Input::Get, _) => return Err((i, "a get with no value read".into())),
            };
            steps.push(step);
            call.push(op.call);
            unknown.push(op.ret().is_none());
            if let Some(ret) = op.ret() {
                entries.push(Entry { time: op.call, op: o as u32, is_return: false });
                entries.push(Entry { time: ret, op: o as u32, is_return: true });
            }
        }
        // Calls before returns at equal times: such operations count as concurrent.
        entries.sort_by_key(|e| (e.time, e.is_return, e.op));
        let mut call_entry = vec![NIL; n];
        let mut ret_entry = vec![NIL; n];
        for (e, entry) in entries.iter().enumerate() {
            let slot = if entry.is_return { &mut ret_entry } else { &mut call_entry };
            slot[entry.op as usize] = e as u32;
        }

        let mut pending: Vec<u32> = (0..n as u32).filter(|&o| unknown[o as usize]).collect();
        pending.sort_by_key(|&o| (call[o as usize], o));
        let mut class_ids: HashMap<Step, u32> = HashMap::new();
        let mut classes: Vec<Vec<u32>> = Vec::new();
        let mut class_of = vec![NIL; n];
        for o in pending {
            let next = classes.len() as u32;
            let c = *class_ids.entry(steps[o as usize]).or_insert(next);
            if c == next {
                classes.push(Vec::new());
            }
            classes[c as usize].push(o);
            class_of[o as usize] = c;
        }

        Ok(Key {
            used,
            z_op: (0..n as u64).map(|i| zobrist(i, 0)).collect(),
            z_state: (0..states as u64).map(|i| zobrist(i, 1)).collect(),
            z_before: (0..states as u64).map(|i| zobrist(i, 2)).collect(),
            known: entries.len() / 2,
            steps,
            unknown,
            call,
            entries,
            call_entry,
            ret_entry,
            classes,
            class_of,
        })
    }
}

/// splitmix64: a fixed, well-mixed sequence, so runs are reproducible.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 128-bit Zobrist word of item `i` of stream `stream`.
fn zobrist(i: u64, stream: u64) -> u128 {
    let x = i.wrapping_mul(8).wrapping_add(stream * 2);
    (u128::from(mix(x)) << 64) | u128::from(mix(x + 1))
}

/// Where the scan of the current configuration stands.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// A configuration just reached: look for a read-only operation to force first.
    Fresh,
    /// At this entry of the known list (`NIL`: its end).
    Known(u32),
    /// Past the known candidates, which stopped at return entry `ret`; next class to try.
    Unknown { class: u32, ret: u32 },
}

/// One placed operation, with what to restore when it is taken back.
#[derive(Debug, Clone, Copy)]
struct Frame {
    op: u32,
    state: u32,
    writer: u32,
    /// For an unknown op: the return entry its scan stopped at, to resume that scan.
    ret: u32,
    after_unknown: bool,
    unknown_set: u32,
    /// Placed by [`Search::place_read_only`]: its configuration has no other choice.
    forced: bool,
}

/// What an attempt to place an operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Placed,
    /// Its output rules it out here, or placing it is never needed.
    Invalid,
    /// The configuration it leads to was visited, or is subsumed by a visited one.
    Seen,
}

/// The dead end that placed the most: the longest prefix placed, and the operation that could
/// not follow it. Indices are into the caller's slice.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// Known operations placed, then unknown ones placed (fewer is better).
    rank: (usize, Reverse<usize>),
    /// How many operations were placed.
    pub depth: usize,
    /// The operation that wrote the register's value there (`None`: never written).
    pub writer: Option<usize>,
    /// The last placed operations, in linearization order.
    pub recent: Vec<usize>,
    /// The pending operation that returned first, which nothing could precede.
    pub stuck: usize,
    /// The other pending operations called before it returned.
    pub concurrent: Vec<usize>,
}

/// What the search found.
#[derive(Debug)]
pub(crate) enum Found {
    /// Every known operation was placed.
    Linearizable,
    /// Every configuration is a dead end; the one that placed the most.
    Violation(Window),
    /// The time limit ran out.
    GaveUp,
}

/// The search's answer and its cost.
#[derive(Debug)]
pub(crate) struct Searched {
    /// What it found.
    pub found: Found,
    /// Configurations visited.
    pub steps: u64,
    /// Operations the search used (failed operations and unanswered reads are dropped).
    pub used: usize,
    /// Of which with an unknown outcome.
    pub unknown: usize,
}

/// Checks one key's operations (all of the same key) from an absent key. An error names an
/// operation (an index into `ops`) the checker cannot interpret, and why.
pub(crate) fn search(ops: &[&Operation], limit: Duration) -> Result<Searched, (usize, String)> {
    let key = Key::compile(ops)?;
    let mut search = Search::new(&key);
    let (found, steps) = search.run(limit);
    let unknown = key.unknown.iter().filter(|&&u| u).count();
    Ok(Searched { found, steps, used: key.used.len(), unknown })
}

struct Search<'k> {
    k: &'k Key,
    head: u32,
    next: Vec<u32>,
    prev: Vec<u32>,
    class_pos: Vec<usize>,
    remaining_known: usize,
    unknown_placed: usize,
    /// The last placed operation has an unknown outcome (see [`Search::place`]).
    after_unknown: bool,
    state: u32,
    writer: u32,
    /// Zobrist fingerprints of the placed known and unknown operations.
    fp_known: u128,
    fp_unknown: u128,
    /// The interned set of placed unknown operations.
    unknown_set: u32,
    stack: Vec<Frame>,
    visited: Visited,
    best: Option<Window>,
}

impl<'k> Search<'k> {
    fn new(k: &'k Key) -> Self {
        let len = k.entries.len();
        let head = len as u32;
        // Entry i links to i-1 and i+1; the head sentinel sits at index `len`.
        let mut next: Vec<u32> = (1..=len as u32).collect();
        let mut prev: Vec<u32> = (0..len as u32).map(|i| i.wrapping_sub(1)).collect();
        if let Some(last) = next.last_mut() {
            *last = NIL;
        }
        if let Some(first) = prev.first_mut() {
            *first = head;
        }
        next.push(if len == 0 { NIL } else { 0 });
        prev.push(NIL);
        let mut visited = Visited::default();
        Search {
            k,
            head,
            next,
            prev,
            class_pos: vec![0; k.classes.len()],
            remaining_known: k.known,
            unknown_placed: 0,
            after_unknown: false,
            state: ABSENT,
            writer: NIL,
            fp_known: 0,
            fp_unknown: 0,
            unknown_set: visited.unknown_set(0, &[], NIL),
            stack: Vec::new(),
            visited,
            best: None,
        }
    }

    fn run(&mut self, limit: Duration) -> (Found, u64) {
        let start = Instant::now();
        let mut steps = 0u64;
        let mut cursor = Cursor::Fresh;
        loop {
            if self.remaining_known == 0 {
                return (Found::Linearizable, steps);
            }
            steps += 1;
            if steps.is_multiple_of(CLOCK_EVERY) && start.elapsed() > limit {
                return (Found::GaveUp, steps);
            }
            cursor = match cursor {
                Cursor::Fresh => match self.place_read_only() {
                    Placement::Placed => Cursor::Fresh,
                    Placement::Invalid => Cursor::Known(self.next[self.head as usize]),
                    Placement::Seen => match self.backtrack() {
                        Some(cursor) => cursor,
                        None => return (self.best.take().map_or(Found::GaveUp, Found::Violation), steps),
                    },
                },
                Cursor::Known(e) if e != NIL && !self.k.entries[e as usize].is_return => {
                    match self.place(self.k.entries[e as usize].op, NIL, false) {
                        Placement::Placed => Cursor::Fresh,
                        Placement::Invalid | Placement::Seen => Cursor::Known(self.next[e as usize]),
                    }
                }
                // The first pending return: no known operation called later may go first.
                Cursor::Known(ret) => Cursor::Unknown { class: 0, ret },
                Cursor::Unknown { class, ret } => {
                    if self.place_unknown(class, ret) {
                        Cursor::Fresh
                    } else {
                        self.dead_end(ret);
                        match self.backtrack() {
                            Some(cursor) => cursor,
                            // With known operations left the scan always stops at a return
                            // entry, so a window exists; a missing one is not taken as a pass.
                            None => return (self.best.take().map_or(Found::GaveUp, Found::Violation), steps),
                        }
                    }
                }
            };
        }
    }

    /// The time of return entry `ret`, the latest call time a candidate may have.
    fn horizon(&self, ret: u32) -> u64 {
        if ret == NIL { u64::MAX } else { self.k.entries[ret as usize].time }
    }

    /// Tries the earliest called, pending op of each class from `class` on.
    fn place_unknown(&mut self, class: u32, ret: u32) -> bool {
        let horizon = self.horizon(ret);
        for c in class as usize..self.k.classes.len() {
            if let Some(&op) = self.k.classes[c].get(self.class_pos[c])
                && self.k.call[op as usize] <= horizon
                && self.place(op, ret, false) == Placement::Placed
            {
                return true;
            }
        }
        false
    }

    /// A configuration whose known candidates include a read-only operation (a get, a failed
    /// compare-and-set) that its output allows here needs no other choice: any linearization
    /// from here stays one with that operation moved first, since it changes nothing and
    /// everything pending returned no earlier than its call. So it is placed at once, and if
    /// that fails, the configuration fails. This turns reads among many concurrent writes
    /// from a source of branching into a source of pruning.
    fn place_read_only(&mut self) -> Placement {
        let mut e = self.next[self.head as usize];
        while e != NIL && !self.k.entries[e as usize].is_return {
            let op = self.k.entries[e as usize].op;
            let step = self.k.steps[op as usize];
            if step.read_only() && step.apply(self.state).is_some() {
                match self.place(op, NIL, true) {
                    // Ruled out right after an unknown operation: not a choice to force.
                    Placement::Invalid => {}
                    placed_or_seen => return placed_or_seen,
                }
            }
            e = self.next[e as usize];
        }
        Placement::Invalid
    }

    /// Places `op` if its output allows it here and the configuration it leads to is new.
    ///
    /// Unknown operations are placed only where needed, since leaving one pending (it never
    /// took effect) allows all that placing it does: never when it would leave the register as
    /// it is, and, right after one placed from state s, no operation that could have gone
    /// first from s with the same result follows it (a read-only one swaps before it; any
    /// other erases it unobserved). Any linearization becomes one that obeys these rules by
    /// dropping unknown operations or moving them later. Since the rule restricts what
    /// follows, s is part of such a configuration's cache key.
    fn place(&mut self, op: u32, ret: u32, forced: bool) -> Placement {
        let o = op as usize;
        let step = self.k.steps[o];
        let Some(state) = step.apply(self.state) else { return Placement::Invalid };
        let unknown = self.k.unknown[o];
        if unknown && state == self.state {
            return Placement::Invalid; // leaving it pending allows as much
        }
        if self.after_unknown
            && let Some(before) = self.stack.last().and_then(|f| step.apply(f.state))
            && (step.read_only() || before == state)
        {
            return Placement::Invalid; // it does not need the unknown operation just placed
        }
        let z = self.k.z_op[o];
        let (fp_known, fp_unknown, plus) = match unknown {
            true => (self.fp_known, self.fp_unknown ^ z, self.k.class_of[o]),
            false => (self.fp_known ^ z, self.fp_unknown, NIL),
        };
        let unknown_set = match unknown {
            true => self.visited.unknown_set(fp_unknown, &self.class_pos, plus),
            false => self.unknown_set,
        };
        // A restricted configuration's key also holds the state before the unknown operation.
        let key = fp_known ^ self.k.z_state[state as usize];
        let seen = match unknown {
            true => {
                let restricted = key ^ self.k.z_before[self.state as usize];
                self.visited.covered(key, &self.class_pos, plus)
                    || !self.visited.insert(restricted, unknown_set, &self.class_pos, plus)
            }
            false => !self.visited.insert(key, unknown_set, &self.class_pos, plus),
        };
        if seen {
            return Placement::Seen;
        }
        let f = Frame {
            op,
            state: self.state,
            writer: self.writer,
            ret,
            after_unknown: self.after_unknown,
            unknown_set: self.unknown_set,
            forced,
        };
        self.stack.push(f);
        (self.fp_known, self.fp_unknown, self.unknown_set) = (fp_known, fp_unknown, unknown_set);
        self.state = state;
        self.after_unknown = unknown;
        if step.writes() {
            self.writer = op;
        }
        if self.k.unknown[o] {
            self.class_pos[self.k.class_of[o] as usize] += 1;
            self.unknown_placed += 1;
        } else {
            self.unlink(self.k.call_entry[o]);
            self.unlink(self.k.ret_entry[o]);
            self.remaining_known -= 1;
        }
        Placement::Placed
    }

    /// Takes back the last placed op, and the ones before it while they were forced (their
    /// configurations fail with them); returns where the scan resumes.
    fn backtrack(&mut self) -> Option<Cursor> {
        let mut f = self.take_back()?;
        while f.forced {
            f = self.take_back()?;
        }
        let o = f.op as usize;
        Some(match self.k.unknown[o] {
            true => Cursor::Unknown { class: self.k.class_of[o] + 1, ret: f.ret },
            false => Cursor::Known(self.next[self.k.call_entry[o] as usize]),
        })
    }

    /// Takes back the last placed op.
    fn take_back(&mut self) -> Option<Frame> {
        let f = self.stack.pop()?;
        let o = f.op as usize;
        self.state = f.state;
        self.writer = f.writer;
        self.after_unknown = f.after_unknown;
        self.unknown_set = f.unknown_set;
        if self.k.unknown[o] {
            self.fp_unknown ^= self.k.z_op[o];
            self.class_pos[self.k.class_of[o] as usize] -= 1;
            self.unknown_placed -= 1;
        } else {
            self.fp_known ^= self.k.z_op[o];
            // Undo in the reverse order of `place`'s unlinks.
            self.relink(self.k.ret_entry[o]);
            self.relink(self.k.call_entry[o]);
            self.remaining_known += 1;
        }
        Some(f)
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        if n != NIL {
            self.prev[n as usize] = e;
        }
    }

    /// Keeps the dead end that placed the most known operations, and of those the first
    /// that placed the fewest unknown ones (a window with guesses about unknown outcomes reads
    /// worse): the violation window.
    fn dead_end(&mut self, ret: u32) {
        let depth = self.stack.len();
        let rank = (self.k.known - self.remaining_known, Reverse(self.unknown_placed));
        if ret == NIL || self.best.as_ref().is_some_and(|b| b.rank >= rank) {
            return;
        }
        let k = self.k;
        let stuck = k.entries[ret as usize].op;
        let mut concurrent = Vec::new();
        let mut e = self.next[self.head as usize];
        while e != ret && e != NIL {
            let op = k.entries[e as usize].op;
            if op != stuck {
                concurrent.push(k.used[op as usize]);
            }
            e = self.next[e as usize];
        }
        let horizon = self.horizon(ret);
        for (c, members) in k.classes.iter().enumerate() {
            let called = members[self.class_pos[c]..].iter().take_while(|&&op| k.call[op as usize] <= horizon);
            concurrent.extend(called.map(|&op| k.used[op as usize]));
        }
        self.best = Some(Window {
            rank,
            depth,
            writer: (self.writer != NIL).then(|| k.used[self.writer as usize]),
            recent: self.stack[depth.saturating_sub(RECENT)..].iter().map(|f| k.used[f.op as usize]).collect(),
            stuck: k.used[stuck as usize],
            concurrent,
        });
    }
}
