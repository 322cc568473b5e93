//! Transitions of `PeerFsm`, driven by a fake clock: `Harness::advance` jumps from one
//! deadline to the next, so a day of timers runs in milliseconds.

use super::*;
use crate::types::{AfiSafi, Asn, RouterId};
use crate::wire::open::GracefulRestartFamily;
use crate::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use crate::wire::Update;
use bytes::Bytes;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const LOCAL_AS: u32 = 64512;
const PEER_AS: u32 = 65001;
const V4: AfiSafi = AfiSafi::new(1, 1);
const V6: AfiSafi = AfiSafi::new(2, 1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rid(last: u8) -> RouterId {
    RouterId(Ipv4Addr::new(10, 0, 0, last))
}

fn cfg() -> FsmConfig {
    FsmConfig::new(Asn(LOCAL_AS), rid(5), Some(Asn(PEER_AS)))
}

fn caps(asn: u32) -> Vec<Capability> {
    vec![
        Capability::Multiprotocol(V4),
        Capability::Multiprotocol(V6),
        Capability::RouteRefresh,
        Capability::FourOctetAsn(Asn(asn)),
    ]
}

fn gr_cap(n_bit: bool, restart_time: u16) -> Capability {
    Capability::GracefulRestart {
        restart_state: false,
        notification: n_bit,
        restart_time,
        families: [V4, V6]
            .into_iter()
            .map(|afi_safi| GracefulRestartFamily {
                afi_safi,
                forwarding_preserved: true,
            })
            .collect(),
    }
}

fn with(mut c: Vec<Capability>, extra: Capability) -> Vec<Capability> {
    c.push(extra);
    c
}

/// The peer's OPEN.
fn open_from(asn: u32, id: RouterId, hold: u16, capabilities: Vec<Capability>) -> Message {
    Message::Open(Open {
        version: 4,
        asn: Asn(asn),
        hold_time: hold,
        router_id: id,
        capabilities,
    })
}

fn peer_open() -> Message {
    open_from(PEER_AS, rid(9), 90, caps(PEER_AS))
}

fn notif(code: u8, subcode: u8) -> Notification {
    notify::notification(code, subcode)
}

fn refresh() -> Message {
    Message::RouteRefresh(RouteRefresh {
        afi_safi: V4,
        subtype: RefreshSubtype::Request,
    })
}

fn update() -> Message {
    Message::Update(Update::default())
}

struct Harness {
    fsm: PeerFsm,
    t0: Instant,
    now: Instant,
}

impl Harness {
    fn new(config: FsmConfig, capabilities: Vec<Capability>) -> Self {
        let t0 = Instant::now();
        let fsm = match PeerFsm::new(config, capabilities) {
            Ok(f) => f,
            Err(e) => panic!("test config rejected: {e}"),
        };
        Harness { fsm, t0, now: t0 }
    }

    fn default() -> Self {
        Self::new(cfg(), caps(LOCAL_AS))
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        self.fsm.handle(self.now, input, &mut out);
        out
    }

    fn msg(&mut self, conn: ConnId, m: Message) -> Vec<Action> {
        self.input(Input::Message(conn, &m))
    }

    /// Moves the clock forward by `d`, running `on_timer` at each deadline on the way.
    /// Returns each action with the time since the start it was emitted at.
    fn advance(&mut self, d: Duration) -> Vec<(Duration, Action)> {
        let end = self.now + d;
        let mut got = Vec::new();
        for _ in 0..1_000_000 {
            match self.fsm.next_deadline() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    let mut out = Vec::new();
                    self.fsm.on_timer(self.now, &mut out);
                    got.extend(out.into_iter().map(|a| (self.now - self.t0, a)));
                }
                _ => {
                    self.now = end;
                    return got;
                }
            }
        }
        panic!("a timer keeps firing without moving its deadline");
    }

    fn advance_actions(&mut self, d: Duration) -> Vec<Action> {
        self.advance(d).into_iter().map(|(_, a)| a).collect()
    }

    /// Moves the clock to the next deadline and runs it.
    fn step(&mut self) -> Vec<(Duration, Action)> {
        let Some(at) = self.fsm.next_deadline() else {
            panic!("no timer armed in {:?}", self.fsm.state())
        };
        self.advance(at.saturating_duration_since(self.now))
    }

    /// Runs timers until the FSM asks for a connection; returns it and when it asked.
    fn next_connect(&mut self) -> (ConnId, Duration) {
        for _ in 0..100 {
            for (at, a) in self.step() {
                if let Action::Connect(c) = a {
                    return (c, at);
                }
            }
        }
        panic!("no Connect after 100 timers");
    }

    /// ManualStart of an active peer; returns the outgoing connection it asks for.
    fn start(&mut self) -> ConnId {
        let out = self.input(Input::ManualStart);
        single_connect(&out)
    }

    /// Drives an active peer to Established on an outgoing connection.
    fn establish_with(&mut self, peer: Message) -> ConnId {
        let c = self.start();
        self.input(Input::TcpConnected(c));
        self.msg(c, peer);
        let out = self.msg(c, Message::Keepalive);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Established { conn, .. } if *conn == c)),
            "not established: {out:?}"
        );
        assert_eq!(self.fsm.state(), State::Established);
        c
    }

    fn establish(&mut self) -> ConnId {
        self.establish_with(peer_open())
    }
}

fn single_connect(out: &[Action]) -> ConnId {
    let ids: Vec<ConnId> = out
        .iter()
        .filter_map(|a| match a {
            Action::Connect(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "expected one Connect in {out:?}");
    ids[0]
}

/// (connection, code, subcode) of each NOTIFICATION sent.
fn notifications(out: &[Action]) -> Vec<(ConnId, u8, u8)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send(c, Message::Notification(n)) => Some((*c, n.code, n.subcode)),
            _ => None,
        })
        .collect()
}

fn sent_on(out: &[Action], conn: ConnId) -> Vec<&Message> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send(c, m) if *c == conn => Some(m),
            _ => None,
        })
        .collect()
}

fn closed(out: &[Action], conn: ConnId) -> bool {
    out.iter().any(|a| *a == Action::Close(conn))
}

fn downs(out: &[Action]) -> Vec<(DownReason, bool)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Down { reason, graceful } => Some((reason.clone(), *graceful)),
            _ => None,
        })
        .collect()
}

