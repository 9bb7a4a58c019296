//! What every Raft group on a node shares: the redb log store, the gRPC network, the codec and
//! the registry that routes incoming Raft RPCs to the right group.
//!
//! The station is group 0; orders (later) get their own group ids. All groups share one redb
//! file and one connection per peer, as in openraft's multi-raft example.

pub mod codec;
pub mod log_store;
pub mod network;
pub mod rate;
pub mod registry;
pub mod snapshot_stream;

use std::time::Duration;

use crate::config::Timing;

/// Raft group id. The station is [`STATION_GROUP`].
pub type GroupId = u64;

/// The station's Raft group.
pub const STATION_GROUP: GroupId = 0;

/// The openraft config every group on this node uses, derived from the node's timing.
pub fn openraft_config(cluster: &str, timing: &Timing) -> Result<openraft::Config, openraft::ConfigError> {
    let election = timing.election_timeout.as_millis() as u64;
    openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: timing.heartbeat.as_millis() as u64,
        election_timeout_min: election,
        // openraft's leader lease equals election_timeout_max: a follower refuses votes until
        // it expires. A narrow window keeps failover short without making elections collide.
        election_timeout_max: election * 3 / 2,
        // For snapshots this is an idle limit (network.rs: a chunk not taken, a reply not
        // come), never a bound on a whole transfer, which for a large order takes minutes.
        install_snapshot_timeout: Duration::from_secs(10).as_millis() as u64,
        enable_pre_vote: Some(true),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_logs),
        // Keep some log behind a snapshot so a briefly lagging follower catches up from the
        // log; one further behind gets the snapshot.
        max_in_snapshot_log_to_keep: (timing.snapshot_logs / 5).min(1000),
        // Bounds one AppendEntries message: 64 entries of at most 3 MiB stay under the
        // transport's 256 MiB message limit.
        max_payload_entries: 64,
        // Our append returns only after its fsync, so "submitted" already means durable:
        // replicate right away instead of waiting for the flush notification.
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    }
    .validate()
}
