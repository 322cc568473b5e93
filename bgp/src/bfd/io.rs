//! The BFD IO task: the sockets and the clock around the pure session table
//! (`table.rs`). The speaker's core starts it with the first peer that has BFD.
//!
//! ```text
//!  core ── BfdCmd (add, remove, query) ──┐
//!  reader task per receive socket ───────┼─► this task ──► Table (pure)
//!  table.next_deadline() ─ timer ────────┘       │  TableAction
//!                                                 ├─ Send: the session's socket, TTL 255
//!                                                 └─ Changed: to the core (RFC 5882)
//! ```
//!
//! Receiving: one socket per family and encapsulation, opened when a session first
//! needs it: UDP 3784 (RFC 5881 single hop) and 4784 (RFC 5883 multihop) on the
//! unspecified address, with IP_RECVTTL / IPV6_RECVHOPLIMIT so the table can check each
//! datagram's TTL. Each has a small reader task that hands datagrams over a channel.
//!
//! Sending: one socket per session, bound to a source port of its own in 49152–65535
//! and sending with TTL (Hop Limit) 255. RFC 5881 §4 wants a session's packets to come
//! from one source port and different sessions to use different ones (the peer may
//! demultiplex on it); a socket's source port is its bound port, so a shared sending
//! socket would need raw sockets to vary it. A socket per session costs a file
//! descriptor each, which is also how BIRD and FRR do it. Sending never waits: a packet
//! the socket cannot take now is dropped, as the network might have (BFD counts on a
//! multiplier of packets, not on each one).

use super::encap::{HopChoice, DEFAULT_MULTIHOP_MIN_TTL, SOURCE_PORTS, TTL};
use super::table::{Change, Order, PeerSpec, SessionView, Table, TableAction};
use super::Hop;
use bytes::BytesMut;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// What the core asks of the BFD task.
#[derive(Debug)]
pub(crate) enum BfdCmd {
    Order(Order),
    Query(oneshot::Sender<HashMap<IpAddr, SessionView>>),
}

/// The running task.
pub(crate) struct BfdHandle {
    pub cmd: mpsc::Sender<BfdCmd>,
    pub task: JoinHandle<()>,
}

/// Orders waiting for the task; a configuration adds every peer at once.
const CMD_QUEUE: usize = 4096;
/// Datagrams waiting between the readers and the task.
const RX_QUEUE: usize = 1024;

/// Start the task; its state changes go to `changes`. It ends (every session told
/// AdminDown first) when the handle's sender is dropped.
pub(crate) fn spawn(changes: mpsc::Sender<Change>) -> BfdHandle {
    let (cmd, cmd_rx) = mpsc::channel(CMD_QUEUE);
    let task = tokio::spawn(run(cmd_rx, changes));
    BfdHandle { cmd, task }
}

/// One datagram as a reader took it.
struct Datagram {
    from: IpAddr,
    port: u16,
    ttl: u8,
    len: usize,
    buf: [u8; 64],
}

struct Io {
    table: Table,
    /// Receive sockets' readers by (IPv4?, port).
    readers: HashMap<(bool, u16), JoinHandle<()>>,
    rx_tx: mpsc::Sender<Datagram>,
    /// Each session's sending socket.
    senders: HashMap<IpAddr, UdpSocket>,
    next_port: u16,
    changes: mpsc::Sender<Change>,
    out: Vec<TableAction>,
    buf: BytesMut,
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

async fn run(mut cmd_rx: mpsc::Receiver<BfdCmd>, changes: mpsc::Sender<Change>) {
    let (rx_tx, mut rx_rx) = mpsc::channel(RX_QUEUE);
    let s = seed();
    let span = *SOURCE_PORTS.end() - *SOURCE_PORTS.start();
    let mut io = Io {
        table: Table::new(s),
        readers: HashMap::new(),
        rx_tx,
        senders: HashMap::new(),
        next_port: SOURCE_PORTS.start() + (s % u64::from(span)) as u16,
        changes,
        out: Vec::new(),
        buf: BytesMut::with_capacity(64),
    };
    loop {
        let deadline = io.table.next_deadline();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            cmd = cmd_rx.recv() => match cmd {
                Some(c) => io.command(c),
                None => break,
            },
            Some(d) = rx_rx.recv() => {
                let now = Instant::now();
                if let Err(e) = io.table.receive(now, d.from, d.port, d.ttl, &d.buf[..d.len], &mut io.out) {
                    debug!(from = %d.from, port = d.port, error = %e, "BFD packet dropped");
                }
            }
            () = sleep => io.table.on_timer(Instant::now(), &mut io.out),
        }
        io.carry_out().await;
    }
    // The speaker stops: every peer learns it is administrative (RFC 5882 §3.2), so a
    // peer's BGP is not taken down by BFD while ours restarts gracefully.
    let peers: Vec<IpAddr> = io.senders.keys().copied().collect();
    for p in peers {
        io.table.remove(Instant::now(), p, &mut io.out);
    }
    io.carry_out().await;
    for (_, r) in io.readers.drain() {
        r.abort();
    }
}

