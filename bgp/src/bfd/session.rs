//! One BFD session's state machine (RFC 5880 §6.2, §6.8), sans-IO. See the module
//! documentation of `bfd` for the diagram and what is left out.

use super::packet::{ControlPacket, Diag, State};
use crate::jitter::Jitter;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// §6.8.3: the least Desired Min TX Interval while the session is not Up.
pub const IDLE_TX: Duration = Duration::from_secs(1);

/// The longest interval the packet can carry (`u32::MAX` µs).
const MAX_INTERVAL: Duration = Duration::from_micros(u32::MAX as u64);

/// The timer parameters of one session (§6.8.1 bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval, bfd.DetectMult).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// How often we would like to send while Up.
    pub desired_min_tx: Duration,
    /// The fastest we accept the peer's packets.
    pub required_min_rx: Duration,
    /// The peer declares us dead after this many intervals without a packet.
    pub detect_mult: u8,
}

impl Timers {
    /// 300 ms × 3, the defaults of `serval bgp --bfd`.
    pub const DEFAULT: Timers = Timers {
        desired_min_tx: Duration::from_millis(300),
        required_min_rx: Duration::from_millis(300),
        detect_mult: 3,
    };

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, d) in [
            ("desired-min-tx", self.desired_min_tx),
            ("required-min-rx", self.required_min_rx),
        ] {
            // A zero Required Min RX would ask the peer not to send (demand mode, which
            // serval does not run); a zero Desired Min TX is reserved (§4.1).
            if d < Duration::from_micros(1) || d > MAX_INTERVAL {
                return Err(ConfigError::Interval { field, value: d });
            }
        }
        if self.detect_mult == 0 {
            return Err(ConfigError::DetectMult);
        }
        Ok(())
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers::DEFAULT
    }
}

/// What a session is created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.LocalDiscr: chosen by the caller, unique among its sessions; the IO task
    /// finds the session of a packet by it.
    pub local_discriminator: NonZeroU32,
    pub timers: Timers,
    /// §6.1 passive role: send nothing until the peer's first packet.
    pub passive: bool,
    /// Seeds the transmit jitter: tests replay the same schedule.
    pub jitter_seed: u64,
}

impl SessionConfig {
    pub fn new(local_discriminator: NonZeroU32) -> Self {
        SessionConfig {
            local_discriminator,
            timers: Timers::DEFAULT,
            passive: false,
            jitter_seed: u64::from(local_discriminator.get()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} {value:?}: must be between 1 µs and {MAX_INTERVAL:?}")]
    Interval {
        field: &'static str,
        value: Duration,
    },
    #[error("detect multiplier must not be zero")]
    DetectMult,
}

/// What the IO task tells the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A packet that passed `ControlPacket::decode`, the TTL check and the demultiplexing
    /// (`ControlPacket::demux`), from the peer's address on the session's interface.
    Packet(&'a ControlPacket),
    /// §6.8.16: the operator takes the session down; the peer is told (diag 7).
    AdminDown,
    /// Out of AdminDown, into Down.
    AdminUp,
}

/// What the session asks the IO task to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this packet to the peer now.
    Send(ControlPacket),
    /// The session changed state; `diag` says why (it goes into our packets too). The BGP
    /// coupling acts on `from == Up` and `to == Up`. Leaving Up with
    /// `NeighborSignaledSessionDown` while `remote_state()` is AdminDown is the peer's
    /// administrative shutdown, which RFC 5882 §3.2 says is no failure of the path.
    StateChanged { from: State, to: State, diag: Diag },
}

/// What we last heard from the peer (§6.8.1 bfd.Remote*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Remote {
    /// bfd.RemoteDiscr: zero until the first packet, and again after a Detection Time
    /// without one.
    discriminator: u32,
    state: State,
    diag: Diag,
    /// bfd.RemoteMinRxInterval, initially 1 µs (§6.8.1).
    min_rx: Duration,
    desired_min_tx: Duration,
    /// Zero until the first packet.
    detect_mult: u8,
    /// C: the peer's BFD does not share fate with its control plane (RFC 5882 §4.3).
    control_plane_independent: bool,
}

