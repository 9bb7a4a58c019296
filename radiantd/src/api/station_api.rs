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
use crate::coordinator::Observed;
use crate::node::NodeContext;
use crate::spec::member_to_proto;
use crate::station::Station;
use crate::station::journal::Filter;
use crate::station::map::ClusterMap;
use crate::station::map::Intent;
use crate::station::map::MapChange;
use crate::station::map::MemberInfo;
use crate::station::map::StationCommand;
use crate::station::map::StationResponse;
use crate::station::moves::MovePhase;
use crate::station::moves::PlannedMove;
use crate::station::moves::ShardMove;
use crate::station::settings::SettingInfo;
use crate::station::settings::Settings;

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
                Some(b) if b.id != self.node.host.id && hops < MAX_HOPS => Ok(Route::Remote(vec![b.addr])),
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
            let Ok(channel) = self.node.host.peers.channel(&addr) else {
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
            return Err(pb::refusal(
                pb::ErrorCode::ClusterMismatch,
                tonic::Code::FailedPrecondition,
                format!(
                    "cluster id mismatch: {who} belongs to cluster {cluster_id}, this station runs cluster {}",
                    station.spec.cluster_id
                ),
            ));
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
        moving: map.moves.iter().map(|(s, m)| (*s, m.to)).collect(),
        moves: map.moves.iter().map(|(s, m)| move_to_proto(*s, m, 0)).collect(),
        moves_queued: map.planned_moves.len() as u32,
        resharding_to: map.reshard.as_ref().map_or(0, |r| r.to),
    }
}

fn move_to_proto(shard: u32, m: &ShardMove, bytes_done: u64) -> pb::MoveInfo {
    pb::MoveInfo {
        shard,
        from: m.from,
        to: m.to,
        phase: m.phase.to_string(),
        bytes_done: bytes_done.min(m.bytes.max(bytes_done)),
        bytes_total: m.bytes,
        id: m.id,
        keys_total: m.keys,
    }
}

fn planned_to_proto(p: &PlannedMove, settings: &Settings) -> pb::PlannedMove {
    pb::PlannedMove {
        shard: p.shard,
        from: p.from,
        to: p.to,
        keys: p.keys,
        bytes: p.bytes,
        eta_s: crate::coordinator::moves::eta_s(p.bytes, settings),
    }
}

/// A rebalance's answer: the moves with their ETAs, and the totals.
fn rebalance_response(epoch: u64, moves: &[PlannedMove], settings: &Settings) -> pb::RebalanceResponse {
    let moves: Vec<pb::PlannedMove> = moves.iter().map(|p| planned_to_proto(p, settings)).collect();
    let total_bytes = moves.iter().map(|m| m.bytes).sum();
    let eta_s = crate::coordinator::moves::total_eta_s(&moves.iter().map(|m| m.eta_s).collect::<Vec<_>>(), settings);
    pb::RebalanceResponse { epoch, moves, total_bytes, eta_s, cancelled: 0 }
}

/// The plan of a rebalance on this map, from the heralds' reports.
fn plan_rebalance(map: &ClusterMap, obs: &Observed) -> Result<Vec<PlannedMove>, Status> {
    if map.orders.len() < 2 {
        return Ok(Vec::new());
    }
    let sizes = crate::coordinator::moves::shard_sizes(map, obs).ok_or_else(|| {
        pb::refusal(
            pb::ErrorCode::Retry,
            tonic::Code::Unavailable,
            "not every order has reported its shards to this bondsmith yet; retry".to_string(),
        )
    })?;
    Ok(crate::coordinator::rebalance_plan(map, &sizes))
}

async fn rebalance_local(station: &Station, body: pb::RebalanceRequest) -> Result<pb::RebalanceResponse, Status> {
    let map = StationApi::linearizable_map(station).await?;
    if body.cancel {
        let pending = map.planned_moves.len() + map.moves.values().filter(|m| m.phase != MovePhase::Switched).count();
        if pending == 0 {
            return Ok(pb::RebalanceResponse { epoch: map.epoch, ..Default::default() });
        }
        let (n, epoch) = commit_operator_change(station, |map, _| {
            let n = map.planned_moves.len() + map.moves.values().filter(|m| m.phase != MovePhase::Switched).count();
            Ok((MapChange::CancelMoves, "operator: radiantctl rebalance --cancel".to_string(), n as u32))
        })
        .await?;
        return Ok(pb::RebalanceResponse { epoch, cancelled: n, ..Default::default() });
    }
    if body.dry_run {
        let plan = plan_rebalance(&map, &station.observations())?;
        return Ok(rebalance_response(map.epoch, &plan, &map.settings));
    }
    let plan = plan_rebalance(&map, &station.observations())?;
    if plan.is_empty() {
        return Ok(rebalance_response(map.epoch, &plan, &map.settings));
    }
    let (plan, epoch) = commit_operator_change(station, |map, obs| {
        let plan = plan_rebalance(map, obs)?;
        let bytes: u64 = plan.iter().map(|m| m.bytes).sum();
        let reason = format!("operator: radiantctl rebalance ({} moves, {bytes} bytes)", plan.len());
        Ok((MapChange::PlanMoves { moves: plan.clone() }, reason, plan))
    })
    .await?;
    Ok(rebalance_response(epoch, &plan, &map.settings))
}

