//! radiantd: the minimal Radiant daemon.
//!
//! Started on every host, it brings up transport and a supervisor and nothing else; the
//! supervisor runs what `radiantctl` (and later the bondsmith) asks for: a station replica,
//! phone-home, order replicas. The README defines the words used here.
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod coordinator;
pub mod disk;
pub mod failpoints;
pub mod host;
pub mod identity;
pub mod node;
pub mod order;
pub mod persist;
pub mod phone_home;
pub mod planted;
pub mod raft;
pub mod server;

pub mod spec;
pub mod station;
pub mod supervisor;

pub use server::run;
