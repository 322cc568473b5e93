//! The serval node agent: everything the `serval` binary does apart from argument parsing.

pub mod control;
pub mod crds;
pub mod dataplane;
pub mod desired;
pub mod health;
pub mod import;
pub mod metrics;
pub mod node;
pub mod resources;
pub mod status;
