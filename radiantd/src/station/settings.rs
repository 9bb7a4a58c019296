//! Cluster settings: configuration beyond transport, held in the cluster map and changed
//! through the station's log (`radiantctl set NAME VALUE`), the way CockroachDB's cluster
//! settings are. A node's config file holds only what it needs before it can reach the
//! station; everything the bondsmith decides with lives here, so every bondsmith decides
//! alike and a change is journaled like any other.

use serde::Deserialize;
use serde::Serialize;

/// The settings, with their current values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Silence after which a node is marked down.
    pub down_after_ms: u64,
    /// How long an order or station member must be down before a spare takes its place.
    pub replace_after_ms: u64,
    /// Whether dead members are replaced without an operator.
    pub auto_replace: bool,
    /// Each node's limit for sending snapshots, in MiB/s; 0 means unlimited. Catching up a
    /// new replica of a large order must not take all of a node's disk and network.
    pub snapshot_rate_mib: u32,
    /// Each node's limit for sending shard moves, in MiB/s; 0 means unlimited. A rebalance
    /// must not starve the clients of the orders it moves between.
    pub move_rate_mib: u32,
    /// Moves under way at once, over the cluster.
    pub move_concurrency: u32,
    /// Whether the coordinator rebalances by itself when the layout is uneven (an order formed
    /// or left).
    pub auto_rebalance: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            down_after_ms: 3_000,
            replace_after_ms: 300_000,
            auto_replace: true,
            snapshot_rate_mib: 0,
            move_rate_mib: 64,
            move_concurrency: 2,
            auto_rebalance: true,
        }
    }
}

/// One setting as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingInfo {
    /// Name.
    pub name: &'static str,
    /// Current value.
    pub value: String,
    /// Default value.
    pub default: String,
    /// What it means.
    pub meaning: &'static str,
}

/// Why a setting cannot be changed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// No setting has this name.
    #[error("unknown setting {name:?}; the settings are: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every known name.
        known: String,
    },
    /// The value does not fit the setting.
    #[error("bad value {value:?} for {name}: expected {expected}")]
    BadValue {
        /// Setting.
        name: &'static str,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
}

/// Lowest accepted `down_after_ms`: below a few liveness intervals every node would flap.
const MIN_DOWN_AFTER_MS: u64 = 500;

struct Def {
    name: &'static str,
    meaning: &'static str,
    get: fn(&Settings) -> String,
    set: fn(&mut Settings, &str) -> Result<(), &'static str>,
}

fn boolean(v: &str) -> Result<bool, &'static str> {
    match v {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err("true or false"),
    }
}

fn millis(v: &str, min: u64) -> Result<u64, ()> {
    v.parse::<u64>().ok().filter(|ms| *ms >= min && *ms <= 30 * 24 * 3_600_000).ok_or(())
}

const DEFS: &[Def] = &[
    Def {
        name: "down_after_ms",
        meaning: "silence (no heartbeat) after which a node is marked down",
        get: |s| s.down_after_ms.to_string(),
        set: |s, v| {
            s.down_after_ms = millis(v, MIN_DOWN_AFTER_MS).map_err(|_| "milliseconds, 500 to 2592000000")?;
            Ok(())
        },
    },
    Def {
        name: "replace_after_ms",
        meaning: "how long a member must be down before a spare replaces it in its order",
        get: |s| s.replace_after_ms.to_string(),
        set: |s, v| {
            s.replace_after_ms = millis(v, 0).map_err(|_| "milliseconds, 0 to 2592000000")?;
            Ok(())
        },
    },
    Def {
        name: "auto_replace",
        meaning: "replace dead members with spares without an operator",
        get: |s| s.auto_replace.to_string(),
        set: |s, v| {
            s.auto_replace = boolean(v)?;
            Ok(())
        },
    },
    Def {
        name: "snapshot_rate_mib",
        meaning: "each node's limit for sending snapshots, in MiB/s (0: unlimited)",
        get: |s| s.snapshot_rate_mib.to_string(),
        set: |s, v| {
            s.snapshot_rate_mib = v.parse().map_err(|_| "MiB/s, 0 (unlimited) to 4294967295")?;
            Ok(())
        },
    },
    Def {
        name: "move_rate_mib",
        meaning: "each node's limit for sending shard moves, in MiB/s (0: unlimited)",
        get: |s| s.move_rate_mib.to_string(),
        set: |s, v| {
            s.move_rate_mib = v.parse().map_err(|_| "MiB/s, 0 (unlimited) to 4294967295")?;
            Ok(())
        },
    },
    Def {
        name: "move_concurrency",
        meaning: "shard moves under way at once, over the cluster",
        get: |s| s.move_concurrency.to_string(),
        set: |s, v| {
            s.move_concurrency = v.parse().ok().filter(|n| (1..=64).contains(n)).ok_or("1 to 64")?;
            Ok(())
        },
    },
    Def {
        name: "auto_rebalance",
        meaning: "rebalance shards without an operator when an order forms or leaves",
        get: |s| s.auto_rebalance.to_string(),
        set: |s, v| {
            s.auto_rebalance = boolean(v)?;
            Ok(())
        },
    },
];

