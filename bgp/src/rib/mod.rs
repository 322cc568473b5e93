//! The Routing Information Base of the speaker: import, best-path selection, export.
//!
//! # Design
//!
//! The RIB is pure: no IO, no async, no clock. The speaker's core task owns one [`Rib`],
//! feeds it the decoded UPDATEs of each peer ([`Rib::apply_update`]) and drains from it
//! what to send to each peer ([`Rib::drain_export`]) and the best-path changes the node
//! agent turns into kernel routes ([`Rib::drain_best_changes`]).
//!
//! ```text
//!   UPDATE ─► loop check ─► import policy ─► intern ─► Loc-RIB (per family)
//!                                                       │ dest: [best, multipath…, others, filtered]
//!                                                       │ decision process on change
//!                              ┌────────────────────────┴─────────────────────┐
//!                              ▼                                              ▼
//!            per peer: pending bitset + advertised bitset        changed-best bitset
//!                              │ drain_export(peer, budget)                   │ drain_best_changes()
//!                              ▼                                              ▼
//!   export rules + export policy, cached per (attrs, source peer, rule) ─► OutUpdate grouped by attrs
//! ```
//!
//! * **Peers** are dense [`PeerId`]s chosen by the RIB; id 0 ([`PeerId::LOCAL`]) stands for
//!   routes the node originates itself ([`Rib::originate`]).
//! * **Attributes** are interned (`intern`): identical `PathAttrs` are one `Arc`, so a
//!   table of a million prefixes announced in fifty thousand UPDATEs holds fifty thousand
//!   attribute sets, and export groups prefixes by pointer.
//! * **Loc-RIB** ([`loc`]): one table per family, a hash index of prefix → dense
//!   destination id (`index`: 4-byte slots, open addressing, one cache line per look-up)
//!   into a `Vec` of destinations; each destination holds every candidate path (peer, path
//!   id, attributes, flags) with the multipath set first. It is the post-policy Adj-RIB-In
//!   as well, not a second copy; routes the import policy rejects stay flagged "filtered".
//!   About 42 bytes per single-path IPv4 prefix, attributes apart (32 the destination, 8.4
//!   the index, bits for the queues). UPDATEs are worked on in batches whose index slots
//!   are fetched together, so the cache misses of a table load overlap.
//! * **Decision** ([`decision`]): RFC 4271 §9.1.2.2 by elimination (the MED step is not a
//!   total order), RFC 4456 tie-breaks, ECMP set. A path that arrives or leaves behind the
//!   best one and loses to it before the MED step cannot change the selection, and skips
//!   the process (most paths, in a route server).
//! * **Adj-RIB-Out** ([`adj_out`]): per peer and family, a bitset of destinations advertised
//!   and a deduplicated bitset of destinations to reconsider; a prefix that changes ten
//!   times while the peer's socket is busy is sent once with its latest state. Add-path
//!   peers also remember which path ids they were sent.
//! * **Export rules** ([`export`]): split horizon, route reflection, eBGP/iBGP attribute
//!   handling, well-known communities, next hop; then the peer's export policy.
//! * **Graceful restart and route refresh** ([`restart`]): stale marking and sweeping,
//!   deferral of best-path results while restarting.
//! * **Best-path stream** ([`best`]) and **status queries** ([`query`]).

pub mod adj_out;
pub mod best;
mod bitset;
pub mod decision;
pub mod export;
mod family;
pub mod import;
mod index;
mod intern;
pub mod loc;
mod local;
mod prefix;
pub mod query;
pub mod restart;

#[cfg(test)]
mod tests;

use crate::policy::{CompiledPolicy, Policy, PolicyError};
use crate::types::{Asn, Family, RouterId};
use crate::wire::attr::NextHop;
use family::FamilyRib;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use adj_out::{OutBody, OutUpdate};
pub use best::{BestChange, BestRoute, SelectedPath};
pub use import::{ImportReport, MaxPrefixExceeded};
pub use query::{PathView, PeerCounters, RouteView};

/// A peer as the RIB knows it: a small dense number chosen by [`Rib::add_peer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl PeerId {
    /// Routes the node originates itself.
    pub const LOCAL: PeerId = PeerId(0);

    fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == PeerId::LOCAL {
            f.write_str("local")
        } else {
            write!(f, "peer#{}", self.0)
        }
    }
}

/// How the next hop of routes sent to a peer is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NextHopMode {
    /// RFC 4271 §5.1.3: ourselves towards eBGP peers (unless the original next hop is on
    /// the peer's subnet), unchanged towards iBGP peers.
    #[default]
    Auto,
    /// Always ourselves (iBGP `next-hop-self`); reflected routes excepted (RFC 4456 §10).
    SelfAlways,
    /// Never changed, also towards eBGP peers (route servers, RFC 7947 §2.2.2).
    KeepOriginal,
}