impl Io {
    fn command(&mut self, c: BfdCmd) {
        let now = Instant::now();
        match c {
            BfdCmd::Order(Order::Add {
                peer,
                timers,
                passive,
                hop,
                source,
            }) => {
                let hop = match hop {
                    HopChoice::Fixed(h) => h,
                    HopChoice::Connected if crate::transport::on_link(peer) => Hop::Single,
                    HopChoice::Connected => Hop::Multi {
                        min_ttl: DEFAULT_MULTIHOP_MIN_TTL,
                    },
                };
                self.ensure_reader(peer.is_ipv4(), hop.port());
                if !self.senders.contains_key(&peer) {
                    match self.sender(peer, source) {
                        Ok(s) => {
                            self.senders.insert(peer, s);
                        }
                        Err(e) => {
                            warn!(%peer, error = %e, "no BFD socket for the peer");
                            return;
                        }
                    }
                }
                let spec = PeerSpec {
                    timers,
                    passive,
                    hop,
                };
                match self.table.add(now, peer, spec, &mut self.out) {
                    Ok(d) => info!(%peer, discriminator = d.get(), ?hop, "BFD session"),
                    Err(e) => warn!(%peer, error = %e, "BFD session refused"),
                }
            }
            BfdCmd::Order(Order::Remove(peer)) => {
                self.table.remove(now, peer, &mut self.out);
            }
            BfdCmd::Query(tx) => {
                let views = self
                    .senders
                    .keys()
                    .filter_map(|p| self.table.view(*p).map(|v| (*p, v)))
                    .collect();
                let _ = tx.send(views);
            }
        }
    }

    async fn carry_out(&mut self) {
        for a in std::mem::take(&mut self.out) {
            match a {
                TableAction::Send { peer, hop, packet } => {
                    let Some(sock) = self.senders.get(&peer) else {
                        continue;
                    };
                    self.buf.clear();
                    packet.encode(&mut self.buf);
                    let to = SocketAddr::new(peer, hop.port());
                    if let Err(e) = sock.try_send_to(&self.buf, to) {
                        debug!(%peer, error = %e, "BFD packet not sent");
                    }
                }
                TableAction::Changed(c) => {
                    info!(peer = %c.peer, from = %c.from, to = %c.to, diag = %c.diag, "BFD session state");
                    if self.changes.send(c).await.is_err() {
                        return;
                    }
                }
            }
        }
        // Sockets of removed sessions close once their last packet (AdminDown) went.
        if self.senders.len() != self.table.len() {
            let table = &self.table;
            self.senders.retain(|p, _| table.contains(*p));
        }
    }

    fn ensure_reader(&mut self, v4: bool, port: u16) {
        if self
            .readers
            .get(&(v4, port))
            .is_some_and(|r| !r.is_finished())
        {
            return;
        }
        match receive_socket(v4, port) {
            Ok(sock) => {
                let task = tokio::spawn(read_loop(Arc::new(sock), v4, port, self.rx_tx.clone()));
                self.readers.insert((v4, port), task);
            }
            Err(e) => warn!(port, v4, error = %e, "cannot receive BFD packets"),
        }
    }

