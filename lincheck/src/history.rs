//! What a recorder writes down: one [`Operation`] per request a client made, with the times it
//! was called and returned and what it returned, or that its outcome is unknown.

use std::fmt;

/// Who issued an operation. A client has at most one operation in flight, so after an
/// [`Outcome::Unknown`] a recorder should give the client a new id: the old request may still
/// be pending (Knossos's rule). The checker itself does not rely on it.
pub type ClientId = u64;

/// What a client asked of one key's register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the value.
    Get,
    /// Overwrite the value.
    Put(String),
    /// Remove the key.
    Delete,
    /// Write `new` only if the current value is `expect` (`None`: the key is absent).
    Cas {
        /// The value the key must hold (`None`: absent).
        expect: Option<String>,
        /// The value written when it does.
        new: String,
    },
}

/// What an operation returned; its variant must match the [`Input`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// The value read (`None`: the key was absent).
    Get(Option<String>),
    /// The write was applied.
    Put,
    /// Whether the key existed before the delete.
    Delete(bool),
    /// Whether the compare-and-set wrote its value.
    Cas(bool),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It returned `output` at time `ret` (same clock as the call time).
    Ok {
        /// What it returned.
        output: Output,
        /// When it returned.
        ret: u64,
    },
    /// It may or may not have taken effect, at any time after its call (a timeout, a broken
    /// connection after the request left): no return time and no constraint on its output.
    Unknown,
    /// It certainly had no effect (refused before anything was applied); the checker drops it.
    Failed,
}

/// One request of one client on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Who issued it.
    pub client: ClientId,
    /// The key it addressed.
    pub key: String,
    /// What it asked.
    pub input: Input,
    /// When it was called, in nanoseconds on the recorder's clock.
    pub call: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl Operation {
    /// An operation that returned `output` at `ret`.
    pub fn ok(client: ClientId, key: impl Into<String>, input: Input, call: u64, ret: u64, output: Output) -> Self {
        Operation { client, key: key.into(), input, call, outcome: Outcome::Ok { output, ret } }
    }

    /// An operation whose outcome is unknown.
    pub fn unknown(client: ClientId, key: impl Into<String>, input: Input, call: u64) -> Self {
        Operation { client, key: key.into(), input, call, outcome: Outcome::Unknown }
    }

    /// An operation that certainly had no effect.
    pub fn failed(client: ClientId, key: impl Into<String>, input: Input, call: u64) -> Self {
        Operation { client, key: key.into(), input, call, outcome: Outcome::Failed }
    }

    /// The return time, if it returned.
    pub fn ret(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok { ret, .. } => Some(ret),
            Outcome::Unknown | Outcome::Failed => None,
        }
    }

    /// Why the checker cannot use this operation, if it cannot: an output of another kind
    /// than the input, or a return before the call. Both are recorder bugs.
    pub(crate) fn malformed(&self) -> Option<String> {
        let Outcome::Ok { output, ret } = &self.outcome else { return None };
        if *ret < self.call {
            return Some(format!("returns at {ret} ns, before its call at {} ns", self.call));
        }
        let matches = matches!(
            (&self.input, output),
            (Input::Get, Output::Get(_))
                | (Input::Put(_), Output::Put)
                | (Input::Delete, Output::Delete(_))
                | (Input::Cas { .. }, Output::Cas(_))
        );
        (!matches).then(|| format!("output {output:?} does not answer input {:?}", self.input))
    }
}

/// A value as the report shows it: quoted, or `absent`.
pub(crate) struct Value<'a>(pub Option<&'a str>);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:?}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Get => f.write_str("get"),
            Input::Put(v) => write!(f, "put {v:?}"),
            Input::Delete => f.write_str("delete"),
            Input::Cas { expect, new } => write!(f, "cas {} -> {new:?}", Value(expect.as_deref())),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Get(v) => write!(f, "{}", Value(v.as_deref())),
            Output::Put => f.write_str("ok"),
            Output::Delete(true) => f.write_str("existed"),
            Output::Delete(false) => f.write_str("was absent"),
            Output::Cas(true) => f.write_str("succeeded"),
            Output::Cas(false) => f.write_str("failed"),
        }
    }
}

/// Nanoseconds as milliseconds with microsecond precision.
struct Ms(u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} ms", self.0 / 1_000_000, self.0 % 1_000_000 / 1_000)
    }
}

/// One line: `[call .. return] client: input -> output`, times in milliseconds.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = Ms(self.call).to_string();
        let (ret, output) = match &self.outcome {
            Outcome::Ok { output, ret } => (Ms(*ret).to_string(), output.to_string()),
            Outcome::Unknown => ("?".to_string(), "outcome unknown".to_string()),
            Outcome::Failed => ("-".to_string(), "failed, no effect".to_string()),
        };
        write!(f, "[{call:>13} .. {ret:>13}] client {:<5} {} -> {output}", self.client, self.input)
    }
}
