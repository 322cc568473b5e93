//! A BGP speaker driven by hand: it opens a session and then sends exactly the bytes a
//! test gives it, such as an UPDATE no real daemon would send. It connects from inside a
//! namespace by moving one short-lived thread into it (`setns` changes only the calling
//! thread), so the socket belongs to that namespace while the test reads it from here.

use crate::error::{Error, Result};
use crate::netns::NsHandle;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const OPEN: u8 = 1;
pub const UPDATE: u8 = 2;
pub const NOTIFICATION: u8 = 3;
pub const KEEPALIVE: u8 = 4;
pub const ROUTE_REFRESH: u8 = 5;

/// A message as read: its type and body (after the 19-octet header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub kind: u8,
    pub body: Vec<u8>,
}

/// A received NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawNotification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// An open connection to a BGP speaker.
#[derive(Debug)]
pub struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    /// Connects from namespace `ns`, bound to `local`, to `remote`.
    pub fn connect(ns: &NsHandle, local: IpAddr, remote: SocketAddr) -> Result<RawPeer> {
        let stream = ns.in_thread(|| connect_from(local, remote))??;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io("configuring", "the raw BGP socket", e))?;
        Ok(RawPeer {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends an OPEN (4-octet AS, IPv4 unicast), then waits for the speaker's OPEN and
    /// KEEPALIVE and confirms with a KEEPALIVE: the session is Established on both ends.
    pub fn establish(&mut self, asn: u32, id: Ipv4Addr, hold: u16) -> Result<()> {
        self.establish_with(&open(asn, id, hold)).map(drop)
    }

    /// Like [`RawPeer::establish`] with the OPEN given; returns the speaker's OPEN body.
    pub fn establish_with(&mut self, our_open: &[u8]) -> Result<Vec<u8>> {
        self.send(our_open)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got_open: Option<Vec<u8>> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.recv(left)? else {
                return Err(Error::Check(
                    "no OPEN and KEEPALIVE from the speaker within 30 s".into(),
                ));
            };
            match m.kind {
                OPEN => {
                    got_open = Some(m.body);
                    self.send(&message(KEEPALIVE, &[]))?;
                }
                KEEPALIVE if got_open.is_some() => return Ok(got_open.unwrap_or_default()),
                NOTIFICATION => {
                    return Err(Error::Check(format!(
                        "the speaker refused the session: {:?}",
                        notification(&m)
                    )))
                }
                _ => {}
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|e| Error::io("writing to", "the raw BGP socket", e))
    }

    /// The next message, or `None` when nothing came within `timeout` or the
    /// connection closed.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<RawMessage>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 19 {
                let len = usize::from(u16::from_be_bytes([self.buf[16], self.buf[17]]));
                if len < 19 {
                    return Err(Error::Check(format!("bad message length {len}")));
                }
                if self.buf.len() >= len {
                    let msg: Vec<u8> = self.buf.drain(..len).collect();
                    return Ok(Some(RawMessage {
                        kind: msg[18],
                        body: msg[19..].to_vec(),
                    }));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| Error::io("configuring", "the raw BGP socket", e))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                // A signal for another thread of the test landed here: read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", "the raw BGP socket", e)),
            }
        }
    }

    /// Reads for `window` and returns the first NOTIFICATION, answering KEEPALIVEs so
    /// the session would otherwise stay up.
    pub fn notification_within(&mut self, window: Duration) -> Result<Option<RawNotification>> {
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.recv(left)? {
                None => return Ok(None),
                Some(m) if m.kind == NOTIFICATION => return Ok(notification(&m)),
                Some(m) if m.kind == KEEPALIVE => self.send(&message(KEEPALIVE, &[]))?,
                Some(_) => {}
            }
        }
    }
}

