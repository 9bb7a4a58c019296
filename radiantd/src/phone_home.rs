//! phone-home: a satellite tells the station it exists, again and again with jittered
//! backoff, until the coordinator acknowledges it; then it keeps sending heartbeats.
//!
//! The acknowledgement is persisted by the supervisor, so a restarted satellite goes straight
//! to heartbeats; if the bondsmith no longer knows it (`known == false`), it phones home again.
//! A station member does not phone home; [`station_member`] sends its heartbeats instead.

use std::sync::Arc;
use std::time::Duration;

use radiant_proto as pb;
use radiant_proto::station_client::StationClient;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::node::NodeContext;
use crate::spec::PhoneHomeSpec;
use crate::station::Station;
use crate::supervisor::ServiceCtx;
use crate::supervisor::ServiceFailure;

/// Capacity a node announces: free bytes of its data dir's file system, or 0 if unknown.
fn capacity(node: &NodeContext) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(node.host.config.data_dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut s) == 0 {
            (s.f_bavail as u64).saturating_mul(s.f_frsize as u64)
        } else {
            0
        }
    }
}

/// Jittered exponential backoff: `base * 2^min(attempt, 4)`, times a factor in [0.5, 1.5).
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempt.min(4));
    let factor: f64 = rand::rng().random_range(0.5..1.5);
    exp.mul_f64(factor)
}

/// Runs phone-home until cancelled.
pub async fn run(node: Arc<NodeContext>, mut spec: PhoneHomeSpec, svc: ServiceCtx) -> Result<(), ServiceFailure> {
    node.set_phone_home_targets(spec.station.clone());
    let timing = node.host.config.timing;
    let mut acknowledged = svc.acknowledged;
    let mut attempt: u32 = 0;
    let mut target = 0usize;
    loop {
        let addr = spec.station[target % spec.station.len()].clone();
        let outcome =
            if acknowledged { heartbeat(&node, &spec, &addr).await } else { announce(&node, &spec, &addr).await };
        let wait = match outcome {
            Ok(Reply::Acknowledged { epoch, station }) => {
                if !station.is_empty() && station != spec.station {
                    // The station changed members: phone them from now on, also after a restart.
                    tracing::info!(?station, "the station's members changed");
                    spec.station = station;
                    node.set_phone_home_targets(spec.station.clone());
                    svc.update_spec(crate::spec::ServiceSpec::PhoneHome(spec.clone()));
                }
                if !acknowledged {
                    tracing::info!(epoch, "phone-home acknowledged by the bondsmith");
                    svc.set_acknowledged(true);
                    acknowledged = true;
                }
                attempt = 0;
                timing.liveness_interval()
            }
            Ok(Reply::Unknown) => {
                tracing::info!("the bondsmith does not know this node; phoning home again");
                svc.set_acknowledged(false);
                acknowledged = false;
                Duration::ZERO
            }
            Ok(Reply::NotYet) => {
                attempt += 1;
                backoff(timing.phone_home_backoff, attempt)
            }
            Err(e) => {
                tracing::debug!("phone-home via {addr}: {e}");
                target += 1;
                attempt += 1;
                backoff(timing.phone_home_backoff, attempt)
            }
        };
        tokio::select! {
            _ = svc.cancel.cancelled() => {
                node.set_phone_home_targets(Vec::new());
                return Ok(());
            }
            _ = tokio::time::sleep(wait) => {}
            _ = node.host.report_requested(), if acknowledged => {}
        }
    }
}

enum Reply {
    Acknowledged { epoch: u64, station: Vec<String> },
    NotYet,
    Unknown,
}

async fn announce(node: &NodeContext, spec: &PhoneHomeSpec, addr: &str) -> Result<Reply, String> {
    let ch = node.host.peers.channel(addr).map_err(|e| e.to_string())?;
    let mut client = StationClient::new(ch);
    let mut req = tonic::Request::new(pb::NodeUpRequest {
        cluster_id: spec.cluster_id.clone(),
        node: Some(pb::Member {
            id: node.host.id,
            name: node.host.config.name.clone(),
            addr: node.host.config.advertise.clone(),
        }),
        capacity: capacity(node),
        incarnation: node.host.incarnation,
    });
    req.set_timeout(Duration::from_secs(10));
    let resp = client.node_up(req).await.map_err(|s| s.message().to_string())?.into_inner();
    Ok(if resp.acknowledged { Reply::Acknowledged { epoch: resp.epoch, station: vec![] } } else { Reply::NotYet })
}

async fn heartbeat(node: &NodeContext, spec: &PhoneHomeSpec, addr: &str) -> Result<Reply, String> {
    let ch = node.host.peers.channel(addr).map_err(|e| e.to_string())?;
    let mut client = StationClient::new(ch);
    let mut req = tonic::Request::new(node.heartbeat_request(&spec.cluster_id));
    req.set_timeout(node.host.config.timing.liveness_interval() * 2);
    let resp = client.heartbeat(req).await.map_err(|s| s.message().to_string())?.into_inner();
    node.host.peers.snapshot_rate().set_rate_mib(resp.snapshot_rate_mib);
    node.host.peers.move_rate().set_rate_mib(resp.move_rate_mib);
    node.map_epoch_seen(resp.epoch);
    Ok(if resp.known { Reply::Acknowledged { epoch: resp.epoch, station: resp.station } } else { Reply::Unknown })
}

/// A station member's own heartbeat: recorded locally when it is the bondsmith, sent to the
/// bondsmith otherwise.
pub async fn station_member(node: Arc<NodeContext>, station: Arc<Station>, stop: CancellationToken) {
    let interval = node.host.config.timing.liveness_interval();
    loop {
        let req = node.heartbeat_request(&station.spec.cluster_id);
        if station.is_bondsmith() {
            station.heartbeat(&req);
            let (snapshots, moves) = station.view.with(|m| (m.settings.snapshot_rate_mib, m.settings.move_rate_mib));
            node.host.peers.snapshot_rate().set_rate_mib(snapshots);
            node.host.peers.move_rate().set_rate_mib(moves);
        } else if let Some(b) = station.bondsmith()
            && let Ok(ch) = node.host.peers.channel(&b.addr)
        {
            let mut client = radiant_proto::station_client::StationClient::new(ch);
            let mut request = tonic::Request::new(req);
            request.set_timeout(interval);
            match client.heartbeat(request).await {
                Ok(r) => {
                    let r = r.into_inner();
                    node.host.peers.snapshot_rate().set_rate_mib(r.snapshot_rate_mib);
                    node.host.peers.move_rate().set_rate_mib(r.move_rate_mib);
                }
                Err(e) => tracing::debug!("heartbeat to bondsmith {} failed: {}", b.addr, e.message()),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = node.host.report_requested() => {}
        }
    }
}
