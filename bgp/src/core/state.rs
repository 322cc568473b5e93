//! The speaker's decisions across its peers, without IO: what the core task does with a
//! command, a session's report, an accepted connection or a timer.
//!
//! `SpeakerState` owns the RIB, the table of configured peers and the timers that span
//! sessions. `handle(now, Event, &mut Vec<Effect>)` applies one input and appends what the
//! IO loop (`core.rs`) is to do: spawn or order a session, set an MD5 key, write or remove
//! the graceful-restart marker, answer the handle. Time comes in as `now` and goes out as
//! `next_deadline()`; it reads no clock, no file and no socket, so a test drives a
//! restart's minutes of timers in microseconds (`replay.rs`).
//!
//! What stays with the IO loop: the sockets and session tasks, the writers' queues (it
//! pulls encoded UPDATEs from here as fast as each socket takes them: `drain_export`),
//! the best-path subscribers (`take_best_changes` when they all have room), the file
//! system and the interface table (read once per established session, passed in).
//!
//! Its timers (`turn::Timer`), each with one expiry path here:
//! - `EndOfRibWait(peer)`: a peer came back to routes kept stale; those still stale when
//!   it passes (`[graceful-restart] stale-time`) go (RFC 4724 §4.2; its End-of-RIB
//!   cancels it).
//! - `MaxPrefixRestart(peer)`: a peer stopped for too many prefixes starts again.
//! - `SelectionDeferral`: this speaker restarted; select and advertise even without every
//!   peer's End-of-RIB (RFC 4724 §4.1).
//!
//! - `BfdHold(peer)`: the peer's BFD is Up again after failures in a row; its BGP session
//!   starts when this passes (`bfd_link`: the dampening).
//!
//! BFD (RFC 5882): a peer with BFD gets a BFD session (`Effect::Bfd`); its BGP session
//! starts, and a connection from it is taken, only while BFD is Up (`bfd_link`). A BFD
//! failure stops the BGP session at once with Cease/Administrative Reset, which RFC 8538
//! turns into a Hard Reset where the N bit was negotiated, so neither side keeps the
//! other's routes as stale: the path between them is what failed, not a control plane
//! that restarts. A peer that restarts closes its TCP connection when its process goes
//! (at once, well before any BFD detection time), so its session has ended gracefully
//! by the time BFD notices; a BFD failure after that keeps the stale routes unless the
//! peer's BFD said it is independent of its control plane (C bit), in which case the
//! forwarding path failed too and they go (RFC 5882 §4.3).
//!
//! The FSM's own restart timer (the peer's Restart Time, while its session is down) is
//! the session's; its expiry arrives as `SessionReport::RestartTimeExpired`.

use super::bfd_link::{BfdLink, Decision};
use super::turn::{Timer, Timers};
use crate::bfd::table::{Change, Order as BfdOrder, SessionView};
use crate::bfd::{Hop, HopChoice};
use crate::config::{
    Announcement, BfdConfig, MaxPrefixAction, PeerChange, PeerConfig, SpeakerConfig,
};
use crate::fsm::{DownReason, FsmConfig, PeerFsm, State};
use crate::negotiate::Negotiated;
use crate::rib::{BestChange, OutUpdate, PeerId, PeerInfo, Rib, RibConfig, SessionInfo};
use crate::session::{SessionReport, SessionStatus};
use crate::speaker::{RouteQuery, SpeakerError};
use crate::status::{
    BfdState, BfdStatus, FamilyStatus, PathEntry, PeerStatus, RouteEntry, SessionState,
};
use crate::transport::{InterfaceInfo, TransportOptions};
use crate::types::{Asn, Family, RouterId};
use crate::wire::attr::{NextHop, PathAttrs};
use crate::wire::notification::CeaseSubcode;
use crate::wire::open::{Capability, GracefulRestartFamily};
use crate::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use crate::wire::{Message, Notification, Update};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// One input to the speaker.
#[derive(Debug)]
pub(crate) enum Event {
    // ---- from the handle; each is answered by one `Effect::Reply` ----
    AddPeer(Box<PeerConfig>),
    UpdatePeer(Box<PeerConfig>),
    RemovePeer(IpAddr),
    Announce(Box<Announcement>),
    Withdraw(IpNet),
    /// A best-path subscriber joins: answered with the whole table.
    Subscribe,
    Peers,
    Routes(RouteQuery),
    Refresh(IpAddr, Option<Family>),
    Reset(IpAddr),
    /// Not answered: `Effect::Exit` ends the speaker.
    Shutdown {
        graceful: bool,
    },
    // ---- from the sessions ----
    Established {
        peer: IpAddr,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
        remote: SocketAddr,
        /// The interface holding `local`, as the kernel listed it then.
        iface: Option<InterfaceInfo>,
    },
    Session(SessionReport),
    /// A listener accepted a connection from this address (the socket stays with the
    /// IO loop until `Effect::HandOver` says whose it is).
    Accepted(SocketAddr),
    /// The timers' turn: whatever is due at `now` fires.
    Timers,
    /// A peer's BFD session changed state.
    Bfd(Change),
}

/// An order for one session task.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Order {
    Start,
    Stop(Option<Notification>),
    Shutdown { silent: bool },
    SetCapabilities(Vec<Capability>),
    SendRefresh(Family, RefreshSubtype),
}

/// The answer to a command from the handle.
#[derive(Debug)]
pub(crate) enum Reply {
    Done(Result<(), SpeakerError>),
    Withdrawn(Result<bool, SpeakerError>),
    /// The whole table, for a new subscriber.
    Table(Vec<BestChange>),
    /// One row per peer; the IO loop adds each session's own report (`status_of`).
    Peers(Vec<StatusRow>),
    Routes(Vec<RouteEntry>),
}

/// What the speaker knows of a peer for `status`, before its session's report.
#[derive(Clone, Debug)]
pub(crate) struct StatusRow {
    pub config: PeerConfig,
    pub families: Vec<FamilyStatus>,
    pub note: Option<String>,
    pub local_as: Asn,
    pub bfd: Option<BfdRow>,
}

/// What the speaker knows of a peer's BFD for `status`, before the BFD task's report.
#[derive(Clone, Debug)]
pub(crate) struct BfdRow {
    pub config: BfdConfig,
    pub failures: u64,
    /// Until when BGP is held down after BFD failures in a row.
    pub hold_until: Option<Instant>,
}

/// What the IO loop is to do, in order.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Start the session task of a new peer (idle until `Order::Start`).
    Spawn {
        peer: IpAddr,
        remote: SocketAddr,
        transport: Box<TransportOptions>,
        fsm: Box<PeerFsm>,
    },
    Session(IpAddr, Order),
    /// The peer is gone: drop its session handle and writer.
    Forget(IpAddr),
    /// The TCP MD5 key for connections from this peer on the listening sockets.
    Md5 {
        peer: IpAddr,
        key: Option<Vec<u8>>,
    },
    /// Put a message on the peer's data path, in order with its UPDATEs.
    Send(IpAddr, Box<Message>),
    /// The connection just accepted goes to this peer's session; without this effect
    /// it is closed.
    HandOver(IpAddr),
    /// Note the time (now, wall clock) in `dir`: a speaker started before the restart
    /// time passed comes back as restarting.
    WriteRestartMarker {
        dir: PathBuf,
    },
    RemoveRestartMarker {
        dir: PathBuf,
    },
    Bfd(BfdOrder),
    Reply(Reply),
    /// Stop every session (`silent`: without NOTIFICATION, so peers keep our routes)
    /// and end.
    Exit {
        silent: bool,
    },
}

