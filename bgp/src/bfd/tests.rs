//! The session state machine on a fake clock that jumps from one deadline to the next:
//! first one session fed hand-made packets, then two sessions wired to each other through
//! a link that delivers, delays and drops.

use super::packet::PACKET_LEN;
use super::*;
use bytes::BytesMut;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

const LOCAL: u32 = 0x0a0b_0c0d;
const PEER: u32 = 0x99;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn disc(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(d) => d,
        None => panic!("zero discriminator in a test"),
    }
}

fn timers(tx: u64, rx: u64, mult: u8) -> Timers {
    Timers {
        desired_min_tx: ms(tx),
        required_min_rx: ms(rx),
        detect_mult: mult,
    }
}

fn config(t: Timers) -> SessionConfig {
    SessionConfig {
        local_discriminator: disc(LOCAL),
        timers: t,
        passive: false,
        jitter_seed: 42,
    }
}

/// A packet from the peer: 300 ms × 3, knowing our discriminator unless it is Down.
fn peer(state: State) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: disc(PEER),
        your_discriminator: if matches!(state, State::Down | State::AdminDown) {
            0
        } else {
            LOCAL
        },
        desired_min_tx: ms(300),
        required_min_rx: ms(300),
        required_min_echo_rx: Duration::ZERO,
    }
}

fn sends(actions: &[Action]) -> Vec<ControlPacket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn changes(actions: &[Action]) -> Vec<(State, State, Diag)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StateChanged { from, to, diag } => Some((*from, *to, *diag)),
            _ => None,
        })
        .collect()
}

struct Harness {
    s: Session,
    t0: Instant,
    now: Instant,
}

impl Harness {
    fn new(cfg: SessionConfig) -> Self {
        let t0 = Instant::now();
        let s = match Session::new(cfg, t0) {
            Ok(s) => s,
            Err(e) => panic!("test config rejected: {e}"),
        };
        Harness { s, t0, now: t0 }
    }

    fn default() -> Self {
        Self::new(config(timers(300, 300, 3)))
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        self.s.handle(self.now, input, &mut out);
        out
    }

    fn rx(&mut self, p: ControlPacket) -> Vec<Action> {
        self.input(Input::Packet(&p))
    }

    /// Moves the clock forward by `d`, running `on_timer` at each deadline on the way;
    /// each action comes with the time since the start it was emitted at.
    fn advance(&mut self, d: Duration) -> Vec<(Duration, Action)> {
        let end = self.now + d;
        let mut got = Vec::new();
        for _ in 0..1_000_000 {
            match self.s.next_deadline() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    let mut out = Vec::new();
                    self.s.on_timer(self.now, &mut out);
                    got.extend(out.into_iter().map(|a| (self.now - self.t0, a)));
                }
                _ => {
                    self.now = end;
                    return got;
                }
            }
        }
        panic!("timers did not settle");
    }

    fn wait(&mut self, d: Duration) {
        self.now += d;
    }

    /// A session brought into `state` by the peer's packets (AdminDown by the operator).
    fn in_state(state: State) -> Self {
        let mut h = Self::default();
        h.advance(Duration::ZERO);
        match state {
            State::AdminDown => {
                h.input(Input::AdminDown);
            }
            State::Down => {}
            State::Init => {
                h.rx(peer(State::Down));
            }
            State::Up => {
                h.rx(peer(State::Init));
            }
        }
        assert_eq!(h.s.state(), state);
        h
    }
}

fn only(actions: Vec<(Duration, Action)>) -> Vec<Action> {
    actions.into_iter().map(|(_, a)| a).collect()
}

#[test]
fn a_new_session_sends_down_at_once_then_every_second_or_so() {
    let mut h = Harness::default();
    let got = h.advance(Duration::from_secs(10));
    let times: Vec<Duration> = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(times[0], Duration::ZERO);
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= ms(750) && gap <= ms(1000), "gap {gap:?}");
    }
    assert!(times.len() >= 10, "{} packets in 10 s", times.len());
    let first = sends(&only(got))[0];
    assert_eq!(first.state, State::Down);
    assert_eq!(first.your_discriminator, 0);
    assert_eq!(first.my_discriminator, disc(LOCAL));
    // §6.8.3: at least 1 s while not Up, whatever is configured.
    assert_eq!(first.desired_min_tx, IDLE_TX);
    assert_eq!(first.required_min_rx, ms(300));
    assert_eq!(first.required_min_echo_rx, Duration::ZERO);
    assert!(!first.poll && !first.final_ && !first.demand);
    let mut b = BytesMut::new();
    first.encode(&mut b);
    assert_eq!(b.len(), PACKET_LEN);
}

