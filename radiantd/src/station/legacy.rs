//! The station's stored records as the release before shard moves wrote them (format
//! version 1), read once and converted: a data dir of that release opens in this one.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use openraft::alias::LogIdOf;
use openraft::alias::StoredMembershipOf;
use serde::Deserialize;

use super::journal::JournalEntry;
use super::map::ClusterMap;
use super::map::NodeRecord;
use super::map::OrderId;
use super::map::OrderRecord;
use super::map::Reconfig;
use super::moves::MovePhase;
use super::moves::ShardMove;
use super::settings::Settings;
use super::state_machine::SmState;
use super::state_machine::StationConfig;
use crate::identity::NodeId;

#[derive(Deserialize)]
struct SettingsV1 {
    down_after_ms: u64,
    replace_after_ms: u64,
    auto_replace: bool,
    snapshot_rate_mib: u32,
}

/// The cluster map of version 1: `moving` named only the destinations of empty handovers.
#[derive(Deserialize)]
pub struct ClusterMapV1 {
    cluster_id: String,
    epoch: u64,
    shards: u32,
    replicas: u32,
    bondsmith: Option<NodeId>,
    station: Vec<NodeId>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    orders: BTreeMap<OrderId, OrderRecord>,
    shard_orders: Vec<OrderId>,
    next_order_id: OrderId,
    max_key_bytes: u32,
    max_value_bytes: u32,
    moving: BTreeMap<u32, OrderId>,
    settings: SettingsV1,
    station_reconfig: Option<Reconfig>,
    station_retired: BTreeSet<NodeId>,
}

impl From<ClusterMapV1> for ClusterMap {
    fn from(m: ClusterMapV1) -> Self {
        let epoch = m.epoch;
        let moves = m
            .moving
            .into_iter()
            .map(|(shard, to)| {
                let from = m.shard_orders.get(shard as usize).copied().unwrap_or(0);
                (shard, ShardMove { id: epoch, from, to, phase: MovePhase::Copying, keys: 0, bytes: 0 })
            })
            .collect();
        let s = m.settings;
        ClusterMap {
            cluster_id: m.cluster_id,
            epoch,
            shards: m.shards,
            replicas: m.replicas,
            bondsmith: m.bondsmith,
            station: m.station,
            nodes: m.nodes,
            orders: m.orders,
            shard_orders: m.shard_orders,
            next_order_id: m.next_order_id,
            max_key_bytes: m.max_key_bytes,
            max_value_bytes: m.max_value_bytes,
            moves,
            settings: Settings {
                down_after_ms: s.down_after_ms,
                replace_after_ms: s.replace_after_ms,
                auto_replace: s.auto_replace,
                snapshot_rate_mib: s.snapshot_rate_mib,
                ..Settings::default()
            },
            station_reconfig: m.station_reconfig,
            station_retired: m.station_retired,
            planned_moves: Vec::new(),
            reshard: None,
        }
    }
}

/// The state record of version 1.
#[derive(Deserialize)]
pub struct SmStateV1 {
    last_applied: Option<LogIdOf<StationConfig>>,
    last_membership: StoredMembershipOf<StationConfig>,
    map: ClusterMapV1,
    journal_seq: u64,
}

impl From<SmStateV1> for SmState {
    fn from(s: SmStateV1) -> Self {
        SmState {
            last_applied: s.last_applied,
            last_membership: s.last_membership,
            map: s.map.into(),
            journal_seq: s.journal_seq,
        }
    }
}

/// A station snapshot of version 1: the map, the journal's last sequence number, the journal.
#[derive(Deserialize)]
pub struct SnapshotV1(ClusterMapV1, u64, Vec<JournalEntry>);

impl From<SnapshotV1> for (ClusterMap, u64, Vec<JournalEntry>) {
    fn from(s: SnapshotV1) -> Self {
        (s.0.into(), s.1, s.2)
    }
}
