//! The IO task of one peer: owns its `PeerFsm` and its TCP connections, turns socket
//! events into FSM inputs and FSM actions into socket writes, and passes UPDATEs of the
//! established connection to the speaker's core.
//!
//! ```text
//!                 SessionCmd                          SessionEvent
//!   core ---------------------------> session ---------------------------> core
//!   (start, stop, accepted stream,     |  ^       (state, established + the writer's
//!    refresh, query, shutdown)          |  |        data queue, UPDATE batches, down)
//!                                       |  | ConnEvent (frames, connected, closed)
//!                     WriterMsg (ctl)   v  |
//!                  +--------------> writer task ----> socket <---- reader task
//!   core --------- data queue (encoded UPDATEs) --^        (frames the stream, no decode)
//! ```
//!
//! The reader only cuts the byte stream into frames; this task decodes them with the
//! parameters of the connection they arrived on, so that the switch to the negotiated
//! parameters (4-octet AS, add-path…) happens exactly between the KEEPALIVE that
//! establishes the session and the first UPDATE, whatever the reads looked like.

use crate::fsm::{Action, ConnId, DownReason, FsmStats, Input, PeerFsm, State};
use crate::mailbox;
use crate::negotiate::Negotiated;
use crate::transport::{self, TransportOptions};
use crate::types::Family;
use crate::wire::header::{self, Frame};
use crate::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use crate::wire::{self, CodecParams, Message, Notification, Update};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, info, warn};

/// How many encoded chunks the core may queue for one peer's socket.
pub(crate) const DATA_QUEUE: usize = 32;
/// Control messages (OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH) waiting to be written;
/// a peer that lets this many pile up is not reading and its hold timer will say so.
const CTL_QUEUE: usize = 64;
/// Frames cut from one read are handed over together. A connection reads into a buffer
/// of `READ_MIN` octets while its peer sends little (keepalives, a few UPDATEs) and doubles
/// it, up to `READ_MAX`, while each read fills what it offered (a table load); it goes
/// back to the small one once the load is over. Between reads that end on a frame
/// boundary it holds no buffer at all (see [`ReadBuf`]).
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 256 * 1024;
/// How long a stopping session waits for its writers to put the last messages on the
/// wire.
const WRITER_DRAIN: Duration = Duration::from_secs(1);
/// A writer busy with a load reports what it wrote after this many UPDATEs (and
/// whenever its queue runs empty).
const REPORT_WRITTEN_EVERY: u64 = 1024;
/// UPDATEs handed to the core in one event (~5,000 prefixes of a table load).
const UPDATE_BATCH: usize = 256;

/// What the core asks of a session.
#[derive(Debug)]
pub(crate) enum SessionCmd {
    Start,
    /// Stop with this NOTIFICATION (Cease/Administrative Shutdown when `None`).
    Stop(Option<Notification>),
    /// The listener accepted a connection from this peer's address.
    Accepted(TcpStream),
    /// Send a ROUTE-REFRESH for a family (RFC 2918 / RFC 7313).
    SendRefresh(Family, RefreshSubtype),
    /// Capabilities for the OPENs sent from now on (the restart bit cleared once the
    /// speaker's own graceful restart is over).
    SetCapabilities(Vec<crate::wire::open::Capability>),
    /// Report the session's state for `status`.
    Query(oneshot::Sender<SessionStatus>),
    /// End the task. `silent`: close the connections without a NOTIFICATION so that
    /// peers keep our routes as stale (graceful restart of this speaker, RFC 4724 §4.1).
    Shutdown {
        silent: bool,
    },
}

/// What a session tells the core, in the order it happened.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    Established {
        peer: IpAddr,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
        remote: SocketAddr,
        /// Encoded UPDATEs for the peer go here.
        data: mailbox::Tx<Bytes>,
    },
    /// Everything else, as the speaker's state takes it.
    Report(SessionReport),
}

/// A session's report that carries nothing of its IO.
#[derive(Debug)]
pub(crate) enum SessionReport {
    State {
        peer: IpAddr,
        state: State,
    },
    Updates {
        peer: IpAddr,
        updates: Vec<Update>,
    },
    RouteRefresh {
        peer: IpAddr,
        refresh: RouteRefresh,
    },
    Down {
        peer: IpAddr,
        reason: DownReason,
        graceful: bool,
    },
    /// The peer's Restart Time passed while it was down (the FSM's restart timer).
    RestartTimeExpired {
        peer: IpAddr,
    },
}

/// A snapshot of one session for the status command.
#[derive(Clone, Debug)]
pub(crate) struct SessionStatus {
    pub state: State,
    pub established_since: Option<Instant>,
    pub last_error: Option<String>,
    pub stats: FsmStats,
    pub negotiated: Option<Negotiated>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub idle_hold_until: Option<Instant>,
}

/// How to reach the peer.
#[derive(Clone, Debug)]
pub(crate) struct SessionConfig {
    pub remote: SocketAddr,
    pub transport: TransportOptions,
}

/// The handle the core keeps.
pub(crate) struct SessionHandle {
    pub cmd: mailbox::Tx<SessionCmd>,
    pub task: JoinHandle<()>,
}

/// Start a peer's task. It stays Idle until `SessionCmd::Start`.
pub(crate) fn spawn(
    config: SessionConfig,
    fsm: PeerFsm,
    events: mpsc::Sender<SessionEvent>,
    drained: Arc<Notify>,
) -> SessionHandle {
    let (session, cmd_tx) = Session::new(config, fsm, events, drained);
    let task = tokio::spawn(Box::new(session).run());
    SessionHandle { cmd: cmd_tx, task }
}

impl Session {
    fn new(
        config: SessionConfig,
        fsm: PeerFsm,
        events: mpsc::Sender<SessionEvent>,
        drained: Arc<Notify>,
    ) -> (Session, mailbox::Tx<SessionCmd>) {
        let (cmd_tx, cmd_rx) = mailbox::channel(16);
        let (conn_tx, conn_rx) = mailbox::channel(64);
        let session = Session {
            peer: config.remote.ip(),
            config,
            fsm,
            cmd_rx,
            events,
            conn_tx,
            conn_rx,
            conns: Conns::default(),
            next_incoming: 0,
            established: None,
            drained,
            actions: Vec::new(),
            batch: Vec::new(),
            outbox: VecDeque::new(),
            reading: None,
            connect_error: None,
        };
        (session, cmd_tx)
    }
}

/// What woke the session up.
enum Wake {
    Command(Option<SessionCmd>),
    Conn(ConnEvent),
    Timer,
}

