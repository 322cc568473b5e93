//! The route reflector's clients: one tokio runtime holding every iBGP session, each
//! from its own source address, each announcing its own /26 and counting the other
//! clients' /26s it holds.
//!
//! ```text
//!   runner (sync) ── Cmd ──▶ client task i ──▶ TCP from 198.18.0.(i+1) to the reflector
//!        ▲                       │
//!        └──── Board (atomics) ◀─┘  holders per prefix, clients complete, sessions up
//! ```
//!
//! Every session is sent with TTL 255, as serval nodes on one subnet do (GTSM).
//!
//! Received UPDATEs are read with a scan of the classic withdrawn and NLRI fields (RFC
//! 4271 §4.3), which is all an IPv4 unicast reflector sends; an UPDATE carrying
//! MP_REACH or MP_UNREACH goes through serval's full decoder instead. The scan keeps the
//! clients cheap: the time measured is the reflector's. What the clients send is encoded
//! with serval's codec.

use crate::peer::mono_ns;
use bgp::types::{AfiSafi, Asn, RouterId};
use bgp::wire::attr::{AsPath, NextHop, Origin, PathAttrs};
use bgp::wire::capability::GracefulRestartFamily;
use bgp::wire::{
    decode_message, encode_message, frame, Capability, CodecParams, Frame, Message, Nlri, Open,
    Update,
};
use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// The clients' AS and the reflector's: one iBGP cluster, as serval's default.
pub const CLUSTER_AS: u32 = 64512;
/// The clients' blocks are cut in order from this /16.
pub const BLOCKS: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 0);
pub const BLOCK_LEN: u8 = 26;
/// The link's subnet (RFC 2544's benchmark range) and the reflector's address on it.
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub const SUBNET_LEN: u8 = 16;
pub const REFLECTOR: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 254);
/// Room in 10.64.0.0/16 for this many /26s.
pub const MAX_CLIENTS: usize = 1024;

/// Client `i`'s address: 198.18.0.1, 198.18.0.2, …
pub fn client_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SUBNET) + i as u32 + 1)
}

/// Client `i`'s block: 10.64.0.0/26, 10.64.0.64/26, …
pub fn client_block(i: usize) -> Ipv4Net {
    let a = Ipv4Addr::from(u32::from(BLOCKS) + (i as u32) * 64);
    // A /26 at a multiple of 64 is always a valid network.
    Ipv4Net::new(a, BLOCK_LEN).unwrap_or_else(|_| Ipv4Net::default())
}

/// The client whose block `addr/len` is, if it is one of the `n` blocks.
pub fn block_index(addr: u32, len: u8, n: usize) -> Option<usize> {
    if len != BLOCK_LEN {
        return None;
    }
    let off = addr.checked_sub(u32::from(BLOCKS))?;
    let k = (off >> 6) as usize;
    (off & 63 == 0 && k < n).then_some(k)
}

/// What the runner asks of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Close the connection without a NOTIFICATION, as the kernel does for an agent
    /// that is killed, forget what was received, and connect again at once (the OPEN
    /// then says Restart State).
    Drop,
    /// Withdraw the client's block.
    Withdraw,
    /// Announce it again.
    Announce,
}

/// What every client reports, read by the runner.
#[derive(Debug)]
pub struct Board {
    pub n: usize,
    /// Per block: how many clients (other than its owner) hold it.
    holders: Vec<AtomicU32>,
    /// Clients holding all `n - 1` other blocks.
    complete: AtomicUsize,
    /// Sessions Established now.
    established: AtomicUsize,
    /// [`mono_ns`] of the first connection attempt; 0 until then.
    first_connect_ns: AtomicU64,
    /// Drops carried out (the client forgot its routes and closed).
    drops: AtomicUsize,
    /// UPDATEs received, by every client.
    updates: AtomicU64,
    /// Sessions the reflector closed (or sent a NOTIFICATION on) once Established.
    lost: AtomicUsize,
    last_loss: Mutex<String>,
    failures: Mutex<Vec<String>>,
}

