//! The speaker's BFD sessions, sans-IO: one per peer address, each with a local
//! discriminator unique among them. The IO task (`io.rs`) hands every datagram to
//! [`Table::receive`] with the port it came to and its TTL, sleeps until
//! [`Table::next_deadline`], and carries out the [`TableAction`]s; the BGP coupling
//! (`core/state.rs`) says which peers have a session ([`Table::add`], [`Table::remove`]).
//!
//! What a datagram must pass before a session sees it, in this order (RFC 5880 §6.8.6,
//! RFC 5881 §5, RFC 5883 §5):
//! 1. it decodes (`ControlPacket::decode`: version, length, multiplier, discriminators, no
//!    authentication, no multipoint);
//! 2. it finds its session: by Your Discriminator when non-zero, else by the source
//!    address and the port's encapsulation;
//! 3. it comes from that session's peer address, to that session's port (a single-hop
//!    session takes nothing on the multihop port and the other way round);
//! 4. its TTL passes the session's rule: 255 on a single hop, so nobody off the link can
//!    forge one; at least the configured minimum on a multihop session;
//! 5. once the session knows the peer's discriminator, the packet carries it as My
//!    Discriminator. A departure from RFC 5880 §6.8.6, which lets a packet with Your
//!    Discriminator zero reach its session by address alone: on a node, a pod sends its
//!    node packets with any source address and TTL 255 (no router in between), so a
//!    forged "Down" from the peer's address would end a live session. A peer that really
//!    restarted (a new discriminator) is heard once its old one is forgotten, when the
//!    Detection Time expires: the session fails then as it would have a moment earlier.
//!
//! Anything else is dropped and counted ([`TableStats`]); a session never sees it.

use super::encap::{accept_ttl, Hop, HopChoice};
use super::packet::{ControlPacket, Demux, Diag, PacketError, State};
use super::session::{Action, ConfigError, Input, Session, SessionConfig, SessionStats, Timers};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// What the speaker asks of its BFD sessions (`core/state.rs` decides, `io.rs` does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    /// A session with the peer, or new settings for the one there is.
    Add {
        peer: IpAddr,
        timers: Timers,
        passive: bool,
        hop: HopChoice,
        /// The address the peer knows us by, when the BGP session sets one.
        source: Option<IpAddr>,
    },
    /// The session goes (the peer is told AdminDown).
    Remove(IpAddr),
}

/// What one peer's session is created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub timers: Timers,
    pub passive: bool,
    pub hop: Hop,
}

/// A state change of one peer's session, for the BGP coupling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub peer: IpAddr,
    pub from: State,
    pub to: State,
    pub diag: Diag,
    /// Left Up because the peer went AdminDown: RFC 5882 §3.2 says this is no failure
    /// of the path.
    pub peer_admin_down: bool,
    /// The C bit of the peer's last packet before the change (RFC 5882 §4.3).
    pub control_plane_independent: bool,
}

/// What the IO task is to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableAction {
    /// Send this packet to `peer` on `hop`'s port, from the session's source port, with
    /// TTL 255.
    Send {
        peer: IpAddr,
        hop: Hop,
        packet: ControlPacket,
    },
    Changed(Change),
}

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("{0}")]
    Decode(#[from] PacketError),
    #[error("no session with discriminator {0}")]
    UnknownDiscriminator(u32),
    #[error("no session with this address")]
    UnknownPeer,
    #[error("the session of discriminator {discriminator} is with {peer}")]
    WrongAddress { discriminator: u32, peer: IpAddr },
    #[error("came to port {port}, the session uses {want}")]
    WrongPort { port: u16, want: u16 },
    #[error("TTL {ttl} refused on a {hop:?} session")]
    Ttl { ttl: u8, hop: Hop },
    #[error("My Discriminator {got}, the peer's is {want}")]
    NotThePeers { got: u32, want: u32 },
}

/// Datagrams dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub decode: u64,
    pub unknown: u64,
    pub wrong_address: u64,
    pub wrong_port: u64,
    pub ttl: u64,
    /// Not the discriminator the session knows the peer by (step 5).
    pub not_the_peers: u64,
}