/// Events from a connection's tasks.
enum ConnEvent {
    Connected(ConnId, TcpStream),
    ConnectFailed(ConnId, std::io::Error),
    Frames(ConnId, Vec<Bytes>),
    /// The reader hit an error or the end of the stream, or framing failed.
    Closed(ConnId, Option<Notification>),
    /// The kernel ended the connection because what we sent stayed unacknowledged
    /// (`TransportOptions::unacked_timeout`).
    TimedOut(ConnId),
    /// The writer put this many UPDATEs and ROUTE-REFRESHes of the core's data queue on
    /// the wire (they bypass the FSM, which counts them for the status).
    Written(ConnId, MessageTally),
}

/// UPDATEs and ROUTE-REFRESHes in a chunk of encoded messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageTally {
    pub updates: u64,
    pub route_refreshes: u64,
}

/// Counts the messages of a chunk the core encoded: whole messages back to back, each
/// with its length at octets 16–17 and its type at octet 18 (RFC 4271 §4.1).
pub(crate) fn tally(mut chunk: &[u8]) -> MessageTally {
    let mut t = MessageTally::default();
    while chunk.len() >= 19 {
        let len = usize::from(u16::from_be_bytes([chunk[16], chunk[17]]));
        match chunk[18] {
            2 => t.updates += 1,
            5 => t.route_refreshes += 1,
            _ => {}
        }
        if len < 19 || len > chunk.len() {
            break;
        }
        chunk = &chunk[len..];
    }
    t
}

enum WriterMsg {
    Bytes(Bytes),
    /// The session negotiated hold time 0: let TCP find a dead peer within this bound
    /// (see [`transport::set_dead_peer_probe`]).
    DeadPeerBound(Duration),
    /// Write what is queued on the control channel, then shut the socket down.
    Close,
}

enum ConnIo {
    Connecting(AbortHandle),
    Open {
        ctl: mailbox::Tx<WriterMsg>,
        data_tx: mailbox::Tx<Bytes>,
        reader: AbortHandle,
        /// Waited for when the speaker stops, so that the NOTIFICATION is on the wire
        /// before the process exits.
        writer: Option<JoinHandle<()>>,
        local: SocketAddr,
        remote: SocketAddr,
    },
}

/// A session's connections: one, or two while a collision is resolved (RFC 4271 §6.8),
/// so a short list rather than a hash table, which starts at four slots.
#[derive(Default)]
struct Conns(Vec<(ConnId, ConnIo)>);

impl Conns {
    fn get(&self, id: &ConnId) -> Option<&ConnIo> {
        self.0.iter().find(|(k, _)| k == id).map(|(_, c)| c)
    }

    fn contains_key(&self, id: &ConnId) -> bool {
        self.get(id).is_some()
    }

    fn insert(&mut self, id: ConnId, conn: ConnIo) {
        match self.0.iter_mut().find(|(k, _)| *k == id) {
            Some(slot) => slot.1 = conn,
            None => self.0.push((id, conn)),
        }
    }

    fn remove(&mut self, id: &ConnId) -> Option<ConnIo> {
        let i = self.0.iter().position(|(k, _)| k == id)?;
        let (_, conn) = self.0.swap_remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(conn)
    }

    fn keys(&self) -> impl Iterator<Item = &ConnId> {
        self.0.iter().map(|(k, _)| k)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut ConnIo> {
        self.0.iter_mut().map(|(_, c)| c)
    }
}

struct Session {
    peer: IpAddr,
    config: SessionConfig,
    fsm: PeerFsm,
    cmd_rx: mailbox::Rx<SessionCmd>,
    events: mpsc::Sender<SessionEvent>,
    conn_tx: mailbox::Tx<ConnEvent>,
    conn_rx: mailbox::Rx<ConnEvent>,
    conns: Conns,
    next_incoming: u32,
    /// The established connection and the parameters its messages are read with.
    established: Option<(ConnId, CodecParams)>,
    drained: Arc<Notify>,
    actions: Vec<Action>,
    batch: Vec<Update>,
    /// Events for the core, in order, not yet taken by its queue. Everything the session
    /// does is synchronous except handing these over ([`Session::deliver`]), so the
    /// task's future stays small: a reflector runs a thousand of them.
    outbox: VecDeque<SessionEvent>,
    /// The frames of the last read not decoded yet, and their connection.
    reading: Option<(ConnId, std::vec::IntoIter<Bytes>)>,
    /// Why the last outgoing connection attempt failed, until a session is established:
    /// the FSM only knows that it failed, and an operator needs to know why.
    connect_error: Option<String>,
}

impl Session {
    /// The session's task. Boxed: a future that owns a large argument keeps room for it
    /// twice (as the argument and as the running state), and the session is most of a
    /// task's memory.
    async fn run(mut self: Box<Self>) {
        loop {
            // The frames of a read are decoded one at a time, and what each produces goes
            // to the core before the next, so a table load is passed on as it arrives.
            if self.reading.is_some() {
                if let Some((id, frame)) = self.next_frame() {
                    self.frame(id, &frame);
                }
                self.perform();
                self.deliver().await;
                continue;
            }
            let deadline = self.fsm.next_deadline();
            let input = {
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    cmd = self.cmd_rx.recv() => Wake::Command(cmd),
                    Some(ev) = self.conn_rx.recv() => Wake::Conn(ev),
                    () = sleep => Wake::Timer,
                }
            };
            match input {
                Wake::Command(None) => {
                    self.close_all();
                    return;
                }
                Wake::Command(Some(SessionCmd::Shutdown { silent })) => {
                    // Once in a session's life: its wait lives on the heap, not in every
                    // task's state.
                    Box::pin(self.shutdown(silent)).await;
                    return;
                }
                Wake::Command(Some(cmd)) => self.command(cmd),
                Wake::Conn(ev) => self.conn_event(ev),
                Wake::Timer => self.fsm.on_timer(Instant::now(), &mut self.actions),
            }
            self.perform();
            self.deliver().await;
        }
    }

    /// Hand the queued events to the core, waiting while its queue is full.
    async fn deliver(&mut self) {
        while let Some(ev) = self.outbox.pop_front() {
            match self.events.try_reserve() {
                Ok(permit) => permit.send(ev),
                Err(mpsc::error::TrySendError::Full(())) => {
                    // The event stays queued while waiting for room: the wait holds no
                    // copy of it. Waiting is the exception (the core is behind), so its
                    // future is on the heap while it lasts, not part of every task.
                    self.outbox.push_front(ev);
                    let Ok(permit) = Box::pin(self.events.reserve()).await else {
                        self.outbox.clear();
                        break;
                    };
                    if let Some(ev) = self.outbox.pop_front() {
                        permit.send(ev);
                    }
                }
                Err(mpsc::error::TrySendError::Closed(())) => self.outbox.clear(),
            }
        }
        // Most steps queue nothing; a quiet session keeps no slots.
        if self.outbox.capacity() > 0 {
            self.outbox = VecDeque::new();
        }
    }

