//! An order replica: one member of an order's Raft group, serving its shards' data.
//! Its leader is the order's herald; it tells the bondsmith at once when leadership moves.

pub mod snapshot_file;
pub mod snapshot_format;
pub mod state_machine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::identity::NodeId;
use crate::node::NodeContext;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::registry::RaftGroup;
use crate::spec::OrderSpec;
use crate::station::map::OrderId;
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
            let membership = m.membership_config.membership();
            report.voters = membership.voter_ids().collect();
            report.learners = membership.learner_ids().collect();
            report.joint = membership.get_joint_config().len() > 1;
            report.matched = m
                .replication
                .iter()
                .flatten()
                .map(|(id, log)| (*id, log.as_ref().map(|l| l.index).unwrap_or(0)))
                .collect();
            report.last_log_index = m.last_log_index.unwrap_or(0);
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
}

/// Runs an order replica until the supervisor cancels it.
pub async fn run(node: Arc<NodeContext>, spec: OrderSpec, svc: ServiceCtx) -> Result<(), ServiceFailure> {
    let order = spec.order_id;
    let fail = |what: &str, e: &dyn std::fmt::Display| ServiceFailure(format!("order {order}: {what}: {e}"));
    let me = node.id;
    let config = crate::raft::openraft_config(&format!("{}-o{order}", spec.cluster_id), &node.config.timing)
        .map_err(|e| fail("config", &e))?;
    let sm = KvStateMachine::open(node.db.clone(), order, &node.config.data_dir)
        .map_err(|e| fail("open state machine", &e))?;
    let log = LogStore::new(node.db.clone(), order);
    let network = NetworkFactory::new(node.peers.clone(), order, spec.cluster_id.clone(), me);
    let raft =
        OrderRaft::new(me, Arc::new(config), network, log, sm.clone()).await.map_err(|e| fail("start raft", &e))?;
    let replica = Arc::new(OrderReplica { order, raft: raft.clone(), sm, spec: spec.clone(), me });
    let group = RaftGroup::new(raft.clone(), replica.sm.snapshot_dir().clone());
    node.registry.register(order, &spec.cluster_id, Arc::new(group));
    node.set_order(order, Some(replica.clone()));

    if spec.initialize && !raft.is_initialized().await.map_err(|e| fail("read state", &e))? {
        let members: BTreeMap<NodeId, BasicNode> =
            spec.members.iter().map(|m| (m.id, BasicNode::new(&m.addr))).collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::info!(order, "order already initialized: {e}");
        }
    }
    node.report_now();
    let stop = svc.cancel.child_token();
    let keeper = tokio::spawn(keep_shards(node.clone(), replica.clone(), stop.clone()));

    let mut metrics = raft.metrics();
    let mut was_herald = replica.is_herald();
    let result = loop {
        tokio::select! {
            _ = svc.cancel.cancelled() => break Ok(()),
            changed = metrics.changed() => {
                if changed.is_err() {
                    break Err(ServiceFailure(format!("order {order}: raft stopped")));
                }
                if let Err(e) = &metrics.borrow_watched().running_state {
                    break Err(fail("raft fatal error", e));
                }
                let herald = replica.is_herald();
                if herald != was_herald {
                    was_herald = herald;
                    tracing::info!(order, herald, "order leadership changed");
                    // Register with the bondsmith now rather than at the next heartbeat.
                    node.report_now();
                }
            }
        }
    };
    stop.cancel();
    let _ = keeper.await;
    node.set_order(order, None);
    node.registry.unregister(order);
    let _ = raft.shutdown().await;
    result
}

/// The cluster map read through this node's own Station service, which answers it
/// linearizably from the bondsmith: a herald must not act on a map older than one it (or a
/// previous herald) already acted on.
async fn linearizable_map(node: &NodeContext) -> Option<radiant_proto::ClusterMap> {
    let ch = node.peers.channel(&node.config.advertise).ok()?;
    let mut req = tonic::Request::new(radiant_proto::GetMapRequest {});
    req.set_timeout(Duration::from_secs(2));
    radiant_proto::station_client::StationClient::new(ch).get_map(req).await.ok().map(|r| r.into_inner())
}

/// While this replica is the herald, makes the order's log agree with the map about which
/// shards it serves: release the shards the map moves away (the fence of a handover), acquire
/// the ones the map gives it.
async fn keep_shards(node: Arc<NodeContext>, replica: Arc<OrderReplica>, stop: CancellationToken) {
    use std::collections::BTreeSet;

    use state_machine::KvCommand;
    loop {
        if replica.is_herald()
            && let Some(map) = linearizable_map(&node).await
        {
            let order = replica.order;
            let assigned: BTreeSet<u32> = map
                .shard_orders
                .iter()
                .enumerate()
                .map(|(s, o)| (s as u32, *o))
                .filter(|(s, o)| *o == order && !map.moving.contains_key(s))
                .map(|(s, _)| s)
                .collect();
            let owned = replica.sm.owned().unwrap_or_default();
            let release: Vec<u32> = owned.difference(&assigned).copied().collect();
            let acquire: Vec<u32> = assigned.difference(&owned).copied().collect();
            let mut changed = false;
            if !release.is_empty() {
                tracing::info!(order, epoch = map.epoch, "releasing shards {release:?}");
                changed |=
                    replica.raft.client_write(KvCommand::Release { shards: release, epoch: map.epoch }).await.is_ok();
            }
            if !acquire.is_empty() {
                tracing::info!(order, epoch = map.epoch, "acquiring shards {acquire:?}");
                changed |=
                    replica.raft.client_write(KvCommand::Acquire { shards: acquire, epoch: map.epoch }).await.is_ok();
            }
            if changed {
                node.report_now();
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
