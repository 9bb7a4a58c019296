//! `status`, `nodes`, `events`: read the cluster map and the journal.

use radiant_proto as pb;
use serde_json::Value;
use serde_json::json;
use tabled::Table;
use tabled::Tabled;
use tabled::settings::Style;

use crate::client;
use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::print_json;

/// The map as the JSON documented in the README (node ids as decimal strings).
pub fn map_json(m: &pb::ClusterMap) -> Value {
    json!({
        "cluster_id": m.cluster_id,
        "epoch": m.epoch,
        "bondsmith": m.bondsmith.as_ref().map(|b| json!({"id": b.id.to_string(), "name": b.name, "addr": b.addr})),
        "station": m.station.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        "nodes": m.nodes.iter().map(|n| json!({
            "id": n.id.to_string(),
            "name": n.name,
            "addr": n.addr,
            "state": n.state,
            "roles": n.roles,
            "capacity": n.capacity,
        })).collect::<Vec<_>>(),
        "orders": m.orders.iter().map(|o| json!({
            "id": o.id,
            "members": o.members.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
            "herald": o.herald.map(|h| h.to_string()),
            "shards": o.shards,
            "learners": o.learners.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
            "replacing": o.replacing.map(|id| id.to_string()),
            "retired": o.retired.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "shards": {"total": m.shards_total, "assigned": m.shards_assigned, "moving": m.moves.len(),
                   "resharding_to": (m.resharding_to != 0).then_some(m.resharding_to)},
        "moves": m.moves.iter().map(crate::cmd::rebalance::move_json).collect::<Vec<_>>(),
        "replicas": m.replicas,
    })
}

#[derive(Tabled)]
struct NodeRow {
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "NAME")]
    name: String,
    #[tabled(rename = "ADDRESS")]
    addr: String,
    #[tabled(rename = "STATE")]
    state: String,
    #[tabled(rename = "ROLES")]
    roles: String,
}

fn node_table(m: &pb::ClusterMap) -> String {
    let rows = m.nodes.iter().map(|n| NodeRow {
        id: n.id.to_string(),
        name: n.name.clone(),
        addr: n.addr.clone(),
        state: n.state.clone(),
        roles: n.roles.join(","),
    });
    Table::new(rows).with(Style::sharp()).to_string()
}

#[derive(Tabled)]
struct OrderRow {
    #[tabled(rename = "ORDER")]
    id: u64,
    #[tabled(rename = "MEMBERS")]
    members: String,
    #[tabled(rename = "HERALD")]
    herald: String,
    #[tabled(rename = "SHARDS")]
    shards: u32,
}

fn name(m: &pb::ClusterMap, id: u64) -> String {
    m.nodes.iter().find(|n| n.id == id).map(|n| n.name.clone()).unwrap_or_else(|| id.to_string())
}

fn order_table(m: &pb::ClusterMap) -> String {
    let rows = m.orders.iter().map(|o| OrderRow {
        id: o.id,
        members: o.members.iter().map(|id| name(m, *id)).collect::<Vec<_>>().join(","),
        herald: o.herald.map(|h| name(m, h)).unwrap_or_else(|| "-".into()),
        shards: o.shards,
    });
    Table::new(rows).with(Style::sharp()).to_string()
}

/// `radiantctl orders`.
pub async fn orders(endpoint: &str, output: Output) -> Result<()> {
    let m = client::get_map(&[endpoint.to_string()]).await?;
    match output {
        Output::Json => print_json(&map_json(&m)["orders"]),
        Output::Table => println!("{}", order_table(&m)),
    }
    Ok(())
}

#[derive(Tabled)]
struct ShardRow {
    #[tabled(rename = "SHARD")]
    shard: usize,
    #[tabled(rename = "ORDER")]
    order: String,
    #[tabled(rename = "HERALD")]
    herald: String,
}

/// `radiantctl shards`.
pub async fn shards(endpoint: &str, output: Output) -> Result<()> {
    let m = client::get_map(&[endpoint.to_string()]).await?;
    let herald = |order: u64| m.orders.iter().find(|o| o.id == order).and_then(|o| o.herald).map(|h| name(&m, h));
    match output {
        Output::Json => print_json(&json!(
            m.shard_orders
                .iter()
                .enumerate()
                .map(|(s, o)| json!({"shard": s, "order": (*o != 0).then_some(*o), "herald": herald(*o)}))
                .collect::<Vec<_>>()
        )),
        Output::Table => {
            let rows = m.shard_orders.iter().enumerate().map(|(s, o)| ShardRow {
                shard: s,
                order: if *o == 0 { "-".into() } else { o.to_string() },
                herald: herald(*o).unwrap_or_else(|| "-".into()),
            });
            println!("{}", Table::new(rows).with(Style::sharp()));
        }
    }
    Ok(())
}

/// Prints the map as a summary and a node table.
pub fn print_status(m: &pb::ClusterMap) {
    println!("cluster   {}", m.cluster_id);
    println!("epoch     {}", m.epoch);
    match &m.bondsmith {
        Some(b) => println!("bondsmith {} ({}, id {})", b.name, b.addr, b.id),
        None => println!("bondsmith none (election in progress)"),
    }
    let station: Vec<String> = m
        .station
        .iter()
        .map(|id| m.nodes.iter().find(|n| n.id == *id).map(|n| n.name.clone()).unwrap_or_else(|| id.to_string()))
        .collect();
    println!("station   {}", station.join(", "));
    println!("shards    {} total, {} assigned; {} replicas per order", m.shards_total, m.shards_assigned, m.replicas);
    println!("{}", node_table(m));
    if !m.orders.is_empty() {
        println!("{}", order_table(m));
    }
}

/// `radiantctl status`.
pub async fn status(endpoint: &str, output: Output) -> Result<()> {
    let mut m = client::get_map(&[endpoint.to_string()]).await?;
    if !m.moves.is_empty() {
        // Only the bondsmith knows how far each destination has got.
        if let Ok(mut station) = client::station(endpoint)
            && let Ok(live) = station.moves(pb::MovesRequest {}).await
        {
            let live = live.into_inner();
            for mv in &mut m.moves {
                if let Some(l) = live.moves.iter().find(|l| l.shard == mv.shard && l.id == mv.id) {
                    mv.bytes_done = l.bytes_done;
                }
            }
        }
    }
    match output {
        Output::Json => print_json(&map_json(&m)),
        Output::Table => print_status(&m),
    }
    Ok(())
}

/// `radiantctl nodes`.
pub async fn nodes(endpoint: &str, output: Output) -> Result<()> {
    let m = client::get_map(&[endpoint.to_string()]).await?;
    match output {
        Output::Json => print_json(&map_json(&m)["nodes"]),
        Output::Table => println!("{}", node_table(&m)),
    }
    Ok(())
}

#[derive(Tabled)]
struct EventRow {
    #[tabled(rename = "EPOCH")]
    epoch: u64,
    #[tabled(rename = "TIME (UTC)")]
    time: String,
    #[tabled(rename = "ACTION")]
    action: String,
    #[tabled(rename = "REASON")]
    reason: String,
}

fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// What `events --explain` is asked about.
#[derive(Debug, Clone, Default)]
pub struct Explain {
    /// A node: name, id or address.
    pub node: Option<String>,
    /// An order (0: the station).
    pub order: Option<u64>,
    /// A shard.
    pub shard: Option<u32>,
}

/// `radiantctl events [--explain --node N | --order K | --shard S]`.
pub async fn events(endpoint: &str, output: Output, limit: u32, explain: Option<Explain>) -> Result<()> {
    let about = match &explain {
        None => None,
        Some(Explain { node: Some(n), .. }) => {
            let m = client::get_map(&[endpoint.to_string()]).await?;
            Some(pb::events_request::About::Node(crate::cmd::intent::resolve(&m, n)?.id))
        }
        Some(Explain { order: Some(o), .. }) => Some(pb::events_request::About::Order(*o)),
        Some(Explain { shard: Some(s), .. }) => Some(pb::events_request::About::Shard(*s)),
        Some(_) => return Err(CtlError::Usage("--explain needs --node, --order or --shard".into())),
    };
    // An explanation is the whole chain, not the last few entries.
    let limit = if about.is_some() { 0 } else { limit };
    let resp = client::station(endpoint)?
        .events(pb::EventsRequest { after_epoch: 0, limit, about })
        .await
        .map_err(|s| CtlError::from_status(endpoint, s))?
        .into_inner();
    match output {
        Output::Json => print_json(&json!(
            resp.entries
                .iter()
                .map(|e| json!({
                    "seq": e.seq,
                    "epoch": e.epoch,
                    "at_unix_ms": e.at_unix_ms,
                    "kind": e.kind,
                    "action": e.action,
                    "reason": e.reason,
                    "outcome": e.outcome,
                    "nodes": e.nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    "orders": e.orders,
                    "shards": e.shards,
                    "bondsmith": e.bondsmith.to_string(),
                }))
                .collect::<Vec<_>>()
        )),
        Output::Table => {
            let rows = resp.entries.iter().map(|e| EventRow {
                epoch: e.epoch,
                time: utc(e.at_unix_ms),
                action: e.action.clone(),
                reason: e.reason.clone(),
            });
            println!("{}", Table::new(rows).with(Style::sharp()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_795_000_000_123), "2026-11-18 11:06:40.123");
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let m = pb::ClusterMap {
            cluster_id: "c".into(),
            epoch: 3,
            bondsmith: Some(pb::Member { id: u64::MAX, name: "a".into(), addr: "h:1".into() }),
            station: vec![u64::MAX],
            nodes: vec![],
            orders: vec![pb::OrderInfo {
                id: 1,
                members: vec![u64::MAX],
                herald: None,
                shards: 64,
                ..Default::default()
            }],
            shards_total: 64,
            shards_assigned: 64,
            replicas: 3,
            ..Default::default()
        };
        let v = map_json(&m);
        assert_eq!(v["bondsmith"]["id"], "18446744073709551615");
        assert_eq!(v["station"][0], "18446744073709551615");
        assert_eq!(v["shards"]["total"], 64);
        assert_eq!(v["orders"][0]["members"][0], "18446744073709551615");
        assert!(v["orders"][0]["herald"].is_null());
        assert_eq!(v["shards"]["assigned"], 64);
    }
}
