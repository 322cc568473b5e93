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
use crate::negotiate::Negotiated;
use crate::transport::{self, TransportOptions};
use crate::types::Family;
use crate::wire::header::{self, Frame};
use crate::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use crate::wire::{self, CodecParams, Message, Notification, Update};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
/// back to the small one once the load is over. A reflector's thousand quiet clients so
/// hold a few KiB each instead of a bulk buffer each.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 256 * 1024;
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
        data: mpsc::Sender<Bytes>,
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
    pub cmd: mpsc::Sender<SessionCmd>,
    pub task: JoinHandle<()>,
}

/// Start a peer's task. It stays Idle until `SessionCmd::Start`.
pub(crate) fn spawn(
    config: SessionConfig,
    fsm: PeerFsm,
    events: mpsc::Sender<SessionEvent>,
    drained: Arc<Notify>,
) -> SessionHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let session = Session {
        peer: config.remote.ip(),
        config,
        fsm,
        cmd_rx,
        events,
        conn_tx,
        conn_rx,
        conns: HashMap::new(),
        next_incoming: 0,
        established: None,
        drained,
        actions: Vec::new(),
        batch: Vec::new(),
        connect_error: None,
    };
    let task = tokio::spawn(session.run());
    SessionHandle { cmd: cmd_tx, task }
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
        ctl: mpsc::Sender<WriterMsg>,
        data_tx: mpsc::Sender<Bytes>,
        reader: AbortHandle,
        local: SocketAddr,
        remote: SocketAddr,
    },
}

struct Session {
    peer: IpAddr,
    config: SessionConfig,
    fsm: PeerFsm,
    cmd_rx: mpsc::Receiver<SessionCmd>,
    events: mpsc::Sender<SessionEvent>,
    conn_tx: mpsc::Sender<ConnEvent>,
    conn_rx: mpsc::Receiver<ConnEvent>,
    conns: HashMap<ConnId, ConnIo>,
    next_incoming: u32,
    /// The established connection and the parameters its messages are read with.
    established: Option<(ConnId, CodecParams)>,
    drained: Arc<Notify>,
    actions: Vec<Action>,
    batch: Vec<Update>,
    /// Why the last outgoing connection attempt failed, until a session is established:
    /// the FSM only knows that it failed, and an operator needs to know why.
    connect_error: Option<String>,
}

impl Session {
    async fn run(mut self) {
        loop {
            let deadline = self.fsm.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    None => { self.close_all(); return; }
                    Some(SessionCmd::Shutdown { silent }) => { self.shutdown(silent).await; return; }
                    Some(cmd) => self.command(cmd),
                },
                Some(ev) = self.conn_rx.recv() => self.conn_event(ev).await,
                () = sleep => {
                    self.fsm.on_timer(Instant::now(), &mut self.actions);
                }
            }
            self.perform().await;
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