fn connect_from(local: IpAddr, remote: SocketAddr) -> Result<TcpStream> {
    let domain = if remote.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // std's TcpStream cannot bind before connecting; a socket made by hand can, and
    // becomes a TcpStream once connected.
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream built below or
    // closed on error.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io(
            "creating",
            "a TCP socket",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a fresh socket we own.
    let stream = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let bind = sockaddr(SocketAddr::new(local, 0));
    let to = sockaddr(remote);
    // SAFETY: the sockaddr buffers are valid for the lengths given.
    let rc = unsafe { libc::bind(fd, bind.0.as_ptr().cast(), bind.1) };
    if rc != 0 {
        return Err(Error::io(
            "binding",
            local.to_string(),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above.
    let rc = unsafe { libc::connect(fd, to.0.as_ptr().cast(), to.1) };
    if rc != 0 {
        return Err(Error::io(
            "connecting to",
            remote.to_string(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(stream)
}

/// A sockaddr_in / sockaddr_in6 as bytes and its length.
fn sockaddr(a: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: zeroed sockaddr_in is valid.
            let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>();
            // SAFETY: reading the bytes of a plain struct.
            let bytes =
                unsafe { std::slice::from_raw_parts((&s as *const libc::sockaddr_in).cast(), len) };
            (bytes.to_vec(), len as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: zeroed sockaddr_in6 is valid.
            let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = v6.port().to_be();
            s.sin6_addr.s6_addr = v6.ip().octets();
            let len = std::mem::size_of::<libc::sockaddr_in6>();
            // SAFETY: reading the bytes of a plain struct.
            let bytes = unsafe {
                std::slice::from_raw_parts((&s as *const libc::sockaddr_in6).cast(), len)
            };
            (bytes.to_vec(), len as libc::socklen_t)
        }
    }
}

fn notification(m: &RawMessage) -> Option<RawNotification> {
    (m.kind == NOTIFICATION && m.body.len() >= 2).then(|| RawNotification {
        code: m.body[0],
        subcode: m.body[1],
        data: m.body[2..].to_vec(),
    })
}

/// A whole message: marker, length, type, body (RFC 4271 §4.1).
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// OPEN with the Multiprotocol (IPv4 unicast) and 4-octet AS capabilities.
pub fn open(asn: u32, id: Ipv4Addr, hold: u16) -> Vec<u8> {
    open_with(asn, id, hold, &[])
}

/// Graceful restart as the raw speaker announces it (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The Restart State bit: "I have just restarted".
    pub restarting: bool,
    pub restart_time: u16,
    /// The Forwarding State bit for IPv4 unicast; `None` leaves the family out.
    pub ipv4_forwarding: Option<bool>,
}

impl GracefulRestart {
    /// The capability (code 64) as bytes.
    pub fn capability(self) -> Vec<u8> {
        let head = (u16::from(self.restarting) << 15) | (self.restart_time & 0x0fff);
        let mut v = head.to_be_bytes().to_vec();
        if let Some(f) = self.ipv4_forwarding {
            v.extend_from_slice(&[0, 1, 1, if f { 0x80 } else { 0 }]);
        }
        [vec![64, v.len() as u8], v].concat()
    }

    /// The graceful-restart capability of an OPEN body, if any.
    pub fn of_open(body: &[u8]) -> Option<GracefulRestart> {
        let value = capabilities(body)
            .into_iter()
            .find(|(code, _)| *code == 64)?
            .1;
        let head = u16::from_be_bytes([*value.first()?, *value.get(1)?]);
        let ipv4_forwarding = value[2..]
            .chunks_exact(4)
            .find(|c| c[..3] == [0, 1, 1])
            .map(|c| c[3] & 0x80 != 0);
        Some(GracefulRestart {
            restarting: head & 0x8000 != 0,
            restart_time: head & 0x0fff,
            ipv4_forwarding,
        })
    }
}

/// `(code, value)` of every capability in an OPEN body (RFC 5492).
pub fn capabilities(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(&len) = body.get(9) else {
        return out;
    };
    let params = body.get(10..10 + usize::from(len)).unwrap_or_default();
    let mut p = params;
    while p.len() >= 2 {
        let (kind, plen) = (p[0], usize::from(p[1]));
        let Some(value) = p.get(2..2 + plen) else {
            break;
        };
        if kind == 2 {
            let mut c = value;
            while c.len() >= 2 {
                let clen = usize::from(c[1]);
                let Some(cv) = c.get(2..2 + clen) else {
                    break;
                };
                out.push((c[0], cv.to_vec()));
                c = &c[2 + clen..];
            }
        }
        p = &p[2 + plen..];
    }
    out
}

/// OPEN of a speaker without the 4-octet AS capability (RFC 6793 §4.2.1 "OLD speaker"):
/// only Multiprotocol for IPv4 unicast.
pub fn open_two_octet(asn: u16, id: Ipv4Addr, hold: u16) -> Vec<u8> {
    let caps = [1u8, 4, 0, 1, 0, 1];
    let mut body = vec![4];
    body.extend_from_slice(&asn.to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&id.octets());
    body.extend_from_slice(&[caps.len() as u8 + 2, 2, caps.len() as u8]);
    body.extend_from_slice(&caps);
    message(OPEN, &body)
}

/// `(code, value)` of every path attribute of an UPDATE body.
pub fn attributes(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(w) = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return out;
    };
    let Some(a) = body
        .get(2 + w..4 + w)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return out;
    };
    let mut rest = body.get(4 + w..4 + w + a).unwrap_or_default();
    while rest.len() >= 3 {
        let (flags, code) = (rest[0], rest[1]);
        let (len, head) = if flags & 0x10 != 0 {
            match rest.get(2..4) {
                Some(l) => (usize::from(u16::from_be_bytes([l[0], l[1]])), 4),
                None => break,
            }
        } else {
            (usize::from(rest[2]), 3)
        };
        let Some(value) = rest.get(head..head + len) else {
            break;
        };
        out.push((code, value.to_vec()));
        rest = &rest[head + len..];
    }
    out
}

/// An UPDATE with nothing in it: End-of-RIB for IPv4 unicast (RFC 4724 §2).
pub fn end_of_rib() -> Vec<u8> {
    update(&[], &[], &[])
}

/// Whether an UPDATE body is the IPv4 unicast End-of-RIB.
pub fn is_end_of_rib(body: &[u8]) -> bool {
    body == [0, 0, 0, 0]
}

/// Whether an UPDATE body announces `nlri` in its IPv4 NLRI field.
pub fn announces(body: &[u8], nlri: &[u8]) -> bool {
    let Some(wlen) = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return false;
    };
    let Some(alen) = body
        .get(2 + wlen..4 + wlen)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return false;
    };
    let mut rest = body.get(4 + wlen + alen..).unwrap_or_default();
    while let Some(&len) = rest.first() {
        let n = 1 + usize::from(len).div_ceil(8);
        let Some(one) = rest.get(..n) else {
            return false;
        };
        if one == nlri {
            return true;
        }
        rest = &rest[n..];
    }
    false
}

/// OPEN with Multiprotocol (IPv4 unicast), 4-octet AS and `extra` capabilities (each
/// code, length, value).
pub fn open_with(asn: u32, id: Ipv4Addr, hold: u16, extra: &[u8]) -> Vec<u8> {
    let my_as = u16::try_from(asn).unwrap_or(23456);
    let caps: Vec<u8> = [
        vec![1, 4, 0, 1, 0, 1],
        [vec![65, 4], asn.to_be_bytes().to_vec()].concat(),
        extra.to_vec(),
    ]
    .concat();
    let mut body = vec![4];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&id.octets());
    body.push((caps.len() + 2) as u8);
    body.push(2);
    body.push(caps.len() as u8);
    body.extend_from_slice(&caps);
    message(OPEN, &body)
}