/// What to do when a peer sends more prefixes than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPrefix {
    pub limit: u32,
    /// Count routes received (accepted and filtered) instead of accepted ones.
    pub count_received: bool,
    /// Only report, do not tear the session down.
    pub warn_only: bool,
}

/// The configuration of one peer that the RIB needs.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub address: IpAddr,
    pub remote_as: Asn,
    /// Our AS on this session (usually the speaker's AS).
    pub local_as: Asn,
    /// RFC 4456: the peer is a route-reflector client of ours.
    pub rr_client: bool,
    pub next_hop: NextHopMode,
    /// Accept routes whose AS_PATH holds our AS up to this many times (eBGP loop
    /// detection, `allowas-in`).
    pub allowas_in: u8,
    pub import: Policy,
    pub export: Policy,
    /// Per `Family::index()`.
    pub max_prefix: [Option<MaxPrefix>; 2],
    /// Per `Family::index()`: when add-path send is negotiated, how many paths per prefix
    /// to advertise (0 or 1: only the best).
    pub add_path_send: [u8; 2],
    /// Towards this eBGP peer, pass on a MED that was received from another AS (RFC 4271
    /// §5.1.4 says not to; some route servers want it).
    pub send_foreign_med: bool,
    /// We are this eBGP peer's route server (RFC 7947): routes go to it without our AS
    /// in the path and with next hop and MED unchanged.
    pub route_server_client: bool,
}

impl PeerInfo {
    /// A peer with default settings: accept everything, send the best path only.
    pub fn new(address: IpAddr, remote_as: Asn, local_as: Asn) -> Self {
        PeerInfo {
            address,
            remote_as,
            local_as,
            rr_client: false,
            next_hop: NextHopMode::Auto,
            allowas_in: 0,
            import: Policy::accept_all(),
            export: Policy::accept_all(),
            max_prefix: [None, None],
            add_path_send: [0, 0],
            send_foreign_med: false,
            route_server_client: false,
        }
    }

    pub fn is_ebgp(&self) -> bool {
        self.remote_as != self.local_as
    }
}

/// What an established session negotiated and where it runs, given at [`Rib::peer_up`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer's BGP Identifier from its OPEN.
    pub router_id: RouterId,
    /// Families negotiated, per `Family::index()`.
    pub families: [bool; 2],
    /// RFC 7911: we may send several paths per prefix, per `Family::index()`.
    pub add_path_tx: [bool; 2],
    /// RFC 8950 for IPv4 unicast: IPv4 routes may carry an IPv6 next hop.
    pub ipv4_extended_next_hop: bool,
    /// Our address on the session or configured for IPv4 next-hop-self.
    pub local_v4: Option<Ipv4Addr>,
    /// Our global IPv6 address for IPv6 next-hop-self.
    pub local_v6: Option<Ipv6Addr>,
    /// Our link-local IPv6 address on the interface towards the peer.
    pub local_link_local: Option<Ipv6Addr>,
    /// The subnet shared with the peer when it is directly connected: link-local next
    /// hops are sent, and a next hop already on it is kept (RFC 4271 §5.1.3).
    pub shared_subnets: Vec<IpNet>,
}

impl SessionInfo {
    /// A session with IPv4 unicast only and no add-path.
    pub fn ipv4(router_id: RouterId, local: Ipv4Addr) -> Self {
        SessionInfo {
            router_id,
            families: [true, false],
            add_path_tx: [false, false],
            ipv4_extended_next_hop: false,
            local_v4: Some(local),
            local_v6: None,
            local_link_local: None,
            shared_subnets: Vec::new(),
        }
    }
}

/// Speaker-wide settings of the RIB.
#[derive(Clone, Debug)]
pub struct RibConfig {
    pub local_as: Asn,
    pub router_id: RouterId,
    /// RFC 4456 §7: defaults to the router id.
    pub cluster_id: Option<Ipv4Addr>,
    /// LOCAL_PREF assumed for routes without one and set towards iBGP peers.
    pub default_local_pref: u32,
    pub always_compare_med: bool,
    /// A missing MED counts as the worst (4294967295) instead of 0.
    pub med_missing_as_worst: bool,
    /// ECMP: up to this many paths per destination (1: none).
    pub max_paths: u8,
    pub multipath_relax: bool,
    /// RFC 4724 §4.1, restarting speaker: hold best-path results (export and kernel) until
    /// [`Rib::release_deferral`].
    pub defer_until_released: bool,
}