impl Remote {
    const UNKNOWN: Remote = Remote {
        discriminator: 0,
        state: State::Down,
        diag: Diag::None,
        min_rx: Duration::from_micros(1),
        desired_min_tx: Duration::ZERO,
        detect_mult: 0,
        control_plane_independent: false,
    };
}

/// A poll sequence (§6.5): our periodic packets carry P until a packet with F arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Poll {
    Idle,
    /// `again`: the parameters changed after this sequence began, so its F may confirm
    /// older values; another sequence follows it.
    Active {
        again: bool,
    },
}

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub sent: u64,
    pub received: u64,
    /// Packets whose Your Discriminator was not ours.
    pub discarded: u64,
    /// Transitions out of Up.
    pub flaps: u64,
    pub polls_completed: u64,
}

/// One BFD session. See the module documentation of `bfd`.
#[derive(Clone, Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    /// bfd.LocalDiag: why the session last changed state.
    diag: Diag,
    remote: Remote,
    /// The Desired Min TX Interval our packets carry: the configured one while Up, at
    /// least `IDLE_TX` otherwise (§6.8.3).
    adv_tx: Duration,
    /// The one our transmit interval is computed from: an increase of `adv_tx` while Up
    /// takes effect only when its poll sequence completes (§6.8.3).
    tx_in_use: Duration,
    /// The Required Min RX Interval our packets carry.
    adv_rx: Duration,
    /// The one the Detection Time is computed from: a decrease of `adv_rx` while Up takes
    /// effect only when its poll sequence completes (§6.8.3).
    rx_in_use: Duration,
    poll: Poll,
    last_rx: Option<Instant>,
    detect_at: Option<Instant>,
    next_tx_at: Option<Instant>,
    /// The transmit interval `next_tx_at` was computed from.
    scheduled_interval: Duration,
    jitter: Jitter,
    stats: SessionStats,
}

fn due(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|t| t <= now)
}

impl Session {
    /// A session in Down (§6.8.1); unless passive, its first packet is due at `now`.
    pub fn new(config: SessionConfig, now: Instant) -> Result<Self, ConfigError> {
        config.timers.validate()?;
        let adv_tx = config.timers.desired_min_tx.max(IDLE_TX);
        let mut s = Session {
            state: State::Down,
            diag: Diag::None,
            remote: Remote::UNKNOWN,
            adv_tx,
            tx_in_use: adv_tx,
            adv_rx: config.timers.required_min_rx,
            rx_in_use: config.timers.required_min_rx,
            poll: Poll::Idle,
            last_rx: None,
            detect_at: None,
            next_tx_at: None,
            scheduled_interval: Duration::ZERO,
            jitter: Jitter::new(config.jitter_seed),
            stats: SessionStats::default(),
            cfg: config,
        };
        s.arm_tx(now);
        Ok(s)
    }

