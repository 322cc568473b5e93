//! What this node wants, as a pure function of what the cluster says: the BGP peers and
//! their settings, the prefixes to advertise, the natOutgoing pools, the tunnel devices,
//! and the kernel route of each prefix the speaker learned.
//!
//! ```text
//!   Snapshot (nodes, BGPConfiguration, BGPPeers, BGPFilters, pools, blocks, …)
//!        │ desired()                               │ route_for(prefix, best path)
//!        ▼                                         ▼
//!   Desired { peers, announcements, nat, tunnels, own_blocks }    RouteTarget
//! ```
//!
//! Nothing here does IO or keeps time: the agent (`node/`) builds the snapshot from the
//! datastore and applies the difference to the speaker and the kernel. Every decision is
//! table-tested below.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use bgp::config::{Announcement, PeerBfd, PeerConfig, PolicyRef};
use bgp::policy::{Actions, Match, Policy, PrefixEntry, Rule, Verdict};
use bgp::rib::{BestRoute, NextHopMode};
use bgp::{Asn, Family, RouterId};
use ipam::model::{EncapMode, IpPool};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::node::dataplane::{self, DesiredRoutes, Mac, NatPool, RouteTarget, VxlanPeer};
use crate::node::services::{self, ServiceTable};
use crate::resources::bfd_profile::DEFAULT_MINIMUM_TTL;
use crate::resources::bgp_configuration::DEFAULT_AS;
use crate::resources::bgp_filter::{
    BGPFilterRule, FilterAction, FilterPeerType, MatchOperator, RouteSource,
};
use crate::resources::bgp_peer::{FailureDetectionMode, ReversePeering, SourceAddress};
use crate::resources::common::{BgpPassword, GoDuration};
use crate::resources::{
    parse_community, BFDProfileSpec, BGPConfigurationSpec, BGPFilterSpec, BGPPeerSpec, Community,
    ServalNodeSpec,
};

/// One node as the cluster describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    /// `metadata.labels`: what selectors match.
    pub labels: BTreeMap<String, String>,
    pub spec: ServalNodeSpec,
}

impl NodeInfo {
    fn address(&self, v4: bool) -> Option<IpAddr> {
        let bgp = self.spec.bgp.as_ref()?;
        let net = if v4 {
            bgp.ipv4_address
        } else {
            bgp.ipv6_address
        }?;
        Some(net.addr())
    }

    /// The node's address of one family with the prefix length it publishes.
    fn subnet(&self, v4: bool) -> Option<IpNet> {
        let bgp = self.spec.bgp.as_ref()?;
        if v4 {
            bgp.ipv4_address
        } else {
            bgp.ipv6_address
        }
    }

    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        [true, false].into_iter().filter_map(|v4| self.address(v4))
    }

    fn asn(&self, config: &BGPConfigurationSpec) -> Asn {
        Asn(self
            .spec
            .bgp
            .as_ref()
            .and_then(|b| b.as_number)
            .or(config.as_number)
            .unwrap_or(DEFAULT_AS))
    }

    fn cluster_id(&self) -> Option<Ipv4Addr> {
        self.spec
            .bgp
            .as_ref()
            .and_then(|b| b.route_reflector_cluster_id)
    }

    /// The node's VTEP for prefixes of one family, if it has a VXLAN address.
    fn vtep(&self, name: &str, v4: bool) -> Option<(IpAddr, Mac)> {
        if v4 {
            let addr = self.spec.ipv4_vxlan_tunnel_addr?;
            let mac = self
                .spec
                .vxlan_tunnel_mac_addr
                .map_or_else(|| Mac::vtep(name, false), |m| m.0);
            Some((IpAddr::V4(addr), mac))
        } else {
            let addr = self.spec.ipv6_vxlan_tunnel_addr?;
            let mac = self
                .spec
                .vxlan_tunnel_mac_addr_v6
                .map_or_else(|| Mac::vtep(name, true), |m| m.0);
            Some((IpAddr::V6(addr), mac))
        }
    }
}

/// Everything the decisions depend on. `Debug` leaves out the contents of password files.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// This node's name.
    pub node: String,
    /// This node's BGP identifier.
    pub router_id: Option<Ipv4Addr>,
    /// Every address of this node with its prefix length: the L2 subnets it is on.
    pub local_subnets: Vec<IpNet>,
    /// Every ServalNode, this one included, by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// The `default` BGPConfiguration (or defaults when there is none).
    pub config: BGPConfigurationSpec,
    /// BGPPeers by name.
    pub peers: BTreeMap<String, BGPPeerSpec>,
    /// BGPFilters by name.
    pub filters: BTreeMap<String, BGPFilterSpec>,
    /// BFDProfiles by name.
    pub bfd_profiles: BTreeMap<String, BFDProfileSpec>,
    pub pools: Vec<IpPool>,
    /// Blocks affine to this node.
    pub own_blocks: BTreeSet<IpNet>,
    /// Addresses allocated to this node's pods from blocks affine to other nodes.
    pub borrowed: BTreeSet<IpAddr>,
    /// Contents of password files that resources refer to, read by the agent.
    pub password_files: BTreeMap<PathBuf, String>,
    /// Services and this node's ready endpoints (the kubernetes datastore's Service
    /// watch; empty on the others).
    pub services: Arc<ServiceTable>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Snapshot {
            node,
            router_id,
            local_subnets,
            nodes,
            config,
            peers,
            filters,
            bfd_profiles,
            pools,
            own_blocks,
            borrowed,
            password_files,
            services,
        } = self;
        f.debug_struct("Snapshot")
            .field("node", node)
            .field("router_id", router_id)
            .field("local_subnets", local_subnets)
            .field("nodes", nodes)
            .field("config", config)
            .field("peers", peers)
            .field("filters", filters)
            .field("bfd_profiles", bfd_profiles)
            .field("pools", pools)
            .field("own_blocks", own_blocks)
            .field("borrowed", borrowed)
            .field("password_files", &password_files.keys().collect::<Vec<_>>())
            .field("services", &services.len())
            .finish()
    }
}

