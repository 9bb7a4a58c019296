//! Radiant's wire protocol, generated from `proto/radiant.proto`.
//!
//! The daemon and the CLI share these types so that the CLI is just another client of the
//! admin API an operator's script would use.
#![allow(missing_docs, clippy::large_enum_variant, clippy::doc_lazy_continuation)]

tonic::include_proto!("radiant.v1");

impl ServiceSpec {
    /// The supervisor's name for the service this spec describes.
    pub fn service_name(&self) -> &'static str {
        match &self.kind {
            Some(service_spec::Kind::Station(_)) => "station",
            Some(service_spec::Kind::PhoneHome(_)) => "phone-home",
            Some(service_spec::Kind::OrderReplica(_)) => "order-replica",
            None => "unknown",
        }
    }

    /// The cluster the service belongs to.
    pub fn cluster_id(&self) -> Option<&str> {
        match &self.kind {
            Some(service_spec::Kind::Station(s)) => Some(&s.cluster_id),
            Some(service_spec::Kind::PhoneHome(p)) => Some(&p.cluster_id),
            Some(service_spec::Kind::OrderReplica(o)) => Some(&o.cluster_id),
            None => None,
        }
    }
}

pub mod shard;
pub use shard::shard_of;