fn transitions(out: &[Action]) -> Vec<(State, State)> {
    out.iter()
        .filter_map(|a| match a {
            Action::StateChanged { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn in_range(d: Duration, lo: Duration, hi: Duration) -> bool {
    d >= lo && d <= hi
}

/// Jitter scales a timer into [0.75, 1.0] of its value.
fn jittered(d: Duration, value: Duration) -> bool {
    in_range(d, value.mul_f64(0.75), value)
}

#[test]
fn active_peer_reaches_established() {
    let mut h = Harness::default();
    assert_eq!(h.fsm.state(), State::Idle);
    assert_eq!(h.fsm.next_deadline(), None);

    let out = h.input(Input::ManualStart);
    let c = single_connect(&out);
    assert_eq!(c.direction, Direction::Outgoing);
    assert_eq!(transitions(&out), [(State::Idle, State::Connect)]);

    let out = h.input(Input::TcpConnected(c));
    let Some(Message::Open(open)) = sent_on(&out, c).first().copied() else {
        panic!("no OPEN in {out:?}")
    };
    assert_eq!(
        (open.version, open.asn, open.hold_time, open.router_id),
        (4, Asn(LOCAL_AS), 90, rid(5))
    );
    assert_eq!(open.capabilities, caps(LOCAL_AS));
    assert_eq!(transitions(&out), [(State::Connect, State::OpenSent)]);
    // §8.2.2: the HoldTimer is the large OpenSent value.
    assert_eq!(h.fsm.next_deadline(), Some(h.now + secs(240)));

    let out = h.msg(c, peer_open());
    assert_eq!(sent_on(&out, c), [&Message::Keepalive]);
    assert_eq!(transitions(&out), [(State::OpenSent, State::OpenConfirm)]);
    assert_eq!(h.fsm.negotiated().map(|n| n.peer_id), Some(rid(9)));

    let out = h.msg(c, Message::Keepalive);
    let Some(Action::Established { conn, negotiated }) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(*conn, c);
    assert_eq!(
        (
            negotiated.hold_time,
            negotiated.keepalive,
            negotiated.peer_asn
        ),
        (90, 30, Asn(PEER_AS))
    );
    assert_eq!(
        transitions(&out),
        [(State::OpenConfirm, State::Established)]
    );
    assert_eq!(h.fsm.established_conn(), Some(c));
    assert_eq!(h.fsm.established_since(), Some(h.now));
    assert_eq!(h.fsm.stats().established_transitions, 1);
    assert_eq!(h.fsm.stats().sent.open, 1);
    assert_eq!(h.fsm.stats().sent.keepalive, 1);
    assert_eq!(h.fsm.stats().received.open, 1);
    assert_eq!(h.fsm.stats().received.keepalive, 1);
}

#[test]
fn manual_start_twice_connects_once() {
    let mut h = Harness::default();
    h.start();
    assert_eq!(h.input(Input::ManualStart), []);
}

#[test]
fn passive_peer_never_emits_connect() {
    let mut c = cfg();
    c.passive = true;
    let mut h = Harness::new(c, caps(LOCAL_AS));
    let out = h.input(Input::ManualStart);
    assert_eq!(
        out,
        [Action::StateChanged {
            from: State::Idle,
            to: State::Active
        }]
    );
    assert_eq!(h.fsm.next_deadline(), None);
    assert_eq!(h.advance(secs(3600)), []);

    // Accepts, loses the connection, fails an OPEN, waits out the idle hold: never connects.
    let mut all = Vec::new();
    let a = ConnId::incoming(1);
    all.extend(h.input(Input::TcpAccepted(a)));
    assert_eq!(h.fsm.state(), State::OpenSent);
    all.extend(h.input(Input::TcpFailed(a)));
    assert_eq!(h.fsm.state(), State::Active);
    let b = ConnId::incoming(2);
    all.extend(h.input(Input::TcpAccepted(b)));
    all.extend(h.msg(b, open_from(PEER_AS, rid(9), 2, caps(PEER_AS))));
    assert_eq!(h.fsm.state(), State::Idle);
    all.extend(h.advance_actions(secs(24 * 3600)));
    assert_eq!(h.fsm.state(), State::Active);
    assert!(
        !all.iter().any(|a| matches!(a, Action::Connect(_))),
        "{all:?}"
    );
}

#[test]
fn connect_retry_timer_retries_with_jitter() {
    let mut h = Harness::default();
    let mut conn = h.start();
    let mut last = h.elapsed();
    let mut gaps = Vec::new();
    for _ in 0..200 {
        let out = h.step();
        let mut actions = out.iter().map(|(_, a)| a.clone());
        match (actions.next(), actions.next(), actions.next()) {
            (Some(Action::Close(old)), Some(Action::Connect(new)), None) => {
                assert_eq!(old, conn);
                assert_ne!(new, conn);
                conn = new;
            }
            other => panic!("expected Close + Connect, got {other:?}"),
        }
        let at = out[0].0;
        gaps.push(at - last);
        last = at;
    }
    assert!(gaps.iter().all(|g| jittered(*g, secs(5))), "{gaps:?}");
    assert!(
        gaps.iter().any(|g| *g < secs(4)) && gaps.iter().any(|g| *g > Duration::from_millis(4800))
    );
    assert_eq!(h.fsm.state(), State::Connect);
    assert_eq!(h.fsm.connect_retry_counter(), 0);
}

#[test]
fn failed_connect_waits_in_active_then_connects_again() {
    let mut h = Harness::default();
    let c = h.start();
    let out = h.input(Input::TcpFailed(c));
    assert_eq!(transitions(&out), [(State::Connect, State::Active)]);
    let out = h.advance(secs(5));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(out[0].1, Action::Connect(n) if n != c));
    assert!(jittered(out[0].0, secs(5)));
    assert_eq!(
        out[1].1,
        Action::StateChanged {
            from: State::Active,
            to: State::Connect
        }
    );
    assert_eq!(h.fsm.connect_retry_counter(), 0);
    assert_eq!(h.fsm.last_error(), None);
}

#[test]
fn hold_timer_expiry_in_established_sends_4_0_and_restarts_after_idle_hold() {
    let mut h = Harness::default();
    let c = h.establish();
    let start = h.elapsed();
    let out = h.advance(secs(90));
    let (at, _) = out
        .iter()
        .find(|(_, a)| matches!(a, Action::Send(_, Message::Notification(_))))
        .unwrap_or_else(|| panic!("no NOTIFICATION: {out:?}"));
    assert_eq!(*at - start, secs(90));
    let actions: Vec<Action> = out.iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(notifications(&actions), [(c, 4, 0)]);
    assert!(closed(&actions, c));
    assert_eq!(downs(&actions), [(DownReason::HoldTimerExpired, false)]);
    assert_eq!(transitions(&actions), [(State::Established, State::Idle)]);
    // Our own keepalives kept going until then.
    assert!(
        sent_on(&actions, c)
            .iter()
            .filter(|m| ***m == Message::Keepalive)
            .count()
            >= 3
    );
    assert_eq!(h.fsm.last_error(), Some(&DownReason::HoldTimerExpired));
    assert_eq!(h.fsm.connect_retry_counter(), 1);
    assert_eq!(h.fsm.stats().flaps, 1);

    let out = h.advance(secs(2));
    let (at, Action::Connect(_)) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(jittered(*at - (start + secs(90)), secs(1)), "{at:?}");
    assert_eq!(h.fsm.state(), State::Connect);
}

/// One failed attempt: connect, OPEN, the peer answers with a NOTIFICATION.
fn fail_once(h: &mut Harness) -> Duration {
    let (c, restarted_at) = h.next_connect();
    h.input(Input::TcpConnected(c));
    let out = h.msg(c, Message::Notification(notif(6, 8)));
    assert_eq!(transitions(&out), [(State::OpenSent, State::Idle)]);
    restarted_at
}

#[test]
fn idle_hold_doubles_on_repeated_failures_and_caps() {
    let mut h = Harness::default();
    let c = h.start();
    h.input(Input::TcpConnected(c));
    h.msg(c, Message::Notification(notif(6, 8)));
    assert_eq!(h.fsm.state(), State::Idle);
    let mut failed_at = h.elapsed();
    let expected = [1, 2, 4, 8, 16, 32, 64, 120, 120, 120];
    for (k, want) in expected.into_iter().enumerate() {
        assert_eq!(h.fsm.connect_retry_counter() as usize, k + 1);
        let restarted_at = fail_once(&mut h);
        let waited = restarted_at - failed_at;
        assert!(
            jittered(waited, secs(want)),
            "failure {}: waited {waited:?}, want ~{want}s",
            k + 1
        );
        failed_at = h.elapsed();
    }
    assert_eq!(
        h.fsm.last_error(),
        Some(&DownReason::NotificationReceived(notif(6, 8)))
    );
}

#[test]
fn idle_hold_starts_over_after_a_stable_session() {
    let mut h = Harness::default();
    let c = h.start();
    h.input(Input::TcpConnected(c));
    h.msg(c, Message::Notification(notif(6, 8)));
    for _ in 0..4 {
        fail_once(&mut h);
    }
    assert_eq!(h.fsm.connect_retry_counter(), 5);

    // A session that lasts 10 s is an oscillation: the back-off keeps growing.
    let c = connect_and_establish(&mut h);
    h.advance(secs(10));
    h.input(Input::TcpFailed(c));
    assert_eq!(h.fsm.connect_retry_counter(), 6);

    // One that stays up for the longest back-off is not.
    let c = connect_and_establish(&mut h);
    for _ in 0..5 {
        h.advance(secs(30));
        h.msg(c, Message::Keepalive);
    }
    let out = h.input(Input::TcpFailed(c));
    assert_eq!(downs(&out), [(DownReason::ConnectionClosed, false)]);
    assert_eq!(h.fsm.connect_retry_counter(), 1);
    let failed_at = h.elapsed();
    let out = h.advance(secs(2));
    assert!(
        matches!(out.first(), Some((at, Action::Connect(_))) if jittered(*at - failed_at, secs(1))),
        "{out:?}"
    );
}

/// Waits out the idle hold and brings the next attempt to Established.
fn connect_and_establish(h: &mut Harness) -> ConnId {
    let (c, _) = h.next_connect();
    h.input(Input::TcpConnected(c));
    h.msg(c, peer_open());
    h.msg(c, Message::Keepalive);
    assert_eq!(h.fsm.state(), State::Established);
    c
}

#[test]
fn bad_open_gets_the_open_error_and_goes_idle() {
    let cases: &[(&str, Message, (u8, u8))] = &[
        (
            "hold time 2",
            open_from(PEER_AS, rid(9), 2, caps(PEER_AS)),
            (2, 6),
        ),
        (
            "hold time 1",
            open_from(PEER_AS, rid(9), 1, caps(PEER_AS)),
            (2, 6),
        ),
        (
            "wrong AS",
            open_from(65002, rid(9), 90, caps(65002)),
            (2, 2),
        ),
        (
            "identifier 0",
            open_from(PEER_AS, RouterId(Ipv4Addr::UNSPECIFIED), 90, caps(PEER_AS)),
            (2, 3),
        ),
        (
            "version 3",
            Message::Open(Open {
                version: 3,
                asn: Asn(PEER_AS),
                hold_time: 90,
                router_id: rid(9),
                capabilities: vec![],
            }),
            (2, 1),
        ),
    ];
    for (name, open, (code, subcode)) in cases {
        let mut h = Harness::default();
        let c = h.start();
        h.input(Input::TcpConnected(c));
        let out = h.msg(c, open.clone());
        assert_eq!(notifications(&out), [(c, *code, *subcode)], "{name}");
        assert!(closed(&out, c), "{name}");
        assert_eq!(h.fsm.state(), State::Idle, "{name}");
        assert!(
            matches!(h.fsm.last_error(), Some(DownReason::ErrorSent(n)) if (n.code, n.subcode) == (*code, *subcode)),
            "{name}"
        );
        assert_eq!(h.fsm.connect_retry_counter(), 1, "{name}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum At {
    DelayOpen,
    OpenSent,
    OpenConfirm,
    Established,
}

/// An active peer's outgoing connection brought to `at`.
fn reach(at: At) -> (Harness, ConnId) {
    let mut c = cfg();
    if at == At::DelayOpen {
        c.delay_open = Some(secs(10));
    }
    let mut h = Harness::new(c, caps(LOCAL_AS));
    let conn = h.start();
    h.input(Input::TcpConnected(conn));
    if matches!(at, At::OpenConfirm | At::Established) {
        h.msg(conn, peer_open());
    }
    if at == At::Established {
        h.msg(conn, Message::Keepalive);
    }
    (h, conn)
}

#[test]
fn unexpected_messages_get_the_rfc_6608_fsm_error() {
    let cases: &[(At, Message, u8)] = &[
        (At::DelayOpen, Message::Keepalive, 0),
        (At::DelayOpen, update(), 0),
        (At::OpenSent, Message::Keepalive, 1),
        (At::OpenSent, update(), 1),
        (At::OpenSent, refresh(), 1),
        (At::OpenConfirm, update(), 2),
        (At::OpenConfirm, peer_open(), 2),
        (At::OpenConfirm, refresh(), 2),
        (At::Established, peer_open(), 3),
    ];
    for (at, msg, subcode) in cases {
        let (mut h, c) = reach(*at);
        let out = h.msg(c, msg.clone());
        assert_eq!(notifications(&out), [(c, 5, *subcode)], "{at:?} {msg:?}");
        assert!(closed(&out, c), "{at:?}");
        assert_eq!(h.fsm.state(), State::Idle, "{at:?}");
        let expected_down = if *at == At::Established {
            vec![(DownReason::ErrorSent(notif(5, 3)), false)]
        } else {
            vec![]
        };
        assert_eq!(downs(&out), expected_down, "{at:?}");
    }
}

#[test]
fn established_accepts_keepalive_update_and_route_refresh() {
    let (mut h, c) = reach(At::Established);
    for m in [Message::Keepalive, update(), refresh()] {
        h.advance(secs(60));
        let out = h.msg(c, m);
        assert!(notifications(&out).is_empty(), "{out:?}");
        assert_eq!(h.fsm.state(), State::Established);
    }
    assert_eq!(h.fsm.stats().received.update, 1);
    assert_eq!(h.fsm.stats().received.route_refresh, 1);
}

#[test]
fn notification_received_closes_without_answering() {
    for at in [
        At::DelayOpen,
        At::OpenSent,
        At::OpenConfirm,
        At::Established,
    ] {
        let (mut h, c) = reach(at);
        let out = h.msg(c, Message::Notification(notif(6, 2)));
        assert!(notifications(&out).is_empty(), "{at:?}: {out:?}");
        assert!(closed(&out, c));
        assert_eq!(h.fsm.state(), State::Idle, "{at:?}");
        assert_eq!(
            h.fsm.last_error(),
            Some(&DownReason::NotificationReceived(notif(6, 2)))
        );
        assert_eq!(h.fsm.connect_retry_counter(), 1);
        if at == At::Established {
            assert_eq!(
                downs(&out),
                [(DownReason::NotificationReceived(notif(6, 2)), false)]
            );
        }
    }
}

#[test]
fn unsupported_version_notification_does_not_grow_the_back_off() {
    let (mut h, c) = reach(At::OpenSent);
    let n = Notification {
        code: 2,
        subcode: 1,
        data: Bytes::from_static(&[0, 3]),
    };
    let out = h.msg(c, Message::Notification(n));
    assert_eq!(transitions(&out), [(State::OpenSent, State::Idle)]);
    assert_eq!(h.fsm.connect_retry_counter(), 0);
    let failed_at = h.elapsed();
    let out = h.advance(secs(2));
    assert!(
        matches!(out.first(), Some((at, Action::Connect(_))) if jittered(*at - failed_at, secs(1))),
        "{out:?}"
    );
}

#[test]
fn decode_error_sends_the_codec_notification() {
    let (mut h, c) = reach(At::Established);
    let n = Notification {
        code: 3,
        subcode: 1,
        data: Bytes::new(),
    };
    let out = h.input(Input::DecodeError(c, n.clone()));
    assert_eq!(notifications(&out), [(c, 3, 1)]);
    assert!(closed(&out, c));
    assert_eq!(downs(&out), [(DownReason::ErrorSent(n), false)]);
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn open_sent_hold_timer_is_four_minutes() {
    let (mut h, c) = reach(At::OpenSent);
    let out = h.advance(secs(241));
    let sent: Vec<_> = out
        .iter()
        .filter(|(_, a)| matches!(a, Action::Send(..)))
        .map(|(at, a)| (*at, a.clone()))
        .collect();
    assert_eq!(
        sent,
        [(
            secs(240),
            Action::Send(c, Message::Notification(notif(4, 0)))
        )]
    );
    assert_eq!(h.fsm.last_error(), Some(&DownReason::HoldTimerExpired));
}

#[test]
fn open_confirm_hold_timer_is_the_negotiated_one() {
    let (mut h, c) = reach(At::OpenConfirm);
    let out = h.advance_actions(secs(90));
    assert_eq!(notifications(&out), [(c, 4, 0)]);
    assert_eq!(downs(&out), []);
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn tcp_lost_in_open_sent_goes_back_to_active() {
    let (mut h, c) = reach(At::OpenSent);
    let out = h.input(Input::TcpFailed(c));
    assert_eq!(transitions(&out), [(State::OpenSent, State::Active)]);
    assert_eq!(h.fsm.connect_retry_counter(), 0);
    assert_eq!(h.fsm.last_error(), Some(&DownReason::ConnectionClosed));
    let out = h.advance(secs(5));
    assert!(
        matches!(out.first(), Some((at, Action::Connect(_))) if jittered(*at, secs(5))),
        "{out:?}"
    );
}

#[test]
fn tcp_lost_in_open_confirm_goes_idle_with_back_off() {
    let (mut h, c) = reach(At::OpenConfirm);
    let out = h.input(Input::TcpFailed(c));
    assert_eq!(transitions(&out), [(State::OpenConfirm, State::Idle)]);
    assert_eq!(h.fsm.connect_retry_counter(), 1);
    assert!(h.fsm.idle_hold_until().is_some());
}

#[test]
fn manual_stop_sends_the_given_cease_and_stays_idle() {
    // RFC 9003 shutdown communication: length, then UTF-8.
    let text = Notification {
        code: 6,
        subcode: 2,
        data: Bytes::from_static(b"\x0bmaintenance"),
    };
    let cases: &[(&str, Option<Notification>, Notification)] = &[
        ("default", None, notif(6, 2)),
        (
            "with shutdown communication",
            Some(text.clone()),
            text.clone(),
        ),
        ("peer de-configured", Some(notif(6, 3)), notif(6, 3)),
    ];
    for (name, given, want) in cases {
        let (mut h, c) = reach(At::Established);
        let out = h.input(Input::ManualStop(given.clone()));
        assert_eq!(
            sent_on(&out, c),
            [&Message::Notification(want.clone())],
            "{name}"
        );
        assert!(closed(&out, c), "{name}");
        assert_eq!(
            downs(&out),
            [(DownReason::Stopped(want.clone()), false)],
            "{name}"
        );
        assert_eq!(
            transitions(&out),
            [(State::Established, State::Idle)],
            "{name}"
        );
        assert_eq!(h.fsm.next_deadline(), None, "{name}");
        assert_eq!(
            h.advance(secs(24 * 3600)),
            [],
            "{name}: restarted by itself"
        );
        assert_eq!(h.fsm.connect_retry_counter(), 0);
        // And starts again on command, at once.
        let out = h.input(Input::ManualStart);
        single_connect(&out);
    }
}

#[test]
fn manual_stop_display_shows_the_shutdown_text() {
    let n = Notification {
        code: 6,
        subcode: 2,
        data: Bytes::from_static(b"\x0bmaintenance"),
    };
    assert_eq!(
        DownReason::Stopped(n.clone()).to_string(),
        "stopped, sent 6/2 cease: administrative shutdown: \"maintenance\""
    );
    assert_eq!(
        DownReason::NotificationReceived(notify::hard_reset(&n)).to_string(),
        "received 6/9 cease: hard reset (cease: administrative shutdown): \"maintenance\""
    );
    assert_eq!(
        DownReason::ErrorSent(notif(2, 6)).to_string(),
        "sent 2/6 OPEN error: unacceptable hold time"
    );
}

#[test]
fn manual_stop_before_open_just_closes() {
    for at in [None, Some(At::DelayOpen)] {
        let (mut h, c) = match at {
            Some(at) => reach(at),
            None => {
                let mut h = Harness::default();
                let c = h.start();
                (h, c)
            }
        };
        let out = h.input(Input::ManualStop(None));
        assert_eq!(notifications(&out), [], "{at:?}");
        assert!(closed(&out, c));
        assert_eq!(h.fsm.state(), State::Idle);
        assert_eq!(h.fsm.last_error(), None);
    }
}

#[test]
fn manual_stop_with_n_bit_sends_hard_reset_for_shutdown_but_not_for_config_change() {
    let ours = with(caps(LOCAL_AS), gr_cap(true, 120));
    let theirs = open_from(PEER_AS, rid(9), 90, with(caps(PEER_AS), gr_cap(true, 120)));
    let cases: &[(Option<Notification>, Notification, bool)] = &[
        (None, notify::hard_reset(&notif(6, 2)), false),
        (Some(notif(6, 4)), notify::hard_reset(&notif(6, 4)), false),
        (Some(notif(6, 6)), notif(6, 6), true),
    ];
    for (given, want, graceful) in cases {
        let mut h = Harness::new(cfg(), ours.clone());
        let c = h.establish_with(theirs.clone());
        let out = h.input(Input::ManualStop(given.clone()));
        assert_eq!(sent_on(&out, c), [&Message::Notification(want.clone())]);
        assert_eq!(
            downs(&out),
            [(DownReason::Stopped(want.clone()), *graceful)]
        );
    }
}

/// How each way of leaving Established decides `graceful`, without graceful restart,
/// with it (RFC 4724) and with the N bit too (RFC 8538).
#[test]
fn graceful_down_follows_rfc_4724_and_8538() {
    #[derive(Clone, Copy, Debug)]
    enum End {
        TcpLost,
        HoldExpired,
        CeaseReceived,
        HardResetReceived,
        DecodeError,
        Stop,
    }
    fn end(h: &mut Harness, c: ConnId, how: End) -> Vec<Action> {
        match how {
            End::TcpLost => h.input(Input::TcpFailed(c)),
            End::HoldExpired => h.advance_actions(secs(90)),
            End::CeaseReceived => h.msg(c, Message::Notification(notif(6, 6))),
            End::HardResetReceived => {
                h.msg(c, Message::Notification(notify::hard_reset(&notif(6, 2))))
            }
            End::DecodeError => h.input(Input::DecodeError(c, notif(3, 1))),
            End::Stop => h.input(Input::ManualStop(None)),
        }
    }
    // (end, no GR, GR, GR + N)
    let cases = [
        (End::TcpLost, false, true, true),
        (End::HoldExpired, false, false, true),
        (End::CeaseReceived, false, false, true),
        (End::HardResetReceived, false, false, false),
        (End::DecodeError, false, false, true),
        (End::Stop, false, false, false),
    ];
    for (how, plain, gr, gr_n) in cases {
        for (variant, want) in [(None, plain), (Some(false), gr), (Some(true), gr_n)] {
            let (ours, theirs) = match variant {
                None => (caps(LOCAL_AS), caps(PEER_AS)),
                Some(n) => (
                    with(caps(LOCAL_AS), gr_cap(n, 120)),
                    with(caps(PEER_AS), gr_cap(n, 120)),
                ),
            };
            let mut h = Harness::new(cfg(), ours);
            let c = h.establish_with(open_from(PEER_AS, rid(9), 90, theirs));
            let out = end(&mut h, c, how);
            let d = downs(&out);
            assert_eq!(d.len(), 1, "{how:?} {variant:?}: {out:?}");
            assert_eq!(d[0].1, want, "{how:?} with N bit {variant:?}");
            assert_eq!(h.fsm.state(), State::Idle);
        }
    }
}

/// With `graceful_on_hold_expiry` off, only the hold-timer expiry changes: a silent peer
/// loses its routes, one whose connection closes or that sends a Cease keeps them.
#[test]
fn hold_expiry_can_be_made_final_with_the_n_bit() {
    let ours = with(caps(LOCAL_AS), gr_cap(true, 120));
    let theirs = open_from(PEER_AS, rid(9), 90, with(caps(PEER_AS), gr_cap(true, 120)));
    let mut c = cfg();
    c.graceful_on_hold_expiry = false;
    let mut h = Harness::new(c.clone(), ours.clone());
    h.establish_with(theirs.clone());
    let out = h.advance_actions(secs(90));
    assert_eq!(downs(&out), [(DownReason::HoldTimerExpired, false)]);
    assert!(!out.iter().any(|a| matches!(a, Action::StaleRoutesExpired)));

    let mut h = Harness::new(c.clone(), ours.clone());
    let conn = h.establish_with(theirs.clone());
    let out = h.input(Input::TcpFailed(conn));
    assert_eq!(downs(&out), [(DownReason::ConnectionClosed, true)]);

    let mut h = Harness::new(c, ours);
    let conn = h.establish_with(theirs);
    let out = h.msg(conn, Message::Notification(notif(6, 6)));
    assert_eq!(
        downs(&out),
        [(DownReason::NotificationReceived(notif(6, 6)), true)]
    );
}

#[test]
fn stale_routes_expire_after_the_peer_restart_time() {
    let mut h = Harness::new(cfg(), with(caps(LOCAL_AS), gr_cap(false, 120)));
    let c = h.establish_with(open_from(
        PEER_AS,
        rid(9),
        90,
        with(caps(PEER_AS), gr_cap(false, 45)),
    ));
    let lost_at = h.elapsed();
    let out = h.input(Input::TcpFailed(c));
    assert_eq!(downs(&out), [(DownReason::ConnectionClosed, true)]);
    // The reconnection attempts fail; the stale routes go at the peer's restart time.
    let out = h.advance(secs(60));
    let expired: Vec<Duration> = out
        .iter()
        .filter(|(_, a)| *a == Action::StaleRoutesExpired)
        .map(|(at, _)| *at - lost_at)
        .collect();
    assert_eq!(expired, [secs(45)]);
}

#[test]
fn stale_timer_stops_when_the_session_comes_back() {
    let mut h = Harness::new(cfg(), with(caps(LOCAL_AS), gr_cap(false, 120)));
    let theirs = open_from(PEER_AS, rid(9), 90, with(caps(PEER_AS), gr_cap(false, 45)));
    let c = h.establish_with(theirs.clone());
    h.input(Input::TcpFailed(c));
    let (c, _) = h.next_connect();
    h.input(Input::TcpConnected(c));
    h.msg(c, theirs);
    h.msg(c, Message::Keepalive);
    assert_eq!(h.fsm.state(), State::Established);
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(h.advance_actions(secs(20)));
        h.msg(c, Message::Keepalive);
    }
    assert!(!all.contains(&Action::StaleRoutesExpired), "{all:?}");
}

#[test]
fn incoming_connection_while_established_loses_without_graceful_restart() {
    let (mut h, c) = reach(At::Established);
    let late = ConnId::incoming(7);
    let out = h.input(Input::TcpAccepted(late));
    // §6.8: Cease/Connection Collision Resolution, before our OPEN goes out.
    assert_eq!(notifications(&out), [(late, 6, 7)]);
    assert_eq!(
        sent_on(&out, late).len(),
        1,
        "only the NOTIFICATION: {out:?}"
    );
    // And a KEEPALIVE probes the old connection, in case the peer restarted.
    assert_eq!(sent_on(&out, c), [&Message::Keepalive]);
    assert!(closed(&out, late));
    assert!(!closed(&out, c));
    assert_eq!(downs(&out), []);
    assert_eq!(h.fsm.state(), State::Established);
    assert_eq!(h.fsm.established_conn(), Some(c));
    assert_eq!(h.fsm.stats().collisions, 1);
    assert_eq!(h.fsm.last_error(), None);
}

fn gr_open(restart_bit: bool) -> Message {
    let mut cap = gr_cap(false, 120);
    if let Capability::GracefulRestart { restart_state, .. } = &mut cap {
        *restart_state = restart_bit;
    }
    open_from(PEER_AS, rid(9), 90, with(caps(PEER_AS), cap))
}

/// Established with graceful restart on both sides; the peer's OPEN had R clear.
fn established_with_gr() -> (Harness, ConnId) {
    let mut h = Harness::new(cfg(), with(caps(LOCAL_AS), gr_cap(false, 120)));
    let c = h.establish_with(gr_open(false));
    (h, c)
}

/// Accepting while Established with GR holds the new connection and probes the old one.
fn accept_while_established_with_gr(h: &mut Harness, old: ConnId) -> ConnId {
    let new = ConnId::incoming(1);
    let out = h.input(Input::TcpAccepted(new));
    assert_eq!(sent_on(&out, new), Vec::<&Message>::new(), "OPEN held back");
    assert_eq!(
        sent_on(&out, old),
        [&Message::Keepalive],
        "probe the old one"
    );
    assert!(!closed(&out, old) && !closed(&out, new), "{out:?}");
    assert_eq!(downs(&out), []);
    assert_eq!(h.fsm.state(), State::Established);
    new
}

/// Two speakers that dialled each other at once: the second connection arrives after the
/// first is Established, the old TCP connection is healthy. The Established session
/// stays (§6.8); RFC 4724's "the peer restarted" is not believed without evidence.
#[test]
fn incoming_connection_while_established_with_graceful_restart_and_a_live_session_loses() {
    for opens_first in [false, true] {
        let (mut h, old) = established_with_gr();
        let new = accept_while_established_with_gr(&mut h, old);
        let mut all = Vec::new();
        if opens_first {
            all.extend(h.msg(new, gr_open(false)));
        }
        // The old session keeps answering.
        all.extend(h.advance(secs(1)).into_iter().map(|(_, a)| a));
        all.extend(h.msg(old, Message::Keepalive));
        all.extend(h.advance(secs(2)).into_iter().map(|(_, a)| a));
        assert_eq!(
            notifications(&all),
            [(new, 6, 7)],
            "opens_first {opens_first}: {all:?}"
        );
        assert!(closed(&all, new));
        assert!(!closed(&all, old));
        assert!(
            !sent_on(&all, new)
                .iter()
                .any(|m| matches!(m, Message::Open(_) | Message::Keepalive)),
            "nothing but the Cease on the losing connection: {all:?}"
        );
        assert_eq!(downs(&all), []);
        assert_eq!(h.fsm.established_conn(), Some(old));
        assert_eq!(h.fsm.stats().flaps, 0);
        assert_eq!(h.fsm.stats().collisions, 1);
        assert_eq!(h.fsm.connect_retry_counter(), 0);
    }
}

/// The peer restarted and its kernel reset the old connection when our probe reached it:
/// the old session ends gracefully (routes kept stale) and the new one comes up, with the
/// peer's OPEN arriving before or after the reset.
#[test]
fn incoming_connection_while_established_with_graceful_restart_and_a_dead_session_takes_over() {
    for opens_first in [false, true] {
        let ctx = format!("opens_first {opens_first}");
        let (mut h, old) = established_with_gr();
        let new = accept_while_established_with_gr(&mut h, old);
        let mut all = Vec::new();
        if opens_first {
            let out = h.msg(new, gr_open(false));
            assert_eq!(
                sent_on(&out, new),
                Vec::<&Message>::new(),
                "{ctx}: still held"
            );
            all.extend(out);
        }
        all.extend(
            h.advance(Duration::from_millis(300))
                .into_iter()
                .map(|(_, a)| a),
        );
        let out = h.input(Input::TcpFailed(old));
        assert_eq!(
            downs(&out),
            [(DownReason::ConnectionClosed, true)],
            "{ctx}: {out:?}"
        );
        assert!(
            matches!(sent_on(&out, new).first(), Some(Message::Open(_))),
            "{ctx}: our OPEN goes out once the old session is gone: {out:?}"
        );
        all.extend(out);
        if !opens_first {
            all.extend(h.msg(new, gr_open(false)));
        }
        assert_eq!(h.fsm.state(), State::OpenConfirm, "{ctx}");
        let out = h.msg(new, Message::Keepalive);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Established { conn, .. } if *conn == new)),
            "{ctx}: {out:?}"
        );
        all.extend(out);
        assert_eq!(notifications(&all), [], "{ctx}");
        assert_eq!(h.fsm.stats().flaps, 1, "{ctx}");
        assert_eq!(h.fsm.connect_retry_counter(), 0, "{ctx}: no idle hold");
        // The session stays up on the new connection past the probe time.
        let later = h.advance_actions(secs(5));
        assert!(!closed(&later, new), "{ctx}: {later:?}");
        assert_eq!(h.fsm.established_conn(), Some(new), "{ctx}");
    }
}

/// RFC 4724 §4.2: the new OPEN sets the Restart State bit the old session's OPEN did not,
/// and the old connection fails when probed (a restarted host's kernel resets it, a
/// restarted process has closed it): the old session ends gracefully and the new one
/// comes up.
#[test]
fn incoming_connection_whose_open_says_the_peer_restarted_replaces_a_dead_session() {
    let (mut h, old) = established_with_gr();
    let new = accept_while_established_with_gr(&mut h, old);
    let out = h.msg(new, gr_open(true));
    assert_eq!(
        out,
        [],
        "the restart bit alone ends nothing: the connection is held"
    );
    assert_eq!(h.fsm.established_conn(), Some(old));
    let mut all = h.advance_actions(Duration::from_millis(200));
    let out = h.input(Input::TcpFailed(old));
    assert!(closed(&out, old));
    assert_eq!(
        notifications(&out),
        [],
        "no NOTIFICATION to a peer that is gone"
    );
    assert_eq!(downs(&out), [(DownReason::PeerRestarted, true)]);
    assert!(
        matches!(
            sent_on(&out, new).as_slice(),
            [Message::Open(_), Message::Keepalive]
        ),
        "{out:?}"
    );
    assert_eq!(h.fsm.last_error(), Some(&DownReason::PeerRestarted));
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    all.extend(out);
    let out = h.msg(new, Message::Keepalive);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Established { conn, .. } if *conn == new)));
    assert_eq!(h.fsm.stats().established_transitions, 2);
    assert_eq!(h.fsm.stats().flaps, 1);
    assert_eq!(h.fsm.stats().collisions, 0);
    // Still established long after the old session's restart time would have run out.
    for _ in 0..10 {
        all.extend(h.advance_actions(secs(20)));
        h.msg(new, Message::Keepalive);
    }
    assert!(!all.contains(&Action::StaleRoutesExpired));
    assert_eq!(h.fsm.state(), State::Established);
}

