//! Service specs as the supervisor persists them, and their wire form.

use radiant_proto as pb;
use serde::Deserialize;
use serde::Serialize;

use crate::station::map::MemberInfo;

/// What the supervisor can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceSpec {
    /// A station replica.
    Station(StationSpec),
    /// A satellite phoning home.
    PhoneHome(PhoneHomeSpec),
    /// A member of an order's Raft group.
    OrderReplica(OrderSpec),
}

/// Parameters of an order replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    /// Cluster id.
    pub cluster_id: String,
    /// The order (also its Raft group id).
    pub order_id: u64,
    /// The order's members: the group's initial membership.
    pub members: Vec<MemberInfo>,
    /// Initialize the group with `members` if it is new (true for the members an order is
    /// formed with; a replacement joins as a learner instead).
    pub initialize: bool,
}

/// Parameters of a station replica: identical on every station member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationSpec {
    /// Cluster id.
    pub cluster_id: String,
    /// The station members (the initial Raft membership).
    pub members: Vec<MemberInfo>,
    /// Shard count.
    pub shards: u32,
    /// Replicas per order.
    pub replicas: u32,
    /// Kv key limit.
    #[serde(default = "default_max_key")]
    pub max_key_bytes: u32,
    /// Kv value limit.
    #[serde(default = "default_max_value")]
    pub max_value_bytes: u32,
    /// A replacement joining the running station as a learner: never initializes the group,
    /// and `members` is the station it joins plus itself.
    #[serde(default)]
    pub join: bool,
}

fn default_max_key() -> u32 {
    crate::station::map::DEFAULT_MAX_KEY_BYTES
}

fn default_max_value() -> u32 {
    crate::station::map::DEFAULT_MAX_VALUE_BYTES
}

/// Parameters of phone-home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneHomeSpec {
    /// Cluster id.
    pub cluster_id: String,
    /// Addresses to phone (station members or any node of the cluster).
    pub station: Vec<String>,
}

/// A spec that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// No service kind set.
    #[error("spawn request names no service")]
    Empty,
    /// A field is unacceptable.
    #[error("invalid {service} spec: {reason}")]
    Invalid {
        /// Service.
        service: &'static str,
        /// Why.
        reason: String,
    },
}

impl ServiceSpec {
    /// The supervisor's name for the service.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceSpec::Station(_) => "station",
            ServiceSpec::PhoneHome(_) => "phone-home",
            ServiceSpec::OrderReplica(_) => "order-replica",
        }
    }

    /// The cluster the service belongs to.
    pub fn cluster_id(&self) -> &str {
        match self {
            ServiceSpec::Station(s) => &s.cluster_id,
            ServiceSpec::PhoneHome(p) => &p.cluster_id,
            ServiceSpec::OrderReplica(o) => &o.cluster_id,
        }
    }

    /// Checks a spec that came off the wire.
    pub fn from_proto(spec: pb::ServiceSpec) -> Result<Self, SpecError> {
        let kind = spec.kind.ok_or(SpecError::Empty)?;
        let spec = match kind {
            pb::service_spec::Kind::Station(s) => {
                let invalid = |reason: String| SpecError::Invalid { service: "station", reason };
                if !s.join && ![1, 3, 5].contains(&s.members.len()) {
                    return Err(invalid(format!("a station has 1, 3 or 5 members, not {}", s.members.len())));
                }
                if s.members.iter().any(|m| m.id == 0 || m.addr.is_empty()) {
                    return Err(invalid("every member needs a non-zero id and an address".into()));
                }
                let mut ids: Vec<_> = s.members.iter().map(|m| m.id).collect();
                ids.sort_unstable();
                ids.dedup();
                if ids.len() != s.members.len() {
                    return Err(invalid("members must be distinct nodes".into()));
                }
                if s.shards == 0 || s.shards > 65_536 {
                    return Err(invalid(format!("shards must be 1..=65536, not {}", s.shards)));
                }
                if s.replicas == 0 || s.replicas > 7 {
                    return Err(invalid(format!("replicas must be 1..=7, not {}", s.replicas)));
                }
                let max_key_bytes = if s.max_key_bytes == 0 { default_max_key() } else { s.max_key_bytes };
                let max_value_bytes = if s.max_value_bytes == 0 { default_max_value() } else { s.max_value_bytes };
                if max_value_bytes > 3 * 1024 * 1024 {
                    return Err(invalid(format!("max value size is at most 3 MiB, not {max_value_bytes}")));
                }
                ServiceSpec::Station(StationSpec {
                    max_key_bytes,
                    max_value_bytes,
                    cluster_id: s.cluster_id,
                    members: s
                        .members
                        .into_iter()
                        .map(|m| MemberInfo { id: m.id, name: m.name, addr: m.addr })
                        .collect(),
                    shards: s.shards,
                    replicas: s.replicas,
                    join: s.join,
                })
            }
            pb::service_spec::Kind::OrderReplica(o) => {
                if o.order_id == 0 || o.members.is_empty() || o.members.iter().any(|m| m.id == 0 || m.addr.is_empty()) {
                    return Err(SpecError::Invalid {
                        service: "order-replica",
                        reason: "needs a non-zero order id and members with ids and addresses".into(),
                    });
                }
                ServiceSpec::OrderReplica(OrderSpec {
                    cluster_id: o.cluster_id,
                    order_id: o.order_id,
                    members: o
                        .members
                        .into_iter()
                        .map(|m| MemberInfo { id: m.id, name: m.name, addr: m.addr })
                        .collect(),
                    initialize: o.initialize,
                })
            }
            pb::service_spec::Kind::PhoneHome(p) => {
                if p.station.is_empty() {
                    return Err(SpecError::Invalid {
                        service: "phone-home",
                        reason: "no station address given".into(),
                    });
                }
                ServiceSpec::PhoneHome(PhoneHomeSpec { cluster_id: p.cluster_id, station: p.station })
            }
        };
        if spec.cluster_id().is_empty() || spec.cluster_id().len() > 64 {
            return Err(SpecError::Invalid {
                service: spec.name(),
                reason: "cluster id must be 1 to 64 characters".into(),
            });
        }
        Ok(spec)
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::ServiceSpec {
        let kind = match self {
            ServiceSpec::Station(s) => pb::service_spec::Kind::Station(pb::StationSpec {
                cluster_id: s.cluster_id.clone(),
                members: s.members.iter().map(member_to_proto).collect(),
                shards: s.shards,
                replicas: s.replicas,
                max_key_bytes: s.max_key_bytes,
                max_value_bytes: s.max_value_bytes,
                join: s.join,
            }),
            ServiceSpec::OrderReplica(o) => pb::service_spec::Kind::OrderReplica(pb::OrderSpec {
                cluster_id: o.cluster_id.clone(),
                order_id: o.order_id,
                members: o.members.iter().map(member_to_proto).collect(),
                initialize: o.initialize,
            }),
            ServiceSpec::PhoneHome(p) => pb::service_spec::Kind::PhoneHome(pb::PhoneHomeSpec {
                cluster_id: p.cluster_id.clone(),
                station: p.station.clone(),
            }),
        };
        pb::ServiceSpec { kind: Some(kind) }
    }
}

/// A member's wire form.
pub fn member_to_proto(m: &MemberInfo) -> pb::Member {
    pb::Member { id: m.id, name: m.name.clone(), addr: m.addr.clone() }
}