impl Snapshot {
    fn me(&self) -> Option<&NodeInfo> {
        self.nodes.get(&self.node)
    }

    fn my_address(&self, v4: bool) -> Option<IpAddr> {
        self.me().and_then(|n| n.address(v4))
    }

    fn pool_of(&self, prefix: &IpNet) -> Option<&IpPool> {
        self.pools.iter().find(|p| p.cidr.contains(prefix))
    }

    fn on_local_subnet(&self, ip: IpAddr) -> bool {
        self.local_subnets.iter().any(|n| n.contains(&ip))
    }

    /// Whether `ip` is an address of this node (or inside one of its blocks).
    fn is_mine(&self, ip: IpAddr) -> bool {
        self.local_subnets.iter().any(|n| n.addr() == ip)
            || self.me().is_some_and(|n| n.addresses().any(|a| a == ip))
            || self.own_blocks.iter().any(|b| b.contains(&ip))
    }

    /// The node whose address is `ip`.
    fn node_at(&self, ip: IpAddr) -> Option<(&String, &NodeInfo)> {
        self.nodes
            .iter()
            .find(|(_, n)| n.addresses().any(|a| a == ip))
    }
}

/// How a peer came to be configured, as `serval node status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerType {
    /// The node-to-node mesh.
    Mesh,
    /// A BGPPeer for every node.
    Global,
    /// A BGPPeer for this node (`node` or `nodeSelector`).
    NodeSpecific,
    /// A node this node reflects routes to (it is a route reflector).
    RrClient,
    /// A node selected by `peerSelector` that is not our client (a route reflector of
    /// ours, or another reflector).
    NodePeer,
}

impl PeerType {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Mesh => "node-to-node mesh",
            PeerType::Global => "global",
            PeerType::NodeSpecific => "node specific",
            PeerType::RrClient => "rr-client",
            PeerType::NodePeer => "node peer",
        }
    }
}

/// A tunnel device this node needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelWant {
    /// The pools asking for it, named in errors.
    pub requested_by: String,
    /// This node's address on it, when one has been allocated.
    pub address: Option<IpAddr>,
    /// The device MAC (VXLAN).
    pub mac: Option<Mac>,
}

/// The tunnel devices this node needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tunnels {
    pub ipip: Option<TunnelWant>,
    pub vxlan_v4: Option<TunnelWant>,
    pub vxlan_v6: Option<TunnelWant>,
}

/// What this node wants.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The speaker's AS.
    pub asn: Asn,
    pub router_id: Option<RouterId>,
    /// RFC 4456 cluster id, when this node is a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Port of the mesh sessions.
    pub listen_port: u16,
    pub peers: BTreeMap<IpAddr, PeerConfig>,
    pub peer_types: BTreeMap<IpAddr, PeerType>,
    pub announcements: BTreeMap<IpNet, Announcement>,
    /// Every pool, for NAT's "outside all pools".
    pub nat: Vec<NatPool>,
    pub tunnels: Tunnels,
    /// Blocks blackholed here.
    pub own_blocks: BTreeSet<IpNet>,
    /// Host routes to peers reached through a gateway (`reachableBy`).
    pub static_routes: BTreeMap<IpNet, RouteTarget>,
    /// What could not be honoured, naming the resource and why.
    pub problems: Vec<String>,
}

/// The standard BGP port.
const BGP_PORT: u16 = 179;

/// Computes what this node wants from `snap`.
pub fn desired(snap: &Snapshot) -> Desired {
    let me = snap.me().cloned().unwrap_or_default();
    let mut d = Desired {
        asn: me.asn(&snap.config),
        router_id: snap.router_id.map(RouterId),
        cluster_id: me.cluster_id(),
        listen_port: snap.config.listen_port.unwrap_or(BGP_PORT),
        peers: BTreeMap::new(),
        peer_types: BTreeMap::new(),
        announcements: BTreeMap::new(),
        nat: Vec::new(),
        tunnels: Tunnels::default(),
        own_blocks: BTreeSet::new(),
        static_routes: BTreeMap::new(),
        problems: Vec::new(),
    };
    peers(snap, &me, &mut d);
    exports(snap, &me, &mut d);
    announcements(snap, &mut d);
    d.nat = snap
        .pools
        .iter()
        .map(|p| NatPool {
            cidr: p.cidr,
            nat_outgoing: p.nat_outgoing,
        })
        .collect();
    d.tunnels = tunnels(snap, &me);
    d.own_blocks = snap.own_blocks.clone();
    d
}

// ---------------------------------------------------------------------------------------
// Peers

fn password(snap: &Snapshot, p: &BgpPassword, what: &str) -> Result<Option<String>, String> {
    if let Some(v) = &p.value {
        return Ok(Some(v.clone()));
    }
    if let Some(f) = &p.file {
        return match snap.password_files.get(f) {
            Some(v) => Ok(Some(v.clone())),
            None => Err(format!(
                "{what}: password file {} cannot be read",
                f.display()
            )),
        };
    }
    if let Some(r) = &p.secret_key_ref {
        if r.optional == Some(true) {
            return Ok(None);
        }
        return Err(format!(
            "{what}: password from Secret {}/{} needs the kubernetes datastore; \
             on file and etcd datastores give password.value or password.file",
            r.name, r.key
        ));
    }
    Ok(None)
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }
}