/// The same OPEN (the peer's AS and identifier, the Restart State bit) from someone who
/// reached our port but is not the peer: the peer's own connection still stands, so the
/// impostor is closed with Cease/Connection Collision Resolution, whatever it sends while
/// held, and the session and its routes stay.
#[test]
fn restart_bit_on_a_new_connection_while_the_old_one_stands_replaces_nothing() {
    // What the impostor sends after its OPEN while held.
    let follow_ups: [(&str, Vec<Message>); 3] = [
        ("nothing", vec![]),
        ("a KEEPALIVE", vec![Message::Keepalive]),
        (
            "a KEEPALIVE and an End-of-RIB",
            vec![Message::Keepalive, update()],
        ),
    ];
    for (what, follow) in follow_ups {
        let (mut h, old) = established_with_gr();
        let new = accept_while_established_with_gr(&mut h, old);
        let mut all = h.msg(new, gr_open(true));
        for m in follow {
            all.extend(h.msg(new, m));
        }
        // The real peer keeps its session alive meanwhile.
        all.extend(h.advance_actions(secs(1)));
        all.extend(h.msg(old, Message::Keepalive));
        all.extend(h.advance_actions(secs(30)));
        all.extend(h.msg(old, Message::Keepalive));
        assert!(closed(&all, new), "{what}: {all:?}");
        assert!(!closed(&all, old), "{what}: {all:?}");
        assert!(
            !sent_on(&all, new)
                .iter()
                .any(|m| matches!(m, Message::Open(_) | Message::Keepalive)),
            "{what}: the impostor never sees our OPEN: {all:?}"
        );
        assert_eq!(downs(&all), [], "{what}");
        assert!(!all.contains(&Action::StaleRoutesExpired), "{what}");
        assert!(
            !all.iter().any(|a| matches!(a, Action::Established { .. })),
            "{what}: {all:?}"
        );
        assert_eq!(h.fsm.established_conn(), Some(old), "{what}");
        assert_eq!(h.fsm.state(), State::Established, "{what}");
        assert_eq!(h.fsm.stats().flaps, 0, "{what}");
        assert_ne!(
            h.fsm.last_error(),
            Some(&DownReason::PeerRestarted),
            "{what}"
        );
    }
}