/// One session as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub hop: Hop,
    pub state: State,
    pub remote_state: State,
    pub local_diag: Diag,
    pub remote_diag: Diag,
    pub local_discriminator: NonZeroU32,
    pub remote_discriminator: u32,
    pub timers: Timers,
    pub tx_interval: Duration,
    pub rx_interval: Duration,
    pub detection_time: Option<Duration>,
    pub stats: SessionStats,
}

struct Entry {
    session: Session,
    spec: PeerSpec,
    /// The C bit of the last packet accepted (the session forgets the peer on a failure).
    cpi: bool,
}

pub struct Table {
    sessions: BTreeMap<IpAddr, Entry>,
    by_discriminator: HashMap<u32, IpAddr>,
    /// xorshift state for discriminators: RFC 5880 §6.8.1 asks for random ones, so a
    /// blind sender cannot guess a session's.
    rng: u64,
    stats: TableStats,
    actions: Vec<Action>,
}

impl Table {
    /// `seed`: where the discriminators come from (the IO task takes the clock and the
    /// process id; tests a constant).
    pub fn new(seed: u64) -> Table {
        Table {
            sessions: BTreeMap::new(),
            by_discriminator: HashMap::new(),
            rng: seed | 1,
            stats: TableStats::default(),
            actions: Vec::new(),
        }
    }

    fn discriminator(&mut self) -> NonZeroU32 {
        loop {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            if let Some(d) = NonZeroU32::new((self.rng >> 32) as u32) {
                if !self.by_discriminator.contains_key(&d.get()) {
                    return d;
                }
            }
        }
    }

    /// A session with `peer`, or new settings for the one there is: new timers are
    /// negotiated in place (a poll sequence while Up); another encapsulation or role
    /// replaces the session.
    pub fn add(
        &mut self,
        now: Instant,
        peer: IpAddr,
        spec: PeerSpec,
        out: &mut Vec<TableAction>,
    ) -> Result<NonZeroU32, ConfigError> {
        spec.timers.validate()?;
        if let Some(e) = self.sessions.get_mut(&peer) {
            if e.spec.hop == spec.hop && e.spec.passive == spec.passive {
                e.session.set_timers(now, spec.timers)?;
                e.spec = spec;
                return Ok(e.session.local_discriminator());
            }
            self.remove(now, peer, out);
        }
        let d = self.discriminator();
        let session = Session::new(
            SessionConfig {
                local_discriminator: d,
                timers: spec.timers,
                passive: spec.passive,
                jitter_seed: self.rng,
            },
            now,
        )?;
        self.by_discriminator.insert(d.get(), peer);
        self.sessions.insert(
            peer,
            Entry {
                session,
                spec,
                cpi: false,
            },
        );
        Ok(d)
    }

    /// The session with `peer` goes: AdminDown first, so the peer's BGP is not taken
    /// down by it (RFC 5882 §3.2), then it is forgotten.
    pub fn remove(&mut self, now: Instant, peer: IpAddr, out: &mut Vec<TableAction>) {
        let Some(mut e) = self.sessions.remove(&peer) else {
            return;
        };
        self.by_discriminator
            .remove(&e.session.local_discriminator().get());
        e.session.handle(now, Input::AdminDown, &mut self.actions);
        for a in self.actions.drain(..) {
            if let Action::Send(packet) = a {
                out.push(TableAction::Send {
                    peer,
                    hop: e.spec.hop,
                    packet,
                });
            }
        }
    }

