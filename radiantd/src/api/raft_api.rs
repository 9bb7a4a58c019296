//! `RaftTransport` service: hands Raft RPCs to the group they address.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use radiant_proto as pb;
use radiant_proto::raft_transport_server::RaftTransport;
use radiant_proto::snapshot_chunk::Kind;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::node::NodeContext;
use crate::raft::GroupId;
use crate::raft::registry::RaftMethod;
use crate::raft::registry::Registered;
use crate::raft::registry::TransportError;
use crate::raft::snapshot_stream::Incoming;

/// The Raft transport's gRPC face.
pub struct RaftApi {
    node: Arc<NodeContext>,
}

impl RaftApi {
    /// Serves the groups registered on `node`.
    pub fn new(node: Arc<NodeContext>) -> Self {
        Self { node }
    }

    /// The group a message addresses, once the message is known to be for this node and from
    /// a node of the group's cluster.
    fn group(&self, cluster_id: &str, group: GroupId, from: u64, to: u64) -> Result<Registered, Status> {
        // A message meant for another node (an address now used by someone else) must not
        // reach this node's groups: openraft would take it as coming from a member.
        if to != self.node.host.id {
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::PermissionDenied,
                format!("raft message from node {from} for node {to}; this is node {}", self.node.host.id),
            ));
        }
        let registered = self.node.host.registry.get(group).map_err(|e| Status::unavailable(e.to_string()))?;
        // A node of another cluster must never vote in or append to ours (order ids repeat).
        if registered.cluster_id != cluster_id {
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::PermissionDenied,
                format!(
                    "raft message from node {from} of cluster {cluster_id}; group {group} here is in cluster {}",
                    registered.cluster_id
                ),
            ));
        }
        Ok(registered)
    }

    async fn dispatch(
        &self,
        method: RaftMethod,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let req = req.into_inner();
        let group = self.group(&req.cluster_id, req.group, req.from, req.to)?;
        reply(group.handler.handle(method, req.payload).await)
    }
}

fn reply(r: Result<Vec<u8>, TransportError>) -> Result<Response<pb::RaftReply>, Status> {
    match r {
        Ok(payload) => Ok(Response::new(pb::RaftReply { payload })),
        Err(e @ (TransportError::BadPayload(_) | TransportError::BadSnapshot(_))) => {
            Err(Status::invalid_argument(e.to_string()))
        }
        Err(e) => Err(Status::unavailable(e.to_string())),
    }
}

/// The messages after a snapshot stream's head, as the group handler takes them.
fn incoming(stream: Streaming<pb::SnapshotChunk>) -> impl futures::Stream<Item = Result<Incoming, TransportError>> {
    stream.map(|m| match m {
        Ok(pb::SnapshotChunk { kind: Some(Kind::Data(data)) }) => Ok(Incoming::Data(data)),
        Ok(pb::SnapshotChunk { kind: Some(Kind::Trailer(t)) }) => Ok(Incoming::End { len: t.len, crc32: t.crc32 }),
        Ok(_) => Err(TransportError::BadSnapshot("a second head, or an empty message".into())),
        Err(status) => Err(TransportError::BadSnapshot(format!("stream broke: {}", status.message()))),
    })
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
    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let mut stream = req.into_inner();
        let head = match stream.message().await? {
            Some(pb::SnapshotChunk { kind: Some(Kind::Head(head)) }) => head,
            _ => return Err(Status::invalid_argument("a snapshot stream must start with its head")),
        };
        let group = self.group(&head.cluster_id, head.group, head.from, head.to)?;
        tracing::info!(group = head.group, from = head.from, bytes = head.len, "receiving a snapshot");
        let r = group.handler.install_snapshot(head.payload, head.len, incoming(stream).boxed()).await;
        if let Err(e) = &r {
            tracing::warn!(group = head.group, from = head.from, "snapshot not installed: {e}");
        }
        reply(r)
    }
    async fn transfer_leader(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.dispatch(RaftMethod::TransferLeader, req).await
    }

    type AppendStreamStream = BoxStream<'static, Result<pb::RaftReply, Status>>;

    async fn append_stream(
        &self,
        req: Request<Streaming<pb::RaftRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut inbound = req.into_inner();
        let this = RaftApi { node: self.node.clone() };
        // Answered at once, before the first message: the leader sends its first request only
        // once the stream is open.
        let replies = futures::stream::once(async move {
            let refused = |s: Status| futures::stream::once(std::future::ready(Err(s))).boxed();
            let first = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return futures::stream::empty().boxed(),
                Err(s) => return refused(s),
            };
            // The stream is admitted once, by its first message; the rest carry only payloads.
            let group = match this.group(&first.cluster_id, first.group, first.from, first.to) {
                Ok(g) => g,
                Err(s) => return refused(s),
            };
            let payloads = futures::stream::once(std::future::ready(first.payload))
                .chain(
                    inbound
                        .take_while(|m| std::future::ready(m.is_ok()))
                        .filter_map(|m| std::future::ready(m.ok().map(|m| m.payload))),
                )
                .boxed();
            group.handler.stream_append(payloads).map(|r| reply(r).map(|r| r.into_inner())).boxed()
        })
        .flatten();
        Ok(Response::new(replies.boxed()))
    }
}