/// Without graceful restart on the Established session, even a restart bit in the new
/// OPEN does not end it: nothing would keep the routes, and §6.8 keeps the Established one.
#[test]
fn restart_bit_without_graceful_restart_on_the_session_changes_nothing() {
    let (mut h, c) = reach(At::Established);
    let new = ConnId::incoming(3);
    let out = h.input(Input::TcpAccepted(new));
    assert_eq!(notifications(&out), [(new, 6, 7)]);
    assert_eq!(h.msg(new, gr_open(true)), [], "the connection is gone");
    assert_eq!(h.fsm.established_conn(), Some(c));
}

#[test]
fn incoming_connection_is_refused_while_stopped() {
    let mut h = Harness::default();
    let a = ConnId::incoming(1);
    let out = h.input(Input::TcpAccepted(a));
    assert_eq!(notifications(&out), [(a, 6, 5)]);
    assert!(closed(&out, a));
    assert_eq!(h.fsm.state(), State::Idle);

    // And after a ManualStop.
    let (mut h, _) = reach(At::Established);
    h.input(Input::ManualStop(None));
    let out = h.input(Input::TcpAccepted(a));
    assert_eq!(notifications(&out), [(a, 6, 5)]);
    assert_eq!(h.fsm.state(), State::Idle);
}

