//! serval's BGP speaker: a library the node agent embeds, and that `serval bgp` runs on
//! its own. `wire` is the codec, `fsm` and `negotiate` the session state machine, `rib`
//! and `policy` the routing decisions, `core::state` the decisions across peers (graceful
//! restart, maximum prefixes, reconfiguration); all of them are pure. `session`, `core`
//! and `transport` are the IO around them, `speaker` the handle to drive it all. `bfd` is
//! BFD's packet codec and session state machine, pure as well.

pub mod bfd;
pub mod config;
mod core;
pub mod fsm;
mod jitter;
mod mailbox;
pub mod negotiate;
pub mod policy;
pub mod rib;
mod session;
pub mod speaker;
pub mod status;
pub mod transport;
pub mod types;
pub mod wire;

pub use types::{Afi, AfiSafi, Asn, Family, RouterId, Safi};
