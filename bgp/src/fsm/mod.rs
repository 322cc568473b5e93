//! The BGP session state machine of one peer (RFC 4271 §8), sans-IO.
//!
//! `PeerFsm` never touches a socket, a timer or a clock. It takes inputs (operator
//! commands, TCP events, decoded messages) with the current time and appends actions
//! (connect, send, close, session up/down) to a caller's vector; it tells when it next
//! needs to run through `next_deadline()`. Hours of timers are then tested in
//! microseconds, and every decision lives here rather than in the IO task.
//!
//! ```text
//!  +------+   ManualStart, or IdleHoldTimer expired (automatic restart)
//!  | Idle | ----------------------+-----------------------------+
//!  +------+                       | passive                     | active: connect()
//!    ^  ^                         v                             v
//!    |  |                   +--------+  ConnectRetryTimer  +---------+
//!    |  |                   | Active | ------------------> | Connect | ConnectRetryTimer:
//!    |  |                   |        | <------------------ |         | connect() again
//!    |  |                   +--------+  connect() failed   +---------+
//!    |  |                       | TcpAccepted     TcpConnected |
//!    |  |                       +---------------+--------------+
//!    |  |     (DelayOpen: our OPEN waits for the peer's OPEN or the DelayOpenTimer)
//!    |  |                                       v  send OPEN, HoldTimer = 4 min
//!    |  |                                 +-----------+
//!    |  +-------------------------------- | OpenSent  | -- TCP lost --> Active
//!    |                                    +-----------+
//!    |                                          |  OPEN accepted (negotiate.rs),
//!    |                                          v  §6.8 collision check, KEEPALIVE
//!    |                                    +-------------+
//!    +----------------------------------- | OpenConfirm |
//!    |                                    +-------------+
//!    |                                          |  KEEPALIVE received
//!    |                                          v
//!    |                                    +-------------+  in: KEEPALIVE/UPDATE restart
//!    +----------------------------------- | Established |      the HoldTimer
//!                                         +-------------+  out: KEEPALIVE/UPDATE restart
//!                                                               the KeepaliveTimer
//!
//!  Into Idle: ManualStop from any state (stays there until ManualStart); an error sent or
//!  received, the HoldTimer, or TCP lost after OpenSent (restarts after the idle hold,
//!  which doubles with each error in a row up to `idle_hold_max`, or when the peer
//!  connects). A passive peer never connects: it waits in Active for the peer.
//! ```
//!
//! A peer may hold two connections at once (§6.8): the one we opened and the one the peer
//! opened. Each runs its own OPEN exchange and timers (`conn.rs`); the peer's `State` is
//! that of its most advanced connection. When an OPEN arrives while the other connection
//! is in OpenSent or OpenConfirm, the BGP Identifiers decide which one survives; the loser
//! gets Cease/Connection Collision Resolution. A connection that arrives while a session
//! is Established loses too (§6.8), before our OPEN goes out on it — unless graceful
//! restart is negotiated, where RFC 4724 §4.2 reads a new connection as the end of the old
//! session. Two speakers that dial each other at once also make a new connection while
//! Established, and anyone who reaches our port from the peer's address (a pod behind the
//! peer's masquerade) can send an OPEN as the peer with the Restart State bit set, so the
//! FSM believes the restart only when the old connection shows it: it fails within
//! `RESTART_PROBE_TIME` of a KEEPALIVE sent to probe it (a restarted host's kernel resets
//! it, a restarted process has closed it already). The Restart State bit alone replaces
//! nothing. Until then the new connection is held, our OPEN unsent, and if the old
//! session survives the probe it keeps the peer and its routes, and the new connection
//! gets Cease/Connection Collision Resolution. A Cease/Connection Collision
//! Resolution received on a connection not yet Established is no error: the peer keeps
//! another connection with us.
//!
//! How the IO task (`session.rs`) drives it:
//!
//! ```text
//!   IO task                                            PeerFsm
//!   -------                                            -------
//!   loop {
//!     select! {
//!       command start / stop          ---- handle(now, ManualStart | ManualStop) --->
//!       connect() done / failed       ---- handle(now, TcpConnected | TcpFailed) --->
//!       listener accepted             ---- handle(now, TcpAccepted(conn)) ---------->
//!       message decoded on conn       ---- handle(now, Message(conn, &msg)) -------->
//!         (UPDATE, ROUTE-REFRESH: to the RIB if established_conn() == Some(conn))
//!       codec rejected a message      ---- handle(now, DecodeError(conn, notif)) --->
//!       adj-out wrote an UPDATE       ---- handle(now, UpdateSent(conn)) ----------->
//!       sleep_until(next_deadline())  ---- on_timer(now) ---------------------------->
//!     }
//!     for action in actions.drain(..) {  <--- Connect / Send / Close / Established /
//!         perform it                           Down / StaleRoutesExpired / StateChanged
//!     }
//!   }
//! ```
//!
//! Departures from the letter of §8.2.2, each for a reason:
//! - A failed connect() in Connect goes to Active and waits for the ConnectRetryTimer
//!   instead of going through Idle: a peer that is not up yet is not a session error, so
//!   it should not feed the back-off (BIRD and FRR do the same).
//! - In OpenConfirm with a negotiated hold time of 0 the 4-minute OpenSent hold timer
//!   stays armed, so a peer that never sends its KEEPALIVE does not hold the peer forever.
//! - The IdleHoldTimer is jittered like the ConnectRetryTimer, so the nodes of a cluster
//!   that lost the same route reflector do not reconnect in lockstep.
//! - Any message received in Established (including ROUTE-REFRESH) restarts the HoldTimer:
//!   it proves the peer alive just as well.
//! - A connection the peer opens during the idle hold is accepted and starts the session
//!   at once (§8.2.2 would refuse it until the IdleHoldTimer ends the hold). Two speakers
//!   that both hold after an error would otherwise refuse each other for minutes; BIRD and
//!   FRR accept too. Only a stopped peer (ManualStop) refuses. The damping still applies
//!   to our own connects: the hold resumes if that connection fails before Established,
//!   and a session that comes up on it resets the back-off.