fn moves_local(station: &Station) -> pb::MovesResponse {
    let map = station.view.map();
    let obs = station.observations();
    let moves = map
        .moves
        .iter()
        .map(|(s, m)| {
            let done = match m.phase {
                MovePhase::Switched => m.bytes,
                _ => obs
                    .shard_reports
                    .get(&m.to)
                    .and_then(|r| r.incoming.get(s))
                    .filter(|i| i.move_id == m.id)
                    .map_or(0, |i| i.bytes_done),
            };
            move_to_proto(*s, m, done)
        })
        .collect();
    let queued = map.planned_moves.iter().map(|p| planned_to_proto(p, &map.settings)).collect();
    pb::MovesResponse { epoch: map.epoch, moves, queued }
}

fn setting_to_proto(s: SettingInfo) -> pb::Setting {
    pb::Setting { name: s.name.to_string(), value: s.value, default: s.default, meaning: s.meaning.to_string() }
}

/// Commits an operator's change through the station's log: `decide` looks at the current
/// map (and the bondsmith's observations) and returns the change and its reason, or refuses
/// with a status; if another change gets there first, it decides again on the new map.
async fn commit_operator_change<T>(
    station: &Station,
    decide: impl Fn(&ClusterMap, &Observed) -> Result<(MapChange, String, T), Status>,
) -> Result<(T, u64), Status> {
    for _ in 0..10 {
        let map = station.view.map();
        let (change, reason, out) = decide(&map, &station.observations())?;
        let cmd = StationCommand {
            expected_epoch: map.epoch,
            at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            by: station.me(),
            change,
            reason,
        };
        let resp = station
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| Status::unavailable(format!("the station could not commit the change: {e}")))?;
        match resp.data {
            StationResponse::Applied { epoch } => {
                station.wake();
                return Ok((out, epoch));
            }
            StationResponse::Stale { .. } => continue,
            StationResponse::Rejected { reason } => return Err(Status::invalid_argument(reason)),
            StationResponse::Nothing => return Err(Status::internal("the station applied nothing")),
        }
    }
    Err(Status::unavailable("the map kept changing; retry"))
}

async fn commit_setting(station: &Station, name: &str, value: &str) -> Result<(SettingInfo, u64), Status> {
    commit_operator_change(station, |map, _| {
        let info = map.settings.clone().set(name, value).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let change = MapChange::Set { name: info.name.to_string(), value: info.value.clone() };
        Ok((change, format!("operator: radiantctl set {} {}", info.name, info.value), info))
    })
    .await
}

/// Sets a node's intent; `check` may refuse (remove's up-front checks).
async fn commit_intent(
    station: &Station,
    id: u64,
    intent: Intent,
    command: &str,
    check: impl Fn(&ClusterMap, &Observed) -> Result<(), String>,
) -> Result<pb::IntentResponse, Status> {
    let (_, epoch) = commit_operator_change(station, |map, obs| {
        let node =
            map.nodes.get(&id).ok_or_else(|| Status::invalid_argument(format!("no node {id} in this cluster")))?;
        if node.intent == Intent::Removed {
            return Err(Status::invalid_argument(format!("{} was removed", node.name)));
        }
        check(map, obs).map_err(Status::invalid_argument)?;
        let change = MapChange::SetIntent { id, intent };
        Ok((change, format!("operator: radiantctl {command} {}", node.name), ()))
    })
    .await?;
    Ok(pb::IntentResponse { epoch, ..intent_now(station, id) })
}