    /// One datagram that came to `port` from `from` with this TTL (or Hop Limit).
    /// `Ok(peer)`: its session took it.
    pub fn receive(
        &mut self,
        now: Instant,
        from: IpAddr,
        port: u16,
        ttl: u8,
        payload: &[u8],
        out: &mut Vec<TableAction>,
    ) -> Result<IpAddr, Dropped> {
        let res = self.check(from, port, ttl, payload);
        let (peer, p) = match res {
            Ok(x) => x,
            Err(e) => {
                let s = &mut self.stats;
                *match e {
                    Dropped::Decode(_) => &mut s.decode,
                    Dropped::UnknownDiscriminator(_) | Dropped::UnknownPeer => &mut s.unknown,
                    Dropped::WrongAddress { .. } => &mut s.wrong_address,
                    Dropped::WrongPort { .. } => &mut s.wrong_port,
                    Dropped::Ttl { .. } => &mut s.ttl,
                    Dropped::NotThePeers { .. } => &mut s.not_the_peers,
                } += 1;
                return Err(e);
            }
        };
        let Some(e) = self.sessions.get_mut(&peer) else {
            return Err(Dropped::UnknownPeer);
        };
        e.session.handle(now, Input::Packet(&p), &mut self.actions);
        e.cpi = p.control_plane_independent;
        Self::emit(peer, e, &mut self.actions, out);
        Ok(peer)
    }

    /// Steps 1–4 of the module documentation.
    fn check(
        &self,
        from: IpAddr,
        port: u16,
        ttl: u8,
        payload: &[u8],
    ) -> Result<(IpAddr, ControlPacket), Dropped> {
        let p = ControlPacket::decode(payload)?;
        let (peer, e) = match p.demux() {
            Demux::Discriminator(d) => {
                let peer = *self
                    .by_discriminator
                    .get(&d.get())
                    .ok_or(Dropped::UnknownDiscriminator(d.get()))?;
                if peer != from {
                    return Err(Dropped::WrongAddress {
                        discriminator: d.get(),
                        peer,
                    });
                }
                (peer, self.sessions.get(&peer).ok_or(Dropped::UnknownPeer)?)
            }
            Demux::Address => (from, self.sessions.get(&from).ok_or(Dropped::UnknownPeer)?),
        };
        let want = e.spec.hop.port();
        if port != want {
            return Err(Dropped::WrongPort { port, want });
        }
        if !accept_ttl(e.spec.hop, ttl) {
            return Err(Dropped::Ttl {
                ttl,
                hop: e.spec.hop,
            });
        }
        let known = e.session.remote_discriminator();
        if known != 0 && p.my_discriminator.get() != known {
            return Err(Dropped::NotThePeers {
                got: p.my_discriminator.get(),
                want: known,
            });
        }
        Ok((peer, p))
    }

    /// Runs the timers due at `now`.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<TableAction>) {
        for (peer, e) in self.sessions.iter_mut() {
            if e.session.next_deadline().is_some_and(|t| t <= now) {
                e.session.on_timer(now, &mut self.actions);
                Self::emit(*peer, e, &mut self.actions, out);
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|e| e.session.next_deadline())
            .min()
    }

    fn emit(peer: IpAddr, e: &Entry, actions: &mut Vec<Action>, out: &mut Vec<TableAction>) {
        for a in actions.drain(..) {
            out.push(match a {
                Action::Send(packet) => TableAction::Send {
                    peer,
                    hop: e.spec.hop,
                    packet,
                },
                Action::StateChanged { from, to, diag } => TableAction::Changed(Change {
                    peer,
                    from,
                    to,
                    diag,
                    peer_admin_down: from == State::Up
                        && diag == Diag::NeighborSignaledSessionDown
                        && e.session.remote_state() == State::AdminDown,
                    control_plane_independent: e.cpi,
                }),
            });
        }
    }