/// Adds a peer unless one is already configured at that address (explicit peerings
/// are added before the mesh, so they win).
fn add_peer(d: &mut Desired, peer: PeerConfig, kind: PeerType) {
    let addr = peer.address;
    if d.peers.contains_key(&addr) {
        return;
    }
    d.peers.insert(addr, peer);
    d.peer_types.insert(addr, kind);
}

/// Whether a BGPPeer applies to this node, and as which kind.
fn explicit_kind(snap: &Snapshot, me: &NodeInfo, p: &BGPPeerSpec) -> Option<PeerType> {
    match (&p.node, &p.node_selector) {
        (Some(n), _) if *n == snap.node => Some(PeerType::NodeSpecific),
        (Some(_), _) => None,
        (None, Some(sel)) if sel.matches(&me.labels) => Some(PeerType::NodeSpecific),
        (None, Some(_)) => None,
        (None, None) => Some(PeerType::Global),
    }
}

/// The external peers of this node: the `peerIP` of every BGPPeer that applies to it
/// (routers outside the cluster, or whatever the operator names that way; an address
/// named there is external even when a serval node has it, as the peering itself is).
fn external_peers<'a>(snap: &'a Snapshot, me: &'a NodeInfo) -> impl Iterator<Item = IpAddr> + 'a {
    snap.peers
        .values()
        .filter(|p| explicit_kind(snap, me, p).is_some())
        .filter_map(|p| p.peer_ip.map(|a| a.ip))
}

fn peers(snap: &Snapshot, me: &NodeInfo, d: &mut Desired) {
    let my_addrs: BTreeSet<IpAddr> = me.addresses().collect();
    // Explicit BGPPeers first: node-specific, then global, then by name.
    let mut applicable: Vec<(&String, &BGPPeerSpec, PeerType)> = snap
        .peers
        .iter()
        .filter_map(|(name, p)| explicit_kind(snap, me, p).map(|kind| (name, p, kind)))
        .collect();
    applicable.sort_by_key(|(name, _, kind)| (*kind, (*name).clone()));
    for (name, p, kind) in applicable {
        let what = format!("BGPPeer {name}");
        let (pw, policies) = match session_basics(snap, p, &what, d.asn) {
            Ok(v) => v,
            Err(e) => {
                d.problems.push(e);
                continue;
            }
        };
        if let Some(addr) = p.peer_ip {
            if my_addrs.contains(&addr.ip) {
                continue;
            }
            let mut cfg = PeerConfig::new(addr.ip, Asn(p.as_number.unwrap_or(0)));
            cfg.name = Some(name.clone());
            if let Some(port) = addr.port {
                cfg.port = port;
            }
            apply_peer_spec(snap, p, pw.clone(), &policies, &mut cfg);
            if let Some(gw) = p.reachable_by {
                if gw.is_ipv4() == addr.ip.is_ipv4() {
                    d.static_routes
                        .insert(IpNet::from(addr.ip), RouteTarget::direct(gw));
                    if cfg.ttl_security.is_none() && cfg.asn != cfg.local_asn.unwrap_or(d.asn) {
                        cfg.multihop = Some(2);
                    }
                } else {
                    d.problems.push(format!(
                        "{what}: reachableBy {gw} is not of the family of {}",
                        addr.ip
                    ));
                }
            }
            cfg.bfd = peer_bfd(snap, p, &what, &cfg, &mut d.problems);
            add_peer(d, cfg, kind);
        } else if let Some(sel) = &p.peer_selector {
            for (other_name, other) in &snap.nodes {
                if *other_name == snap.node || !sel.matches(&other.labels) {
                    continue;
                }
                node_peer(snap, me, (other_name, other), p, (&pw, &policies), d);
            }
        }
    }
    reverse_peers(snap, me, d);
    if snap.config.node_to_node_mesh_enabled == Some(false) {
        return;
    }
    let mesh_pw = match snap
        .config
        .node_mesh_password
        .as_ref()
        .map(|pw| password(snap, pw, "BGPConfiguration default nodeMeshPassword"))
    {
        Some(Err(e)) => {
            d.problems.push(e);
            return;
        }
        Some(Ok(v)) => v,
        None => None,
    };
    for (other_name, other) in &snap.nodes {
        if *other_name == snap.node {
            continue;
        }
        for v4 in [true, false] {
            let (Some(theirs), Some(mine)) = (other.address(v4), me.address(v4)) else {
                continue;
            };
            let mut cfg = PeerConfig::new(theirs, other.asn(&snap.config));
            cfg.name = Some(other_name.clone());
            cfg.port = d.listen_port;
            cfg.families = vec![family_of(theirs)];
            cfg.source_address = Some(mine);
            cfg.password = mesh_pw.clone();
            cfg.passive = node_pair_passive(Some(mine), theirs);
            cfg.connect_retry = Some(NODE_PAIR_CONNECT_RETRY_SECS);
            cfg.ttl_security = node_pair_gtsm(me, other, v4);
            cfg.graceful_on_hold_expiry = false;
            cfg.restart_time = snap
                .config
                .node_mesh_max_restart_time
                .map(GoDuration::restart_secs);
            cfg.bfd = snap.config.node_mesh_bfd_profile.as_ref().and_then(|name| {
                bfd_of_profile(
                    snap,
                    name,
                    "BGPConfiguration default nodeMeshBFDProfile",
                    &cfg,
                    &mut d.problems,
                )
            });
            add_peer(d, cfg, PeerType::Mesh);
        }
    }
}

