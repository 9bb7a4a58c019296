//! `Supervisor` service: Spawn, Stop, List, Status.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use radiant_proto as pb;
use radiant_proto::supervisor_server::Supervisor as SupervisorRpc;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::node::NodeContext;
use crate::spec::ServiceSpec;
use crate::supervisor::Spawned;
use crate::supervisor::Supervisor;
use crate::supervisor::SupervisorError;

/// The supervisor's gRPC face.
pub struct SupervisorApi {
    node: Arc<NodeContext>,
    supervisor: Arc<Supervisor>,
}

impl SupervisorApi {
    /// Serves `supervisor` of `node`.
    pub fn new(node: Arc<NodeContext>, supervisor: Arc<Supervisor>) -> Self {
        Self { node, supervisor }
    }

    fn info(&self, name: &str) -> Option<pb::ServiceInfo> {
        self.supervisor.list().into_iter().find(|s| s.name == name).map(|s| pb::ServiceInfo {
            name: s.name,
            state: s.state.to_string(),
            restarts: s.restarts,
            last_error: s.last_error,
            spec: Some(s.spec.to_proto()),
            acknowledged: s.acknowledged,
        })
    }
}

fn status_of(e: SupervisorError) -> Status {
    match e {
        SupervisorError::ClusterMismatch { .. } => {
            pb::refusal(pb::ErrorCode::ClusterMismatch, tonic::Code::FailedPrecondition, e.to_string())
        }
        SupervisorError::Conflict { .. } => Status::already_exists(e.to_string()),
        SupervisorError::Persist(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl SupervisorRpc for SupervisorApi {
    async fn spawn(&self, req: Request<pb::SpawnRequest>) -> Result<Response<pb::SpawnResponse>, Status> {
        let spec = req.into_inner().spec.ok_or_else(|| Status::invalid_argument("spawn request has no spec"))?;
        let spec = ServiceSpec::from_proto(spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let ServiceSpec::Station(s) = &spec
            && !s.members.iter().any(|m| m.id == self.node.host.id)
        {
            return Err(Status::invalid_argument(format!(
                "node {} ({}) is not among the station members it was asked to join",
                self.node.host.id, self.node.host.config.advertise
            )));
        }
        if let ServiceSpec::OrderReplica(o) = &spec
            && !o.members.iter().any(|m| m.id == self.node.host.id)
        {
            return Err(Status::invalid_argument(format!(
                "node {} is not a member of order {}",
                self.node.host.id, o.order_id
            )));
        }
        let name = spec.name();
        let cluster_id = spec.cluster_id().to_string();
        let spawned = self.supervisor.spawn(spec).map_err(status_of)?;
        self.node.set_cluster_id(Some(cluster_id));
        Ok(Response::new(pb::SpawnResponse {
            already_running: spawned == Spawned::AlreadyRunning,
            service: self.info(name),
        }))
    }

    async fn stop(&self, req: Request<pb::StopRequest>) -> Result<Response<pb::StopResponse>, Status> {
        let name = req.into_inner().name;
        let was_running = self.supervisor.stop(&name).await.map_err(status_of)?;
        self.node.set_cluster_id(self.supervisor.cluster_id());
        Ok(Response::new(pb::StopResponse { was_running }))
    }

    async fn retire(&self, req: Request<pb::RetireRequest>) -> Result<Response<pb::RetireResponse>, Status> {
        let body = req.into_inner();
        let order = body.order_id;
        if let Some(mine) = self.supervisor.cluster_id()
            && mine != body.cluster_id
        {
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::FailedPrecondition,
                format!(
                    "cluster id mismatch: the request is for cluster {}, node {} belongs to cluster {mine}",
                    body.cluster_id, self.node.host.config.advertise
                ),
            ));
        }
        let station = order == crate::raft::STATION_GROUP;
        let runs_it = self.supervisor.list().iter().any(|s| match &s.spec {
            ServiceSpec::OrderReplica(o) => o.order_id == order,
            ServiceSpec::Station(_) => station,
            ServiceSpec::PhoneHome(_) => false,
        });
        if runs_it {
            self.supervisor.stop(if station { "station" } else { "order-replica" }).await.map_err(status_of)?;
        }
        let still = if station { self.node.station().is_some() } else { self.node.order(order).is_some() };
        if still {
            return Err(Status::unavailable(format!("the replica of group {order} is still stopping; retry")));
        }
        let db = self.node.host.db.clone();
        let data_dir = self.node.host.config.data_dir.clone();
        let logs = self.node.host.log_sync.clone();
        tokio::task::spawn_blocking(move || {
            logs.drop_group(order).map_err(|e| e.to_string())?;
            if station {
                crate::station::state_machine::StationStateMachine::purge(&db).map_err(|e| e.to_string())
            } else {
                crate::order::state_machine::KvStateMachine::purge(&db, &data_dir, order).map_err(|e| e.to_string())
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("purging order {order}: {e}")))?;
        tracing::info!(group = order, "retired this node's replica of group {order} and deleted its data");
        self.node.host.report_now();
        Ok(Response::new(pb::RetireResponse { was_running: runs_it }))
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let services = self.supervisor.list().into_iter().filter_map(|s| self.info(&s.name)).collect();
        Ok(Response::new(pb::ListResponse { services }))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(pb::NodeStatus {
            id: self.node.host.id,
            name: self.node.host.config.name.clone(),
            addr: self.node.host.config.advertise.clone(),
            cluster_id: self.supervisor.cluster_id().unwrap_or_default(),
            ready: self.node.is_ready(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            services: self.supervisor.list().into_iter().map(|s| s.name).collect(),
            replicas: self.node.order_replicas().iter().filter_map(|r| digest(r)).collect(),
        }))
    }
}

/// How far `r` applied its log, the membership its log holds and a digest of its rows; `None` if its stats cannot be read
/// (it is being retired).
fn digest(r: &crate::order::OrderReplica) -> Option<pb::ReplicaDigest> {
    let (applied_index, voters, learners) = {
        let m = r.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        (
            m.last_applied.as_ref().map_or(0, |l| l.index),
            membership.voter_ids().collect(),
            membership.learner_ids().collect(),
        )
    };
    let stats = r.sm.stats().ok()?;
    let mut d = pb::ReplicaDigest {
        order_id: r.order,
        applied_index,
        herald: r.is_herald(),
        voters,
        learners,
        ..Default::default()
    };
    for (shard, s) in stats.into_iter().filter(|(_, s)| s.keys > 0) {
        d.keys += s.keys;
        d.bytes += s.bytes;
        d.sum = d.sum.wrapping_add(s.sum.rotate_left(shard % 64) ^ u64::from(shard));
    }
    Some(d)
}