    /// Stop: tell the peer (unless `silent`), close every connection, and give the
    /// writers a moment to put what is queued (the NOTIFICATION) on the wire, since the
    /// process may exit as soon as this task ends.
    async fn shutdown(&mut self, silent: bool) {
        let writers: Vec<JoinHandle<()>> = self
            .conns
            .values_mut()
            .filter_map(|c| match c {
                ConnIo::Open { writer, .. } => writer.take(),
                ConnIo::Connecting(_) => None,
            })
            .collect();
        if !silent {
            let now = Instant::now();
            self.fsm
                .handle(now, Input::ManualStop(None), &mut self.actions);
            self.perform();
            self.deliver().await;
        }
        self.close_all();
        let deadline = tokio::time::Instant::now() + WRITER_DRAIN;
        for w in writers {
            let _ = tokio::time::timeout_at(deadline, w).await;
        }
    }

    fn report(&mut self, r: SessionReport) {
        self.outbox.push_back(SessionEvent::Report(r));
    }

    /// The next frame of the read being decoded. At the end of the read (or once its
    /// connection is gone) the UPDATEs gathered are queued for the core and the read is
    /// done.
    fn next_frame(&mut self) -> Option<(ConnId, Bytes)> {
        let (id, frames) = self.reading.as_mut()?;
        let id = *id;
        let next = frames.next().filter(|_| self.conns.contains_key(&id));
        match next {
            Some(frame) => {
                // Room for this read's UPDATEs at once: growing push by push would copy
                // each (several hundred octets) again and again; a quiet session keeps
                // no batch capacity between reads.
                if self.batch.capacity() == 0 {
                    self.batch.reserve((frames.len() + 1).min(UPDATE_BATCH));
                }
                Some((id, frame))
            }
            None => {
                self.reading = None;
                self.flush_batch();
                None
            }
        }
    }