/// Where the speaker notes that it stopped for a graceful restart.
pub(crate) fn restart_marker(dir: &std::path::Path) -> PathBuf {
    dir.join("graceful-restart")
}

/// True when the marker says the speaker stopped gracefully less than `restart_time`
/// before `wall_secs` (seconds since the epoch): its peers still hold its routes, so it
/// comes back as a restarting speaker.
pub(crate) fn restarting(cfg: &SpeakerConfig, marker: Option<&str>, wall_secs: u64) -> bool {
    let Some(stopped) = marker.and_then(|t| t.trim().parse::<u64>().ok()) else {
        return false;
    };
    cfg.graceful_restart.enabled
        && wall_secs.saturating_sub(stopped) < u64::from(cfg.graceful_restart.restart_time)
}

/// One configured peer.
struct Peer {
    config: PeerConfig,
    id: PeerId,
    state: State,
    /// What the established session negotiated.
    up: Option<Up>,
    /// Why the speaker (not the session) stopped it, shown until it is up again.
    note: Option<String>,
    /// With BFD configured: what it says.
    bfd: Option<BfdLink>,
    /// Not started because BFD is not Up (or its dampening hold runs).
    held: bool,
}

struct Up {
    negotiated: Box<Negotiated>,
    /// End-of-RIB received per family (RFC 4724), for selection deferral.
    eor_received: [bool; 2],
}

impl Up {
    fn eor_received_all(&self) -> bool {
        self.negotiated
            .families()
            .all(|f| self.eor_received[f.index()])
    }
}

pub(crate) struct SpeakerState {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: BTreeMap<IpAddr, Peer>,
    by_id: HashMap<PeerId, IpAddr>,
    timers: Timers,
    announced: BTreeMap<IpNet, Announcement>,
}

impl SpeakerState {
    /// The speaker at start-up: `restarting` from [`restarting`] (the marker the IO loop
    /// read). Adds the configured peers and announcements; their effects go to `out`.
    pub(crate) fn new(
        cfg: SpeakerConfig,
        restarting: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Result<SpeakerState, SpeakerError> {
        let mut rib_cfg = RibConfig::new(cfg.asn, cfg.router_id);
        rib_cfg.cluster_id = cfg.cluster_id;
        rib_cfg.max_paths = cfg.max_paths;
        rib_cfg.multipath_relax = cfg.multipath_relax;
        rib_cfg.always_compare_med = cfg.always_compare_med;
        rib_cfg.defer_until_released = restarting;
        let mut timers = Timers::default();
        if restarting {
            let deferral = u64::from(cfg.graceful_restart.selection_deferral);
            timers.set(
                Timer::SelectionDeferral,
                now + Duration::from_secs(deferral),
            );
            info!("restarting gracefully: peers keep our routes; holding best paths until their End-of-RIB");
        }
        if let Some(dir) = &cfg.state_dir {
            out.push(Effect::RemoveRestartMarker { dir: dir.clone() });
        }
        let peers = cfg.peers.clone();
        let announce = cfg.announce.clone();
        let mut s = SpeakerState {
            rib: Rib::new(rib_cfg),
            cfg,
            peers: BTreeMap::new(),
            by_id: HashMap::new(),
            timers,
            announced: BTreeMap::new(),
        };
        for p in peers {
            s.add_peer(p, out)?;
        }
        for a in announce {
            s.announce(a)?;
        }
        Ok(s)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub(crate) fn handle(&mut self, now: Instant, ev: Event, out: &mut Vec<Effect>) {
        match ev {
            Event::AddPeer(p) => {
                let res = self.check_peer(&p).and_then(|()| self.add_peer(*p, out));
                out.push(Effect::Reply(Reply::Done(res)));
            }
            Event::UpdatePeer(p) => {
                let res = self.check_peer(&p).and_then(|()| self.update_peer(*p, out));
                out.push(Effect::Reply(Reply::Done(res)));
            }
            Event::RemovePeer(a) => {
                let res = self.remove_peer(a, out);
                out.push(Effect::Reply(Reply::Done(res)));
            }
            Event::Announce(a) => {
                let res = if a.prefix != a.prefix.trunc() {
                    Err(SpeakerError::Rejected(format!(
                        "{} has host bits set",
                        a.prefix
                    )))
                } else {
                    self.announce(*a)
                };
                out.push(Effect::Reply(Reply::Done(res)));
            }
            Event::Withdraw(prefix) => {
                self.announced.remove(&prefix);
                let res = self
                    .rib
                    .withdraw_local(prefix)
                    .map_err(|e| SpeakerError::Rejected(e.to_string()));
                out.push(Effect::Reply(Reply::Withdrawn(res)));
            }
            Event::Subscribe => {
                // The whole table first, so the subscriber starts from a complete view.
                let mut all = Vec::new();
                for f in Family::ALL {
                    all.extend(self.rib.routes(f).filter_map(|v| self.best_of(v)));
                }
                out.push(Effect::Reply(Reply::Table(all)));
            }
            Event::Peers => out.push(Effect::Reply(Reply::Peers(self.status_rows()))),
            Event::Routes(q) => out.push(Effect::Reply(Reply::Routes(self.routes(&q)))),
            Event::Refresh(addr, family) => {
                let res = self.refresh(addr, family, out);
                out.push(Effect::Reply(Reply::Done(res)));
            }
            Event::Reset(addr) => {
                let res = if let Some(p) = self.peers.get(&addr) {
                    self.timers.cancel(Timer::MaxPrefixRestart(addr));
                    out.push(Effect::Session(
                        addr,
                        Order::Stop(Some(Notification::admin_reset(""))),
                    ));
                    if !p.held {
                        out.push(Effect::Session(addr, Order::Start));
                    }
                    Ok(())
                } else {
                    Err(SpeakerError::UnknownPeer(addr))
                };
                out.push(Effect::Reply(Reply::Done(res)));
            }
            Event::Shutdown { graceful } => {
                let graceful = graceful && self.cfg.graceful_restart.enabled;
                if graceful {
                    if let Some(dir) = &self.cfg.state_dir {
                        out.push(Effect::WriteRestartMarker { dir: dir.clone() });
                    }
                }
                out.push(Effect::Exit { silent: graceful });
            }
            Event::Established {
                peer,
                negotiated,
                local,
                remote,
                iface,
            } => self.established(now, peer, negotiated, local, remote, iface),
            Event::Session(r) => self.session_report(now, r, out),
            Event::Accepted(addr) => self.accepted(addr, out),
            Event::Timers => self.on_timer(now, out),
            Event::Bfd(c) => self.bfd_changed(now, c, out),
        }
    }

    fn session_report(&mut self, now: Instant, r: SessionReport, out: &mut Vec<Effect>) {
        match r {
            SessionReport::State { peer, state } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.state = state;
                }
            }
            SessionReport::Updates { peer, updates } => self.updates(now, peer, &updates, out),
            SessionReport::RouteRefresh { peer, refresh } => self.route_refresh(peer, refresh, out),
            SessionReport::Down {
                peer,
                reason,
                graceful,
            } => self.down(peer, &reason, graceful, out),
            SessionReport::RestartTimeExpired { peer } => {
                if self.peers.contains_key(&peer) {
                    self.timers.cancel(Timer::EndOfRibWait(peer));
                    self.withdraw_stale(peer, "restart time passed");
                }
            }
        }
    }