/// Every edge of the §6.2 diagram driven by a packet: (from, the peer's state, to, diag).
#[test]
fn every_packet_transition_of_the_diagram() {
    use State::*;
    let table = [
        (Down, Down, Init, Some(Diag::None)),
        (Down, Init, Up, Some(Diag::None)),
        (Down, Up, Down, None),
        (Down, AdminDown, Down, None),
        (Init, Down, Init, None),
        (Init, Init, Up, Some(Diag::None)),
        (Init, Up, Up, Some(Diag::None)),
        (
            Init,
            AdminDown,
            Down,
            Some(Diag::NeighborSignaledSessionDown),
        ),
        (Up, Init, Up, None),
        (Up, Up, Up, None),
        (Up, Down, Down, Some(Diag::NeighborSignaledSessionDown)),
        (Up, AdminDown, Down, Some(Diag::NeighborSignaledSessionDown)),
        (AdminDown, Down, AdminDown, None),
        (AdminDown, Init, AdminDown, None),
        (AdminDown, Up, AdminDown, None),
        (AdminDown, AdminDown, AdminDown, None),
    ];
    for (from, remote, to, diag) in table {
        let mut h = Harness::in_state(from);
        let got = h.rx(peer(remote));
        assert_eq!(h.s.state(), to, "{from} + {remote}");
        let want: Vec<_> = diag.map(|d| (from, to, d)).into_iter().collect();
        assert_eq!(changes(&got), want, "{from} + {remote}");
        if let Some(d) = diag {
            assert_eq!(h.s.local_diag(), d);
        }
        // The next packet tells the peer our state and discriminator.
        let next = sends(&only(h.advance(Duration::from_secs(1))));
        assert_eq!(next[0].state, to, "{from} + {remote}");
        assert_eq!(next[0].your_discriminator, PEER);
    }
}

#[test]
fn the_detection_time_takes_init_and_up_down_with_diag_1() {
    for from in [State::Init, State::Up] {
        let mut h = Harness::in_state(from);
        let got = h.advance(Duration::from_secs(5));
        let downs: Vec<_> = got
            .iter()
            .filter_map(|(t, a)| match a {
                Action::StateChanged { from, to, diag } => Some((*t, *from, *to, *diag)),
                _ => None,
            })
            .collect();
        // The peer's multiplier 3 × max(our 300 ms, its 300 ms).
        assert_eq!(
            downs,
            vec![(
                ms(900),
                from,
                State::Down,
                Diag::ControlDetectionTimeExpired
            )]
        );
        // The peer is forgotten: our packets no longer name it.
        assert_eq!(h.s.remote_discriminator(), 0);
        let next = sends(&only(h.advance(Duration::from_secs(2))));
        assert!(next.iter().all(|p| p.your_discriminator == 0));
    }
}

#[test]
fn packets_keep_the_session_up_past_many_detection_times() {
    let mut h = Harness::in_state(State::Up);
    for _ in 0..100 {
        h.advance(ms(800));
        assert!(changes(&h.rx(peer(State::Up))).is_empty());
    }
    assert_eq!(h.s.state(), State::Up);
    // 100 ms later than the last packet plus 900 ms, not sooner.
    let got = h.advance(ms(899));
    assert!(changes(&only(got)).is_empty());
    let got = h.advance(ms(1));
    assert_eq!(
        changes(&only(got)),
        vec![(State::Up, State::Down, Diag::ControlDetectionTimeExpired)]
    );
}

#[test]
fn a_down_session_forgets_a_silent_peer_without_changing_state() {
    let mut h = Harness::in_state(State::Init);
    h.rx(peer(State::AdminDown));
    assert_eq!(h.s.state(), State::Down);
    assert_eq!(h.s.remote_discriminator(), PEER);
    let got = h.advance(Duration::from_secs(3));
    assert!(changes(&only(got)).is_empty());
    assert_eq!(h.s.remote_discriminator(), 0);
}