mod config;
mod conn;
#[cfg(test)]
mod mesh_tests;
pub(crate) mod notify;
#[cfg(test)]
mod tests;

pub use config::{FsmConfig, FsmConfigError};

use crate::jitter::Jitter;
use crate::negotiate::{self, Negotiated, NegotiationPolicy};
use crate::wire::open::Capability;
use crate::wire::{Message, Notification, Open};
use conn::{Conn, Phase};
use notify::{cease, fsm as fsm_sub, CEASE, FSM_ERROR, HOLD_TIMER_EXPIRED, OPEN_MESSAGE_ERROR};
use std::fmt;
use std::time::Instant;

/// How long a connection the peer opened while a graceful-restart session is Established
/// waits for that session to fail. A peer that restarted has no connection behind the old
/// one any more: its kernel answers our probe KEEPALIVE with a reset within a round trip,
/// or a few retransmissions on a lossy path.
const RESTART_PROBE_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Which side opened a TCP connection; §6.8 keeps the one opened by the higher identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// We connected out (the FSM asked with `Action::Connect`).
    Outgoing,
    /// The peer connected to our listener.
    Incoming,
}

/// Names one TCP connection between the FSM and the IO task. The FSM numbers the
/// connections it asks for; the IO task numbers the ones it accepts. The direction keeps
/// the two numberings apart and is what collision resolution needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub direction: Direction,
    pub seq: u32,
}

impl ConnId {
    /// A connection the listener accepted; `seq` must be unique among those.
    pub const fn incoming(seq: u32) -> Self {
        ConnId {
            direction: Direction::Incoming,
            seq,
        }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction {
            Direction::Outgoing => write!(f, "out#{}", self.seq),
            Direction::Incoming => write!(f, "in#{}", self.seq),
        }
    }
}

/// The states of RFC 4271 §8.2.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// What the IO task tells the FSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Start (or restart now, cutting an idle hold short).
    ManualStart,
    /// Stop and stay stopped; `None` sends Cease/Administrative Shutdown. With the RFC 8538
    /// N bit negotiated, Cease subcodes 1–4 go out wrapped in a Hard Reset.
    ManualStop(Option<Notification>),
    /// Our connect() for this connection succeeded.
    TcpConnected(ConnId),
    /// The listener accepted a connection from this peer.
    TcpAccepted(ConnId),
    /// connect() failed, or the connection closed or was reset.
    TcpFailed(ConnId),
    /// A message decoded on this connection. Borrowed: an UPDATE's body stays with the IO
    /// task, which hands it to the RIB when `established_conn()` names this connection.
    Message(ConnId, &'a Message),
    /// The codec rejected a message; the FSM sends this NOTIFICATION and closes.
    DecodeError(ConnId, Notification),
    /// The IO task wrote an UPDATE: restarts the KeepaliveTimer (RFC 4271 §4.4).
    UpdateSent(ConnId),
    /// The IO task wrote a ROUTE-REFRESH (counted only).
    RouteRefreshSent(ConnId),
}

/// What the FSM asks the IO task to do, in order.
// `Send` is as large as `Message` is; boxing it here would only add an allocation per
// KEEPALIVE, the layout of `Message` is the codec's to choose.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer and report it under this id.
    Connect(ConnId),
    /// Write this message (OPEN, KEEPALIVE, NOTIFICATION).
    Send(ConnId, Message),
    /// Close after flushing what was queued on it; closing a closed connection is a no-op.
    Close(ConnId),
    /// The session is up on `conn`: switch the codec to `negotiated.codec`, start the RIB
    /// exchange. After a graceful restart the RIB compares `negotiated` (R and F bits,
    /// families) with the stale routes it kept (RFC 4724 §4.2).
    Established {
        conn: ConnId,
        negotiated: Negotiated,
    },
    /// The session left Established. `graceful`: keep the peer's routes, marked stale, for
    /// the families in its Graceful Restart capability (RFC 4724 §4.2, RFC 8538 §4);
    /// otherwise withdraw them now.
    Down { reason: DownReason, graceful: bool },
    /// The peer did not re-establish within its restart time: withdraw its stale routes
    /// (RFC 4724 §4.2).
    StaleRoutesExpired,
    /// The peer's state changed; emitted after the actions that caused it.
    StateChanged { from: State, to: State },
}

