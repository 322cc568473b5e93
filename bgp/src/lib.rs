//! serval's BGP speaker.

pub mod transport;
pub mod types;
pub mod wire;

pub use types::{Afi, AfiSafi, Asn, Family, RouterId, Safi};