/// One path attribute (extended length when the value needs it).
pub fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    if value.len() > 255 {
        let mut a = vec![flags | 0x10, code];
        a.extend_from_slice(&(value.len() as u16).to_be_bytes());
        a.extend_from_slice(value);
        a
    } else {
        let mut a = vec![flags & !0x10, code, value.len() as u8];
        a.extend_from_slice(value);
        a
    }
}

/// ORIGIN with any value, also an undefined one.
pub fn origin(value: u8) -> Vec<u8> {
    attr(0x40, 1, &[value])
}

/// AS_PATH of one AS_SEQUENCE with 4-octet ASes.
pub fn as_path(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, asns.len() as u8];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(0x40, 2, &v)
}

pub fn next_hop(nh: Ipv4Addr) -> Vec<u8> {
    attr(0x40, 3, &nh.octets())
}

/// MP_REACH_NLRI for IPv4 unicast (RFC 4760 §3).
pub fn mp_reach_v4(nh: Ipv4Addr, nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 1, 1, 4];
    v.extend_from_slice(&nh.octets());
    v.push(0);
    v.extend_from_slice(nlri);
    attr(0x80, 14, &v)
}

/// An IPv4 prefix as NLRI: length, then the significant octets.
pub fn nlri(prefix: ipnet::Ipv4Net) -> Vec<u8> {
    let len = prefix.prefix_len();
    let octets = usize::from(len).div_ceil(8);
    let mut v = vec![len];
    v.extend_from_slice(&prefix.network().octets()[..octets]);
    v
}

