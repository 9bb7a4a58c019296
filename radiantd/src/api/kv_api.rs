//! `Kv` service: Get, Put, Delete, Scan on the herald of the key's order.
//!
//! Any radiant accepts a request. One that is not the herald answers FAILED_PRECONDITION with
//! a `KvRedirect` (the order, the herald's address as far as it knows, the map epoch) in the
//! status details, so the client goes straight to the herald next time. Writes are
//! acknowledged only once the order's quorum committed them (each log append is fsynced);
//! reads are linearizable (leader lease, else read index, on the herald) unless the caller asks for a stale read.

use std::sync::Arc;

use openraft::ReadPolicy;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use radiant_proto as pb;
use radiant_proto::kv_server::Kv;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::node::NodeContext;
use crate::order::OrderReplica;
use crate::order::state_machine::KvCommand;
use crate::order::state_machine::OrderConfig;
use crate::planted;
use crate::planted::Bug;
use crate::station::map::OrderId;
use radiant_proto::shard_of;

/// Most items one Scan returns.
pub const MAX_SCAN: u32 = 10_000;

/// The Kv service's gRPC face.
pub struct KvApi {
    node: Arc<NodeContext>,
}

/// Where a request for a shard is served.
struct Target {
    shard: u32,
    order: OrderId,
    map: Arc<pb::ClusterMap>,
}

fn redirect(order: OrderId, herald_addr: String, epoch: u64) -> Status {
    let msg = match herald_addr.as_str() {
        "" => format!("not the herald of order {order}; its herald is not known yet, retry"),
        a => format!("not the herald of order {order}; its herald is at {a}"),
    };
    let redirect = pb::KvRedirect { order_id: order, herald_addr, epoch };
    pb::ErrorDetail { code: pb::ErrorCode::NotHerald as i32, redirect: Some(redirect) }
        .status(tonic::Code::FailedPrecondition, msg)
}

impl KvApi {
    /// Serves Kv requests on `node`.
    pub fn new(node: Arc<NodeContext>) -> Self {
        Self { node }
    }

    /// The cluster map for routing: the local station's view if this node has one, else the
    /// station's answer through the phone-home addresses.
    async fn fetch_map(&self) -> Result<Arc<pb::ClusterMap>, Status> {
        if let Some(station) = self.node.station() {
            return Ok(self.node.cache_map(crate::api::station_api::map_to_proto(&station.view.map())));
        }
        let mut last = self.node.no_route_status();
        for addr in self.node.phone_home_targets() {
            let Ok(ch) = self.node.host.peers.channel(&addr) else { continue };
            let mut req = Request::new(pb::GetMapRequest {});
            req.set_timeout(std::time::Duration::from_secs(5));
            match pb::station_client::StationClient::new(ch).get_map(req).await {
                Ok(m) => return Ok(self.node.cache_map(m.into_inner())),
                Err(s) => last = s,
            }
        }
        Err(last)
    }

    async fn map(&self) -> Result<Arc<pb::ClusterMap>, Status> {
        match self.node.cached_map(std::time::Duration::from_secs(2)) {
            Some(m) if m.shards_total > 0 && m.shard_orders.iter().all(|o| *o != 0) => Ok(m),
            _ => self.fetch_map().await,
        }
    }

    async fn target_of_shard(&self, shard: u32, key: Option<&[u8]>) -> Result<Target, Status> {
        if let Ok(t) = self.target_in(self.map().await?, shard) {
            if self.leads(t.order) {
                return Ok(t);
            }
            // The map this node routes by may be older than the orders' logs (a move switched a
            // moment ago): a herald here whose log serves the shard serves it, and a request
            // about to be sent elsewhere is routed by a fresh map, not one that may send the
            // client back where it came from.
            if let Some(order) = self.local_server(shard, key) {
                return Ok(Target { order, ..t });
            }
        }
        self.target_in(self.fetch_map().await?, shard)
    }

    /// Whether this node runs the herald of `order`.
    fn leads(&self, order: OrderId) -> bool {
        self.node.order(order).is_some_and(|r| r.is_herald())
    }

    /// An order whose herald runs here and whose log serves the shard (of the key).
    fn local_server(&self, shard: u32, key: Option<&[u8]>) -> Option<OrderId> {
        self.node
            .order_replicas()
            .into_iter()
            .find(|r| r.is_herald() && r.sm.serves(shard, key).unwrap_or(false))
            .map(|r| r.order)
    }

