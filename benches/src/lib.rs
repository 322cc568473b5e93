//! serval's BGP speaker measured against the real alternatives.
//!
//! - [`feed`]: a full table of realistic UPDATEs, encoded once with serval's codec.
//! - [`peer`]: a minimal blocking BGP peer (OPEN/KEEPALIVE exchange, frames in, bytes out).
//! - [`feeder`]: the feeder (writes a feed as fast as the socket takes it) and the monitor
//!   (counts the distinct prefixes a daemon exports to it), run by `bgp-feeder`.
//! - [`events`]: the one-line reports both print, which the race reads.
//! - [`monitor`]: the monitor's prefix set.
//! - [`poll`]: waiting until something holds, with a timeout that says what it last saw.
//! - [`race`]: `bgp-race`, serval against BIRD, GoBGP and FRR in fresh namespaces.
//! - [`rr`]: `rr-race`, one route reflector and 1,000 clients: serval, the node agent as
//!   a reflector node, BIRD, FRR and GoBGP.
//!
//! Criterion benches: `cargo bench -p serval-benches` (codec and RIB, in prefixes/s).

pub mod events;
pub mod feed;
pub mod feeder;
pub mod monitor;
pub mod peer;
pub mod poll;
pub mod race;
pub mod rr;
