//! This node's entry in the cluster: the ServalNode the agent writes (address, AS,
//! tunnel addresses, VTEP MACs, labels) and the tunnel addresses it takes from the
//! pools through IPAM.
//!
//! The decisions are pure ([`node_resource`], [`tunnel_action`]); [`ensure_tunnel_addrs`]
//! and [`write_node`] are the IO. The agent owns only the fields it sets: an operator's
//! `routeReflectorClusterID` or labels added with `serval apply` stay as they are.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipam::allocator::{AutoAssignRequest, NodeInfo as IpamNode};
use ipam::model::{AllowedUse, EncapMode, HandleId, IpPool, NodeName};
use ipam::store::{Object, Store, Versioned, Write};
use ipam::Ipam;
use ipnet::IpNet;

use crate::node::dataplane::Mac;
use crate::resources::common::MacAddr;
use crate::resources::serval_node::NodeBgpSpec;
use crate::resources::{ClusterResource, ResourceKind, ServalNodeSpec, Spec};

/// What the agent found out about this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detected {
    /// The node's IPv4 address with its subnet's prefix length.
    pub v4: Option<IpNet>,
    /// The node's IPv6 address with its subnet's prefix length.
    pub v6: Option<IpNet>,
}

/// The tunnel addresses this node holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelAddrs {
    pub ipip: Option<Ipv4Addr>,
    pub vxlan_v4: Option<Ipv4Addr>,
    pub vxlan_v6: Option<Ipv6Addr>,
}

/// The three tunnel addresses a node may need, each with its own IPAM handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TunnelKind {
    Ipip,
    VxlanV4,
    VxlanV6,
}

impl TunnelKind {
    pub const ALL: [TunnelKind; 3] = [TunnelKind::Ipip, TunnelKind::VxlanV4, TunnelKind::VxlanV6];

    /// The IPAM handle, Calico's names: `ipip-tunnel-addr-<node>` and so on.
    pub fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::Ipip => format!("ipip-tunnel-addr-{node}"),
            TunnelKind::VxlanV4 => format!("vxlan-tunnel-addr-{node}"),
            TunnelKind::VxlanV6 => format!("vxlan-v6-tunnel-addr-{node}"),
        }
    }

    fn v4(self) -> bool {
        self != TunnelKind::VxlanV6
    }

    /// Whether `pool` asks for this kind of tunnel.
    pub fn wanted_by(self, pool: &IpPool) -> bool {
        let v4 = pool.cidr.addr().is_ipv4();
        match self {
            TunnelKind::Ipip => v4 && pool.ipip_mode != EncapMode::Never,
            TunnelKind::VxlanV4 => v4 && pool.vxlan_mode != EncapMode::Never,
            TunnelKind::VxlanV6 => !v4 && pool.vxlan_mode != EncapMode::Never,
        }
    }

    fn get(self, t: &TunnelAddrs) -> Option<IpAddr> {
        match self {
            TunnelKind::Ipip => t.ipip.map(IpAddr::V4),
            TunnelKind::VxlanV4 => t.vxlan_v4.map(IpAddr::V4),
            TunnelKind::VxlanV6 => t.vxlan_v6.map(IpAddr::V6),
        }
    }

    fn set(self, t: &mut TunnelAddrs, ip: Option<IpAddr>) {
        match (self, ip) {
            (TunnelKind::Ipip, Some(IpAddr::V4(a))) => t.ipip = Some(a),
            (TunnelKind::VxlanV4, Some(IpAddr::V4(a))) => t.vxlan_v4 = Some(a),
            (TunnelKind::VxlanV6, Some(IpAddr::V6(a))) => t.vxlan_v6 = Some(a),
            (TunnelKind::Ipip, _) => t.ipip = None,
            (TunnelKind::VxlanV4, _) => t.vxlan_v4 = None,
            (TunnelKind::VxlanV6, _) => t.vxlan_v6 = None,
        }
    }
}

/// What to do about one tunnel address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelAction {
    /// Nothing: the address is right, or none is needed and none is held.
    Keep,
    /// Take an address from one of these pools.
    Assign(Vec<ipam::model::PoolName>),
    /// Give the address back: no pool asks for the tunnel any more.
    Release,
    /// Give the address back (its pool no longer asks for the tunnel) and take one from
    /// these pools.
    Replace(Vec<ipam::model::PoolName>),
}

