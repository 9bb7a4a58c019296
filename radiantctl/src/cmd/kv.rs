//! `put`, `get`, `del`, `scan`: the data path from the command line.

use radiant_client::Client;
use radiant_client::ClientError;
use radiant_client::Options;
use serde_json::json;
use tabled::Table;
use tabled::Tabled;
use tabled::settings::Style;

use crate::error::CtlError;
use crate::error::Result;
use crate::output::Output;
use crate::output::print_json;

/// A client for the cluster behind `endpoint`.
pub fn client(endpoint: &str) -> Client {
    Client::new(vec![endpoint.to_string()], Options::default())
}

fn err(e: ClientError) -> CtlError {
    match e {
        ClientError::Invalid(m) => CtlError::Invalid(m),
        ClientError::Unavailable(m) => CtlError::Unavailable(m),
        e @ ClientError::ShardCountChanged(_) => CtlError::Unavailable(e.to_string()),
        e @ ClientError::Unknown(_) => CtlError::OutcomeUnknown(e.to_string()),
        ClientError::Failed(m) => CtlError::Failed(m),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `radiantctl put KEY VALUE`: exits 0 only once the write is acknowledged.
pub async fn put(endpoint: &str, output: Output, key: &str, value: &str) -> Result<()> {
    client(endpoint).put(key.as_bytes(), value.as_bytes()).await.map_err(err)?;
    match output {
        Output::Json => print_json(&json!({"key": key, "ok": true})),
        Output::Table => println!("OK"),
    }
    Ok(())
}

/// `radiantctl get KEY [--stale]`.
pub async fn get(endpoint: &str, output: Output, key: &str, stale: bool) -> Result<()> {
    let v = client(endpoint).get(key.as_bytes(), stale).await.map_err(err)?;
    match (output, v) {
        (Output::Json, v) => print_json(&json!({"key": key, "value": v.as_deref().map(text)})),
        (Output::Table, Some(v)) => println!("{}", text(&v)),
        (Output::Table, None) => return Err(CtlError::NotFound(format!("key {key:?} not found"))),
    }
    Ok(())
}

/// `radiantctl del KEY`.
pub async fn del(endpoint: &str, output: Output, key: &str) -> Result<()> {
    let existed = client(endpoint).delete(key.as_bytes()).await.map_err(err)?;
    match output {
        Output::Json => print_json(&json!({"key": key, "existed": existed})),
        Output::Table => println!("{}", if existed { "deleted" } else { "not found (nothing to delete)" }),
    }
    Ok(())
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "KEY")]
    key: String,
    #[tabled(rename = "VALUE")]
    value: String,
}

/// `radiantctl scan [PREFIX] [--limit N]`.
pub async fn scan(endpoint: &str, output: Output, prefix: &str, limit: u32, stale: bool) -> Result<()> {
    let items = client(endpoint).scan(prefix.as_bytes(), limit, stale).await.map_err(err)?;
    match output {
        Output::Json => {
            print_json(&json!(items.iter().map(|(k, v)| json!({"key": text(k), "value": text(v)})).collect::<Vec<_>>()))
        }
        Output::Table => {
            let rows = items.iter().map(|(k, v)| Row { key: text(k), value: text(v) });
            println!("{}", Table::new(rows).with(Style::sharp()));
        }
    }
    Ok(())
}