    fn target_in(&self, map: Arc<pb::ClusterMap>, shard: u32) -> Result<Target, Status> {
        if shard >= map.shards_total {
            return Err(Status::invalid_argument(format!("no shard {shard}: the cluster has {}", map.shards_total)));
        }
        let order = map.shard_orders.get(shard as usize).copied().unwrap_or(0);
        if order == 0 {
            return Err(pb::refusal(
                pb::ErrorCode::Retry,
                tonic::Code::Unavailable,
                format!("shard {shard} is not served by an order yet; retry"),
            ));
        }
        Ok(Target { shard, order, map })
    }

    async fn target_of_key(&self, key: &[u8]) -> Result<Target, Status> {
        let map = self.map().await?;
        if key.is_empty() {
            return Err(Status::invalid_argument("empty key"));
        }
        if map.max_key_bytes > 0 && key.len() > map.max_key_bytes as usize {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes; the limit is {} bytes",
                key.len(),
                map.max_key_bytes
            )));
        }
        self.target_of_shard(shard_of(key, map.shards_total), Some(key)).await
    }

    /// The local replica of the target's order if it is the herald; a redirect otherwise.
    fn herald(&self, t: &Target) -> Result<Arc<OrderReplica>, Status> {
        if let Some(r) = self.node.order(t.order) {
            if r.is_herald() {
                return Ok(r);
            }
            if let Some(addr) = r.herald_addr().filter(|a| *a != self.node.host.config.advertise) {
                return Err(redirect(t.order, addr, t.map.epoch));
            }
        }
        let addr = t
            .map
            .orders
            .iter()
            .find(|o| o.id == t.order)
            .and_then(|o| o.herald)
            .and_then(|h| t.map.nodes.iter().find(|n| n.id == h))
            .map(|n| n.addr.clone())
            .filter(|a| *a != self.node.host.config.advertise)
            .unwrap_or_default();
        Err(redirect(t.order, addr, t.map.epoch))
    }

    /// A replica to read from: the herald after a read-index round, or (stale) any local one.
    async fn reader(&self, t: &Target, stale: bool) -> Result<Arc<OrderReplica>, Status> {
        if stale && let Some(r) = self.node.order(t.order) {
            return Ok(r);
        }
        let r = self.herald(t)?;
        if planted::active(Bug::ReadWithoutLeadership) {
            return Ok(r);
        }
        // The leader lease first: no network round trip while a quorum acknowledged this
        // herald within the lease (followers refuse to elect anyone else for that long).
        // When the lease has lapsed, fall back to a read-index round.
        if r.raft.ensure_linearizable(ReadPolicy::LeaseRead).await.is_ok() {
            return Ok(r);
        }
        r.raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map_err(|e| match e.forward_to_leader() {
            // During a leadership transfer the forward names the target, while this node's
            // metrics still name itself: send the client to the target.
            Some(f) => redirect(
                t.order,
                f.leader_node.as_ref().map(|n| n.addr.clone()).or_else(|| r.herald_addr()).unwrap_or_default(),
                t.map.epoch,
            ),
            None => Status::unavailable(format!("order {} cannot confirm its leadership: {e}", t.order)),
        })?;
        Ok(r)
    }

    /// Refuses a read of a shard the order's log does not serve (a move is handing it over):
    /// the cached map is stale, so it is dropped.
    fn not_served(&self, t: &Target) -> Status {
        self.node.invalidate_map();
        handing_over(t)
    }

    async fn write(&self, t: &Target, cmd: KvCommand) -> Result<(bool, pb::Served), Status> {
        let r = self.herald(t)?;
        if planted::active(Bug::AckBeforeCommit) {
            let raft = r.raft.clone();
            tokio::spawn(async move { raft.client_write(cmd).await });
            return Ok((false, pb::Served { order_id: t.order, owner_epoch: 0 }));
        }
        let started = std::time::Instant::now();
        let res = r.raft.client_write(cmd).await;
        tracing::trace!(order = t.order, us = started.elapsed().as_micros() as u64, "client_write");
        match res {
            Ok(resp) if resp.data.wrong_shard => {
                self.node.invalidate_map();
                Err(handing_over(t))
            }
            Ok(resp) => Ok((resp.data.existed, pb::Served { order_id: t.order, owner_epoch: resp.data.owner_epoch })),
            Err(e) => Err(write_failure(t.order, t.map.epoch, e)),
        }
    }
}

/// How a failed `client_write` reaches the client. Only `ForwardToLeader` means the entry
/// never entered the log (safe to send elsewhere); anything else, `LogEntryDiscarded` included
/// (the entry was appended, then truncated or purged by a new leader, and openraft cannot tell
/// whether it committed), is an unknown outcome that the client must not retry.
fn write_failure(order: OrderId, epoch: u64, e: RaftError<OrderConfig, ClientWriteError<OrderConfig>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            redirect(order, f.leader_node.as_ref().map(|n| n.addr.clone()).unwrap_or_default(), epoch)
        }
        e => pb::refusal(
            pb::ErrorCode::OutcomeUnknown,
            tonic::Code::Unavailable,
            format!("order {order}: write outcome unknown: {e}"),
        ),
    }
}

