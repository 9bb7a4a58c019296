//! One module per command.

pub mod bench;
pub mod bootstrap;
pub mod demo;
pub mod intent;
pub mod join;
pub mod kv;
pub mod rebalance;
pub mod settings;
pub mod show;
