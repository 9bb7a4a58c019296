//! What every Raft group on a node shares: the redb log store, the gRPC network, the codec and
//! the registry that routes incoming Raft RPCs to the right group.
//!
//! The station is group 0; orders (later) get their own group ids. All groups share one redb
//! file and one connection per peer, as in openraft's multi-raft example.

pub mod codec;
pub mod log_store;
pub mod log_sync;
pub mod network;
pub mod rate;
pub mod registry;
pub mod snapshot_stream;
pub mod wal;

use std::time::Duration;

use crate::config::Timing;

/// Stops the node after a write to its storage failed: a log append that could not be made
/// durable, or an applied batch that could not be written (a disk error, a full disk). After
/// a failed fsync the kernel may have dropped the dirty pages while later reads still return
/// them, so a node that carried on could acknowledge from a log that is not on disk. It
/// exits instead (code 1, and a systemd unit restarts it): the batch was never acknowledged,
/// and on the next start redb rolls back to its last durable commit and the replica catches up
/// from its group like after any crash.
pub fn stop_on_storage_failure(what: &str, e: &std::io::Error) -> ! {
    tracing::error!(
        "storage failed while {what}: {e}; stopping this node, which must not go on with a log it cannot trust"
    );
    eprintln!("radiantd: storage failed while {what}: {e}; stopping");
    std::process::exit(1)
}

/// Raft group id. The station is [`STATION_GROUP`].
pub type GroupId = u64;

/// The station's Raft group.
pub const STATION_GROUP: GroupId = 0;

/// Fills a heartbeat report with a group's membership as its leader's Raft metrics show it:
/// voters, learners, whether a change is half done (joint), and how far each follower and
/// learner has matched the log. The bondsmith plans membership changes from this, not from
/// what it asked for.
pub fn report_membership<C>(m: &openraft::RaftMetrics<C>, report: &mut radiant_proto::ReplicaReport)
where
    C: openraft::RaftTypeConfig<NodeId = crate::identity::NodeId>,
{
    let membership = m.membership_config.membership();
    report.voters = membership.voter_ids().collect();
    report.learners = membership.learner_ids().collect();
    report.joint = membership.get_joint_config().len() > 1;
    report.matched =
        m.replication.iter().flatten().map(|(id, log)| (*id, log.as_ref().map(|l| l.index).unwrap_or(0))).collect();
    report.last_log_index = m.last_log_index.unwrap_or(0);
}

/// Hands this node's leadership of a group to voter `to`, waiting (up to `timeout`) until `to`
/// has matched the whole log first: openraft's transfer refuses writes and reads from the
/// moment it starts, and a target that is behind ignores it, leaving the group leaderless for
/// an election timeout (openraft issue #2088). Returns once `to` leads.
pub async fn transfer_leadership<C, SM>(
    raft: &openraft::Raft<C, SM>,
    to: C::NodeId,
    timeout: Duration,
) -> Result<(), String>
where
    C: openraft::RaftTypeConfig<NodeId = crate::identity::NodeId>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    use openraft::async_runtime::WatchReceiver;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut triggered = false;
    loop {
        let (leader, last, matched) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            let matched = m.replication.as_ref().and_then(|r| r.get(&to).cloned().flatten()).map(|l| l.index);
            (m.current_leader, m.last_log_index, matched)
        };
        if leader == Some(to) {
            return Ok(());
        }
        if !triggered && matched.is_some() && matched == last {
            raft.trigger().transfer_leader(to).await.map_err(|e| e.to_string())?;
            triggered = true;
        } else if !triggered {
            // Nudge replication so the target catches up with the last entries.
            let _ = raft.trigger().heartbeat().await;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(if triggered {
                format!("node {to} did not take over in time")
            } else {
                format!("node {to} did not catch up with the log in time")
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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
        // Replicate as soon as an append is written, while this node's fsync runs
        // (raft/log_sync.rs): the herald's fsync and the followers' overlap. Commit still
        // counts the herald only once its own fsync reported.
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    }
    .validate()
}