impl RibConfig {
    pub fn new(local_as: Asn, router_id: RouterId) -> Self {
        RibConfig {
            local_as,
            router_id,
            cluster_id: None,
            default_local_pref: 100,
            always_compare_med: false,
            med_missing_as_worst: false,
            max_paths: 1,
            multipath_relax: false,
            defer_until_released: false,
        }
    }

    pub fn cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id.0)
    }

    fn decision(&self) -> decision::DecisionConfig {
        decision::DecisionConfig {
            always_compare_med: self.always_compare_med,
            max_paths: self.max_paths.max(1),
            multipath_relax: self.multipath_relax,
        }
    }
}

/// Answers whether a next hop can be reached and at what interior cost; the default
/// reaches everything at cost 0.
pub trait NextHopResolver: Send {
    fn reachable(&self, _next_hop: &NextHop) -> bool {
        true
    }
    fn igp_cost(&self, _next_hop: &NextHop) -> u32 {
        0
    }
}

/// Every next hop reachable at equal cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllReachable;
impl NextHopResolver for AllReachable {}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RibError {
    #[error("{0} is not a configured peer")]
    UnknownPeer(PeerId),
    #[error("{peer} has no established session for {family}")]
    NotUp { peer: PeerId, family: Family },
    #[error("peer {address}: {source}")]
    Policy {
        address: IpAddr,
        source: PolicyError,
    },
    #[error("prefix {prefix} is not {family}")]
    WrongFamily { prefix: IpNet, family: Family },
    #[error("the peer table is full ({0} peers)")]
    TooManyPeers(usize),
    #[error("the {0} table holds the most destinations it can")]
    TableFull(Family),
    #[error("{0} cannot be changed through this call")]
    LocalPeer(PeerId),
}

/// Counters of one peer in one family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub received: u32,
    pub accepted: u32,
    pub filtered: u32,
    pub stale: u32,
}

pub(crate) struct PeerState {
    pub info: PeerInfo,
    pub import: CompiledPolicy,
    pub export: CompiledPolicy,
    /// The current session, or the last one while stale routes of it are kept.
    pub session: Option<SessionInfo>,
    pub up: bool,
    pub counts: [Counts; 2],
    /// A max-prefix signal was given since the session came up.
    pub max_prefix_signalled: [bool; 2],
}

impl PeerState {
    pub fn router_id(&self) -> Ipv4Addr {
        self.session
            .as_ref()
            .map(|s| s.router_id.0)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}

/// Everything the per-family code needs besides its own family's state.
pub(crate) struct Shared {
    pub cfg: RibConfig,
    /// Indexed by `PeerId`; slot 0 is the local pseudo-peer.
    pub peers: Vec<Option<PeerState>>,
    pub interner: intern::Interner,
    pub resolver: Box<dyn NextHopResolver>,
    pub deferring: bool,
}

impl Shared {
    pub fn peer(&self, id: PeerId) -> Option<&PeerState> {
        self.peers.get(id.index()).and_then(Option::as_ref)
    }
    pub fn peer_mut(&mut self, id: PeerId) -> Option<&mut PeerState> {
        self.peers.get_mut(id.index()).and_then(Option::as_mut)
    }
}

/// The RIB. See the module documentation.
pub struct Rib {
    shared: Shared,
    v4: FamilyRib<Ipv4Net>,
    v6: FamilyRib<Ipv6Net>,
}

/// Runs `$body` with `$fam` bound to the family's state, generic over its prefix type.
macro_rules! with_family {
    ($rib:expr, $family:expr, |$fam:ident, $shared:ident| $body:expr) => {
        match $family {
            $crate::types::Family::Ipv4Unicast => {
                let $fam = &mut $rib.v4;
                let $shared = &mut $rib.shared;
                $body
            }
            $crate::types::Family::Ipv6Unicast => {
                let $fam = &mut $rib.v6;
                let $shared = &mut $rib.shared;
                $body
            }
        }
    };
}
pub(crate) use with_family;

/// Upper bound of peers: paths store the peer in 16 bits.
const MAX_PEERS: usize = u16::MAX as usize;

impl Rib {
    pub fn new(cfg: RibConfig) -> Self {
        let deferring = cfg.defer_until_released;
        let local = PeerState {
            info: PeerInfo::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                cfg.local_as,
                cfg.local_as,
            ),
            import: CompiledPolicy::default(),
            export: CompiledPolicy::default(),
            session: Some(SessionInfo::ipv4(cfg.router_id, Ipv4Addr::UNSPECIFIED)),
            up: true,
            counts: Default::default(),
            max_prefix_signalled: [false; 2],
        };
        Rib {
            shared: Shared {
                cfg,
                peers: vec![Some(local)],
                interner: Default::default(),
                resolver: Box::new(AllReachable),
                deferring,
            },
            v4: FamilyRib::default(),
            v6: FamilyRib::default(),
        }
    }

