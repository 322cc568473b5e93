//! TCP for BGP sessions: TCP MD5 signatures (RFC 2385), the Generalized TTL Security
//! Mechanism (RFC 5082), multihop TTL, source address, listening sockets, and TCP
//! liveness for sessions that negotiated no hold timer.
//!
//! This is IO at the edge of the crate: everything else in `bgp` is pure.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The well-known BGP port (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;

/// Longest key the kernel accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// Socket options of one session, applied to the connection in either direction.
/// `Debug` says whether an MD5 key is set, never what it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TransportOptions {
    /// RFC 2385 shared secret.
    pub md5_key: Option<Vec<u8>>,
    /// TTL (hop limit) of outgoing packets. GTSM forces 255.
    pub ttl: Option<u8>,
    /// GTSM: the peer is at most this many hops away; packets arriving with a lower TTL
    /// than `256 - hops` are dropped by the kernel (RFC 5082 §3).
    pub ttl_security_hops: Option<u8>,
    /// Local address to bind outgoing connections to.
    pub source: Option<IpAddr>,
    /// Abort the connection when data we sent stays unacknowledged this long
    /// (`TCP_USER_TIMEOUT`). Under GTSM this is what ends a connection the listener
    /// accepted from a peer that is too far away: the listener cannot filter SYNs per
    /// peer, so the handshake completes, and only then does the minimum TTL drop every
    /// segment of the peer, its ACKs included (RFC 5082 §3).
    pub unacked_timeout: Option<Duration>,
}

impl std::fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let TransportOptions {
            md5_key,
            ttl,
            ttl_security_hops,
            source,
            unacked_timeout,
        } = self;
        f.debug_struct("TransportOptions")
            .field(
                "md5_key",
                &md5_key.as_ref().map(|_| crate::config::Redacted),
            )
            .field("ttl", ttl)
            .field("ttl_security_hops", ttl_security_hops)
            .field("source", source)
            .field("unacked_timeout", unacked_timeout)
            .finish()
    }
}

impl TransportOptions {
    /// The TTL to send with: 255 under GTSM, else the configured one.
    fn effective_ttl(&self) -> Option<u8> {
        if self.ttl_security_hops.is_some() {
            Some(255)
        } else {
            self.ttl
        }
    }

    fn min_ttl(&self) -> Option<u8> {
        self.ttl_security_hops.map(gtsm_min_ttl)
    }
}

/// RFC 5082 §3: a peer `hops` away sends with TTL 255 and arrives with 256 - hops.
pub fn gtsm_min_ttl(hops: u8) -> u8 {
    (256 - u16::from(hops.max(1))) as u8
}

/// Open an outgoing connection to `peer` with the session's options set before the SYN.
pub async fn connect(peer: SocketAddr, opts: &TransportOptions) -> io::Result<TcpStream> {
    let domain = Domain::for_address(peer);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(src) = opts.source {
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    }
    if let Some(key) = &opts.md5_key {
        set_md5_key(socket.as_raw_fd(), peer.ip(), Some(key))?;
    }
    apply_ttl(&socket, peer.ip(), opts)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    socket.connect(peer).await
}

/// Connections completed by the kernel and not yet accepted.
const LISTEN_BACKLOG: i32 = 4096;

/// Bind a listening socket. IPv6 wildcard sockets are IPv6-only, so that IPv4 peers are
/// seen with IPv4 addresses (MD5 keys are matched per address family).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Our SYN-ACK must leave with TTL 255 for a peer that uses GTSM to accept it
    // (RFC 5082 §3); per-peer TTLs are applied once the connection is accepted.
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_unicast_hops_v6(255)?;
    } else {
        socket.set_ttl_v4(255)?;
    }
    // Keep each SYN's headers for `check_accepted_ttl`: the minimum TTL is set per peer
    // only after accept, too late for what the peer sent with the handshake.
    setsockopt_int(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, 1)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    // A reflector's clients all connect at once when it starts: a SYN the queue has no
    // room for is retried by the client only a second later (the kernel caps this at
    // net.core.somaxconn).
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Apply the TTL options of a session to a connection the listener accepted. The MD5 key
/// must already be on the listener (see [`set_md5_key`]), since it guards the handshake.
pub fn apply_accepted(stream: &TcpStream, peer: IpAddr, opts: &TransportOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    apply_ttl(&sock, peer, opts)
}