#[test]
fn intervals_are_the_slower_of_both_sides() {
    // We: send every 100 ms, accept every 200 ms. The peer: sends every 50 ms, accepts
    // every 400 ms, multiplier 5.
    let mut h = Harness::new(config(timers(100, 200, 3)));
    h.advance(Duration::ZERO);
    let mut p = peer(State::Init);
    p.desired_min_tx = ms(50);
    p.required_min_rx = ms(400);
    p.detect_mult = 5;
    h.rx(p);
    assert_eq!(h.s.state(), State::Up);
    assert_eq!(h.s.tx_interval(), ms(400));
    assert_eq!(h.s.rx_interval(), ms(200));
    assert_eq!(h.s.detection_time(), Some(ms(1000)));
    // The peer slows down: the detection time follows at once.
    p.state = State::Up;
    p.desired_min_tx = ms(500);
    h.rx(p);
    assert_eq!(h.s.detection_time(), Some(ms(2500)));
    // And sent packets follow the peer's 400 ms less jitter.
    h.rx(p);
    let got = h.advance(Duration::from_secs(2));
    let times: Vec<Duration> = got
        .iter()
        .filter(|(_, a)| matches!(a, Action::Send(_)))
        .map(|(t, _)| *t)
        .collect();
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= ms(300) && gap <= ms(400), "gap {gap:?}");
    }
}

#[test]
fn going_up_polls_for_the_fast_interval_and_final_ends_it() {
    let mut h = Harness::default();
    h.advance(Duration::ZERO);
    h.rx(peer(State::Init));
    assert_eq!(h.s.state(), State::Up);
    assert!(h.s.polling());
    // Sending faster is safe at once (§6.8.3): the fast interval is in use already.
    assert_eq!(h.s.tx_interval(), ms(300));
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(sends(&only(h.advance(ms(250)))));
        h.rx(peer(State::Up));
    }
    assert!(got.len() >= 3, "{got:?}");
    assert!(got.iter().all(|p| p.poll && !p.final_));
    assert!(got.iter().all(|p| p.desired_min_tx == ms(300)));
    let mut f = peer(State::Up);
    f.final_ = true;
    h.rx(f);
    assert_eq!(h.s.state(), State::Up);
    assert!(!h.s.polling());
    assert_eq!(h.s.stats().polls_completed, 1);
    let got = sends(&only(h.advance(ms(800))));
    assert!(!got.is_empty());
    assert!(got.iter().all(|p| !p.poll));
}

#[test]
fn a_poll_is_answered_at_once_with_final_and_never_both_bits() {
    let mut h = Harness::in_state(State::Up);
    h.advance(ms(10));
    assert!(h.s.polling());
    let mut p = peer(State::Up);
    p.poll = true;
    let got = h.rx(p);
    let sent = sends(&got);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].final_ && !sent[0].poll);
    // A poll from the peer is not the F our own poll waits for.
    assert!(h.s.polling());
    // Even in Down, and from a passive session.
    let mut cfg = config(Timers::DEFAULT);
    cfg.passive = true;
    let mut h = Harness::new(cfg);
    let mut p = peer(State::Down);
    p.poll = true;
    let sent = sends(&h.rx(p));
    assert_eq!(sent.len(), 1);
    assert!(sent[0].final_);
    assert_eq!(sent[0].state, State::Init);
}

/// Up with the initial poll completed.
fn up_settled(t: Timers) -> Harness {
    let mut h = Harness::new(config(t));
    h.advance(Duration::ZERO);
    h.rx(peer(State::Init));
    let mut f = peer(State::Up);
    f.final_ = true;
    h.rx(f);
    assert!(!h.s.polling());
    h
}

fn set(h: &mut Harness, t: Timers) {
    if let Err(e) = h.s.set_timers(h.now, t) {
        panic!("{e}");
    }
}

#[test]
fn a_slower_tx_takes_effect_only_after_the_poll() {
    let mut h = up_settled(timers(300, 300, 3));
    set(&mut h, timers(600, 300, 3));
    assert!(h.s.polling());
    // Advertised at once, used only once the peer confirms (§6.8.3).
    assert_eq!(h.s.tx_interval(), ms(300));
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(
            h.advance(ms(200))
                .into_iter()
                .filter(|(_, a)| matches!(a, Action::Send(_))),
        );
        h.rx(peer(State::Up));
    }
    let sent = sends(&only(got.clone()));
    assert!(sent.len() >= 6, "{sent:?}");
    assert!(sent.iter().all(|p| p.poll && p.desired_min_tx == ms(600)));
    for w in got.windows(2) {
        assert!(w[1].0 - w[0].0 <= ms(300));
    }
    let mut f = peer(State::Up);
    f.final_ = true;
    h.rx(f);
    assert!(!h.s.polling());
    assert_eq!(h.s.tx_interval(), ms(600));
}