    // ---- pulled by the IO loop as its queues take them ----

    /// True while this speaker restarts and holds its best paths (RFC 4724 §4.1).
    pub(crate) fn deferring(&self) -> bool {
        self.rib.deferring()
    }

    /// The peers the RIB queued UPDATEs for since the last call (see
    /// [`Rib::take_export_queued`]).
    pub(crate) fn take_export_queued(&mut self) -> Vec<IpAddr> {
        self.rib
            .take_export_queued()
            .into_iter()
            .filter_map(|id| self.by_id.get(&id).copied())
            .collect()
    }

    /// The families the peer's session exchanges; empty when it is not established.
    pub(crate) fn export_families(&self, peer: IpAddr) -> Vec<Family> {
        self.peers
            .get(&peer)
            .and_then(|p| p.up.as_ref())
            .map(|u| u.negotiated.families().collect())
            .unwrap_or_default()
    }

    pub(crate) fn export_pending(&self, peer: IpAddr, family: Family) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| self.rib.export_pending(p.id, family))
    }

    /// Up to `budget` destinations of the peer's pending Adj-RIB-Out, as UPDATEs to send.
    pub(crate) fn drain_export(
        &mut self,
        peer: IpAddr,
        family: Family,
        budget: usize,
    ) -> Vec<OutUpdate> {
        match self.peers.get(&peer) {
            Some(p) => self.rib.drain_export(p.id, family, budget),
            None => Vec::new(),
        }
    }

    /// Best-path changes since the last call (coalesced while nobody takes them).
    pub(crate) fn take_best_changes(&mut self) -> Vec<BestChange> {
        self.rib.drain_best_changes()
    }

    // ---- peers ----

    fn transport_options(&self, p: &PeerConfig) -> TransportOptions {
        let ebgp = p.asn != p.local_asn.unwrap_or(self.cfg.asn);
        TransportOptions {
            md5_key: p.password.as_ref().map(|s| s.as_bytes().to_vec()),
            // Directly connected eBGP peers get TTL 1, as on every router; multihop
            // raises it; GTSM sends 255 (and checks what arrives).
            ttl: match (p.ttl_security, p.multihop) {
                (Some(_), _) => None,
                (None, Some(hops)) => Some(hops),
                (None, None) if ebgp => Some(1),
                (None, None) => None,
            },
            ttl_security_hops: p.ttl_security,
            source: p.source_address,
            // Under GTSM a connection the listener accepted from a peer that is too far
            // away would sit in OpenSent while the kernel drops everything the peer sends
            // (see `TransportOptions::unacked_timeout`); nothing acknowledged for a hold
            // time means the peer could not hear our KEEPALIVEs either.
            unacked_timeout: p.ttl_security.and_then(|_| {
                let hold = p.hold_time.unwrap_or(self.cfg.hold_time);
                (hold > 0).then(|| Duration::from_secs(u64::from(hold)))
            }),
        }
    }

    /// The capabilities of our OPEN to this peer.
    pub(crate) fn capabilities(&self, p: &PeerConfig) -> Vec<Capability> {
        let local_as = p.local_asn.unwrap_or(self.cfg.asn);
        let mut caps: Vec<Capability> = p
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(f.afi_safi()))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::EnhancedRouteRefresh);
        caps.push(Capability::FourOctetAsn(local_as));
        let gr = &self.cfg.graceful_restart;
        if gr.enabled && p.graceful_restart {
            let restarting = self.timers.is_running(Timer::SelectionDeferral);
            caps.push(Capability::GracefulRestart {
                restart_state: restarting,
                notification: gr.notification,
                restart_time: p.restart_time.unwrap_or(gr.restart_time),
                families: p
                    .families
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        afi_safi: f.afi_safi(),
                        forwarding_preserved: restarting,
                    })
                    .collect(),
            });
        }
        if let Some(mode) = p.add_path {
            caps.push(Capability::AddPath(
                p.families
                    .iter()
                    .map(|f| (f.afi_safi(), mode.mode()))
                    .collect(),
            ));
        }
        if p.address.is_ipv6() && p.families.contains(&Family::Ipv4Unicast) {
            // RFC 8950: IPv4 routes over an IPv6 session carry IPv6 next hops.
            caps.push(Capability::ExtendedNextHop(vec![(
                Family::Ipv4Unicast.afi_safi(),
                crate::types::Afi::IPV6,
            )]));
        }
        caps.push(Capability::ExtendedMessage);
        caps
    }

    fn rib_info(&self, p: &PeerConfig) -> PeerInfo {
        let mut info = PeerInfo::new(p.address, p.asn, p.local_asn.unwrap_or(self.cfg.asn));
        info.rr_client = p.route_reflector_client;
        info.next_hop = p.next_hop;
        info.allowas_in = p.allowas_in;
        info.import = self.cfg.resolve(&p.import);
        info.export = self.cfg.resolve(&p.export);
        if let Some(m) = p.max_prefix {
            info.max_prefix = [Some(m.to_rib()), Some(m.to_rib())];
        }
        let paths =
            p.add_path_send_max
                .unwrap_or(if p.add_path.is_some_and(|m| m.mode().can_send()) {
                    2
                } else {
                    1
                });
        info.add_path_send = [paths, paths];
        info
    }

    fn fsm_for(&self, p: &PeerConfig) -> Result<PeerFsm, SpeakerError> {
        let local_as = p.local_asn.unwrap_or(self.cfg.asn);
        let mut f = FsmConfig::new(local_as, self.cfg.router_id, Some(p.asn));
        f.hold_time = p.hold_time.unwrap_or(self.cfg.hold_time);
        f.keepalive = p.keepalive;
        f.connect_retry = Duration::from_secs(u64::from(
            p.connect_retry.unwrap_or(self.cfg.connect_retry).max(1),
        ));
        f.passive = p.passive;
        f.graceful_on_hold_expiry = p.graceful_on_hold_expiry;
        f.jitter_seed = seed(self.cfg.router_id, p.address);
        PeerFsm::new(f, self.capabilities(p))
            .map_err(|e| SpeakerError::Rejected(format!("peer {}: {e}", p.address)))
    }

    fn check_peer(&self, p: &PeerConfig) -> Result<(), SpeakerError> {
        let mut c = self.cfg.clone();
        c.peers = vec![p.clone()];
        c.announce.clear();
        c.validate().map_err(SpeakerError::from)
    }

    fn add_peer(&mut self, p: PeerConfig, out: &mut Vec<Effect>) -> Result<(), SpeakerError> {
        if self.peers.contains_key(&p.address) {
            return Err(SpeakerError::DuplicatePeer(p.address));
        }
        let fsm = self.fsm_for(&p)?;
        let id = self
            .rib
            .add_peer(self.rib_info(&p))
            .map_err(|e| SpeakerError::Rejected(e.to_string()))?;
        out.push(Effect::Md5 {
            peer: p.address,
            key: p.password.as_ref().map(|s| s.as_bytes().to_vec()),
        });
        out.push(Effect::Spawn {
            peer: p.address,
            remote: SocketAddr::new(p.address, p.port),
            transport: Box::new(self.transport_options(&p)),
            fsm: Box::new(fsm),
        });
        let bfd = self.cfg.bfd_of(&p).filter(|_| !p.shutdown);
        if let Some(b) = &bfd {
            // RFC 5882 §4.2: BGP waits for BFD.
            out.push(Effect::Bfd(self.bfd_add(&p, b)));
        } else if !p.shutdown {
            out.push(Effect::Session(p.address, Order::Start));
        }
        info!(peer = %p.address, asn = %p.asn, bfd = bfd.is_some(), "peer added");
        self.by_id.insert(id, p.address);
        self.peers.insert(
            p.address,
            Peer {
                config: p,
                id,
                state: State::Idle,
                up: None,
                note: bfd.map(|_| "waiting for BFD".to_string()),
                held: bfd.is_some(),
                bfd: bfd.map(BfdLink::new),
            },
        );
        Ok(())
    }

    fn remove_peer(&mut self, addr: IpAddr, out: &mut Vec<Effect>) -> Result<(), SpeakerError> {
        let peer = self
            .peers
            .remove(&addr)
            .ok_or(SpeakerError::UnknownPeer(addr))?;
        out.push(Effect::Session(
            addr,
            Order::Stop(Some(Notification::cease(CeaseSubcode::PeerDeconfigured))),
        ));
        out.push(Effect::Session(addr, Order::Shutdown { silent: true }));
        out.push(Effect::Forget(addr));
        out.push(Effect::Md5 {
            peer: addr,
            key: None,
        });
        if peer.bfd.is_some() {
            out.push(Effect::Bfd(BfdOrder::Remove(addr)));
        }
        self.timers.cancel_peer(addr);
        self.by_id.remove(&peer.id);
        if let Err(e) = self.rib.remove_peer(peer.id) {
            warn!(peer = %addr, error = %e, "removing peer from the RIB");
        }
        info!(peer = %addr, "peer removed");
        Ok(())
    }

    /// Apply a changed peer configuration with as little disruption as it allows.
    fn update_peer(&mut self, p: PeerConfig, out: &mut Vec<Effect>) -> Result<(), SpeakerError> {
        let old = &self
            .peers
            .get(&p.address)
            .ok_or(SpeakerError::UnknownPeer(p.address))?
            .config;
        let import_changed = match PeerChange::of(old, &p) {
            PeerChange::Unchanged => return Ok(()),
            PeerChange::Session => {
                // The session itself changed (AS, timers, password, families…): restart
                // just this peer.
                self.remove_peer(p.address, out)?;
                return self.add_peer(p, out);
            }
            PeerChange::Policy { import_changed } => import_changed,
            PeerChange::Bfd => {
                self.bfd_reconfigure(&p, out);
                if let Some(peer) = self.peers.get_mut(&p.address) {
                    peer.config = p;
                }
                return Ok(());
            }
        };
        self.bfd_reconfigure(&p, out);
        let info = self.rib_info(&p);
        let addr = p.address;
        let peer = self
            .peers
            .get_mut(&addr)
            .ok_or(SpeakerError::UnknownPeer(addr))?;
        self.rib
            .update_peer(peer.id, info)
            .map_err(|e| SpeakerError::Rejected(e.to_string()))?;
        peer.config = p;
        let Some((families, route_refresh)) = peer.up.as_ref().map(|u| {
            (
                u.negotiated.families().collect::<Vec<_>>(),
                u.negotiated.route_refresh,
            )
        }) else {
            return Ok(());
        };
        for f in families {
            // Export changes: our table again, through the new policy.
            self.resend_table(addr, f, out);
            // Import changes: the peer sends its table again (RFC 2918).
            if import_changed && route_refresh {
                out.push(Effect::Session(
                    addr,
                    Order::SendRefresh(f, RefreshSubtype::Request),
                ));
            }
        }
        if import_changed && !route_refresh {
            out.push(Effect::Session(
                addr,
                Order::Stop(Some(Notification::cease(CeaseSubcode::OtherConfigChange))),
            ));
            out.push(Effect::Session(addr, Order::Start));
        }
        Ok(())
    }

    fn announce(&mut self, a: Announcement) -> Result<(), SpeakerError> {
        let mut attrs = PathAttrs {
            origin: a.origin,
            med: a.med,
            local_pref: a.local_pref,
            ..PathAttrs::default()
        };
        attrs.communities = a.communities.iter().map(|c| c.0).collect();
        attrs.large_communities = a.large_communities.iter().map(|c| c.0).collect();
        attrs.next_hop = a.next_hop.map(|nh| match nh {
            IpAddr::V4(v4) => NextHop::V4(v4),
            IpAddr::V6(v6) => NextHop::V6 {
                global: v6,
                link_local: None,
            },
        });
        self.rib
            .originate(a.prefix, attrs)
            .map_err(|e| SpeakerError::Rejected(e.to_string()))?;
        self.announced.insert(a.prefix, a);
        Ok(())
    }

    fn refresh(
        &self,
        addr: IpAddr,
        family: Option<Family>,
        out: &mut Vec<Effect>,
    ) -> Result<(), SpeakerError> {
        let peer = self
            .peers
            .get(&addr)
            .ok_or(SpeakerError::UnknownPeer(addr))?;
        let Some(up) = &peer.up else {
            return Err(SpeakerError::Rejected(format!(
                "peer {addr} is not established"
            )));
        };
        if !up.negotiated.route_refresh {
            return Err(SpeakerError::Rejected(format!(
                "peer {addr} did not announce route refresh"
            )));
        }
        for f in up
            .negotiated
            .families()
            .filter(|f| family.is_none_or(|x| x == *f))
        {
            out.push(Effect::Session(
                addr,
                Order::SendRefresh(f, RefreshSubtype::Request),
            ));
        }
        Ok(())
    }

    // ---- queries ----

    /// A destination's current selection, as the best-path stream reports it.
    fn best_of(&self, v: crate::rib::RouteView) -> Option<BestChange> {
        let paths: smallvec::SmallVec<[crate::rib::SelectedPath; 1]> = v
            .paths
            .iter()
            .filter(|p| p.multipath && !p.filtered)
            .map(|p| crate::rib::SelectedPath {
                peer: p.peer,
                peer_address: self.by_id.get(&p.peer).copied(),
                path_id: p.path_id,
                attrs: p.attrs.clone(),
            })
            .collect();
        (!paths.is_empty()).then(|| BestChange {
            prefix: v.prefix,
            route: Some(crate::rib::BestRoute { paths }),
        })
    }

    fn routes(&self, q: &RouteQuery) -> Vec<RouteEntry> {
        let to_entry = |v: crate::rib::RouteView| RouteEntry {
            prefix: v.prefix,
            paths: v
                .paths
                .iter()
                .map(|p| PathEntry::from_view(p, self.by_id.get(&p.peer).copied()))
                .collect(),
        };
        if let Some(prefix) = q.prefix {
            let v = if q.longest_match {
                self.rib.longest_match(&prefix)
            } else {
                self.rib.route(&prefix)
            };
            return v.map(to_entry).into_iter().collect();
        }
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for f in Family::ALL
            .into_iter()
            .filter(|f| q.family.is_none_or(|x| x == *f))
        {
            let mut routes: Vec<RouteEntry> = self.rib.routes(f).map(to_entry).collect();
            routes.sort_by_key(|r| r.prefix);
            out.extend(routes);
        }
        out.truncate(limit);
        out
    }

    fn status_rows(&self) -> Vec<StatusRow> {
        self.peers
            .values()
            .map(|p| StatusRow {
                config: p.config.clone(),
                families: p
                    .config
                    .families
                    .iter()
                    .map(|&f| {
                        let c = self.rib.peer_counters(p.id, f).unwrap_or_default();
                        FamilyStatus {
                            family: f,
                            received: c.received,
                            accepted: c.accepted,
                            filtered: c.filtered,
                            stale: c.stale,
                            sent: c.sent,
                        }
                    })
                    .collect(),
                note: p.note.clone(),
                local_as: self.cfg.asn,
                bfd: p.bfd.as_ref().map(|l| BfdRow {
                    config: l.config,
                    failures: l.failures,
                    hold_until: self.timers.at(Timer::BfdHold(p.config.address)),
                }),
            })
            .collect()
    }

    // ---- session events ----

    fn established(
        &mut self,
        now: Instant,
        addr: IpAddr,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
        remote: SocketAddr,
        iface: Option<InterfaceInfo>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let shared_subnets: Vec<IpNet> = iface
            .as_ref()
            .map(|i| {
                i.subnets
                    .iter()
                    .filter(|n| n.contains(&remote.ip()))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let local_v6 = match local.ip() {
            IpAddr::V6(v6) if !v6.is_unicast_link_local() => Some(v6),
            _ => peer
                .config
                .local_ipv6
                .or_else(|| iface.as_ref().and_then(|i| i.global_v6)),
        };
        let info = SessionInfo {
            router_id: negotiated.peer_id,
            families: negotiated.codec.families,
            add_path_tx: negotiated.codec.add_path_tx,
            ipv4_extended_next_hop: negotiated.codec.ipv4_extended_next_hop,
            local_v4: match local.ip() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => iface.as_ref().and_then(|i| i.v4),
            },
            local_v6,
            local_link_local: if shared_subnets.is_empty() {
                None
            } else {
                iface.as_ref().and_then(|i| i.link_local)
            },
            shared_subnets,
        };
        // RFC 4724 §4.2: families the restarted peer no longer preserves lose their stale
        // routes now; the others wait for its End-of-RIB, at most the stale time.
        let kept = negotiated.stale_families();
        for f in Family::ALL {
            let preserved = negotiated
                .peer_gr
                .as_ref()
                .and_then(|g| g.forwarding_preserved(f))
                == Some(true);
            if !(kept.contains(&f) && preserved) {
                self.rib.sweep_stale(peer.id, f);
            }
        }
        // Only a peer that comes back to stale routes gets the timer: one left from a
        // session that had none would, were that session to end gracefully too, withdraw
        // the routes kept through that restart before its restart time.
        let stale = Family::ALL.into_iter().any(|f| {
            self.rib
                .peer_counters(peer.id, f)
                .is_some_and(|c| c.stale > 0)
        });
        if stale {
            let stale_time = Duration::from_secs(u64::from(self.cfg.graceful_restart.stale_time));
            self.timers.set(Timer::EndOfRibWait(addr), now + stale_time);
        } else {
            self.timers.cancel(Timer::EndOfRibWait(addr));
        }
        if let Err(e) = self.rib.peer_up(peer.id, info) {
            warn!(peer = %addr, error = %e, "peer up");
        }
        peer.note = None;
        peer.up = Some(Up {
            negotiated,
            eor_received: [false; 2],
        });
    }

    fn updates(&mut self, now: Instant, addr: IpAddr, updates: &[Update], out: &mut Vec<Effect>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        for u in updates {
            let report = match self.rib.apply_update(peer.id, u) {
                Ok(r) => r,
                Err(e) => {
                    warn!(peer = %addr, error = %e, "UPDATE not applied");
                    continue;
                }
            };
            for f in &report.end_of_rib {
                debug!(peer = %addr, family = %f, "End-of-RIB received");
                if let Some(up) = peer.up.as_mut() {
                    up.eor_received[f.index()] = true;
                }
            }
            if !report.end_of_rib.is_empty() && peer.up.as_ref().is_some_and(Up::eor_received_all) {
                self.timers.cancel(Timer::EndOfRibWait(addr));
            }
            if let Some(m) = report.max_prefix {
                if m.warn_only {
                    warn!(peer = %addr, family = %m.family, limit = m.limit, count = m.count, "maximum prefixes exceeded");
                } else {
                    warn!(peer = %addr, family = %m.family, limit = m.limit, "maximum prefixes exceeded; closing the session");
                    let n = Notification::max_prefixes(m.family.afi_safi(), m.limit);
                    out.push(Effect::Session(addr, Order::Stop(Some(n))));
                    peer.note = Some(format!(
                        "maximum prefixes ({}) exceeded in {}",
                        m.limit, m.family
                    ));
                    let restart = peer.config.max_prefix.and_then(|m| m.restart_after);
                    match restart {
                        Some(s) => self.timers.set(
                            Timer::MaxPrefixRestart(addr),
                            now + Duration::from_secs(u64::from(s)),
                        ),
                        None => self.timers.cancel(Timer::MaxPrefixRestart(addr)),
                    }
                    if peer
                        .config
                        .max_prefix
                        .is_some_and(|m| m.action == MaxPrefixAction::Shutdown)
                        && restart.is_none()
                    {
                        peer.note = Some(format!(
                            "maximum prefixes ({}) exceeded in {}; reset the peer to restart it",
                            m.limit, m.family
                        ));
                    }
                    break;
                }
            }
        }
        self.check_deferral(out);
    }

    fn route_refresh(&mut self, addr: IpAddr, rr: RouteRefresh, out: &mut Vec<Effect>) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        let Some(family) = rr.afi_safi.family() else {
            return;
        };
        match rr.subtype {
            RefreshSubtype::Request => self.resend_table(addr, family, out),
            RefreshSubtype::Begin => {
                let _ = self.rib.begin_refresh(peer.id, family);
            }
            RefreshSubtype::End => {
                let _ = self.rib.end_refresh(peer.id, family);
            }
        }
    }

    /// Send a peer our whole table for a family again: on its ROUTE-REFRESH, or after
    /// its export policy changed. With enhanced route refresh the table is bracketed by
    /// Begin and End of Route Refresh (RFC 7313 §4), on the data path in order with the
    /// UPDATEs between them.
    fn resend_table(&mut self, addr: IpAddr, family: Family, out: &mut Vec<Effect>) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        let Some(up) = &peer.up else { return };
        if up.negotiated.enhanced_route_refresh {
            out.push(Effect::Send(
                addr,
                Box::new(Message::RouteRefresh(RouteRefresh {
                    afi_safi: family.afi_safi(),
                    subtype: RefreshSubtype::Begin,
                })),
            ));
        }
        if let Err(e) = self.rib.refresh_out(peer.id, family) {
            warn!(peer = %addr, error = %e, "route refresh");
        }
    }

    fn down(&mut self, addr: IpAddr, reason: &DownReason, graceful: bool, out: &mut Vec<Effect>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let families: Vec<Family> = peer
            .up
            .take()
            .map(|u| u.negotiated.stale_families())
            .unwrap_or_default();
        let graceful = graceful && !families.is_empty();
        if let Err(e) = self.rib.peer_down(peer.id, graceful, &families) {
            warn!(peer = %addr, error = %e, "peer down");
        }
        debug!(peer = %addr, %reason, graceful, "routes of the peer {}", if graceful { "kept stale" } else { "withdrawn" });
        self.check_deferral(out);
    }

    /// The peer's routes still stale go (`why` for the log).
    fn withdraw_stale(&mut self, addr: IpAddr, why: &str) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        if let Ok(n) = self.rib.stale_expired(peer.id) {
            if n > 0 {
                info!(peer = %addr, routes = n, "{why}; stale routes withdrawn");
            }
        }
    }

    fn accepted(&mut self, from: SocketAddr, out: &mut Vec<Effect>) {
        let ip = match from.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match self.peers.get(&ip) {
            Some(p) if !p.config.shutdown && !p.held => out.push(Effect::HandOver(ip)),
            _ => debug!(remote = %from, "connection from an address that is not a peer; closed"),
        }
    }

    // ---- BFD (RFC 5882) ----

    fn bfd_add(&self, p: &PeerConfig, b: &BfdConfig) -> BfdOrder {
        // The distance the BGP session is configured for: eBGP multihop and GTSM give
        // it, a plain eBGP peer is directly connected (TTL 1), an iBGP peer may be either.
        let away = |hops: u8| match hops {
            0 | 1 => HopChoice::Fixed(Hop::Single),
            h => HopChoice::Fixed(Hop::Multi {
                min_ttl: 255 - (h - 1),
            }),
        };
        let ebgp = p.asn != p.local_asn.unwrap_or(self.cfg.asn);
        let hop = match (p.multihop, p.ttl_security) {
            (Some(h), _) | (None, Some(h)) => away(h),
            (None, None) if ebgp => HopChoice::Fixed(Hop::Single),
            (None, None) => HopChoice::Connected,
        };
        BfdOrder::Add {
            peer: p.address,
            timers: b.timers(),
            passive: b.passive,
            hop,
            source: p.source_address,
        }
    }

    /// A peer's BFD settings changed (the BGP session itself did not).
    fn bfd_reconfigure(&mut self, p: &PeerConfig, out: &mut Vec<Effect>) {
        let addr = p.address;
        let want = self.cfg.bfd_of(p).filter(|_| !p.shutdown);
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        let have = peer.bfd.as_ref().map(|l| l.config);
        if want == have {
            return;
        }
        let order = want.as_ref().map(|b| self.bfd_add(p, b));
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        match (order, want) {
            (Some(order), Some(b)) => {
                out.push(Effect::Bfd(order));
                match peer.bfd.as_mut() {
                    // New timers: negotiated by a poll sequence, BGP untouched.
                    Some(l) => l.config = b,
                    // BFD added to a running session: it is required from the next
                    // start on, not for the session that runs.
                    None => peer.bfd = Some(BfdLink::new(b)),
                }
            }
            _ => {
                out.push(Effect::Bfd(BfdOrder::Remove(addr)));
                peer.bfd = None;
                self.timers.cancel(Timer::BfdHold(addr));
                if peer.held {
                    peer.held = false;
                    peer.note = None;
                    out.push(Effect::Session(addr, Order::Start));
                }
            }
        }
    }

    fn bfd_changed(&mut self, now: Instant, c: Change, out: &mut Vec<Effect>) {
        let addr = c.peer;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(link) = peer.bfd.as_mut() else {
            return;
        };
        match link.on_change(now, &c) {
            Decision::Nothing => {}
            Decision::StartAt(at) if at <= now => {
                self.timers.cancel(Timer::BfdHold(addr));
                self.bfd_release(addr, out);
            }
            Decision::StartAt(at) => {
                let run = link.run();
                if peer.held {
                    peer.note = Some(format!(
                        "BFD failed {run} times in a row: BGP waits until BFD has been up for {} s",
                        at.saturating_duration_since(now).as_secs()
                    ));
                }
                self.timers.set(Timer::BfdHold(addr), at);
            }
            Decision::TakeDown => {
                self.timers.cancel(Timer::BfdHold(addr));
                peer.note = Some(format!("BFD down: {}", c.diag));
                let id = peer.id;
                if !peer.held {
                    peer.held = true;
                    warn!(peer = %addr, diag = %c.diag, "BFD down: stopping the BGP session");
                    out.push(Effect::Session(
                        addr,
                        Order::Stop(Some(Notification::admin_reset("BFD session down"))),
                    ));
                    // The routes go now, not when the session task reports its end.
                    if peer.up.take().is_some() {
                        if let Err(e) = self.rib.peer_down(id, false, &[]) {
                            warn!(peer = %addr, error = %e, "peer down");
                        }
                        self.check_deferral(out);
                    }
                }
                if c.control_plane_independent {
                    // RFC 5882 §4.3: the peer's forwarding failed, not (only) its
                    // control plane: routes kept through its restart go too.
                    self.timers.cancel(Timer::EndOfRibWait(addr));
                    self.withdraw_stale(
                        addr,
                        "BFD down and the peer's BFD is independent of its control plane",
                    );
                }
            }
        }
    }

    /// BFD allows the peer's BGP session (Up and past its hold, or the peer AdminDown):
    /// it starts if it was held.
    fn bfd_release(&mut self, addr: IpAddr, out: &mut Vec<Effect>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let allowed = peer.bfd.as_ref().is_none_or(BfdLink::allows_bgp);
        if peer.held && allowed && !peer.config.shutdown {
            peer.held = false;
            peer.note = None;
            info!(peer = %addr, "BFD up: starting the BGP session");
            out.push(Effect::Session(addr, Order::Start));
        }
    }

    // ---- timers ----

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Effect>) {
        for t in self.timers.expire(now) {
            match t {
                Timer::EndOfRibWait(addr) => {
                    self.withdraw_stale(addr, "no End-of-RIB within the stale time");
                }
                Timer::MaxPrefixRestart(addr) => {
                    if self.peers.get(&addr).is_some_and(|p| !p.held) {
                        info!(peer = %addr, "restarting after the maximum-prefix hold-down");
                        out.push(Effect::Session(addr, Order::Start));
                    }
                }
                Timer::SelectionDeferral => {
                    info!("selection deferral timer expired");
                    self.release_deferral(out);
                }
                Timer::BfdHold(addr) => self.bfd_release(addr, out),
            }
        }
    }

    /// RFC 4724 §4.1: the restarting speaker selects and advertises once every peer
    /// that takes part in graceful restart has sent End-of-RIB.
    fn check_deferral(&mut self, out: &mut Vec<Effect>) {
        if !self.timers.is_running(Timer::SelectionDeferral) {
            return;
        }
        let all = self
            .peers
            .values()
            .filter(|p| !p.config.shutdown)
            .all(|p| match &p.up {
                Some(up) => up.negotiated.peer_gr.is_none() || up.eor_received_all(),
                None => false,
            });
        if all {
            info!("End-of-RIB from every peer; selecting and advertising routes");
            self.release_deferral(out);
        }
    }

    fn release_deferral(&mut self, out: &mut Vec<Effect>) {
        self.timers.cancel(Timer::SelectionDeferral);
        self.rib.release_deferral();
        // Later sessions no longer announce a restart.
        for (addr, p) in &self.peers {
            out.push(Effect::Session(
                *addr,
                Order::SetCapabilities(self.capabilities(&p.config)),
            ));
        }
    }
}

