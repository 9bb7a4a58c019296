//! `Station` service. Any radiant answers: the bondsmith handles the request, a station
//! follower forwards it to the bondsmith, and a satellite forwards it to the station
//! addresses it phones home to. A hop counter in the metadata stops forwarding loops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use openraft::ReadPolicy;
use radiant_proto as pb;
use radiant_proto::station_client::StationClient;
use radiant_proto::station_server::Station as StationRpc;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::Channel;

use crate::coordinator::Announce;
use crate::node::NodeContext;
use crate::spec::member_to_proto;
use crate::station::Station;
use crate::station::map::ClusterMap;
use crate::station::map::MapChange;
use crate::station::map::MemberInfo;
use crate::station::map::StationCommand;
use crate::station::map::StationResponse;
use crate::station::settings::SettingInfo;

const HOPS: &str = "x-radiant-hops";
const MAX_HOPS: u32 = 2;

/// The station's gRPC face.
pub struct StationApi {
    node: Arc<NodeContext>,
}

enum Route {
    Local(Arc<Station>),
    Remote(Vec<String>),
}

fn hops<T>(req: &Request<T>) -> u32 {
    req.metadata().get(HOPS).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl StationApi {
    /// Serves station requests on `node`.
    pub fn new(node: Arc<NodeContext>) -> Self {
        Self { node }
    }

    fn route(&self, hops: u32) -> Result<Route, Status> {
        if let Some(station) = self.node.station() {
            if station.is_bondsmith() {
                return Ok(Route::Local(station));
            }
            return match station.bondsmith() {
                Some(b) if b.id != self.node.id && hops < MAX_HOPS => Ok(Route::Remote(vec![b.addr])),
                _ => Err(Status::unavailable("the station has no bondsmith right now (election in progress); retry")),
            };
        }
        let targets = self.node.phone_home_targets();
        if targets.is_empty() {
            return Err(self.node.no_route_status());
        }
        if hops >= MAX_HOPS {
            return Err(Status::unavailable("station unreachable: too many forwarding hops"));
        }
        Ok(Route::Remote(targets))
    }

    /// Sends the request to the first target that answers.
    async fn forward<Req, Resp, F, Fut>(
        &self,
        targets: Vec<String>,
        hops: u32,
        req: Req,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(StationClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut last = Status::unavailable("no station address to forward to");
        for addr in targets {
            let Ok(channel) = self.node.peers.channel(&addr) else {
                continue;
            };
            let mut r = Request::new(req.clone());
            r.set_timeout(Duration::from_secs(10));
            if let Ok(v) = (hops + 1).to_string().parse() {
                r.metadata_mut().insert(HOPS, v);
            }
            match call(StationClient::new(channel), r).await {
                Err(s) if s.code() == tonic::Code::Unavailable => last = s,
                other => return other,
            }
        }
        Err(last)
    }

    fn check_cluster(station: &Station, cluster_id: &str, who: &str) -> Result<(), Status> {
        if cluster_id != station.spec.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: {who} belongs to cluster {cluster_id}, this station runs cluster {}",
                station.spec.cluster_id
            )));
        }
        Ok(())
    }

    async fn linearizable_map(station: &Station) -> Result<ClusterMap, Status> {
        station
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| Status::unavailable(format!("bondsmith lost its quorum: {e}")))?;
        Ok(station.view.map())
    }
}

/// The wire form of the map.
pub fn map_to_proto(map: &ClusterMap) -> pb::ClusterMap {
    let member = |id| {
        map.nodes.get(&id).map(|n| member_to_proto(&MemberInfo { id, name: n.name.clone(), addr: n.addr.clone() }))
    };
    pb::ClusterMap {
        cluster_id: map.cluster_id.clone(),
        epoch: map.epoch,
        bondsmith: map.bondsmith.and_then(member),
        station: map.station.clone(),
        nodes: map
            .nodes
            .values()
            .map(|n| pb::NodeInfo {
                id: n.id,
                name: n.name.clone(),
                addr: n.addr.clone(),
                state: map.state(n).to_string(),
                roles: map.roles(n.id).into_iter().map(String::from).collect(),
                capacity: n.capacity,
                incarnation: n.incarnation,
            })
            .collect(),
        orders: map
            .orders
            .values()
            .map(|o| pb::OrderInfo {
                id: o.id,
                members: o.members.clone(),
                herald: o.herald,
                shards: map.shard_count(o.id) as u32,
                learners: o.reconfig.iter().map(|r| r.add).collect(),
                replacing: o.reconfig.as_ref().map(|r| r.remove),
                retired: o.retired.iter().copied().collect(),
            })
            .collect(),
        shards_total: map.shards,
        shards_assigned: map.shard_orders.iter().filter(|o| **o != 0).count() as u32,
        replicas: map.replicas,
        shard_orders: map.shard_orders.clone(),
        max_key_bytes: map.max_key_bytes,
        max_value_bytes: map.max_value_bytes,
        moving: map.moving.iter().map(|(s, o)| (*s, *o)).collect(),
    }
}

