//! The station: a replica of the controller's Raft group. Its leader is the bondsmith and runs
//! the recovery coordinator; when leadership moves, the coordinator moves with it.

pub mod journal;
mod legacy;
pub mod map;
pub mod moves;
pub mod reshard;
pub mod settings;
pub mod state_machine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use openraft::BasicNode;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::coordinator::Announce;
use crate::coordinator::BootstrapPlan;
use crate::coordinator::Observed;
use crate::coordinator::runtime;
use crate::host::Host;
use crate::identity::NodeId;
use crate::raft::STATION_GROUP;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::registry::RaftGroup;
use crate::spec::StationSpec;
use crate::supervisor::ServiceCtx;
use crate::supervisor::ServiceFailure;
use map::MemberInfo;
use state_machine::MapView;
use state_machine::StationRaft;
use state_machine::StationStateMachine;

/// A running station replica.
pub struct Station {
    /// The Raft handle of the station group.
    pub raft: StationRaft,
    /// The replicated cluster map.
    pub view: MapView,
    /// What the station was bootstrapped with.
    pub spec: StationSpec,
    me: NodeId,
    clock: Instant,
    /// What the bondsmith observed (kept by every replica; only the bondsmith's is used).
    observed: Mutex<Observed>,
    wake: Notify,
}

impl Station {
    /// Milliseconds on this replica's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The observations, for the coordinator's runtime to update.
    pub fn observed_mut(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the observations, as of now, for the planner.
    pub fn observations(&self) -> Observed {
        let mut o = self.observed_mut().clone();
        o.now_ms = self.now_ms();
        o
    }

    /// Wakes the coordinator: something it plans from changed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Station::wake`] is called.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Whether this replica is the bondsmith right now: the leader, with its vote granted by a
    /// quorum (before that, proposals would bounce with "forward to leader").
    pub fn is_bondsmith(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.me) && m.vote.committed
    }

    /// The bondsmith as this replica knows it, with the address from the group's current
    /// membership (not the bootstrap list: every original member may have been replaced).
    pub fn bondsmith(&self) -> Option<MemberInfo> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        let name = self.view.with(|map| map.nodes.get(&leader).map(|n| n.name.clone())).unwrap_or_default();
        Some(MemberInfo { id: leader, name, addr: node.addr.clone() })
    }

    /// What the node's heartbeat says of this station replica (as group [`map::STATION`]); on
    /// the bondsmith, with the group's membership.
    pub fn report(&self) -> radiant_proto::ReplicaReport {
        let leading = self.is_bondsmith();
        let m = self.raft.metrics().borrow_watched().clone();
        let mut report = radiant_proto::ReplicaReport {
            order_id: map::STATION,
            herald: leading,
            term: m.current_term,
            ..Default::default()
        };
        if leading {
            crate::raft::report_membership(&m, &mut report);
        }
        report
    }

    /// Records a heartbeat and what it reports of the node's order replicas; wakes the
    /// coordinator if that may call for an action. Returns whether the node is known.
    pub fn heartbeat(&self, hb: &radiant_proto::HeartbeatRequest) -> bool {
        let (id, now) = (hb.id, self.now_ms());
        if self.observed_mut().record_heartbeat(id, hb.incarnation, now, &hb.replicas) {
            self.wake.notify_one();
        }
        let (known, down) = self.view.with(|m| match m.nodes.get(&id) {
            Some(n) => (n.joined || m.station.contains(&id), !n.up),
            None => (false, false),
        });
        if down {
            self.wake.notify_one();
        }
        known
    }

    /// Records a node that phoned home and waits (up to `wait`) until the map has it joined.
    pub async fn node_up(&self, announce: Announce, wait: Duration) -> Option<u64> {
        let id = announce.node.id;
        let addr = announce.node.addr.clone();
        {
            let now = self.now_ms();
            let mut o = self.observed_mut();
            o.last_seen.insert(id, now);
            o.incarnations.insert(id, announce.incarnation);
            o.announced.insert(id, announce);
        }
        self.wake.notify_one();
        let mut epochs = self.view.subscribe();
        let registered = || {
            self.view.with(|m| m.nodes.get(&id).is_some_and(|n| n.joined && n.addr == addr && n.up).then_some(m.epoch))
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(epoch) = registered() {
                self.observed_mut().announced.remove(&id);
                return Some(epoch);
            }
            if tokio::time::timeout_at(deadline, epochs.changed()).await.is_err() {
                return None;
            }
        }
    }
}

