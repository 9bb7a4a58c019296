//! Routes incoming Raft RPCs to the local group they are addressed to.
//!
//! The gRPC transport is not generic over a group's type config; each running group
//! registers a [`GroupHandler`] that decodes the payload for its own types.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;

use futures::future::BoxFuture;
use openraft::Raft;
use openraft::RaftTypeConfig;
use openraft::storage::RaftStateMachine;

use super::GroupId;
use super::codec;

/// Which Raft RPC a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftMethod {
    /// RequestVote.
    Vote,
    /// Pre-vote round before a real election.
    PreVote,
    /// AppendEntries (also heartbeats).
    Append,
    /// A full snapshot.
    Snapshot,
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
}

/// A running group, as seen by the transport.
pub trait GroupHandler: Send + Sync + 'static {
    /// Handles one encoded request and returns the encoded response.
    fn handle(&self, method: RaftMethod, payload: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// The wire form of a full snapshot: vote, metadata and the state machine's bytes (a
/// `ByteBuf`, which postcard copies in one piece instead of byte by byte).
pub type SnapshotWire<C> = (openraft::alias::VoteOf<C>, openraft::alias::SnapshotMetaOf<C>, serde_bytes::ByteBuf);

impl<C, SM> GroupHandler for Raft<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    fn handle(&self, method: RaftMethod, payload: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let raft = self.clone();
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
                RaftMethod::Snapshot => {
                    let (vote, meta, data): SnapshotWire<C> = codec::decode(&payload)?;
                    let snapshot = openraft::alias::SnapshotOf::<C, Vec<u8>> { meta, snapshot: data.into_vec() };
                    let r = raft.install_full_snapshot(vote, snapshot).await.map_err(|e| stopped(&e))?;
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