    /// Takes one input at `now`, appending what to do to `out`.
    pub fn handle(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Action>) {
        match input {
            Input::Packet(p) => self.receive(now, p, out),
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.transition(now, State::AdminDown, Diag::AdministrativelyDown, out);
                    // The peer learns it from the next packet, which goes now: it may be
                    // the last one if the IO task drops the session.
                    if self.may_transmit() {
                        self.send(false, out);
                    }
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.transition(now, State::Down, Diag::None, out);
                }
            }
        }
    }

    /// Runs the timers due at `now`. Call it at `next_deadline()` (late is fine).
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        if due(self.detect_at, now) {
            self.detection_time_expired(now, out);
        }
        if due(self.next_tx_at, now) {
            self.send(false, out);
            self.next_tx_at = Some(now + self.jittered_interval());
        }
    }

    /// When `on_timer` must next run; `None` when nothing is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.detect_at, self.next_tx_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// New timer parameters. While Up a change of either interval starts a poll sequence;
    /// a slower transmit interval or a faster receive interval takes effect when it ends.
    pub fn set_timers(&mut self, now: Instant, timers: Timers) -> Result<(), ConfigError> {
        timers.validate()?;
        self.cfg.timers = timers;
        self.advertise(now);
        Ok(())
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// bfd.LocalDiag: why the session last changed state.
    pub fn local_diag(&self) -> Diag {
        self.diag
    }

    pub fn local_discriminator(&self) -> NonZeroU32 {
        self.cfg.local_discriminator
    }

    /// Zero while the peer is unknown.
    pub fn remote_discriminator(&self) -> u32 {
        self.remote.discriminator
    }

    pub fn remote_state(&self) -> State {
        self.remote.state
    }

    /// The C bit of the peer's last packet: its BFD survives a restart of its control
    /// plane, so a failure is one of the forwarding path (RFC 5882 §4.3).
    pub fn remote_control_plane_independent(&self) -> bool {
        self.remote.control_plane_independent
    }

    /// The diagnostic of the peer's last packet.
    pub fn remote_diag(&self) -> Diag {
        self.remote.diag
    }

    pub fn timers(&self) -> Timers {
        self.cfg.timers
    }

    /// The agreed transmit interval before jitter (§6.8.2): the slower of what we want
    /// and what the peer accepts.
    pub fn tx_interval(&self) -> Duration {
        self.tx_in_use.max(self.remote.min_rx)
    }

    /// The agreed receive interval: the slower of what we accept and what the peer wants.
    pub fn rx_interval(&self) -> Duration {
        self.rx_in_use.max(self.remote.desired_min_tx)
    }

    /// §6.8.4, asynchronous mode: how long without a packet before the session fails;
    /// `None` before the peer's first packet.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote.detect_mult != 0)
            .then(|| self.rx_interval() * u32::from(self.remote.detect_mult))
    }

    /// Whether our periodic packets ask for a Final.
    pub fn polling(&self) -> bool {
        matches!(self.poll, Poll::Active { .. })
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// §6.8.6 from "If the Your Discriminator field is nonzero" on; the packet checks are
    /// `ControlPacket::decode`'s.
    fn receive(&mut self, now: Instant, p: &ControlPacket, out: &mut Vec<Action>) {
        if p.your_discriminator != 0 && p.your_discriminator != self.cfg.local_discriminator.get() {
            self.stats.discarded += 1;
            return;
        }
        self.stats.received += 1;
        self.remote = Remote {
            discriminator: p.my_discriminator.get(),
            state: p.state,
            diag: p.diag,
            min_rx: p.required_min_rx,
            desired_min_tx: p.desired_min_tx,
            detect_mult: p.detect_mult,
            control_plane_independent: p.control_plane_independent,
        };
        if p.final_ {
            self.final_received();
        }
        self.last_rx = Some(now);
        self.rearm_detection();
        self.interval_changed(now);
        if self.state == State::AdminDown {
            return;
        }
        if p.state == State::AdminDown {
            if self.state != State::Down {
                self.transition(now, State::Down, Diag::NeighborSignaledSessionDown, out);
            }
        } else {
            match (self.state, p.state) {
                (State::Down, State::Down) => self.transition(now, State::Init, Diag::None, out),
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    self.transition(now, State::Up, Diag::None, out)
                }
                (State::Up, State::Down) => {
                    self.transition(now, State::Down, Diag::NeighborSignaledSessionDown, out)
                }
                _ => {}
            }
        }
        if p.poll {
            // §6.8.6: at once, whatever the transmit timer, the state or the role says.
            self.send(true, out);
        }
        // A passive session starts sending now that it knows the peer.
        self.arm_tx(now);
    }

    fn final_received(&mut self) {
        match self.poll {
            Poll::Idle => {}
            Poll::Active { again: true } => self.poll = Poll::Active { again: false },
            Poll::Active { again: false } => {
                self.poll = Poll::Idle;
                self.stats.polls_completed += 1;
                self.tx_in_use = self.adv_tx;
                self.rx_in_use = self.adv_rx;
            }
        }
    }

    /// §6.8.4: no packet for a Detection Time. In Init or Up the session fails; in any
    /// state the peer is forgotten, so a passive session goes quiet again.
    fn detection_time_expired(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.detect_at = None;
        self.last_rx = None;
        self.remote = Remote::UNKNOWN;
        if matches!(self.state, State::Init | State::Up) {
            self.transition(now, State::Down, Diag::ControlDetectionTimeExpired, out);
        }
        self.interval_changed(now);
        if !self.may_transmit() {
            self.next_tx_at = None;
        }
    }

    fn transition(&mut self, now: Instant, to: State, diag: Diag, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        self.diag = diag;
        if from == State::Up {
            self.stats.flaps += 1;
        }
        if to == State::AdminDown {
            self.detect_at = None;
        }
        out.push(Action::StateChanged { from, to, diag });
        self.advertise(now);
    }

    /// Recomputes what our packets carry after a change of state or of configuration,
    /// with the §6.8.3 rules for when the new values take effect.
    fn advertise(&mut self, now: Instant) {
        let timers = self.cfg.timers;
        let up = self.state == State::Up;
        let tx = if up {
            timers.desired_min_tx
        } else {
            timers.desired_min_tx.max(IDLE_TX)
        };
        let rx = timers.required_min_rx;
        let changed = tx != self.adv_tx || rx != self.adv_rx;
        self.adv_tx = tx;
        self.adv_rx = rx;
        if up {
            if changed {
                self.poll = match self.poll {
                    Poll::Idle => Poll::Active { again: false },
                    Poll::Active { .. } => Poll::Active { again: true },
                };
            }
            // Sending faster and accepting slower are safe at once.
            self.tx_in_use = self.tx_in_use.min(tx);
            self.rx_in_use = self.rx_in_use.max(rx);
        } else {
            // Outside Up no detection depends on our timing: no poll is needed, and one
            // under way ends with the session.
            self.poll = Poll::Idle;
            self.tx_in_use = tx;
            self.rx_in_use = rx;
        }
        self.rearm_detection();
        self.interval_changed(now);
    }

    fn rearm_detection(&mut self) {
        self.detect_at = match (self.last_rx, self.detection_time()) {
            (Some(at), Some(d)) if self.state != State::AdminDown => Some(at + d),
            _ => None,
        };
    }

    /// §6.8.7: a passive session waits for the peer's discriminator, and a peer that
    /// asks for no packets (Required Min RX 0) gets none.
    fn may_transmit(&self) -> bool {
        let waiting = self.cfg.passive && self.remote.discriminator == 0;
        !waiting && !self.remote.min_rx.is_zero()
    }

    /// Starts the periodic packets if they may go and are not running: the first at once.
    fn arm_tx(&mut self, now: Instant) {
        if self.next_tx_at.is_none() && self.may_transmit() {
            self.next_tx_at = Some(now);
        }
    }

    /// After the transmit interval may have changed: a packet already scheduled keeps its
    /// time unless a shorter interval brings the next one sooner.
    fn interval_changed(&mut self, now: Instant) {
        if !self.may_transmit() {
            self.next_tx_at = None;
            return;
        }
        let Some(at) = self.next_tx_at else { return };
        if self.tx_interval() < self.scheduled_interval {
            let sooner = now + self.jittered_interval();
            if sooner < at {
                self.next_tx_at = Some(sooner);
            }
        }
    }

    /// The next transmit delay, remembered as the interval the schedule follows.
    fn jittered_interval(&mut self) -> Duration {
        self.scheduled_interval = self.tx_interval();
        self.jitter
            .tx_interval(self.scheduled_interval, self.cfg.timers.detect_mult)
    }

    /// §6.8.7: the packet our state says. `final_` answers a poll; a packet never carries
    /// both P and F.
    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.diag,
            state: self.state,
            poll: !final_ && self.polling(),
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.cfg.timers.detect_mult,
            my_discriminator: self.cfg.local_discriminator,
            your_discriminator: self.remote.discriminator,
            desired_min_tx: self.adv_tx,
            required_min_rx: self.adv_rx,
            required_min_echo_rx: Duration::ZERO,
        }
    }

    fn send(&mut self, final_: bool, out: &mut Vec<Action>) {
        self.stats.sent += 1;
        out.push(Action::Send(self.packet(final_)));
    }
}
