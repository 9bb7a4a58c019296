//! The executor: runs on the bondsmith, feeds the planner, and carries out what it returns.
//!
//! Map changes are proposed through the station's log at the epoch they were planned at, one
//! at a time (each moves the epoch, so the plan is made again after each). A change the map
//! rejects does not block the ones behind it. Requests to supervisors and heralds run as
//! their own tasks, one per [`ActionKey`] at a time, and each is journaled when decided and
//! again with its outcome.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use radiant_proto as pb;
use tokio_util::sync::CancellationToken;

use super::Action;
use super::BootstrapPlan;
use super::HeraldCmd;
use super::IncomingReport;
use super::MembershipReport;
use super::Observed;
use super::ShardReport;
use super::ShardSize;
use super::action::MoveStep;
use super::plan;
use crate::identity::NodeId;
use crate::raft::network::Peers;
use crate::station::Station;
use crate::station::map::MapChange;
use crate::station::map::OrderId;
use crate::station::map::STATION;
use crate::station::map::StationCommand;
use crate::station::map::StationResponse;

/// How often the coordinator plans when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);

/// How long a leadership transfer may wait for its target to catch up and take over.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3);

/// Map changes tried per round when the first ones are rejected.
const COMMITS_PER_ROUND: usize = 4;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Observed {
    /// What a bondsmith knows before it has heard from anybody.
    pub fn new(me: NodeId, bootstrap: BootstrapPlan, limits: (u32, u32)) -> Self {
        Self {
            me,
            now_ms: 0,
            leader_since_ms: 0,
            bootstrap,
            limits,
            announced: Default::default(),
            last_seen: Default::default(),
            incarnations: Default::default(),
            replicas: Default::default(),
            heralds: Default::default(),
            recent: Default::default(),
            last_sent: Default::default(),
            shard_reports: Default::default(),
            memberships: Default::default(),
            learner_progress: Default::default(),
        }
    }

    /// Records a heartbeat and what it reports of the node's order replicas; returns whether
    /// that may call for an action.
    pub fn record_heartbeat(&mut self, id: NodeId, incarnation: u64, now: u64, reports: &[pb::ReplicaReport]) -> bool {
        let mut wake = self.incarnations.insert(id, incarnation) != Some(incarnation);
        self.last_seen.insert(id, now);
        let running: BTreeSet<OrderId> = reports.iter().map(|r| r.order_id).collect();
        if self.replicas.get(&id) != Some(&running) {
            self.replicas.insert(id, running);
            wake = true;
        }
        for r in reports.iter().filter(|r| r.herald) {
            let newer = self.heralds.get(&r.order_id).is_none_or(|(n, t)| r.term > *t || (r.term == *t && *n != id));
            if newer {
                self.heralds.insert(r.order_id, (id, r.term));
                wake = true;
            } else if self.heralds.get(&r.order_id).is_some_and(|(n, _)| *n != id) {
                continue; // a deposed herald's report
            }
            let shards = shard_report(r);
            if self.shard_reports.get(&r.order_id) != Some(&shards) {
                self.shard_reports.insert(r.order_id, shards);
                wake = true;
            }
            let membership = MembershipReport {
                voters: r.voters.iter().copied().collect(),
                learners: r.learners.iter().copied().collect(),
                joint: r.joint,
                matched: r.matched.iter().map(|(k, v)| (*k, *v)).collect(),
                last_log_index: r.last_log_index,
            };
            for l in &membership.learners {
                let matched = membership.matched.get(l).copied().unwrap_or(0);
                let e = self.learner_progress.entry((r.order_id, *l)).or_insert((matched, now));
                if e.0 != matched {
                    *e = (matched, now);
                }
            }
            self.learner_progress.retain(|(o, l), _| *o != r.order_id || membership.learners.contains(l));
            if self.memberships.get(&r.order_id) != Some(&membership) {
                self.memberships.insert(r.order_id, membership);
                wake = true;
            }
        }
        wake
    }
}

/// A herald's report on its shards, in the planner's terms.
fn shard_report(r: &pb::ReplicaReport) -> ShardReport {
    let mut report = ShardReport {
        owned: r.owned.iter().copied().collect(),
        nonempty: r.nonempty.iter().copied().collect(),
        sizes: r.stats.iter().map(|s| (s.shard, ShardSize { keys: s.keys, bytes: s.bytes })).collect(),
        modulus: (r.modulus != 0).then_some(r.modulus),
        ..Default::default()
    };
    for m in &r.moves {
        if m.incoming {
            let i = IncomingReport {
                move_id: m.move_id,
                sealed: m.sealed,
                pulling: m.pulling,
                converged: m.converged,
                bytes_done: m.bytes_done,
            };
            report.incoming.insert(m.shard, i);
        } else {
            report.tracking.insert(m.shard, m.move_id);
        }
    }
    report
}