/// A peer's status row: what the speaker knows (`row`) with its session's report (`s`,
/// `None` when the session did not answer).
pub(crate) fn status_of(
    row: StatusRow,
    s: Option<SessionStatus>,
    bfd: Option<SessionView>,
    now: Instant,
) -> PeerStatus {
    let StatusRow {
        config: cfg,
        families,
        note,
        local_as,
        bfd: bfd_row,
    } = row;
    let bfd = bfd_row.map(|r| bfd_status(&r, bfd.as_ref(), now));
    let local_as = cfg.local_asn.unwrap_or(local_as);
    let mut kind = if cfg.asn == local_as {
        "ibgp".to_string()
    } else {
        "ebgp".to_string()
    };
    if cfg.route_reflector_client {
        kind.push_str(" rr-client");
    }
    let neg = s.as_ref().and_then(|s| s.negotiated.as_ref());
    let state = match (&s, cfg.shutdown) {
        (_, true) => SessionState::Shutdown,
        (Some(s), _) => SessionState::from(s.state),
        (None, _) => SessionState::Unknown,
    };
    PeerStatus {
        address: cfg.address,
        name: cfg.name.clone(),
        asn: cfg.asn,
        kind,
        state,
        uptime_secs: s
            .as_ref()
            .and_then(|s| s.established_since)
            .map(|t| now.saturating_duration_since(t).as_secs()),
        last_error: note.or_else(|| s.as_ref().and_then(|s| s.last_error.clone())),
        router_id: neg.map(|n| n.peer_id),
        local_address: s.as_ref().and_then(|s| s.local),
        remote_address: s.as_ref().and_then(|s| s.remote),
        hold_time: neg.map(|n| n.hold_time),
        keepalive: neg.map(|n| n.keepalive),
        capabilities: neg.map(capability_names).unwrap_or_default(),
        families,
        messages_received: s.as_ref().map_or(0, |s| s.stats.received.total()),
        messages_sent: s.as_ref().map_or(0, |s| s.stats.sent.total()),
        updates_received: s.as_ref().map_or(0, |s| s.stats.received.update),
        updates_sent: s.as_ref().map_or(0, |s| s.stats.sent.update),
        established_count: s.as_ref().map_or(0, |s| s.stats.established_transitions),
        flaps: s.as_ref().map_or(0, |s| s.stats.flaps),
        idle_hold_secs: s
            .as_ref()
            .and_then(|s| s.idle_hold_until)
            .map(|t| t.saturating_duration_since(now).as_secs()),
        bfd,
    }
}

