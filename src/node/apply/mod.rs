//! The appliers: one per kind of kernel or speaker state the agent changes. Each owns
//! what it last applied and takes a wanted value; the agent decides the wanted values
//! from its snapshot (pure, [`crate::node::desired`]) and hands each to its applier.
//!
//! | applier | what it applies | what it keeps |
//! |---|---|---|
//! | [`speaker::SpeakerApplier`] | the BGP speaker, its peers and announcements | the running speaker, its settings, the peers and prefixes it was given |
//! | [`routes::RouteApplier`] | serval's kernel routes (and VXLAN FDB entries) | the errors of the routes the kernel refused |
//! | [`tunnels::TunnelApplier`] | `tunl0`, `vxlan.serval`, `vxlan-v6.serval` | the tunnel devices last asked for and each one's outcome |
//! | [`nat::NatApplier`] | the nftables tables: natOutgoing and the BGP guard | the pools and guard last applied, and the error |
//! | [`mtu::MtuApplier`] | the pod MTU file the CNI plugin reads | the MTU written |
//! | [`forwarding::ForwardingApplier`] | the IP forwarding sysctls | the knobs that could not be set |
//!
//! The same wanted value twice does no IO the second time. A failed apply is tried
//! again: the MTU file and forwarding at the next look; tunnels and NAT, whose failure
//! is usually a missing kernel module or binary, at the next periodic resync
//! (`forget_if_failed`).
//!
//! The route set lives in one place, the [`crate::node::dataplane::Dataplane`]: it holds the
//! routes last asked for (it needs them to know which VXLAN peers stay in use), and the
//! route applier and the agent read them from there ([`routes::RouteIo::wanted`]). The
//! copy in the status snapshot ([`super::shared::Published::routes`]) is a publication
//! for the status socket and metrics, updated with the same differences.
//!
//! Each applier reaches the outside through a small trait (`*Io`), implemented by the
//! real dataplane, file or speaker, and by fakes in the unit tests.

pub mod forwarding;
pub mod mtu;
pub mod nat;
pub mod routes;
pub mod speaker;
pub mod tunnels;

pub use forwarding::ForwardingApplier;
pub use mtu::MtuApplier;
pub use nat::{NatApplier, NatWant};
pub use routes::RouteApplier;
pub use speaker::{SpeakerApplier, SpeakerParams, SpeakerStep, SpeakerWant};
pub use tunnels::{TunnelApplier, Underlay};
