//! `cluster-sim`: a cluster of real `serval node run` agents on etcd, with a BIRD ToR,
//! measured as it grows. The pieces:
//!
//! - [`net`]: the `svsim-` namespaces and the bridge;
//! - [`cluster`]: etcd, BIRD, the agents and the BGP resources of each shape;
//! - [`routes`]: every node's kernel routes, from netlink notifications;
//! - [`etcd`]: etcd's request and watch counters;
//! - [`measure`]: the phases (start-up, claims, idle, churn, a node killed, a node hung);
//! - [`fit`], [`report`]: the growth curves, the table and the plots.

pub mod cluster;
pub mod etcd;
pub mod fit;
pub mod measure;
pub mod net;
pub mod report;
pub mod routes;
