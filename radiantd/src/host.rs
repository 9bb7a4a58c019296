//! What a replica needs from the node it runs on, and nothing more.
//!
//! Station and order replicas take a [`Host`] rather than the whole node context: they open
//! their logs in its database, reach peers through its connections and register their Raft
//! group for incoming RPCs, but they do not know which other services the node runs. The node
//! context (`crate::node`) owns a `Host` and the slots where running replicas are published,
//! so the layering is one way: node -> station/order -> host -> raft.

use std::sync::Arc;

use redb::Database;
use tokio::sync::Notify;

use crate::config::Config;
use crate::identity::NodeId;
use crate::raft::log_sync::LogSync;
use crate::raft::network::Peers;
use crate::raft::registry::Registry;

/// The node-level resources replicas share.
pub struct Host {
    /// Validated config.
    pub config: Config,
    /// This node's id.
    pub id: NodeId,
    /// This data dir's incarnation (see [`crate::identity`]).
    pub incarnation: u64,
    /// The node's one database file (Raft logs and state machines of every group).
    pub db: Arc<Database>,
    /// Makes the Raft logs' appends durable, one fsync for all that are waiting.
    pub log_sync: LogSync,
    /// Connections to peers.
    pub peers: Peers,
    /// Raft groups running here, for incoming Raft RPCs.
    pub registry: Registry,
    report: Notify,
}

/// The Raft logs' directory in the data dir (one subdirectory per group).
pub const WAL_DIR: &str = "wal";

impl Host {
    /// The resources of a node that has just opened its data dir.
    pub fn new(config: Config, id: NodeId, incarnation: u64, db: Arc<Database>) -> Self {
        let log_sync = LogSync::new(db.clone(), config.data_dir.join(WAL_DIR));
        Self {
            config,
            id,
            incarnation,
            log_sync,
            db,
            peers: Peers::default(),
            registry: Registry::default(),
            report: Notify::new(),
        }
    }

    /// Asks the heartbeat loops to report now (a replica started, or leadership moved), so the
    /// bondsmith learns of it without waiting for the next interval.
    pub fn report_now(&self) {
        self.report.notify_waiters();
    }

    /// Resolves when [`Host::report_now`] is called.
    pub async fn report_requested(&self) {
        self.report.notified().await
    }
}
