//! Bugs planted on purpose, so that the fault-injection suite can prove it catches them: a
//! suite that passes against a broken store guards nothing. They exist only in a build with
//! the `planted-bugs` feature, which no release or ordinary test build has; in every other
//! build [`active`] is a constant `false` and the hooks compile away.
//!
//! A node of such a build runs the bug named by `RADIANT_PLANTED_BUG` at start (one of
//! [`Bug::name`]), or none.

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// A put or delete is acknowledged as soon as it is proposed, before a quorum commits it.
    AckBeforeCommit,
    /// A herald serves linearizable reads from its state machine without confirming that it
    /// still leads (no lease, no read index): a deposed herald serves stale values.
    ReadWithoutLeadership,
    /// The source of a shard move keeps serving reads of the shard after it handed it over,
    /// from its frozen copy (and, once that is deleted, as if the keys were absent), while the
    /// destination takes writes.
    ServeAfterSwitch,
    /// Raft log appends commit without an fsync, and openraft is told they are durable: a
    /// write acknowledged by a quorum may live only in the page cache of that quorum.
    AppendWithoutFsync,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 4] =
        [Bug::AckBeforeCommit, Bug::ReadWithoutLeadership, Bug::ServeAfterSwitch, Bug::AppendWithoutFsync];

    /// The name `RADIANT_PLANTED_BUG` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::ReadWithoutLeadership => "read-without-leadership",
            Bug::ServeAfterSwitch => "serve-after-switch",
            Bug::AppendWithoutFsync => "append-without-fsync",
        }
    }
}

/// Whether `bug` is planted in this process.
#[cfg(feature = "planted-bugs")]
pub fn active(bug: Bug) -> bool {
    static PLANTED: std::sync::OnceLock<Option<Bug>> = std::sync::OnceLock::new();
    let planted = PLANTED.get_or_init(|| {
        let name = std::env::var("RADIANT_PLANTED_BUG").ok()?;
        let bug = Bug::ALL.into_iter().find(|b| b.name() == name);
        match bug {
            Some(b) => tracing::warn!("planted bug active: {}", b.name()),
            None => tracing::warn!("RADIANT_PLANTED_BUG={name} names no planted bug; none is active"),
        }
        bug
    });
    *planted == Some(bug)
}

/// Whether `bug` is planted in this process: never, without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub fn active(_bug: Bug) -> bool {
    false
}