/// Fails `n` sessions in a row so that the idle hold has grown.
fn grow_back_off(h: &mut Harness, n: u32) {
    for _ in 0..n {
        let (c, _) = h.next_connect();
        h.input(Input::TcpConnected(c));
        h.msg(c, Message::Notification(notif(6, 8)));
    }
    assert_eq!(h.fsm.connect_retry_counter(), n);
    assert_eq!(h.fsm.state(), State::Idle);
}

/// A peer in its idle hold accepts the peer's connection and starts at once; the session
/// that comes up resets the back-off.
#[test]
fn incoming_connection_during_the_idle_hold_starts_the_session_at_once() {
    let mut h = Harness::default();
    h.input(Input::ManualStart);
    grow_back_off(&mut h, 5);
    let hold_left = h
        .fsm
        .idle_hold_until()
        .map(|t| t.saturating_duration_since(h.now));
    assert!(hold_left.is_some_and(|d| d >= secs(10)), "{hold_left:?}");

    let a = ConnId::incoming(1);
    let out = h.input(Input::TcpAccepted(a));
    assert_eq!(notifications(&out), []);
    assert!(
        matches!(sent_on(&out, a).as_slice(), [Message::Open(_)]),
        "{out:?}"
    );
    assert_eq!(transitions(&out), [(State::Idle, State::OpenSent)]);
    assert_eq!(h.fsm.idle_hold_until(), None);
    h.msg(a, peer_open());
    let out = h.msg(a, Message::Keepalive);
    assert!(out
        .iter()
        .any(|x| matches!(x, Action::Established { conn, .. } if *conn == a)));
    assert_eq!(h.fsm.connect_retry_counter(), 0, "back-off reset");

    // The next failure waits the first idle hold again, not the grown one.
    let failed_at = h.elapsed();
    let out = h.input(Input::TcpFailed(a));
    assert_eq!(downs(&out).len(), 1);
    assert_eq!(h.fsm.connect_retry_counter(), 1);
    let (_, at) = h.next_connect();
    assert!(
        jittered(at - failed_at, FsmConfig::DEFAULT_IDLE_HOLD),
        "waited {:?}",
        at - failed_at
    );
}