/// The sessions of a `peerSelector` peering with one other serval node, one per family
/// both nodes have an address of.
fn node_peer(
    snap: &Snapshot,
    me: &NodeInfo,
    (other_name, other): (&String, &NodeInfo),
    p: &BGPPeerSpec,
    (pw, policies): (&Option<String>, &PeerPolicies),
    d: &mut Desired,
) {
    let client = d.cluster_id.is_some() && other.cluster_id().is_none();
    for v4 in [true, false] {
        let (Some(theirs), Some(_)) = (other.address(v4), me.address(v4)) else {
            continue;
        };
        let mut cfg = PeerConfig::new(theirs, other.asn(&snap.config));
        cfg.name = Some(other_name.clone());
        cfg.port = d.listen_port;
        cfg.families = vec![family_of(theirs)];
        cfg.route_reflector_client = client;
        cfg.passive = node_pair_passive(mine_of(me, v4), theirs);
        cfg.connect_retry = Some(NODE_PAIR_CONNECT_RETRY_SECS);
        cfg.graceful_on_hold_expiry = false;
        apply_peer_spec(snap, p, pw.clone(), policies, &mut cfg);
        if cfg.ttl_security.is_none() {
            cfg.ttl_security = node_pair_gtsm(me, other, v4);
        }
        cfg.bfd = peer_bfd(
            snap,
            p,
            &format!("BGPPeer {}", cfg.name.as_deref().unwrap_or_default()),
            &cfg,
            &mut d.problems,
        );
        let kind = if client {
            PeerType::RrClient
        } else {
            PeerType::NodePeer
        };
        add_peer(d, cfg, kind);
    }
}

/// Calico's `reversePeering: Auto` (the default): a node that a BGPPeer's
/// `peerSelector` selects peers back with every other node the BGPPeer applies to
/// (`node`, `nodeSelector`, or all), with the BGPPeer's settings, so that one BGPPeer
/// makes both ends of each session. Added after the explicit peerings: where another
/// BGPPeer already names the pair, it wins.
fn reverse_peers(snap: &Snapshot, me: &NodeInfo, d: &mut Desired) {
    for (name, p) in &snap.peers {
        let Some(sel) = &p.peer_selector else {
            continue;
        };
        if p.reverse_peering == Some(ReversePeering::Manual) || !sel.matches(&me.labels) {
            continue;
        }
        let what = format!("BGPPeer {name} (reverse peering)");
        let (pw, policies) = match session_basics(snap, p, &what, d.asn) {
            Ok(v) => v,
            Err(e) => {
                d.problems.push(e);
                continue;
            }
        };
        for (other_name, other) in &snap.nodes {
            let applies = match (&p.node, &p.node_selector) {
                (Some(n), _) => n == other_name,
                (None, Some(s)) => s.matches(&other.labels),
                (None, None) => true,
            };
            if *other_name == snap.node || !applies {
                continue;
            }
            node_peer(snap, me, (other_name, other), p, (&pw, &policies), d);
        }
    }
}

fn mine_of(me: &NodeInfo, v4: bool) -> Option<IpAddr> {
    me.address(v4)
}

/// How soon the connecting side of a node pair dials again after a failed attempt. Agents
/// start together (a new cluster, a DaemonSet rollout), the lower address often dials
/// before the other agent listens, and it is the only one that dials
/// ([`node_pair_passive`]): with the speaker's default ConnectRetry (5 s) a refused
/// connection held the pair down 4–5 s, which was a whole cluster's start-up time.
const NODE_PAIR_CONNECT_RETRY_SECS: u16 = 1;

/// Between two serval nodes only the one with the lower address connects; the other
/// waits for it. Each pair then has one TCP connection from the start: no RFC 4271
/// §6.8 collision to resolve when the mesh comes up all at once, and a restarted node's
/// connection is not crossed by one its peer opens while it is still in its idle hold.
fn node_pair_passive(mine: Option<IpAddr>, theirs: IpAddr) -> bool {
    mine.is_some_and(|m| m > theirs)
}

/// RFC 5082 GTSM between two serval nodes on one L2 subnet: each sends with TTL 255 and
/// takes only what arrives with 255, what nothing but a host on the link can send. A pod
/// (even one whose traffic its node masquerades) or anything routed is at least one hop
/// further away. Both nodes decide from the same two published addresses, so they agree:
/// on only when each node's address lies in the other's subnet. Where the masks disagree
/// one of them reaches the other through a router, and GTSM would cut the session; it
/// stays off there.
fn node_pair_gtsm(me: &NodeInfo, other: &NodeInfo, v4: bool) -> Option<u8> {
    let (mine, theirs) = (me.subnet(v4)?, other.subnet(v4)?);
    (mine.contains(&theirs.addr()) && theirs.contains(&mine.addr())).then_some(1)
}

/// The BFD of one session of a BGPPeer, from its `bfdProfile` and
/// `failureDetectionMode` (`None` is no BFD: the agent's speaker has no speaker-wide
/// default). `BFDIfDirectlyConnected` asks for BFD only where the peer's address is on a
/// subnet of one of this node's interfaces, with the profile's timers or MetalLB's
/// defaults (300 ms × 3).
fn peer_bfd(
    snap: &Snapshot,
    p: &BGPPeerSpec,
    what: &str,
    cfg: &PeerConfig,
    problems: &mut Vec<String>,
) -> Option<PeerBfd> {
    let directly = match p.failure_detection_mode {
        Some(FailureDetectionMode::BFDIfDirectlyConnected) => {
            if !snap.on_local_subnet(cfg.address) {
                return None;
            }
            true
        }
        Some(FailureDetectionMode::None) | None => false,
    };
    match (&p.bfd_profile, directly) {
        (Some(name), _) => bfd_of_profile(snap, name, what, cfg, problems),
        (None, true) => Some(PeerBfd::On(BFDProfileSpec::default().settings())),
        (None, false) => None,
    }
}