#[test]
fn a_faster_rx_shortens_detection_only_after_the_poll() {
    let mut h = up_settled(timers(300, 300, 3));
    let mut p = peer(State::Up);
    p.desired_min_tx = ms(100);
    h.rx(p);
    assert_eq!(h.s.detection_time(), Some(ms(900)));
    set(&mut h, timers(300, 100, 3));
    assert!(h.s.polling());
    // The peer may still send every 300 ms until it has seen our new value.
    assert_eq!(h.s.detection_time(), Some(ms(900)));
    let sent = sends(&only(h.advance(ms(400))));
    assert!(sent.iter().all(|p| p.poll && p.required_min_rx == ms(100)));
    p.final_ = true;
    h.rx(p);
    assert_eq!(h.s.detection_time(), Some(ms(300)));
}

#[test]
fn a_faster_tx_and_a_slower_rx_take_effect_at_once() {
    let mut h = up_settled(timers(300, 300, 3));
    set(&mut h, timers(100, 600, 3));
    assert!(h.s.polling());
    // Our tx is limited by the peer's 300 ms RX; the detection time grows at once.
    assert_eq!(h.s.tx_interval(), ms(300));
    assert_eq!(h.s.detection_time(), Some(ms(1800)));
    let mut h = up_settled(timers(300, 50, 3));
    let mut p = peer(State::Up);
    p.required_min_rx = ms(10);
    h.rx(p);
    assert_eq!(h.s.tx_interval(), ms(300));
    set(&mut h, timers(100, 50, 3));
    assert_eq!(h.s.tx_interval(), ms(100));
}

#[test]
fn a_change_during_a_poll_needs_a_second_final() {
    let mut h = up_settled(timers(300, 300, 3));
    set(&mut h, timers(400, 300, 3));
    h.advance(ms(100));
    set(&mut h, timers(500, 300, 3));
    let mut f = peer(State::Up);
    f.final_ = true;
    // This F may answer a packet that still said 400.
    h.rx(f);
    assert!(h.s.polling());
    assert_eq!(h.s.tx_interval(), ms(300));
    h.rx(f);
    assert!(!h.s.polling());
    assert_eq!(h.s.tx_interval(), ms(500));
    assert_eq!(h.s.stats().polls_completed, 2);
}

#[test]
fn outside_up_a_change_takes_effect_without_a_poll() {
    let mut h = Harness::in_state(State::Init);
    set(&mut h, timers(2000, 100, 3));
    assert!(!h.s.polling());
    assert_eq!(h.s.tx_interval(), ms(2000));
    assert_eq!(h.s.detection_time(), Some(ms(900)));
    // And leaving Up ends a poll and goes back to the idle interval.
    let mut h = up_settled(timers(300, 300, 3));
    set(&mut h, timers(400, 300, 3));
    assert!(h.s.polling());
    h.rx(peer(State::Down));
    assert!(!h.s.polling());
    assert_eq!(h.s.tx_interval(), IDLE_TX);
}

#[test]
fn a_multiplier_change_goes_into_the_next_packet_without_a_poll() {
    let mut h = up_settled(timers(300, 300, 3));
    set(&mut h, timers(300, 300, 5));
    assert!(!h.s.polling());
    let sent = sends(&only(h.advance(ms(300))));
    assert_eq!(sent[0].detect_mult, 5);
}

#[test]
fn bad_timers_are_refused() {
    let cases = [
        timers(0, 300, 3),
        timers(300, 0, 3),
        timers(300, 300, 0),
        Timers {
            desired_min_tx: Duration::from_secs(5000),
            ..Timers::DEFAULT
        },
    ];
    for t in cases {
        assert!(Session::new(config(t), Instant::now()).is_err(), "{t:?}");
        let mut h = Harness::default();
        assert!(h.s.set_timers(h.now, t).is_err());
        assert_eq!(h.s.timers(), Timers::DEFAULT);
    }
}

#[test]
fn a_passive_session_waits_for_the_peer_and_goes_quiet_when_it_is_gone() {
    let mut cfg = config(Timers::DEFAULT);
    cfg.passive = true;
    let mut h = Harness::new(cfg);
    assert_eq!(h.s.next_deadline(), None);
    assert!(h.advance(Duration::from_secs(60)).is_empty());
    let got = h.rx(peer(State::Down));
    assert_eq!(changes(&got), vec![(State::Down, State::Init, Diag::None)]);
    // The first packet goes at once, naming the peer.
    let sent = sends(&only(h.advance(Duration::ZERO)));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].your_discriminator, PEER);
    // The peer falls silent: Down after the detection time, and nothing sent after that.
    let got = h.advance(Duration::from_secs(5));
    let down_at = got
        .iter()
        .find(|(_, a)| matches!(a, Action::StateChanged { .. }))
        .map(|(t, _)| *t);
    assert_eq!(down_at, Some(ms(60_000 + 900)));
    assert!(got
        .iter()
        .all(|(t, a)| !matches!(a, Action::Send(_)) || *t <= ms(60_000 + 900)));
    assert_eq!(h.s.next_deadline(), None);
}

