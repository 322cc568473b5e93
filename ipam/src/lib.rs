//! serval's block IPAM, and the cluster datastore it keeps its objects in.
//!
//! Pod addresses come from [pools](model::IpPool) cut into [blocks](model::Block) that
//! nodes claim ([affinities](model::BlockAffinity)), as in Calico, so that each node
//! advertises a few aggregated blocks over BGP instead of one route per pod.
//!
//! - [`model`]: the objects, with Calico's field names; [`selector`] for node selectors.
//! - [`allocator`]: pure planning of every operation over a snapshot (no IO).
//! - [`ops::Ipam`]: the operations, running plans against a store with compare-and-swap
//!   writes and bounded retries. Start here.
//! - [`store`]: the cluster datastore — the [`Store`](store::Store) trait and its
//!   implementations (a file, etcd, Kubernetes CRDs, memory), one conformance suite they
//!   all pass (`store::conformance`); besides the IPAM's objects it holds every other
//!   serval resource (BGPPeer, BGPConfiguration, ServalNode, …) as an opaque
//!   [`Resource`](store::resource::Resource) whose owner parses it; [`store::select`]
//!   picks one from `--datastore` / `SERVAL_DATASTORE`.
//! - [`check`]: consistency check and repair; [`usage`]: what `ipam show` prints.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ipam::{allocator::{AutoAssignRequest, NodeInfo}, model::*, ops::Ipam, store::select};
//! let store = select::open(&select::Datastore::from_env_or_default()?).await?;
//! let ipam = Ipam::new(store);
//! let req = AutoAssignRequest::new(HandleId::new("k8s-pod-network.abc")?, NodeInfo::new(NodeName::new("node-1")?), 1, 1);
//! let got = ipam.auto_assign(req).await?;
//! println!("{:?} {:?}", got.v4, got.v6);
//! # Ok(()) }
//! ```

pub mod allocator;
pub mod check;
#[cfg(feature = "kubernetes")]
pub mod crd;
pub mod encap;
pub mod error;
pub mod model;
pub mod ops;
pub mod reservation;
pub mod selector;
pub mod store;
pub mod usage;

pub use error::{IpamError, ModelError, StoreError};
pub use ops::Ipam;