enum Commit {
    /// The map moved (applied, or stale: another change got there first).
    Moved,
    /// The change does not fit the map.
    Rejected,
    /// The station could not commit (leadership lost).
    Failed,
}

async fn propose(station: &Station, expected_epoch: u64, change: MapChange, reason: String) -> Commit {
    let cmd = StationCommand { expected_epoch, at_unix_ms: unix_ms(), by: station.me(), change, reason };
    tracing::info!(epoch = expected_epoch, "recovery action: {cmd}");
    match station.raft.client_write(cmd).await {
        Ok(resp) => match resp.data {
            StationResponse::Applied { .. } | StationResponse::Stale { .. } => Commit::Moved,
            StationResponse::Rejected { reason } => {
                tracing::warn!("recovery action rejected: {reason}");
                Commit::Rejected
            }
            StationResponse::Nothing => Commit::Moved,
        },
        Err(e) => {
            tracing::warn!("recovery action not committed: {e}");
            Commit::Failed
        }
    }
}

/// Journals an I/O action's decision or outcome (best effort: a bondsmith that lost its
/// leadership cannot, and its successor decides again).
async fn record(station: &Station, action: &Action, outcome: String) {
    let change = MapChange::Record {
        kind: action.kind().to_string(),
        action: action.to_string(),
        outcome,
        subjects: action.subjects(),
    };
    let _ = propose(station, 0, change, action.reason().to_string()).await;
}