fn bfd_status(r: &BfdRow, v: Option<&SessionView>, now: Instant) -> BfdStatus {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let diag = |d: crate::bfd::Diag| (d != crate::bfd::Diag::None).then(|| d.to_string());
    BfdStatus {
        state: v.map_or(BfdState::Unknown, |v| v.state.into()),
        remote_state: v.map(|v| v.remote_state.into()),
        multihop: v.is_some_and(|v| matches!(v.hop, Hop::Multi { .. })),
        min_rx_ms: r.config.min_rx,
        min_tx_ms: r.config.min_tx,
        multiplier: r.config.multiplier,
        passive: r.config.passive,
        tx_interval_ms: v.map(|v| ms(v.tx_interval)),
        rx_interval_ms: v.map(|v| ms(v.rx_interval)),
        detection_time_ms: v.and_then(|v| v.detection_time).map(ms),
        local_diag: v.and_then(|v| diag(v.local_diag)),
        remote_diag: v.and_then(|v| diag(v.remote_diag)),
        local_discriminator: v.map(|v| v.local_discriminator.get()),
        remote_discriminator: v.map(|v| v.remote_discriminator).filter(|d| *d != 0),
        packets_sent: v.map_or(0, |v| v.stats.sent),
        packets_received: v.map_or(0, |v| v.stats.received),
        failures: r.failures,
        hold_down_secs: r
            .hold_until
            .map(|t| t.saturating_duration_since(now).as_secs()),
    }
}