/// Decides one tunnel address from the pools and what the node holds. A node without
/// an address of the tunnel's family needs no tunnel of that family.
pub fn tunnel_action(
    kind: TunnelKind,
    pools: &[IpPool],
    detected: &Detected,
    held: Option<IpAddr>,
) -> TunnelAction {
    let has_family = if kind.v4() {
        detected.v4.is_some()
    } else {
        detected.v6.is_some()
    };
    let wanting: Vec<&IpPool> = pools
        .iter()
        .filter(|p| has_family && kind.wanted_by(p) && !p.disabled)
        .collect();
    let names = || wanting.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    match held {
        None if wanting.is_empty() => TunnelAction::Keep,
        None => TunnelAction::Assign(names()),
        Some(_) if wanting.is_empty() => TunnelAction::Release,
        Some(ip) if wanting.iter().any(|p| p.cidr.contains(&ip)) => TunnelAction::Keep,
        Some(_) => TunnelAction::Replace(names()),
    }
}

/// The tunnel addresses recorded in a ServalNode.
pub fn tunnel_addrs(spec: Option<&ServalNodeSpec>) -> TunnelAddrs {
    let Some(spec) = spec else {
        return TunnelAddrs::default();
    };
    TunnelAddrs {
        ipip: spec.bgp.as_ref().and_then(|b| b.ipv4_ipip_tunnel_addr),
        vxlan_v4: spec.ipv4_vxlan_tunnel_addr,
        vxlan_v6: spec.ipv6_vxlan_tunnel_addr,
    }
}

/// The ServalNode this node should have: `existing` with the agent's fields set.
pub fn node_resource(
    existing: Option<&ClusterResource>,
    node: &NodeName,
    detected: &Detected,
    as_number: Option<u32>,
    labels: &BTreeMap<String, String>,
    tunnels: &TunnelAddrs,
) -> ClusterResource {
    let (mut all_labels, mut spec) = match existing {
        Some(ClusterResource {
            labels,
            spec: Spec::ServalNode(s),
            ..
        }) => (labels.clone(), s.clone()),
        _ => (BTreeMap::new(), ServalNodeSpec::default()),
    };
    all_labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut bgp = spec.bgp.take().unwrap_or_else(NodeBgpSpec::default);
    bgp.ipv4_address = detected.v4;
    bgp.ipv6_address = detected.v6;
    if as_number.is_some() {
        bgp.as_number = as_number;
    }
    bgp.ipv4_ipip_tunnel_addr = tunnels.ipip;
    spec.bgp = Some(bgp);
    spec.ipv4_vxlan_tunnel_addr = tunnels.vxlan_v4;
    spec.vxlan_tunnel_mac_addr = tunnels
        .vxlan_v4
        .map(|_| MacAddr(Mac::vtep(node.as_str(), false)));
    spec.ipv6_vxlan_tunnel_addr = tunnels.vxlan_v6;
    spec.vxlan_tunnel_mac_addr_v6 = tunnels
        .vxlan_v6
        .map(|_| MacAddr(Mac::vtep(node.as_str(), true)));
    ClusterResource {
        name: node.clone().into(),
        labels: all_labels,
        spec: Spec::ServalNode(spec),
    }
}

