//! The speaker's core task: the IO around `state::SpeakerState`, which owns the RIB and
//! the table of peers and makes every decision that spans sessions. This task takes the
//! inputs (the handle's commands, the sessions' events, accepted connections, its
//! timers), hands each to the state with the time, and carries out the effects: it
//! spawns and orders the session tasks, sets MD5 keys on the listeners, writes the
//! graceful-restart marker, answers the handle. It also pumps each peer's Adj-RIB-Out into
//! its socket as fast as the socket takes it and hands best-path changes to subscribers.
//!
//! ```text
//!  Speaker handle ── commands ────┐
//!  BFD task ──────── BFD changes ─┤
//!  session tasks ─── events ──────┤   core task           state.handle(now, event)
//!  accept tasks ──── connections ─┼─► (this file) ──────► SpeakerState (pure)
//!  state.next_deadline() ─ timer ─┘        ▲                   │ effects
//!                                          └───────────────────┘
//!  effects carried out: spawn/order sessions, MD5 keys, restart marker, BFD orders
//!  (the BFD task, `bfd/io.rs`, starts with the first peer that has BFD), answers;
//!  then each writer takes what the RIB has for it, subscribers the best-path changes
//! ```
//!
//! Which input it serves next and which timer is due is decided in `turn`, so that a
//! peer sending without pause delays the others, the listener and the timers by one
//! bounded turn at most.

use crate::bfd::io::{self as bfd_io, BfdCmd, BfdHandle};
use crate::bfd::table::Change;
use crate::config::SpeakerConfig;
use crate::rib::{BestChange, OutBody};
use crate::session::{self, SessionCmd, SessionEvent, SessionHandle, SessionReport};
use crate::speaker::{RouteQuery, SpeakerError};
use crate::status::{PeerStatus, RouteEntry};
use crate::transport;
use crate::types::Family;
use crate::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use crate::wire::{self, CodecParams, Message, Update};
use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use state::{Effect, Event, Order, Reply, SpeakerState};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::warn;
use turn::{Source, Turn};

mod bfd_link;
#[cfg(test)]
mod replay;
pub(crate) mod state;
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
    /// The timers' turn.
    Timers,
    Bfd(Change),
    /// The source was empty, or only woke the core (a timer, a drained writer queue).
    Nothing,
}

/// The speaker stops: gracefully (RFC 4724) or not, answering `done` once it has.
struct Stop {
    silent: bool,
    done: Option<oneshot::Sender<()>>,
}