fn capability_names(n: &Negotiated) -> Vec<String> {
    let mut v: Vec<String> = n.families().map(|f| f.to_string()).collect();
    if n.codec.four_octet_asn {
        v.push("4-octet-as".into());
    }
    if n.route_refresh {
        v.push("route-refresh".into());
    }
    if n.enhanced_route_refresh {
        v.push("enhanced-route-refresh".into());
    }
    if n.peer_gr.is_some() && n.local_gr.is_some() {
        v.push("graceful-restart".into());
    }
    if n.notification_graceful() {
        v.push("graceful-notification".into());
    }
    for f in Family::ALL {
        let ap = n.add_path(f);
        match (ap.send, ap.receive) {
            (true, true) => v.push(format!("add-path {f} send/receive")),
            (true, false) => v.push(format!("add-path {f} send")),
            (false, true) => v.push(format!("add-path {f} receive")),
            _ => {}
        }
    }
    if n.codec.ipv4_extended_next_hop {
        v.push("extended-next-hop".into());
    }
    if n.codec.extended_message {
        v.push("extended-message".into());
    }
    v
}

/// Per-peer jitter seed, so that the nodes of a cluster do not retry in lockstep.
fn seed(id: RouterId, peer: IpAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    peer.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AddPathConfig;

    fn cfg() -> SpeakerConfig {
        let mut c = SpeakerConfig::new(Asn(65001), RouterId("10.0.0.1".parse().unwrap()));
        c.listen.clear();
        c
    }

    fn state(c: SpeakerConfig, restarting: bool) -> SpeakerState {
        SpeakerState::new(c, restarting, Instant::now(), &mut Vec::new()).unwrap()
    }

    fn peer(a: &str, asn: u32) -> PeerConfig {
        PeerConfig::new(a.parse().unwrap(), Asn(asn))
    }

    #[test]
    fn the_restart_marker_decides_a_restarting_start() {
        let now = 10_000;
        let mut off = cfg();
        off.graceful_restart.enabled = false;
        let cases: [(&str, &SpeakerConfig, Option<&str>, bool); 6] = [
            ("no marker", &cfg(), None, false),
            ("unreadable", &cfg(), Some("yesterday"), false),
            ("just stopped", &cfg(), Some("9990\n"), true),
            ("one second short", &cfg(), Some("9881"), true),
            ("restart time passed", &cfg(), Some("9880"), false),
            ("graceful restart off", &off, Some("9990"), false),
        ];
        for (what, c, marker, want) in cases {
            assert_eq!(restarting(c, marker, now), want, "{what}");
        }
    }

    #[test]
    fn start_up_removes_the_marker_and_a_restart_defers_selection() {
        let mut c = cfg();
        c.state_dir = Some("/var/lib/serval".into());
        c.graceful_restart.selection_deferral = 45;
        let t0 = Instant::now();
        let mut out = Vec::new();
        let s = SpeakerState::new(c.clone(), true, t0, &mut out).unwrap();
        assert!(
            matches!(&out[..], [Effect::RemoveRestartMarker { dir }] if dir == c.state_dir.as_ref().unwrap())
        );
        assert!(s.deferring());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(45)));
        let s = state(cfg(), false);
        assert!(!s.deferring());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn capabilities_follow_the_peer_and_the_restart() {
        let gr = |caps: &[Capability]| {
            caps.iter().find_map(|c| match c {
                Capability::GracefulRestart {
                    restart_state,
                    restart_time,
                    families,
                    ..
                } => Some((
                    *restart_state,
                    *restart_time,
                    families.iter().all(|f| f.forwarding_preserved),
                )),
                _ => None,
            })
        };
        let p = peer("10.0.0.2", 65002);
        assert_eq!(
            gr(&state(cfg(), false).capabilities(&p)),
            Some((false, 120, false))
        );
        assert_eq!(
            gr(&state(cfg(), true).capabilities(&p)),
            Some((true, 120, true))
        );
        let mut short = p.clone();
        short.restart_time = Some(7);
        assert_eq!(
            gr(&state(cfg(), false).capabilities(&short)),
            Some((false, 7, false))
        );
        let mut no_gr = p.clone();
        no_gr.graceful_restart = false;
        assert_eq!(gr(&state(cfg(), true).capabilities(&no_gr)), None);

        let v6 = peer("fd00::2", 65002);
        let has = |p: &PeerConfig, want: fn(&Capability) -> bool| {
            state(cfg(), false).capabilities(p).iter().any(want)
        };
        let enh = |c: &Capability| matches!(c, Capability::ExtendedNextHop(_));
        assert!(has(&v6, enh), "IPv4 routes over an IPv6 session (RFC 8950)");
        assert!(!has(&p, enh));
        let add_path = |c: &Capability| matches!(c, Capability::AddPath(_));
        let mut ap = p.clone();
        ap.add_path = Some(AddPathConfig::Both);
        assert!(has(&ap, add_path) && !has(&p, add_path));
    }

    #[test]
    fn the_ttl_follows_the_kind_of_peer() {
        let s = state(cfg(), false);
        let ebgp = peer("10.0.0.2", 65002);
        let ibgp = peer("10.0.0.3", 65001);
        let mut multihop = ebgp.clone();
        multihop.multihop = Some(4);
        let mut gtsm = ebgp.clone();
        gtsm.ttl_security = Some(1);
        gtsm.hold_time = Some(9);
        let t = |p: &PeerConfig| {
            let o = s.transport_options(p);
            (o.ttl, o.ttl_security_hops, o.unacked_timeout)
        };
        assert_eq!(t(&ebgp), (Some(1), None, None));
        assert_eq!(t(&ibgp), (None, None, None));
        assert_eq!(t(&multihop), (Some(4), None, None));
        assert_eq!(t(&gtsm), (None, Some(1), Some(Duration::from_secs(9))));
    }

    #[test]
    fn a_status_row_names_the_kind_and_prefers_the_speakers_note() {
        let mut p = peer("10.0.0.3", 65001);
        p.route_reflector_client = true;
        let row = |p: &PeerConfig, note: Option<&str>| StatusRow {
            config: p.clone(),
            families: Vec::new(),
            note: note.map(String::from),
            local_as: Asn(65001),
            bfd: None,
        };
        let now = Instant::now();
        let session = SessionStatus {
            state: State::Idle,
            established_since: None,
            last_error: Some("connection refused".into()),
            stats: Default::default(),
            negotiated: None,
            local: None,
            remote: None,
            idle_hold_until: Some(now + Duration::from_secs(5)),
        };
        let st = status_of(row(&p, None), Some(session.clone()), None, now);
        assert_eq!(st.kind, "ibgp rr-client");
        assert_eq!(st.last_error.as_deref(), Some("connection refused"));
        assert_eq!(st.idle_hold_secs, Some(5));
        let st = status_of(row(&p, Some("maximum prefixes")), Some(session), None, now);
        assert_eq!(st.last_error.as_deref(), Some("maximum prefixes"));
        let ebgp = peer("10.0.0.2", 65002);
        let st = status_of(row(&ebgp, None), None, None, now);
        assert_eq!(
            (st.kind.as_str(), st.state),
            ("ebgp", SessionState::Unknown)
        );
        let mut down = ebgp.clone();
        down.shutdown = true;
        assert_eq!(
            status_of(row(&down, None), None, None, now).state,
            SessionState::Shutdown
        );
    }

    #[test]
    fn an_invalid_peer_is_refused_before_anything_happens() {
        let mut s = state(cfg(), false);
        let mut p = peer("10.0.0.2", 65002);
        p.hold_time = Some(2);
        let mut out = Vec::new();
        s.handle(Instant::now(), Event::AddPeer(Box::new(p)), &mut out);
        assert!(
            matches!(
                &out[..],
                [Effect::Reply(Reply::Done(Err(SpeakerError::Config(_))))]
            ),
            "{out:?}"
        );
        let mut out = Vec::new();
        let a = crate::config::Announcement::new("10.244.0.1/24".parse().unwrap());
        s.handle(Instant::now(), Event::Announce(Box::new(a)), &mut out);
        assert!(
            matches!(&out[..], [Effect::Reply(Reply::Done(Err(SpeakerError::Rejected(m))))] if m.contains("host bits")),
            "{out:?}"
        );
    }
}