/// BFD with the named profile's timers; a missing profile is a problem and the session
/// runs without BFD (its BGP hold timer still detects a dead peer, only later), rather
/// than not at all. A `minimumTtl` the speaker will not use is reported.
fn bfd_of_profile(
    snap: &Snapshot,
    name: &str,
    what: &str,
    cfg: &PeerConfig,
    problems: &mut Vec<String>,
) -> Option<PeerBfd> {
    let mut problem = |text: String| {
        if !problems.contains(&text) {
            problems.push(text);
        }
    };
    let Some(profile) = snap.bfd_profiles.get(name) else {
        problem(format!(
            "{what}: BFDProfile {name} does not exist (or is refused: see its own problem); \
             the sessions run without BFD"
        ));
        return None;
    };
    if let Some(asked) = profile.minimum_ttl {
        // The speaker's multihop minimum: 255 minus the routers the peering allows
        // between (RFC 5883 §5), 254 when the peering says nothing.
        let used = match cfg.multihop.or(cfg.ttl_security) {
            Some(h) if h > 1 => 255u8.saturating_sub(h - 1),
            _ => DEFAULT_MINIMUM_TTL,
        };
        if asked != used {
            problem(format!(
                "{what}: BFDProfile {name} minimumTtl {asked} is not applied to {}: serval's \
                 multihop BFD takes packets with TTL {used} or more on this peering (from its \
                 ttlSecurity or reachableBy)",
                cfg.address
            ));
        }
    }
    Some(PeerBfd::On(profile.settings()))
}

fn apply_peer_spec(
    snap: &Snapshot,
    p: &BGPPeerSpec,
    password: Option<String>,
    policies: &PeerPolicies,
    cfg: &mut PeerConfig,
) {
    cfg.password = password;
    if p.next_hop() != NextHopMode::Auto {
        cfg.next_hop = p.next_hop();
    }
    if let Some(asn) = p.local_as_number {
        cfg.local_asn = Some(Asn(asn));
    }
    if p.source_address.unwrap_or_default() == SourceAddress::UseNodeIP {
        cfg.source_address = snap.my_address(cfg.address.is_ipv4());
    }
    cfg.ttl_security = p.ttl_security;
    cfg.allowas_in = p.num_allowed_local_as_numbers.unwrap_or(0);
    if let Some(k) = p.keep_alive_time {
        let k = k.secs_u16().max(1);
        cfg.keepalive = Some(k);
        cfg.hold_time = Some(k.saturating_mul(3));
    }
    if let Some(t) = p.max_restart_time {
        cfg.restart_time = Some(t.restart_secs());
    }
    cfg.max_prefix = p.max_prefix_config();
    // A filter's `peerType` rules apply by the type of this session.
    let node_as = snap.me().map_or(Asn(DEFAULT_AS), |m| m.asn(&snap.config));
    let policies = if cfg.asn == cfg.local_asn.unwrap_or(node_as) {
        &policies.ibgp
    } else {
        &policies.ebgp
    };
    cfg.import = policies.0.clone().map(PolicyRef::Inline);
    // The filters' export rules only: `exports` adds the default after them.
    cfg.export = policies.1.clone().map(PolicyRef::Inline);
}

/// A peer's filter policies (import, export), compiled for an eBGP and for an iBGP
/// session: a rule with `peerType` is in one of them only.
#[derive(Clone, Debug, Default)]
struct PeerPolicies {
    ebgp: (Option<Policy>, Option<Policy>),
    ibgp: (Option<Policy>, Option<Policy>),
}

/// What every session a BGPPeer makes needs first: its password and its filters (for
/// the AS serval speaks as on it). An error names the peer (`what`).
fn session_basics(
    snap: &Snapshot,
    p: &BGPPeerSpec,
    what: &str,
    node_asn: Asn,
) -> Result<(Option<String>, PeerPolicies), String> {
    let pw = match &p.password {
        Some(pw) => password(snap, pw, what)?,
        None => None,
    };
    let local_as = p.local_as_number.map(Asn).unwrap_or(node_asn);
    Ok((pw, filters(snap, &p.filters, what, local_as)?))
}

/// The import and export policies of a peer's filters, in order; `None` when the peer
/// has no filters. Import falls through to accept; the export rules are completed by
/// [`export_policy`]. `local_as`: the AS of the peering's sessions (what
/// `prependASPath` may prepend).
fn filters(
    snap: &Snapshot,
    names: &[String],
    what: &str,
    local_as: Asn,
) -> Result<PeerPolicies, String> {
    Ok(PeerPolicies {
        ebgp: filters_for(snap, names, what, local_as, FilterPeerType::Ebgp)?,
        ibgp: filters_for(snap, names, what, local_as, FilterPeerType::Ibgp)?,
    })
}

