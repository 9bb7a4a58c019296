//! What every part of a running radiantd shares.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use redb::Database;

use crate::config::Config;
use crate::identity::NodeId;
use crate::raft::network::Peers;
use crate::raft::registry::Registry;
use crate::station::Station;

/// Shared state of one node.
pub struct NodeContext {
    /// Validated config.
    pub config: Config,
    /// This node's id.
    pub id: NodeId,
    /// The node's one database file (Raft logs and state machines of every group).
    pub db: Arc<Database>,
    /// Connections to peers.
    pub peers: Peers,
    /// Raft groups running here, for incoming Raft RPCs.
    pub registry: Registry,
    station: RwLock<Option<Arc<Station>>>,
    phone_home_targets: RwLock<Vec<String>>,
    ready: AtomicBool,
}

impl NodeContext {
    /// A context for a node that is not ready yet.
    pub fn new(config: Config, id: NodeId, db: Arc<Database>) -> Self {
        Self {
            config,
            id,
            db,
            peers: Peers::default(),
            registry: Registry::default(),
            station: RwLock::new(None),
            phone_home_targets: RwLock::new(Vec::new()),
            ready: AtomicBool::new(false),
        }
    }

    /// The station replica running here, if any.
    pub fn station(&self) -> Option<Arc<Station>> {
        self.station.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs or removes the local station replica.
    pub fn set_station(&self, station: Option<Arc<Station>>) {
        *self.station.write().unwrap_or_else(|p| p.into_inner()) = station;
    }

    /// Where a node without a station replica sends station requests.
    pub fn phone_home_targets(&self) -> Vec<String> {
        self.phone_home_targets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the station addresses phone-home was given.
    pub fn set_phone_home_targets(&self, targets: Vec<String>) {
        *self.phone_home_targets.write().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    /// Whether the node serves requests (false while it loads or drains).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the node ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