/// The map's epoch and the node's state as they are now.
fn intent_now(station: &Station, id: u64) -> pb::IntentResponse {
    station.view.with(|m| pb::IntentResponse {
        epoch: m.epoch,
        state: m.nodes.get(&id).map(|n| m.state(n).to_string()).unwrap_or_default(),
    })
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
                let (epoch, station_addrs, settings) = station.view.with(|m| {
                    let addrs = m.station.iter().filter_map(|id| m.nodes.get(id)).map(|n| n.addr.clone()).collect();
                    (m.epoch, addrs, m.settings.clone())
                });
                Ok(Response::new(pb::HeartbeatResponse {
                    epoch,
                    known,
                    station: station_addrs,
                    snapshot_rate_mib: settings.snapshot_rate_mib,
                    move_rate_mib: settings.move_rate_mib,
                }))
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
                // Linearizable: the entries of every change committed before this request.
                Self::linearizable_map(&station).await?;
                let filter = match body.about {
                    None => Filter::All,
                    Some(pb::events_request::About::Node(n)) => Filter::Node(n),
                    Some(pb::events_request::About::Order(o)) => Filter::Order(o),
                    Some(pb::events_request::About::Shard(s)) => Filter::Shard(s),
                };
                let entries = station
                    .view
                    .journal(&filter, body.after_epoch, body.limit as usize)
                    .map_err(|e| Status::internal(format!("reading the journal: {e}")))?
                    .into_iter()
                    .map(|e| pb::JournalEntry {
                        epoch: e.epoch,
                        at_unix_ms: e.at_unix_ms,
                        action: e.action,
                        reason: e.reason,
                        bondsmith: e.bondsmith,
                        seq: e.seq,
                        kind: e.kind,
                        outcome: e.outcome,
                        nodes: e.subjects.nodes.into_iter().collect(),
                        orders: e.subjects.orders.into_iter().collect(),
                        shards: e.subjects.shards.into_iter().collect(),
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

    async fn drain(&self, req: Request<pb::DrainRequest>) -> Result<Response<pb::IntentResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.drain(r).await }).await
            }
            Route::Local(station) => {
                let current = station.view.with(|m| m.nodes.get(&body.node_id).map(|n| n.intent));
                let (intent, command) =
                    if body.undrain { (Intent::Serve, "undrain") } else { (Intent::Drain, "drain") };
                if current == Some(intent) || (!body.undrain && current == Some(Intent::Remove)) {
                    return Ok(Response::new(intent_now(&station, body.node_id))); // already so
                }
                if body.undrain && current == Some(Intent::Remove) {
                    return Err(Status::invalid_argument("the node is being removed; a removal cannot be undone"));
                }
                Ok(Response::new(commit_intent(&station, body.node_id, intent, command, |_, _| Ok(())).await?))
            }
        }
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Result<Response<pb::IntentResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.remove(r).await }).await
            }
            Route::Local(station) => {
                let current = station.view.with(|m| m.nodes.get(&body.node_id).map(|n| n.intent));
                if matches!(current, Some(Intent::Remove | Intent::Removed)) {
                    return Ok(Response::new(intent_now(&station, body.node_id))); // already so
                }
                let id = body.node_id;
                let check = |map: &ClusterMap, obs: &Observed| crate::coordinator::can_remove(map, obs, id);
                Ok(Response::new(commit_intent(&station, id, Intent::Remove, "remove", check).await?))
            }
        }
    }

    async fn rebalance(&self, req: Request<pb::RebalanceRequest>) -> Result<Response<pb::RebalanceResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.rebalance(r).await }).await
            }
            Route::Local(station) => Ok(Response::new(rebalance_local(&station, body).await?)),
        }
    }

    async fn moves(&self, req: Request<pb::MovesRequest>) -> Result<Response<pb::MovesResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.moves(r).await }).await
            }
            Route::Local(station) => {
                StationApi::linearizable_map(&station).await?;
                Ok(Response::new(moves_local(&station)))
            }
        }
    }

    async fn reshard(&self, req: Request<pb::ReshardRequest>) -> Result<Response<pb::ReshardResponse>, Status> {
        let hops = hops(&req);
        let body = req.into_inner();
        match self.route(hops)? {
            Route::Remote(targets) => {
                self.forward(targets, hops, body, |mut c, r| async move { c.reshard(r).await }).await
            }
            Route::Local(station) => {
                let current = station.view.with(|m| (m.shards, m.reshard.clone()));
                if current.1.as_ref().is_some_and(|r| r.to == body.to) {
                    let epoch = station.view.with(|m| m.epoch);
                    return Ok(Response::new(pb::ReshardResponse { epoch, from: current.0, to: body.to }));
                }
                let (from, epoch) = commit_operator_change(&station, |map, _| {
                    let verb = if body.to > map.shards { "fracture" } else { "consolidate" };
                    let reason = format!("operator: radiantctl {verb} ({} to {} shards)", map.shards, body.to);
                    Ok((MapChange::BeginReshard { to: body.to }, reason, map.shards))
                })
                .await?;
                Ok(Response::new(pb::ReshardResponse { epoch, from, to: body.to }))
            }
        }
    }
}