impl Board {
    fn new(n: usize) -> Board {
        Board {
            n,
            holders: (0..n).map(|_| AtomicU32::new(0)).collect(),
            complete: AtomicUsize::new(0),
            established: AtomicUsize::new(0),
            first_connect_ns: AtomicU64::new(0),
            drops: AtomicUsize::new(0),
            updates: AtomicU64::new(0),
            lost: AtomicUsize::new(0),
            last_loss: Mutex::new(String::new()),
            failures: Mutex::new(Vec::new()),
        }
    }

    pub fn holders(&self, block: usize) -> u32 {
        self.holders
            .get(block)
            .map_or(0, |h| h.load(Ordering::Acquire))
    }

    pub fn complete(&self) -> usize {
        self.complete.load(Ordering::Acquire)
    }

    pub fn established(&self) -> usize {
        self.established.load(Ordering::Acquire)
    }

    pub fn first_connect_ns(&self) -> u64 {
        self.first_connect_ns.load(Ordering::Acquire)
    }

    pub fn drops(&self) -> usize {
        self.drops.load(Ordering::Acquire)
    }

    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Sessions the reflector ended after they were Established.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::Acquire)
    }

    /// Why the last of them ended.
    pub fn last_loss(&self) -> String {
        self.last_loss.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every client has every other client's block and its session is up.
    pub fn converged(&self) -> bool {
        self.complete() == self.n && self.established() == self.n
    }

    /// The first failures reported (a session lost, a NOTIFICATION, a refused bind).
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            if f.len() < 10 {
                f.push(what);
            }
        }
    }
}

/// One client's received blocks, mirrored into the [`Board`].
struct Held<'a> {
    me: usize,
    board: &'a Board,
    has: Vec<bool>,
    count: usize,
}

impl<'a> Held<'a> {
    fn new(me: usize, board: &'a Board) -> Self {
        Held {
            me,
            board,
            has: vec![false; board.n],
            count: 0,
        }
    }

    fn full(&self) -> usize {
        self.board.n - 1
    }