pub(crate) enum Command {
    AddPeer(
        Box<crate::config::PeerConfig>,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
    UpdatePeer(
        Box<crate::config::PeerConfig>,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
    RemovePeer(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Announce(
        Box<crate::config::Announcement>,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
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

/// Where the answer to a command goes.
enum ReplyTo {
    Done(oneshot::Sender<Result<(), SpeakerError>>),
    Withdrawn(oneshot::Sender<Result<bool, SpeakerError>>),
    Subscribe(mpsc::Sender<Vec<BestChange>>, oneshot::Sender<()>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Routes(oneshot::Sender<Vec<RouteEntry>>),
    Shutdown(oneshot::Sender<()>),
}

/// An established connection's writer.
struct Established {
    data: crate::mailbox::Tx<Bytes>,
    codec: CodecParams,
    enhanced_route_refresh: bool,
    /// Encoded, not yet accepted by the writer's queue.
    backlog: VecDeque<Bytes>,
    /// Small sealed chunks gathered while the writer is busy with earlier ones: handed
    /// over as one once its queue is empty or this reaches [`CHUNK`]. A reflector
    /// passing routes on one by one would otherwise queue a chunk (an allocation, a
    /// queue slot, a write) per UPDATE per client.
    tail: BytesMut,
}

pub(crate) struct Core {
    state: SpeakerState,
    sessions: HashMap<IpAddr, SessionHandle>,
    writers: HashMap<IpAddr, Established>,
    /// Writers left with encoded chunks their queue could not take, with UPDATEs still
    /// pending in the RIB because of that, or holding a small chunk until the writer is
    /// idle: looked at again on every turn.
    unflushed: Vec<IpAddr>,
    cmd_rx: mpsc::Receiver<Command>,
    events_tx: mpsc::Sender<SessionEvent>,
    events_rx: mpsc::Receiver<SessionEvent>,
    accept_rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    listeners: Vec<Arc<TcpListener>>,
    accept_tasks: Vec<JoinHandle<()>>,
    drained: Arc<Notify>,
    subscribers: Vec<mpsc::Sender<Vec<BestChange>>>,
    effects: Vec<Effect>,
    /// The one buffer UPDATEs are encoded into, for one peer at a time (see
    /// [`Established::seal`]).
    scratch: BytesMut,
    /// The BFD task, once a peer has BFD.
    bfd: Option<BfdHandle>,
    bfd_tx: mpsc::Sender<Change>,
    bfd_rx: mpsc::Receiver<Change>,
}

fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        let marker = cfg
            .state_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(state::restart_marker(d)).ok());
        let restarting = state::restarting(&cfg, marker.as_deref(), wall_secs());
        let (bfd_tx, bfd_rx) = mpsc::channel(64);
        let mut effects = Vec::new();
        let started = SpeakerState::new(cfg, restarting, Instant::now(), &mut effects);
        let mut core = Core {
            state: match started {
                Ok(s) => s,
                Err(e) => {
                    for eff in effects {
                        if let Effect::RemoveRestartMarker { dir } = eff {
                            let _ = std::fs::remove_file(state::restart_marker(&dir));
                        }
                    }
                    return Err(e);
                }
            },
            sessions: HashMap::new(),
            writers: HashMap::new(),
            unflushed: Vec::new(),
            cmd_rx,
            events_tx,
            events_rx,
            accept_rx,
            listeners,
            accept_tasks,
            drained: Arc::new(Notify::new()),
            subscribers: Vec::new(),
            effects: Vec::new(),
            scratch: BytesMut::with_capacity(CHUNK + 4096),
            bfd: None,
            bfd_tx,
            bfd_rx,
        };
        let mut stream = None;
        for eff in effects {
            // Nothing at start-up stops the speaker or answers a command.
            let _ = core.apply(eff, &mut None, &mut stream);
        }
        Ok(core)
    }

    /// Sleep until a source has something, serve that, then give every source its turn
    /// (`turn`): a peer that keeps the event queue full delays the rest by one turn at
    /// most.
    pub(crate) async fn run(mut self) {
        loop {
            let deadline = self.state.next_deadline();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                biased;
                cmd = self.cmd_rx.recv() => Input::Command(cmd),
                Some(c) = self.bfd_rx.recv() => Input::Bfd(c),
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
                    Source::Timers => Input::Timers,
                };
                turn.served(!matches!(input, Input::Nothing | Input::Timers));
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
        let mut stream = None;
        let (ev, mut reply) = match input {
            Input::Command(None) => {
                return Err(Stop {
                    silent: false,
                    done: None,
                })
            }
            Input::Command(Some(cmd)) => {
                let (ev, to) = self.command(cmd);
                (ev, Some(to))
            }
            Input::Event(ev) => match self.session_event(ev) {
                Some(ev) => (ev, None),
                None => return Ok(()),
            },
            Input::Accepted(s, addr) => {
                stream = Some(s);
                (Event::Accepted(addr), None)
            }
            Input::Timers => (Event::Timers, None),
            Input::Bfd(c) => (Event::Bfd(c), None),
            Input::Nothing => return Ok(()),
        };
        let mut effects = std::mem::take(&mut self.effects);
        self.state.handle(Instant::now(), ev, &mut effects);
        let mut res = Ok(());
        for eff in effects.drain(..) {
            if let Err(stop) = self.apply(eff, &mut reply, &mut stream) {
                res = Err(stop);
            }
        }
        self.effects = effects;
        res
    }

    /// A command as the state's event, and where its answer goes.
    fn command(&mut self, cmd: Command) -> (Event, ReplyTo) {
        match cmd {
            Command::AddPeer(p, r) => (Event::AddPeer(p), ReplyTo::Done(r)),
            Command::UpdatePeer(p, r) => (Event::UpdatePeer(p), ReplyTo::Done(r)),
            Command::RemovePeer(a, r) => (Event::RemovePeer(a), ReplyTo::Done(r)),
            Command::Announce(a, r) => (Event::Announce(a), ReplyTo::Done(r)),
            Command::Withdraw(p, r) => (Event::Withdraw(p), ReplyTo::Withdrawn(r)),
            Command::Subscribe(tx, r) => (Event::Subscribe, ReplyTo::Subscribe(tx, r)),
            Command::Peers(r) => {
                let (tx, rx) = oneshot::channel();
                let _ = r.send(rx);
                (Event::Peers, ReplyTo::Peers(tx))
            }
            Command::Routes(q, r) => (Event::Routes(q), ReplyTo::Routes(r)),
            Command::Refresh(a, f, r) => (Event::Refresh(a, f), ReplyTo::Done(r)),
            Command::Reset(a, r) => (Event::Reset(a), ReplyTo::Done(r)),
            Command::Shutdown { graceful, done } => {
                (Event::Shutdown { graceful }, ReplyTo::Shutdown(done))
            }
        }
    }

    /// A session's report as the state's event; the writer of an established session
    /// stays here.
    fn session_event(&mut self, ev: SessionEvent) -> Option<Event> {
        Some(match ev {
            SessionEvent::Established {
                peer,
                negotiated,
                local,
                remote,
                data,
            } => {
                if !self.sessions.contains_key(&peer) {
                    return None;
                }
                self.writers.insert(
                    peer,
                    Established {
                        data,
                        codec: negotiated.codec.clone(),
                        enhanced_route_refresh: negotiated.enhanced_route_refresh,
                        backlog: VecDeque::new(),
                        tail: BytesMut::new(),
                    },
                );
                Event::Established {
                    peer,
                    negotiated,
                    local,
                    remote,
                    iface: transport::interface_of(local.ip()),
                }
            }
            SessionEvent::Report(r) => {
                if let SessionReport::Down { peer, .. } = &r {
                    self.writers.remove(peer);
                }
                Event::Session(r)
            }
        })
    }

    /// Carry out one effect. `reply`: where the command being handled is answered;
    /// `stream`: the connection being accepted.
    fn apply(
        &mut self,
        eff: Effect,
        reply: &mut Option<ReplyTo>,
        stream: &mut Option<TcpStream>,
    ) -> Result<(), Stop> {
        match eff {
            Effect::Spawn {
                peer,
                remote,
                transport,
                fsm,
            } => {
                let handle = session::spawn(
                    session::SessionConfig {
                        remote,
                        transport: *transport,
                    },
                    *fsm,
                    self.events_tx.clone(),
                    self.drained.clone(),
                );
                self.sessions.insert(peer, handle);
            }
            Effect::Session(peer, order) => {
                if let Some(s) = self.sessions.get(&peer) {
                    let cmd = match order {
                        Order::Start => SessionCmd::Start,
                        Order::Stop(n) => SessionCmd::Stop(n),
                        Order::Shutdown { silent } => SessionCmd::Shutdown { silent },
                        Order::SetCapabilities(c) => SessionCmd::SetCapabilities(c),
                        Order::SendRefresh(f, t) => SessionCmd::SendRefresh(f, t),
                    };
                    let _ = s.cmd.try_send(cmd);
                }
            }
            Effect::Forget(peer) => {
                self.sessions.remove(&peer);
                self.writers.remove(&peer);
            }
            Effect::Md5 { peer, key } => self.set_md5(peer, key.as_deref()),
            Effect::Send(peer, m) => {
                if let Some(w) = self.writers.get_mut(&peer) {
                    if let Err(e) = w.encode_message(&m, &mut self.scratch) {
                        warn!(%peer, error = %e, "cannot encode a message");
                    }
                    w.seal(&mut self.scratch);
                    self.unflushed.push(peer);
                }
            }
            Effect::HandOver(peer) => {
                if let (Some(s), Some(stream)) = (self.sessions.get(&peer), stream.take()) {
                    let _ = s.cmd.try_send(SessionCmd::Accepted(stream));
                }
            }
            Effect::WriteRestartMarker { dir } => {
                if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| {
                    std::fs::write(state::restart_marker(&dir), wall_secs().to_string())
                }) {
                    warn!(error = %e, "cannot record the graceful restart");
                }
            }
            Effect::RemoveRestartMarker { dir } => {
                let _ = std::fs::remove_file(state::restart_marker(&dir));
            }
            Effect::Bfd(order) => {
                let changes = self.bfd_tx.clone();
                let bfd = self.bfd.get_or_insert_with(|| bfd_io::spawn(changes));
                if bfd.cmd.try_send(BfdCmd::Order(order)).is_err() {
                    warn!("the BFD task is not taking orders");
                }
            }
            Effect::Reply(r) => self.answer(r, reply.take()),
            Effect::Exit { silent } => {
                let done = match reply.take() {
                    Some(ReplyTo::Shutdown(done)) => Some(done),
                    _ => None,
                };
                return Err(Stop { silent, done });
            }
        }
        Ok(())
    }

    fn answer(&mut self, r: Reply, to: Option<ReplyTo>) {
        match (r, to) {
            (Reply::Done(res), Some(ReplyTo::Done(tx))) => {
                let _ = tx.send(res);
            }
            (Reply::Withdrawn(res), Some(ReplyTo::Withdrawn(tx))) => {
                let _ = tx.send(res);
            }
            (Reply::Table(all), Some(ReplyTo::Subscribe(tx, done))) => {
                if tx.try_send(all).is_ok() {
                    self.subscribers.push(tx);
                }
                let _ = done.send(());
            }
            (Reply::Peers(rows), Some(ReplyTo::Peers(tx))) => self.peer_status(rows, tx),
            (Reply::Routes(routes), Some(ReplyTo::Routes(tx))) => {
                let _ = tx.send(routes);
            }
            (r, _) => warn!(reply = ?r, "an answer without its command"),
        }
    }

    /// Ask every session for its state off the core task (a session may be waiting for
    /// the core to take its events) and combine it with what the state knows.
    fn peer_status(&self, rows: Vec<state::StatusRow>, reply: oneshot::Sender<Vec<PeerStatus>>) {
        let now = Instant::now();
        let bfd = self.bfd.as_ref().map(|b| {
            let (tx, rx) = oneshot::channel();
            let _ = b.cmd.try_send(BfdCmd::Query(tx));
            rx
        });
        let mut pending = Vec::new();
        for row in rows {
            let (tx, rx) = oneshot::channel();
            if let Some(s) = self.sessions.get(&row.config.address) {
                let _ = s.cmd.try_send(SessionCmd::Query(tx));
            }
            pending.push((row, rx));
        }
        tokio::spawn(async move {
            let mut bfd = match bfd {
                Some(rx) => tokio::time::timeout(Duration::from_secs(2), rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default(),
                None => HashMap::new(),
            };
            let mut out = Vec::new();
            for (row, rx) in pending {
                let s = tokio::time::timeout(Duration::from_secs(2), rx)
                    .await
                    .ok()
                    .and_then(Result::ok);
                let b = bfd.remove(&row.config.address);
                out.push(state::status_of(row, s, b, now));
            }
            out.sort_by_key(|p| p.address);
            let _ = reply.send(out);
        });
    }

    async fn stop(mut self, stop: Stop) {
        self.shutdown(stop.silent).await;
        if let Some(done) = stop.done {
            let _ = done.send(());
        }
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

    // ---- output ----

    /// Move each established peer's pending Adj-RIB-Out into its socket, as much as the
    /// writer's queue takes; the rest stays pending (coalesced) in the RIB. Only the peers
    /// the RIB queued something for and those whose writer could not take everything last
    /// time are looked at: with a thousand clients, a change for one of them costs one
    /// peer's work, not a thousand lookups.
    fn pump_exports(&mut self) {
        let deferring = self.state.deferring();
        let mut todo = std::mem::take(&mut self.unflushed);
        todo.extend(self.state.take_export_queued());
        todo.sort_unstable();
        todo.dedup();
        for addr in todo {
            let Some(est) = self.writers.get_mut(&addr) else {
                continue;
            };
            // A writer still busy with our last small chunk: what changes meanwhile stays
            // pending in the RIB, where changes to one destination coalesce, and goes in
            // one chunk once the writer is idle.
            if !est.flush_backlog() || est.holding() {
                self.unflushed.push(addr);
                continue;
            }
            if deferring {
                continue;
            }
            let mut blocked = false;
            'families: for f in self.state.export_families(addr) {
                while self.state.export_pending(addr, f) {
                    for u in self.state.drain_export(addr, f, EXPORT_BUDGET) {
                        if let Err(e) = est.encode(&u, &mut self.scratch) {
                            warn!(peer = %addr, error = %e, "cannot encode an UPDATE; skipped");
                        }
                    }
                    if !est.flush_backlog() {
                        blocked = true;
                        break 'families;
                    }
                }
            }
            est.seal(&mut self.scratch);
            if !est.flush_backlog() || blocked || est.holding() {
                self.unflushed.push(addr);
            }
        }
    }

    fn pump_best(&mut self) {
        self.subscribers.retain(|s| !s.is_closed());
        if self.subscribers.is_empty() || self.subscribers.iter().any(|s| s.capacity() == 0) {
            return;
        }
        let changes = self.state.take_best_changes();
        if changes.is_empty() {
            return;
        }
        for s in &self.subscribers {
            let _ = s.try_send(changes.clone());
        }
    }

    async fn shutdown(&mut self, silent: bool) {
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
        for (_, session) in self.sessions.drain() {
            let _ = session.cmd.send(SessionCmd::Shutdown { silent }).await;
            tasks.push(session.task);
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        // The BFD task tells every peer AdminDown as it ends.
        if let Some(b) = self.bfd.take() {
            drop(b.cmd);
            let _ = tokio::time::timeout(Duration::from_secs(2), b.task).await;
        }
    }
}

impl Established {
    /// Encode one RIB output into the current chunk, in the core's one encoding buffer
    /// (`buf`), which holds this peer's chunk until [`Established::seal`].
    fn encode(
        &mut self,
        u: &crate::rib::OutUpdate,
        buf: &mut BytesMut,
    ) -> Result<(), wire::error::EncodeError> {
        match &u.body {
            OutBody::Announce { attrs, nlri } => {
                wire::pack_announce(u.family, attrs, nlri, &self.codec, buf)?;
            }
            OutBody::Withdraw { nlri } => {
                wire::pack_withdraw(u.family, nlri, &self.codec, buf)?;
            }
            // RFC 7313 §4: the re-sent table ends with End of Route Refresh; a plain
            // refresh (RFC 2918) has no end marker.
            OutBody::EndOfRefresh if self.enhanced_route_refresh => {
                let eorr = RouteRefresh {
                    afi_safi: u.family.afi_safi(),
                    subtype: RefreshSubtype::End,
                };
                wire::encode_message(&Message::RouteRefresh(eorr), &self.codec, buf)?;
            }
            OutBody::EndOfRefresh => {}
            OutBody::EndOfRib => {
                wire::encode_message(
                    &Message::Update(Update::end_of_rib(u.family)),
                    &self.codec,
                    buf,
                )?;
            }
        }
        if buf.len() >= CHUNK {
            self.seal(buf);
        }
        Ok(())
    }

    /// End the current chunk: `buf` is free for the next peer. No peer keeps an encoding
    /// buffer of its own, so a reflector's thousand clients cost one buffer, not a
    /// thousand. A full chunk goes to the backlog as an exact-size copy; a small one joins
    /// the [`Established::tail`].
    fn seal(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() {
            return;
        }
        if self.tail.is_empty() && buf.len() >= CHUNK {
            self.backlog.push_back(Bytes::copy_from_slice(buf));
        } else {
            self.tail.extend_from_slice(buf);
            if self.tail.len() >= CHUNK {
                self.cut_tail();
            }
        }
        buf.clear();
    }

    fn cut_tail(&mut self) {
        if !self.tail.is_empty() {
            self.backlog.push_back(Bytes::copy_from_slice(&self.tail));
            self.tail = BytesMut::new();
        }
    }

    /// Whether small chunks wait for the writer to be idle.
    fn holding(&self) -> bool {
        !self.tail.is_empty()
    }

    /// Hand chunks to the writer, and the tail once its queue is empty; false when its
    /// queue is full (more must wait).
    fn flush_backlog(&mut self) -> bool {
        loop {
            if self.backlog.is_empty() && self.holding() && self.data.queued() == 0 {
                self.cut_tail();
            }
            let Some(b) = self.backlog.pop_front() else {
                return true;
            };
            match self.data.try_send(b) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(b)) => {
                    self.backlog.push_front(b);
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    self.tail = BytesMut::new();
                    return false;
                }
            }
        }
    }

    fn encode_message(
        &mut self,
        m: &Message,
        buf: &mut BytesMut,
    ) -> Result<(), wire::error::EncodeError> {
        wire::encode_message(m, &self.codec, buf)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn established() -> (Established, crate::mailbox::Rx<Bytes>) {
        let (data, rx) = crate::mailbox::channel(session::DATA_QUEUE);
        let est = Established {
            data,
            codec: CodecParams::default(),
            enhanced_route_refresh: false,
            backlog: VecDeque::new(),
            tail: BytesMut::new(),
        };
        (est, rx)
    }

    fn seal(est: &mut Established, octets: &[u8]) {
        let mut buf = BytesMut::from(octets);
        est.seal(&mut buf);
        assert!(buf.is_empty(), "the shared buffer is free again");
    }

    #[tokio::test]
    async fn an_idle_writer_gets_a_chunk_at_once_and_a_busy_one_gets_them_joined() {
        let (mut est, mut rx) = established();
        // Idle writer: a lone UPDATE is not held back.
        seal(&mut est, b"one");
        assert!(est.flush_backlog());
        assert!(!est.holding());
        // The writer has not taken it yet: what follows waits, joined.
        seal(&mut est, b"two");
        seal(&mut est, b"three");
        assert!(est.flush_backlog());
        assert!(est.holding(), "held while the writer is busy");
        assert_eq!(rx.recv().await.as_deref(), Some(&b"one"[..]));
        // The writer took its chunk: the two held ones go as one.
        assert!(est.flush_backlog());
        assert!(!est.holding());
        assert_eq!(rx.recv().await.as_deref(), Some(&b"twothree"[..]));
        assert_eq!(rx.len(), 0);
    }

    #[tokio::test]
    async fn a_tail_that_reaches_a_chunk_goes_without_waiting() {
        let (mut est, mut rx) = established();
        seal(&mut est, b"busy");
        assert!(est.flush_backlog());
        let half = vec![7u8; CHUNK / 2];
        seal(&mut est, &half);
        seal(&mut est, &half);
        assert!(est.flush_backlog());
        assert!(!est.holding());
        assert_eq!(rx.recv().await.as_deref(), Some(&b"busy"[..]));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(CHUNK));
    }
}
