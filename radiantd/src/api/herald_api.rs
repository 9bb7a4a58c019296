//! `Herald` service: the bondsmith's membership commands to an order's leader. The herald
//! carries each out on its own Raft group; what the group then runs is the truth, and the
//! herald's heartbeats report it back, so a command lost in a failover is simply planned again.

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::BasicNode;
use openraft::ChangeMembers;
use radiant_proto as pb;
use radiant_proto::herald_server::Herald as HeraldRpc;
use radiant_proto::reconfigure_request::Change;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::identity::NodeId;
use crate::node::NodeContext;
use crate::order::OrderReplica;
use crate::order::puller;
use crate::order::puller::Source;
use crate::order::shard_move::ExportError;
use crate::order::shard_move::ExportMode;
use crate::order::state_machine::KvCommand;

/// Most bytes one export chunk carries (beyond a single larger row).
const MAX_EXPORT_BYTES: u32 = 4 * 1024 * 1024;

/// The herald's gRPC face.
pub struct HeraldApi {
    node: Arc<NodeContext>,
}

impl HeraldApi {
    /// Serves herald commands on `node`.
    pub fn new(node: Arc<NodeContext>) -> Self {
        Self { node }
    }

    /// A step of a shard move on this herald's order: a log entry, or (Pull) a background pull
    /// whose progress the heartbeats report.
    async fn move_step(&self, replica: &Arc<OrderReplica>, step: pb::MoveStep) -> Result<(), Status> {
        use pb::move_step::Kind;
        let (shard, move_id, order) = (step.shard, step.move_id, replica.order);
        let cmd = match step.kind() {
            Kind::Track => KvCommand::Track { shard, move_id },
            Kind::Untrack => KvCommand::Untrack { shard, move_id },
            Kind::Drop => KvCommand::Drop { shard, move_id },
            Kind::Pull => {
                if step.source_addrs.is_empty() || step.from_order == 0 {
                    return Err(Status::invalid_argument("a pull needs the source order and its addresses"));
                }
                let source = Source { order: step.from_order, addrs: step.source_addrs };
                puller::start(replica.clone(), self.node.host.clone(), shard, move_id, source);
                return Ok(());
            }
        };
        tracing::info!(order, "{cmd}");
        let resp =
            replica.raft.client_write(cmd).await.map_err(|e| Status::unavailable(format!("order {order}: {e}")))?;
        if resp.data.refused {
            return Err(Status::failed_precondition(format!(
                "order {order}'s log refused {:?} of shard {shard} for move {move_id}",
                step.kind()
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl HeraldRpc for HeraldApi {
    async fn reconfigure(
        &self,
        req: Request<pb::ReconfigureRequest>,
    ) -> Result<Response<pb::ReconfigureResponse>, Status> {
        let body = req.into_inner();
        let replica = self
            .node
            .order(body.order_id)
            .ok_or_else(|| Status::failed_precondition(format!("order {} runs no replica here", body.order_id)))?;
        if body.cluster_id != replica.spec.cluster_id {
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::FailedPrecondition,
                format!(
                    "cluster id mismatch: the request is for cluster {}, order {} here belongs to cluster {}",
                    body.cluster_id, body.order_id, replica.spec.cluster_id
                ),
            ));
        }
        if !replica.is_herald() {
            return Err(Status::failed_precondition(format!("this node is not order {}'s herald", body.order_id)));
        }
        let change = body.change.ok_or_else(|| Status::invalid_argument("reconfigure names no change"))?;
        let raft = &replica.raft;
        let result = match change {
            // Non-blocking: openraft's own wait has no deadline and a loose idea of caught up
            // (5000 entries); the bondsmith watches the learner's progress in our reports.
            Change::AddLearner(m) => {
                if m.id == 0 || m.addr.is_empty() {
                    return Err(Status::invalid_argument("a learner needs a non-zero id and an address"));
                }
                raft.add_learner(m.id, BasicNode::new(&m.addr), false).await.map(|_| ())
            }
            Change::SetVoters(v) => {
                let voters: BTreeSet<NodeId> = v.voters.into_iter().collect();
                if voters.is_empty() {
                    return Err(Status::invalid_argument("an order needs voters"));
                }
                // retain = false: a voter left out leaves the group instead of staying a learner.
                raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false).await.map(|_| ())
            }
            Change::RemoveLearner(id) => {
                raft.change_membership(ChangeMembers::RemoveNodes([id].into_iter().collect()), false).await.map(|_| ())
            }
            Change::Shards(c) => {
                let order = body.order_id;
                let fail = |e: &dyn std::fmt::Display| Status::unavailable(format!("order {order}: {e}"));
                // Release first: a shard moving away is fenced before anything else happens.
                if !c.release.is_empty() {
                    tracing::info!(order, epoch = c.epoch, "releasing shards {:?}", c.release);
                    raft.client_write(KvCommand::Release { shards: c.release, epoch: c.epoch })
                        .await
                        .map_err(|e| fail(&e))?;
                }
                if !c.acquire.is_empty() {
                    tracing::info!(order, epoch = c.epoch, "acquiring shards {:?}", c.acquire);
                    raft.client_write(KvCommand::Acquire { shards: c.acquire, epoch: c.epoch })
                        .await
                        .map_err(|e| fail(&e))?;
                }
                self.node.host.report_now();
                return Ok(Response::new(pb::ReconfigureResponse {}));
            }
            Change::Reshard(r) => {
                let order = body.order_id;
                tracing::info!(order, from = r.from, to = r.to, "cutting the order's tables by a new shard count");
                let resp = raft
                    .client_write(KvCommand::Reshard { from: r.from, to: r.to })
                    .await
                    .map_err(|e| Status::unavailable(format!("order {order}: {e}")))?;
                if resp.data.refused {
                    return Err(Status::failed_precondition(format!(
                        "order {order}'s log refused to reshard from {} to {}",
                        r.from, r.to
                    )));
                }
                self.node.host.report_now();
                return Ok(Response::new(pb::ReconfigureResponse {}));
            }
            Change::MoveStep(step) => {
                self.move_step(&replica, step).await?;
                self.node.host.report_now();
                return Ok(Response::new(pb::ReconfigureResponse {}));
            }
            Change::TransferLeader(to) => {
                let timeout = crate::coordinator::runtime::TRANSFER_TIMEOUT;
                crate::raft::transfer_leadership(raft, to, timeout).await.map_err(|e| {
                    Status::unavailable(format!("order {}: leadership transfer failed: {e}", body.order_id))
                })?;
                self.node.host.report_now();
                return Ok(Response::new(pb::ReconfigureResponse {}));
            }
        };
        result.map_err(|e| Status::unavailable(format!("order {}: membership change failed: {e}", body.order_id)))?;
        self.node.host.report_now();
        Ok(Response::new(pb::ReconfigureResponse {}))
    }

    async fn export_shard(
        &self,
        req: Request<pb::ExportShardRequest>,
    ) -> Result<Response<pb::ExportShardResponse>, Status> {
        let body = req.into_inner();
        let replica = self
            .node
            .order(body.order_id)
            .ok_or_else(|| Status::unavailable(format!("order {} runs no replica here", body.order_id)))?;
        if body.cluster_id != replica.spec.cluster_id {
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::FailedPrecondition,
                format!("cluster id mismatch: the request is for cluster {}", body.cluster_id),
            ));
        }
        let mode = if body.delta { ExportMode::Delta { after_index: body.after_index } } else { ExportMode::Base };
        let limit = (body.limit_bytes.clamp(1, MAX_EXPORT_BYTES)) as usize;
        let sm = replica.sm.clone();
        let (shard, move_id, after_key) = (body.shard, body.move_id, body.after_key);
        let chunk = tokio::task::spawn_blocking(move || sm.export(shard, move_id, mode, after_key.as_deref(), limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                ExportError::NotTracking { .. } => Status::failed_precondition(e.to_string()),
                ExportError::Io(e) => Status::internal(format!("storage: {e}")),
            })?;
        // Moves take their share of the node's bulk-transfer budget: their own limit, then
        // the one snapshots go through too, so both together stay within it.
        let bytes: usize = chunk.rows.iter().map(|r| r.key.len() + r.value.as_ref().map_or(0, |v| v.len())).sum();
        self.node.host.peers.move_rate().acquire(bytes).await;
        self.node.host.peers.snapshot_rate().acquire(bytes).await;
        Ok(Response::new(pb::ExportShardResponse {
            applied_index: chunk.applied_index,
            rows: chunk.rows.into_iter().map(puller::row_to_proto).collect(),
            more: chunk.more,
            frozen: chunk.frozen,
            stats: Some(puller::stats_to_proto(shard, &chunk.stats)),
        }))
    }
}
