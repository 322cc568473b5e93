//! The speaker's core task: owns the RIB and the table of peers, applies what sessions
//! report, pumps each peer's Adj-RIB-Out into its socket as fast as the socket takes it,
//! hands best-path changes to subscribers, and answers the handle's commands.
//!
//! Decisions live in the RIB and the FSM; this task only moves data between them and the
//! sockets, plus the few timers that span sessions: the stale-route timer after a peer
//! restarted, the restart after a maximum-prefix shutdown, and selection deferral while
//! this speaker itself restarts (RFC 4724 §4.1). Which input it serves next and which
//! timer is due is decided in `turn`, so that a peer sending without pause delays the
//! others, the listener and the timers by one bounded turn at most.

use crate::config::{Announcement, MaxPrefixAction, PeerChange, PeerConfig, SpeakerConfig};
use crate::fsm::{FsmConfig, PeerFsm, State};
use crate::negotiate::Negotiated;
use crate::rib::{BestChange, OutBody, PeerId, PeerInfo, Rib, RibConfig, SessionInfo};
use crate::session::{self, SessionCmd, SessionEvent, SessionHandle, SessionStatus};
use crate::speaker::{RouteQuery, SpeakerError};
use crate::status::{FamilyStatus, PathEntry, PeerStatus, RouteEntry, SessionState};
use crate::transport::{self, TransportOptions};
use crate::types::{Family, RouterId};
use crate::wire::attr::{NextHop, PathAttrs};
use crate::wire::notification::CeaseSubcode;
use crate::wire::open::{Capability, GracefulRestartFamily};
use crate::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use crate::wire::{self, CodecParams, Message, Notification, Update};
use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use turn::{Source, Timer, Timers, Turn};

mod turn;

/// Destinations looked at per drain of one peer's Adj-RIB-Out.
const EXPORT_BUDGET: usize = 8192;
/// Encoded UPDATEs are handed to the socket writer in chunks of about this size.
const CHUNK: usize = 64 * 1024;
/// Session events handled per turn (see `turn`): a status query, an accepted connection
/// or a due timer waits at most this many UPDATE batches (each at most one read of the
/// peer's socket, ~5,000 prefixes of a table load) behind a peer that sends without pause.
const EVENT_BATCH: usize = 4;
/// Session events waiting for the core. UPDATEs wait here decoded (~0.5 KB each), so a
/// short queue keeps a table load's memory to what the RIB holds; the sessions, then TCP,
/// hold the rest, as compact wire bytes. It also bounds how long a session blocked on it
/// takes to answer a status query.
const EVENT_QUEUE: usize = 8;

/// One input taken from a source.
enum Input {
    /// `None`: every handle is gone.
    Command(Option<Command>),
    Event(SessionEvent),
    Accepted(TcpStream, SocketAddr),
    /// The source was empty, or only woke the core (a timer, a drained writer queue).
    Nothing,
}

/// The speaker stops: gracefully (RFC 4724) or not, answering `done` once it has.
struct Stop {
    graceful: bool,
    done: Option<oneshot::Sender<()>>,
}

