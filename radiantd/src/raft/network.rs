//! Outgoing Raft RPCs over gRPC, one shared HTTP/2 channel per peer address.
//!
//! Channels keep HTTP/2 keep-alive on (interval, timeout, while idle): without it a channel
//! can keep writing into a connection that a partition killed, and a leader would never
//! notice its followers are gone.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::BasicNode;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use openraft::RaftTypeConfig;
use openraft::alias::SnapshotOf;
use openraft::alias::VoteOf;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::Backoff;
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use radiant_proto::RaftRequest;
use radiant_proto::raft_transport_client::RaftTransportClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use super::GroupId;
use super::codec;
use super::registry::RaftMethod;
use crate::identity::NodeId;

/// The slowest transfer rate a large Raft message is given time for.
const MIN_TRANSFER_BYTES_PER_SEC: f64 = 16.0 * 1024.0 * 1024.0;

/// A pool of lazily connected channels, keyed by peer address, shared by every group and by
/// the station's forwarding.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// The channel to `addr` (`host:port`), created on first use. Never blocks on connecting.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let channel = endpoint(addr)?.connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// The endpoint settings every Radiant client uses.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true))
}

/// Creates connections for one group.
pub struct NetworkFactory<C> {
    peers: Peers,
    group: GroupId,
    cluster_id: String,
    me: NodeId,
    _c: PhantomData<fn() -> C>,
}

impl<C> NetworkFactory<C> {
    /// A factory for `group` of `cluster_id`, sending as node `me`.
    pub fn new(peers: Peers, group: GroupId, cluster_id: String, me: NodeId) -> Self {
        Self { peers, group, cluster_id, me, _c: PhantomData }
    }
}

impl<C> RaftNetworkFactory<C> for NetworkFactory<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    type Network = Connection<C>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            client: self
                .peers
                .channel(&node.addr)
                .map(|c| RaftTransportClient::new(c).max_decoding_message_size(256 * 1024 * 1024))
                .map_err(|e| e.to_string()),
            target,
            group: self.group,
            cluster_id: self.cluster_id.clone(),
            me: self.me,
            _c: PhantomData,
        }
    }
}

/// One group's connection to one peer.
pub struct Connection<C> {
    client: Result<RaftTransportClient<Channel>, String>,
    target: NodeId,
    group: GroupId,
    cluster_id: String,
    me: NodeId,
    _c: PhantomData<fn() -> C>,
}

/// How one call failed, before it is mapped to openraft's error kinds.
enum CallError {
    /// The peer could not be reached: back off.
    Unreachable(String),
    /// The call failed in flight: retry.
    Network(String),
}

impl<C: RaftTypeConfig> Connection<C> {
    async fn call<Req, Resp>(&mut self, method: RaftMethod, req: &Req, ttl: Duration) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let client = self.client.as_mut().map_err(|e| CallError::Unreachable(e.clone()))?;
        let payload = codec::encode(req).map_err(|e| CallError::Network(e.to_string()))?;
        // openraft's deadline suits heartbeats and small batches; an append that carries
        // megabytes (up to max_payload_entries large values) must not time out on a busy
        // machine, or a follower, or a learner catching up, never gets there.
        let ttl = ttl + Duration::from_secs_f64(payload.len() as f64 / MIN_TRANSFER_BYTES_PER_SEC);
        let mut request = tonic::Request::new(RaftRequest {
            cluster_id: self.cluster_id.clone(),
            group: self.group,
            from: self.me,
            payload,
            to: self.target,
        });
        request.set_timeout(ttl);
        let fut = async {
            match method {
                RaftMethod::Vote => client.vote(request).await,
                RaftMethod::PreVote => client.pre_vote(request).await,
                RaftMethod::Append => client.append(request).await,
                RaftMethod::Snapshot => client.snapshot(request).await,
                RaftMethod::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => return Err(CallError::Network(format!("timed out after {ttl:?}"))),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown => {
                        CallError::Unreachable(format!("node {}: {}", self.target, status.message()))
                    }
                    _ => CallError::Network(format!("node {}: {}", self.target, status.message())),
                });
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        codec::decode(&reply.payload).map_err(|e| CallError::Network(e.to_string()))
    }
}

fn rpc_err<C: RaftTypeConfig>(e: CallError) -> RPCError<C> {
    match e {
        CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
        CallError::Network(m) => RPCError::Network(NetworkError::from_string(m)),
    }
}

impl<C> RaftNetworkV2<C> for Connection<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.call(RaftMethod::Append, &rpc, option.hard_ttl()).await.map_err(rpc_err)
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(RaftMethod::Vote, &rpc, option.hard_ttl()).await.map_err(rpc_err)
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(RaftMethod::PreVote, &rpc, option.hard_ttl()).await.map_err(rpc_err)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let wire = (vote, snapshot.meta, serde_bytes::ByteBuf::from(snapshot.snapshot));
        let ttl = option.hard_ttl();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call(RaftMethod::Snapshot, &wire, ttl) => r.map_err(|e| match e {
                CallError::Unreachable(m) => StreamingError::Unreachable(Unreachable::from_string(m)),
                CallError::Network(m) => StreamingError::Network(NetworkError::from_string(m)),
            }),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.call(RaftMethod::TransferLeader, &req, option.hard_ttl()).await.map_err(rpc_err)
    }

    fn backoff(&self) -> Option<Backoff> {
        // A dead peer is retried every 200 ms: fast enough for a restarted node to rejoin
        // quickly, slow enough not to spin on connection refusals.
        Some(Backoff::new(std::iter::repeat(Duration::from_millis(200))))
    }
}
