//! The node agent (`serval node run`): ties the BGP speaker, the block IPAM and the
//! kernel dataplane together on one node.
//!
//! Deciding (pure, no IO):
//! - `desired.rs`: the node's wanted state — peers, announcements, routes, tunnels,
//!   NAT, MTU — from one snapshot, table-tested in `desired/tests.rs`;
//!   `desired/route_changes.rs`: a best-path change as route changes;
//! - `index.rs`: the datastore as the watch reports it, and the snapshot for decisions;
//! - `services.rs`: which Service addresses this node advertises (Calico's semantics);
//! - `config.rs`: flags, environment and file, checked before anything starts;
//! - `autodetect.rs`: the node address, as Calico's `IP_AUTODETECTION_METHOD`.
//!
//! Applying:
//! - `agent.rs`: the loop: reads, decides, hands each applier its part;
//! - `apply/`: one applier per kind of state the agent changes — the speaker's peers
//!   and announcements, routes, tunnel devices, NAT, the pod MTU, IP forwarding — each
//!   keeping what it last applied;
//! - `dataplane/`: the kernel side those appliers drive over rtnetlink and nftables
//!   (routes, tunnels, NAT and the BGP guard, MTU), its input types in `dataplane/spec.rs`;
//! - `register.rs`: this node's ServalNode and tunnel addresses;
//! - `startup.rs`: which datastore failures at start are waited out, and the pauses
//!   between tries (the agent stays up, live and not ready, meanwhile);
//! - `gc.rs`: what a node that leaves for good held, released;
//! - `kube/`: on the kubernetes datastore, the Node's settings, password Secrets, the
//!   node collector (Lease) and the ServalNodeStatus status.
//!
//! Reporting:
//! - `shared.rs`: what the loop publishes for status, health and metrics;
//! - `status.rs`: what `serval node status` shows; `requests.rs`: the node's requests on
//!   the control socket ([`crate::control_socket`]);
//! - `http.rs`: `/healthz`, `/readyz`, `/metrics` (`health.rs`, `metrics.rs`); `guard.rs`:
//!   its listener's limits (connection cap, header-read and idle timeouts).

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
pub mod lb;
pub mod metrics;
pub mod register;
pub mod requests;
pub mod services;
pub mod shared;
pub mod startup;
pub mod status;

pub use agent::run;
pub use config::NodeConfig;
pub use shared::Shared;