impl Station {
    /// Opens the station's log and map, starts its Raft group and registers it for incoming
    /// Raft RPCs; a bootstrap member initializes the group, a replacement waits to be added.
    pub async fn start(host: &Host, spec: StationSpec) -> Result<Arc<Self>, ServiceFailure> {
        let fail = |what: &str, e: &dyn std::fmt::Display| ServiceFailure(format!("station: {what}: {e}"));
        let me = host.id;
        if !spec.members.iter().any(|m| m.id == me) {
            return Err(ServiceFailure(format!(
                "station: this node ({me}) is not a member of the station it was given"
            )));
        }
        let config =
            crate::raft::openraft_config(&spec.cluster_id, &host.config.timing).map_err(|e| fail("config", &e))?;
        let (sm, view) = StationStateMachine::open(host.db.clone()).map_err(|e| fail("open state machine", &e))?;
        let log = LogStore::new(host.log_sync.clone(), STATION_GROUP).map_err(|e| fail("open log", &e))?;
        let network = NetworkFactory::new(host.peers.clone(), STATION_GROUP, spec.cluster_id.clone(), me);
        let raft =
            StationRaft::new(me, Arc::new(config), network, log, sm).await.map_err(|e| fail("start raft", &e))?;

        let station = Arc::new(Station {
            raft: raft.clone(),
            view,
            spec: spec.clone(),
            me,
            clock: Instant::now(),
            observed: Mutex::new(Observed::new(
                me,
                BootstrapPlan {
                    cluster_id: spec.cluster_id.clone(),
                    shards: spec.shards,
                    replicas: spec.replicas,
                    station: spec.members.clone(),
                },
                (spec.max_key_bytes, spec.max_value_bytes),
            )),
            wake: Notify::new(),
        });
        host.registry.register(STATION_GROUP, &spec.cluster_id, Arc::new(RaftGroup::new(raft.clone(), ())));

        // Every member initializes with the same membership: the first to run creates the
        // initial config, the others find it (or receive it) and their call is a no-op.
        // A replacement joins as a learner: the bondsmith adds it, and it must not initialize a
        // group of its own (that would be a second, conflicting log).
        let initialized = raft.is_initialized().await.map_err(|e| fail("read state", &e))?;
        if !initialized && !spec.join {
            let members: BTreeMap<NodeId, BasicNode> =
                spec.members.iter().map(|m| (m.id, BasicNode::new(&m.addr))).collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::info!("station already initialized: {e}");
            }
        }
        Ok(station)
    }

    /// Serves until the supervisor cancels the service or Raft stops; while this replica
    /// leads, the recovery coordinator runs beside it.
    pub async fn serve(self: &Arc<Self>, host: &Host, svc: &ServiceCtx) -> Result<(), ServiceFailure> {
        let stop = svc.cancel.child_token();
        let leadership = tokio::spawn(follow_leadership(self.clone(), host.peers.clone(), stop.clone()));
        let mut metrics = self.raft.metrics();
        let result = loop {
            tokio::select! {
                _ = svc.cancel.cancelled() => break Ok(()),
                changed = metrics.changed() => {
                    if changed.is_err() {
                        break Err(ServiceFailure("station: raft stopped".into()));
                    }
                    if let Err(e) = &metrics.borrow_watched().running_state {
                        break Err(ServiceFailure(format!("station: raft fatal error: {e}")));
                    }
                }
            }
        };
        stop.cancel();
        let _ = leadership.await;
        result
    }

    /// Unregisters the group and shuts Raft down.
    pub async fn stop(&self, host: &Host) {
        host.registry.unregister(STATION_GROUP);
        let _ = self.raft.shutdown().await;
    }
}

/// Starts the coordinator while this replica leads, stops it when it does not.
async fn follow_leadership(station: Arc<Station>, peers: crate::raft::network::Peers, stop: CancellationToken) {
    let mut metrics = station.raft.metrics();
    let mut running: Option<(tokio::task::JoinHandle<()>, CancellationToken)> = None;
    loop {
        let leading = station.is_bondsmith();
        match (leading, running.is_some()) {
            (true, false) => {
                tracing::info!(node = station.me, "became bondsmith; starting the recovery coordinator");
                {
                    let now = station.now_ms();
                    let mut o = station.observed_mut();
                    o.leader_since_ms = now;
                    o.recent.clear();
                }
                let token = stop.child_token();
                let task = tokio::spawn(runtime::coordinator_loop(station.clone(), peers.clone(), token.clone()));
                running = Some((task, token));
            }
            (false, true) => {
                tracing::info!(node = station.me, "no longer bondsmith; stopping the recovery coordinator");
                if let Some((task, token)) = running.take() {
                    token.cancel();
                    let _ = task.await;
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = metrics.changed() => if changed.is_err() { break },
        }
    }
    if let Some((task, token)) = running.take() {
        token.cancel();
        let _ = task.await;
    }
}