#[test]
fn a_peer_that_wants_no_packets_gets_none() {
    let mut h = Harness::in_state(State::Init);
    let mut p = peer(State::Init);
    p.required_min_rx = Duration::ZERO;
    h.rx(p);
    h.wait(ms(1));
    let got = h.advance(ms(800));
    assert!(sends(&only(got)).is_empty());
    // It changes its mind: packets resume at once.
    p.required_min_rx = ms(300);
    h.rx(p);
    assert_eq!(sends(&only(h.advance(Duration::ZERO))).len(), 1);
}

#[test]
fn a_packet_for_another_discriminator_is_discarded() {
    let mut h = Harness::in_state(State::Init);
    let mut p = peer(State::Up);
    p.your_discriminator = LOCAL + 1;
    let got = h.rx(p);
    assert!(got.is_empty());
    assert_eq!(h.s.state(), State::Init);
    assert_eq!(h.s.stats().discarded, 1);
    // It does not count as a sign of life either.
    let got = h.advance(ms(900));
    assert_eq!(
        changes(&only(got)),
        vec![(State::Init, State::Down, Diag::ControlDetectionTimeExpired)]
    );
    // Your Discriminator 0 (the peer restarted, Down) is accepted and ends an Up session.
    let mut h = Harness::in_state(State::Up);
    let got = h.rx(peer(State::Down));
    assert_eq!(
        changes(&got),
        vec![(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
}

#[test]
fn admin_down_tells_the_peer_at_once_and_admin_up_starts_over() {
    for from in [State::Down, State::Init, State::Up] {
        let mut h = Harness::in_state(from);
        let got = h.input(Input::AdminDown);
        assert_eq!(
            changes(&got),
            vec![(from, State::AdminDown, Diag::AdministrativelyDown)]
        );
        let sent = sends(&got);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].state, State::AdminDown);
        assert_eq!(sent[0].diag, Diag::AdministrativelyDown);
        // No detection in AdminDown; packets keep saying so at the idle interval.
        let got = h.advance(Duration::from_secs(10));
        assert!(changes(&only(got.clone())).is_empty());
        let sent = sends(&only(got));
        assert!(sent.len() >= 9);
        assert!(sent.iter().all(|p| p.state == State::AdminDown));
        assert!(h.input(Input::AdminDown).is_empty());
        let got = h.input(Input::AdminUp);
        assert_eq!(
            changes(&got),
            vec![(State::AdminDown, State::Down, Diag::None)]
        );
        assert!(h.input(Input::AdminUp).is_empty());
        h.rx(peer(State::Init));
        assert_eq!(h.s.state(), State::Up);
    }
}

#[test]
fn a_passive_session_that_knows_no_peer_stays_silent_going_admin_down() {
    let mut cfg = config(Timers::DEFAULT);
    cfg.passive = true;
    let mut h = Harness::new(cfg);
    let got = h.input(Input::AdminDown);
    assert!(sends(&got).is_empty());
    assert_eq!(h.s.state(), State::AdminDown);
    assert!(h.advance(Duration::from_secs(10)).is_empty());
}

#[test]
fn the_peer_going_admin_down_is_told_apart_from_a_failure() {
    let mut h = Harness::in_state(State::Up);
    let mut p = peer(State::AdminDown);
    p.diag = Diag::AdministrativelyDown;
    h.rx(p);
    assert_eq!(h.s.local_diag(), Diag::NeighborSignaledSessionDown);
    assert_eq!(h.s.remote_state(), State::AdminDown);
    assert_eq!(h.s.remote_diag(), Diag::AdministrativelyDown);
}

#[test]
fn flaps_are_counted() {
    let mut h = Harness::in_state(State::Up);
    h.rx(peer(State::Down));
    h.rx(peer(State::Down));
    h.rx(peer(State::Init));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.s.stats().flaps, 2);
}