    fn add(&mut self, k: usize) {
        if k == self.me || self.has[k] {
            return;
        }
        self.has[k] = true;
        self.count += 1;
        self.board.holders[k].fetch_add(1, Ordering::AcqRel);
        if self.count == self.full() {
            self.board.complete.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn remove(&mut self, k: usize) {
        if k == self.me || !self.has[k] {
            return;
        }
        if self.count == self.full() {
            self.board.complete.fetch_sub(1, Ordering::AcqRel);
        }
        self.has[k] = false;
        self.count -= 1;
        self.board.holders[k].fetch_sub(1, Ordering::AcqRel);
    }

    fn clear(&mut self) {
        for k in 0..self.has.len() {
            self.remove(k);
        }
    }
}

/// Why a client's session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the reflector closed the connection")]
    Closed,
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("the reflector sent a NOTIFICATION: {0}")]
    Notification(String),
    #[error("expected {0}")]
    Unexpected(&'static str),
    #[error("encoding: {0}")]
    Encode(#[from] bgp::wire::EncodeError),
    #[error("no OPEN and KEEPALIVE from the reflector within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
}

/// A connection attempt whose handshake (TCP, OPEN, KEEPALIVE) is not through by then is
/// closed and made again, as a speaker's ConnectRetry timer does. Short, so that a
/// handshake the reflector's kernel dropped at a full listen queue costs a second, not
/// TCP's retransmission back-off (which grows to minutes).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The parameters every session shares.
#[derive(Clone, Debug)]
pub struct ClientsSpec {
    pub n: usize,
    pub reflector: Ipv4Addr,
    pub hold_time: u16,
    /// How long a client keeps trying to establish before it reports a failure.
    pub connect_timeout: Duration,
}

/// The running clients.
pub struct Clients {
    rt: Option<tokio::runtime::Runtime>,
    board: Arc<Board>,
    cmds: Vec<mpsc::Sender<Cmd>>,
}

impl Clients {
    /// Builds the runtime on a thread inside the clients' namespace (its worker threads,
    /// where every socket is made, are born there too) and starts every client.
    pub fn start(
        ns: &serval_integration::netns::NsHandle,
        spec: ClientsSpec,
    ) -> Result<Clients, String> {
        let rt = ns
            .in_thread(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("rr-client")
                    .enable_all()
                    .build()
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the clients' runtime: {e}"))?;
        let board = Arc::new(Board::new(spec.n));
        let spec = Arc::new(spec);
        let mut cmds = Vec::with_capacity(spec.n);
        for i in 0..spec.n {
            let (tx, rx) = mpsc::channel(8);
            cmds.push(tx);
            rt.spawn(client(i, spec.clone(), board.clone(), rx));
        }
        Ok(Clients {
            rt: Some(rt),
            board,
            cmds,
        })
    }

    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Sends `cmd` to client `i`; false when that client has ended.
    pub fn send(&self, i: usize, cmd: Cmd) -> bool {
        self.cmds
            .get(i)
            .is_some_and(|tx| tx.blocking_send(cmd).is_ok())
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.cmds.clear();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// How a session ended without failing.
enum Ended {
    Dropped,
    Shutdown,
    /// The reflector closed it or sent a NOTIFICATION once it was Established: the
    /// client connects again, as a BGP speaker would, and the loss is counted.
    Lost(ClientError),
}

async fn client(
    i: usize,
    spec: Arc<ClientsSpec>,
    board: Arc<Board>,
    mut cmds: mpsc::Receiver<Cmd>,
) {
    let mut restarted = false;
    loop {
        let mut held = Held::new(i, &board);
        let r = session(i, &spec, &board, &mut cmds, &mut held, restarted).await;
        held.clear();
        match r {
            Ok(Ended::Dropped) => restarted = true,
            Ok(Ended::Shutdown) => return,
            Ok(Ended::Lost(e)) => {
                board.lost.fetch_add(1, Ordering::AcqRel);
                if let Ok(mut l) = board.last_loss.lock() {
                    *l = format!("client {}: {e}", client_addr(i));
                }
                restarted = false;
            }
            Err(e) => {
                board.fail(format!("client {}: {e}", client_addr(i)));
                return;
            }
        }
    }
}

/// Our OPEN: what a serval node sends (IPv4 unicast, route refresh, 4-octet AS, graceful
/// restart with the N bit and 120 s), with Restart State after a drop.
pub fn open(i: usize, hold_time: u16, restarted: bool) -> Open {
    let v4 = AfiSafi::new(1, 1);
    Open::new(
        Asn(CLUSTER_AS),
        hold_time,
        RouterId(client_addr(i)),
        vec![
            Capability::Multiprotocol(v4),
            Capability::RouteRefresh,
            Capability::FourOctetAsn(Asn(CLUSTER_AS)),
            Capability::GracefulRestart {
                restart_state: restarted,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi_safi: v4,
                    forwarding_preserved: restarted,
                }],
            },
        ],
    )
}

/// Client `i`'s announcement: its block, next hop itself, LOCAL_PREF 100, no
/// communities (serval's agent puts none on its blocks unless `prefixAdvertisements`
/// asks for some).
pub fn announcement(i: usize) -> Update {
    Update {
        attrs: Some(PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop: Some(NextHop::V4(client_addr(i))),
            local_pref: Some(100),
            ..PathAttrs::default()
        }),
        nlri: vec![Nlri::new(IpNet::V4(client_block(i)))],
        ..Update::default()
    }
}

pub fn withdrawal(i: usize) -> Update {
    Update {
        withdrawn: vec![Nlri::new(IpNet::V4(client_block(i)))],
        ..Update::default()
    }
}

fn encode(msgs: &[Message], params: &CodecParams) -> Result<BytesMut, ClientError> {
    let mut b = BytesMut::new();
    for m in msgs {
        encode_message(m, params, &mut b)?;
    }
    Ok(b)
}

async fn next_frame(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    params: &CodecParams,
) -> Result<Bytes, ClientError> {
    loop {
        match frame(&buf[..], params).map_err(|e| ClientError::Decode(e.to_string()))? {
            Frame::Complete { len, .. } => return Ok(buf.split_to(len).freeze()),
            Frame::Incomplete { needed } => {
                buf.reserve(needed.max(64 * 1024));
                if s.read_buf(buf).await? == 0 {
                    return Err(ClientError::Closed);
                }
            }
        }
    }
}

/// Connects from the client's address and exchanges OPEN and KEEPALIVE.
async fn establish(
    i: usize,
    spec: &ClientsSpec,
    board: &Board,
    restarted: bool,
) -> Result<(TcpStream, BytesMut, CodecParams), ClientError> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(client_addr(i).into(), 0))?;
    // GTSM (RFC 5082): serval nodes on one subnet send with TTL 255 and require it.
    set_ttl_255(&sock)?;
    let _ =
        board
            .first_connect_ns
            .compare_exchange(0, mono_ns(), Ordering::AcqRel, Ordering::Acquire);
    let mut s = sock
        .connect(SocketAddr::new(spec.reflector.into(), 179))
        .await?;
    s.set_nodelay(true)?;
    let ours = open(i, spec.hold_time, restarted);
    let plain = CodecParams::default();
    s.write_all(&encode(&[Message::Open(ours.clone())], &plain)?)
        .await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let remote = loop {
        let f = next_frame(&mut s, &mut buf, &plain).await?;
        match decode(&f, &plain)? {
            Some(Message::Open(o)) => break o,
            Some(Message::Keepalive) | None => {}
            Some(_) => return Err(ClientError::Unexpected("OPEN")),
        }
    };
    let params = CodecParams::negotiate(&ours, &remote, false);
    s.write_all(&encode(&[Message::Keepalive], &params)?)
        .await?;
    loop {
        let f = next_frame(&mut s, &mut buf, &params).await?;
        match decode(&f, &params)? {
            Some(Message::Keepalive) => break,
            None => {}
            Some(_) => return Err(ClientError::Unexpected("KEEPALIVE")),
        }
    }
    Ok((s, buf, params))
}

