//! `radiantctl join --bondsmith A,B,C HOST...`: tell satellites to phone home.

use std::time::Duration;

use radiant_proto as pb;
use serde_json::json;
use tabled::Table;
use tabled::Tabled;
use tabled::settings::Style;

use crate::client;
use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::Spinner;
use crate::output::print_json;

/// What join was asked.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    /// Addresses through which the station is reached.
    pub bondsmith: Vec<String>,
    /// Hosts to join.
    pub hosts: Vec<String>,
    /// How long to wait.
    pub wait: Duration,
}

/// One host's outcome.
#[derive(Debug, Clone, Tabled)]
pub struct Joined {
    /// Host as given.
    #[tabled(rename = "HOST")]
    pub host: String,
    /// Node id.
    #[tabled(rename = "ID")]
    pub id: u64,
    /// Node name.
    #[tabled(rename = "NAME")]
    pub name: String,
    /// `joined` or `already joined`.
    #[tabled(rename = "RESULT")]
    pub result: String,
}

async fn phone_home_acknowledged(addr: &str) -> Result<Option<bool>> {
    let list = client::supervisor(addr)?
        .list(pb::ListRequest {})
        .await
        .map_err(|s| CtlError::from_status(addr, s))?
        .into_inner();
    Ok(list.services.iter().find(|s| s.name == "phone-home").map(|s| s.acknowledged))
}

/// Runs the join; returns one row per host.
pub async fn run(args: &JoinArgs) -> Result<Vec<Joined>> {
    if args.hosts.is_empty() {
        return Err(CtlError::Usage("no host to join".into()));
    }
    let spinner = Spinner::new("reading the cluster map");
    let map = client::wait_for(args.wait, || async {
        match client::get_map(&args.bondsmith).await {
            Ok(m) if !m.cluster_id.is_empty() => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await?;
    let station: Vec<String> =
        map.station.iter().filter_map(|id| map.nodes.iter().find(|n| n.id == *id).map(|n| n.addr.clone())).collect();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for host in &args.hosts {
        spinner.set(format!("waiting for radiantd at {host}"));
        let st = client::wait_for(args.wait, || async { client::node_status(host).await.map(Some) }).await?;
        if !st.cluster_id.is_empty() && st.cluster_id != map.cluster_id {
            return Err(CtlError::ClusterMismatch(format!(
                "cluster id mismatch: {host} belongs to cluster {}, the station runs cluster {}",
                st.cluster_id, map.cluster_id
            )));
        }
        let joined_in_map = map.nodes.iter().any(|n| n.id == st.id && n.state != "station");
        if joined_in_map && phone_home_acknowledged(host).await? == Some(true) {
            out.push(Joined { host: host.clone(), id: st.id, name: st.name, result: "already joined".into() });
            continue;
        }
        spinner.set(format!("spawning phone-home on {host}"));
        client::supervisor(host)?
            .spawn(pb::SpawnRequest {
                spec: Some(pb::ServiceSpec {
                    kind: Some(pb::service_spec::Kind::PhoneHome(pb::PhoneHomeSpec {
                        cluster_id: map.cluster_id.clone(),
                        station: station.clone(),
                    })),
                }),
            })
            .await
            .map_err(|s| CtlError::from_status(host, s))?;
        pending.push((host.clone(), st));
    }
    for (host, st) in pending {
        spinner.set(format!("waiting for the bondsmith to register {host}"));
        client::wait_for(args.wait, || async { Ok(phone_home_acknowledged(&host).await?.filter(|a| *a).map(|_| ())) })
            .await?;
        out.push(Joined { host, id: st.id, name: st.name, result: "joined".into() });
    }
    Ok(out)
}

/// Prints the outcome.
pub fn print(rows: &[Joined], output: Output) {
    match output {
        Output::Json => print_json(&json!(
            rows.iter()
                .map(|r| json!({"host": r.host, "id": r.id.to_string(), "name": r.name, "result": r.result}))
                .collect::<Vec<_>>()
        )),
        Output::Table => println!("{}", Table::new(rows).with(Style::sharp())),
    }
}
