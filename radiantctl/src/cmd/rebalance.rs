//! `rebalance` and `moves`: the bondsmith plans a balanced placement from its heralds' reports
//! (order shard counts differ by at most one, fewest bytes moved) and carries it out as shard
//! moves with their data. `--dry-run` shows the plan and changes nothing; otherwise the command
//! follows the moves with a progress display on a terminal until they are done, and Ctrl-C
//! stops the watching, not the moving (`radiantctl moves` picks it up again).

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::MultiProgress;
use indicatif::ProgressBar;
use indicatif::ProgressStyle;
use radiant_proto as pb;
use serde_json::json;
use tabled::Table;
use tabled::Tabled;
use tabled::settings::Style;

use crate::client;
use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::print_json;

#[derive(Tabled)]
struct PlanRow {
    #[tabled(rename = "SHARD")]
    shard: u32,
    #[tabled(rename = "FROM")]
    from: String,
    #[tabled(rename = "TO")]
    to: String,
    #[tabled(rename = "KEYS")]
    keys: u64,
    #[tabled(rename = "BYTES")]
    bytes: String,
    #[tabled(rename = "ETA")]
    eta: String,
}

#[derive(Tabled)]
struct MoveRow {
    #[tabled(rename = "SHARD")]
    shard: u32,
    #[tabled(rename = "FROM")]
    from: String,
    #[tabled(rename = "TO")]
    to: String,
    #[tabled(rename = "PHASE")]
    phase: String,
    #[tabled(rename = "DONE")]
    done: String,
}

/// Bytes for people: `1.5 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn plan_json(r: &pb::RebalanceResponse) -> serde_json::Value {
    let moves: Vec<serde_json::Value> = r
        .moves
        .iter()
        .map(|m| {
            json!({"shard": m.shard, "from": m.from, "to": m.to, "keys": m.keys, "bytes": m.bytes,
                   "eta_s": round(m.eta_s)})
        })
        .collect();
    json!({"epoch": r.epoch, "moves": moves, "total_bytes": r.total_bytes, "eta_s": round(r.eta_s)})
}