pub(crate) enum Command {
    AddPeer(Box<PeerConfig>, oneshot::Sender<Result<(), SpeakerError>>),
    UpdatePeer(Box<PeerConfig>, oneshot::Sender<Result<(), SpeakerError>>),
    RemovePeer(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Announce(Box<Announcement>, oneshot::Sender<Result<(), SpeakerError>>),
    Withdraw(IpNet, oneshot::Sender<Result<bool, SpeakerError>>),
    Subscribe(mpsc::Sender<Vec<BestChange>>, oneshot::Sender<()>),
    Peers(oneshot::Sender<oneshot::Receiver<Vec<PeerStatus>>>),
    Routes(RouteQuery, oneshot::Sender<Vec<RouteEntry>>),
    Refresh(
        IpAddr,
        Option<Family>,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
    Reset(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Shutdown {
        graceful: bool,
        done: oneshot::Sender<()>,
    },
}

/// One configured peer.
struct PeerSlot {
    config: PeerConfig,
    id: PeerId,
    session: SessionHandle,
    state: State,
    /// The established connection's writer, with what it negotiated.
    out: Option<Established>,
    /// Why the speaker (not the session) stopped it, shown until it is up again.
    note: Option<String>,
}

struct Established {
    data: mpsc::Sender<Bytes>,
    codec: CodecParams,
    negotiated: Box<Negotiated>,
    /// Encoded, not yet accepted by the writer's queue.
    backlog: VecDeque<Bytes>,
    buf: BytesMut,
    /// End-of-RIB received per family (RFC 4724), for selection deferral.
    eor_received: [bool; 2],
}

pub(crate) struct Core {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: HashMap<IpAddr, PeerSlot>,
    by_id: HashMap<PeerId, IpAddr>,
    cmd_rx: mpsc::Receiver<Command>,
    events_tx: mpsc::Sender<SessionEvent>,
    events_rx: mpsc::Receiver<SessionEvent>,
    accept_rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    listeners: Vec<Arc<TcpListener>>,
    accept_tasks: Vec<JoinHandle<()>>,
    drained: Arc<Notify>,
    subscribers: Vec<mpsc::Sender<Vec<BestChange>>>,
    /// Stale routes of restarted peers, restarts after a maximum-prefix shutdown, and
    /// while this speaker restarts (RFC 4724 §4.1) the end of selection deferral: best
    /// paths are held until every peer sent its End-of-RIB or that timer fires.
    timers: Timers,
    announced: BTreeMap<IpNet, Announcement>,
}

/// Where the speaker notes that it stopped for a graceful restart.
fn restart_marker(dir: &Path) -> PathBuf {
    dir.join("graceful-restart")
}

/// True when the speaker stopped gracefully less than `restart_time` ago: its peers still
/// hold its routes, so it comes back as a restarting speaker.
fn restarting(cfg: &SpeakerConfig) -> bool {
    let Some(dir) = &cfg.state_dir else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(restart_marker(dir)) else {
        return false;
    };
    let Ok(stopped) = text.trim().parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    cfg.graceful_restart.enabled
        && now.saturating_sub(stopped) < u64::from(cfg.graceful_restart.restart_time)
}

impl Core {
    pub(crate) async fn new(
        cfg: SpeakerConfig,
        cmd_rx: mpsc::Receiver<Command>,
    ) -> Result<Core, SpeakerError> {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (accept_tx, accept_rx) = mpsc::channel(64);
        let mut listeners = Vec::new();
        let mut accept_tasks = Vec::new();
        for addr in &cfg.listen {
            let l = transport::listen(*addr).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
            let l = Arc::new(l);
            accept_tasks.push(tokio::spawn(accept_loop(l.clone(), accept_tx.clone())));
            listeners.push(l);
        }
        let restarting = restarting(&cfg);
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
                Timer::Deferral,
                Instant::now() + Duration::from_secs(deferral),
            );
            info!("restarting gracefully: peers keep our routes; holding best paths until their End-of-RIB");
        }
        if let Some(dir) = &cfg.state_dir {
            let _ = std::fs::remove_file(restart_marker(dir));
        }
        let peers_cfg = cfg.peers.clone();
        let announce = cfg.announce.clone();
        let mut core = Core {
            rib: Rib::new(rib_cfg),
            cfg,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            cmd_rx,
            events_tx,
            events_rx,
            accept_rx,
            listeners,
            accept_tasks,
            drained: Arc::new(Notify::new()),
            subscribers: Vec::new(),
            timers,
            announced: BTreeMap::new(),
        };
        for p in peers_cfg {
            core.add_peer(p)?;
        }
        for a in announce {
            core.announce(a)?;
        }
        Ok(core)
    }

    /// Sleep until a source has something, serve that, then give every source its turn
    /// (`turn`): a peer that keeps the event queue full delays the rest by one turn at
    /// most.
    pub(crate) async fn run(mut self) {
        loop {
            let deadline = self.timers.next_deadline();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                biased;
                cmd = self.cmd_rx.recv() => Input::Command(cmd),
                Some(ev) = self.events_rx.recv() => Input::Event(ev),
                Some((stream, addr)) = self.accept_rx.recv() => Input::Accepted(stream, addr),
                () = self.drained.notified() => Input::Nothing,
                () = sleep => Input::Nothing,
            };
            if let Err(stop) = self.input(first) {
                return self.stop(stop).await;
            }
            let mut turn = Turn::default();
            while let Some(source) = turn.next() {
                let input = match source {
                    Source::Commands => match self.cmd_rx.try_recv() {
                        Ok(cmd) => Input::Command(Some(cmd)),
                        Err(mpsc::error::TryRecvError::Empty) => Input::Nothing,
                        Err(mpsc::error::TryRecvError::Disconnected) => Input::Command(None),
                    },
                    Source::Events => self
                        .events_rx
                        .try_recv()
                        .map_or(Input::Nothing, Input::Event),
                    Source::Accepts => self
                        .accept_rx
                        .try_recv()
                        .map_or(Input::Nothing, |(s, a)| Input::Accepted(s, a)),
                    Source::Timers => {
                        self.on_timer(Instant::now());
                        Input::Nothing
                    }
                };
                turn.served(!matches!(input, Input::Nothing));
                if let Err(stop) = self.input(input) {
                    return self.stop(stop).await;
                }
            }
            self.pump_exports();
            self.pump_best();
        }
    }