    async fn conn_event(&mut self, ev: ConnEvent) {
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
            ConnEvent::Frames(id, frames) => {
                // Room for this read's UPDATEs at once: growing push by push would copy
                // each (several hundred octets) again and again; a quiet session keeps no
                // batch capacity between reads.
                let n = frames.len();
                for (i, frame) in frames.into_iter().enumerate() {
                    if !self.conns.contains_key(&id) {
                        break;
                    }
                    if self.batch.capacity() == 0 {
                        self.batch.reserve((n - i).min(UPDATE_BATCH));
                    }
                    self.frame(id, &frame).await;
                }
                self.flush_batch().await;
            }
        }
    }

    /// Decode one frame of connection `id`, feed the FSM, pass UPDATEs on.
    async fn frame(&mut self, id: ConnId, frame: &[u8]) {
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
                self.perform().await;
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
                    self.flush_batch().await;
                }
            }
            Message::RouteRefresh(refresh) if to_rib => {
                self.flush_batch().await;
                let _ = self
                    .events
                    .send(SessionEvent::Report(SessionReport::RouteRefresh {
                        peer: self.peer,
                        refresh,
                    }))
                    .await;
            }
            _ => {}
        }
        // OPEN and KEEPALIVE move the FSM; act before the next frame so that the
        // negotiated parameters apply from the first UPDATE on.
        if !self.actions.is_empty() {
            self.perform().await;
        }
    }

    async fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.batch);
        let _ = self
            .events
            .send(SessionEvent::Report(SessionReport::Updates {
                peer: self.peer,
                updates,
            }))
            .await;
    }

    async fn perform(&mut self) {
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
                    let _ = self
                        .events
                        .send(SessionEvent::Established {
                            peer: self.peer,
                            negotiated: Box::new(negotiated),
                            local,
                            remote,
                            data,
                        })
                        .await;
                }
                Action::Down { reason, graceful } => {
                    self.flush_batch().await;
                    self.established = None;
                    info!(peer = %self.peer, %reason, graceful, "session down");
                    let _ = self
                        .events
                        .send(SessionEvent::Report(SessionReport::Down {
                            peer: self.peer,
                            reason,
                            graceful,
                        }))
                        .await;
                }
                Action::StaleRoutesExpired => {
                    let _ = self
                        .events
                        .send(SessionEvent::Report(SessionReport::RestartTimeExpired {
                            peer: self.peer,
                        }))
                        .await;
                }
                Action::StateChanged { from, to } => {
                    debug!(peer = %self.peer, %from, %to, "state");
                    let _ = self
                        .events
                        .send(SessionEvent::Report(SessionReport::State {
                            peer: self.peer,
                            state: to,
                        }))
                        .await;
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
        let (ctl_tx, ctl_rx) = mpsc::channel(CTL_QUEUE);
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        let reader = tokio::spawn(read_frames(id, rd, self.conn_tx.clone()));
        tokio::spawn(write_loop(
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

    async fn shutdown(&mut self, silent: bool) {
        if !silent {
            self.fsm
                .handle(Instant::now(), Input::ManualStop(None), &mut self.actions);
            self.perform().await;
        }
        self.close_all();
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
async fn read_frames(id: ConnId, mut rd: OwnedReadHalf, tx: mpsc::Sender<ConnEvent>) {
    // Frames are cut with the largest length any session may negotiate (RFC 8654); the
    // session's decode checks each against what this one negotiated.
    let framing = CodecParams {
        extended_message: true,
        ..CodecParams::default()
    };
    let mut size = READ_MIN;
    let mut buf = BytesMut::with_capacity(size);
    loop {
        if buf.capacity() - buf.len() < READ_MIN {
            buf.reserve(size);
        }
        let offered = buf.capacity() - buf.len();
        let n = match rd.read_buf(&mut buf).await {
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
        size = next_read_size(size, n, offered);
        let mut frames = Vec::new();
        loop {
            match header::frame(&buf, &framing) {
                Ok(Frame::Complete { len, .. }) => frames.push(buf.split_to(len).freeze()),
                Ok(Frame::Incomplete { needed }) => {
                    if needed > buf.capacity() {
                        buf.reserve(needed - buf.len());
                    }
                    break;
                }
                Err(e) => {
                    if !frames.is_empty() {
                        let _ = tx.send(ConnEvent::Frames(id, frames)).await;
                    }
                    let n = wire::error::DecodeError::from(e).notification();
                    let _ = tx.send(ConnEvent::Closed(id, Some(n))).await;
                    return;
                }
            }
        }
        if !frames.is_empty() && tx.send(ConnEvent::Frames(id, frames)).await.is_err() {
            return;
        }
        // The load is over and nothing is left over: let go of the big buffer (the
        // frames handed over keep their part of it until decoded).
        if size == READ_MIN && buf.is_empty() && buf.capacity() > 2 * READ_MIN {
            buf = BytesMut::with_capacity(READ_MIN);
        }
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
    mut ctl: mpsc::Receiver<WriterMsg>,
    mut data: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<ConnEvent>,
    drained: Arc<Notify>,
) {
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
                    if t != MessageTally::default() {
                        let _ = events.send(ConnEvent::Written(id, t)).await;
                    }
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