/// Our own attempts stay damped: an accepted connection that fails before Established
/// puts the peer back into the idle hold it cut short.
#[test]
fn idle_hold_resumes_when_the_accepted_connection_fails_early() {
    let mut h = Harness::default();
    h.input(Input::ManualStart);
    grow_back_off(&mut h, 5);
    let until = h.fsm.idle_hold_until();
    let a = ConnId::incoming(1);
    h.input(Input::TcpAccepted(a));
    h.advance(secs(1));
    let out = h.input(Input::TcpFailed(a));
    assert!(
        !out.iter().any(|x| matches!(x, Action::Connect(_))),
        "{out:?}"
    );
    assert_eq!(h.fsm.idle_hold_until(), until, "the same hold resumes");
    assert_eq!(h.fsm.state(), State::Idle);
    assert_eq!(
        h.fsm.connect_retry_counter(),
        5,
        "TCP lost in OpenSent is no error"
    );
    let (_, at) = h.next_connect();
    assert_eq!(Some(h.t0 + at), until, "connects when the hold ends");
}

/// The peer resolved a collision against our only connection (its other one has not
/// reached us yet): no error, no idle hold; we wait in Active for its connection.
#[test]
fn collision_cease_on_the_only_connection_goes_to_active() {
    let (mut h, c) = reach(At::OpenConfirm);
    let out = h.msg(c, Message::Notification(notif(6, 7)));
    assert!(closed(&out, c));
    assert_eq!(h.fsm.state(), State::Active);
    assert_eq!(h.fsm.idle_hold_until(), None);
    assert_eq!(h.fsm.connect_retry_counter(), 0);
    assert_eq!(h.fsm.last_error(), None);
    let a = ConnId::incoming(1);
    h.input(Input::TcpAccepted(a));
    h.msg(a, peer_open());
    h.msg(a, Message::Keepalive);
    assert_eq!(h.fsm.established_conn(), Some(a));
}

#[test]
fn a_second_incoming_connection_replaces_the_first() {
    let mut c = cfg();
    c.passive = true;
    let mut h = Harness::new(c, caps(LOCAL_AS));
    h.input(Input::ManualStart);
    let first = ConnId::incoming(1);
    let second = ConnId::incoming(2);
    h.input(Input::TcpAccepted(first));
    let out = h.input(Input::TcpAccepted(second));
    assert!(closed(&out, first));
    assert!(matches!(
        sent_on(&out, second).as_slice(),
        [Message::Open(_)]
    ));
    // The first one is forgotten.
    assert_eq!(h.msg(first, peer_open()), []);
    h.msg(second, peer_open());
    h.msg(second, Message::Keepalive);
    assert_eq!(h.fsm.established_conn(), Some(second));
}

#[test]
fn inputs_for_unknown_connections_are_ignored() {
    let (mut h, c) = reach(At::Established);
    let ghost = ConnId {
        direction: Direction::Outgoing,
        seq: 77,
    };
    assert_eq!(h.input(Input::TcpConnected(ghost)), [Action::Close(ghost)]);
    assert_eq!(h.msg(ghost, Message::Notification(notif(6, 2))), []);
    assert_eq!(h.input(Input::TcpFailed(ghost)), []);
    assert_eq!(h.input(Input::DecodeError(ghost, notif(3, 1))), []);
    assert_eq!(h.fsm.established_conn(), Some(c));
    assert_eq!(h.fsm.stats().received.notification, 0);
}