/// Why a session (or an attempt at one) ended, for `Down` and `last_error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// ManualStop sent this NOTIFICATION.
    Stopped(Notification),
    /// We found an error and sent this NOTIFICATION: a rejected OPEN, an FSM error, a
    /// message the codec rejected.
    ErrorSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// No KEEPALIVE or UPDATE within the hold time; Hold Timer Expired was sent.
    HoldTimerExpired,
    /// The TCP connection closed or was reset.
    ConnectionClosed,
    /// A new connection arrived while Established with graceful restart negotiated, its
    /// OPEN carried the Restart State bit the old session's did not, and the old
    /// connection failed when probed: the peer restarted (RFC 4724 §4.2).
    PeerRestarted,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn notif(f: &mut fmt::Formatter<'_>, n: &Notification) -> fmt::Result {
            write!(
                f,
                "{}/{} {}",
                n.code,
                n.subcode,
                notify::error_status(n.code, n.subcode)
            )?;
            let mut inner = n;
            let unwrapped;
            if notify::is_hard_reset(n) && n.data.len() >= 2 {
                unwrapped = Notification {
                    code: n.data[0],
                    subcode: n.data[1],
                    data: n.data.slice(2..),
                };
                write!(
                    f,
                    " ({})",
                    notify::error_status(unwrapped.code, unwrapped.subcode)
                )?;
                inner = &unwrapped;
            }
            // RFC 9003: administrative shutdown and reset may carry the operator's words.
            if inner.code == CEASE
                && matches!(inner.subcode, cease::ADMIN_SHUTDOWN | cease::ADMIN_RESET)
            {
                if let Some((&len, rest)) = inner.data.split_first() {
                    if let Some(text) = rest
                        .get(..usize::from(len))
                        .and_then(|t| std::str::from_utf8(t).ok())
                    {
                        write!(f, ": {text:?}")?;
                    }
                }
            }
            Ok(())
        }
        match self {
            DownReason::Stopped(n) => {
                f.write_str("stopped, sent ")?;
                notif(f, n)
            }
            DownReason::ErrorSent(n) => {
                f.write_str("sent ")?;
                notif(f, n)
            }
            DownReason::NotificationReceived(n) => {
                f.write_str("received ")?;
                notif(f, n)
            }
            DownReason::HoldTimerExpired => f.write_str("hold timer expired"),
            DownReason::ConnectionClosed => f.write_str("connection closed"),
            DownReason::PeerRestarted => {
                f.write_str("peer restarted (its OPEN on a new connection set the restart bit, and the old connection failed)")
            }
        }
    }
}

/// Messages by type, in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub open: u64,
    pub update: u64,
    pub notification: u64,
    pub keepalive: u64,
    pub route_refresh: u64,
}

impl MessageCounts {
    pub fn total(&self) -> u64 {
        self.open + self.update + self.notification + self.keepalive + self.route_refresh
    }

    fn count(&mut self, m: &Message) {
        let slot = match m {
            Message::Open(_) => &mut self.open,
            Message::Update(_) => &mut self.update,
            Message::Notification(_) => &mut self.notification,
            Message::Keepalive => &mut self.keepalive,
            Message::RouteRefresh(_) => &mut self.route_refresh,
        };
        *slot += 1;
    }
}

/// Counters for `status` and metrics, since the FSM was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsmStats {
    /// Transitions into Established.
    pub established_transitions: u64,
    /// Transitions out of Established.
    pub flaps: u64,
    /// Connections closed by §6.8 collision resolution.
    pub collisions: u64,
    pub received: MessageCounts,
    /// What the FSM sent plus the UPDATEs and ROUTE-REFRESHes the IO task reported.
    pub sent: MessageCounts,
}

/// One peer's session state machine. See the module documentation.
#[derive(Clone, Debug)]
pub struct PeerFsm {
    cfg: FsmConfig,
    local_open: Open,
    /// ManualStart given and no ManualStop since: errors restart automatically.
    started: bool,
    /// At most one per direction.
    conns: Vec<Conn>,
    next_seq: u32,
    /// The state last reported through `StateChanged`.
    state: State,
    connect_retry_at: Option<Instant>,
    /// Set while Idle after an error, until the automatic restart.
    idle_hold_until: Option<Instant>,
    /// The idle hold an accepted connection cut short: it resumes if that connection
    /// fails before the session is up, so our own attempts stay damped.
    suspended_idle_hold: Option<Instant>,
    /// The peer's restart time after a graceful end (RFC 4724 §4.2).
    stale_until: Option<Instant>,
    /// RFC 4271 §8.1.2 ConnectRetryCounter: errors in a row, drives the idle hold back-off.
    connect_retry_counter: u32,
    last_error: Option<DownReason>,
    stats: FsmStats,
    jitter: Jitter,
}

impl PeerFsm {
    /// A stopped FSM (Idle until `ManualStart`). `capabilities` go into every OPEN we
    /// send; the header fields come from the configuration.
    pub fn new(config: FsmConfig, capabilities: Vec<Capability>) -> Result<Self, FsmConfigError> {
        config.validate(&capabilities)?;
        Ok(PeerFsm {
            local_open: Open {
                version: negotiate::BGP_VERSION,
                asn: config.local_asn,
                hold_time: config.hold_time,
                router_id: config.local_id,
                capabilities,
            },
            jitter: Jitter::new(config.jitter_seed),
            cfg: config,
            started: false,
            conns: Vec::new(),
            next_seq: 0,
            state: State::Idle,
            connect_retry_at: None,
            idle_hold_until: None,
            suspended_idle_hold: None,
            stale_until: None,
            connect_retry_counter: 0,
            last_error: None,
            stats: FsmStats::default(),
        })
    }

