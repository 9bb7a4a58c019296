//! `RaftTransport` service: hands Raft RPCs to the group they address.

use std::sync::Arc;

use radiant_proto as pb;
use radiant_proto::raft_transport_server::RaftTransport;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::node::NodeContext;
use crate::raft::registry::RaftMethod;
use crate::raft::registry::TransportError;

/// The Raft transport's gRPC face.
pub struct RaftApi {
    node: Arc<NodeContext>,
}

impl RaftApi {
    /// Serves the groups registered on `node`.
    pub fn new(node: Arc<NodeContext>) -> Self {
        Self { node }
    }

    async fn dispatch(
        &self,
        method: RaftMethod,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let req = req.into_inner();
        // A message meant for another node (an address now used by someone else) must not
        // reach this node's groups: openraft would take it as coming from a member.
        if req.to != self.node.id {
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::PermissionDenied,
                format!("raft message from node {} for node {}; this is node {}", req.from, req.to, self.node.id),
            ));
        }
        let group = self.node.registry.get(req.group).map_err(|e| Status::unavailable(e.to_string()))?;
        // A node of another cluster must never vote in or append to ours (order ids repeat).
        if group.cluster_id != req.cluster_id {
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::PermissionDenied,
                format!(
                    "raft message from node {} of cluster {}; group {} here is in cluster {}",
                    req.from, req.cluster_id, req.group, group.cluster_id
                ),
            ));
        }
        match group.handler.handle(method, req.payload).await {
            Ok(payload) => Ok(Response::new(pb::RaftReply { payload })),
            Err(e @ TransportError::BadPayload(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftApi {
    async fn vote(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.dispatch(RaftMethod::Vote, req).await
    }
    async fn pre_vote(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.dispatch(RaftMethod::PreVote, req).await
    }
    async fn append(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.dispatch(RaftMethod::Append, req).await
    }
    async fn snapshot(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.dispatch(RaftMethod::Snapshot, req).await
    }
    async fn transfer_leader(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.dispatch(RaftMethod::TransferLeader, req).await
    }
}
