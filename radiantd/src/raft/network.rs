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

use futures::Stream;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
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
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use radiant_proto::RaftRequest;
use radiant_proto::SnapshotChunk;
use radiant_proto::raft_transport_client::RaftTransportClient;
use radiant_proto::snapshot_chunk::Kind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use super::GroupId;
use super::codec;
use super::rate::RateLimiter;
use super::registry::RaftMethod;
use super::snapshot_stream::CHUNK_BYTES;
use super::snapshot_stream::StreamedSnapshot;
use crate::identity::NodeId;

/// The slowest transfer rate a large Raft message is given time for.
const MIN_TRANSFER_BYTES_PER_SEC: f64 = 16.0 * 1024.0 * 1024.0;

/// A pool of lazily connected channels, keyed by peer address, shared by every group and by
/// the station's forwarding; with the node's one bandwidth limit for snapshot sends.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    snapshot_rate: Arc<RateLimiter>,
    move_rate: Arc<RateLimiter>,
}

impl Peers {
    /// The limit the shard moves this node sends go through (and then `snapshot_rate`).
    pub fn move_rate(&self) -> &Arc<RateLimiter> {
        &self.move_rate
    }

    /// The limit every snapshot this node sends goes through, whatever its group.
    pub fn snapshot_rate(&self) -> &Arc<RateLimiter> {
        &self.snapshot_rate
    }

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

/// Creates connections for one group, whose snapshots are `SD`.
pub struct NetworkFactory<C, SD> {
    peers: Peers,
    group: GroupId,
    cluster_id: String,
    me: NodeId,
    _c: PhantomData<fn() -> (C, SD)>,
}

impl<C, SD> NetworkFactory<C, SD> {
    /// A factory for `group` of `cluster_id`, sending as node `me`.
    pub fn new(peers: Peers, group: GroupId, cluster_id: String, me: NodeId) -> Self {
        Self { peers, group, cluster_id, me, _c: PhantomData }
    }
}

impl<C, SD> RaftNetworkFactory<C> for NetworkFactory<C, SD>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
    SD: StreamedSnapshot,
{
    type Network = Connection<C, SD>;

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
            snapshot_rate: self.peers.snapshot_rate.clone(),
            _c: PhantomData,
        }
    }
}

/// One group's connection to one peer.
pub struct Connection<C, SD> {
    client: Result<RaftTransportClient<Channel>, String>,
    target: NodeId,
    group: GroupId,
    cluster_id: String,
    me: NodeId,
    snapshot_rate: Arc<RateLimiter>,
    _c: PhantomData<fn() -> (C, SD)>,
}

/// How one call failed, before it is mapped to openraft's error kinds.
enum CallError {
    /// The peer could not be reached: back off.
    Unreachable(String),
    /// The call failed in flight: retry.
    Network(String),
}

impl<C: RaftTypeConfig, SD> Connection<C, SD> {
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
            crate::failpoints::delay("net-delay").await;
            match method {
                RaftMethod::Vote => client.vote(request).await,
                RaftMethod::PreVote => client.pre_vote(request).await,
                RaftMethod::Append => client.append(request).await,
                RaftMethod::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => return Err(CallError::Network(format!("timed out after {ttl:?}"))),
            Ok(r) => self.reply(r)?,
        };
        codec::decode(&reply.payload).map_err(|e| CallError::Network(e.to_string()))
    }

    fn reply(
        &self,
        r: Result<tonic::Response<radiant_proto::RaftReply>, tonic::Status>,
    ) -> Result<radiant_proto::RaftReply, CallError> {
        r.map(|r| r.into_inner()).map_err(|status| status_error(self.target, status))
    }
}

/// How a failed call to `target` is retried: a peer that is down or not serving is backed off.
fn status_error(target: NodeId, status: tonic::Status) -> CallError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => {
            CallError::Unreachable(format!("node {target}: {}", status.message()))
        }
        _ => CallError::Network(format!("node {target}: {}", status.message())),
    }
}

/// How long a sender waits for the reply after the last chunk: the receiver fsyncs the data
/// and installs it (an order's into redb) before it answers, which takes time in proportion
/// to the size. A dead receiver is found sooner, by the channel's keep-alive.
fn install_wait(idle: Duration, len: u64) -> Duration {
    const SLOWEST_INSTALL_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;
    idle + Duration::from_secs(len / SLOWEST_INSTALL_BYTES_PER_SEC)
}

