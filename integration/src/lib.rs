//! serval's test bed: network namespaces, real BGP daemons and a User-Mode Linux runner,
//! shared by every multi-node test.
//!
//! - [`netns`]: namespaces removed on drop, veth links, bridges, addresses, routes.
//! - [`topology`]: the usual shapes (one link, an L2 segment, routed/multihop).
//! - [`daemons`]: BIRD, FRR, GoBGP, OpenBGPD and ExaBGP behind one [`BgpDaemon`] trait,
//!   configured from one [`RouterSpec`] and answering in one typed form.
//! - [`wait`]: waiting on a condition with a deadline.
//! - [`uml`]: running a command or test binary under User-Mode Linux.
//! - [`serval`]: serval's own speaker behind the same [`BgpDaemon`] trait.
//! - [`interop`]: the interop scenarios serval runs against every daemon, and the
//!   matrix of their outcomes.
//! - [`kube`]: a real etcd + kube-apiserver (RBAC, service-account tokens) for the
//!   Kubernetes-facing tests.
//! - [`tools`]: failing (never skipping) when a tool or root is missing.
//!
//! Everything needs root; a test checks [`tools::require_root`] first or gets the same
//! message from the first namespace it creates.
//!
//! A two-router test reads the same whichever daemons play the parts, so an interop
//! test swaps one side for serval without changing anything else:
//!
//! ```no_run
//! use serval_integration::{scenario, topology, Announcement, Asn, BgpDaemon, Bird, Frr};
//! use serval_integration::{NeighborSpec, RouterSpec};
//! use std::time::Duration;
//!
//! scenario("bird_learns_from_frr", |dir| {
//!     let link = topology::link()?;
//!     let (a, b) = (&link.a, &link.b);
//!     let prefix = "203.0.113.0/24".parse().expect("literal");
//!     let bird = Bird::start(&a.ns, dir, RouterSpec::new(Asn(65001), a.v4)
//!         .neighbor(NeighborSpec::new(b.v4.into(), Asn(65002)).local(a.v4.into())))?;
//!     let _frr = Frr::start(&b.ns, dir, RouterSpec::new(Asn(65002), b.v4)
//!         .neighbor(NeighborSpec::new(a.v4.into(), Asn(65001)).local(b.v4.into()))
//!         .announce(Announcement::new(prefix)))?;
//!     let route = bird.wait_route(b.v4.into(), prefix, Duration::from_secs(60))?;
//!     assert_eq!(route.as_path, vec![Asn(65002)]);
//!     Ok(())
//! });
//! ```

pub mod daemons;
pub mod error;
pub mod interop;
pub mod kube;
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
pub use serval::Serval;
pub use spec::{
    Announcement, Asn, BfdSpec, Community, Family, LargeCommunity, NeighborSpec, Password,
    RouterSpec, TtlMode,
};
pub use wait::{holds_for, wait_for, wait_until, Poll};
pub use workdir::{scenario, TestDir};