    fn command(&mut self, cmd: SessionCmd) {
        let now = Instant::now();
        match cmd {
            SessionCmd::Start => self.fsm.handle(now, Input::ManualStart, &mut self.actions),
            SessionCmd::Stop(n) => self
                .fsm
                .handle(now, Input::ManualStop(n), &mut self.actions),
            SessionCmd::Accepted(stream) => {
                self.next_incoming = self.next_incoming.wrapping_add(1);
                let id = ConnId::incoming(self.next_incoming);
                if let Err(e) = transport::check_accepted_ttl(&stream, &self.config.transport) {
                    warn!(peer = %self.peer, error = %e, "refused a connection");
                    return;
                }
                if let Err(e) =
                    transport::apply_accepted(&stream, self.peer, &self.config.transport)
                {
                    warn!(peer = %self.peer, error = %e, "cannot set socket options on accepted connection");
                    return;
                }
                self.open_conn(id, stream);
                self.fsm
                    .handle(now, Input::TcpAccepted(id), &mut self.actions);
            }
            SessionCmd::SendRefresh(family, subtype) => {
                if let Some((id, _)) = self.established {
                    let msg = Message::RouteRefresh(RouteRefresh {
                        afi_safi: family.afi_safi(),
                        subtype,
                    });
                    if self.write(id, &msg) {
                        self.fsm
                            .handle(now, Input::RouteRefreshSent(id), &mut self.actions);
                    }
                }
            }
            SessionCmd::SetCapabilities(caps) => {
                if let Err(e) = self.fsm.set_local_capabilities(caps) {
                    warn!(peer = %self.peer, error = %e, "capabilities not changed");
                }
            }
            SessionCmd::Query(reply) => {
                let (local, remote) = match self
                    .established
                    .as_ref()
                    .and_then(|(id, _)| self.conns.get(id))
                {
                    Some(ConnIo::Open { local, remote, .. }) => (Some(*local), Some(*remote)),
                    _ => (None, None),
                };
                let _ = reply.send(SessionStatus {
                    state: self.fsm.state(),
                    established_since: self.fsm.established_since(),
                    last_error: self
                        .connect_error
                        .clone()
                        .or_else(|| self.fsm.last_error().map(ToString::to_string)),
                    stats: *self.fsm.stats(),
                    negotiated: self.fsm.negotiated().cloned(),
                    local,
                    remote,
                    idle_hold_until: self.fsm.idle_hold_until(),
                });
            }
            SessionCmd::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn conn_event(&mut self, ev: ConnEvent) {
        let now = Instant::now();
        match ev {
            ConnEvent::Connected(id, stream) => {
                if matches!(self.conns.get(&id), Some(ConnIo::Connecting(_))) {
                    self.open_conn(id, stream);
                    self.fsm
                        .handle(now, Input::TcpConnected(id), &mut self.actions);
                }
            }
            ConnEvent::ConnectFailed(id, e) => {
                if self.conns.remove(&id).is_some() {
                    debug!(peer = %self.peer, error = %e, "connect failed");
                    self.connect_error = Some(self.connect_failure(&e.to_string()));
                    self.fsm
                        .handle(now, Input::TcpFailed(id), &mut self.actions);
                }
            }
            ConnEvent::Closed(id, notification) => {
                if !self.conns.contains_key(&id) {
                    return;
                }
                match notification {
                    Some(n) => self
                        .fsm
                        .handle(now, Input::DecodeError(id, n), &mut self.actions),
                    None => {
                        self.drop_conn(id);
                        self.fsm
                            .handle(now, Input::TcpFailed(id), &mut self.actions);
                    }
                }
            }
            ConnEvent::TimedOut(id) => {
                if !self.conns.contains_key(&id) {
                    return;
                }
                let established = self.fsm.established_conn() == Some(id);
                let holdless =
                    established && self.fsm.negotiated().is_some_and(|n| n.hold_time == 0);
                self.drop_conn(id);
                self.fsm
                    .handle(now, Input::TcpFailed(id), &mut self.actions);
                if holdless {
                    self.connect_error = Some(format!(
                        "the peer acknowledged nothing for {}s (hold time 0: TCP keepalive ended the session)",
                        self.dead_peer_bound().as_secs()
                    ));
                }
                if !established {
                    self.connect_error = Some(unacked_text(
                        self.config.remote,
                        self.config.transport.ttl_security_hops,
                    ));
                }
            }
            ConnEvent::Written(id, t) => {
                for _ in 0..t.updates {
                    self.fsm
                        .handle(now, Input::UpdateSent(id), &mut self.actions);
                }
                for _ in 0..t.route_refreshes {
                    self.fsm
                        .handle(now, Input::RouteRefreshSent(id), &mut self.actions);
                }
            }
            // Decoded one at a time by `run`.
            ConnEvent::Frames(id, frames) => self.reading = Some((id, frames.into_iter())),
        }
    }

    /// Decode one frame of connection `id`, feed the FSM, pass UPDATEs on.
    fn frame(&mut self, id: ConnId, frame: &[u8]) {
        let now = Instant::now();
        let params = match self.established {
            Some((est, ref p)) if est == id => p.clone(),
            _ => CodecParams::default(),
        };
        let decoded = match wire::decode_message(frame, &params) {
            Ok(d) => d,
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "malformed message, closing the session");
                self.fsm.handle(
                    now,
                    Input::DecodeError(id, e.notification()),
                    &mut self.actions,
                );
                self.perform();
                return;
            }
        };
        for e in &decoded.attr_errors {
            warn!(peer = %self.peer, error = %e, "UPDATE error handled per RFC 7606");
        }
        let Some(msg) = decoded.message else {
            return;
        };
        self.fsm
            .handle(now, Input::Message(id, &msg), &mut self.actions);
        let to_rib = self.fsm.established_conn() == Some(id);
        match msg {
            Message::Update(u) if to_rib => {
                let local = match self.conns.get(&id) {
                    Some(ConnIo::Open { local, .. }) => Some(local.ip()),
                    _ => None,
                };
                let (u, extra, unusable) = withdraw_unusable_next_hops(u, local);
                for nh in unusable {
                    warn!(peer = %self.peer, next_hop = %nh, "next hop no router can use (RFC 4271 §6.3); its routes are treated as withdrawn");
                }
                self.batch.push(u);
                self.batch.extend(extra);
                if self.batch.len() >= UPDATE_BATCH {
                    self.flush_batch();
                }
            }
            Message::RouteRefresh(refresh) if to_rib => {
                self.flush_batch();
                self.report(SessionReport::RouteRefresh {
                    peer: self.peer,
                    refresh,
                });
            }
            _ => {}
        }
        // OPEN and KEEPALIVE move the FSM; act before the next frame so that the
        // negotiated parameters apply from the first UPDATE on.
        if !self.actions.is_empty() {
            self.perform();
        }
    }

    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.batch);
        self.report(SessionReport::Updates {
            peer: self.peer,
            updates,
        });
    }

    /// Carry out the FSM's actions: socket work at once, events for the core queued in
    /// order (see [`Session::deliver`]).
    fn perform(&mut self) {
        let actions = std::mem::take(&mut self.actions);
        for action in actions {
            match action {
                Action::Connect(id) => self.connect(id),
                Action::Send(id, msg) => {
                    self.write(id, &msg);
                }
                Action::Close(id) => self.close(id),
                Action::Established { conn, negotiated } => {
                    let Some(ConnIo::Open {
                        data_tx,
                        local,
                        remote,
                        ..
                    }) = self.conns.get(&conn)
                    else {
                        continue;
                    };
                    let (data, local, remote) = (data_tx.clone(), *local, *remote);
                    if negotiated.hold_time == 0 {
                        self.probe_dead_peer(conn);
                    }
                    self.established = Some((conn, negotiated.codec.clone()));
                    self.connect_error = None;
                    info!(peer = %self.peer, asn = %negotiated.peer_asn, id = %negotiated.peer_id, "session established");
                    self.outbox.push_back(SessionEvent::Established {
                        peer: self.peer,
                        negotiated: Box::new(negotiated),
                        local,
                        remote,
                        data,
                    });
                }
                Action::Down { reason, graceful } => {
                    self.flush_batch();
                    self.established = None;
                    info!(peer = %self.peer, %reason, graceful, "session down");
                    self.report(SessionReport::Down {
                        peer: self.peer,
                        reason,
                        graceful,
                    });
                }
                Action::StaleRoutesExpired => {
                    self.report(SessionReport::RestartTimeExpired { peer: self.peer });
                }
                Action::StateChanged { from, to } => {
                    debug!(peer = %self.peer, %from, %to, "state");
                    self.report(SessionReport::State {
                        peer: self.peer,
                        state: to,
                    });
                }
            }
        }
    }

    /// RFC 4271 §4.2: with hold time 0 neither side sends KEEPALIVEs and no hold timer
    /// runs, so only TCP can tell that the peer is gone: within our own configured hold
    /// time ([`transport::HOLDLESS_DEFAULT_BOUND`] when that is 0 too).
    fn probe_dead_peer(&mut self, id: ConnId) {
        let bound = self.dead_peer_bound();
        if let Some(ConnIo::Open { ctl, .. }) = self.conns.get(&id) {
            debug!(peer = %self.peer, ?bound, "hold time 0: TCP keepalive and user timeout");
            // A full control queue means the connection is being closed already.
            let _ = ctl.try_send(WriterMsg::DeadPeerBound(bound));
        }
    }

    fn dead_peer_bound(&self) -> Duration {
        match self.fsm.config().hold_time {
            0 => transport::HOLDLESS_DEFAULT_BOUND,
            h => Duration::from_secs(u64::from(h)),
        }
    }

    fn connect(&mut self, id: ConnId) {
        let remote = self.config.remote;
        let opts = self.config.transport.clone();
        let tx = self.conn_tx.clone();
        let task = tokio::spawn(async move {
            // A SYN that gets no answer is retried by the kernel for minutes; the FSM's
            // ConnectRetryTimer decides when to try again instead.
            let res =
                tokio::time::timeout(Duration::from_secs(30), transport::connect(remote, &opts))
                    .await;
            let ev = match res {
                Ok(Ok(stream)) => ConnEvent::Connected(id, stream),
                Ok(Err(e)) => ConnEvent::ConnectFailed(id, e),
                Err(_) => ConnEvent::ConnectFailed(
                    id,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                ),
            };
            let _ = tx.send(ev).await;
        });
        self.conns
            .insert(id, ConnIo::Connecting(task.abort_handle()));
    }

    fn open_conn(&mut self, id: ConnId, stream: TcpStream) {
        let (local, remote) = match (stream.local_addr(), stream.peer_addr()) {
            (Ok(l), Ok(r)) => (l, r),
            _ => {
                let _ = self.conn_tx.try_send(ConnEvent::Closed(id, None));
                return;
            }
        };
        let (rd, wr) = stream.into_split();
        let (ctl_tx, ctl_rx) = mailbox::channel(CTL_QUEUE);
        let (data_tx, data_rx) = mailbox::channel(DATA_QUEUE);
        let reader = tokio::spawn(read_frames(id, rd, self.conn_tx.clone()));
        let writer = tokio::spawn(write_loop(
            id,
            wr,
            ctl_rx,
            data_rx,
            self.conn_tx.clone(),
            self.drained.clone(),
        ));
        self.conns.insert(
            id,
            ConnIo::Open {
                ctl: ctl_tx,
                data_tx,
                reader: reader.abort_handle(),
                writer: Some(writer),
                local,
                remote,
            },
        );
    }

    /// Queue a control message on a connection; false when it could not be queued.
    fn write(&mut self, id: ConnId, msg: &Message) -> bool {
        let Some(ConnIo::Open { ctl, .. }) = self.conns.get(&id) else {
            return false;
        };
        let params = match self.established {
            Some((est, ref p)) if est == id => p.clone(),
            _ => CodecParams::default(),
        };
        let mut buf = BytesMut::with_capacity(64);
        if let Err(e) = wire::encode_message(msg, &params, &mut buf) {
            warn!(peer = %self.peer, error = %e, "cannot encode message");
            return false;
        }
        if ctl.try_send(WriterMsg::Bytes(buf.freeze())).is_err() {
            warn!(peer = %self.peer, "peer is not reading; closing the connection");
            let _ = self.conn_tx.try_send(ConnEvent::Closed(id, None));
            return false;
        }
        true
    }

    fn close(&mut self, id: ConnId) {
        if self.established.as_ref().is_some_and(|(e, _)| *e == id) {
            self.established = None;
        }
        match self.conns.remove(&id) {
            Some(ConnIo::Connecting(task)) => {
                task.abort();
                // The FSM gave up on an attempt nobody answered (§8.2.2 ConnectRetryTimer).
                self.connect_error = Some(self.connect_failure(
                    "no answer to the connection attempt within the connect-retry time",
                ));
            }
            Some(ConnIo::Open { ctl, reader, .. }) => {
                reader.abort();
                // After what is queued (the NOTIFICATION that ends the session).
                let _ = ctl.try_send(WriterMsg::Close);
            }
            None => {}
        }
    }

    /// What the status shows for a failed connection attempt. A TCP MD5 mismatch is
    /// invisible to both ends (RFC 2385 §2.0: the kernel drops unsigned or wrongly
    /// signed segments without an answer), so when a key is configured it is named as
    /// the likely cause of an unanswered attempt.
    fn connect_failure(&self, what: &str) -> String {
        connect_failure_text(
            self.config.remote,
            what,
            self.config.transport.md5_key.is_some(),
            self.config.transport.ttl_security_hops,
        )
    }

    /// Forget a connection that is already gone.
    fn drop_conn(&mut self, id: ConnId) {
        self.close(id);
    }

    fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }
}

