//! `drain`, `undrain` and `remove`: an operator's intent for a node, carried out by the
//! bondsmith as recovery actions. The command waits, with a progress line on a terminal, until
//! the intent is fulfilled (`--no-wait` returns at once); Ctrl-C stops the watching, not the
//! change.

use std::time::Duration;

use radiant_proto as pb;
use serde_json::json;

use crate::client;
use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::Spinner;
use crate::output::print_json;

/// What to ask of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Lead nothing.
    Drain,
    /// Serve again.
    Undrain,
    /// Give every place away, then stop.
    Remove,
}

impl Ask {
    fn verb(self) -> &'static str {
        match self {
            Ask::Drain => "drain",
            Ask::Undrain => "undrain",
            Ask::Remove => "remove",
        }
    }
}

/// Finds a node by name, id or address.
pub fn resolve<'a>(m: &'a pb::ClusterMap, node: &str) -> Result<&'a pb::NodeInfo> {
    m.nodes.iter().find(|n| n.name == node || n.addr == node || n.id.to_string() == node).ok_or_else(|| {
        CtlError::Invalid(format!("no node {node:?} in this cluster (give a name, an id or an address)"))
    })
}

/// Where the node stands, in a few words, and whether the intent is fulfilled.
fn progress(m: &pb::ClusterMap, id: u64, ask: Ask) -> (String, bool) {
    let Some(n) = m.nodes.iter().find(|n| n.id == id) else { return ("gone from the map".into(), false) };
    let leads: Vec<&str> = n.roles.iter().map(String::as_str).filter(|r| *r == "herald" || *r == "bondsmith").collect();
    let places = m.orders.iter().filter(|o| o.members.contains(&id) || o.learners.contains(&id)).count()
        + usize::from(m.station.contains(&id));
    let done = match ask {
        Ask::Drain => n.state == "draining" && leads.is_empty(),
        Ask::Undrain => n.state != "draining",
        Ask::Remove => n.state == "removed",
    };
    let leads = if leads.is_empty() { "leads nothing".to_string() } else { format!("still {}", leads.join(" and ")) };
    (format!("{}: {}, {leads}, {places} place(s) held", n.name, n.state), done)
}

/// Runs `drain`, `undrain` or `remove`.
pub async fn run(endpoint: &str, output: Output, node: &str, ask: Ask, wait: Option<Duration>) -> Result<()> {
    let m = client::get_map(&[endpoint.to_string()]).await?;
    let target = resolve(&m, node)?;
    let (id, name) = (target.id, target.name.clone());
    let mut station = client::station(endpoint)?;
    let resp = match ask {
        Ask::Drain | Ask::Undrain => {
            station.drain(pb::DrainRequest { node_id: id, undrain: ask == Ask::Undrain }).await
        }
        Ask::Remove => station.remove(pb::RemoveRequest { node_id: id }).await,
    }
    .map_err(|s| CtlError::from_status(endpoint, s))?
    .into_inner();
    let mut last = format!("{name}: {}", resp.state);
    if let Some(wait) = wait {
        let spinner = Spinner::new(format!("{} {name}", ask.verb()));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = client::get_map(&[endpoint.to_string()]).await?;
            let (line, done) = progress(&m, id, ask);
            spinner.set(line.clone());
            last = line;
            if done {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CtlError::Unavailable(format!(
                    "{} {name} is under way but not done after {}s ({last}); it goes on; watch with `radiantctl nodes`",
                    ask.verb(),
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    match output {
        Output::Json => print_json(&json!({"node": id.to_string(), "name": name, "epoch": resp.epoch, "status": last})),
        Output::Table => println!("{last}"),
    }
    Ok(())
}
