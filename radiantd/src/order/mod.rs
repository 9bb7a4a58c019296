//! An order replica: one member of an order's Raft group, serving its shards' data.
//! Its leader is the order's herald; it tells the bondsmith at once when leadership moves.

mod apply;
mod export;
pub mod layout;
pub mod puller;
pub mod shard_move;
pub mod snapshot_file;
pub mod snapshot_format;
pub mod state_machine;
mod tables;

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::BasicNode;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::host::Host;
use crate::identity::NodeId;
use crate::identity::OrderId;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::registry::RaftGroup;
use crate::spec::OrderSpec;
use crate::supervisor::ServiceCtx;
use crate::supervisor::ServiceFailure;
use state_machine::KvStateMachine;
use state_machine::OrderRaft;

/// A running order replica.
pub struct OrderReplica {
    /// The order.
    pub order: OrderId,
    /// Its Raft handle.
    pub raft: OrderRaft,
    /// Its state machine, for reads.
    pub sm: KvStateMachine,
    /// What it was started with.
    pub spec: OrderSpec,
    /// The shard pulls running on this replica while it is the herald.
    pub pulls: puller::Pulls,
    me: NodeId,
}

impl OrderReplica {
    /// Whether this replica is the herald (leader with a committed vote).
    pub fn is_herald(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.me) && m.vote.committed
    }

    /// What the node's heartbeat says of this replica: its term, and, on the herald, the
    /// shards the order's log says it serves and the group's membership as Raft runs it (the
    /// bondsmith plans replacements from this, not from what it asked for).
    pub fn report(&self) -> radiant_proto::ReplicaReport {
        let herald = self.is_herald();
        let m = self.raft.metrics().borrow_watched().clone();
        let mut report =
            radiant_proto::ReplicaReport { order_id: self.order, herald, term: m.current_term, ..Default::default() };
        if herald {
            report.owned = self.sm.owned().unwrap_or_default().into_iter().collect();
            report.nonempty = self.sm.nonempty().unwrap_or_default().into_iter().collect();
            report.modulus = self.sm.modulus().ok().flatten().unwrap_or(0);
            let stats = self.sm.stats().unwrap_or_default();
            report.stats = stats.iter().map(|(s, st)| puller::stats_to_proto(*s, st)).collect();
            let moves = self.sm.move_state().unwrap_or_default();
            for (shard, move_id) in moves.tracking {
                report.moves.push(radiant_proto::MoveReport { shard, move_id, ..Default::default() });
            }
            for (shard, i) in moves.incoming {
                let pull = self.pulls.get(shard).filter(|p| p.move_id == i.move_id);
                report.moves.push(radiant_proto::MoveReport {
                    shard,
                    move_id: i.move_id,
                    incoming: true,
                    sealed: i.sealed,
                    pulling: pull.is_some(),
                    converged: pull.as_ref().is_some_and(|p| p.converged.load(std::sync::atomic::Ordering::Acquire)),
                    // What the destination's log holds of the shard so far.
                    bytes_done: stats.get(&shard).map_or(0, |st| st.bytes),
                });
            }
            crate::raft::report_membership(&m, &mut report);
        }
        report
    }

    /// The herald's address as this replica knows it.
    pub fn herald_addr(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
    }
    /// Opens the replica's log and state machine, starts its Raft group and registers it for
    /// incoming Raft RPCs; the first members of a new order also initialize the group.
    pub async fn start(host: &Host, spec: OrderSpec) -> Result<Arc<Self>, ServiceFailure> {
        let order = spec.order_id;
        let fail = |what: &str, e: &dyn std::fmt::Display| ServiceFailure(format!("order {order}: {what}: {e}"));
        let me = host.id;
        let config = crate::raft::openraft_config(&format!("{}-o{order}", spec.cluster_id), &host.config.timing)
            .map_err(|e| fail("config", &e))?;
        let sm = KvStateMachine::open(host.db.clone(), order, &host.config.data_dir)
            .map_err(|e| fail("open state machine", &e))?;
        let log = LogStore::new(host.log_sync.clone(), order).map_err(|e| fail("open log", &e))?;
        let network = NetworkFactory::new(host.peers.clone(), order, spec.cluster_id.clone(), me);
        let raft =
            OrderRaft::new(me, Arc::new(config), network, log, sm.clone()).await.map_err(|e| fail("start raft", &e))?;
        let replica =
            Arc::new(OrderReplica { order, raft: raft.clone(), sm, spec: spec.clone(), pulls: Default::default(), me });
        let group = RaftGroup::new(raft.clone(), replica.sm.snapshot_dir().clone());
        host.registry.register(order, &spec.cluster_id, Arc::new(group));

        if spec.initialize && !raft.is_initialized().await.map_err(|e| fail("read state", &e))? {
            let members: BTreeMap<NodeId, BasicNode> =
                spec.members.iter().map(|m| (m.id, BasicNode::new(&m.addr))).collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::info!(order, "order already initialized: {e}");
            }
        }
        Ok(replica)
    }

    /// Serves until the supervisor cancels the service or Raft stops, reporting to the
    /// bondsmith at once whenever this replica becomes or stops being the herald.
    pub async fn serve(&self, host: &Host, svc: &ServiceCtx) -> Result<(), ServiceFailure> {
        let order = self.order;
        let mut metrics = self.raft.metrics();
        let mut was_herald = self.is_herald();
        loop {
            tokio::select! {
                _ = svc.cancel.cancelled() => return Ok(()),
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return Err(ServiceFailure(format!("order {order}: raft stopped")));
                    }
                    if let Err(e) = &metrics.borrow_watched().running_state {
                        return Err(ServiceFailure(format!("order {order}: raft fatal error: {e}")));
                    }
                    let herald = self.is_herald();
                    if herald != was_herald {
                        was_herald = herald;
                        tracing::info!(order, herald, "order leadership changed");
                        // Register with the bondsmith now rather than at the next heartbeat.
                        host.report_now();
                    }
                }
            }
        }
    }

    /// Unregisters the group and shuts Raft down.
    pub async fn stop(&self, host: &Host) {
        self.pulls.cancel_all();
        host.registry.unregister(self.order);
        let _ = self.raft.shutdown().await;
    }
}