fn connect_failure_text(remote: SocketAddr, what: &str, md5: bool, gtsm: Option<u8>) -> String {
    let unanswered = what.contains("no answer") || what.contains("timed out");
    let mut text = format!("connecting to {remote}: {what}");
    if unanswered && md5 {
        text.push_str(
            "; TCP MD5 is configured, and a missing or different password on the peer drops \
             our segments without an answer",
        );
    }
    if let (true, Some(hops)) = (unanswered, gtsm) {
        text.push_str(&format!(
            "; GTSM allows {hops} hop(s), and the kernel drops the answer of a peer further \
             away (RFC 5082)"
        ));
    }
    text
}

/// Whether a next hop is one no router can forward to: unspecified, loopback, multicast,
/// broadcast or reserved (IPv4 0/8 and 240/4), an IPv6 link-local address where a
/// global one belongs, an IPv4-mapped IPv6 address of any of those, or the receiving
/// speaker's own address (RFC 4271 §6.3). Loopback next hops are fine on a session that
/// itself runs over loopback addresses (speakers on one host, as in tests and labs).
fn unusable_next_hop(nh: IpAddr, local: Option<IpAddr>) -> bool {
    if Some(nh) == local {
        return true;
    }
    let on_loopback = local.is_some_and(|l| match l {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    });
    match nh {
        IpAddr::V4(a) => {
            let first = a.octets()[0];
            a.is_unspecified()
                || (a.is_loopback() && !on_loopback)
                || a.is_multicast()
                || a.is_broadcast()
                || first == 0
                || first >= 240
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => unusable_next_hop(IpAddr::V4(v4), local),
            None => {
                a.is_unspecified()
                    || (a.is_loopback() && !on_loopback)
                    || a.is_multicast()
                    || a.is_unicast_link_local()
            }
        },
    }
}

/// RFC 4271 §6.3: routes whose NEXT_HOP is semantically incorrect are not used, and no
/// NOTIFICATION is sent. They are turned into withdrawals (the treat-as-withdraw of
/// RFC 7606 §2), so that an earlier path of the peer for the same prefix goes too
/// instead of lingering. Returns the update, any extra update needed for withdrawals of
/// another family than the message's own MP_UNREACH_NLRI, and the next hops refused.
fn withdraw_unusable_next_hops(
    mut u: Update,
    local: Option<IpAddr>,
) -> (Update, Option<Update>, Vec<IpAddr>) {
    use crate::wire::attr::NextHop;
    use crate::wire::update::MpUnreach;
    let global = |nh: &NextHop| match nh {
        NextHop::V4(a) => IpAddr::V4(*a),
        NextHop::V6 { global, .. } => IpAddr::V6(*global),
    };
    // A peer reached over link-local addresses only (BGP unnumbered) may send `::` or
    // its link-local address as the global one, with the link-local beside it: usable.
    let link_local_only = |nh: &NextHop| match nh {
        NextHop::V6 {
            global,
            link_local: Some(ll),
        } => {
            (global.is_unspecified() || global.is_unicast_link_local())
                && ll.is_unicast_link_local()
        }
        _ => false,
    };
    let mut refused = Vec::new();
    let mut extra = None;
    if !u.nlri.is_empty() {
        if let Some(nh) = u
            .attrs
            .as_ref()
            .and_then(|a| a.next_hop.as_ref())
            .map(global)
        {
            if unusable_next_hop(nh, local) {
                refused.push(nh);
                let nlri = std::mem::take(&mut u.nlri);
                u.withdrawn.extend(nlri);
            }
        }
    }
    let bad_mp = u
        .mp_reach
        .as_ref()
        .filter(|r| !link_local_only(&r.next_hop))
        .map(|r| global(&r.next_hop))
        .filter(|nh| unusable_next_hop(*nh, local));
    if let Some((nh, reach)) = bad_mp.and_then(|nh| Some((nh, u.mp_reach.take()?))) {
        refused.push(nh);
        match &mut u.mp_unreach {
            Some(un) if un.afi_safi == reach.afi_safi => un.withdrawn.extend(reach.nlri),
            Some(_) => {
                extra = Some(Update {
                    mp_unreach: Some(MpUnreach {
                        afi_safi: reach.afi_safi,
                        withdrawn: reach.nlri,
                    }),
                    ..Update::default()
                })
            }
            None if reach.nlri.is_empty() => {}
            None => {
                u.mp_unreach = Some(MpUnreach {
                    afi_safi: reach.afi_safi,
                    withdrawn: reach.nlri,
                })
            }
        }
    }
    (u, extra, refused)
}