/// The order does not serve the shard right now (it has not acquired it yet, or released it
/// for a handover): nothing was applied, so the client refreshes its map and retries.
fn handing_over(t: &Target) -> Status {
    let redirect = pb::KvRedirect { order_id: t.order, herald_addr: String::new(), epoch: t.map.epoch };
    pb::ErrorDetail { code: pb::ErrorCode::HandingOver as i32, redirect: Some(redirect) }.status(
        tonic::Code::FailedPrecondition,
        format!("shard {} is being handed over to or from order {}; retry", t.shard, t.order),
    )
}

fn internal(e: std::io::Error) -> Status {
    Status::internal(format!("storage: {e}"))
}

#[tonic::async_trait]
impl Kv for KvApi {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let t = self.target_of_key(&req.key).await?;
        let r = self.reader(&t, req.stale).await?;
        match r.sm.read_key(t.shard, &req.key, req.stale).map_err(internal)? {
            Some((value, owner_epoch)) => {
                let served = Some(pb::Served { order_id: t.order, owner_epoch });
                Ok(Response::new(pb::GetResponse { value, served }))
            }
            None => Err(self.not_served(&t)),
        }
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = req.into_inner();
        let t = self.target_of_key(&req.key).await?;
        if t.map.max_value_bytes > 0 && req.value.len() > t.map.max_value_bytes as usize {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes; the limit is {} bytes",
                req.value.len(),
                t.map.max_value_bytes
            )));
        }
        let (_, served) = self.write(&t, KvCommand::Put { shard: t.shard, key: req.key, value: req.value }).await?;
        Ok(Response::new(pb::PutResponse { served: Some(served) }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = req.into_inner();
        let t = self.target_of_key(&req.key).await?;
        let (existed, served) = self.write(&t, KvCommand::Delete { shard: t.shard, key: req.key }).await?;
        Ok(Response::new(pb::DeleteResponse { existed, served: Some(served) }))
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let req = req.into_inner();
        let shard = u32::try_from(req.shard)
            .map_err(|_| Status::invalid_argument("scan needs a shard; clients fan out over shards and merge"))?;
        let limit = if req.limit == 0 { MAX_SCAN } else { req.limit.min(MAX_SCAN) };
        if req.shards_total != 0 {
            let map = self.map().await?;
            if req.shards_total != map.shards_total {
                self.node.invalidate_map();
                return Err(pb::refusal(
                    pb::ErrorCode::ShardCountChanged,
                    tonic::Code::FailedPrecondition,
                    format!(
                        "the cluster has {} shards now, not {}: refresh the map",
                        map.shards_total, req.shards_total
                    ),
                ));
            }
        }
        let t = self.target_of_shard(shard, None).await?;
        let r = self.reader(&t, req.stale).await?;
        let of_total = if req.shards_total == 0 { t.map.shards_total } else { req.shards_total };
        let items = match r.sm.scan_served(shard, of_total, &req.prefix, limit as usize, req.stale).map_err(internal)? {
            Some(items) => items.into_iter().map(|(key, value)| pb::KeyValue { key, value }).collect(),
            None => return Err(self.not_served(&t)),
        };
        Ok(Response::new(pb::ScanResponse { items }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::BasicNode;
    use openraft::error::ForwardToLeader;

    use super::*;

    #[test]
    fn only_a_write_that_never_entered_the_log_is_redirected() {
        let forward = ForwardToLeader::<OrderConfig>::new(7, BasicNode::new("10.0.0.7:7400"));
        let s = write_failure(3, 9, RaftError::APIError(ClientWriteError::ForwardToLeader(forward.clone())));
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        let d = pb::ErrorDetail::of(&s).unwrap();
        assert_eq!(d.error_code(), pb::ErrorCode::NotHerald);
        let r = d.redirect.unwrap();
        assert_eq!((r.order_id, r.herald_addr.as_str(), r.epoch), (3, "10.0.0.7:7400", 9));

        // Appended, then discarded by a new leader: it may have committed. Never a redirect.
        let s = write_failure(3, 9, RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward)));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(pb::ErrorDetail::of(&s).map(|d| d.error_code()), Some(pb::ErrorCode::OutcomeUnknown));
        assert!(s.message().contains("write outcome unknown"), "{}", s.message());
    }
}