    /// Replaces the capabilities of the OPENs sent from now on (e.g. the Graceful Restart
    /// R bit cleared after the first session); a session already past OpenSent keeps what
    /// it negotiated.
    pub fn set_local_capabilities(
        &mut self,
        capabilities: Vec<Capability>,
    ) -> Result<(), FsmConfigError> {
        self.cfg.validate(&capabilities)?;
        self.local_open.capabilities = capabilities;
        Ok(())
    }

    pub fn handle(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Action>) {
        match input {
            Input::ManualStart => self.manual_start(now, out),
            Input::ManualStop(n) => self.manual_stop(now, n, out),
            Input::TcpConnected(id) => self.tcp_connected(now, id, out),
            Input::TcpAccepted(id) => self.tcp_accepted(now, id, out),
            Input::TcpFailed(id) => self.tcp_failed(now, id, out),
            Input::Message(id, msg) => self.message(now, id, msg, out),
            Input::DecodeError(id, n) => {
                if let Some(i) = self.find(id) {
                    self.fail(now, i, Some(n.clone()), DownReason::ErrorSent(n), out);
                }
            }
            Input::UpdateSent(id) => {
                if let Some(i) = self
                    .find(id)
                    .filter(|&i| self.conns[i].phase == Phase::Established)
                {
                    self.stats.sent.update += 1;
                    self.restart_keepalive(now, i);
                }
            }
            Input::RouteRefreshSent(id) => {
                if self.find(id).is_some() {
                    self.stats.sent.route_refresh += 1;
                }
            }
        }
        self.release_held(now, out);
        self.reconcile(now, out);
    }