impl Settings {
    /// Every setting with its value, default and meaning, in a fixed order.
    pub fn list(&self) -> Vec<SettingInfo> {
        let defaults = Settings::default();
        DEFS.iter()
            .map(|d| SettingInfo {
                name: d.name,
                value: (d.get)(self),
                default: (d.get)(&defaults),
                meaning: d.meaning,
            })
            .collect()
    }

    /// Changes one setting; on error nothing changes.
    pub fn set(&mut self, name: &str, value: &str) -> Result<SettingInfo, SettingError> {
        let Some(def) = DEFS.iter().find(|d| d.name == name) else {
            return Err(SettingError::Unknown {
                name: name.to_string(),
                known: DEFS.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
            });
        };
        let mut next = self.clone();
        (def.set)(&mut next, value.trim()).map_err(|expected| SettingError::BadValue {
            name: def.name,
            value: value.to_string(),
            expected,
        })?;
        *self = next;
        Ok(SettingInfo {
            name: def.name,
            value: (def.get)(self),
            default: (def.get)(&Settings::default()),
            meaning: def.meaning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_listed_with_its_default() {
        let s = Settings::default();
        let names: Vec<_> = s.list().iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "down_after_ms",
                "replace_after_ms",
                "auto_replace",
                "snapshot_rate_mib",
                "move_rate_mib",
                "move_concurrency",
                "auto_rebalance"
            ]
        );
        assert!(s.list().iter().all(|i| i.value == i.default && !i.meaning.is_empty()));
        assert_eq!(s.replace_after_ms, 300_000, "CockroachDB's five minutes");
        assert_eq!(s.snapshot_rate_mib, 0, "snapshots unlimited unless an operator says otherwise");
    }

    #[test]
    fn set_changes_one_value_and_refuses_bad_ones_without_changing_anything() {
        let mut s = Settings::default();
        assert_eq!(s.set("replace_after_ms", "2000").unwrap().value, "2000");
        assert_eq!(s.replace_after_ms, 2_000);
        assert_eq!(s.set("auto_replace", "off").unwrap().value, "false");
        assert_eq!(s.set("snapshot_rate_mib", "50").unwrap().value, "50");
        assert_eq!(s.snapshot_rate_mib, 50);
        assert_eq!(s.set("move_rate_mib", "8").unwrap().value, "8");
        assert_eq!(s.set("move_concurrency", "4").unwrap().value, "4");
        assert_eq!(s.set("auto_rebalance", "false").unwrap().value, "false");
        let before = s.clone();
        assert!(matches!(s.set("replace_after", "1"), Err(SettingError::Unknown { .. })));
        assert!(matches!(s.set("down_after_ms", "10"), Err(SettingError::BadValue { .. })));
        assert!(matches!(s.set("down_after_ms", "-5"), Err(SettingError::BadValue { .. })));
        assert!(matches!(s.set("auto_replace", "maybe"), Err(SettingError::BadValue { .. })));
        assert!(matches!(s.set("snapshot_rate_mib", "-1"), Err(SettingError::BadValue { .. })));
        assert!(matches!(s.set("snapshot_rate_mib", "1.5"), Err(SettingError::BadValue { .. })));
        assert!(matches!(s.set("move_concurrency", "0"), Err(SettingError::BadValue { .. })));
        assert!(matches!(s.set("auto_rebalance", "yes"), Err(SettingError::BadValue { .. })));
        assert_eq!(s, before);
        let e = s.set("nope", "1").unwrap_err().to_string();
        assert!(e.contains("down_after_ms, replace_after_ms, auto_replace, snapshot_rate_mib, move_rate_mib"), "{e}");
    }
}