/// What the status shows when a connection that never got established timed out.
fn unacked_text(remote: SocketAddr, gtsm_hops: Option<u8>) -> String {
    match gtsm_hops {
        Some(hops) => format!(
            "connection with {remote} timed out before the session was up: nothing we sent \
             was acknowledged; GTSM allows {hops} hop(s), and the kernel drops everything \
             from a peer further away (RFC 5082)"
        ),
        None => format!(
            "connection with {remote} timed out before the session was up: nothing we sent \
             was acknowledged"
        ),
    }
}

/// Cut the stream into frames; the session decodes them.
async fn read_frames(id: ConnId, rd: OwnedReadHalf, tx: mailbox::Tx<ConnEvent>) {
    // Frames are cut with the largest length any session may negotiate (RFC 8654); the
    // session's decode checks each against what this one negotiated.
    let framing = CodecParams {
        extended_message: true,
        ..CodecParams::default()
    };
    let mut buf = ReadBuf::default();
    loop {
        // Wait with no buffer when nothing is half read: only the socket is held.
        let ready = rd.readable().await;
        let read = ready.and_then(|()| rd.try_read_buf(buf.prepare()));
        let n = match read {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                buf.release_if_empty();
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                let _ = tx.send(ConnEvent::TimedOut(id)).await;
                return;
            }
            Ok(0) | Err(_) => {
                let _ = tx.send(ConnEvent::Closed(id, None)).await;
                return;
            }
            Ok(n) => n,
        };
        buf.read(n);
        match buf.frames(&framing) {
            Ok(frames) => {
                if !frames.is_empty() && tx.send(ConnEvent::Frames(id, frames)).await.is_err() {
                    return;
                }
            }
            Err((frames, n)) => {
                if !frames.is_empty() {
                    let _ = tx.send(ConnEvent::Frames(id, frames)).await;
                }
                let _ = tx.send(ConnEvent::Closed(id, Some(n))).await;
                return;
            }
        }
    }
}

/// A connection's read buffer. It exists only while a read is under way or a frame is
/// half read: a connection whose last read ended on a frame boundary holds nothing, so
/// a reflector's thousand quiet clients cost no read memory between their keepalives.
/// While a load is on it grows from `READ_MIN` up to `READ_MAX` (see [`next_read_size`]).
#[derive(Default)]
struct ReadBuf {
    buf: BytesMut,
    size: usize,
    /// Free space offered to the read under way.
    offered: usize,
}

impl ReadBuf {
    /// The buffer to read into, with room for at least `READ_MIN` octets.
    fn prepare(&mut self) -> &mut BytesMut {
        self.size = self.size.max(READ_MIN);
        if self.buf.capacity() - self.buf.len() < READ_MIN {
            self.buf.reserve(self.size);
        }
        self.offered = self.buf.capacity() - self.buf.len();
        &mut self.buf
    }

    /// The read put `n` octets in.
    fn read(&mut self, n: usize) {
        self.size = next_read_size(self.size, n, self.offered);
    }

    /// Cut the complete frames off the front. During a load they keep their part of the
    /// allocation until decoded; otherwise (keepalives, a few UPDATEs) each is copied out
    /// at its own size, so that a 19-octet KEEPALIVE waiting to be decoded does not hold a
    /// 4 KiB buffer. On a framing error, the frames before it and the NOTIFICATION.
    #[allow(clippy::type_complexity)]
    fn frames(&mut self, framing: &CodecParams) -> Result<Vec<Bytes>, (Vec<Bytes>, Notification)> {
        let mut frames = Vec::new();
        loop {
            match header::frame(&self.buf, framing) {
                Ok(Frame::Complete { len, .. }) if self.size > READ_MIN => {
                    frames.push(self.buf.split_to(len).freeze());
                }
                Ok(Frame::Complete { len, .. }) => {
                    frames.push(Bytes::copy_from_slice(&self.buf[..len]));
                    self.buf.advance(len);
                }
                Ok(Frame::Incomplete { needed }) => {
                    if needed > self.buf.capacity() {
                        self.buf.reserve(needed - self.buf.len());
                    }
                    break;
                }
                Err(e) => return Err((frames, wire::error::DecodeError::from(e).notification())),
            }
        }
        self.release_if_empty();
        Ok(frames)
    }

    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.buf.capacity()
    }
}

/// The next read buffer size, from the last read: `n` octets where `offered` were free.
fn next_read_size(size: usize, n: usize, offered: usize) -> usize {
    if n >= offered {
        (size * 2).min(READ_MAX)
    } else if n < size / 4 {
        (size / 2).max(READ_MIN)
    } else {
        size
    }
}