fn setting_to_proto(s: SettingInfo) -> pb::Setting {
    pb::Setting { name: s.name.to_string(), value: s.value, default: s.default, meaning: s.meaning.to_string() }
}

/// Commits an operator's setting change through the station's log, re-reading the epoch if
/// another change got there first.
async fn commit_setting(station: &Station, name: &str, value: &str) -> Result<(SettingInfo, u64), Status> {
    for _ in 0..10 {
        let (epoch, info) = station.view.with(|m| {
            let mut next = m.settings.clone();
            (m.epoch, next.set(name, value))
        });
        let info = info.map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cmd = StationCommand {
            expected_epoch: epoch,
            at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            by: station.me(),
            change: MapChange::Set { name: info.name.to_string(), value: info.value.clone() },
            reason: format!("operator: radiantctl set {} {}", info.name, info.value),
        };
        let resp = station
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| Status::unavailable(format!("the station could not commit the change: {e}")))?;
        match resp.data {
            StationResponse::Applied { epoch } => {
                station.wake();
                return Ok((info, epoch));
            }
            StationResponse::Stale { .. } => continue,
            StationResponse::Rejected { reason } => return Err(Status::invalid_argument(reason)),
            StationResponse::Nothing => return Err(Status::internal("the station applied nothing")),
        }
    }
    Err(Status::unavailable("the map kept changing; retry"))
}

#[tonic::async_trait]
impl StationRpc for StationApi {
    async fn node_up(&self, req: Request<pb::NodeUpRequest>) -> Result<Response<pb::NodeUpResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        let node = body.node.clone().ok_or_else(|| Status::invalid_argument("NodeUp without a node"))?;
        if node.id == 0 || node.addr.is_empty() {
            return Err(Status::invalid_argument("NodeUp needs a non-zero node id and an address"));
        }
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.node_up(r).await }).await
            }
            Route::Local(station) => {
                Self::check_cluster(&station, &body.cluster_id, &format!("node {} ({})", node.name, node.addr))?;
                let announce = Announce {
                    node: MemberInfo { id: node.id, name: node.name, addr: node.addr },
                    capacity: body.capacity,
                    incarnation: body.incarnation,
                };
                let epoch = station.node_up(announce, Duration::from_secs(5)).await;
                let bondsmith = station.bondsmith().map(|b| member_to_proto(&b));
                Ok(Response::new(pb::NodeUpResponse {
                    acknowledged: epoch.is_some(),
                    epoch: epoch.unwrap_or_default(),
                    bondsmith,
                }))
            }
        }
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.heartbeat(r).await }).await
            }
            Route::Local(station) => {
                Self::check_cluster(&station, &body.cluster_id, &format!("node {}", body.addr))?;
                let known = station.heartbeat(&body);
                let (epoch, snapshot_rate_mib) = station.view.with(|m| (m.epoch, m.settings.snapshot_rate_mib));
                Ok(Response::new(pb::HeartbeatResponse { epoch, known, snapshot_rate_mib }))
            }
        }
    }

    async fn get_map(&self, req: Request<pb::GetMapRequest>) -> Result<Response<pb::ClusterMap>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.get_map(r).await }).await
            }
            Route::Local(station) => Ok(Response::new(map_to_proto(&Self::linearizable_map(&station).await?))),
        }
    }

    async fn events(&self, req: Request<pb::EventsRequest>) -> Result<Response<pb::EventsResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.events(r).await }).await
            }
            Route::Local(station) => {
                let map = Self::linearizable_map(&station).await?;
                let limit = if body.limit == 0 { usize::MAX } else { body.limit as usize };
                let matching: Vec<_> = map.journal.iter().filter(|e| e.epoch > body.after_epoch).collect();
                let skip = matching.len().saturating_sub(limit);
                let entries = matching
                    .into_iter()
                    .skip(skip)
                    .map(|e| pb::JournalEntry {
                        epoch: e.epoch,
                        at_unix_ms: e.at_unix_ms,
                        action: e.action.clone(),
                        reason: e.reason.clone(),
                        bondsmith: e.bondsmith,
                    })
                    .collect();
                Ok(Response::new(pb::EventsResponse { entries }))
            }
        }
    }

    async fn settings(&self, req: Request<pb::SettingsRequest>) -> Result<Response<pb::SettingsResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.settings(r).await }).await
            }
            Route::Local(station) => {
                let map = Self::linearizable_map(&station).await?;
                let settings = map.settings.list().into_iter().map(setting_to_proto).collect();
                Ok(Response::new(pb::SettingsResponse { settings }))
            }
        }
    }

    async fn set(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => self.forward(targets, hops, body, |mut c, r| async move { c.set(r).await }).await,
            Route::Local(station) => {
                let (info, epoch) = commit_setting(&station, &body.name, &body.value).await?;
                Ok(Response::new(pb::SetResponse { setting: Some(setting_to_proto(info)), epoch }))
            }
        }
    }
}
