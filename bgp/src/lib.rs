//! serval's BGP speaker.

pub mod policy;
pub mod rib;
pub mod types;
pub mod wire;

pub use types::{Afi, AfiSafi, Asn, Family, RouterId, Safi};
