//! Failpoints at every persisted step, for the fault suite: a `failpoints` build lets a test
//! make a node fail exactly between two steps (crash after a log append but before it is
//! acknowledged, after a map change but before its side effects, ...), which random kills hit
//! only by luck. Without the feature every `fail_point!` compiles to nothing and the Chaos RPC
//! is not served.
//!
//! A failpoint's `panic` action stands for a crash: in a `failpoints` build a panic raised by
//! a failpoint aborts the whole process, as a power cut or a SIGKILL at that line would, since
//! a panic that only ended one task would leave a half-dead node behind.
//!
//! The names, by layer:
//!
//! | name | where |
//! | --- | --- |
//! | `log-append-before`, `log-append-after` | a Raft log append, before it is written, and after the fsync that made it durable but before openraft is told |
//! | `log-sync-before` | the node's log sync thread, before the fsync that makes waiting appends durable: `sleep(MS)` keeps them unsynced that long while the node goes on (see [`crate::raft::log_sync`]) |
//! | `log-vote-before`, `log-vote-after` | saving a vote |
//! | `log-truncate-before`, `log-purge-before` | removing log entries (a new leader's truncation, a purge after a snapshot) |
//! | `order-apply-before`, `order-apply-after` | an order applying committed entries, before its batch commits and after |
//! | `order-snapshot-install-before`, `order-snapshot-install-after` | an order replica installing a snapshot it received |
//! | `station-apply-before`, `station-apply-after` | the station applying map changes |
//! | `move-ingest-before`, `move-seal-before` | a destination herald proposing a pulled chunk, sealing a copied shard |
//! | `disk-commit` | every durable commit of the Raft logs (a sync, a vote, a truncation, a purge): `return` fails it as an fsync failing with EIO, `sleep(MS)` stalls it |
//! | `recovery-KIND-before`, `recovery-KIND-after` | the bondsmith carrying out a recovery action of that journal kind (`return(MS)` holds it that long): an I/O action (`start_replica`, `add_learner`, `set_voters`, `retire_replica`, `pull`, ...) after it was journaled as decided and before it is sent, and after it returned but before its outcome is journaled; a map change (`begin_replace`, `complete_replace`, `switch_move`, ...) after it is in the station's log, before anything acts on it |
//! | `net-delay` | every Raft RPC this node sends (orders and station): `return(MS)` holds each one for a random 0 to MS milliseconds first, within its deadline |
//! | `disk-sync` | every fsync of the node's redb file, below redb (see [`crate::disk`]): `return` fails it with EIO, `sleep(MS)` stalls it |

/// Every failpoint name, for the fault suite to draw from.
pub const NAMES: &[&str] = &[
    "log-append-before",
    "log-append-after",
    "log-sync-before",
    "log-vote-before",
    "log-vote-after",
    "log-truncate-before",
    "log-purge-before",
    "order-apply-before",
    "order-apply-after",
    "order-snapshot-install-before",
    "order-snapshot-install-after",
    "station-apply-before",
    "station-apply-after",
    "move-ingest-before",
    "move-seal-before",
    "disk-commit",
    "disk-sync",
    "net-delay",
];

/// Whether `name` names a failpoint: one of [`NAMES`], or a recovery step
/// (`recovery-KIND-before` or `recovery-KIND-after`, KIND a journal kind).
pub fn known(name: &str) -> bool {
    NAMES.contains(&name)
        || name
            .strip_prefix("recovery-")
            .and_then(|k| k.strip_suffix("-before").or_else(|| k.strip_suffix("-after")))
            .is_some_and(|kind| !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
}

/// The milliseconds of failpoint `name`'s `return(MS)` action, if it has one; its `panic`
/// action crashes the node here. Always `None` without the feature.
fn millis(name: &str) -> Option<u64> {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |arg| arg.and_then(|a| a.parse::<u64>().ok())).flatten()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}

/// A step the fault suite may crash or hold: failpoint `name`'s `panic` crashes the node
/// here, and `return(MS)` holds the step for MS milliseconds without blocking the runtime
/// (fail-rs's own `sleep` would block a worker thread).
pub async fn step(name: &str) {
    if let Some(ms) = millis(name) {
        tracing::warn!(name, ms, "failpoint holds this step");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Waits as failpoint `name` says: with its `return(MS)` action, a random time from 0 to MS
/// milliseconds (a slow or jittery link, which netem would give and this kernel lacks).
pub async fn delay(name: &str) {
    if let Some(ms) = millis(name) {
        // Jitter from the clock: the delay only needs to vary, not to be unpredictable.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(nanos) % (ms + 1))).await;
    }
}

/// In a `failpoints` build, makes a failpoint's panic end the process (see the module
/// comment); elsewhere does nothing.
pub fn crash_on_failpoint_panic() {
    #[cfg(feature = "failpoints")]
    {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            default(info);
            if message.contains("failpoint") {
                eprintln!("radiantd: crashed at a failpoint: {message}");
                std::process::abort();
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recovery_steps_are_failpoints_by_pattern() {
        assert!(super::known("disk-sync"));
        assert!(super::known("recovery-add_learner-after"));
        assert!(super::known("recovery-begin_replace-before"));
        assert!(!super::known("recovery--after"));
        assert!(!super::known("recovery-add_learner"));
        assert!(!super::known("recovery-Add-after"));
        assert!(!super::known("nothing"));
    }
}
