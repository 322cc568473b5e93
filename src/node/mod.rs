//! The node agent (`serval node run`): ties the BGP speaker, the block IPAM and the
//! kernel dataplane together on one node.
//!
//! - `config.rs`: flags, environment and file, checked before anything starts;
//! - `autodetect.rs`: the node address, as Calico's `IP_AUTODETECTION_METHOD`;
//! - `index.rs`: the datastore as the watch reports it, and the snapshot for decisions;
//! - `register.rs`: this node's ServalNode and tunnel addresses;
//! - `apply/`: one applier per kind of state the agent changes — the speaker's peers
//!   and announcements, routes, tunnel devices, NAT, the pod MTU, IP forwarding — each
//!   keeping what it last applied;
//! - `agent.rs`: the loop: reads, decides, hands each applier its part;
//! - `shared.rs`: what the loop publishes for status, health and metrics;
//! - `http.rs`: `/healthz`, `/readyz`, `/metrics`; `guard.rs`: its listener's limits
//!   (connection cap, header-read and idle timeouts);
//! - `control.rs`: the status socket;
//! - `gc.rs`: what a node that leaves for good held, released;
//! - `kube/`: on the kubernetes datastore, the Node's settings, password Secrets, the
//!   node collector (Lease) and the ServalNodeStatus status.
//!
//! The decisions themselves are in [`crate::node::desired`].

pub mod agent;
pub mod apply;
pub mod autodetect;
pub mod config;
pub mod dataplane;
pub mod desired;
pub mod gc;
pub mod guard;
pub mod health;
pub mod http;
pub mod index;
pub mod kube;
pub mod metrics;
pub mod register;
pub mod requests;
pub mod shared;
pub mod status;

pub use agent::run;
pub use config::NodeConfig;
pub use shared::Shared;