fn set_ttl_255(sock: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ttl: libc::c_int = 255;
    // SAFETY: setsockopt on a socket we own, with a c_int option value and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_TTL,
            (&ttl as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn decode(f: &[u8], params: &CodecParams) -> Result<Option<Message>, ClientError> {
    match decode_message(f, params)
        .map_err(|e| ClientError::Decode(e.to_string()))?
        .message
    {
        Some(Message::Notification(n)) => Err(ClientError::Notification(n.to_string())),
        m => Ok(m),
    }
}

async fn session(
    i: usize,
    spec: &ClientsSpec,
    board: &Board,
    cmds: &mut mpsc::Receiver<Cmd>,
    held: &mut Held<'_>,
    restarted: bool,
) -> Result<Ended, ClientError> {
    // The reflector may not take connections yet (a daemon still reading its
    // configuration refuses or closes): try again until the deadline.
    let deadline = tokio::time::Instant::now() + spec.connect_timeout;
    let (mut s, mut buf, params) = loop {
        let attempt = tokio::time::timeout(HANDSHAKE_TIMEOUT, establish(i, spec, board, restarted));
        let r = match attempt.await {
            Ok(r) => r,
            Err(_) => Err(ClientError::HandshakeTimeout),
        };
        match r {
            Ok(x) => break x,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50 + (i % 50) as u64)).await,
        }
    };
    board.established.fetch_add(1, Ordering::AcqRel);
    let r = established(
        i,
        board,
        cmds,
        held,
        &mut s,
        &mut buf,
        &params,
        spec.hold_time,
    )
    .await;
    board.established.fetch_sub(1, Ordering::AcqRel);
    held.clear();
    match r {
        Ok(Ended::Dropped) => {
            board.drops.fetch_add(1, Ordering::AcqRel);
            Ok(Ended::Dropped)
        }
        Ok(e) => Ok(e),
        // Encoding our own messages cannot fail for the peer's doing: that is a bug here.
        Err(e @ ClientError::Encode(_)) => Err(e),
        Err(e) => Ok(Ended::Lost(e)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn established(
    i: usize,
    board: &Board,
    cmds: &mut mpsc::Receiver<Cmd>,
    held: &mut Held<'_>,
    s: &mut TcpStream,
    buf: &mut BytesMut,
    params: &CodecParams,
    hold_time: u16,
) -> Result<Ended, ClientError> {
    let eor = Update::end_of_rib(bgp::types::Family::Ipv4Unicast);
    s.write_all(&encode(
        &[Message::Update(announcement(i)), Message::Update(eor)],
        params,
    )?)
    .await?;
    let every = Duration::from_secs(u64::from(hold_time / 3).max(1));
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            f = next_frame(s, buf, params) => {
                let f = f?;
                match f.get(18) {
                    Some(2) => {
                        board.updates.fetch_add(1, Ordering::Relaxed);
                        apply_update(&f, params, board.n, held)?;
                    }
                    Some(3) => {
                        decode(&f, params)?;
                    }
                    _ => {}
                }
            }
            _ = keepalive.tick() => {
                s.write_all(&encode(&[Message::Keepalive], params)?).await?;
            }
            c = cmds.recv() => match c {
                Some(Cmd::Drop) => return Ok(Ended::Dropped),
                Some(Cmd::Withdraw) => {
                    s.write_all(&encode(&[Message::Update(withdrawal(i))], params)?).await?;
                }
                Some(Cmd::Announce) => {
                    s.write_all(&encode(&[Message::Update(announcement(i))], params)?).await?;
                }
                None => return Ok(Ended::Shutdown),
            },
        }
    }
}

/// Applies one UPDATE (the whole message, header included) to `held`.
fn apply_update(
    f: &[u8],
    params: &CodecParams,
    n: usize,
    held: &mut Held<'_>,
) -> Result<(), ClientError> {
    match scan_update(&f[19..], n) {
        Some(Scan::Classic {
            withdrawn,
            announced,
        }) => {
            for k in withdrawn {
                held.remove(k);
            }
            for k in announced {
                held.add(k);
            }
        }
        Some(Scan::Multiprotocol) => {
            if let Some(Message::Update(u)) = decode(f, params)? {
                let idx = |p: &IpNet| match p {
                    IpNet::V4(p) => block_index(u32::from(p.network()), p.prefix_len(), n),
                    IpNet::V6(_) => None,
                };
                let gone = u
                    .withdrawn
                    .iter()
                    .chain(u.mp_unreach.iter().flat_map(|m| m.withdrawn.iter()));
                for k in gone.filter_map(|x| idx(&x.prefix)) {
                    held.remove(k);
                }
                let new = u
                    .nlri
                    .iter()
                    .chain(u.mp_reach.iter().flat_map(|m| m.nlri.iter()));
                for k in new.filter_map(|x| idx(&x.prefix)) {
                    held.add(k);
                }
            }
        }
        None => return Err(ClientError::Decode("UPDATE lengths do not add up".into())),
    }
    Ok(())
}

/// What [`scan_update`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Blocks withdrawn and announced in the classic fields (others' prefixes skipped).
    Classic {
        withdrawn: Vec<usize>,
        announced: Vec<usize>,
    },
    /// The UPDATE has MP_REACH_NLRI or MP_UNREACH_NLRI: decode it in full.
    Multiprotocol,
}