#[test]
fn delay_open_waits_for_the_peer_to_speak_first() {
    let (mut h, c) = reach(At::DelayOpen);
    assert_eq!(h.fsm.state(), State::Connect);
    assert_eq!(h.advance(secs(9)), []);
    let out = h.msg(c, peer_open());
    let sent = sent_on(&out, c);
    assert!(
        matches!(sent.as_slice(), [Message::Open(_), Message::Keepalive]),
        "{out:?}"
    );
    assert_eq!(transitions(&out), [(State::Connect, State::OpenConfirm)]);
    h.msg(c, Message::Keepalive);
    assert_eq!(h.fsm.state(), State::Established);
}

#[test]
fn delay_open_timer_sends_our_open() {
    let (mut h, c) = reach(At::DelayOpen);
    let out = h.advance(secs(11));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, secs(10));
    assert!(matches!(&out[0].1, Action::Send(conn, Message::Open(_)) if *conn == c));
    assert_eq!(
        out[1].1,
        Action::StateChanged {
            from: State::Connect,
            to: State::OpenSent
        }
    );
}

#[test]
fn delay_open_on_an_accepted_connection_is_active() {
    let mut c = cfg();
    c.delay_open = Some(secs(5));
    c.passive = true;
    let mut h = Harness::new(c, caps(LOCAL_AS));
    h.input(Input::ManualStart);
    let a = ConnId::incoming(3);
    assert_eq!(h.input(Input::TcpAccepted(a)), []);
    assert_eq!(h.fsm.state(), State::Active);
}

#[test]
fn keepalive_jitter_stays_within_three_quarters_and_all_of_the_interval() {
    let (mut h, c) = reach(At::Established);
    let mut last = h.elapsed();
    let mut gaps = Vec::new();
    while gaps.len() < 2000 {
        for (at, a) in h.advance(secs(20)) {
            if a == Action::Send(c, Message::Keepalive) {
                gaps.push(at - last);
                last = at;
            }
        }
        h.msg(c, Message::Keepalive);
    }
    assert!(
        gaps.iter().all(|g| jittered(*g, secs(30))),
        "{:?}",
        gaps.iter().max()
    );
    let min = gaps.iter().min().copied().unwrap_or_default();
    let max = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        min < Duration::from_millis(23_000) && max > Duration::from_millis(29_500),
        "{min:?}..{max:?}"
    );
}

#[test]
fn a_day_of_keepalives_in_both_directions_never_expires() {
    let (mut h, c) = reach(At::Established);
    let day = secs(24 * 3600);
    let mut ours = Vec::new();
    let mut theirs = 0u32;
    // The peer keeps to its own 30 s keepalive with its own jitter (a fixed pattern here).
    let peer_gaps = [29, 23, 27, 30, 25, 24, 28, 26].map(secs);
    let mut i = 0;
    while h.elapsed() < day {
        for (at, a) in h.advance(peer_gaps[i % peer_gaps.len()]) {
            match a {
                Action::Send(conn, Message::Keepalive) if conn == c => ours.push(at),
                other => panic!("at {at:?}: {other:?}"),
            }
        }
        h.msg(c, Message::Keepalive);
        theirs += 1;
        i += 1;
    }
    assert_eq!(h.fsm.state(), State::Established);
    assert_eq!(h.fsm.stats().flaps, 0);
    // Every gap between ours stays below the peer's hold time, and they average ~26 s.
    let worst = ours
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(worst <= secs(30), "{worst:?}");
    let n = ours.len() as u64;
    assert!(
        (86_400 / 30..=86_400 * 4 / 90).contains(&n),
        "{n} keepalives in a day"
    );
    assert!(theirs > 3000);
}

