//! serval's BGP speaker.

pub mod fsm;
pub mod negotiate;
pub mod policy;
pub mod rib;
pub mod transport;
pub mod types;
pub mod wire;

pub use types::{Afi, AfiSafi, Asn, Family, RouterId, Safi};