/// The reconcile loop: plan, execute, plan again; on every event and tick.
pub async fn coordinator_loop(station: Arc<Station>, peers: Peers, stop: CancellationToken) {
    loop {
        let map = station.view.map();
        let observed = station.observations();
        let mut moved = false;
        let mut tried = 0;
        for action in plan(&map, &observed) {
            match action {
                Action::Commit { change, reason } => {
                    if moved || tried >= COMMITS_PER_ROUND {
                        continue;
                    }
                    tried += 1;
                    let kind = change.kind();
                    match propose(&station, map.epoch, change, reason).await {
                        Commit::Moved => {
                            // The change is in the station's log; its side effects are not.
                            crate::failpoints::step(&format!("recovery-{kind}-after")).await;
                            moved = true
                        }
                        Commit::Rejected => {}
                        Commit::Failed => tried = COMMITS_PER_ROUND,
                    }
                }
                io => {
                    let Some(key) = io.key() else { continue };
                    {
                        let mut o = station.observed_mut();
                        o.recent.insert(key, u64::MAX);
                        o.last_sent.insert(key, io.fingerprint());
                    }
                    let (station, peers) = (station.clone(), peers.clone());
                    tokio::spawn(async move {
                        record(&station, &io, "decided".into()).await;
                        crate::failpoints::step(&format!("recovery-{}-before", io.kind())).await;
                        let result = execute(&station, &peers, &io).await;
                        crate::failpoints::step(&format!("recovery-{}-after", io.kind())).await;
                        let outcome = match result {
                            Ok(()) => "done".to_string(),
                            Err(e) => {
                                tracing::warn!("recovery action failed: {io}: {e}");
                                format!("failed: {e}")
                            }
                        };
                        let now = station.now_ms();
                        station.observed_mut().recent.insert(key, now);
                        record(&station, &io, outcome).await;
                        station.wake();
                    });
                }
            }
        }
        if stop.is_cancelled() {
            return;
        }
        if moved {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = station.woken() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

fn request<T>(body: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.set_timeout(timeout);
    r
}

/// Carries out one I/O action.
async fn execute(station: &Station, peers: &Peers, action: &Action) -> Result<(), String> {
    let cluster_id = station.spec.cluster_id.clone();
    let status = |s: tonic::Status| s.message().to_string();
    match action {
        Action::Commit { .. } => Ok(()),
        Action::StartReplica { node, order, members, initialize, .. } => {
            let members = members.iter().map(crate::spec::member_to_proto).collect();
            let kind = if *order == STATION {
                let s = &station.spec;
                pb::service_spec::Kind::Station(pb::StationSpec {
                    cluster_id,
                    members,
                    shards: s.shards,
                    replicas: s.replicas,
                    max_key_bytes: s.max_key_bytes,
                    max_value_bytes: s.max_value_bytes,
                    join: !*initialize,
                })
            } else {
                pb::service_spec::Kind::OrderReplica(pb::OrderSpec {
                    cluster_id,
                    order_id: *order,
                    members,
                    initialize: *initialize,
                })
            };
            let spec = pb::ServiceSpec { kind: Some(kind) };
            let ch = peers.channel(&node.addr).map_err(|e| e.to_string())?;
            let req = request(pb::SpawnRequest { spec: Some(spec) }, Duration::from_secs(5));
            pb::supervisor_client::SupervisorClient::new(ch).spawn(req).await.map_err(status)?;
            Ok(())
        }
        Action::RetireReplica { node, order, .. } => {
            let ch = peers.channel(&node.addr).map_err(|e| e.to_string())?;
            let req = request(pb::RetireRequest { cluster_id, order_id: *order }, Duration::from_secs(10));
            pb::supervisor_client::SupervisorClient::new(ch).retire(req).await.map_err(status)?;
            Ok(())
        }
        Action::StopServices { node, .. } => {
            let ch = peers.channel(&node.addr).map_err(|e| e.to_string())?;
            let mut client = pb::supervisor_client::SupervisorClient::new(ch);
            let listed = client.list(request(pb::ListRequest {}, Duration::from_secs(5))).await.map_err(status)?;
            for service in listed.into_inner().services {
                client
                    .stop(request(pb::StopRequest { name: service.name }, Duration::from_secs(15)))
                    .await
                    .map_err(status)?;
            }
            Ok(())
        }
        Action::Herald { order: STATION, cmd, .. } => {
            // The station's leader is this bondsmith: change its own group.
            reconfigure_station(&station.raft, cmd).await
        }
        Action::Herald { order, herald, cmd, .. } => {
            let change = match cmd {
                HeraldCmd::AddLearner(n) => {
                    pb::reconfigure_request::Change::AddLearner(crate::spec::member_to_proto(n))
                }
                HeraldCmd::SetVoters(v) => {
                    pb::reconfigure_request::Change::SetVoters(pb::VoterSet { voters: v.clone() })
                }
                HeraldCmd::RemoveLearner(n) => pb::reconfigure_request::Change::RemoveLearner(*n),
                HeraldCmd::TransferLeader(n) => pb::reconfigure_request::Change::TransferLeader(*n),
                HeraldCmd::Shards { acquire, release, epoch } => {
                    pb::reconfigure_request::Change::Shards(pb::ShardChange {
                        acquire: acquire.clone(),
                        release: release.clone(),
                        epoch: *epoch,
                    })
                }
                HeraldCmd::Reshard { from, to } => {
                    pb::reconfigure_request::Change::Reshard(pb::ReshardStep { from: *from, to: *to })
                }
                HeraldCmd::Move { step, shard, move_id } => {
                    use pb::move_step::Kind;
                    let (kind, from_order, source_addrs) = match step {
                        MoveStep::Track => (Kind::Track, 0, vec![]),
                        MoveStep::Untrack => (Kind::Untrack, 0, vec![]),
                        MoveStep::Drop => (Kind::Drop, 0, vec![]),
                        MoveStep::Pull { from, addrs } => (Kind::Pull, *from, addrs.clone()),
                    };
                    pb::reconfigure_request::Change::MoveStep(pb::MoveStep {
                        kind: kind as i32,
                        shard: *shard,
                        move_id: *move_id,
                        from_order,
                        source_addrs,
                    })
                }
            };
            let ch = peers.channel(&herald.addr).map_err(|e| e.to_string())?;
            let req = request(
                pb::ReconfigureRequest { cluster_id, order_id: *order, change: Some(change) },
                Duration::from_secs(30),
            );
            pb::herald_client::HeraldClient::new(ch).reconfigure(req).await.map_err(status)?;
            Ok(())
        }
    }
}

/// A membership command on the station's own group, which this bondsmith leads.
async fn reconfigure_station(raft: &crate::station::state_machine::StationRaft, cmd: &HeraldCmd) -> Result<(), String> {
    use openraft::BasicNode;
    use openraft::ChangeMembers;
    let result = match cmd {
        // Non-blocking, as on heralds: catch-up is judged from the reports, with a deadline.
        HeraldCmd::AddLearner(m) => raft.add_learner(m.id, BasicNode::new(&m.addr), false).await.map(|_| ()),
        HeraldCmd::SetVoters(v) => {
            let voters: BTreeSet<NodeId> = v.iter().copied().collect();
            raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false).await.map(|_| ())
        }
        HeraldCmd::RemoveLearner(id) => {
            raft.change_membership(ChangeMembers::RemoveNodes([*id].into_iter().collect()), false).await.map(|_| ())
        }
        HeraldCmd::TransferLeader(to) => return crate::raft::transfer_leadership(raft, *to, TRANSFER_TIMEOUT).await,
        HeraldCmd::Shards { .. } | HeraldCmd::Move { .. } | HeraldCmd::Reshard { .. } => {
            return Err("the station serves no shards".into());
        }
    };
    result.map_err(|e| e.to_string())
}