/// UPDATE with withdrawn routes, path attributes and NLRI given as bytes.
pub fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(UPDATE, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_is_a_bare_header() {
        let k = message(KEEPALIVE, &[]);
        assert_eq!(k.len(), 19);
        assert_eq!(&k[16..], &[0, 19, 4]);
    }

    #[test]
    fn open_carries_capabilities() {
        let o = open(65002, Ipv4Addr::new(192, 0, 2, 2), 9);
        // header, version 4, AS 65002, hold 9, id, opt len 14, param 2 len 12, MP, AS4
        assert_eq!(o[19], 4);
        assert_eq!(&o[20..22], &65002u16.to_be_bytes());
        assert_eq!(&o[22..24], &9u16.to_be_bytes());
        assert_eq!(&o[24..28], &[192, 0, 2, 2]);
        assert_eq!(&o[28..31], &[14, 2, 12]);
        assert_eq!(&o[31..37], &[1, 4, 0, 1, 0, 1]);
        assert_eq!(&o[37..43], &[65, 4, 0, 0, 0xfd, 0xea]);
        assert_eq!(o.len(), 43);
    }

    #[test]
    fn graceful_restart_capability_round_trip() {
        let gr = GracefulRestart {
            restarting: true,
            restart_time: 30,
            ipv4_forwarding: Some(true),
        };
        assert_eq!(gr.capability(), vec![64, 6, 0x80, 30, 0, 1, 1, 0x80]);
        let o = open_with(65002, Ipv4Addr::new(192, 0, 2, 2), 9, &gr.capability());
        assert_eq!(GracefulRestart::of_open(&o[19..]), Some(gr));
        assert_eq!(
            GracefulRestart::of_open(&open(1, Ipv4Addr::new(1, 1, 1, 1), 9)[19..]),
            None
        );
        let caps = capabilities(&o[19..]);
        assert_eq!(
            caps.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![1, 65, 64]
        );
    }

    #[test]
    fn end_of_rib_and_announced_prefixes_are_recognised() {
        let eor = end_of_rib();
        assert!(is_end_of_rib(&eor[19..]));
        let n = nlri("198.51.100.0/24".parse().unwrap());
        let other = nlri("198.51.101.0/24".parse().unwrap());
        let u = update(&[], &origin(0), &[other.clone(), n.clone()].concat());
        assert!(announces(&u[19..], &n));
        assert!(!announces(&u[19..], &nlri("10.0.0.0/8".parse().unwrap())));
        assert!(!is_end_of_rib(&u[19..]));
    }

    #[test]
    fn attributes_are_split_by_code() {
        let attrs = [origin(0), as_path(&[65002]), attr(0xc0, 17, &[0; 300])].concat();
        let u = update(&[], &attrs, &[]);
        let got = attributes(&u[19..]);
        assert_eq!(
            got.iter().map(|(c, v)| (*c, v.len())).collect::<Vec<_>>(),
            vec![(1, 1), (2, 6), (17, 300)]
        );
        let o = open_two_octet(65002, Ipv4Addr::new(192, 0, 2, 2), 9);
        assert_eq!(capabilities(&o[19..]), vec![(1, vec![0, 1, 0, 1])]);
    }

    #[test]
    fn update_layout() {
        let n = nlri("198.51.100.0/24".parse().unwrap());
        assert_eq!(n, vec![24, 198, 51, 100]);
        let attrs = [origin(0), as_path(&[65002])].concat();
        let u = update(&[], &attrs, &n);
        assert_eq!(u[18], UPDATE);
        assert_eq!(&u[19..21], &[0, 0]);
        assert_eq!(&u[21..23], &(attrs.len() as u16).to_be_bytes());
        assert_eq!(&u[u.len() - 4..], &n[..]);
        assert_eq!(origin(5), vec![0x40, 1, 1, 5]);
        assert_eq!(
            mp_reach_v4(Ipv4Addr::new(192, 0, 2, 2), &n),
            vec![0x80, 14, 13, 0, 1, 1, 4, 192, 0, 2, 2, 0, 24, 198, 51, 100]
        );
    }
}
