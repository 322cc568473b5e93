//! The kernel dataplane: makes the kernel hold what the agent decided — routes, tunnel
//! devices, VXLAN peers and natOutgoing rules — and touches nothing that is not
//! serval's.
//!
//! The agent computes a [`DesiredRoutes`] and a list of [`NatPool`]s from its snapshot
//! (pure, elsewhere); this module applies them:
//!
//! ```text
//!   agent (desired.rs, pure) ──DesiredRoutes / RouteDiff / NatPool──▶ Dataplane
//!                                                                      │
//!     tunnel.rs  tunl0, vxlan.serval, vxlan-v6.serval, FDB + neighbours ┤ one rtnetlink
//!     routes.rs  serval's routes (proto 83) in one table                ┤ connection
//!     mtu.rs     underlay MTU − encapsulation overhead                  ┘ (netlink.rs)
//!     nat.rs     `ip serval` / `ip6 serval` nftables tables (nft -j)
//! ```

pub mod addresses;
mod error;
pub mod links;
pub mod mtu;
pub mod nat;
pub mod netlink;
pub mod plan;
pub mod routes;
pub mod spec;
pub mod tunnel;

use std::net::IpAddr;

pub use error::Error;
pub use mtu::Encapsulation;
pub use nat::{BgpGuard, NatProgrammer, NatReport};
pub use netlink::{Netlink, NetlinkError};
pub use plan::Conflict;
pub use routes::{
    RouteConfig, RouteFailure, RouteProgrammer, SyncReport, MAIN_TABLE, SERVAL_PROTOCOL,
};
pub use spec::{DesiredRoutes, Mac, NatPool, NextHop, RouteDiff, RouteTarget, VxlanPeer};
pub use tunnel::{IpipTunnel, PeerReport, VxlanTunnel, IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE};

/// What a route sync or apply did, VXLAN peers included.
#[derive(Debug, Default)]
pub struct DataplaneReport {
    /// Routes.
    pub routes: SyncReport,
    /// FDB and neighbour changes, per VXLAN device that exists.
    pub peers: Vec<(&'static str, PeerReport)>,
}

/// The dataplane of one network namespace over one rtnetlink connection.
#[derive(Debug)]
pub struct Dataplane {
    nl: Netlink,
    routes: RouteProgrammer,
    /// The routes last asked for: the node's one route set (the agent reads it through
    /// [`Dataplane::wanted`]), and how an incremental change knows which VXLAN peers
    /// remain in use.
    desired: DesiredRoutes,
}

impl Dataplane {
    /// Connects in the calling thread's network namespace; must run inside a tokio
    /// runtime (the connection is a task on it).
    pub fn connect(config: RouteConfig) -> Result<Self, Error> {
        let nl = Netlink::connect().map_err(Error::Connect)?;
        Ok(Dataplane {
            routes: RouteProgrammer::new(nl.clone(), config),
            nl,
            desired: DesiredRoutes::default(),
        })
    }

    /// The connection, for callers that need a lookup this module does not wrap.
    pub fn netlink(&self) -> &Netlink {
        &self.nl
    }

    /// The route programmer.
    pub fn routes(&self) -> &RouteProgrammer {
        &self.routes
    }

    /// See [`tunnel::ensure_ipip`].
    pub async fn ensure_ipip(&self, tunnel: &IpipTunnel) -> Result<u32, Error> {
        tunnel::ensure_ipip(&self.nl, tunnel).await
    }

    /// See [`tunnel::ensure_vxlan`].
    pub async fn ensure_vxlan(&self, tunnel: &VxlanTunnel) -> Result<u32, Error> {
        tunnel::ensure_vxlan(&self.nl, tunnel).await
    }

    /// See [`tunnel::remove`].
    pub async fn remove_tunnel(&self, device: &str) -> Result<(), Error> {
        tunnel::remove(&self.nl, device).await
    }

    /// The interface carrying `node_addr`: (index, name, MTU).
    pub async fn underlay(&self, node_addr: IpAddr) -> Result<(u32, String, u32), Error> {
        mtu::underlay(&self.nl, node_addr).await
    }

    /// See [`mtu::tunnel_mtu`].
    pub async fn tunnel_mtu(
        &self,
        node_addr: IpAddr,
        encapsulation: Encapsulation,
    ) -> Result<u32, Error> {
        mtu::tunnel_mtu(&self.nl, node_addr, encapsulation).await
    }

    /// See [`RouteProgrammer::adopt`]: a previous run's routes stay and are known.
    pub async fn adopt(&mut self) -> Result<usize, Error> {
        Ok(self.routes.adopt().await?.len())
    }

    /// The routes last asked for (by [`Dataplane::sync`] or [`Dataplane::apply_changes`]):
    /// the node's route set, which the agent reads rather than keeping its own copy.
    pub fn wanted(&self) -> &DesiredRoutes {
        &self.desired
    }

    /// Makes the kernel's serval routes, and the FDB/neighbour entries of the VXLAN
    /// devices that exist, equal `desired`. The first call after start removes what a
    /// previous run left and no longer wants, and leaves the rest in place.
    pub async fn sync(&mut self, desired: &DesiredRoutes) -> Result<DataplaneReport, Error> {
        self.desired = desired.clone();
        self.resync().await
    }

    /// [`Dataplane::sync`] to the routes last asked for: repairs drift, and removes a
    /// previous run's routes nobody wants any more.
    pub async fn resync(&mut self) -> Result<DataplaneReport, Error> {
        let peers = self.sync_peers().await?;
        let routes = self.routes.sync(&self.desired).await?;
        Ok(DataplaneReport { routes, peers })
    }

    /// Applies an incremental change (BGP): the routes in `diff` and, for VXLAN, the
    /// peers that appear or stop being used.
    pub async fn apply_changes(&mut self, diff: &RouteDiff) -> Result<DataplaneReport, Error> {
        // The full sets only when the diff's own routes use other peers than before:
        // a batch costs its own routes, not the table.
        let peers = if !self.desired.vxlan_peers_may_change(diff) {
            self.desired.apply(diff);
            Vec::new()
        } else {
            let before = self.desired.vxlan_peers();
            self.desired.apply(diff);
            if before == self.desired.vxlan_peers() {
                Vec::new()
            } else {
                self.sync_peers().await?
            }
        };
        let routes = self.routes.apply_changes(diff).await?;
        Ok(DataplaneReport { routes, peers })
    }

    /// See [`NatProgrammer::sync`]; fails clearly when `nft` is missing.
    pub async fn sync_nat(&self, pools: &[NatPool], guard: &BgpGuard) -> Result<NatReport, Error> {
        NatProgrammer::new()?.sync(pools, guard).await
    }

    async fn sync_peers(&self) -> Result<Vec<(&'static str, PeerReport)>, Error> {
        let peers = self.desired.vxlan_peers();
        let mut out = Vec::new();
        for device in [VXLAN_DEVICE, VXLAN_V6_DEVICE] {
            if links::by_name(&self.nl, device).await?.is_some() {
                out.push((
                    device,
                    tunnel::sync_vxlan_peers(&self.nl, device, &peers).await?,
                ));
            }
        }
        Ok(out)
    }
}