    /// Apply one input; `Err` when the speaker is to stop.
    fn input(&mut self, input: Input) -> Result<(), Stop> {
        match input {
            Input::Command(Some(Command::Shutdown { graceful, done })) => Err(Stop {
                graceful,
                done: Some(done),
            }),
            Input::Command(None) => Err(Stop {
                graceful: false,
                done: None,
            }),
            Input::Command(Some(cmd)) => {
                self.command(cmd);
                Ok(())
            }
            Input::Event(ev) => {
                self.session_event(ev);
                Ok(())
            }
            Input::Accepted(stream, addr) => {
                self.accepted(stream, addr);
                Ok(())
            }
            Input::Nothing => Ok(()),
        }
    }

    async fn stop(mut self, stop: Stop) {
        self.shutdown(stop.graceful).await;
        if let Some(done) = stop.done {
            let _ = done.send(());
        }
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

    fn capabilities(&self, p: &PeerConfig) -> Vec<Capability> {
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
            let restarting = self.timers.is_running(Timer::Deferral);
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

    fn set_md5(&self, peer: IpAddr, key: Option<&[u8]>) {
        for l in &self.listeners {
            let Ok(local) = l.local_addr() else { continue };
            if local.is_ipv4() == peer.is_ipv4() {
                if let Err(e) = transport::set_md5_key(l.as_raw_fd(), peer, key) {
                    warn!(peer = %peer, error = %e, "cannot set the TCP MD5 key on the listening socket");
                }
            }
        }
    }

    fn add_peer(&mut self, p: PeerConfig) -> Result<(), SpeakerError> {
        if self.peers.contains_key(&p.address) {
            return Err(SpeakerError::DuplicatePeer(p.address));
        }
        let fsm = self.fsm_for(&p)?;
        let id = self
            .rib
            .add_peer(self.rib_info(&p))
            .map_err(|e| SpeakerError::Rejected(e.to_string()))?;
        self.set_md5(p.address, p.password.as_deref().map(str::as_bytes));
        let session = session::spawn(
            session::SessionConfig {
                remote: SocketAddr::new(p.address, p.port),
                transport: self.transport_options(&p),
            },
            fsm,
            self.events_tx.clone(),
            self.drained.clone(),
        );
        if !p.shutdown {
            let _ = session.cmd.try_send(SessionCmd::Start);
        }
        info!(peer = %p.address, asn = %p.asn, "peer added");
        self.by_id.insert(id, p.address);
        self.peers.insert(
            p.address,
            PeerSlot {
                config: p.clone(),
                id,
                session,
                state: State::Idle,
                out: None,
                note: None,
            },
        );
        Ok(())
    }

    fn remove_peer(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        let slot = self
            .peers
            .remove(&addr)
            .ok_or(SpeakerError::UnknownPeer(addr))?;
        let _ = slot
            .session
            .cmd
            .try_send(SessionCmd::Stop(Some(Notification::cease(
                CeaseSubcode::PeerDeconfigured,
            ))));
        let _ = slot
            .session
            .cmd
            .try_send(SessionCmd::Shutdown { silent: true });
        self.set_md5(addr, None);
        self.timers.cancel_peer(addr);
        self.by_id.remove(&slot.id);
        if let Err(e) = self.rib.remove_peer(slot.id) {
            warn!(peer = %addr, error = %e, "removing peer from the RIB");
        }
        info!(peer = %addr, "peer removed");
        Ok(())
    }

    /// Apply a changed peer configuration with as little disruption as it allows.
    fn update_peer(&mut self, p: PeerConfig) -> Result<(), SpeakerError> {
        let old = self
            .peers
            .get(&p.address)
            .ok_or(SpeakerError::UnknownPeer(p.address))?
            .config
            .clone();
        let import_changed = match PeerChange::of(&old, &p) {
            PeerChange::Unchanged => return Ok(()),
            PeerChange::Session => {
                // The session itself changed (AS, timers, password, families…): restart
                // just this peer.
                self.remove_peer(p.address)?;
                return self.add_peer(p);
            }
            PeerChange::Policy { import_changed } => import_changed,
        };
        let info = self.rib_info(&p);
        let slot = self
            .peers
            .get_mut(&p.address)
            .ok_or(SpeakerError::UnknownPeer(p.address))?;
        self.rib
            .update_peer(slot.id, info)
            .map_err(|e| SpeakerError::Rejected(e.to_string()))?;
        let p_addr = p.address;
        slot.config = p;
        let Some((families, route_refresh)) = slot.out.as_ref().map(|e| {
            (
                e.negotiated.families().collect::<Vec<_>>(),
                e.negotiated.route_refresh,
            )
        }) else {
            return Ok(());
        };
        let session = slot.session.cmd.clone();
        for f in families {
            // Export changes: our table again, through the new policy.
            self.resend_table(p_addr, f);
            // Import changes: the peer sends its table again (RFC 2918).
            if import_changed && route_refresh {
                let _ = session.try_send(SessionCmd::SendRefresh(f, RefreshSubtype::Request));
            }
        }
        if import_changed && !route_refresh {
            let _ = session.try_send(SessionCmd::Stop(Some(Notification::cease(
                CeaseSubcode::OtherConfigChange,
            ))));
            let _ = session.try_send(SessionCmd::Start);
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

    // ---- commands ----

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::AddPeer(p, r) => {
                let res = self.cfg_check_peer(&p).and_then(|()| self.add_peer(*p));
                let _ = r.send(res);
            }
            Command::UpdatePeer(p, r) => {
                let res = self.cfg_check_peer(&p).and_then(|()| self.update_peer(*p));
                let _ = r.send(res);
            }
            Command::RemovePeer(a, r) => {
                let _ = r.send(self.remove_peer(a));
            }
            Command::Announce(a, r) => {
                let res = if a.prefix != a.prefix.trunc() {
                    Err(SpeakerError::Rejected(format!(
                        "{} has host bits set",
                        a.prefix
                    )))
                } else {
                    self.announce(*a)
                };
                let _ = r.send(res);
            }
            Command::Withdraw(prefix, r) => {
                self.announced.remove(&prefix);
                let _ = r.send(
                    self.rib
                        .withdraw_local(prefix)
                        .map_err(|e| SpeakerError::Rejected(e.to_string())),
                );
            }
            Command::Subscribe(tx, r) => {
                // The whole table first, so the subscriber starts from a complete view.
                let mut all = Vec::new();
                for f in Family::ALL {
                    all.extend(self.rib.routes(f).filter_map(|v| self.best_of(v)));
                }
                if tx.try_send(all).is_ok() {
                    self.subscribers.push(tx);
                }
                let _ = r.send(());
            }
            Command::Peers(r) => {
                let (tx, rx) = oneshot::channel();
                let _ = r.send(rx);
                self.peer_status(tx);
            }
            Command::Routes(q, r) => {
                let _ = r.send(self.routes(&q));
            }
            Command::Refresh(addr, family, r) => {
                let res = match self.peers.get(&addr) {
                    None => Err(SpeakerError::UnknownPeer(addr)),
                    Some(PeerSlot { out: None, .. }) => Err(SpeakerError::Rejected(format!(
                        "peer {addr} is not established"
                    ))),
                    Some(s @ PeerSlot { out: Some(est), .. }) => {
                        if !est.negotiated.route_refresh {
                            Err(SpeakerError::Rejected(format!(
                                "peer {addr} did not announce route refresh"
                            )))
                        } else {
                            for f in est
                                .negotiated
                                .families()
                                .filter(|f| family.is_none_or(|x| x == *f))
                            {
                                let _ = s
                                    .session
                                    .cmd
                                    .try_send(SessionCmd::SendRefresh(f, RefreshSubtype::Request));
                            }
                            Ok(())
                        }
                    }
                };
                let _ = r.send(res);
            }
            Command::Reset(addr, r) => {
                let res = match self.peers.get_mut(&addr) {
                    None => Err(SpeakerError::UnknownPeer(addr)),
                    Some(s) => {
                        self.timers.cancel(Timer::Restart(addr));
                        let _ = s
                            .session
                            .cmd
                            .try_send(SessionCmd::Stop(Some(Notification::admin_reset(""))));
                        let _ = s.session.cmd.try_send(SessionCmd::Start);
                        Ok(())
                    }
                };
                let _ = r.send(res);
            }
            Command::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

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

    fn cfg_check_peer(&self, p: &PeerConfig) -> Result<(), SpeakerError> {
        let mut c = self.cfg.clone();
        c.peers = vec![p.clone()];
        c.announce.clear();
        c.validate().map_err(SpeakerError::from)
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

    /// Ask every session for its state off the core task (a session may be waiting for
    /// the core to take its events) and combine it with the RIB's counters.
    fn peer_status(&self, reply: oneshot::Sender<Vec<PeerStatus>>) {
        let now = Instant::now();
        let mut pending = Vec::new();
        for slot in self.peers.values() {
            let families: Vec<FamilyStatus> = slot
                .config
                .families
                .iter()
                .map(|&f| {
                    let c = self.rib.peer_counters(slot.id, f).unwrap_or_default();
                    FamilyStatus {
                        family: f,
                        received: c.received,
                        accepted: c.accepted,
                        filtered: c.filtered,
                        stale: c.stale,
                        sent: c.sent,
                    }
                })
                .collect();
            let (tx, rx) = oneshot::channel();
            let _ = slot.session.cmd.try_send(SessionCmd::Query(tx));
            pending.push((
                slot.config.clone(),
                families,
                slot.note.clone(),
                self.cfg.asn,
                rx,
            ));
        }
        tokio::spawn(async move {
            let mut out = Vec::new();
            for (cfg, families, note, local_as, rx) in pending {
                let s = tokio::time::timeout(Duration::from_secs(2), rx)
                    .await
                    .ok()
                    .and_then(Result::ok);
                out.push(status_of(&cfg, families, note, local_as, s, now));
            }
            out.sort_by_key(|p| p.address);
            let _ = reply.send(out);
        });
    }

    // ---- session events ----

    fn session_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::State { peer, state } => {
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.state = state;
                }
            }
            SessionEvent::Established {
                peer,
                negotiated,
                local,
                remote,
                data,
            } => self.established(peer, negotiated, local, remote, data),
            SessionEvent::Updates { peer, updates } => self.updates(peer, &updates),
            SessionEvent::RouteRefresh { peer, refresh } => self.route_refresh(peer, refresh),
            SessionEvent::Down {
                peer,
                reason,
                graceful,
            } => {
                let Some(slot) = self.peers.get_mut(&peer) else {
                    return;
                };
                let families: Vec<Family> = slot
                    .out
                    .take()
                    .map(|e| e.negotiated.stale_families())
                    .unwrap_or_default();
                let graceful = graceful && !families.is_empty();
                if let Err(e) = self.rib.peer_down(slot.id, graceful, &families) {
                    warn!(%peer, error = %e, "peer down");
                }
                debug!(%peer, %reason, graceful, "routes of the peer {}", if graceful { "kept stale" } else { "withdrawn" });
                self.check_deferral();
            }
            SessionEvent::StaleRoutesExpired { peer } => {
                if let Some(slot) = self.peers.get_mut(&peer) {
                    self.timers.cancel(Timer::Stale(peer));
                    match self.rib.stale_expired(slot.id) {
                        Ok(n) if n > 0 => {
                            info!(%peer, routes = n, "restart time passed; stale routes withdrawn")
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn established(
        &mut self,
        peer: IpAddr,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
        remote: SocketAddr,
        data: mpsc::Sender<Bytes>,
    ) {
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        let iface = transport::interface_of(local.ip());
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
            _ => slot
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
                self.rib.sweep_stale(slot.id, f);
            }
        }
        // Only a peer that comes back to stale routes gets the timer: one left from a
        // session that had none would, were that session to end gracefully too, withdraw
        // the routes kept through that restart before its restart time.
        let stale = Family::ALL.into_iter().any(|f| {
            self.rib
                .peer_counters(slot.id, f)
                .is_some_and(|c| c.stale > 0)
        });
        if stale {
            let stale_time = Duration::from_secs(u64::from(self.cfg.graceful_restart.stale_time));
            self.timers
                .set(Timer::Stale(peer), Instant::now() + stale_time);
        } else {
            self.timers.cancel(Timer::Stale(peer));
        }
        if let Err(e) = self.rib.peer_up(slot.id, info) {
            warn!(%peer, error = %e, "peer up");
        }
        slot.note = None;
        slot.out = Some(Established {
            data,
            codec: negotiated.codec.clone(),
            negotiated,
            backlog: VecDeque::new(),
            buf: BytesMut::with_capacity(CHUNK + 4096),
            eor_received: [false; 2],
        });
    }

    fn updates(&mut self, peer: IpAddr, updates: &[Update]) {
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        for u in updates {
            let report = match self.rib.apply_update(slot.id, u) {
                Ok(r) => r,
                Err(e) => {
                    warn!(%peer, error = %e, "UPDATE not applied");
                    continue;
                }
            };
            for f in &report.end_of_rib {
                debug!(%peer, family = %f, "End-of-RIB received");
                if let Some(est) = slot.out.as_mut() {
                    est.eor_received[f.index()] = true;
                }
            }
            if !report.end_of_rib.is_empty()
                && slot.out.as_ref().is_some_and(|e| e.eor_received_all())
            {
                self.timers.cancel(Timer::Stale(peer));
            }
            if let Some(m) = report.max_prefix {
                if m.warn_only {
                    warn!(%peer, family = %m.family, limit = m.limit, count = m.count, "maximum prefixes exceeded");
                } else {
                    warn!(%peer, family = %m.family, limit = m.limit, "maximum prefixes exceeded; closing the session");
                    let n = Notification::max_prefixes(m.family.afi_safi(), m.limit);
                    let _ = slot.session.cmd.try_send(SessionCmd::Stop(Some(n)));
                    slot.note = Some(format!(
                        "maximum prefixes ({}) exceeded in {}",
                        m.limit, m.family
                    ));
                    let restart = slot.config.max_prefix.and_then(|m| m.restart_after);
                    match restart {
                        Some(s) => self.timers.set(
                            Timer::Restart(peer),
                            Instant::now() + Duration::from_secs(u64::from(s)),
                        ),
                        None => self.timers.cancel(Timer::Restart(peer)),
                    }
                    if slot
                        .config
                        .max_prefix
                        .is_some_and(|m| m.action == MaxPrefixAction::Shutdown)
                        && restart.is_none()
                    {
                        slot.note = Some(format!(
                            "maximum prefixes ({}) exceeded in {}; reset the peer to restart it",
                            m.limit, m.family
                        ));
                    }
                    break;
                }
            }
        }
        self.check_deferral();
    }

    fn route_refresh(&mut self, peer: IpAddr, rr: RouteRefresh) {
        let Some(slot) = self.peers.get(&peer) else {
            return;
        };
        let Some(family) = rr.afi_safi.family() else {
            return;
        };
        match rr.subtype {
            RefreshSubtype::Request => self.resend_table(peer, family),
            RefreshSubtype::Begin => {
                let _ = self.rib.begin_refresh(slot.id, family);
            }
            RefreshSubtype::End => {
                let _ = self.rib.end_refresh(slot.id, family);
            }
        }
    }

    /// Send a peer our whole table for a family again: on its ROUTE-REFRESH, or after
    /// its export policy changed. With enhanced route refresh the table is bracketed by
    /// Begin and End of Route Refresh (RFC 7313 §4), on the data path in order with the
    /// UPDATEs between them.
    fn resend_table(&mut self, peer: IpAddr, family: Family) {
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(est) = slot.out.as_mut() else { return };
        if est.negotiated.enhanced_route_refresh {
            let borr = RouteRefresh {
                afi_safi: family.afi_safi(),
                subtype: RefreshSubtype::Begin,
            };
            if let Err(e) = est.encode_message(&Message::RouteRefresh(borr)) {
                warn!(%peer, error = %e, "cannot encode Begin of Route Refresh");
            }
        }
        if let Err(e) = self.rib.refresh_out(slot.id, family) {
            warn!(%peer, error = %e, "route refresh");
        }
    }

    fn accepted(&mut self, stream: TcpStream, addr: SocketAddr) {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match self.peers.get(&ip) {
            Some(slot) if !slot.config.shutdown => {
                let _ = slot.session.cmd.try_send(SessionCmd::Accepted(stream));
            }
            _ => debug!(remote = %addr, "connection from an address that is not a peer; closed"),
        }
    }

    // ---- timers ----

    fn on_timer(&mut self, now: Instant) {
        for t in self.timers.expire(now) {
            match t {
                Timer::Stale(addr) => {
                    let Some(slot) = self.peers.get(&addr) else {
                        continue;
                    };
                    if let Ok(n) = self.rib.stale_expired(slot.id) {
                        if n > 0 {
                            info!(peer = %addr, routes = n, "no End-of-RIB within the stale time; stale routes withdrawn");
                        }
                    }
                }
                Timer::Restart(addr) => {
                    let Some(slot) = self.peers.get(&addr) else {
                        continue;
                    };
                    info!(peer = %addr, "restarting after the maximum-prefix hold-down");
                    let _ = slot.session.cmd.try_send(SessionCmd::Start);
                }
                Timer::Deferral => {
                    info!("selection deferral timer expired");
                    self.release_deferral();
                }
            }
        }
    }

    /// RFC 4724 §4.1: the restarting speaker selects and advertises once every peer
    /// that takes part in graceful restart has sent End-of-RIB.
    fn check_deferral(&mut self) {
        if !self.timers.is_running(Timer::Deferral) {
            return;
        }
        let all = self
            .peers
            .values()
            .filter(|s| !s.config.shutdown)
            .all(|s| match &s.out {
                Some(est) => est.negotiated.peer_gr.is_none() || est.eor_received_all(),
                None => false,
            });
        if all {
            info!("End-of-RIB from every peer; selecting and advertising routes");
            self.release_deferral();
        }
    }

    fn release_deferral(&mut self) {
        self.timers.cancel(Timer::Deferral);
        self.rib.release_deferral();
        // Later sessions no longer announce a restart.
        for slot in self.peers.values() {
            let caps = self.capabilities(&slot.config);
            let _ = slot.session.cmd.try_send(SessionCmd::SetCapabilities(caps));
        }
    }

    // ---- output ----

    /// Move each established peer's pending Adj-RIB-Out into its socket, as much as the
    /// writer's queue takes; the rest stays pending (coalesced) in the RIB.
    fn pump_exports(&mut self) {
        let deferring = self.rib.deferring();
        for (addr, slot) in self.peers.iter_mut() {
            let Some(est) = slot.out.as_mut() else {
                continue;
            };
            if !est.flush_backlog() {
                continue;
            }
            if deferring {
                continue;
            }
            'families: for f in est.negotiated.families().collect::<Vec<_>>() {
                while self.rib.export_pending(slot.id, f) {
                    for u in self.rib.drain_export(slot.id, f, EXPORT_BUDGET) {
                        if let Err(e) = est.encode(&u) {
                            warn!(peer = %addr, error = %e, "cannot encode an UPDATE; skipped");
                        }
                    }
                    if !est.flush_backlog() {
                        break 'families;
                    }
                }
            }
            est.seal();
            est.flush_backlog();
        }
    }

    fn pump_best(&mut self) {
        self.subscribers.retain(|s| !s.is_closed());
        if self.subscribers.is_empty() || self.subscribers.iter().any(|s| s.capacity() == 0) {
            return;
        }
        let changes = self.rib.drain_best_changes();
        if changes.is_empty() {
            return;
        }
        for s in &self.subscribers {
            let _ = s.try_send(changes.clone());
        }
    }

    async fn shutdown(&mut self, graceful: bool) {
        let graceful = graceful && self.cfg.graceful_restart.enabled;
        if graceful {
            if let Some(dir) = &self.cfg.state_dir {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                if let Err(e) = std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(restart_marker(dir), now.to_string()))
                {
                    warn!(error = %e, "cannot record the graceful restart");
                }
            }
        }
        for t in &self.accept_tasks {
            t.abort();
        }
        // An aborted task lets go of its listener only once it has ended: wait for that,
        // so that a speaker started again right away can bind the same address.
        for t in self.accept_tasks.drain(..) {
            let _ = t.await;
        }
        self.listeners.clear();
        // Nothing the sessions report matters any more; a session blocked on a full
        // queue (a peer still sending) would not see its Shutdown until it timed out.
        self.events_rx.close();
        let mut tasks = Vec::new();
        for (_, slot) in self.peers.drain() {
            let _ = slot
                .session
                .cmd
                .send(SessionCmd::Shutdown { silent: graceful })
                .await;
            tasks.push(slot.session.task);
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

impl Established {
    fn eor_received_all(&self) -> bool {
        self.negotiated
            .families()
            .all(|f| self.eor_received[f.index()])
    }

    /// Encode one RIB output into the current chunk.
    fn encode(&mut self, u: &crate::rib::OutUpdate) -> Result<(), wire::error::EncodeError> {
        match &u.body {
            OutBody::Announce { attrs, nlri } => {
                wire::pack_announce(u.family, attrs, nlri, &self.codec, &mut self.buf)?;
            }
            OutBody::Withdraw { nlri } => {
                wire::pack_withdraw(u.family, nlri, &self.codec, &mut self.buf)?;
            }
            // RFC 7313 §4: the re-sent table ends with End of Route Refresh; a plain
            // refresh (RFC 2918) has no end marker.
            OutBody::EndOfRefresh if self.negotiated.enhanced_route_refresh => {
                let eorr = RouteRefresh {
                    afi_safi: u.family.afi_safi(),
                    subtype: RefreshSubtype::End,
                };
                wire::encode_message(&Message::RouteRefresh(eorr), &self.codec, &mut self.buf)?;
            }
            OutBody::EndOfRefresh => {}
            OutBody::EndOfRib => {
                wire::encode_message(
                    &Message::Update(Update::end_of_rib(u.family)),
                    &self.codec,
                    &mut self.buf,
                )?;
            }
        }
        if self.buf.len() >= CHUNK {
            self.seal();
        }
        Ok(())
    }

    /// End the current chunk.
    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.backlog.push_back(self.buf.split().freeze());
        }
    }

    /// Hand chunks to the writer; false when its queue is full (more must wait).
    fn flush_backlog(&mut self) -> bool {
        while let Some(b) = self.backlog.pop_front() {
            match self.data.try_send(b) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(b)) => {
                    self.backlog.push_front(b);
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    return false;
                }
            }
        }
        true
    }

    fn encode_message(&mut self, m: &Message) -> Result<(), wire::error::EncodeError> {
        wire::encode_message(m, &self.codec, &mut self.buf)
    }
}

fn status_of(
    cfg: &PeerConfig,
    families: Vec<FamilyStatus>,
    note: Option<String>,
    local_as: crate::types::Asn,
    s: Option<SessionStatus>,
    now: Instant,
) -> PeerStatus {
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

async fn accept_loop(listener: Arc<TcpListener>, tx: mpsc::Sender<(TcpStream, SocketAddr)>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if tx.send((stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