    /// Runs every timer due at `now`. Call it at `next_deadline()` (late is fine).
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            let Some(i) = self.find(id) else { continue };
            if due(self.conns[i].probe_until, now) {
                // The Established session survived the probe: it was a collision, not a
                // restart, and the Established session wins (§6.8).
                if self.established_conn().is_some() {
                    self.collide(i, out);
                }
                continue;
            }
            if due(self.conns[i].hold_at, now) {
                let n = notify::notification(HOLD_TIMER_EXPIRED, 0);
                self.fail(now, i, Some(n), DownReason::HoldTimerExpired, out);
                continue;
            }
            if due(self.conns[i].delay_open_at, now) {
                self.send_open(now, i, out);
            }
            if due(self.conns[i].keepalive_at, now) {
                self.send(id, Message::Keepalive, out);
                self.restart_keepalive(now, i);
            }
        }
        if due(self.connect_retry_at, now) {
            // §8.2.2 Connect: drop the attempt still under way and try again.
            if let Some(i) = self.conns.iter().position(|c| c.phase == Phase::Connecting) {
                let stale = self.conns.remove(i);
                out.push(Action::Close(stale.id));
            }
            self.connect(now, out);
        }
        if due(self.idle_hold_until, now) {
            self.idle_hold_until = None;
            self.begin(now, out);
        }
        if due(self.stale_until, now) {
            self.stale_until = None;
            out.push(Action::StaleRoutesExpired);
        }
        self.release_held(now, out);
        self.reconcile(now, out);
    }

    /// When `on_timer` must next run; `None` when no timer is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.connect_retry_at,
            self.idle_hold_until,
            self.stale_until,
        ]
        .into_iter()
        .flatten()
        .chain(self.conns.iter().filter_map(Conn::next_deadline))
        .min()
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// What the most advanced connection negotiated (OpenConfirm or Established).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.conns
            .iter()
            .filter(|c| c.negotiated.is_some())
            .max_by_key(|c| c.phase)?
            .negotiated
            .as_ref()
    }

    /// The connection whose UPDATEs and ROUTE-REFRESHes go to the RIB.
    pub fn established_conn(&self) -> Option<ConnId> {
        self.conns
            .iter()
            .find(|c| c.phase == Phase::Established)
            .map(|c| c.id)
    }

    /// When the current session reached Established.
    pub fn established_since(&self) -> Option<Instant> {
        self.conns.iter().find_map(|c| c.established_at)
    }

    /// What ended the last session or attempt past OpenSent.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// When an Idle peer restarts by itself; `None` when not waiting.
    pub fn idle_hold_until(&self) -> Option<Instant> {
        self.idle_hold_until
    }

    /// Errors in a row (RFC 4271 ConnectRetryCounter); 0 after a stable session or a stop.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    pub fn stats(&self) -> &FsmStats {
        &self.stats
    }

    /// The OPEN sent on new connections.
    pub fn local_open(&self) -> &Open {
        &self.local_open
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    fn find(&self, id: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == id)
    }

    fn policy(&self) -> NegotiationPolicy {
        NegotiationPolicy {
            peer_asn: self.cfg.peer_asn,
            keepalive: self.cfg.keepalive,
        }
    }

    /// One more connection, the vector grown by exactly one: a session has one or two,
    /// and a reflector's thousand sessions would otherwise hold room for four each.
    fn add_conn(&mut self, c: Conn) {
        self.conns.reserve_exact(1);
        self.conns.push(c);
    }

    fn send(&mut self, id: ConnId, msg: Message, out: &mut Vec<Action>) {
        self.stats.sent.count(&msg);
        out.push(Action::Send(id, msg));
    }

    fn manual_start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.started && self.idle_hold_until.is_none() {
            return;
        }
        self.started = true;
        self.idle_hold_until = None;
        self.suspended_idle_hold = None;
        self.begin(now, out);
    }

    /// Leaves Idle: an active peer connects at once, a passive one waits in Active.
    fn begin(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.cfg.passive {
            self.connect(now, out);
        }
    }

    fn connect(&mut self, now: Instant, out: &mut Vec<Action>) {
        let id = ConnId {
            direction: Direction::Outgoing,
            seq: self.next_seq,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.add_conn(Conn::new(id, Phase::Connecting));
        out.push(Action::Connect(id));
        self.connect_retry_at = Some(now + self.jitter.scale(self.cfg.connect_retry));
    }

    fn manual_stop(&mut self, now: Instant, n: Option<Notification>, out: &mut Vec<Action>) {
        let n = n.unwrap_or_else(|| notify::cease(cease::ADMIN_SHUTDOWN));
        for conn in std::mem::take(&mut self.conns) {
            // §8.2.2: before OPEN is sent the connection is just dropped.
            if conn.phase >= Phase::OpenSent {
                let sent = match &conn.negotiated {
                    Some(neg) if neg.notification_graceful() && notify::needs_hard_reset(&n) => {
                        notify::hard_reset(&n)
                    }
                    _ => n.clone(),
                };
                self.send(conn.id, Message::Notification(sent.clone()), out);
                self.last_error = Some(DownReason::Stopped(sent.clone()));
                out.push(Action::Close(conn.id));
                if conn.phase == Phase::Established {
                    self.session_down(now, &conn, DownReason::Stopped(sent), out);
                }
            } else {
                out.push(Action::Close(conn.id));
            }
        }
        self.started = false;
        self.connect_retry_counter = 0;
        self.idle_hold_until = None;
        self.suspended_idle_hold = None;
        self.connect_retry_at = None;
    }

    fn tcp_connected(&mut self, now: Instant, id: ConnId, out: &mut Vec<Action>) {
        match self
            .find(id)
            .filter(|&i| self.conns[i].phase == Phase::Connecting)
        {
            Some(i) => self.tcp_up(now, i, out),
            // An attempt we already gave up on.
            None => out.push(Action::Close(id)),
        }
    }

    fn tcp_accepted(&mut self, now: Instant, id: ConnId, out: &mut Vec<Action>) {
        if id.direction != Direction::Incoming || self.find(id).is_some() {
            return;
        }
        if !self.started {
            // §8.2.2 Idle refuses connections while stopped; RFC 4486 names the reason.
            self.reject(id, out);
            return;
        }
        // During the idle hold the peer is configured and not shut down: its connection
        // starts the session at once (see the departures above). Our own attempts stay
        // damped: the hold resumes if this connection fails before Established.
        let in_idle_hold = self.idle_hold_until.take();
        if in_idle_hold.is_some() {
            self.suspended_idle_hold = in_idle_hold;
        }
        if let Some(e) = self
            .conns
            .iter()
            .position(|c| c.phase == Phase::Established)
        {
            // A peer that connects again may have restarted with our connection to it
            // left half-open: a KEEPALIVE on it now gets a reset from the peer's kernel
            // instead of at the next keepalive interval.
            self.probe(now, e, out);
            let graceful = self.conns[e]
                .negotiated
                .as_ref()
                .is_some_and(|n| n.restart_time().is_some());
            if !graceful {
                // §6.8: a collision with an Established session closes the new
                // connection. Closed before our OPEN goes out, so that the peer cannot
                // pick this connection in its own collision resolution.
                self.collide_unlisted(id, out);
                return;
            }
            // RFC 4724 §4.2 would have the new connection end the old session; §6.8 keeps
            // the Established one. Which one applies depends on whether the old TCP
            // connection still has a speaker behind it, which the probe finds out: the
            // new connection is held, our OPEN unsent, until the old one fails or the
            // probe time passes.
            self.replace_incoming(id, out);
            let mut c = Conn::new(id, Phase::DelayOpen);
            c.probe_until = Some(now + RESTART_PROBE_TIME);
            self.add_conn(c);
            return;
        }
        self.replace_incoming(id, out);
        let mut c = Conn::new(id, Phase::Connecting);
        c.accepted_in_idle_hold = in_idle_hold.is_some();
        self.add_conn(c);
        let i = self.conns.len() - 1;
        self.tcp_up(now, i, out);
    }

    /// KEEPALIVE on the Established connection `e`, at most one a second (RFC 4271 §4.4).
    fn probe(&mut self, now: Instant, e: usize, out: &mut Vec<Action>) {
        let recent = self.conns[e]
            .probed_at
            .is_some_and(|t| now.saturating_duration_since(t) < std::time::Duration::from_secs(1));
        if recent {
            return;
        }
        self.conns[e].probed_at = Some(now);
        let id = self.conns[e].id;
        self.send(id, Message::Keepalive, out);
        self.restart_keepalive(now, e);
    }

    /// A second connection from the peer means it gave up on the first one still opening.
    fn replace_incoming(&mut self, id: ConnId, out: &mut Vec<Action>) {
        if let Some(prev) = self.conns.iter().position(|c| {
            c.id != id && c.id.direction == Direction::Incoming && c.phase < Phase::Established
        }) {
            let prev = self.conns.remove(prev);
            out.push(Action::Close(prev.id));
        }
    }

    /// Connections held by a restart probe go on once no session is Established any more
    /// (the old one failed): with the peer's OPEN if it already came, else with ours.
    fn release_held(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.established_conn().is_some() {
            return;
        }
        let held: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.probe_until.is_some())
            .map(|c| c.id)
            .collect();
        for id in held {
            let Some(i) = self.find(id) else { continue };
            self.conns[i].probe_until = None;
            let keepalive = std::mem::take(&mut self.conns[i].held_keepalive);
            match self.conns[i].held_open.take() {
                Some(open) => {
                    self.open_received(now, i, &open, out);
                    if let Some(i) = self
                        .find(id)
                        .filter(|&i| keepalive && self.conns[i].phase == Phase::OpenConfirm)
                    {
                        self.establish(now, i, out);
                    }
                }
                None if self.conns[i].phase == Phase::DelayOpen => self.tcp_up(now, i, out),
                // Our OPEN is out already: the peer's comes.
                None => {}
            }
        }
    }

    fn reject(&mut self, id: ConnId, out: &mut Vec<Action>) {
        self.send(
            id,
            Message::Notification(notify::cease(cease::CONNECTION_REJECTED)),
            out,
        );
        out.push(Action::Close(id));
    }

    /// TCP is up on conn `i`: send OPEN now, or wait for the peer's (DelayOpen).
    fn tcp_up(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        match self.cfg.delay_open {
            Some(d) => {
                let c = &mut self.conns[i];
                c.phase = Phase::DelayOpen;
                c.delay_open_at = Some(now + d);
            }
            None => self.send_open(now, i, out),
        }
    }

    fn send_open(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        let open = self.local_open.clone();
        let id = self.conns[i].id;
        self.send(id, Message::Open(open.clone()), out);
        let c = &mut self.conns[i];
        c.sent_open = Some(open);
        c.phase = Phase::OpenSent;
        c.delay_open_at = None;
        c.hold_at = Some(now + self.cfg.open_hold_time);
    }

    fn tcp_failed(&mut self, now: Instant, id: ConnId, out: &mut Vec<Action>) {
        let Some(i) = self.find(id) else { return };
        if self.conns[i].phase == Phase::Connecting {
            // connect() failed: Active until the ConnectRetryTimer tries again.
            self.conns.remove(i);
        } else if self.conns[i].phase == Phase::Established
            && self.conns.iter().any(|c| c.held_restarted)
        {
            // The probe ended the old session while a new connection's OPEN says the
            // peer restarted: RFC 4724 §4.2, the held connection goes on.
            self.fail(now, i, None, DownReason::PeerRestarted, out);
        } else {
            self.fail(now, i, None, DownReason::ConnectionClosed, out);
        }
    }

    fn message(&mut self, now: Instant, id: ConnId, msg: &Message, out: &mut Vec<Action>) {
        let Some(i) = self.find(id) else { return };
        self.stats.received.count(msg);
        if self.conns[i].held_open.is_some() && *msg == Message::Keepalive {
            // The peer chose this connection (it answered our OPEN); its Cease/7 on
            // the Established one is on the way. Kept for when the hold ends.
            self.conns[i].held_keepalive = true;
            return;
        }
        match (self.conns[i].phase, msg) {
            // No TCP yet, so no message: the IO task mixed up its connections.
            (Phase::Connecting, _) => {}
            (_, Message::Notification(n)) => {
                self.fail(
                    now,
                    i,
                    None,
                    DownReason::NotificationReceived(n.clone()),
                    out,
                );
            }
            (Phase::DelayOpen | Phase::OpenSent, Message::Open(open)) => {
                self.open_received(now, i, open, out)
            }
            (Phase::OpenConfirm, Message::Keepalive) => self.establish(now, i, out),
            (
                Phase::Established,
                Message::Keepalive | Message::Update(_) | Message::RouteRefresh(_),
            ) => {
                self.conns[i].restart_hold(now);
            }
            (phase, _) => {
                // RFC 6608 §4: the subcode names the state the message was unexpected in.
                let subcode = match phase {
                    Phase::OpenSent => fsm_sub::UNEXPECTED_IN_OPENSENT,
                    Phase::OpenConfirm => fsm_sub::UNEXPECTED_IN_OPENCONFIRM,
                    Phase::Established => fsm_sub::UNEXPECTED_IN_ESTABLISHED,
                    Phase::Connecting | Phase::DelayOpen => fsm_sub::UNSPECIFIED,
                };
                let n = notify::notification(FSM_ERROR, subcode);
                self.fail(now, i, Some(n.clone()), DownReason::ErrorSent(n), out);
            }
        }
    }

    fn open_received(&mut self, now: Instant, i: usize, remote: &Open, out: &mut Vec<Action>) {
        let result = {
            let local = self.conns[i].sent_open.as_ref().unwrap_or(&self.local_open);
            negotiate::negotiate(local, remote, &self.policy())
        };
        let neg = match result {
            Ok(neg) => neg,
            Err(n) => {
                self.fail(now, i, Some(n.clone()), DownReason::ErrorSent(n), out);
                return;
            }
        };
        let id = self.conns[i].id;
        if let Some(e) = self
            .conns
            .iter()
            .position(|c| c.id != id && c.phase == Phase::Established)
        {
            let old = &self.conns[e];
            let graceful = old
                .negotiated
                .as_ref()
                .is_some_and(|n| n.restart_time().is_some());
            let restarted = old
                .negotiated
                .as_ref()
                .is_some_and(|n| neg.peer_restarted_since(n));
            let favoured = id.direction == self.collision_keeps(&neg);
            if !graceful && !favoured {
                // §6.8: the Established session wins, and the peer, whichever way it
                // resolved, agrees.
                self.collide(i, out);
                return;
            }
            // Held until the probe decides (see `tcp_accepted`), or, for the connection
            // the identifiers favour, until the peer shows which one it kept (see
            // `establish`). A Restart State bit is no evidence on its own: anyone who
            // reaches our port can set it, while only the peer can end the old
            // connection. A peer that really restarted has no connection behind the old
            // one, so the probe ends it at once (its kernel resets it, or its process
            // closed it already) and RFC 4724 §4.2 replaces the session then.
            let c = &mut self.conns[i];
            c.held_open = Some(remote.clone());
            c.held_restarted = restarted;
            c.probe_until.get_or_insert(now + RESTART_PROBE_TIME);
            return;
        }
        let c = &mut self.conns[i];
        c.probe_until = None;
        c.held_open = None;
        c.held_restarted = false;
        // §6.8: the OPEN names the peer's identifier, so a collision with the other
        // connection in OpenSent or OpenConfirm is resolved now.
        let other = self
            .conns
            .iter()
            .position(|c| c.id != id && matches!(c.phase, Phase::OpenSent | Phase::OpenConfirm));
        if let Some(j) = other {
            if id.direction == self.collision_keeps(&neg) {
                self.collide(j, out);
            } else {
                self.collide(i, out);
                return;
            }
        }
        let Some(i) = self.find(id) else { return };
        if self.conns[i].phase == Phase::DelayOpen {
            self.send_open(now, i, out);
        }
        self.send(id, Message::Keepalive, out);
        let keepalive_at = neg.keepalive_interval().map(|k| now + self.jitter.scale(k));
        let hold_at = now + neg.hold().unwrap_or(self.cfg.open_hold_time);
        let c = &mut self.conns[i];
        c.phase = Phase::OpenConfirm;
        c.hold_at = Some(hold_at);
        c.keepalive_at = keepalive_at;
        c.negotiated = Some(neg);
    }

    /// §6.8: keep the connection opened by the speaker with the higher BGP Identifier,
    /// compared as unsigned 32-bit integers; with equal identifiers (possible between
    /// ASes), the one opened by the higher AS (RFC 6286 §2.3).
    fn collision_keeps(&self, neg: &Negotiated) -> Direction {
        let local = u32::from(self.cfg.local_id.0);
        let remote = u32::from(neg.peer_id.0);
        let local_wins = if local != remote {
            local > remote
        } else {
            self.cfg.local_asn.0 > neg.peer_asn.0
        };
        if local_wins {
            Direction::Outgoing
        } else {
            Direction::Incoming
        }
    }

    fn collide(&mut self, i: usize, out: &mut Vec<Action>) {
        let loser = self.conns.remove(i);
        self.collide_unlisted(loser.id, out);
    }

    /// Cease/Connection Collision Resolution on a connection no longer (or never) listed.
    fn collide_unlisted(&mut self, id: ConnId, out: &mut Vec<Action>) {
        self.send(
            id,
            Message::Notification(notify::cease(cease::CONNECTION_COLLISION)),
            out,
        );
        out.push(Action::Close(id));
        self.stats.collisions += 1;
    }

    fn establish(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        let id = self.conns[i].id;
        // The connection the identifiers favour, if our OPEN already went out on it: the
        // peer may have chosen it (its side of this session was still in OpenConfirm
        // when our OPEN arrived) and will then close this one with Cease/7. It is kept,
        // held, until the peer shows its choice or the probe time passes.
        let winner = self.conns[i]
            .negotiated
            .as_ref()
            .map(|n| self.collision_keeps(n));
        let track = self.conns.iter().position(|c| {
            c.id != id && c.phase == Phase::OpenSent && Some(c.id.direction) == winner
        });
        let tracked = track.map(|j| self.conns[j].id);
        if let Some(j) = track {
            self.conns[j].probe_until = Some(now + RESTART_PROBE_TIME);
        }
        // §6.8: whatever else is still opening collides with the Established session.
        while let Some(j) = self
            .conns
            .iter()
            .position(|c| c.id != id && Some(c.id) != tracked)
        {
            if self.conns[j].phase >= Phase::DelayOpen {
                self.collide(j, out);
            } else {
                let c = self.conns.remove(j);
                out.push(Action::Close(c.id));
            }
        }
        let Some(i) = self.find(id) else { return };
        self.suspended_idle_hold = None;
        if self.conns[i].accepted_in_idle_hold {
            // The peer reached us during our idle hold and the session came up: it is
            // back, so the back-off starts over.
            self.connect_retry_counter = 0;
        }
        let c = &mut self.conns[i];
        c.phase = Phase::Established;
        c.established_at = Some(now);
        c.restart_hold(now);
        let Some(negotiated) = c.negotiated.clone() else {
            return;
        };
        self.stats.established_transitions += 1;
        self.stale_until = None;
        out.push(Action::Established {
            conn: id,
            negotiated,
        });
    }

    fn restart_keepalive(&mut self, now: Instant, i: usize) {
        let interval = self.conns[i]
            .negotiated
            .as_ref()
            .and_then(Negotiated::keepalive_interval);
        self.conns[i].keepalive_at = interval.map(|k| now + self.jitter.scale(k));
    }

    /// Connection `i` ends: optionally with a NOTIFICATION, always with a close. When it
    /// was the last one and the failure is an error, the peer goes Idle and restarts after
    /// the back-off.
    fn fail(
        &mut self,
        now: Instant,
        i: usize,
        send: Option<Notification>,
        reason: DownReason,
        out: &mut Vec<Action>,
    ) {
        let conn = self.conns.remove(i);
        if let Some(n) = send {
            self.send(conn.id, Message::Notification(n), out);
        }
        out.push(Action::Close(conn.id));
        let notified = matches!(
            reason,
            DownReason::ErrorSent(_) | DownReason::NotificationReceived(_)
        );
        // §6.8: the peer closed this connection because it keeps another one with us
        // (perhaps one our listener has not handed over yet). Not an error: no back-off,
        // and the ConnectRetryTimer covers a connection that never comes.
        // Also on a session just Established: the peer had not seen it up when it chose
        // its other connection, which then carries the session.
        let lost_collision = matches!(&reason, DownReason::NotificationReceived(n)
                if n.code == CEASE && n.subcode == cease::CONNECTION_COLLISION);
        if (conn.phase >= Phase::OpenSent || notified) && !lost_collision {
            self.last_error = Some(reason.clone());
        }
        // §8.2.2: TCP lost in OpenSent (or before) goes back to Active, not Idle.
        let back_to_active = lost_collision
            || (reason == DownReason::ConnectionClosed && conn.phase <= Phase::OpenSent);
        // §8.2.2 Event 24: a version error does not count towards the back-off.
        let counted = !matches!(&reason, DownReason::NotificationReceived(n)
            if n.code == OPEN_MESSAGE_ERROR && n.subcode == notify::open::UNSUPPORTED_VERSION);
        if conn.phase == Phase::Established {
            self.session_down(now, &conn, reason, out);
        }
        if self.conns.is_empty() {
            if !back_to_active {
                self.go_idle(now, counted);
            } else if let Some(until) = self.suspended_idle_hold.take() {
                // The connection that cut the idle hold short is gone: the hold resumes
                // (and starts the session when it ends, as it would have).
                self.idle_hold_until = Some(until);
            }
        }
    }

    /// The Established session on `conn` ended.
    fn session_down(
        &mut self,
        now: Instant,
        conn: &Conn,
        reason: DownReason,
        out: &mut Vec<Action>,
    ) {
        // DampPeerOscillations: a session that stayed up as long as the longest back-off
        // was no oscillation; start the back-off over.
        if conn
            .established_at
            .is_some_and(|at| now.duration_since(at) >= self.cfg.idle_hold_max)
        {
            self.connect_retry_counter = 0;
        }
        let restart_time = conn
            .negotiated
            .as_ref()
            .filter(|n| ends_gracefully(n, &reason, self.cfg.graceful_on_hold_expiry))
            .and_then(Negotiated::restart_time);
        if let Some(t) = restart_time {
            self.stale_until = Some(now + t);
        }
        self.stats.flaps += 1;
        out.push(Action::Down {
            reason,
            graceful: restart_time.is_some(),
        });
    }

    fn go_idle(&mut self, now: Instant, counted: bool) {
        self.suspended_idle_hold = None;
        if counted {
            self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
        }
        self.connect_retry_at = None;
        if self.started {
            let doublings = self.connect_retry_counter.saturating_sub(1).min(24);
            let hold = self
                .cfg
                .idle_hold
                .saturating_mul(1 << doublings)
                .min(self.cfg.idle_hold_max);
            self.idle_hold_until = Some(now + self.jitter.scale(hold));
        }
    }

    /// Keeps the ConnectRetryTimer running exactly while the peer is between connections
    /// (Connect and Active with no TCP up, §8.2.2), and reports the state.
    fn reconcile(&mut self, now: Instant, out: &mut Vec<Action>) {
        let retry = self.started
            && self.idle_hold_until.is_none()
            && !self.cfg.passive
            && self.conns.iter().all(|c| c.phase == Phase::Connecting);
        if !retry {
            self.connect_retry_at = None;
        } else if self.connect_retry_at.is_none() {
            self.connect_retry_at = Some(now + self.jitter.scale(self.cfg.connect_retry));
        }
        let state = self.derive_state();
        if state != self.state {
            out.push(Action::StateChanged {
                from: self.state,
                to: state,
            });
            self.state = state;
        }
    }

    fn derive_state(&self) -> State {
        if !self.started || self.idle_hold_until.is_some() {
            return State::Idle;
        }
        match self.conns.iter().map(|c| c.phase).max() {
            Some(Phase::Established) => State::Established,
            Some(Phase::OpenConfirm) => State::OpenConfirm,
            Some(Phase::OpenSent) => State::OpenSent,
            _ if self
                .conns
                .iter()
                .any(|c| c.id.direction == Direction::Outgoing) =>
            {
                State::Connect
            }
            _ => State::Active,
        }
    }
}

/// Whether the peer's routes are kept when its session ends this way (the helper side).
/// RFC 4724 §4.2 covers a session that ends without a NOTIFICATION; RFC 8538 §4 extends
/// it, once both sides set the N bit, to every NOTIFICATION except a Hard Reset; the
/// Hold Timer Expired one only when `graceful_on_hold_expiry`.
fn ends_gracefully(n: &Negotiated, reason: &DownReason, graceful_on_hold_expiry: bool) -> bool {
    if n.restart_time().is_none() {
        return false;
    }
    match reason {
        DownReason::ConnectionClosed | DownReason::PeerRestarted => true,
        DownReason::HoldTimerExpired => graceful_on_hold_expiry && n.notification_graceful(),
        DownReason::Stopped(x) | DownReason::ErrorSent(x) | DownReason::NotificationReceived(x) => {
            n.notification_graceful() && !notify::is_hard_reset(x)
        }
    }
}

fn due(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|at| at <= now)
}
