//! `radiantctl bootstrap --station A,B,C`: turn a few radiants into the station.
//!
//! Idempotent and resumable: if the hosts already run this station, it reports the existing
//! cluster id; if an earlier bootstrap stopped half-way, it finishes it with the same spec;
//! if a host belongs to another cluster, it refuses and names both cluster ids.

use std::collections::BTreeSet;
use std::time::Duration;

use radiant_proto as pb;
use serde_json::json;

use crate::client;
use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::Spinner;
use crate::output::print_json;

/// What bootstrap was asked.
#[derive(Debug, Clone)]
pub struct BootstrapArgs {
    /// Station hosts.
    pub station: Vec<String>,
    /// Shard count.
    pub shards: u32,
    /// Replicas per order.
    pub replicas: u32,
    /// Kv key limit in bytes.
    pub max_key_bytes: u32,
    /// Kv value limit in bytes.
    pub max_value_bytes: u32,
    /// How long to wait for the hosts and for a bondsmith.
    pub wait: Duration,
}

/// What bootstrap did.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    /// The cluster id.
    pub cluster_id: String,
    /// Whether this run created the cluster (false: it existed).
    pub created: bool,
    /// The map once a bondsmith runs.
    pub map: pb::ClusterMap,
}

fn new_cluster_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| CtlError::Failed(format!("cannot read /dev/urandom for a cluster id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn station_spec_of(addr: &str) -> Result<Option<pb::StationSpec>> {
    let list = client::supervisor(addr)?
        .list(pb::ListRequest {})
        .await
        .map_err(|s| CtlError::from_status(addr, s))?
        .into_inner();
    Ok(list.services.into_iter().find_map(|s| match s.spec.and_then(|s| s.kind) {
        Some(pb::service_spec::Kind::Station(st)) => Some(st),
        _ => None,
    }))
}

/// Runs the bootstrap.
pub async fn run(args: &BootstrapArgs) -> Result<Bootstrapped> {
    if ![1, 3, 5].contains(&args.station.len()) {
        return Err(CtlError::Usage(format!("a station has 1, 3 or 5 members, {} given", args.station.len())));
    }
    if args.station.iter().collect::<BTreeSet<_>>().len() != args.station.len() {
        return Err(CtlError::Usage("station hosts must be distinct".into()));
    }
    if args.shards == 0 || args.shards > 65_536 {
        return Err(CtlError::Usage(format!("--shards must be 1..=65536, not {}", args.shards)));
    }
    if args.replicas == 0 || args.replicas > 7 {
        return Err(CtlError::Usage(format!("--replicas must be 1..=7, not {}", args.replicas)));
    }
    if args.max_key_bytes == 0 || args.max_value_bytes == 0 || args.max_value_bytes > 3 * 1024 * 1024 {
        return Err(CtlError::Usage("--max-key-bytes must be above 0 and --max-value-bytes within 1..=3 MiB".into()));
    }
    let spinner = Spinner::new("contacting station hosts");
    let mut hosts = Vec::new();
    for addr in &args.station {
        spinner.set(format!("waiting for radiantd at {addr}"));
        let st = client::wait_for(args.wait, || async { client::node_status(addr).await.map(Some) }).await?;
        hosts.push((addr.clone(), st));
    }

    let clusters: BTreeSet<&str> = hosts.iter().map(|(_, s)| s.cluster_id.as_str()).filter(|c| !c.is_empty()).collect();
    let wanted: BTreeSet<u64> = hosts.iter().map(|(_, s)| s.id).collect();
    if wanted.len() != hosts.len() {
        return Err(CtlError::Usage("two station addresses reach the same node".into()));
    }
    let (cluster_id, created, spec) = match clusters.len() {
        0 => {
            let spec = pb::StationSpec {
                cluster_id: new_cluster_id()?,
                members: hosts
                    .iter()
                    .map(|(_, s)| pb::Member { id: s.id, name: s.name.clone(), addr: s.addr.clone() })
                    .collect(),
                shards: args.shards,
                replicas: args.replicas,
                max_key_bytes: args.max_key_bytes,
                max_value_bytes: args.max_value_bytes,
                join: false,
            };
            (spec.cluster_id.clone(), true, spec)
        }
        1 => {
            let existing = clusters.iter().next().map(|c| c.to_string()).unwrap_or_default();
            let mut found = None;
            for (addr, s) in &hosts {
                if s.cluster_id.is_empty() {
                    continue;
                }
                match station_spec_of(addr).await? {
                    Some(spec) if spec.members.iter().map(|m| m.id).collect::<BTreeSet<_>>() == wanted => {
                        found = Some(spec)
                    }
                    _ => {
                        return Err(CtlError::ClusterMismatch(format!(
                            "{addr} already belongs to cluster {existing}, but not as a member of this station; \
                             a new cluster cannot be bootstrapped on it"
                        )));
                    }
                }
            }
            let spec = found.ok_or_else(|| CtlError::Failed("no station spec found".into()))?;
            (existing, false, spec)
        }
        _ => {
            let ids: Vec<String> = hosts
                .iter()
                .filter(|(_, s)| !s.cluster_id.is_empty())
                .map(|(a, s)| format!("{a} is in cluster {}", s.cluster_id))
                .collect();
            return Err(CtlError::ClusterMismatch(format!(
                "cluster id mismatch: station hosts belong to different clusters ({})",
                ids.join(", ")
            )));
        }
    };

    for (addr, _) in &hosts {
        spinner.set(format!("spawning the station on {addr}"));
        client::supervisor(addr)?
            .spawn(pb::SpawnRequest {
                spec: Some(pb::ServiceSpec { kind: Some(pb::service_spec::Kind::Station(spec.clone())) }),
            })
            .await
            .map_err(|s| CtlError::from_status(addr, s))?;
    }
    spinner.set("waiting for the station to elect a bondsmith");
    let map = client::wait_for(args.wait, || async {
        match client::get_map(&args.station).await {
            Ok(m) if m.bondsmith.is_some() && m.cluster_id == cluster_id => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await?;
    Ok(Bootstrapped { cluster_id, created, map })
}

/// Prints the outcome.
pub fn print(b: &Bootstrapped, output: Output) {
    let bondsmith = b.map.bondsmith.clone().unwrap_or_default();
    match output {
        Output::Json => print_json(&json!({
            "cluster_id": b.cluster_id,
            "created": b.created,
            "epoch": b.map.epoch,
            "bondsmith": {"id": bondsmith.id.to_string(), "name": bondsmith.name, "addr": bondsmith.addr},
            "station": b.map.station.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        })),
        Output::Table => {
            if b.created {
                println!("cluster {} bootstrapped", b.cluster_id);
            } else {
                println!("cluster {} already bootstrapped; nothing to do", b.cluster_id);
            }
            println!("bondsmith {} ({})", bondsmith.name, bondsmith.addr);
        }
    }
}