/// Reads an UPDATE's body (after the 19-octet header) without decoding its attributes
/// (RFC 4271 §4.3): withdrawn routes, the attributes' types only, NLRI. `None` when the
/// lengths are inconsistent.
pub fn scan_update(body: &[u8], n: usize) -> Option<Scan> {
    let wlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let withdrawn = prefixes(body.get(2..2 + wlen)?, n)?;
    let at = 2 + wlen;
    let alen = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let mut attrs = body.get(at + 2..at + 2 + alen)?;
    while !attrs.is_empty() {
        let flags = *attrs.first()?;
        let kind = *attrs.get(1)?;
        if kind == 14 || kind == 15 {
            return Some(Scan::Multiprotocol);
        }
        let (len, hdr) = if flags & 0x10 != 0 {
            (
                usize::from(u16::from_be_bytes([*attrs.get(2)?, *attrs.get(3)?])),
                4,
            )
        } else {
            (usize::from(*attrs.get(2)?), 3)
        };
        attrs = attrs.get(hdr + len..)?;
    }
    let announced = prefixes(body.get(at + 2 + alen..)?, n)?;
    Some(Scan::Classic {
        withdrawn,
        announced,
    })
}

/// The blocks among encoded IPv4 prefixes (length octet, then the significant octets).
fn prefixes(mut b: &[u8], n: usize) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    while let Some(&len) = b.first() {
        if len > 32 {
            return None;
        }
        let octets = usize::from(len).div_ceil(8);
        let p = b.get(1..1 + octets)?;
        let mut a = [0u8; 4];
        a[..octets].copy_from_slice(p);
        if let Some(k) = block_index(u32::from_be_bytes(a), len, n) {
            out.push(k);
        }
        b = &b[1 + octets..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CodecParams {
        CodecParams {
            four_octet_asn: true,
            ..CodecParams::default()
        }
    }

    fn body(u: Update) -> Vec<u8> {
        let b = encode(&[Message::Update(u)], &params()).unwrap();
        b[19..].to_vec()
    }

    #[test]
    fn addresses_and_blocks_in_order() {
        assert_eq!(client_addr(0), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(client_addr(999), Ipv4Addr::new(198, 18, 3, 232));
        assert_eq!(client_block(0).to_string(), "10.64.0.0/26");
        assert_eq!(client_block(999).to_string(), "10.64.249.192/26");
        assert_eq!(client_block(1023).to_string(), "10.64.255.192/26");
        for i in [0, 1, 5, 999] {
            let b = client_block(i);
            assert_eq!(block_index(u32::from(b.network()), 26, 1000), Some(i));
        }
        assert_eq!(
            block_index(u32::from(client_block(10).network()), 26, 10),
            None
        );
        assert_eq!(
            block_index(u32::from(client_block(1).network()), 24, 10),
            None
        );
        assert_eq!(block_index(0x0a40_0001, 26, 10), None);
    }

    #[test]
    fn the_scan_reads_what_the_codec_writes() {
        assert_eq!(
            scan_update(&body(announcement(7)), 10),
            Some(Scan::Classic {
                withdrawn: vec![],
                announced: vec![7]
            })
        );
        assert_eq!(
            scan_update(&body(withdrawal(3)), 10),
            Some(Scan::Classic {
                withdrawn: vec![3],
                announced: vec![]
            })
        );
        // A reflected route with ORIGINATOR_ID and CLUSTER_LIST, and a prefix that is
        // nobody's block.
        let mut u = announcement(2);
        if let Some(a) = u.attrs.as_mut() {
            a.originator_id = Some(client_addr(2));
            a.cluster_list = vec![Ipv4Addr::new(224, 0, 0, 1)];
        }
        u.nlri.push(Nlri::new("10.99.0.0/24".parse().unwrap()));
        u.nlri.push(Nlri::new(IpNet::V4(client_block(4))));
        assert_eq!(
            scan_update(&body(u), 10),
            Some(Scan::Classic {
                withdrawn: vec![],
                announced: vec![2, 4]
            })
        );
        assert_eq!(scan_update(&[0, 5, 1], 10), None);
    }

    #[test]
    fn multiprotocol_updates_go_to_the_decoder() {
        let u = Update {
            mp_unreach: Some(bgp::wire::update::MpUnreach {
                afi_safi: AfiSafi::new(1, 1),
                withdrawn: vec![Nlri::new(IpNet::V4(client_block(1)))],
            }),
            ..Update::default()
        };
        assert_eq!(scan_update(&body(u), 10), Some(Scan::Multiprotocol));
    }

    #[test]
    fn held_blocks_mirror_into_the_board() {
        let board = Board::new(3);
        let mut a = Held::new(0, &board);
        a.add(0);
        a.add(1);
        assert_eq!((board.holders(1), board.complete()), (1, 0));
        a.add(2);
        a.add(2);
        assert_eq!((board.holders(2), board.complete()), (1, 1));
        a.remove(1);
        assert_eq!((board.holders(1), board.complete()), (0, 0));
        a.add(1);
        a.clear();
        assert_eq!(
            (board.holders(1), board.holders(2), board.complete()),
            (0, 0, 0)
        );
    }
}