    /// A socket of the session's own, bound to a free source port of the range.
    fn sender(&mut self, peer: IpAddr, source: Option<IpAddr>) -> io::Result<UdpSocket> {
        let span = u32::from(*SOURCE_PORTS.end() - *SOURCE_PORTS.start()) + 1;
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "every BFD source port is taken");
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *SOURCE_PORTS.end() {
                *SOURCE_PORTS.start()
            } else {
                port + 1
            };
            match send_socket(peer, source, port) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

fn set_int(fd: i32, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: a valid descriptor and a c_int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn receive_socket(v4: bool, port: u16) -> io::Result<UdpSocket> {
    let (domain, any) = if v4 {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    } else {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if v4 {
        set_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
    } else {
        s.set_only_v6(true)?;
        set_int(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            1,
        )?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(SocketAddr::new(any, port)))?;
    UdpSocket::from_std(s.into())
}

fn send_socket(peer: IpAddr, source: Option<IpAddr>, port: u16) -> io::Result<UdpSocket> {
    let v4 = peer.is_ipv4();
    let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let local = source.unwrap_or(if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    if v4 {
        s.set_ttl_v4(u32::from(TTL))?;
    } else {
        s.set_only_v6(true)?;
        s.set_unicast_hops_v6(u32::from(TTL))?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(SocketAddr::new(local, port)))?;
    UdpSocket::from_std(s.into())
}

async fn read_loop(sock: Arc<UdpSocket>, v4: bool, port: u16, tx: mpsc::Sender<Datagram>) {
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        loop {
            match sock.try_io(Interest::READABLE, || recv(&sock, v4)) {
                Ok(Some((from, ttl, len, buf))) => {
                    let d = Datagram {
                        from,
                        port,
                        ttl,
                        len,
                        buf,
                    };
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(port, error = %e, "BFD receive");
                    break;
                }
            }
        }
    }
}

/// One datagram with its TTL (Hop Limit); `None` for one that is not a BFD packet's
/// size or has no source we can answer. The TTL is 0 when the kernel gave none, which
/// no session accepts.
#[allow(clippy::type_complexity)]
fn recv(sock: &UdpSocket, v4: bool) -> io::Result<Option<(IpAddr, u8, usize, [u8; 64])>> {
    let mut buf = [0u8; 64];
    // SAFETY: plain C structs, zero is a valid value for each.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut cmsg = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: zero is a valid msghdr; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    // SAFETY: the socket is ours and every buffer of msg outlives the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut ttl = 0u8;
    // SAFETY: walking the control messages the kernel wrote into `cmsg`, by the macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if (v4 && level == libc::IPPROTO_IP && kind == libc::IP_TTL)
                || (!v4 && level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
                ttl = u8::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // SAFETY: the kernel filled `name` with an address of the socket's family.
    let from = unsafe {
        match i32::from(name.ss_family) {
            libc::AF_INET => {
                let a = &*(&name as *const _ as *const libc::sockaddr_in);
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                let a = &*(&name as *const _ as *const libc::sockaddr_in6);
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))
            }
            _ => return Ok(None),
        }
    };
    if n > buf.len() || msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Ok(None);
    }
    Ok(Some((from, ttl, n, buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sockets on loopback: what one sends arrives at the other with TTL 255 and
    /// its source port in the range.
    #[tokio::test]
    async fn a_session_socket_sends_with_ttl_255_from_the_range() {
        // Any free port stands for 3784 here (the test may not own it).
        let rx = receive_socket(true, 0).expect("a UDP socket on loopback");
        let to = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            rx.local_addr().unwrap().port(),
        );
        let mut io_ports = SOURCE_PORTS.start() + 77;
        let tx = loop {
            match send_socket(to.ip(), None, io_ports) {
                Ok(s) => break s,
                Err(_) => io_ports += 1,
            }
        };
        let src = tx.local_addr().unwrap().port();
        assert!(SOURCE_PORTS.contains(&src));
        tx.send_to(b"0123456789abcdef01234567", to).await.unwrap();
        rx.readable().await.unwrap();
        let got = rx.try_io(Interest::READABLE, || recv(&rx, true)).unwrap();
        let (from, ttl, len, _) = got.unwrap();
        assert_eq!((from, ttl, len), (to.ip(), TTL, 24));
    }
}