/// Carries out the tunnel address decisions through IPAM; returns the addresses held
/// afterwards and, for each that failed, why (naming the pools).
pub async fn ensure_tunnel_addrs(
    ipam: &Ipam,
    node: &NodeName,
    labels: &BTreeMap<String, String>,
    pools: &[IpPool],
    detected: &Detected,
    held: TunnelAddrs,
) -> (TunnelAddrs, Vec<String>) {
    let mut out = held;
    let mut problems = Vec::new();
    for kind in TunnelKind::ALL {
        let action = tunnel_action(kind, pools, detected, kind.get(&held));
        let handle = match HandleId::new(kind.handle(node.as_str())) {
            Ok(h) => h,
            Err(e) => {
                problems.push(format!("tunnel address handle for {node}: {e}"));
                continue;
            }
        };
        let (release, assign) = match action {
            TunnelAction::Keep => continue,
            TunnelAction::Release => (true, None),
            TunnelAction::Assign(p) => (false, Some(p)),
            TunnelAction::Replace(p) => (true, Some(p)),
        };
        if release {
            if let Err(e) = ipam.release_handle(handle.clone()).await {
                problems.push(format!("releasing tunnel address {handle}: {e}"));
                continue;
            }
            kind.set(&mut out, None);
        }
        if let Some(pool_names) = assign {
            let mut req = AutoAssignRequest::new(
                handle.clone(),
                IpamNode {
                    name: node.clone(),
                    labels: labels.clone(),
                },
                u32::from(kind.v4()),
                u32::from(!kind.v4()),
            );
            req.use_ = AllowedUse::Tunnel;
            req.pools = pool_names.clone();
            let names: Vec<String> = pool_names.iter().map(ToString::to_string).collect();
            match ipam.auto_assign(req).await {
                Ok(a) => {
                    let ip = if kind.v4() {
                        a.v4.first()
                    } else {
                        a.v6.first()
                    };
                    match ip {
                        Some(ip) => kind.set(&mut out, Some(*ip)),
                        None => problems.push(format!(
                            "no tunnel address for {handle} in IP pool {}",
                            names.join(", ")
                        )),
                    }
                }
                Err(e) => problems.push(format!(
                    "allocating tunnel address {handle} from IP pool {}: {e}",
                    names.join(", ")
                )),
            }
        }
    }
    (out, problems)
}