impl<C, SD> Connection<C, SD>
where
    C: RaftTypeConfig,
    SD: StreamedSnapshot,
{
    /// Streams a snapshot: the head, then chunks through the node's rate limit, then the
    /// trailer with the crc32 of all chunks. There is no deadline on the whole transfer, which
    /// may take minutes: only on each step, `idle` for a chunk to be taken by the transport
    /// and [`install_wait`] for the reply once all is sent. `cancel` is checked throughout.
    async fn stream_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SD>,
        cancel: impl Future<Output = ReplicationClosed>,
        idle: Duration,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let network = |m: String| StreamingError::Network(NetworkError::from_string(m));
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(StreamingError::Unreachable(Unreachable::from_string(e.clone()))),
        };
        let len = snapshot.snapshot.byte_len();
        let started = std::time::Instant::now();
        let head = radiant_proto::SnapshotHead {
            cluster_id: self.cluster_id.clone(),
            group: self.group,
            from: self.me,
            to: self.target,
            payload: codec::encode(&(&vote, &snapshot.meta)).map_err(|e| network(e.to_string()))?,
            len,
        };
        // A file that a newer snapshot replaced in the meantime is an error to retry at once:
        // openraft then asks for the current snapshot again.
        let mut chunks = snapshot
            .snapshot
            .into_chunk_stream(CHUNK_BYTES)
            .await
            .map_err(|e| network(format!("reading snapshot {}: {e}", snapshot.meta)))?;
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(2);
        let _ = tx.try_send(SnapshotChunk { kind: Some(Kind::Head(head)) });
        let call = client.install_snapshot(ReceiverStream::new(rx));
        let rate = self.snapshot_rate.clone();
        let target = self.target;
        let pump = async move {
            let mut hasher = crc32fast::Hasher::new();
            let mut sent: u64 = 0;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| format!("reading the snapshot: {e}"))?;
                hasher.update(&chunk);
                sent += chunk.len() as u64;
                rate.acquire(chunk.len()).await;
                let msg = SnapshotChunk { kind: Some(Kind::Data(chunk)) };
                match tokio::time::timeout(idle, tx.send(msg)).await {
                    Err(_) => return Err(format!("node {target} took no snapshot data for {idle:?}")),
                    Ok(Err(_)) => return Ok(false),
                    Ok(Ok(())) => {}
                }
            }
            if sent != len {
                return Err(format!("the snapshot had {sent} bytes, {len} announced"));
            }
            let trailer = radiant_proto::SnapshotTrailer { len, crc32: hasher.finalize() };
            match tokio::time::timeout(idle, tx.send(SnapshotChunk { kind: Some(Kind::Trailer(trailer)) })).await {
                Err(_) => Err(format!("node {target} took no snapshot data for {idle:?}")),
                Ok(r) => Ok(r.is_ok()),
            }
        };
        tokio::pin!(cancel, call, pump);
        let reply = tokio::select! {
            biased;
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            r = &mut call => r,
            pumped = &mut pump => {
                // Ok(false): the transport dropped the stream, so the call has ended; its
                // result says why.
                let wait = match pumped {
                    Ok(true) => install_wait(idle, len),
                    Ok(false) => idle,
                    Err(e) => return Err(network(e)),
                };
                tokio::select! {
                    biased;
                    closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                    r = tokio::time::timeout(wait, &mut call) => match r {
                        Ok(r) => r,
                        Err(_) => return Err(network(format!("node {target} did not install the snapshot in {wait:?}"))),
                    },
                }
            }
        };
        let reply = self.reply(reply).map_err(|e| match e {
            CallError::Unreachable(m) => StreamingError::Unreachable(Unreachable::from_string(m)),
            CallError::Network(m) => network(m),
        })?;
        let took = started.elapsed();
        tracing::info!(
            group = self.group,
            target,
            bytes = len,
            ms = took.as_millis() as u64,
            mib_per_sec = (len as f64 / (1024.0 * 1024.0) / took.as_secs_f64().max(1e-6)) as u64,
            "sent a snapshot, installed by the target"
        );
        codec::decode(&reply.payload).map_err(|e| network(e.to_string()))
    }
}

fn rpc_err<C: RaftTypeConfig>(e: CallError) -> RPCError<C> {
    match e {
        CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
        CallError::Network(m) => RPCError::Network(NetworkError::from_string(m)),
    }
}

impl<C, SD> RaftNetworkV2<C> for Connection<C, SD>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
    SD: StreamedSnapshot,
{
    type SnapshotData = SD;

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
        snapshot: SnapshotOf<C, SD>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        // openraft's install_snapshot_timeout is the idle limit of each step here, as
        // `soft_ttl` documents for long streams; never a bound on the whole transfer.
        self.stream_snapshot(vote, snapshot, cancel, option.soft_ttl()).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.call(RaftMethod::TransferLeader, &req, option.hard_ttl()).await.map_err(rpc_err)
    }

    /// One gRPC stream per replication session: requests leave as openraft produces them,
    /// without waiting for the previous reply, and the follower answers in order (openraft's
    /// `Raft::stream_append`). A dead or cut-off follower is found by the channel's HTTP/2
    /// keep-alive (1 s, then 2 s to answer), which ends the stream; openraft then opens another.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = match &self.client {
                Ok(c) => c.clone(),
                Err(e) => return Err(RPCError::Unreachable(Unreachable::from_string(e.clone()))),
            };
            let mut header = Some(RaftRequest {
                cluster_id: self.cluster_id.clone(),
                group: self.group,
                from: self.me,
                to: self.target,
                payload: Vec::new(),
            });
            let outbound = input.filter_map(move |req| {
                let mut msg = header.take().unwrap_or_default();
                async move {
                    crate::failpoints::delay("net-delay").await;
                    match codec::encode(&req) {
                        Ok(payload) => {
                            msg.payload = payload;
                            Some(msg)
                        }
                        Err(e) => {
                            tracing::error!("an AppendEntries request does not encode: {e}");
                            None
                        }
                    }
                }
            });
            let target = self.target;
            let opened = tokio::time::timeout(option.hard_ttl(), client.append_stream(outbound)).await;
            let inbound = match opened {
                Err(_) => {
                    return Err(RPCError::Network(NetworkError::from_string("opening an append stream timed out")));
                }
                Ok(Err(status)) => return Err(rpc_err(status_error(target, status))),
                Ok(Ok(r)) => r.into_inner(),
            };
            let results = inbound.map(move |r| match r {
                Ok(reply) => codec::decode::<StreamAppendResult<C>>(&reply.payload)
                    .map_err(|e| RPCError::Network(NetworkError::from_string(e.to_string()))),
                Err(status) => Err(rpc_err(status_error(target, status))),
            });
            Ok(results.boxed())
        })
    }

    fn backoff(&self) -> Option<Backoff> {
        // A dead peer is retried every 200 ms: fast enough for a restarted node to rejoin
        // quickly, slow enough not to spin on connection refusals.
        Some(Backoff::new(std::iter::repeat(Duration::from_millis(200))))
    }
}