/// GTSM for a connection the listener accepted (RFC 5082 §3): the minimum TTL can only be
/// set once the connection is accepted and the peer known, and by then its first segments
/// (an OPEN sent right after the handshake) may be queued unchecked. The SYN the listener
/// saved tells how far away the connection came from: below the minimum it is refused.
/// Passes when GTSM is off for the peer or no SYN was saved (a listener not made by
/// [`listen`]).
pub fn check_accepted_ttl(stream: &TcpStream, opts: &TransportOptions) -> io::Result<()> {
    let Some(min) = opts.min_ttl() else {
        return Ok(());
    };
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and `len` is passed by pointer.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let saved = &buf[..(len as usize).min(buf.len())];
    // The IPv4 TTL is byte 8 of its header, the IPv6 hop limit byte 7.
    let ttl = match saved.first().map(|b| b >> 4) {
        Some(4) => saved.get(8),
        Some(6) => saved.get(7),
        _ => None,
    };
    match ttl {
        Some(&ttl) if ttl < min => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "GTSM: the connection's SYN arrived with TTL {ttl}, below the minimum {min} \
                 (the peer is more hops away than ttlSecurity allows, or it is not the peer)"
            ),
        )),
        _ => Ok(()),
    }
}

fn apply_ttl(sock: &Socket, peer: IpAddr, opts: &TransportOptions) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    if let Some(t) = opts.unacked_timeout {
        let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
    }
    match peer {
        IpAddr::V4(_) => {
            if let Some(ttl) = opts.effective_ttl() {
                sock.set_ttl_v4(u32::from(ttl))?;
            }
            if let Some(min) = opts.min_ttl() {
                setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, i32::from(min))?;
            }
        }
        IpAddr::V6(_) => {
            if let Some(ttl) = opts.effective_ttl() {
                sock.set_unicast_hops_v6(u32::from(ttl))?;
            }
            if let Some(min) = opts.min_ttl() {
                setsockopt_int(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MINHOPCOUNT,
                    i32::from(min),
                )?;
            }
        }
    }
    Ok(())
}

/// How long a session that negotiated hold time 0 may go without hearing from its peer's
/// TCP when its own configured hold time is 0 too: RFC 4271 §10's suggested hold time.
pub const HOLDLESS_DEFAULT_BOUND: Duration = Duration::from_secs(90);

/// TCP liveness for a connection whose session negotiated hold time 0.
///
/// RFC 4271 §4.2 lets a hold time of 0 mean no KEEPALIVEs and no hold timer: nothing in
/// BGP then notices a peer that died without closing its connection (power loss, a
/// partition, a dropped route), and the session would stay Established with its routes
/// for ever. TCP notices instead: keepalive probes while the connection is idle (the
/// first after a third of `bound`, then every ninth), and the user timeout
/// (`TCP_USER_TIMEOUT` = `bound`) both for data left unacknowledged and, once probes
/// go unanswered, for the probes (tcp(7)). A peer that answers nothing for `bound` is
/// dropped within about `bound` plus one probe interval; reads then fail with
/// `ETIMEDOUT`, which the session treats as a failed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadPeerProbe {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
    pub user_timeout: Duration,
}

impl DeadPeerProbe {
    pub fn for_bound(bound: Duration) -> DeadPeerProbe {
        let secs = bound.as_secs().max(3);
        DeadPeerProbe {
            idle: Duration::from_secs((secs / 3).max(1)),
            interval: Duration::from_secs((secs / 9).max(1)),
            count: 3,
            user_timeout: Duration::from_secs(secs),
        }
    }
}

/// Sets [`DeadPeerProbe::for_bound`] on a connected socket.
pub fn set_dead_peer_probe(stream: &TcpStream, bound: Duration) -> io::Result<()> {
    let p = DeadPeerProbe::for_bound(bound);
    let fd = stream.as_raw_fd();
    let secs = |d: Duration| i32::try_from(d.as_secs()).unwrap_or(i32::MAX);
    let ms = i32::try_from(p.user_timeout.as_millis()).unwrap_or(i32::MAX);
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(p.idle))?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(p.interval))?;
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        i32::try_from(p.count).unwrap_or(i32::MAX),
    )?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)
}

