//! The "never two owners" check: every Kv answer names the ownership of the key's shard that
//! gave it (the serving order and the map epoch at which its log acquired the shard, see
//! `Served` in the proto). A shard handover is fenced: the old owner's log releases the shard
//! before the new owner's log acquires it, so every operation served under the older owner
//! epoch takes effect before every one served under the newer. If an operation under an older
//! epoch was *called* after one under a newer epoch had *returned*, two orders served the
//! shard at once: the old owner was still serving after the new one had begun.
//!
//! The linearizability checker catches most such cases by their values, but not one whose
//! stale answer happens to be right; this check needs no value at all.

use std::collections::BTreeMap;

/// One completed operation, with the ownership that served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedOp {
    /// The key.
    pub key: String,
    /// Call and return times, nanoseconds on the history's clock.
    pub call: u64,
    /// Return time.
    pub ret: u64,
    /// The order that served it.
    pub order: u64,
    /// The map epoch its log acquired the key's shard at (0: not recorded; such operations
    /// are not checked).
    pub owner_epoch: u64,
}

/// Every pair of operations on one key where one served under an older owner epoch began after
/// one under a newer epoch had returned, described; empty if there is none. One pair per key
/// and epoch is enough to show it.
pub fn overlaps(ops: &[ServedOp]) -> Vec<String> {
    let mut by_key: BTreeMap<&str, BTreeMap<u64, Vec<&ServedOp>>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.owner_epoch > 0) {
        by_key.entry(&op.key).or_default().entry(op.owner_epoch).or_default().push(op);
    }
    let mut found = Vec::new();
    for (key, epochs) in by_key {
        // The latest-called operation under any epoch below the current one.
        let mut latest_older: Option<&ServedOp> = None;
        for (epoch, ops) in epochs {
            let earliest = ops.iter().min_by_key(|o| o.ret).copied();
            if let (Some(old), Some(new)) = (latest_older, earliest)
                && new.ret < old.call
            {
                found.push(format!(
                    "{key}: order {} (owner epoch {}) answered a call at {} ns, after order {} (owner epoch {epoch}) \
                     had answered at {} ns",
                    old.order, old.owner_epoch, old.call, new.order, new.ret
                ));
            }
            let latest = ops.iter().max_by_key(|o| o.call).copied();
            if latest.is_some_and(|l| latest_older.is_none_or(|o| l.call > o.call)) {
                latest_older = latest;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, call: u64, ret: u64, order: u64, owner_epoch: u64) -> ServedOp {
        ServedOp { key: key.into(), call, ret, order, owner_epoch }
    }

    #[test]
    fn a_handover_in_order_passes() {
        let ops = [op("k", 0, 10, 1, 3), op("k", 5, 20, 1, 3), op("k", 30, 40, 2, 9), op("k", 15, 35, 2, 9)];
        assert!(overlaps(&ops).is_empty());
    }

    #[test]
    fn concurrent_answers_of_both_owners_pass() {
        // The old owner's answer overlaps the new owner's in time: it may have taken effect
        // first.
        assert!(overlaps(&[op("k", 10, 50, 1, 3), op("k", 0, 20, 2, 9)]).is_empty());
    }

    #[test]
    fn the_old_owner_answering_after_the_new_one_fails() {
        let found = overlaps(&[op("k", 0, 10, 2, 9), op("k", 20, 30, 1, 3)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("order 1 (owner epoch 3)"), "{found:?}");
    }

    #[test]
    fn unrecorded_epochs_and_other_keys_are_not_compared() {
        assert!(overlaps(&[op("k", 0, 10, 2, 9), op("k", 20, 30, 1, 0)]).is_empty());
        assert!(overlaps(&[op("k", 0, 10, 2, 9), op("j", 20, 30, 1, 3)]).is_empty());
    }

    #[test]
    fn a_violation_across_three_epochs_is_found() {
        // Epoch 3's late answer comes after epoch 9's, with epoch 5 between them.
        let ops = [op("k", 40, 50, 1, 3), op("k", 10, 20, 3, 5), op("k", 0, 30, 2, 9)];
        assert_eq!(overlaps(&ops).len(), 2);
    }
}
