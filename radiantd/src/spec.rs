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
        }
    }

    /// The cluster the service belongs to.
    pub fn cluster_id(&self) -> &str {
        match self {
            ServiceSpec::Station(s) => &s.cluster_id,
            ServiceSpec::PhoneHome(p) => &p.cluster_id,
        }
    }

    /// Checks a spec that came off the wire.
    pub fn from_proto(spec: pb::ServiceSpec) -> Result<Self, SpecError> {
        let kind = spec.kind.ok_or(SpecError::Empty)?;
        let spec = match kind {
            pb::service_spec::Kind::Station(s) => {
                let invalid = |reason: String| SpecError::Invalid { service: "station", reason };
                if ![1, 3, 5].contains(&s.members.len()) {
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
                ServiceSpec::Station(StationSpec {
                    cluster_id: s.cluster_id,
                    members: s
                        .members
                        .into_iter()
                        .map(|m| MemberInfo { id: m.id, name: m.name, addr: m.addr })
                        .collect(),
                    shards: s.shards,
                    replicas: s.replicas,
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
