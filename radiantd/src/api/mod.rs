//! The gRPC services a radiant serves: the supervisor's, the station's, the herald's, Kv and
//! the Raft transport. Each maps its layer's errors to a gRPC status in one place.

pub mod chaos_api;
mod herald_api;
mod kv_api;
mod raft_api;
pub mod station_api;
mod supervisor_api;

pub use herald_api::HeraldApi;
pub use kv_api::KvApi;
pub use raft_api::RaftApi;
pub use station_api::StationApi;
pub use supervisor_api::SupervisorApi;