/// [`filters`] for sessions of one type.
fn filters_for(
    snap: &Snapshot,
    names: &[String],
    what: &str,
    local_as: Asn,
    session: FilterPeerType,
) -> Result<(Option<Policy>, Option<Policy>), String> {
    if names.is_empty() {
        return Ok((None, None));
    }
    let mut import = Policy::accept_all();
    let mut export = Policy::accept_all();
    for name in names {
        let f = snap.filters.get(name).ok_or_else(|| {
            format!("{what}: BGPFilter {name} does not exist; the peering is not configured")
        })?;
        for (list, v4, rules) in f.lists() {
            let into = if list.starts_with("import") {
                &mut import
            } else {
                &mut export
            };
            for (i, r) in rules.iter().enumerate() {
                // A rule for the other session type, or one that matches routes taken
                // from a kernel interface (serval's speaker takes none), matches nothing
                // here.
                if r.peer_type.is_some_and(|t| t != session) || r.interface.is_some() {
                    continue;
                }
                let at = format!("{what}: BGPFilter {name} {list}[{i}]");
                let (matches, then) = rule_extras(r, &at, local_as)?;
                let entry = match (r.cidr, r.match_operator) {
                    (None, _) => {
                        let (any, max) = if v4 {
                            (IpNet::V4(Default::default()), 32)
                        } else {
                            (IpNet::V6(Default::default()), 128)
                        };
                        PrefixEntry {
                            prefix: any,
                            ge: None,
                            le: Some(max),
                        }
                    }
                    (Some(cidr), Some(MatchOperator::Equal)) => PrefixEntry {
                        prefix: cidr,
                        ge: None,
                        le: None,
                    },
                    (Some(cidr), Some(MatchOperator::In)) => {
                        let max = cidr.max_prefix_len();
                        let pl = r.prefix_length;
                        let ge = pl.and_then(|p| p.min).unwrap_or(cidr.prefix_len());
                        let le = pl.and_then(|p| p.max).unwrap_or(max);
                        PrefixEntry {
                            prefix: cidr,
                            ge: Some(ge.max(cidr.prefix_len())),
                            le: Some(le),
                        }
                    }
                    (Some(_), op) => {
                        return Err(format!(
                            "{what}: BGPFilter {name} {list}[{i}]: matchOperator {op:?} is not \
                             supported yet (use Equal or In); the peering is not configured"
                        ))
                    }
                };
                into.rules.push(Rule {
                    name: Some(format!("{name}/{list}[{i}]")),
                    matches: Match {
                        prefix: vec![entry],
                        ..matches
                    },
                    then: Actions {
                        action: match r.action {
                            FilterAction::Accept => Verdict::Accept,
                            FilterAction::Reject => Verdict::Reject,
                        },
                        ..then
                    },
                });
            }
        }
    }
    Ok((Some(import), Some(export)))
}

/// A rule's conditions beyond the prefix (`source`, `communities`, `asPathPrefix`) and
/// its `operations`, as the speaker's policy engine writes them.
fn rule_extras(r: &BGPFilterRule, at: &str, local_as: Asn) -> Result<(Match, Actions), String> {
    let mut m = Match::default();
    let mut then = Actions::default();
    if r.source == Some(RouteSource::RemotePeers) {
        m.local_origin = Some(false);
    }
    let community = |v: &str| {
        parse_community(v).map_err(|e| format!("{at}: {e}; the peering is not configured"))
    };
    for v in r.communities.iter().flat_map(|c| &c.values) {
        match community(v)? {
            Community::Standard(c) => m.community_all.push(c),
            Community::Large(c) => m.large_community_all.push(c),
        }
    }
    if !r.as_path_prefix.is_empty() {
        // `_` is a boundary (start, end, space): the path starts with these ASes.
        let path: Vec<String> = r.as_path_prefix.iter().map(u32::to_string).collect();
        m.as_path_regex = Some(format!("^{}_", path.join("_")));
    }
    for op in &r.operations {
        if let Some(c) = &op.add_community {
            match community(&c.value)? {
                Community::Standard(c) => then.add_communities.push(c),
                Community::Large(c) => then.add_large_communities.push(c),
            }
        }
        if let Some(p) = &op.prepend_as_path {
            if p.prefix.iter().any(|a| Asn(*a) != local_as) {
                return Err(format!(
                    "{at}: prependASPath {:?}: serval prepends only the session's own AS \
                     ({local_as}); the peering is not configured",
                    p.prefix
                ));
            }
            let n = u8::try_from(p.prefix.len()).unwrap_or(u8::MAX);
            then.prepend = then.prepend.saturating_add(n);
        }
    }
    Ok((m, then))
}

// ---------------------------------------------------------------------------------------
// Export

/// Gives every peer its export policy (see [`export_policy`]).
fn exports(snap: &Snapshot, me: &NodeInfo, d: &mut Desired) {
    let external: BTreeSet<IpNet> = external_peers(snap, me).map(IpNet::from).collect();
    let external: Vec<IpNet> = external.into_iter().collect();
    for (addr, cfg) in d.peers.iter_mut() {
        let Some(kind) = d.peer_types.get(addr) else {
            continue;
        };
        let filter_rules = match cfg.export.take() {
            Some(PolicyRef::Inline(p)) => p.rules,
            _ => Vec::new(),
        };
        let policy = export_policy(snap, *kind, filter_rules, &external);
        cfg.export = (policy != Policy::accept_all()).then_some(PolicyRef::Inline(policy));
    }
}