    pub fn view(&self, peer: IpAddr) -> Option<SessionView> {
        let e = self.sessions.get(&peer)?;
        let s = &e.session;
        Some(SessionView {
            hop: e.spec.hop,
            state: s.state(),
            remote_state: s.remote_state(),
            local_diag: s.local_diag(),
            remote_diag: s.remote_diag(),
            local_discriminator: s.local_discriminator(),
            remote_discriminator: s.remote_discriminator(),
            timers: s.timers(),
            tx_interval: s.tx_interval(),
            rx_interval: s.rx_interval(),
            detection_time: s.detection_time(),
            stats: s.stats(),
        })
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn contains(&self, peer: IpAddr) -> bool {
        self.sessions.contains_key(&peer)
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfd::encap::{MULTIHOP_PORT, SINGLE_HOP_PORT};
    use bytes::BytesMut;

    const A: &str = "10.0.0.2";
    const B: &str = "10.0.0.3";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn spec(hop: Hop) -> PeerSpec {
        PeerSpec {
            timers: Timers {
                desired_min_tx: Duration::from_millis(100),
                required_min_rx: Duration::from_millis(100),
                detect_mult: 3,
            },
            passive: false,
            hop,
        }
    }

    fn bytes(p: &ControlPacket) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        b.to_vec()
    }

    /// The peer's packet in `state`, to our discriminator `your` (0: not known yet).
    fn theirs(state: State, my: u32, your: u32) -> Vec<u8> {
        bytes(&ControlPacket {
            diag: Diag::None,
            state,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: NonZeroU32::new(my).unwrap(),
            your_discriminator: your,
            desired_min_tx: Duration::from_millis(100),
            required_min_rx: Duration::from_millis(100),
            required_min_echo_rx: Duration::ZERO,
        })
    }

    fn changes(out: &[TableAction]) -> Vec<(IpAddr, State)> {
        out.iter()
            .filter_map(|a| match a {
                TableAction::Changed(c) => Some((c.peer, c.to)),
                _ => None,
            })
            .collect()
    }

    /// Brings the session with `peer` Up from the peer's packets (discriminator 7).
    fn up(t: &mut Table, now: Instant, peer: IpAddr, port: u16) -> u32 {
        let mut out = Vec::new();
        t.receive(now, peer, port, 255, &theirs(State::Down, 7, 0), &mut out)
            .unwrap();
        let ours = t.view(peer).unwrap().local_discriminator.get();
        t.receive(
            now,
            peer,
            port,
            255,
            &theirs(State::Init, 7, ours),
            &mut out,
        )
        .unwrap();
        assert_eq!(t.view(peer).unwrap().state, State::Up);
        ours
    }

    #[test]
    fn discriminators_are_unique_nonzero_and_not_sequential() {
        let mut t = Table::new(42);
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let d = t
                .add(now, peer, spec(Hop::Single), &mut Vec::new())
                .unwrap();
            assert!(seen.insert(d.get()), "{d} twice");
        }
        let mut v: Vec<u32> = seen.into_iter().collect();
        v.sort();
        assert!(v.windows(2).filter(|w| w[1] == w[0] + 1).count() < 10);
        // The same peer again keeps its session and discriminator.
        let peer = ip("10.0.0.5");
        let d = t.view(peer).unwrap().local_discriminator;
        assert_eq!(
            t.add(now, peer, spec(Hop::Single), &mut Vec::new())
                .unwrap(),
            d
        );
    }

    #[test]
    fn demux_by_discriminator_then_by_address() {
        let now = Instant::now();
        let mut t = Table::new(1);
        t.add(now, ip(A), spec(Hop::Single), &mut Vec::new())
            .unwrap();
        t.add(now, ip(B), spec(Hop::Single), &mut Vec::new())
            .unwrap();
        let a = up(&mut t, now, ip(A), SINGLE_HOP_PORT);
        let b = t.view(ip(B)).unwrap().local_discriminator.get();
        assert_eq!(
            t.view(ip(B)).unwrap().state,
            State::Down,
            "A's packets went to A"
        );
        let mut out = Vec::new();
        // Zero Your Discriminator from an address without a session.
        assert_eq!(
            t.receive(
                now,
                ip("10.0.0.9"),
                SINGLE_HOP_PORT,
                255,
                &theirs(State::Down, 9, 0),
                &mut out
            ),
            Err(Dropped::UnknownPeer)
        );
        // A discriminator nobody has.
        let none = (1..).find(|d| *d != a && *d != b).unwrap();
        assert_eq!(
            t.receive(
                now,
                ip(A),
                SINGLE_HOP_PORT,
                255,
                &theirs(State::Up, 7, none),
                &mut out
            ),
            Err(Dropped::UnknownDiscriminator(none))
        );
        // B's discriminator from A's address: not B's peer, not taken as B's.
        assert_eq!(
            t.receive(
                now,
                ip(A),
                SINGLE_HOP_PORT,
                255,
                &theirs(State::Down, 7, b),
                &mut out
            ),
            Err(Dropped::WrongAddress {
                discriminator: b,
                peer: ip(B)
            })
        );
        assert!(out.is_empty());
        assert_eq!(t.view(ip(A)).unwrap().state, State::Up);
        assert_eq!(t.stats().unknown, 2);
        assert_eq!(t.stats().wrong_address, 1);
    }