/// Write control messages first, then the core's encoded UPDATEs.
async fn write_loop(
    id: ConnId,
    mut wr: OwnedWriteHalf,
    mut ctl: mailbox::Rx<WriterMsg>,
    mut data: mailbox::Rx<Bytes>,
    events: mailbox::Tx<ConnEvent>,
    drained: Arc<Notify>,
) {
    // What was written and not yet reported: reported once the queue is empty (or after
    // many), not per chunk, so that a load does not queue an event per chunk.
    let mut unreported = MessageTally::default();
    loop {
        let (msg, from_core) = tokio::select! {
            biased;
            m = ctl.recv() => (m, false),
            Some(b) = data.recv() => (Some(WriterMsg::Bytes(b)), true),
        };
        match msg {
            Some(WriterMsg::Bytes(b)) => {
                if wr.write_all(&b).await.is_err() {
                    let _ = events.send(ConnEvent::Closed(id, None)).await;
                    return;
                }
                if from_core {
                    let t = tally(&b);
                    unreported.updates += t.updates;
                    unreported.route_refreshes += t.route_refreshes;
                }
                if unreported != MessageTally::default()
                    && (data.len() == 0 || unreported.updates >= REPORT_WRITTEN_EVERY)
                {
                    let t = std::mem::take(&mut unreported);
                    let _ = events.send(ConnEvent::Written(id, t)).await;
                }
                if data.len() < DATA_QUEUE / 2 {
                    drained.notify_one();
                }
            }
            Some(WriterMsg::DeadPeerBound(bound)) => {
                if let Err(e) = transport::set_dead_peer_probe(wr.as_ref(), bound) {
                    warn!(error = %e, "cannot set TCP keepalive for a session without hold timer");
                }
            }
            Some(WriterMsg::Close) | None => {
                let _ = wr.shutdown().await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffer_grows_with_a_load_and_shrinks_after_it() {
        // Keepalives: stays small.
        assert_eq!(next_read_size(READ_MIN, 19, READ_MIN), READ_MIN);
        // Each read fills what was offered: doubles, up to the ceiling.
        let mut size = READ_MIN;
        for _ in 0..20 {
            size = next_read_size(size, size, size);
        }
        assert_eq!(size, READ_MAX);
        // A read that fills most of it keeps the size.
        assert_eq!(next_read_size(READ_MAX, READ_MAX / 2, READ_MAX), READ_MAX);
        // The load is over: halves back down to the floor.
        for _ in 0..20 {
            size = next_read_size(size, 19, size);
        }
        assert_eq!(size, READ_MIN);
    }

    #[tokio::test]
    async fn a_session_task_is_small() {
        use crate::fsm::FsmConfig;
        use crate::types::{Asn, RouterId};
        let fsm = PeerFsm::new(
            FsmConfig::new(
                Asn(64512),
                RouterId(std::net::Ipv4Addr::new(10, 0, 0, 1)),
                None,
            ),
            Vec::new(),
        )
        .unwrap();
        let config = SessionConfig {
            remote: "192.0.2.1:179".parse().unwrap(),
            transport: TransportOptions::default(),
        };
        let (events, _rx) = mpsc::channel(1);
        let (session, _cmd) = Session::new(config, fsm, events, Arc::new(Notify::new()));
        let task = Box::new(session).run();
        // What the task holds besides the boxed session: the futures it awaits (about 450
        // octets). Unboxed, the session was in the task twice, as the argument and as the
        // running state: 2 KiB. A reflector runs one per client, so every KiB here is a
        // MiB per thousand.
        let size = std::mem::size_of_val(&task);
        assert!(size < 640, "the session future is {size} octets");
    }

    #[test]
    fn a_connection_between_frames_holds_no_read_buffer() {
        let framing = CodecParams::default();
        let keepalive = msg(4, 0);
        let mut rb = ReadBuf::default();
        // A whole KEEPALIVE: handed over, nothing held afterwards.
        rb.prepare().extend_from_slice(&keepalive);
        rb.read(keepalive.len());
        assert_eq!(rb.frames(&framing).ok().map(|f| f.len()), Some(1));
        assert_eq!(rb.held(), 0);
        // Half of one: kept until the rest arrives.
        rb.prepare().extend_from_slice(&keepalive[..10]);
        rb.read(10);
        assert_eq!(rb.frames(&framing).ok().map(|f| f.len()), Some(0));
        assert!(rb.held() >= 10);
        rb.prepare().extend_from_slice(&keepalive[10..]);
        rb.read(keepalive.len() - 10);
        let frames = rb.frames(&framing).ok().unwrap_or_default();
        assert_eq!(frames, vec![Bytes::from(keepalive.clone())]);
        assert_eq!(rb.held(), 0);
        // A read that found nothing (a spurious wake-up) lets the buffer go too.
        rb.prepare();
        rb.release_if_empty();
        assert_eq!(rb.held(), 0);
    }

    #[test]
    fn small_reads_copy_their_frames_out_and_loads_do_not() {
        let framing = CodecParams::default();
        let keepalive = msg(4, 0);
        let two = [keepalive.clone(), keepalive.clone()].concat();
        // Quiet: the frame is a copy of its own size; the half frame behind it stays.
        let mut rb = ReadBuf::default();
        rb.prepare().extend_from_slice(&two[..30]);
        let base = rb.buf.as_ptr();
        rb.read(30);
        let frames = rb.frames(&framing).ok().unwrap_or_default();
        assert_eq!(frames.len(), 1);
        assert_ne!(
            frames[0].as_ptr(),
            base,
            "a KEEPALIVE must not pin the read buffer"
        );
        // A load (reads fill the buffer): frames are slices of it, no copy.
        let mut rb = ReadBuf::default();
        for _ in 0..3 {
            let n = rb.prepare().capacity();
            rb.read(n);
            rb.buf.clear();
        }
        assert!(rb.size > READ_MIN);
        rb.prepare().extend_from_slice(&two[..30]);
        let base = rb.buf.as_ptr();
        let frames = rb.frames(&framing).ok().unwrap_or_default();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].as_ptr(), base);
    }

    #[test]
    fn a_frame_longer_than_the_buffer_gets_room_for_all_of_it() {
        let framing = CodecParams {
            extended_message: true,
            ..CodecParams::default()
        };
        let big = msg(2, 3 * READ_MIN);
        let mut rb = ReadBuf::default();
        rb.prepare().extend_from_slice(&big[..100]);
        rb.read(100);
        assert_eq!(rb.frames(&framing).ok().map(|f| f.len()), Some(0));
        assert!(rb.held() >= big.len());
    }

    #[test]
    fn a_framing_error_gives_the_frames_before_it_and_a_notification() {
        let framing = CodecParams::default();
        let mut bad = msg(4, 0);
        bad[0] = 0; // marker broken
        let data = [msg(4, 0), bad].concat();
        let mut rb = ReadBuf::default();
        rb.prepare().extend_from_slice(&data);
        rb.read(data.len());
        let Err((frames, n)) = rb.frames(&framing) else {
            panic!("a broken marker must fail");
        };
        assert_eq!(frames.len(), 1);
        assert_eq!(n.code, 1); // Message Header Error
    }

    fn msg(kind: u8, body_len: usize) -> Vec<u8> {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((19 + body_len) as u16).to_be_bytes());
        m.push(kind);
        m.extend(std::iter::repeat_n(0, body_len));
        m
    }

    #[test]
    fn tally_counts_updates_and_route_refreshes_of_a_chunk() {
        let chunk = [msg(2, 4), msg(2, 30), msg(5, 4), msg(2, 0), msg(4, 0)].concat();
        assert_eq!(
            tally(&chunk),
            MessageTally {
                updates: 3,
                route_refreshes: 1
            }
        );
        assert_eq!(tally(&[]), MessageTally::default());
        // A cut-off tail is not counted twice nor read past.
        let mut cut = msg(2, 10);
        cut.truncate(25);
        assert_eq!(tally(&cut).updates, 1);
    }

    use crate::types::Family;
    use crate::wire::attr::{NextHop, PathAttrs};
    use crate::wire::update::{MpReach, MpUnreach, Nlri};

    fn nlri(p: &str) -> Nlri {
        Nlri::new(p.parse().unwrap())
    }

    fn v4_update(nh: &str) -> Update {
        Update {
            attrs: Some(PathAttrs {
                next_hop: Some(NextHop::V4(nh.parse().unwrap())),
                ..PathAttrs::default()
            }),
            nlri: vec![nlri("198.51.100.0/24")],
            ..Update::default()
        }
    }

    fn v6_reach(global: &str) -> MpReach {
        MpReach {
            afi_safi: Family::Ipv6Unicast.afi_safi(),
            next_hop: NextHop::V6 {
                global: global.parse().unwrap(),
                link_local: None,
            },
            nlri: vec![nlri("2001:db8:f2::/48")],
        }
    }

    #[test]
    fn martian_next_hops_are_refused() {
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.5",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "ff02::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                unusable_next_hop(bad.parse().unwrap(), Some(local)),
                "{bad} accepted"
            );
        }
        for good in ["192.0.2.2", "10.0.0.1", "2001:db8::2", "::ffff:192.0.2.2"] {
            assert!(
                !unusable_next_hop(good.parse().unwrap(), Some(local)),
                "{good} refused"
            );
        }
        // Speakers on one host: loopback is where the other one is.
        let lo: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(!unusable_next_hop("127.0.0.1".parse().unwrap(), Some(lo)));
        assert!(
            unusable_next_hop("127.0.0.2".parse().unwrap(), Some(lo)),
            "our own"
        );
    }

    #[test]
    fn routes_with_an_unusable_next_hop_become_withdrawals() {
        let (u, extra, refused) = withdraw_unusable_next_hops(v4_update("127.0.0.1"), None);
        assert!(u.nlri.is_empty());
        assert_eq!(u.withdrawn, vec![nlri("198.51.100.0/24")]);
        assert!(extra.is_none());
        assert_eq!(refused, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);

        let good = v4_update("192.0.2.2");
        let (u, _, refused) = withdraw_unusable_next_hops(good.clone(), None);
        assert_eq!(u, good);
        assert!(refused.is_empty());

        let mp = Update {
            mp_reach: Some(v6_reach("::1")),
            ..v4_update("192.0.2.2")
        };
        let (u, extra, _) = withdraw_unusable_next_hops(mp, None);
        assert!(u.mp_reach.is_none() && extra.is_none());
        assert_eq!(u.nlri, vec![nlri("198.51.100.0/24")], "the IPv4 part stays");
        assert_eq!(
            u.mp_unreach.map(|w| w.withdrawn),
            Some(vec![nlri("2001:db8:f2::/48")])
        );

        // Unnumbered: `::` with a link-local beside it is a usable next hop.
        let mut unnumbered = v6_reach("::");
        unnumbered.next_hop = NextHop::V6 {
            global: "::".parse().unwrap(),
            link_local: Some("fe80::2".parse().unwrap()),
        };
        let u = Update {
            mp_reach: Some(unnumbered),
            ..Update::default()
        };
        let (out, _, refused) = withdraw_unusable_next_hops(u.clone(), None);
        assert_eq!(out, u);
        assert!(refused.is_empty());
        // And a plain good IPv6 route is left alone.
        let u = Update {
            mp_reach: Some(v6_reach("2001:db8::2")),
            ..Update::default()
        };
        assert_eq!(withdraw_unusable_next_hops(u.clone(), None).0, u);

        // Another family already withdrawn in the same message: a second update.
        let both = Update {
            mp_reach: Some(v6_reach("fe80::1")),
            mp_unreach: Some(MpUnreach {
                afi_safi: Family::Ipv4Unicast.afi_safi(),
                withdrawn: vec![nlri("203.0.113.0/24")],
            }),
            ..Update::default()
        };
        let (u, extra, _) = withdraw_unusable_next_hops(both, None);
        assert_eq!(
            u.mp_unreach.map(|w| w.withdrawn),
            Some(vec![nlri("203.0.113.0/24")])
        );
        assert_eq!(
            extra.and_then(|e| e.mp_unreach).map(|w| w.withdrawn),
            Some(vec![nlri("2001:db8:f2::/48")])
        );
    }

    #[test]
    fn timed_out_connections_under_gtsm_name_the_hop_limit() {
        let remote: SocketAddr = "198.18.1.2:179".parse().unwrap();
        let t = unacked_text(remote, Some(1));
        assert!(
            t.contains("GTSM allows 1 hop") && t.contains("198.18.1.2"),
            "{t}"
        );
        assert!(!unacked_text(remote, None).contains("GTSM"));
    }

    #[test]
    fn unanswered_attempts_with_md5_name_the_password() {
        let remote: SocketAddr = "192.0.2.2:179".parse().unwrap();
        let t = connect_failure_text(remote, "connect timed out", true, None);
        assert!(t.contains("192.0.2.2:179") && t.contains("MD5"), "{t}");
        let t = connect_failure_text(remote, "no answer to the connection attempt", true, None);
        assert!(t.contains("MD5") && !t.contains("GTSM"), "{t}");
        let t = connect_failure_text(remote, "Connection refused (os error 111)", true, Some(1));
        assert!(
            !t.contains("MD5") && !t.contains("GTSM"),
            "a refusal is an answer: {t}"
        );
        let t = connect_failure_text(remote, "connect timed out", false, None);
        assert!(!t.contains("MD5"), "{t}");
        let t = connect_failure_text(
            remote,
            "Connection timed out (os error 110)",
            false,
            Some(2),
        );
        assert!(
            t.contains("GTSM allows 2 hop(s)") && !t.contains("MD5"),
            "{t}"
        );
    }
}