#[test]
fn sending_updates_restarts_the_keepalive_timer() {
    let (mut h, c) = reach(At::Established);
    let mut all = Vec::new();
    for _ in 0..60 {
        all.extend(h.advance_actions(secs(10)));
        h.input(Input::UpdateSent(c));
        h.msg(c, update());
    }
    assert!(
        sent_on(&all, c).is_empty(),
        "KEEPALIVE sent while UPDATEs flow: {all:?}"
    );
    assert_eq!(h.fsm.stats().sent.update, 60);
    let out = h.advance(secs(30));
    assert!(out
        .iter()
        .any(|(_, a)| *a == Action::Send(c, Message::Keepalive)));
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_expiry() {
    for (ours, theirs) in [(0, 90), (90, 0)] {
        let mut config = cfg();
        config.hold_time = ours;
        let mut h = Harness::new(config, caps(LOCAL_AS));
        let c = h.establish_with(open_from(PEER_AS, rid(9), theirs, caps(PEER_AS)));
        assert_eq!(h.fsm.negotiated().map(|n| n.hold_time), Some(0));
        assert_eq!(h.fsm.next_deadline(), None);
        assert_eq!(h.advance(secs(24 * 3600)), []);
        assert_eq!(h.fsm.established_conn(), Some(c));
    }
}

#[test]
fn configured_keepalive_is_used() {
    let mut config = cfg();
    config.keepalive = Some(10);
    let mut h = Harness::new(config, caps(LOCAL_AS));
    let c = h.establish();
    let start = h.elapsed();
    let out = h.advance(secs(10));
    assert!(
        matches!(out.as_slice(), [(at, Action::Send(conn, Message::Keepalive))] if *conn == c && jittered(*at - start, secs(10))),
        "{out:?}"
    );
}

/// The four orders in which two connections can meet (§6.8), each from both sides of the
/// identifier comparison: the connection opened by the higher identifier survives, the
/// other gets Cease/Connection Collision Resolution.
#[test]
fn connection_collision_keeps_the_connection_of_the_higher_identifier() {
    #[derive(Clone, Copy, Debug)]
    enum Order {
        /// Both in OpenSent, the peer's OPEN arrives first on our connection.
        BothOpenSentOutgoingFirst,
        /// Both in OpenSent, the peer's OPEN arrives first on its connection.
        BothOpenSentIncomingFirst,
        /// Ours reached OpenConfirm before the peer's connection arrived.
        OutgoingInOpenConfirm,
        /// The peer's reached OpenConfirm before ours connected.
        IncomingInOpenConfirm,
    }
    let orders = [
        Order::BothOpenSentOutgoingFirst,
        Order::BothOpenSentIncomingFirst,
        Order::OutgoingInOpenConfirm,
        Order::IncomingInOpenConfirm,
    ];
    // (local id, peer id, local AS, peer AS, surviving direction)
    let sides = [
        (rid(200), rid(9), LOCAL_AS, PEER_AS, Direction::Outgoing),
        (rid(5), rid(9), LOCAL_AS, PEER_AS, Direction::Incoming),
        // Compared as unsigned integers, not as signed or as text.
        (
            RouterId(Ipv4Addr::new(200, 0, 0, 1)),
            RouterId(Ipv4Addr::new(9, 0, 0, 1)),
            LOCAL_AS,
            PEER_AS,
            Direction::Outgoing,
        ),
        // RFC 6286 §2.3: equal identifiers between ASes, the higher AS's connection wins.
        (rid(9), rid(9), LOCAL_AS, PEER_AS, Direction::Incoming),
        (rid(9), rid(9), LOCAL_AS, 64000, Direction::Outgoing),
    ];
    for (local_id, peer_id, local_as, peer_as, keep) in sides {
        for order in orders {
            let ctx =
                format!("local {local_id} AS{local_as}, peer {peer_id} AS{peer_as}, {order:?}");
            let mut c = FsmConfig::new(Asn(local_as), local_id, Some(Asn(peer_as)));
            c.jitter_seed = 1;
            let mut h = Harness::new(c, caps(local_as));
            let theirs = open_from(peer_as, peer_id, 90, caps(peer_as));
            let out_c = h.start();
            let in_c = ConnId::incoming(1);
            let mut all = Vec::new();
            match order {
                Order::BothOpenSentOutgoingFirst | Order::BothOpenSentIncomingFirst => {
                    all.extend(h.input(Input::TcpConnected(out_c)));
                    all.extend(h.input(Input::TcpAccepted(in_c)));
                    let (first, second) = match order {
                        Order::BothOpenSentOutgoingFirst => (out_c, in_c),
                        _ => (in_c, out_c),
                    };
                    all.extend(h.msg(first, theirs.clone()));
                    // The peer resolves the same way and sends its OPEN on the survivor.
                    let survivor = if keep == Direction::Outgoing {
                        out_c
                    } else {
                        in_c
                    };
                    if survivor == second {
                        all.extend(h.msg(second, theirs.clone()));
                    }
                }
                Order::OutgoingInOpenConfirm => {
                    all.extend(h.input(Input::TcpConnected(out_c)));
                    all.extend(h.msg(out_c, theirs.clone()));
                    all.extend(h.input(Input::TcpAccepted(in_c)));
                    all.extend(h.msg(in_c, theirs.clone()));
                }
                Order::IncomingInOpenConfirm => {
                    all.extend(h.input(Input::TcpAccepted(in_c)));
                    all.extend(h.msg(in_c, theirs.clone()));
                    all.extend(h.input(Input::TcpConnected(out_c)));
                    all.extend(h.msg(out_c, theirs.clone()));
                }
            }
            let (winner, loser) = if keep == Direction::Outgoing {
                (out_c, in_c)
            } else {
                (in_c, out_c)
            };
            assert_eq!(notifications(&all), [(loser, 6, 7)], "{ctx}: {all:?}");
            assert!(closed(&all, loser), "{ctx}");
            assert!(!closed(&all, winner), "{ctx}");
            assert_eq!(h.fsm.state(), State::OpenConfirm, "{ctx}");
            let out = h.msg(winner, Message::Keepalive);
            assert!(
                out.iter()
                    .any(|a| matches!(a, Action::Established { conn, .. } if *conn == winner)),
                "{ctx}: {out:?}"
            );
            assert_eq!(h.fsm.stats().collisions, 1, "{ctx}");
            assert_eq!(
                h.fsm.connect_retry_counter(),
                0,
                "{ctx}: a collision is no error"
            );
        }
    }
}

/// Established on our connection while the peer's is in OpenSent (our OPEN sent on it):
/// the connection the identifiers disfavour is closed at once; the favoured one is kept
/// until the peer shows its choice (§6.8 lets OpenSent connections be examined once the
/// peer's identifier is known).
#[test]
fn establishing_resolves_the_connection_still_opening_by_identifier() {
    // (peer identifier, the peer's connection is favoured)
    for (peer, favoured) in [(rid(2), false), (rid(9), true)] {
        for peer_keeps_ours in [false, true] {
            let ctx = format!("peer {peer}, peer keeps ours {peer_keeps_ours}");
            let theirs = open_from(PEER_AS, peer, 90, caps(PEER_AS));
            let mut h = Harness::default();
            let out_c = h.start();
            h.input(Input::TcpConnected(out_c));
            h.msg(out_c, theirs.clone());
            let in_c = ConnId::incoming(4);
            h.input(Input::TcpAccepted(in_c));
            let out = h.msg(out_c, Message::Keepalive);
            assert_eq!(h.fsm.established_conn(), Some(out_c), "{ctx}");
            if !favoured {
                assert_eq!(notifications(&out), [(in_c, 6, 7)], "{ctx}");
                assert!(closed(&out, in_c), "{ctx}");
                continue;
            }
            assert_eq!(notifications(&out), [], "{ctx}");
            let mut all = h.msg(in_c, theirs.clone());
            if peer_keeps_ours {
                // The peer had our connection up: it never answers on its own, and the
                // probe time ends the wait.
                all.extend(h.advance_actions(secs(3)));
                assert_eq!(notifications(&all), [(in_c, 6, 7)], "{ctx}: {all:?}");
                assert_eq!(h.fsm.established_conn(), Some(out_c), "{ctx}");
                assert_eq!(downs(&all), [], "{ctx}");
            } else {
                // The peer chose its connection: it answers there and closes ours.
                all.extend(h.msg(in_c, Message::Keepalive));
                let out = h.msg(out_c, Message::Notification(notif(6, 7)));
                assert_eq!(downs(&out).len(), 1, "{ctx}: {out:?}");
                assert!(
                    out.iter()
                        .any(|a| matches!(a, Action::Established { conn, .. } if *conn == in_c)),
                    "{ctx}: {out:?}"
                );
                assert_eq!(h.fsm.established_conn(), Some(in_c), "{ctx}");
                assert_eq!(h.fsm.connect_retry_counter(), 0, "{ctx}");
                assert_eq!(h.fsm.idle_hold_until(), None, "{ctx}");
            }
        }
    }
}

#[test]
fn losing_the_collision_on_one_connection_is_no_error() {
    // The peer resolved first and closed its side with Cease/7: the other connection
    // carries on.
    let mut h = Harness::default();
    let out_c = h.start();
    h.input(Input::TcpConnected(out_c));
    let in_c = ConnId::incoming(1);
    h.input(Input::TcpAccepted(in_c));
    let out = h.msg(out_c, Message::Notification(notif(6, 7)));
    assert!(closed(&out, out_c));
    assert_eq!(h.fsm.state(), State::OpenSent);
    h.msg(in_c, peer_open());
    h.msg(in_c, Message::Keepalive);
    assert_eq!(h.fsm.established_conn(), Some(in_c));
}

#[test]
fn negotiation_uses_the_open_sent_on_that_connection() {
    let restarting = Capability::GracefulRestart {
        restart_state: true,
        notification: false,
        restart_time: 120,
        families: vec![GracefulRestartFamily {
            afi_safi: V4,
            forwarding_preserved: true,
        }],
    };
    let mut h = Harness::new(cfg(), with(caps(LOCAL_AS), restarting));
    let c = h.start();
    h.input(Input::TcpConnected(c));
    let cleared = with(caps(LOCAL_AS), gr_cap(false, 120));
    assert_eq!(h.fsm.set_local_capabilities(cleared.clone()), Ok(()));
    h.msg(c, peer_open());
    assert_eq!(
        h.fsm
            .negotiated()
            .and_then(|n| n.local_gr.as_ref())
            .map(|g| g.restart_state),
        Some(true)
    );
    assert_eq!(h.fsm.local_open().capabilities, cleared);
    assert!(h
        .fsm
        .set_local_capabilities(vec![Capability::FourOctetAsn(Asn(1))])
        .is_err());
}

#[test]
fn invalid_configuration_is_refused_at_construction() {
    let mut c = cfg();
    c.hold_time = 2;
    assert_eq!(
        PeerFsm::new(c, caps(LOCAL_AS)).err(),
        Some(FsmConfigError::HoldTime(2))
    );
}

#[test]
fn message_counters_follow_both_directions() {
    let (mut h, c) = reach(At::Established);
    h.msg(c, update());
    h.msg(c, refresh());
    h.input(Input::UpdateSent(c));
    h.input(Input::RouteRefreshSent(c));
    h.input(Input::ManualStop(None));
    let s = h.fsm.stats();
    assert_eq!(
        s.received,
        MessageCounts {
            open: 1,
            update: 1,
            notification: 0,
            keepalive: 1,
            route_refresh: 1
        }
    );
    assert_eq!(
        s.sent,
        MessageCounts {
            open: 1,
            update: 1,
            notification: 1,
            keepalive: 1,
            route_refresh: 1
        }
    );
    assert_eq!(s.received.total(), 4);
    assert_eq!((s.established_transitions, s.flaps), (1, 1));
}

#[test]
fn open_confirm_with_hold_zero_still_gives_up_after_four_minutes() {
    let mut h = Harness::default();
    let c = h.start();
    h.input(Input::TcpConnected(c));
    h.msg(c, open_from(PEER_AS, rid(9), 0, caps(PEER_AS)));
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    let confirmed_at = h.elapsed();
    let out = h.advance(secs(240));
    let sent: Vec<_> = out
        .iter()
        .filter(|(_, a)| matches!(a, Action::Send(..)))
        .collect();
    assert_eq!(
        sent.len(),
        1,
        "no KEEPALIVEs with hold 0, then one NOTIFICATION: {out:?}"
    );
    assert_eq!(sent[0].0 - confirmed_at, secs(240));
    assert_eq!(
        sent[0].1,
        Action::Send(c, Message::Notification(notif(4, 0)))
    );
}

#[test]
fn dynamic_peer_accepts_any_as_and_reports_it() {
    let mut config = cfg();
    config.peer_asn = None;
    let mut h = Harness::new(config, caps(LOCAL_AS));
    h.establish_with(open_from(4_200_000_007, rid(9), 90, caps(4_200_000_007)));
    let n = h.fsm.negotiated().map(|n| (n.peer_asn, n.ibgp));
    assert_eq!(n, Some((Asn(4_200_000_007), false)));
}
