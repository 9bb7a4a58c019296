//! What the checker concludes, per key and overall, and how a violation reads.

use std::fmt;
use std::time::Duration;

use crate::history::Input;
use crate::history::Operation;
use crate::history::Value;

/// The answer for a history or for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Some order of the operations, each taking effect between its call and its return,
    /// explains every output.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// The checker gave up (time limit, or an operation it cannot interpret). Never a pass.
    Unknown,
}

/// Why the checker could not decide a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaveUp {
    /// The search ran past the per-key time limit.
    TimeLimit {
        /// The limit.
        limit: Duration,
    },
    /// An operation the checker cannot interpret: a recorder bug.
    Malformed {
        /// The operation.
        op: Box<Operation>,
        /// What is wrong with it.
        reason: String,
    },
}

/// The smallest part of a key's history that shows it is not linearizable, Porcupine's way:
/// the longest prefix the search could linearize, the register's value there, and the
/// operation that could not be placed next although it had returned, with the operations
/// concurrent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// How many operations that longest linearizable prefix has.
    pub linearized: usize,
    /// How many operations of the key the checker used.
    pub ops: usize,
    /// The register's value after that prefix.
    pub value: Option<String>,
    /// The operation that wrote that value (`None`: nothing was written yet).
    pub writer: Option<Operation>,
    /// The last operations of the prefix that overlap the window in time, in linearization
    /// order.
    pub recent: Vec<Operation>,
    /// The operation that returned first among those not yet placed, and that no order of
    /// the pending operations lets take effect before it returned.
    pub stuck: Operation,
    /// The other operations not yet placed that were called before it returned, by call time.
    pub concurrent: Vec<Operation>,
}

/// One key's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyResult {
    /// The key's history is linearizable.
    Linearizable,
    /// It is not; the window that shows it.
    NotLinearizable(Box<Violation>),
    /// The checker gave up on it.
    Unknown(GaveUp),
}

impl KeyResult {
    /// The verdict without the details.
    pub fn verdict(&self) -> Verdict {
        match self {
            KeyResult::Linearizable => Verdict::Linearizable,
            KeyResult::NotLinearizable(_) => Verdict::NotLinearizable,
            KeyResult::Unknown(_) => Verdict::Unknown,
        }
    }
}

/// One key's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Operations checked (failed operations and reads with no answer are dropped).
    pub ops: usize,
    /// Of which with an unknown outcome.
    pub unknown: usize,
    /// Search configurations visited.
    pub steps: u64,
    /// Time spent on this key.
    pub elapsed: Duration,
    /// The result.
    pub result: KeyResult,
}

/// The whole history's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `NotLinearizable` if any key is, else `Unknown` if the checker gave up on any key.
    pub verdict: Verdict,
    /// Operations in the history as given.
    pub ops: usize,
    /// Per key, in key order.
    pub keys: Vec<KeyReport>,
    /// Wall time of the whole check.
    pub elapsed: Duration,
}

impl Report {
    /// Whether every key was found linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }

    /// The violations found, in key order.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.keys.iter().filter_map(|k| match &k.result {
            KeyResult::NotLinearizable(v) => Some(&**v),
            _ => None,
        })
    }

    /// One line: the verdict, the number of keys and operations, the time it took.
    pub fn summary(&self) -> String {
        let count = |v: Verdict| self.keys.iter().filter(|k| k.result.verdict() == v).count();
        let unknown: usize = self.keys.iter().map(|k| k.unknown).sum();
        let what = match self.verdict {
            Verdict::Linearizable => "linearizable".to_string(),
            Verdict::NotLinearizable => format!("NOT linearizable ({} keys)", count(Verdict::NotLinearizable)),
            Verdict::Unknown => format!("UNKNOWN (gave up on {} keys)", count(Verdict::Unknown)),
        };
        format!(
            "{what}: {} keys, {} operations ({unknown} with unknown outcomes), checked in {:.3} s",
            self.keys.len(),
            self.ops,
            self.elapsed.as_secs_f64()
        )
    }

    /// The keys the checker gave up on.
    pub fn undecided(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys.iter().filter(|k| k.result.verdict() == Verdict::Unknown)
    }
}

/// Lists at most this many operations per section of a violation.
const MAX_LINES: usize = 24;

fn section(f: &mut fmt::Formatter<'_>, title: &str, ops: &[Operation]) -> fmt::Result {
    writeln!(f, "  {title}:")?;
    if ops.is_empty() {
        return writeln!(f, "    (none)");
    }
    for op in ops.iter().take(MAX_LINES) {
        writeln!(f, "    {op}")?;
    }
    if ops.len() > MAX_LINES {
        writeln!(f, "    ... and {} more", ops.len() - MAX_LINES)?;
    }
    Ok(())
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?} is not linearizable. The longest linearizable prefix found has {} of its {} \
             operations and leaves ",
            self.key, self.linearized, self.ops
        )?;
        match &self.writer {
            Some(w) => writeln!(f, "the value {}, written by\n    {w}", Value(self.value.as_deref()))?,
            None => writeln!(f, "the key absent (never written)")?,
        }
        if !self.recent.is_empty() {
            section(f, "placed last, overlapping the operations below", &self.recent)?;
        }
        section(f, "then this one cannot take effect before it returned", std::slice::from_ref(&self.stuck))?;
        section(f, "even after any of these, called before it returned and not yet placed", &self.concurrent)
    }
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GaveUp::TimeLimit { limit } => write!(f, "time limit of {limit:?} reached"),
            GaveUp::Malformed { op, reason } => write!(f, "cannot interpret {op}: {reason}"),
        }
    }
}

/// A summary line, then every violation's window and every key given up on.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for k in &self.keys {
            match &k.result {
                KeyResult::Linearizable => {}
                KeyResult::NotLinearizable(v) => write!(f, "{v}")?,
                KeyResult::Unknown(why) => {
                    writeln!(f, "key {:?}: gave up after {} steps over {} operations: {why}", k.key, k.steps, k.ops)?
                }
            }
        }
        Ok(())
    }
}

/// The value an operation that sets the register leaves (`None` for a delete).
pub(crate) fn written(op: &Operation) -> Option<String> {
    match &op.input {
        Input::Put(v) | Input::Cas { new: v, .. } => Some(v.clone()),
        Input::Get | Input::Delete => None,
    }
}
