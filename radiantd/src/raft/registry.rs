//! Routes incoming Raft RPCs to the local group they are addressed to.
//!
//! The gRPC transport is not generic over a group's type config; each running group
//! registers a [`GroupHandler`] that decodes the payload for its own types, and assembles an
//! incoming snapshot stream into its own kind of snapshot data.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::Raft;
use openraft::RaftTypeConfig;
use openraft::storage::RaftStateMachine;

use super::GroupId;
use super::codec;
use super::snapshot_stream;
use super::snapshot_stream::Incoming;
use super::snapshot_stream::StreamedSnapshot;

/// Which Raft RPC a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftMethod {
    /// RequestVote.
    Vote,
    /// Pre-vote round before a real election.
    PreVote,
    /// AppendEntries (also heartbeats).
    Append,
    /// Leadership handover.
    TransferLeader,
}

/// Why a Raft RPC could not be served.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No such group runs here.
    #[error("raft group {0} is not running on this node")]
    NoGroup(GroupId),
    /// The payload did not decode.
    #[error("bad raft payload: {0}")]
    BadPayload(#[from] std::io::Error),
    /// The local Raft node stopped.
    #[error("raft node stopped: {0}")]
    Stopped(String),
    /// An incoming snapshot stream is malformed, incomplete or corrupt.
    #[error("bad snapshot stream: {0}")]
    BadSnapshot(String),
    /// Spooling an incoming snapshot to local storage failed.
    #[error("storing the incoming snapshot: {0}")]
    Storage(std::io::Error),
}

/// The chunks of an incoming snapshot after its head, as the transport hands them over.
pub type IncomingChunks = BoxStream<'static, Result<Incoming, TransportError>>;

/// A running group, as seen by the transport.
pub trait GroupHandler: Send + Sync + 'static {
    /// Handles one encoded request and returns the encoded response.
    fn handle(&self, method: RaftMethod, payload: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;

    /// Receives a snapshot of `len` bytes whose head carried `head` (the encoded vote and
    /// meta), installs it, and returns the encoded response.
    fn install_snapshot(
        &self,
        head: Vec<u8>,
        len: u64,
        chunks: IncomingChunks,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;

    /// Pipelined replication: encoded AppendEntries requests in, encoded stream results out,
    /// in the same order. A request that does not decode ends the stream (the leader opens a
    /// new one).
    fn stream_append(
        &self,
        payloads: BoxStream<'static, Vec<u8>>,
    ) -> BoxStream<'static, Result<Vec<u8>, TransportError>>;
}

/// What precedes a snapshot's data on the wire: the sender's vote and the snapshot's meta.
pub type SnapshotHeadWire<C> = (openraft::alias::VoteOf<C>, openraft::alias::SnapshotMetaOf<C>);

/// A group's Raft handle with what the transport needs to receive its snapshots.
pub struct RaftGroup<C: RaftTypeConfig, SM: RaftStateMachine<C>>
where
    SM::SnapshotData: StreamedSnapshot,
{
    raft: Raft<C, SM>,
    spool: <SM::SnapshotData as StreamedSnapshot>::Spool,
}

impl<C: RaftTypeConfig, SM: RaftStateMachine<C>> RaftGroup<C, SM>
where
    SM::SnapshotData: StreamedSnapshot,
{
    /// Serves `raft`; incoming snapshots are assembled with `spool`.
    pub fn new(raft: Raft<C, SM>, spool: <SM::SnapshotData as StreamedSnapshot>::Spool) -> Self {
        Self { raft, spool }
    }
}

impl<C, SM> GroupHandler for RaftGroup<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
    SM::SnapshotData: StreamedSnapshot,
{
    fn install_snapshot(
        &self,
        head: Vec<u8>,
        len: u64,
        chunks: IncomingChunks,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let raft = self.raft.clone();
        let spool = self.spool.clone();
        Box::pin(async move {
            let (vote, meta): SnapshotHeadWire<C> = codec::decode(&head)?;
            let started = std::time::Instant::now();
            let data: SM::SnapshotData = snapshot_stream::assemble(&spool, len, chunks).await?;
            let received = started.elapsed();
            let leftover = data.leftover();
            let snapshot = openraft::alias::SnapshotOf::<C, SM::SnapshotData> { meta, snapshot: data };
            let r = raft.install_full_snapshot(vote, snapshot).await;
            // Installing renames a received file into place; anything still under the
            // received name was refused or not needed.
            if let Some(path) = leftover
                && let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("could not delete the received snapshot {}: {e}", path.display());
            }
            let r = r.map_err(|e| TransportError::Stopped(e.to_string()))?;
            tracing::info!(
                bytes = len,
                received_ms = received.as_millis() as u64,
                installed_ms = (started.elapsed() - received).as_millis() as u64,
                "received and installed a snapshot"
            );
            Ok(codec::encode(&r)?)
        })
    }

    fn stream_append(
        &self,
        payloads: BoxStream<'static, Vec<u8>>,
    ) -> BoxStream<'static, Result<Vec<u8>, TransportError>> {
        let requests = payloads
            .map(|p| codec::decode::<openraft::raft::AppendEntriesRequest<C>>(&p))
            .take_while(|r| {
                if let Err(e) = r {
                    tracing::warn!("ending an append stream at a request that does not decode: {e}");
                }
                std::future::ready(r.is_ok())
            })
            .filter_map(|r| std::future::ready(r.ok()));
        self.raft
            .stream_append(requests)
            .map(|r| match r {
                Ok(result) => Ok(codec::encode(&result)?),
                Err(fatal) => Err(TransportError::Stopped(fatal.to_string())),
            })
            .boxed()
    }

    fn handle(&self, method: RaftMethod, payload: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            let stopped = |e: &dyn std::fmt::Display| TransportError::Stopped(e.to_string());
            let out = match method {
                RaftMethod::Vote => {
                    let r = raft.vote(codec::decode(&payload)?).await.map_err(|e| stopped(&e))?;
                    codec::encode(&r)?
                }
                RaftMethod::PreVote => {
                    let r = raft.pre_vote(codec::decode(&payload)?).await.map_err(|e| stopped(&e))?;
                    codec::encode(&r)?
                }
                RaftMethod::Append => {
                    let r = raft.append_entries(codec::decode(&payload)?).await.map_err(|e| stopped(&e))?;
                    codec::encode(&r)?
                }
                RaftMethod::TransferLeader => {
                    let r = raft.handle_transfer_leader(codec::decode(&payload)?).await.map_err(|e| stopped(&e))?;
                    codec::encode(&r)?
                }
            };
            Ok(out)
        })
    }
}

/// A group as registered: its cluster and its handler.
#[derive(Clone)]
pub struct Registered {
    /// The cluster the group belongs to.
    pub cluster_id: String,
    /// Its handler.
    pub handler: Arc<dyn GroupHandler>,
}

/// The groups running on this node.
#[derive(Default, Clone)]
pub struct Registry {
    groups: Arc<RwLock<HashMap<GroupId, Registered>>>,
}

impl Registry {
    /// Makes `group` of `cluster_id` reachable from peers.
    pub fn register(&self, group: GroupId, cluster_id: &str, handler: Arc<dyn GroupHandler>) {
        let entry = Registered { cluster_id: cluster_id.to_string(), handler };
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, entry);
    }

    /// Stops routing to `group`.
    pub fn unregister(&self, group: GroupId) {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
    }

    /// The handler of `group`, if it runs here.
    pub fn get(&self, group: GroupId) -> Result<Registered, TransportError> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned().ok_or(TransportError::NoGroup(group))
    }
}
