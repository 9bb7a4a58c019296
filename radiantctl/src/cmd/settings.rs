//! `settings` and `set`: the cluster settings held in the map.

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

/// `radiantctl set NAME VALUE`: one change through the station's log, journaled.
pub async fn set(endpoint: &str, output: Output, name: &str, value: &str) -> Result<()> {
    let resp = client::station(endpoint)?
        .set(pb::SetRequest { name: name.to_string(), value: value.to_string() })
        .await
        .map_err(|s| CtlError::from_status(endpoint, s))?
        .into_inner();
    let setting = resp.setting.ok_or_else(|| CtlError::Failed(format!("{endpoint}: the answer names no setting")))?;
    match output {
        Output::Json => print_json(&json!({"setting": to_json(&setting), "epoch": resp.epoch})),
        Output::Table => println!("{} = {} (epoch {})", setting.name, setting.value, resp.epoch),
    }
    Ok(())
}
