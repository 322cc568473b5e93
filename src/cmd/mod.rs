//! One module per top-level subcommand.

pub mod bgp;
pub mod ipam;
pub mod pool;