/// Writes `resource` unless the store already holds it; `existing` is the stored
/// version the agent knows. Returns the stored object when a write was made.
pub async fn write_node(
    store: &dyn Store,
    existing: Option<&Versioned<ipam::store::Resource>>,
    resource: &ClusterResource,
) -> Result<Option<Versioned<Object>>, ipam::StoreError> {
    debug_assert_eq!(resource.kind(), ResourceKind::ServalNode);
    let stored = resource.to_stored();
    if existing.is_some_and(|e| e.value == stored) {
        return Ok(None);
    }
    let write = Write::put(
        Object::Resource(stored.clone()),
        existing.map(|e| e.revision.clone()),
    );
    let revs = store.commit(&[write]).await?;
    match revs.into_iter().next().flatten() {
        Some(rev) => Ok(Some(Versioned::new(Object::Resource(stored), rev))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::model::PoolName;

    fn pool(name: &str, cidr: &str, ipip: EncapMode, vxlan: EncapMode) -> IpPool {
        let mut p = IpPool::new(PoolName::new(name).unwrap(), cidr.parse().unwrap());
        p.ipip_mode = ipip;
        p.vxlan_mode = vxlan;
        p
    }

    fn both() -> Detected {
        Detected {
            v4: Some("192.0.2.10/24".parse().unwrap()),
            v6: Some("2001:db8::10/64".parse().unwrap()),
        }
    }

    type Case = (
        &'static str,
        TunnelKind,
        Vec<IpPool>,
        Detected,
        Option<IpAddr>,
        TunnelAction,
    );

    #[test]
    fn tunnel_actions_table() {
        use EncapMode::*;
        let ipip = pool("ipip", "10.65.0.0/16", Always, Never);
        let cross = pool("cross", "10.66.0.0/16", CrossSubnet, Never);
        let vx4 = pool("vx4", "10.67.0.0/16", Never, Always);
        let vx6 = pool("vx6", "fd00:65::/48", Never, CrossSubnet);
        let plain = pool("plain", "10.68.0.0/16", Never, Never);
        let n = |s: &[&str]| {
            TunnelAction::Assign(s.iter().map(|n| PoolName::new(*n).unwrap()).collect())
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let v4_only = Detected {
            v4: both().v4,
            v6: None,
        };
        let cases: Vec<Case> = vec![
            (
                "no pool wants it",
                TunnelKind::Ipip,
                vec![plain.clone()],
                both(),
                None,
                TunnelAction::Keep,
            ),
            (
                "ipip always",
                TunnelKind::Ipip,
                vec![ipip.clone(), plain.clone()],
                both(),
                None,
                n(&["ipip"]),
            ),
            (
                "ipip cross-subnet counts",
                TunnelKind::Ipip,
                vec![ipip.clone(), cross.clone()],
                both(),
                None,
                n(&["ipip", "cross"]),
            ),
            (
                "held in a wanting pool",
                TunnelKind::Ipip,
                vec![ipip.clone()],
                both(),
                ip("10.65.0.1"),
                TunnelAction::Keep,
            ),
            (
                "pool gone",
                TunnelKind::Ipip,
                vec![plain.clone()],
                both(),
                ip("10.65.0.1"),
                TunnelAction::Release,
            ),
            (
                "moved pools",
                TunnelKind::Ipip,
                vec![cross.clone()],
                both(),
                ip("10.65.0.1"),
                TunnelAction::Replace(vec![PoolName::new("cross").unwrap()]),
            ),
            (
                "vxlan v4",
                TunnelKind::VxlanV4,
                vec![vx4.clone(), vx6.clone()],
                both(),
                None,
                n(&["vx4"]),
            ),
            (
                "vxlan v6",
                TunnelKind::VxlanV6,
                vec![vx4.clone(), vx6.clone()],
                both(),
                None,
                n(&["vx6"]),
            ),
            (
                "vxlan v6 without a v6 node address",
                TunnelKind::VxlanV6,
                vec![vx6.clone()],
                v4_only,
                None,
                TunnelAction::Keep,
            ),
            (
                "ipip is not vxlan",
                TunnelKind::VxlanV4,
                vec![ipip.clone()],
                both(),
                None,
                TunnelAction::Keep,
            ),
        ];
        for (what, kind, pools, det, held, want) in cases {
            assert_eq!(tunnel_action(kind, &pools, &det, held), want, "{what}");
        }
    }

    #[test]
    fn node_resource_sets_only_the_agents_fields() {
        let existing = ClusterResource::from_parts(
            ResourceKind::ServalNode,
            "n1",
            [("rack".to_owned(), "a".to_owned())].into(),
            serde_json::json!({"bgp": {"routeReflectorClusterID": "224.0.0.1",
                                       "ipv4Address": "198.51.100.1/24", "asNumber": 65001}}),
        )
        .unwrap();
        let tunnels = TunnelAddrs {
            ipip: None,
            vxlan_v4: Some("10.67.0.1".parse().unwrap()),
            vxlan_v6: None,
        };
        let labels: BTreeMap<String, String> = [("zone".to_owned(), "z1".to_owned())].into();
        let n1 = NodeName::new("n1").unwrap();
        let r = node_resource(Some(&existing), &n1, &both(), None, &labels, &tunnels);
        let Spec::ServalNode(s) = &r.spec else {
            panic!("{r:?}")
        };
        let bgp = s.bgp.as_ref().unwrap();
        assert_eq!(
            bgp.ipv4_address,
            both().v4,
            "detected address replaces the old one"
        );
        assert_eq!(bgp.ipv6_address, both().v6);
        assert_eq!(
            bgp.as_number,
            Some(65001),
            "no --as-number: the stored AS stays"
        );
        assert_eq!(
            bgp.route_reflector_cluster_id,
            Some("224.0.0.1".parse().unwrap()),
            "operator's field kept"
        );
        assert_eq!(s.ipv4_vxlan_tunnel_addr, tunnels.vxlan_v4);
        assert_eq!(
            s.vxlan_tunnel_mac_addr,
            Some(MacAddr(Mac::vtep("n1", false)))
        );
        assert_eq!(s.vxlan_tunnel_mac_addr_v6, None);
        assert_eq!(r.labels.len(), 2, "{:?}", r.labels);
        let r2 = node_resource(Some(&r), &n1, &both(), Some(65002), &labels, &tunnels);
        let Spec::ServalNode(s2) = &r2.spec else {
            panic!()
        };
        assert_eq!(s2.bgp.as_ref().unwrap().as_number, Some(65002));
        // The result passes the resource's own checks.
        ClusterResource::from_stored(&r2.to_stored())
            .unwrap()
            .unwrap();
        assert_eq!(tunnel_addrs(Some(s2)), tunnels);
    }
}