    /// A pod on the node can send it a packet from the peer's address with TTL 255; it
    /// does not know the peer's discriminator, and without it cannot end the session.
    #[test]
    fn a_forged_down_without_the_peers_discriminator_is_dropped() {
        let now = Instant::now();
        let mut t = Table::new(1);
        t.add(now, ip(A), spec(Hop::Single), &mut Vec::new())
            .unwrap();
        let ours = up(&mut t, now, ip(A), SINGLE_HOP_PORT);
        let mut out = Vec::new();
        for forged in [
            theirs(State::Down, 8, 0),
            theirs(State::AdminDown, 8, 0),
            theirs(State::Down, 8, ours),
        ] {
            assert_eq!(
                t.receive(now, ip(A), SINGLE_HOP_PORT, 255, &forged, &mut out),
                Err(Dropped::NotThePeers { got: 8, want: 7 })
            );
        }
        assert!(out.is_empty());
        assert_eq!(t.view(ip(A)).unwrap().state, State::Up);
        assert_eq!(t.stats().not_the_peers, 3);
        // The peer itself still can.
        t.receive(
            now,
            ip(A),
            SINGLE_HOP_PORT,
            255,
            &theirs(State::Down, 7, ours),
            &mut out,
        )
        .unwrap();
        assert_eq!(t.view(ip(A)).unwrap().state, State::Down);
        // A peer that restarted with a new discriminator is heard once the session has
        // forgotten the old one (its Detection Time expired).
        let later = now + Duration::from_secs(5);
        t.on_timer(later, &mut out);
        t.receive(
            later,
            ip(A),
            SINGLE_HOP_PORT,
            255,
            &theirs(State::Down, 9, 0),
            &mut out,
        )
        .unwrap();
    }