/// What a peer of `kind` is sent: the export rules of its BGPFilters first (as Calico
/// evaluates a BGPFilter before its own export filter: an `Accept` there exports a
/// route the default would not, a `Reject` withholds one it would), then the default.
///
/// The default keeps a node from being a transit router between the routers it peers
/// with:
/// * to an external peer (a BGPPeer with `peerIP`): the routes the node originates
///   (its blocks, borrowed addresses, service addresses) and routes inside an IP pool
///   (without `disableBGPExport`) learned from other serval nodes; never a route learned
///   from an external peer, not even one inside a pool; nothing else;
/// * to serval nodes (the mesh, `peerSelector` peers, route-reflector clients): every
///   route except those learned from external peers, so that a reflector passes on its
///   clients' routes and each node takes the outside world's routes from its own peers.
fn export_policy(
    snap: &Snapshot,
    kind: PeerType,
    filter_rules: Vec<Rule>,
    external: &[IpNet],
) -> Policy {
    let mut rules = filter_rules;
    let rule = |name: &str, matches: Match, action: Verdict| Rule {
        name: Some(format!("serval/{name}")),
        matches,
        then: Actions {
            action,
            ..Actions::default()
        },
    };
    // An empty list in a Match matches everything: only with addresses.
    if !external.is_empty() {
        rules.push(rule(
            "not-transit",
            Match {
                learned_from: external.to_vec(),
                ..Match::default()
            },
            Verdict::Reject,
        ));
    }
    match kind {
        PeerType::Global | PeerType::NodeSpecific => {
            rules.push(rule(
                "own-routes",
                Match {
                    local_origin: Some(true),
                    ..Match::default()
                },
                Verdict::Accept,
            ));
            let pools: Vec<PrefixEntry> = snap
                .pools
                .iter()
                .filter(|p| !p.disable_bgp_export)
                .map(|p| PrefixEntry {
                    prefix: p.cidr,
                    ge: None,
                    le: Some(p.cidr.max_prefix_len()),
                })
                .collect();
            if !pools.is_empty() {
                rules.push(rule(
                    "pools",
                    Match {
                        prefix: pools,
                        ..Match::default()
                    },
                    Verdict::Accept,
                ));
            }
            Policy {
                rules,
                default: Verdict::Reject,
            }
        }
        PeerType::Mesh | PeerType::RrClient | PeerType::NodePeer => Policy {
            rules,
            default: Verdict::Accept,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Announcements

fn announcements(snap: &Snapshot, d: &mut Desired) {
    let mut prefixes: BTreeSet<IpNet> = BTreeSet::new();
    for block in &snap.own_blocks {
        match snap.pool_of(block) {
            Some(pool) if pool.disable_bgp_export => {}
            Some(_) => {
                prefixes.insert(*block);
            }
            // A block whose pool was deleted keeps being advertised while pods use it.
            None => {
                prefixes.insert(*block);
            }
        }
    }
    for ip in &snap.borrowed {
        let host = IpNet::from(*ip);
        if snap.own_blocks.iter().any(|b| b.contains(ip)) {
            continue;
        }
        if snap.pool_of(&host).is_some_and(|p| p.disable_bgp_export) {
            continue;
        }
        prefixes.insert(host);
    }
    let c = &snap.config;
    prefixes.extend(services::advertised(c, &snap.services));
    for prefix in prefixes {
        let mut a = Announcement::new(prefix);
        for adv in &c.prefix_advertisements {
            if !adv.cidr.contains(&prefix) {
                continue;
            }
            for name_or_value in &adv.communities {
                let value = c
                    .communities
                    .iter()
                    .find(|n| n.name == *name_or_value)
                    .map_or(name_or_value.as_str(), |n| n.value.as_str());
                match parse_community(value) {
                    Ok(Community::Standard(v)) if !a.communities.contains(&v) => {
                        a.communities.push(v)
                    }
                    Ok(Community::Large(v)) if !a.large_communities.contains(&v) => {
                        a.large_communities.push(v)
                    }
                    Ok(_) => {}
                    Err(e) => d.problems.push(format!(
                        "BGPConfiguration prefixAdvertisements {}: {e}",
                        adv.cidr
                    )),
                }
            }
        }
        a.communities.sort();
        a.large_communities.sort();
        d.announcements.insert(prefix, a);
    }
}

// ---------------------------------------------------------------------------------------
// Tunnels

fn encap_used(mode: EncapMode) -> bool {
    mode != EncapMode::Never
}

fn tunnels(snap: &Snapshot, me: &NodeInfo) -> Tunnels {
    let names = |f: &dyn Fn(&IpPool) -> bool| {
        let n: Vec<&str> = snap
            .pools
            .iter()
            .filter(|p| f(p))
            .map(|p| p.name.as_str())
            .collect();
        (!n.is_empty()).then(|| n.join(", "))
    };
    let ipip =
        names(&|p| p.cidr.addr().is_ipv4() && encap_used(p.ipip_mode)).map(|by| TunnelWant {
            requested_by: by,
            address: me
                .spec
                .bgp
                .as_ref()
                .and_then(|b| b.ipv4_ipip_tunnel_addr)
                .map(IpAddr::V4),
            mac: None,
        });
    let vxlan = |v4: bool| {
        names(&|p| p.cidr.addr().is_ipv4() == v4 && encap_used(p.vxlan_mode)).map(|by| {
            let vtep = me.vtep(&snap.node, v4);
            TunnelWant {
                requested_by: by,
                address: vtep.map(|(a, _)| a),
                mac: Some(vtep.map_or_else(|| Mac::vtep(&snap.node, !v4), |(_, m)| m)),
            }
        })
    };
    Tunnels {
        ipip,
        vxlan_v4: vxlan(true),
        vxlan_v6: vxlan(false),
    }
}

// ---------------------------------------------------------------------------------------
// Routes

fn next_hop_ip(nh: &bgp::wire::attr::NextHop) -> IpAddr {
    match nh {
        bgp::wire::attr::NextHop::V4(a) => IpAddr::V4(*a),
        bgp::wire::attr::NextHop::V6 { global, .. } => IpAddr::V6(*global),
    }
}

/// The way to one next hop of a route in `pool`.
fn hop_for(
    snap: &Snapshot,
    prefix: &IpNet,
    pool: &IpPool,
    nh: IpAddr,
) -> Option<dataplane::NextHop> {
    let on_subnet = snap.on_local_subnet(nh);
    let wants = |mode: EncapMode| match mode {
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !on_subnet,
        EncapMode::Never => false,
    };
    if prefix.addr().is_ipv4() && wants(pool.ipip_mode) {
        if let IpAddr::V4(gw) = nh {
            return Some(dataplane::NextHop::Ipip { gateway: gw });
        }
    }
    if wants(pool.vxlan_mode) {
        let vtep = snap
            .node_at(nh)
            .and_then(|(name, n)| n.vtep(name, prefix.addr().is_ipv4()));
        if let Some((vtep_addr, vtep_mac)) = vtep {
            return Some(dataplane::NextHop::Vxlan(VxlanPeer {
                vtep_addr,
                vtep_mac,
                node_addr: nh,
            }));
        }
        // The remote node has no VTEP yet: plain routing still works on one subnet.
        if !on_subnet {
            return None;
        }
    }
    Some(dataplane::NextHop::Direct {
        gateway: nh,
        dev: None,
    })
}

/// The kernel route for a prefix the speaker selected `best` for; `None` when serval
/// programs no route for it: our own announcements (blackholes and pod routes come
/// from elsewhere), or no usable next hop.
///
/// * Inside a pool: towards the node (or the router reflecting the nodes' routes) the
///   best path names, encapsulated as the pool says.
/// * Outside every pool: only a route learned from an external peer (a BGPPeer with
///   `peerIP`), as plain routing through a gateway on one of the node's subnets: a
///   default route or the networks of the data centre from the ToR. Never one inside the
///   node's own blocks or inside one of its subnets (it would take over pods or
///   neighbours the node reaches directly); a prefix outside the pools is never more
///   specific than a pool route, so it cannot override one. Routes outside the pools
///   that serval nodes announce (service addresses) are not programmed: every node
///   originates them itself.
/// * Never a next hop that is this node itself.
pub fn route_for(prefix: &IpNet, best: &BestRoute, snap: &Snapshot) -> Option<RouteTarget> {
    if best.is_local() || snap.own_blocks.contains(prefix) {
        return None;
    }
    let Some(pool) = snap.pool_of(prefix) else {
        return external_route_for(prefix, best, snap);
    };
    let hops: BTreeSet<dataplane::NextHop> = best
        .next_hops()
        .iter()
        .map(next_hop_ip)
        .filter(|nh| nh.is_ipv4() == prefix.addr().is_ipv4() && !snap.is_mine(*nh))
        .filter_map(|nh| hop_for(snap, prefix, pool, nh))
        .collect();
    target_of(hops)
}

/// The route of a prefix outside every pool (see [`route_for`]).
fn external_route_for(prefix: &IpNet, best: &BestRoute, snap: &Snapshot) -> Option<RouteTarget> {
    if snap.own_blocks.iter().any(|b| b.contains(prefix))
        || snap
            .local_subnets
            .iter()
            .any(|n| n.trunc().contains(prefix))
    {
        return None;
    }
    let nobody = NodeInfo::default();
    let external: BTreeSet<IpAddr> = external_peers(snap, snap.me().unwrap_or(&nobody)).collect();
    let from_external =
        |p: &bgp::rib::SelectedPath| p.peer_address.is_some_and(|a| external.contains(&a));
    if !from_external(best.best()) {
        return None;
    }
    let hops: BTreeSet<dataplane::NextHop> = best
        .paths
        .iter()
        .filter(|p| from_external(p))
        .filter_map(|p| p.attrs.next_hop.as_ref().map(next_hop_ip))
        .filter(|nh| {
            nh.is_ipv4() == prefix.addr().is_ipv4()
                && snap.on_local_subnet(*nh)
                && !snap.is_mine(*nh)
                && snap.pool_of(&IpNet::from(*nh)).is_none()
        })
        .map(|gateway| dataplane::NextHop::Direct { gateway, dev: None })
        .collect();
    target_of(hops)
}

fn target_of(hops: BTreeSet<dataplane::NextHop>) -> Option<RouteTarget> {
    match hops.len() {
        0 => None,
        1 => hops.into_iter().next().map(RouteTarget::Unicast),
        _ => Some(RouteTarget::Multipath(hops)),
    }
}

/// Every route serval wants in the kernel: blackholes for own blocks, static routes,
/// and the routes of the learned prefixes.
pub fn routes(d: &Desired, learned: &BTreeMap<IpNet, BestRoute>, snap: &Snapshot) -> DesiredRoutes {
    let mut out = DesiredRoutes::default();
    for (prefix, best) in learned {
        route_changes::work();
        if let Some(t) = route_for(prefix, best, snap) {
            out.routes.insert(*prefix, t);
        }
    }
    for (prefix, t) in &d.static_routes {
        out.routes.insert(*prefix, t.clone());
    }
    for block in &d.own_blocks {
        out.routes.insert(*block, RouteTarget::Blackhole);
    }
    out
}

/// The change that turns `old` into `new`.
pub fn route_diff(old: &DesiredRoutes, new: &DesiredRoutes) -> dataplane::RouteDiff {
    let mut diff = dataplane::RouteDiff::default();
    for (p, t) in &new.routes {
        if old.routes.get(p) != Some(t) {
            diff.upsert.insert(*p, t.clone());
        }
    }
    for p in old.routes.keys() {
        if !new.routes.contains_key(p) {
            diff.withdraw.insert(*p);
        }
    }
    diff
}

mod route_changes;
pub use route_changes::{learn, route_changes};

#[cfg(test)]
mod tests;
