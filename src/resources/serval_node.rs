//! `ServalNode`: what the cluster knows about one node's networking, Calico's `Node`
//! resource with its field names. Each agent writes its own at start-up (address, AS,
//! tunnel addresses); every agent reads all of them to build the mesh and the routes.
//! The node's labels (metadata) are what `nodeSelector` and `peerSelector` match.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::MacAddr;

/// One node's networking.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "ServalNode",
    plural = "servalnodes"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServalNodeSpec {
    /// BGP settings of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// The node's IPv4 VXLAN tunnel (VTEP) address, from a VXLAN pool.
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub ipv4_vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// The MAC of the node's IPv4 VXLAN device.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<MacAddr>,
    /// The node's IPv6 VXLAN tunnel (VTEP) address, from a VXLAN pool.
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub ipv6_vxlan_tunnel_addr: Option<Ipv6Addr>,
    /// The MAC of the node's IPv6 VXLAN device.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<MacAddr>,
}

/// BGP settings of one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    /// The node's IPv4 address with its subnet's prefix length, e.g. 192.0.2.10/24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub ipv4_address: Option<IpNet>,
    /// The node's IPv6 address with its subnet's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub ipv6_address: Option<IpNet>,
    /// The node's AS, when it differs from BGPConfiguration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Makes the node a route reflector with this cluster id (RFC 4456).
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    /// The node's address on its IP-in-IP tunnel, from an IP-in-IP pool.
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub ipv4_ipip_tunnel_addr: Option<Ipv4Addr>,
}

impl ServalNodeSpec {
    /// Checks serde cannot make, each error as (field path under `spec`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if let Some(b) = &self.bgp {
            if let Some(a) = b.ipv4_address {
                if !a.addr().is_ipv4() {
                    errors.push(("bgp.ipv4Address".into(), format!("{a} is not IPv4")));
                }
            }
            if let Some(a) = b.ipv6_address {
                if a.addr().is_ipv4() {
                    errors.push(("bgp.ipv6Address".into(), format!("{a} is not IPv6")));
                }
            }
            if b.as_number == Some(0) {
                errors.push(("bgp.asNumber".into(), "AS 0 is reserved".into()));
            }
        }
        errors
    }
}