/// Kernel layout of `struct tcp_md5sig` (include/uapi/linux/tcp.h).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// Install (`Some`) or remove (`None`) the RFC 2385 key for `peer` on a socket. On a
/// listening socket the key covers connections from that address.
pub fn set_md5_key(fd: RawFd, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    let key = key.unwrap_or_default();
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 password is {} bytes; the kernel takes at most {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let sockaddr = SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: zeroed is a valid bit pattern for this plain-data struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    // SAFETY: `sockaddr` holds `len()` valid bytes, and `len()` never exceeds
    // `sizeof(sockaddr_storage)`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sockaddr.as_ptr() as *const u8,
            &mut sig.addr as *mut libc::sockaddr_storage as *mut u8,
            sockaddr.len() as usize,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a properly initialised tcp_md5sig and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const TcpMd5Sig as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // Removing a key that is not there is not an error for us.
    if key.is_empty() && err.raw_os_error() == Some(libc::ENOENT) {
        return Ok(());
    }
    Err(err)
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: i32) -> io::Result<()> {
    // SAFETY: passing a pointer to a live i32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The addresses of the interface that holds a local address: what next-hop-self and
/// "is the peer on a shared subnet" need (RFC 4271 §5.1.3, RFC 2545 §3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    /// Every subnet configured on the interface.
    pub subnets: Vec<ipnet::IpNet>,
    pub v4: Option<std::net::Ipv4Addr>,
    pub global_v6: Option<std::net::Ipv6Addr>,
    pub link_local: Option<std::net::Ipv6Addr>,
}

/// Find the interface that has `local` and read its addresses; `None` when no interface
/// has it (or the address list cannot be read).
pub fn interface_of(local: IpAddr) -> Option<InterfaceInfo> {
    let addrs = interface_addresses().ok()?;
    let name = addrs.iter().find(|(_, a, _)| *a == local)?.0.clone();
    let mut info = InterfaceInfo {
        name: name.clone(),
        ..Default::default()
    };
    for (n, a, plen) in addrs.into_iter().filter(|(n, _, _)| *n == name) {
        debug_assert_eq!(n, name);
        if let Ok(net) = ipnet::IpNet::new(a, plen) {
            info.subnets.push(net.trunc());
        }
        match a {
            IpAddr::V4(v4) => {
                info.v4.get_or_insert(v4);
            }
            IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                info.link_local.get_or_insert(v6);
            }
            IpAddr::V6(v6) => {
                info.global_v6.get_or_insert(v6);
            }
        }
    }
    Some(info)
}

/// Whether `peer` is on a subnet of one of this host's interfaces (no router between):
/// BFD's single-hop encapsulation applies to it.
pub fn on_link(peer: IpAddr) -> bool {
    interface_addresses().is_ok_and(|addrs| {
        addrs.iter().any(|(_, a, plen)| {
            *a != peer && ipnet::IpNet::new(*a, *plen).is_ok_and(|n| n.contains(&peer))
        })
    })
}