    #[test]
    fn a_single_hop_session_takes_only_ttl_255() {
        let now = Instant::now();
        let mut t = Table::new(1);
        t.add(now, ip(A), spec(Hop::Single), &mut Vec::new())
            .unwrap();
        let ours = up(&mut t, now, ip(A), SINGLE_HOP_PORT);
        let mut out = Vec::new();
        // A forged Down from off the link (TTL decremented on the way) cannot take the
        // session down.
        for ttl in [254, 64, 1] {
            assert_eq!(
                t.receive(
                    now,
                    ip(A),
                    SINGLE_HOP_PORT,
                    ttl,
                    &theirs(State::Down, 7, ours),
                    &mut out
                ),
                Err(Dropped::Ttl {
                    ttl,
                    hop: Hop::Single
                })
            );
        }
        assert_eq!(t.view(ip(A)).unwrap().state, State::Up);
        assert_eq!(t.stats().ttl, 3);
        // On the multihop port it is not this session's either.
        assert_eq!(
            t.receive(
                now,
                ip(A),
                MULTIHOP_PORT,
                255,
                &theirs(State::Down, 7, ours),
                &mut out
            ),
            Err(Dropped::WrongPort {
                port: MULTIHOP_PORT,
                want: SINGLE_HOP_PORT
            })
        );
        t.receive(
            now,
            ip(A),
            SINGLE_HOP_PORT,
            255,
            &theirs(State::Down, 7, ours),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&out), [(ip(A), State::Down)]);
    }

    #[test]
    fn a_multihop_session_takes_its_minimum_ttl() {
        let now = Instant::now();
        let mut t = Table::new(1);
        let hop = Hop::Multi { min_ttl: 253 };
        t.add(now, ip(A), spec(hop), &mut Vec::new()).unwrap();
        let mut out = Vec::new();
        assert!(t
            .receive(
                now,
                ip(A),
                MULTIHOP_PORT,
                252,
                &theirs(State::Down, 7, 0),
                &mut out
            )
            .is_err());
        t.receive(
            now,
            ip(A),
            MULTIHOP_PORT,
            253,
            &theirs(State::Down, 7, 0),
            &mut out,
        )
        .unwrap();
        assert_eq!(t.view(ip(A)).unwrap().state, State::Init);
    }

    #[test]
    fn failure_and_admin_down_are_told_apart() {
        let t0 = Instant::now();
        let mut t = Table::new(1);
        t.add(t0, ip(A), spec(Hop::Single), &mut Vec::new())
            .unwrap();
        let ours = up(&mut t, t0, ip(A), SINGLE_HOP_PORT);
        // Silence: the detection time (3 x 100 ms) passes.
        let mut out = Vec::new();
        let mut now = t0;
        while changes(&out).is_empty() {
            now = t.next_deadline().unwrap();
            t.on_timer(now, &mut out);
        }
        assert_eq!(now - t0, Duration::from_millis(300));
        let c = out.iter().find_map(|a| match a {
            TableAction::Changed(c) => Some(*c),
            _ => None,
        });
        assert!(
            matches!(
                c,
                Some(Change {
                    to: State::Down,
                    diag: Diag::ControlDetectionTimeExpired,
                    peer_admin_down: false,
                    ..
                })
            ),
            "{c:?}"
        );
        // Up again, then the peer goes AdminDown.
        let ours2 = up(&mut t, now, ip(A), SINGLE_HOP_PORT);
        assert_eq!(ours, ours2);
        let mut out = Vec::new();
        t.receive(
            now,
            ip(A),
            SINGLE_HOP_PORT,
            255,
            &theirs(State::AdminDown, 7, ours),
            &mut out,
        )
        .unwrap();
        assert!(
            matches!(
                &out[..],
                [TableAction::Changed(Change {
                    to: State::Down,
                    peer_admin_down: true,
                    ..
                })]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn removing_a_session_tells_the_peer_admin_down() {
        let now = Instant::now();
        let mut t = Table::new(1);
        t.add(now, ip(A), spec(Hop::Single), &mut Vec::new())
            .unwrap();
        let ours = up(&mut t, now, ip(A), SINGLE_HOP_PORT);
        let mut out = Vec::new();
        t.remove(now, ip(A), &mut out);
        assert!(
            matches!(&out[..], [TableAction::Send { packet, .. }] if packet.state == State::AdminDown && packet.diag == Diag::AdministrativelyDown),
            "{out:?}"
        );
        assert!(t.is_empty());
        assert_eq!(
            t.receive(
                now,
                ip(A),
                SINGLE_HOP_PORT,
                255,
                &theirs(State::Up, 7, ours),
                &mut out
            ),
            Err(Dropped::UnknownDiscriminator(ours))
        );
    }

    #[test]
    fn new_timers_keep_the_session_and_a_new_hop_replaces_it() {
        let now = Instant::now();
        let mut t = Table::new(1);
        let d = t
            .add(now, ip(A), spec(Hop::Single), &mut Vec::new())
            .unwrap();
        up(&mut t, now, ip(A), SINGLE_HOP_PORT);
        let mut faster = spec(Hop::Single);
        faster.timers.required_min_rx = Duration::from_millis(50);
        let mut out = Vec::new();
        assert_eq!(t.add(now, ip(A), faster, &mut out).unwrap(), d);
        let v = t.view(ip(A)).unwrap();
        assert_eq!((v.state, v.timers), (State::Up, faster.timers));
        let d2 = t
            .add(now, ip(A), spec(Hop::Multi { min_ttl: 254 }), &mut out)
            .unwrap();
        assert_ne!(d, d2);
        assert_eq!(t.view(ip(A)).unwrap().state, State::Down);
    }
}
