//! `settings` and `set`: the cluster settings held in the map.

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
use crate::output::print_json;

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "NAME")]
    name: String,
    #[tabled(rename = "VALUE")]
    value: String,
    #[tabled(rename = "DEFAULT")]
    default: String,
    #[tabled(rename = "MEANING")]
    meaning: String,
}

fn to_json(s: &pb::Setting) -> serde_json::Value {
    json!({"name": s.name, "value": s.value, "default": s.default, "meaning": s.meaning})
}

/// `radiantctl settings`.
pub async fn list(endpoint: &str, output: Output) -> Result<()> {
    let resp = client::station(endpoint)?
        .settings(pb::SettingsRequest {})
        .await
        .map_err(|s| CtlError::from_status(endpoint, s))?
        .into_inner();
    match output {
        Output::Json => print_json(&json!(resp.settings.iter().map(to_json).collect::<Vec<_>>())),
        Output::Table => {
            let rows = resp.settings.into_iter().map(|s| Row {
                name: s.name,
                value: s.value,
                default: s.default,
                meaning: s.meaning,
            });
            println!("{}", Table::new(rows).with(Style::sharp()));
        }
    }
    Ok(())
}

/// `radiantctl set NAME VALUE`: one change through the station's log, journaled. While the
/// station has no bondsmith (an election, or one that just lost its quorum) the change is
/// tried again until `wait` runs out: setting a value twice leaves the same map, so a retry
/// after an answer that was lost is harmless too. An invalid name or value fails at once.
pub async fn set(endpoint: &str, output: Output, wait: Duration, name: &str, value: &str) -> Result<()> {
    let req = pb::SetRequest { name: name.to_string(), value: value.to_string() };
    let resp = client::wait_for(wait, || async {
        let resp = client::station(endpoint)?.set(req.clone()).await;
        resp.map(|r| Some(r.into_inner())).map_err(|s| CtlError::from_status(endpoint, s))
    })
    .await?;
    let setting = resp.setting.ok_or_else(|| CtlError::Failed(format!("{endpoint}: the answer names no setting")))?;
    match output {
        Output::Json => print_json(&json!({"setting": to_json(&setting), "epoch": resp.epoch})),
        Output::Table => println!("{} = {} (epoch {})", setting.name, setting.value, resp.epoch),
    }
    Ok(())
}