// ---- Two sessions through a fake link ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Two sessions and the link between them. Packets cross it as bytes (encoded, then
/// decoded), after `delay`; while `cut`, nothing crosses, not even what was sent before.
struct Link {
    a: Session,
    b: Session,
    t0: Instant,
    now: Instant,
    delay: Duration,
    cut: bool,
    /// Drop every packet whose number (in sending order) is a multiple of this.
    drop_every: Option<u64>,
    sent: u64,
    in_flight: Vec<(Instant, Side, Vec<u8>)>,
    /// State changes: when, on which side, from, to, diag.
    log: Vec<(Duration, Side, State, State, Diag)>,
    /// Packets each side sent.
    packets: Vec<(Duration, Side, ControlPacket)>,
}

impl Link {
    fn new(a: SessionConfig, b: SessionConfig) -> Self {
        let t0 = Instant::now();
        let make = |c| match Session::new(c, t0) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        Link {
            a: make(a),
            b: make(b),
            t0,
            now: t0,
            delay: ms(1),
            cut: false,
            drop_every: None,
            sent: 0,
            in_flight: Vec::new(),
            log: Vec::new(),
            packets: Vec::new(),
        }
    }

    fn pair(ta: Timers, tb: Timers) -> Self {
        let mut a = config(ta);
        a.local_discriminator = disc(1);
        a.jitter_seed = 1;
        let mut b = config(tb);
        b.local_discriminator = disc(2);
        b.jitter_seed = 2;
        Link::new(a, b)
    }

    fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn take(&mut self, side: Side, out: Vec<Action>) {
        let at = self.now - self.t0;
        for a in out {
            match a {
                Action::Send(p) => {
                    self.packets.push((at, side, p));
                    self.sent += 1;
                    let dropped = self.cut || self.drop_every.is_some_and(|n| self.sent % n == 0);
                    if !dropped {
                        let mut b = BytesMut::new();
                        p.encode(&mut b);
                        self.in_flight
                            .push((self.now + self.delay, side.other(), b.to_vec()));
                    }
                }
                Action::StateChanged { from, to, diag } => {
                    self.log.push((at, side, from, to, diag))
                }
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        [
            self.a.next_deadline(),
            self.b.next_deadline(),
            self.in_flight.iter().map(|(t, _, _)| *t).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..1_000_000 {
            let Some(at) = self.next_event().filter(|at| *at <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(at);
            let now = self.now;
            // Deliveries first, in the order they were sent.
            let (due, later): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|(t, _, _)| *t <= now);
            self.in_flight = later;
            for (_, to, bytes) in due {
                // A cut loses what is on the wire too.
                if self.cut {
                    continue;
                }
                let p = match ControlPacket::decode(&bytes) {
                    Ok(p) => p,
                    Err(e) => panic!("a packet we sent does not decode: {e}"),
                };
                let mut out = Vec::new();
                self.session(to).handle(now, Input::Packet(&p), &mut out);
                self.take(to, out);
            }
            for side in [Side::A, Side::B] {
                let mut out = Vec::new();
                self.session(side).on_timer(now, &mut out);
                self.take(side, out);
            }
        }
        panic!("the link did not settle");
    }

    fn both(&self) -> (State, State) {
        (self.a.state(), self.b.state())
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
}

#[test]
fn two_sessions_come_up_and_agree_on_the_fast_intervals() {
    let mut l = Link::pair(timers(100, 100, 3), timers(300, 200, 5));
    l.run(Duration::from_secs(4));
    assert_eq!(l.both(), (State::Up, State::Up));
    // Each side: Down → Init → Up, or Down → Up when the peer was in Init first.
    for side in [Side::A, Side::B] {
        let ups = l
            .log
            .iter()
            .filter(|(_, s, _, to, _)| *s == side && *to == State::Up)
            .count();
        assert_eq!(ups, 1, "{:?}", l.log);
    }
    // The polls for the fast intervals completed on both sides.
    assert!(!l.a.polling() && !l.b.polling());
    // A sends every max(100, B's 200) ms; B every max(300, A's 100) ms.
    assert_eq!(l.a.tx_interval(), ms(200));
    assert_eq!(l.b.tx_interval(), ms(300));
    // A times B out after 5 × max(100, 300); B times A out after 3 × max(200, 100).
    assert_eq!(l.a.detection_time(), Some(ms(1500)));
    assert_eq!(l.b.detection_time(), Some(ms(600)));
    // And it stays up, on 20 % loss too.
    l.drop_every = Some(5);
    l.run(Duration::from_secs(60));
    assert_eq!(l.both(), (State::Up, State::Up));
    assert!(l.log.iter().all(|(t, ..)| *t < ms(4000)), "{:?}", l.log);
}

#[test]
fn a_passive_side_comes_up_when_the_active_side_calls() {
    let mut a = config(timers(300, 300, 3));
    a.local_discriminator = disc(1);
    let mut b = config(timers(300, 300, 3));
    b.local_discriminator = disc(2);
    b.passive = true;
    let mut l = Link::new(a, b);
    l.run(Duration::from_secs(4));
    assert_eq!(l.both(), (State::Up, State::Up));
    // Both passive: nobody ever sends.
    let mut a = config(Timers::DEFAULT);
    a.passive = true;
    let mut b = a;
    b.local_discriminator = disc(2);
    let mut l = Link::new(a, b);
    l.run(Duration::from_secs(60));
    assert!(l.packets.is_empty());
    assert_eq!(l.both(), (State::Down, State::Down));
}

#[test]
fn an_interval_change_is_negotiated_with_poll_and_final() {
    let mut l = Link::pair(timers(100, 100, 3), timers(100, 100, 3));
    l.run(Duration::from_secs(4));
    assert_eq!(l.both(), (State::Up, State::Up));
    let polls_before = l.a.stats().polls_completed;
    let changed_at = l.elapsed();
    let now = l.now;
    if let Err(e) = l.a.set_timers(now, timers(500, 500, 3)) {
        panic!("{e}");
    }
    l.run(Duration::from_secs(3));
    assert_eq!(l.a.stats().polls_completed, polls_before + 1);
    assert!(!l.a.polling());
    assert_eq!(l.a.tx_interval(), ms(500));
    assert_eq!(l.b.tx_interval(), ms(500));
    assert_eq!(l.b.detection_time(), Some(ms(1500)));
    assert_eq!(l.a.detection_time(), Some(ms(1500)));
    // A sent P until B's F came back, and B's answer was F, never P and F.
    let a_polls: Vec<_> = l
        .packets
        .iter()
        .filter(|(t, s, p)| *t >= changed_at && *s == Side::A && p.poll)
        .collect();
    assert!(!a_polls.is_empty());
    let b_finals: Vec<_> = l
        .packets
        .iter()
        .filter(|(t, s, p)| *t >= changed_at && *s == Side::B && p.final_)
        .collect();
    assert!(!b_finals.is_empty());
    assert!(l.packets.iter().all(|(_, _, p)| !(p.poll && p.final_)));
    assert_eq!(l.both(), (State::Up, State::Up));
    assert!(l.log.iter().all(|(t, ..)| *t < changed_at), "{:?}", l.log);
}

#[test]
fn the_poll_survives_a_lost_final() {
    let mut l = Link::pair(timers(100, 100, 3), timers(100, 100, 3));
    l.run(Duration::from_secs(4));
    let now = l.now;
    if let Err(e) = l.a.set_timers(now, timers(200, 100, 3)) {
        panic!("{e}");
    }
    // A third of everything lost: the P is sent again until an F gets through.
    l.drop_every = Some(3);
    l.run(Duration::from_secs(10));
    assert!(!l.a.polling());
    assert_eq!(l.a.tx_interval(), ms(200));
}

#[test]
fn a_cut_is_detected_within_multiplier_times_interval() {
    for (tx, mult) in [(100u64, 3u8), (300, 3), (50, 5), (100, 1)] {
        let t = timers(tx, tx, mult);
        let mut l = Link::pair(t, t);
        l.delay = ms(2);
        l.run(Duration::from_secs(5));
        assert_eq!(l.both(), (State::Up, State::Up), "{tx} ms × {mult}");
        l.run(ms(137));
        let cut_at = l.elapsed();
        l.cut = true;
        l.run(Duration::from_secs(5));
        let limit = ms(tx) * u32::from(mult);
        for side in [Side::A, Side::B] {
            let down = l
                .log
                .iter()
                .find(|(t, s, from, _, _)| *t >= cut_at && *s == side && *from == State::Up);
            let Some((t, _, _, to, diag)) = down else {
                panic!("{side:?} never went down: {:?}", l.log)
            };
            assert_eq!(
                (*to, *diag),
                (State::Down, Diag::ControlDetectionTimeExpired)
            );
            let took = *t - cut_at;
            assert!(took <= limit, "{tx} ms × {mult}: {side:?} took {took:?}");
        }
        // The link heals: they come back Up on their own.
        l.cut = false;
        l.run(Duration::from_secs(5));
        assert_eq!(l.both(), (State::Up, State::Up), "{tx} ms × {mult}");
    }
}

#[test]
fn admin_down_on_one_side_takes_the_other_down_with_diag_3_and_back() {
    let mut l = Link::pair(timers(100, 100, 3), timers(100, 100, 3));
    l.run(Duration::from_secs(4));
    let at = l.elapsed();
    let mut out = Vec::new();
    let now = l.now;
    l.a.handle(now, Input::AdminDown, &mut out);
    l.take(Side::A, out);
    l.run(Duration::from_secs(10));
    assert_eq!(l.both(), (State::AdminDown, State::Down));
    let b_down: Vec<_> = l
        .log
        .iter()
        .filter(|(t, s, ..)| *t >= at && *s == Side::B)
        .collect();
    // At once (one link delay), not after a detection time, and only once.
    assert_eq!(b_down.len(), 1, "{:?}", l.log);
    assert_eq!(b_down[0].0 - at, l.delay);
    assert_eq!(
        (b_down[0].3, b_down[0].4),
        (State::Down, Diag::NeighborSignaledSessionDown)
    );
    assert_eq!(l.b.remote_diag(), Diag::AdministrativelyDown);
    let mut out = Vec::new();
    let now = l.now;
    l.a.handle(now, Input::AdminUp, &mut out);
    l.take(Side::A, out);
    l.run(Duration::from_secs(5));
    assert_eq!(l.both(), (State::Up, State::Up));
}

#[test]
fn a_restarted_peer_is_seen_at_once() {
    let mut l = Link::pair(timers(100, 100, 3), timers(100, 100, 3));
    l.run(Duration::from_secs(4));
    // B restarts with a new discriminator: its first packet is Down, Your Discriminator 0.
    let mut b = config(timers(100, 100, 3));
    b.local_discriminator = disc(7);
    b.jitter_seed = 7;
    l.b = match Session::new(b, l.now) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let at = l.elapsed();
    l.run(ms(50));
    assert_eq!(
        l.log
            .iter()
            .filter(|(t, s, ..)| *t >= at && *s == Side::A)
            .map(|(_, _, f, to, d)| (*f, *to, *d))
            .next(),
        Some((State::Up, State::Down, Diag::NeighborSignaledSessionDown))
    );
    l.run(Duration::from_secs(4));
    assert_eq!(l.both(), (State::Up, State::Up));
    assert_eq!(l.a.remote_discriminator(), 7);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_timers() -> impl Strategy<Value = Timers> {
        (10u64..1500, 10u64..1500, 1u8..6).prop_map(|(tx, rx, mult)| timers(tx, rx, mult))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever both sides configure: they come Up, stay Up on a clean link, each
        /// detects a cut within its own detection time (the peer's multiplier × the agreed
        /// receive interval), and they come back Up when the link heals.
        #[test]
        fn any_timers_come_up_hold_and_detect_a_cut_in_time(
            ta in arb_timers(),
            tb in arb_timers(),
            seeds in any::<(u64, u64)>(),
            delay in 0u64..5,
            cut_after in 0u64..3000,
        ) {
            let mut a = config(ta);
            a.local_discriminator = disc(1);
            a.jitter_seed = seeds.0;
            let mut b = config(tb);
            b.local_discriminator = disc(2);
            b.jitter_seed = seeds.1;
            let mut l = Link::new(a, b);
            l.delay = ms(delay);
            l.run(Duration::from_secs(10));
            prop_assert_eq!(l.both(), (State::Up, State::Up));
            let settled = l.log.len();
            l.run(Duration::from_secs(20) + ms(cut_after));
            prop_assert_eq!(&l.log[settled..], &[]);
            let limits = match (l.a.detection_time(), l.b.detection_time()) {
                (Some(a), Some(b)) => (a, b),
                other => panic!("Up without a detection time: {other:?}"),
            };
            let cut_at = l.elapsed();
            l.cut = true;
            l.run(limits.0.max(limits.1) + ms(1));
            for (side, limit) in [(Side::A, limits.0), (Side::B, limits.1)] {
                let down = l.log[settled..]
                    .iter()
                    .find(|(_, s, from, _, _)| *s == side && *from == State::Up);
                let Some((t, _, _, to, diag)) = down else {
                    panic!("{side:?} still Up {limit:?} after the cut: {:?}", l.log)
                };
                prop_assert_eq!((*to, *diag), (State::Down, Diag::ControlDetectionTimeExpired));
                prop_assert!(*t - cut_at <= limit, "{:?} took {:?} > {:?}", side, *t - cut_at, limit);
            }
            l.cut = false;
            l.run(Duration::from_secs(10));
            prop_assert_eq!(l.both(), (State::Up, State::Up));
        }
    }
}