fn round(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

fn print_plan(r: &pb::RebalanceResponse, output: Output, dry_run: bool) {
    match output {
        Output::Json => print_json(&plan_json(r)),
        Output::Table => {
            if r.moves.is_empty() {
                println!("balanced: nothing to move (map epoch {})", r.epoch);
                return;
            }
            let rows = r.moves.iter().map(|m| PlanRow {
                shard: m.shard,
                from: format!("order {}", m.from),
                to: format!("order {}", m.to),
                keys: m.keys,
                bytes: human_bytes(m.bytes),
                eta: format!("{:.1}s", m.eta_s),
            });
            println!("{}", Table::new(rows).with(Style::blank()));
            let verb = if dry_run { "would move" } else { "moving" };
            println!(
                "{verb} {} shards, {} in all, about {:.1}s at the current move_rate_mib (map epoch {})",
                r.moves.len(),
                human_bytes(r.total_bytes),
                r.eta_s,
                r.epoch
            );
        }
    }
}

/// `radiantctl rebalance [--dry-run | --cancel] [--no-wait]`.
pub async fn rebalance(
    endpoint: &str,
    output: Output,
    dry_run: bool,
    cancel: bool,
    wait: Option<Duration>,
) -> Result<()> {
    let resp = client::station(endpoint)?
        .rebalance(pb::RebalanceRequest { dry_run, cancel })
        .await
        .map_err(|s| CtlError::from_status(endpoint, s))?
        .into_inner();
    if cancel {
        match output {
            Output::Json => print_json(&json!({"epoch": resp.epoch, "cancelled": resp.cancelled})),
            Output::Table => println!(
                "cancelled {} moves (queued, or not switched yet); switched ones finish (map epoch {})",
                resp.cancelled, resp.epoch
            ),
        }
        return Ok(());
    }
    if dry_run || resp.moves.is_empty() {
        print_plan(&resp, output, dry_run);
        return Ok(());
    }
    if output == Output::Table {
        print_plan(&resp, output, false);
    }
    let shards: Vec<u32> = resp.moves.iter().map(|m| m.shard).collect();
    if let Some(wait) = wait {
        follow(endpoint, &shards, resp.total_bytes, wait).await?;
    }
    if output == Output::Json {
        print_json(&plan_json(&resp));
    } else if wait.is_some() {
        println!("rebalanced: {} shards moved", shards.len());
    }
    Ok(())
}

/// Follows the moves of `shards` until none is queued or under way: one bar for the bytes
/// over all, one line per active move.
async fn follow(endpoint: &str, shards: &[u32], total_bytes: u64, wait: Duration) -> Result<()> {
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(total_bytes.max(1)));
    overall.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut lines: BTreeMap<u32, ProgressBar> = BTreeMap::new();
    let mut finished_bytes: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut station = client::station(endpoint)?;
    loop {
        let m = station.moves(pb::MovesRequest {}).await.map_err(|s| CtlError::from_status(endpoint, s))?.into_inner();
        let active: BTreeMap<u32, &pb::MoveInfo> =
            m.moves.iter().filter(|mv| shards.contains(&mv.shard)).map(|mv| (mv.shard, mv)).collect();
        let queued = m.queued.iter().filter(|q| shards.contains(&q.shard)).count();
        for s in shards {
            if let Some(mv) = active.get(s) {
                finished_bytes.insert(*s, mv.bytes_done.min(mv.bytes_total));
            } else if queued == 0 || !m.queued.iter().any(|q| q.shard == *s) {
                // Not queued and not under way: done (or cancelled).
                let total = finished_bytes.get(s).copied().unwrap_or(0);
                finished_bytes.insert(*s, total.max(1).max(total));
            }
        }
        for (s, mv) in &active {
            let line = lines.entry(*s).or_insert_with(|| {
                let pb = multi.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template("  {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb
            });
            line.set_message(format!(
                "shard {s}: order {} -> order {}, {}, {}/{}",
                mv.from,
                mv.to,
                mv.phase,
                human_bytes(mv.bytes_done),
                human_bytes(mv.bytes_total)
            ));
        }
        for (s, line) in std::mem::take(&mut lines) {
            if active.contains_key(&s) {
                lines.insert(s, line);
            } else {
                line.finish_and_clear();
            }
        }
        overall.set_position(finished_bytes.values().sum::<u64>().min(total_bytes));
        overall.set_message(format!("{} moving, {queued} queued", active.len()));
        if active.is_empty() && queued == 0 {
            overall.finish_and_clear();
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            overall.finish_and_clear();
            return Err(CtlError::Unavailable(format!(
                "the rebalance is under way but not done after {}s ({} moving, {queued} queued); it goes on; \
                 watch with `radiantctl moves`",
                wait.as_secs(),
                active.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `radiantctl moves`: the moves under way and queued.
pub async fn moves(endpoint: &str, output: Output) -> Result<()> {
    let m = client::station(endpoint)?
        .moves(pb::MovesRequest {})
        .await
        .map_err(|s| CtlError::from_status(endpoint, s))?
        .into_inner();
    match output {
        Output::Json => {
            let moves: Vec<serde_json::Value> = m.moves.iter().map(move_json).collect();
            let queued: Vec<serde_json::Value> = m
                .queued
                .iter()
                .map(|q| json!({"shard": q.shard, "from": q.from, "to": q.to, "keys": q.keys, "bytes": q.bytes}))
                .collect();
            print_json(&json!({"epoch": m.epoch, "moves": moves, "queued": queued}));
        }
        Output::Table => {
            if m.moves.is_empty() && m.queued.is_empty() {
                println!("no shard is moving (map epoch {})", m.epoch);
                return Ok(());
            }
            let rows = m.moves.iter().map(|mv| MoveRow {
                shard: mv.shard,
                from: format!("order {}", mv.from),
                to: format!("order {}", mv.to),
                phase: mv.phase.clone(),
                done: format!("{}/{}", human_bytes(mv.bytes_done), human_bytes(mv.bytes_total)),
            });
            println!("{}", Table::new(rows).with(Style::blank()));
            if !m.queued.is_empty() {
                let bytes: u64 = m.queued.iter().map(|q| q.bytes).sum();
                println!("{} more queued ({})", m.queued.len(), human_bytes(bytes));
            }
        }
    }
    Ok(())
}

/// A move as `moves` and `status` print it in JSON.
pub fn move_json(mv: &pb::MoveInfo) -> serde_json::Value {
    json!({"shard": mv.shard, "from": mv.from, "to": mv.to, "phase": mv.phase,
           "bytes_done": mv.bytes_done, "bytes_total": mv.bytes_total})
}

/// `radiantctl fracture` (double the shard count) and `consolidate` (halve it): no data
/// crosses orders for a fracture; a consolidation first moves siblings onto one order. Waits,
/// with a progress line on a terminal, until the map has the new count.
pub async fn reshard(endpoint: &str, output: Output, double: bool, wait: Option<Duration>) -> Result<()> {
    let m = client::get_map(&[endpoint.to_string()]).await?;
    let to = match (m.resharding_to, double) {
        (0, true) => m.shards_total * 2,
        (0, false) => m.shards_total / 2,
        (to, _) => to, // already under way: follow it
    };
    let resp = client::station(endpoint)?
        .reshard(pb::ReshardRequest { to })
        .await
        .map_err(|s| CtlError::from_status(endpoint, s))?
        .into_inner();
    if let Some(wait) = wait {
        let spinner = crate::output::Spinner::new(format!("{} to {to} shards", resp.from));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = client::get_map(&[endpoint.to_string()]).await?;
            if m.shards_total == to && m.resharding_to == 0 {
                break;
            }
            spinner.set(format!(
                "{} to {to} shards: {} moves under way, {} queued",
                resp.from,
                m.moves.len(),
                m.moves_queued
            ));
            if tokio::time::Instant::now() >= deadline {
                return Err(CtlError::Unavailable(format!(
                    "the shard count is changing to {to} but not done after {}s; it goes on; watch with `radiantctl status`",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    match output {
        Output::Json => print_json(&json!({"epoch": resp.epoch, "from": resp.from, "to": to})),
        Output::Table => println!("{} shards -> {to} shards", resp.from),
    }
    Ok(())
}
