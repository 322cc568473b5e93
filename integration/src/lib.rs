//! serval's test bed: network namespaces, real BGP daemons and a User-Mode Linux runner,
//! shared by every multi-node test.
//!
//! - [`netns`]: namespaces removed on drop, veth links, bridges, addresses, routes.
//! - [`topology`]: the usual shapes (one link, an L2 segment, routed/multihop).
//! - [`daemons`]: BIRD, FRR, GoBGP, OpenBGPD and ExaBGP behind one [`BgpDaemon`] trait,
//!   configured from one [`RouterSpec`] and answering in one typed form.
//! - [`wait`]: waiting on a condition with a deadline.
//! - [`uml`]: running a command or test binary under User-Mode Linux.
//! - [`serval`]: finding and starting the `serval` binary.
//! - [`tools`]: failing (never skipping) when a tool or root is missing.
//!
//! Everything needs root; a test checks [`tools::require_root`] first or gets the same
//! message from the first namespace it creates.

pub mod daemons;
pub mod error;
pub mod netns;
pub mod observed;
pub mod serval;
pub mod spec;
pub mod tools;
pub mod topology;
pub mod uml;
pub mod wait;
pub mod workdir;

pub use daemons::{BgpDaemon, Bird, ExaBgp, Frr, GoBgp, OpenBgpd};
pub use error::{Error, Result};
pub use netns::{Bridge, Netns, NsChild, NsHandle};
pub use observed::{Route, SessionStatus};
pub use spec::{
    Announcement, Asn, Community, Family, LargeCommunity, NeighborSpec, Password, RouterSpec,
    TtlMode,
};
pub use wait::{holds_for, wait_for, wait_until, Poll};
pub use workdir::{scenario, TestDir};
