//! Two `PeerFsm`s wired to each other through a simulated network, as two nodes of a full
//! mesh: both dial at the same moment. The network keeps each direction of a connection in
//! order (TCP does) and orders nothing else, so every interleaving of the two connections'
//! handshakes, OPENs, KEEPALIVEs and closes is tried, from a seeded generator. Each must
//! end with one session, on the same connection at both ends, with nothing torn down.

use super::*;
use crate::types::{AfiSafi, Asn, RouterId};
use crate::wire::open::GracefulRestartFamily;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const AS: u32 = 64512;
const V4: AfiSafi = AfiSafi::new(1, 1);

/// xorshift64*: enough to pick among pending events, and the seed reproduces a failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// One TCP connection between the two speakers.
struct Link {
    /// Its name at speaker 0 and at speaker 1.
    ids: [ConnId; 2],
    opener: usize,
    /// Whether each side was told the connection is up (TcpConnected / TcpAccepted).
    told: [bool; 2],
    /// What each side wrote and the other has not read yet; `None` is the close.
    written: [VecDeque<Option<Message>>; 2],
    closed: [bool; 2],
}

struct Mesh {
    fsms: [PeerFsm; 2],
    links: Vec<Link>,
    next_incoming: [u32; 2],
    now: Instant,
    /// The link each side's session is Established on.
    established: [Option<usize>; 2],
    downs: [Vec<DownReason>; 2],
    log: Vec<String>,
    /// A link half-open at node 1 (its host restarted): node 0's next write on it is
    /// answered by a reset.
    half_open: Option<usize>,
    reset_due: bool,
}

enum Event {
    Up(usize, usize),
    Deliver(usize, usize),
}

impl Mesh {
    fn new(ids: [u8; 2], graceful_restart: bool) -> Self {
        let fsms = ids.map(|last| {
            let mut c = FsmConfig::new(
                Asn(AS),
                RouterId(Ipv4Addr::new(10, 0, 0, last)),
                Some(Asn(AS)),
            );
            c.connect_retry = Duration::from_secs(1);
            c.jitter_seed = u64::from(last);
            let mut caps = vec![
                Capability::Multiprotocol(V4),
                Capability::FourOctetAsn(Asn(AS)),
            ];
            if graceful_restart {
                caps.push(Capability::GracefulRestart {
                    restart_state: false,
                    notification: true,
                    restart_time: 120,
                    families: vec![GracefulRestartFamily {
                        afi_safi: V4,
                        forwarding_preserved: false,
                    }],
                });
            }
            match PeerFsm::new(c, caps) {
                Ok(f) => f,
                Err(e) => panic!("test config rejected: {e}"),
            }
        });
        Mesh {
            fsms,
            links: Vec::new(),
            next_incoming: [0, 0],
            now: Instant::now(),
            established: [None, None],
            downs: [Vec::new(), Vec::new()],
            log: Vec::new(),
            half_open: None,
            reset_due: false,
        }
    }

    fn link_of(&self, side: usize, id: ConnId) -> Option<usize> {
        self.links
            .iter()
            .position(|l| l.ids[side] == id && !l.closed[side])
    }

    fn apply(&mut self, side: usize, actions: Vec<Action>) {
        for a in actions {
            self.log.push(format!("{side}: {a:?}"));
            match a {
                Action::Connect(id) => {
                    let other = 1 - side;
                    self.next_incoming[other] += 1;
                    let mut ids = [id, id];
                    ids[other] = ConnId::incoming(self.next_incoming[other]);
                    self.links.push(Link {
                        ids,
                        opener: side,
                        told: [false, false],
                        written: [VecDeque::new(), VecDeque::new()],
                        closed: [false, false],
                    });
                }
                Action::Send(id, m) => {
                    if side == 0
                        && self.half_open.is_some()
                        && self.half_open == self.link_of(0, id)
                    {
                        self.reset_due = true;
                    }
                    if let Some(l) = self.link_of(side, id) {
                        let l = &mut self.links[l];
                        if !l.closed[side] {
                            l.written[side].push_back(Some(m));
                        }
                    }
                }
                Action::Close(id) => {
                    if let Some(l) = self.link_of(side, id) {
                        let l = &mut self.links[l];
                        if !l.closed[side] {
                            l.closed[side] = true;
                            l.written[side].push_back(None);
                        }
                    }
                }
                Action::Established { conn, .. } => {
                    self.established[side] = self.link_of(side, conn);
                }
                Action::Down { reason, .. } => {
                    self.established[side] = None;
                    self.downs[side].push(reason);
                }
                Action::StaleRoutesExpired | Action::StateChanged { .. } => {}
            }
        }
    }

    fn input(&mut self, side: usize, input: Input<'_>) {
        let mut out = Vec::new();
        self.fsms[side].handle(self.now, input, &mut out);
        self.apply(side, out);
    }

    fn timers(&mut self) {
        for side in 0..2 {
            if self.fsms[side]
                .next_deadline()
                .is_some_and(|d| d <= self.now)
            {
                let mut out = Vec::new();
                self.fsms[side].on_timer(self.now, &mut out);
                self.apply(side, out);
            }
        }
    }

