//! What every part of a running radiantd shares.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use crate::host::Host;
use crate::identity::OrderId;
use crate::order::OrderReplica;
use crate::station::Station;
use radiant_proto as pb;

/// Shared state of one node: its [`Host`] resources and the replicas it runs, for the APIs
/// that route requests to them.
pub struct NodeContext {
    /// What the replicas share (config, id, database, peers, Raft registry).
    pub host: Arc<Host>,
    station: RwLock<Option<Arc<Station>>>,
    phone_home_targets: RwLock<Vec<String>>,
    orders: RwLock<std::collections::BTreeMap<OrderId, Arc<OrderReplica>>>,
    map_cache: RwLock<Option<(std::time::Instant, Arc<pb::ClusterMap>)>>,
    cluster_id: RwLock<Option<String>>,
    ready: AtomicBool,
}

impl NodeContext {
    /// A context for a node that is not ready yet.
    pub fn new(host: Arc<Host>) -> Self {
        Self {
            host,
            station: RwLock::new(None),
            phone_home_targets: RwLock::new(Vec::new()),
            orders: RwLock::new(Default::default()),
            map_cache: RwLock::new(None),
            cluster_id: RwLock::new(None),
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

    /// The order replica of `order` running here.
    pub fn order(&self, order: OrderId) -> Option<Arc<OrderReplica>> {
        self.orders.read().unwrap_or_else(|p| p.into_inner()).get(&order).cloned()
    }

    /// Every order replica running here.
    pub fn order_replicas(&self) -> Vec<Arc<OrderReplica>> {
        self.orders.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Installs or removes an order replica.
    pub fn set_order(&self, order: OrderId, replica: Option<Arc<OrderReplica>>) {
        let mut orders = self.orders.write().unwrap_or_else(|p| p.into_inner());
        match replica {
            Some(r) => orders.insert(order, r),
            None => orders.remove(&order),
        };
    }

    /// This node's heartbeat to the bondsmith: who it is (with its incarnation) and what its
    /// order replicas report.
    pub fn heartbeat_request(&self, cluster_id: &str) -> pb::HeartbeatRequest {
        let mut replicas: Vec<pb::ReplicaReport> =
            self.orders.read().unwrap_or_else(|p| p.into_inner()).values().map(|r| r.report()).collect();
        if let Some(station) = self.station() {
            replicas.push(station.report());
        }
        pb::HeartbeatRequest {
            cluster_id: cluster_id.to_string(),
            id: self.host.id,
            addr: self.host.config.advertise.clone(),
            replicas,
            incarnation: self.host.incarnation,
        }
    }

    /// The last cluster map this node fetched, for routing, unless older than `max_age`
    /// (heralds move; a redirect to a dead one costs the client a round trip).
    pub fn cached_map(&self, max_age: std::time::Duration) -> Option<Arc<pb::ClusterMap>> {
        let cache = self.map_cache.read().unwrap_or_else(|p| p.into_inner());
        cache.as_ref().filter(|(at, _)| at.elapsed() <= max_age).map(|(_, m)| m.clone())
    }

    /// Replaces the cached map unless it is older than the cached one.
    pub fn cache_map(&self, map: pb::ClusterMap) -> Arc<pb::ClusterMap> {
        let mut cache = self.map_cache.write().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match cache.as_mut() {
            Some((at, c)) if c.epoch > map.epoch => {
                *at = now;
                c.clone()
            }
            _ => {
                let m = Arc::new(map);
                *cache = Some((now, m.clone()));
                m
            }
        }
    }

    /// The bondsmith's heartbeat answer names the map's epoch: a cached map older than that is
    /// dropped, so the map changes reach this node's routing within a heartbeat even when no
    /// request is refused.
    pub fn map_epoch_seen(&self, epoch: u64) {
        let mut cache = self.map_cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_some_and(|(_, m)| m.epoch < epoch) {
            *cache = None;
        }
    }

    /// Forgets the cached map: an order refused a shard the map gave it (a move switched), so
    /// the next request fetches the map again instead of routing by the old one.
    pub fn invalidate_map(&self) {
        *self.map_cache.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records the cluster this node belongs to, as soon as its supervisor runs (or is about to
    /// relaunch) a service of that cluster.
    pub fn set_cluster_id(&self, cluster_id: Option<String>) {
        *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = cluster_id;
    }

    /// Why this node cannot serve a cluster request without a station replica or station
    /// addresses: it is still starting its services (retry), or it belongs to no cluster.
    pub fn no_route_status(&self) -> tonic::Status {
        let member = self.cluster_id.read().unwrap_or_else(|p| p.into_inner()).is_some();
        if !self.is_ready() || member {
            pb::refusal(
                pb::ErrorCode::Retry,
                tonic::Code::Unavailable,
                format!("node {} is starting its services; retry", self.host.config.advertise),
            )
        } else {
            pb::refusal(
                pb::ErrorCode::NotInCluster,
                tonic::Code::FailedPrecondition,
                format!(
                    "node {} is not part of a cluster yet: run `radiantctl bootstrap` or `radiantctl join`",
                    self.host.config.advertise
                ),
            )
        }
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
