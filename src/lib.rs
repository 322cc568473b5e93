//! The serval node agent: everything the `serval` binary does apart from argument parsing.

pub mod control_socket;
pub mod crds;
pub mod import;
pub mod node;
pub mod resources;