    /// What the network may do next.
    fn pending(&self) -> Vec<Event> {
        let mut ev = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            for side in 0..2 {
                if !l.told[side] && !l.closed[side] {
                    ev.push(Event::Up(i, side));
                }
                // The reader of `side` reads what the other side wrote, once it has the
                // connection.
                if !l.written[1 - side].is_empty() && (l.told[side] || l.closed[side]) {
                    ev.push(Event::Deliver(i, side));
                }
            }
        }
        ev
    }

    fn fire(&mut self, ev: Event) {
        match ev {
            Event::Up(i, side) => {
                self.links[i].told[side] = true;
                let id = self.links[i].ids[side];
                if self.links[i].opener == side {
                    self.input(side, Input::TcpConnected(id));
                } else {
                    self.input(side, Input::TcpAccepted(id));
                }
            }
            Event::Deliver(i, side) => {
                let l = &mut self.links[i];
                let Some(item) = l.written[1 - side].pop_front() else {
                    return;
                };
                if l.closed[side] {
                    return;
                }
                let id = l.ids[side];
                match item {
                    Some(m) => self.input(side, Input::Message(id, &m)),
                    None => {
                        l.closed[side] = true;
                        self.input(side, Input::TcpFailed(id));
                    }
                }
            }
        }
    }

    /// Runs the network for `span` of simulated time: a random pending event per
    /// millisecond, timers as they fall due.
    fn run(&mut self, rng: &mut Rng, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            if std::mem::take(&mut self.reset_due) {
                if let Some(l) = self.half_open.take() {
                    self.links[l].closed[0] = true;
                    let id = self.links[l].ids[0];
                    self.input(0, Input::TcpFailed(id));
                }
            }
            self.timers();
            let ev = self.pending();
            if ev.is_empty() {
                let next = self.fsms.iter().filter_map(PeerFsm::next_deadline).min();
                match next {
                    Some(d) if d < end => self.now = d.max(self.now),
                    _ => self.now = end,
                }
                continue;
            }
            let pick = rng.below(ev.len());
            if let Some(e) = ev.into_iter().nth(pick) {
                self.fire(e);
            }
            self.now += Duration::from_millis(1);
        }
    }

    fn assert_one_session(&self, ctx: &str) {
        let trace = self.log.join("\n");
        assert!(
            self.established[0].is_some() && self.established[0] == self.established[1],
            "{ctx}: established on {:?}\n{trace}",
            self.established
        );
        for side in 0..2 {
            assert_eq!(
                self.fsms[side].state(),
                State::Established,
                "{ctx}\n{trace}"
            );
            // A session may end at once when the peer had chosen the other connection
            // before it saw this one up (it says so with Cease/7); the other connection
            // carries on without a back-off.
            let lost_collision = DownReason::NotificationReceived(notify::cease(7));
            assert!(
                self.downs[side].iter().all(|d| *d == lost_collision)
                    && self.downs[side].len() <= 1,
                "{ctx}: side {side}: {:?}\n{trace}",
                self.downs[side]
            );
            assert_eq!(
                self.fsms[side].connect_retry_counter(),
                0,
                "{ctx}: side {side} backed off\n{trace}"
            );
        }
    }
}

/// Both nodes start at the same moment and dial each other, for each order of their
/// identifiers, with and without graceful restart.
#[test]
fn both_dialling_at_once_end_with_one_session_in_every_interleaving() {
    for graceful_restart in [false, true] {
        for ids in [[1, 2], [2, 1]] {
            for seed in 1..=400u64 {
                let ctx = format!("ids {ids:?}, graceful restart {graceful_restart}, seed {seed}");
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut m = Mesh::new(ids, graceful_restart);
                m.input(0, Input::ManualStart);
                m.input(1, Input::ManualStart);
                m.run(&mut rng, Duration::from_secs(10));
                m.assert_one_session(&ctx);
            }
        }
    }
}

/// After a session is up, one node restarts: its old connection closes (or, a rebooted
/// host, stays half-open until our probe is reset) and it dials again while the other
/// node may be dialling too. The session must come back within a few seconds each time.
#[test]
fn a_restarting_node_gets_its_session_back_within_seconds() {
    #[derive(Clone, Copy, Debug)]
    enum Restart {
        /// The process ended: its kernel closed the connection.
        Closed,
        /// The host came back without the connection: the old one is half-open at the
        /// other node, and only our probe finds out.
        HalfOpen,
    }
    for graceful_restart in [false, true] {
        for restart in [Restart::Closed, Restart::HalfOpen] {
            for seed in 1..=100u64 {
                let ctx = format!("graceful restart {graceful_restart}, {restart:?}, seed {seed}");
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let mut m = Mesh::new([1, 2], graceful_restart);
                m.input(0, Input::ManualStart);
                m.input(1, Input::ManualStart);
                m.run(&mut rng, Duration::from_secs(10));
                m.assert_one_session(&ctx);

                // Node 1 restarts: a fresh FSM, the links it had are gone for it.
                let Some(old) = m.established[1] else {
                    unreachable!()
                };
                for l in &mut m.links {
                    l.closed[1] = true;
                    l.written[1].clear();
                    if matches!(restart, Restart::Closed) {
                        l.written[1].push_back(None);
                    }
                }
                let fresh = Mesh::new([1, 2], graceful_restart);
                let [_, f1] = fresh.fsms;
                m.fsms[1] = f1;
                m.established[1] = None;
                m.downs = [Vec::new(), Vec::new()];
                m.input(1, Input::ManualStart);
                let restarted_at = m.now;
                if matches!(restart, Restart::HalfOpen) {
                    m.half_open = Some(old);
                }
                m.run(&mut rng, Duration::from_secs(5));
                let ctx = format!("{ctx}, after the restart");
                let trace = m.log.join("\n");
                assert!(
                    m.established[0].is_some() && m.established[0] == m.established[1],
                    "{ctx}: not back within 5 s of {restarted_at:?}: {:?}\n{trace}",
                    m.established
                );
                assert!(m.downs[0].len() <= 1, "{ctx}: {:?}\n{trace}", m.downs[0]);
            }
        }
    }
}