/// (interface, address, prefix length) of every address on the host.
fn interface_addresses() -> io::Result<Vec<(String, IpAddr, u8)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the family field says which sockaddr type the pointers hold.
        let (addr, plen) = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                    (
                        IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                        u32::from_be(m.sin_addr.s_addr).count_ones() as u8,
                    )
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                    let plen: u32 = m.sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum();
                    (
                        IpAddr::V6(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr)),
                        plen as u8,
                    )
                }
                _ => continue,
            }
        };
        out.push((name, addr, plen));
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn loopback_interface_is_found() {
        let lo = interface_of("127.0.0.1".parse().unwrap()).expect("lo has 127.0.0.1");
        assert_eq!(lo.name, "lo");
        assert!(
            lo.subnets.contains(&"127.0.0.0/8".parse().unwrap()),
            "{lo:?}"
        );
        assert!(interface_of("192.0.2.77".parse().unwrap()).is_none());
    }

    #[test]
    fn dead_peer_probe_ends_within_the_bound() {
        let p = DeadPeerProbe::for_bound(Duration::from_secs(90));
        assert_eq!(p.idle, Duration::from_secs(30));
        assert_eq!(p.interval, Duration::from_secs(10));
        assert_eq!(p.user_timeout, Duration::from_secs(90));
        // The smallest hold time RFC 4271 allows still probes every second.
        let p = DeadPeerProbe::for_bound(Duration::from_secs(3));
        assert_eq!(
            (p.idle, p.interval),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        assert!(p.idle + p.interval * p.count <= Duration::from_secs(3) * 2);
    }

    #[tokio::test]
    async fn dead_peer_probe_is_set_on_the_socket() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        set_dead_peer_probe(&client, Duration::from_secs(9)).unwrap();
        let sock = socket2::SockRef::from(&client);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(3));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn gtsm_min_ttl_follows_rfc5082() {
        assert_eq!(gtsm_min_ttl(1), 255);
        assert_eq!(gtsm_min_ttl(2), 254);
        assert_eq!(gtsm_min_ttl(0), 255);
        assert_eq!(gtsm_min_ttl(255), 1);
    }

    async fn exchange(listener_key: Option<&[u8]>, client_key: Option<&[u8]>) -> io::Result<()> {
        let listener = listen("127.0.0.1:0".parse().unwrap())?;
        let addr = listener.local_addr()?;
        set_md5_key(listener.as_raw_fd(), addr.ip(), listener_key)?;
        let accept = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await?;
            io::Result::Ok(buf)
        });
        let opts = TransportOptions {
            md5_key: client_key.map(<[u8]>::to_vec),
            ..Default::default()
        };
        let mut stream = tokio::time::timeout(Duration::from_secs(2), connect(addr, &opts))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.write_all(b"hello").await?;
        let got = tokio::time::timeout(Duration::from_secs(2), accept)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "accept timed out"))?
            .map_err(io::Error::other)??;
        assert_eq!(&got, b"hello");
        Ok(())
    }

    #[tokio::test]
    async fn md5_matching_keys_connect() {
        exchange(Some(b"s3cret"), Some(b"s3cret")).await.unwrap();
    }

    #[tokio::test]
    async fn md5_mismatch_never_connects() {
        let err = exchange(Some(b"s3cret"), Some(b"other")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let err = exchange(Some(b"s3cret"), None).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    }

    #[test]
    fn md5_key_too_long_is_refused() {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let err = set_md5_key(
            sock.as_raw_fd(),
            "127.0.0.1".parse().unwrap(),
            Some(&[1u8; 81]),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// A connection accepted from a peer whose packets arrive below the GTSM minimum TTL
    /// (here: loopback with the default TTL 64) cannot stay open forever: nothing it sends,
    /// ACKs included, gets through, so with an unacked timeout the kernel ends it.
    #[tokio::test]
    async fn accepted_connection_below_the_minimum_ttl_is_ended() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        let opts = TransportOptions {
            ttl_security_hops: Some(1),
            unacked_timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        };
        apply_accepted(&server, peer.ip(), &opts).unwrap();
        server.write_all(b"OPEN").await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(20), server.read(&mut buf))
            .await
            .expect("the connection stayed open although the peer's ACKs are dropped");
        assert!(
            matches!(read, Err(_) | Ok(0)),
            "the read should end the connection: {read:?}"
        );
    }

    /// The SYN decides: a client whose packets arrive with TTL 64 (loopback's default) is
    /// refused under GTSM for a directly connected peer, one sending with 255 is not.
    #[tokio::test]
    async fn accepted_connection_whose_syn_came_from_too_far_is_refused() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = listen(addr.parse().unwrap()).unwrap();
            let local = listener.local_addr().unwrap();
            let gtsm = TransportOptions {
                ttl_security_hops: Some(1),
                ..Default::default()
            };
            let _far = tokio::net::TcpStream::connect(local).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let err = check_accepted_ttl(&server, &gtsm).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{addr}: {err}");
            assert!(err.to_string().contains("TTL 64"), "{addr}: {err}");
            check_accepted_ttl(&server, &TransportOptions::default()).unwrap();

            let _near = connect(local, &gtsm).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            check_accepted_ttl(&server, &gtsm).unwrap();
        }
    }

    #[tokio::test]
    async fn gtsm_options_apply_on_both_families() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = listen(addr.parse().unwrap()).unwrap();
            let local = listener.local_addr().unwrap();
            let opts = TransportOptions {
                ttl_security_hops: Some(1),
                ..Default::default()
            };
            let client = tokio::time::timeout(Duration::from_secs(5), connect(local, &opts))
                .await
                .expect("connect under GTSM timed out")
                .unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            apply_accepted(&server, peer.ip(), &opts).unwrap();
            let sock = socket2::SockRef::from(&client);
            match local {
                SocketAddr::V4(_) => assert_eq!(sock.ttl_v4().unwrap(), 255),
                SocketAddr::V6(_) => assert_eq!(sock.unicast_hops_v6().unwrap(), 255),
            }
        }
    }
}