    pub fn config(&self) -> &RibConfig {
        &self.shared.cfg
    }

    /// Registers a peer; its routes are accepted once [`Rib::peer_up`] is called.
    pub fn add_peer(&mut self, info: PeerInfo) -> Result<PeerId, RibError> {
        let import = info.import.compile().map_err(|source| RibError::Policy {
            address: info.address,
            source,
        })?;
        let export = info.export.compile().map_err(|source| RibError::Policy {
            address: info.address,
            source,
        })?;
        let state = PeerState {
            info,
            import,
            export,
            session: None,
            up: false,
            counts: Default::default(),
            max_prefix_signalled: [false; 2],
        };
        let slot = self
            .shared
            .peers
            .iter()
            .skip(1)
            .position(Option::is_none)
            .map(|i| i + 1);
        let id = match slot {
            Some(i) => i,
            None if self.shared.peers.len() < MAX_PEERS => {
                self.shared.peers.push(None);
                self.shared.peers.len() - 1
            }
            None => return Err(RibError::TooManyPeers(MAX_PEERS)),
        };
        self.shared.peers[id] = Some(state);
        Ok(PeerId(id as u32))
    }

    /// Replaces a peer's configuration. New policies apply to routes imported and exported
    /// from now on; call [`Rib::refresh_out`] to re-send the table under a new export
    /// policy, and ask the peer for a route refresh to re-import under a new import policy.
    pub fn update_peer(&mut self, peer: PeerId, info: PeerInfo) -> Result<(), RibError> {
        if peer == PeerId::LOCAL {
            return Err(RibError::LocalPeer(peer));
        }
        let import = info.import.compile().map_err(|source| RibError::Policy {
            address: info.address,
            source,
        })?;
        let export = info.export.compile().map_err(|source| RibError::Policy {
            address: info.address,
            source,
        })?;
        let p = self
            .shared
            .peer_mut(peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        p.info = info;
        p.import = import;
        p.export = export;
        let silent = adj_out::exports_nothing(&p.info.export);
        for family in Family::ALL {
            with_family!(self, family, |fam, _shared| {
                if let Some(adj) = fam.adj_out_mut(peer) {
                    adj.silent = silent;
                }
            });
        }
        Ok(())
    }

    /// Removes a peer and every route learned from it (withdrawals are queued to the
    /// others).
    pub fn remove_peer(&mut self, peer: PeerId) -> Result<(), RibError> {
        if peer == PeerId::LOCAL {
            return Err(RibError::LocalPeer(peer));
        }
        self.peer_down(peer, false, &[])?;
        self.shared.peers[peer.index()] = None;
        Ok(())
    }

    pub fn peer_info(&self, peer: PeerId) -> Option<&PeerInfo> {
        self.shared.peer(peer).map(|p| &p.info)
    }

    /// Ids of the configured peers (the local pseudo-peer excluded).
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.shared
            .peers
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| PeerId(i as u32))
            .collect()
    }

    /// Uses `resolver` for next-hop reachability and IGP cost from now on, and re-runs the
    /// decision process everywhere (call again after the IGP view changed).
    pub fn set_resolver(&mut self, resolver: Box<dyn NextHopResolver>) {
        self.shared.resolver = resolver;
        self.reresolve();
    }

    /// Re-runs the decision process on every destination.
    pub fn reresolve(&mut self) {
        for family in Family::ALL {
            with_family!(self, family, |fam, shared| fam.recompute_all(shared));
        }
    }

    /// Whether best-path results are being held ([`RibConfig::defer_until_released`]).
    pub fn deferring(&self) -> bool {
        self.shared.deferring
    }

    /// Ends the deferral: what accumulated is drained from now on.
    pub fn release_deferral(&mut self) {
        self.shared.deferring = false;
    }

    /// Number of distinct attribute sets held.
    pub fn attribute_sets(&self) -> usize {
        self.shared.interner.len()
    }

    /// Approximate heap bytes held by the RIB, split into (tables and queues, attribute
    /// sets).
    pub fn heap_bytes(&self) -> (usize, usize) {
        (
            self.v4.heap_bytes() + self.v6.heap_bytes(),
            self.shared.interner.heap_bytes(),
        )
    }
}
