//! A minimal blocking BGP peer for the feeder and the monitor: connect or accept, OPEN and
//! KEEPALIVE exchange, then whole frames in and raw bytes out. No FSM beyond what a
//! benchmark needs: one session, eBGP, IPv4 unicast, the 4-octet AS capability.

use bgp::types::{AfiSafi, Asn, RouterId};
use bgp::wire::{
    decode_message, encode_message, frame, CodecParams, DecodeError, Frame, Message, Open,
};
use bgp::wire::{Capability, Notification};
use bytes::{Bytes, BytesMut};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("malformed message from the peer: {0}")]
    Decode(#[from] DecodeError),
    #[error("the peer sent a NOTIFICATION: {0}")]
    Notification(Notification),
    #[error("expected {expected}, got message type {got}")]
    Unexpected { expected: &'static str, got: u8 },
    #[error("encoding: {0}")]
    Encode(#[from] bgp::wire::EncodeError),
}

/// Nanoseconds of CLOCK_MONOTONIC: one clock for every process on the machine, so the
/// feeder's and the monitor's events can be put on one time line by the race.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Connects, retrying refused connections until `timeout` (the daemon may still be
/// binding its socket).
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, PeerError> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => return Err(PeerError::Connect { addr, source }),
        }
    }
}

/// Accepts one connection on `listen`.
pub fn accept(listener: &TcpListener) -> Result<TcpStream, PeerError> {
    let (s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Our OPEN: IPv4 unicast, route refresh, 4-octet AS.
pub fn open(asn: Asn, hold_time: u16, router_id: RouterId) -> Open {
    Open::new(
        asn,
        hold_time,
        router_id,
        vec![
            Capability::Multiprotocol(AfiSafi::new(1, 1)),
            Capability::RouteRefresh,
            Capability::FourOctetAsn(asn),
        ],
    )
}

/// Cuts a byte stream into whole messages.
pub struct FrameReader {
    stream: TcpStream,
    /// Received octets are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    framing: CodecParams,
}

impl FrameReader {
    pub fn new(stream: TcpStream) -> Self {
        FrameReader {
            stream,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            framing: CodecParams {
                extended_message: true,
                ..CodecParams::default()
            },
        }
    }

    /// The next whole message, header included.
    pub fn next_frame(&mut self) -> Result<Bytes, PeerError> {
        loop {
            let have = &self.buf[self.start..self.end];
            match frame(have, &self.framing).map_err(DecodeError::from)? {
                Frame::Complete { len, .. } => {
                    let f = Bytes::copy_from_slice(&have[..len]);
                    self.start += len;
                    return Ok(f);
                }
                Frame::Incomplete { needed } => {
                    if self.start + needed > self.buf.len() {
                        // Move the partial message to the front; grow only for a
                        // message larger than the buffer (never, below 64 KiB).
                        self.buf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                        if needed > self.buf.len() {
                            self.buf.resize(needed, 0);
                        }
                    }
                    let n = self.stream.read(&mut self.buf[self.end..])?;
                    if n == 0 {
                        return Err(PeerError::Closed);
                    }
                    self.end += n;
                }
            }
        }
    }
}

/// An established session: the negotiated parameters, the peer's OPEN and when ours
/// was sent.
pub struct Established {
    pub reader: FrameReader,
    pub writer: TcpStream,
    pub params: CodecParams,
    pub remote: Open,
    /// [`mono_ns`] just before our OPEN was written.
    pub open_sent_ns: u64,
    /// The negotiated hold time (RFC 4271 §4.2: the smaller of the two); 0 for none.
    pub hold_time: u16,
}

impl Established {
    /// Seconds between our KEEPALIVEs: a third of the hold time (RFC 4271 §10).
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.hold_time > 0).then(|| Duration::from_secs(u64::from(self.hold_time / 3).max(1)))
    }
}

/// Encodes a KEEPALIVE.
pub fn keepalive() -> Bytes {
    let mut b = BytesMut::with_capacity(19);
    // A KEEPALIVE always encodes.
    let _ = encode_message(&Message::Keepalive, &CodecParams::default(), &mut b);
    b.freeze()
}

/// Sends our OPEN, reads the peer's, confirms with KEEPALIVE and waits for its
/// KEEPALIVE (RFC 4271 §8: OpenSent → OpenConfirm → Established).
pub fn handshake(stream: TcpStream, ours: &Open, ebgp: bool) -> Result<Established, PeerError> {
    let mut writer = stream.try_clone()?;
    let mut reader = FrameReader::new(stream);
    let mut out = BytesMut::new();
    encode_message(
        &Message::Open(ours.clone()),
        &CodecParams::default(),
        &mut out,
    )?;
    let open_sent_ns = mono_ns();
    writer.write_all(&out)?;
    let remote = loop {
        match decode(&reader.next_frame()?, &CodecParams::default())? {
            Some(Message::Open(o)) => break o,
            Some(Message::Keepalive) | None => continue,
            Some(m) => {
                return Err(PeerError::Unexpected {
                    expected: "OPEN",
                    got: m.msg_type(),
                })
            }
        }
    };
    writer.write_all(&keepalive())?;
    let params = CodecParams::negotiate(ours, &remote, ebgp);
    loop {
        match decode(&reader.next_frame()?, &params)? {
            Some(Message::Keepalive) => break,
            Some(m) => {
                return Err(PeerError::Unexpected {
                    expected: "KEEPALIVE",
                    got: m.msg_type(),
                })
            }
            None => continue,
        }
    }
    let hold_time = match (ours.hold_time, remote.hold_time) {
        (0, _) | (_, 0) => 0,
        (a, b) => a.min(b),
    };
    Ok(Established {
        reader,
        writer,
        params,
        remote,
        open_sent_ns,
        hold_time,
    })
}

/// Decodes a frame; a NOTIFICATION becomes an error.
pub fn decode(frame: &[u8], params: &CodecParams) -> Result<Option<Message>, PeerError> {
    match decode_message(frame, params)?.message {
        Some(Message::Notification(n)) => Err(PeerError::Notification(n)),
        m => Ok(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_peers_establish_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let s = accept(&listener).unwrap();
            let o = open(Asn(64512), 90, RouterId("10.0.0.1".parse().unwrap()));
            handshake(s, &o, true).map(|e| (e.remote.asn, e.hold_time))
        });
        let s = connect(addr, Duration::from_secs(5)).unwrap();
        let o = open(Asn(65001), 30, RouterId("10.0.0.2".parse().unwrap()));
        let e = handshake(s, &o, true).unwrap();
        assert_eq!(e.remote.asn, Asn(64512));
        assert_eq!(e.hold_time, 30);
        assert!(e.params.four_octet_asn);
        assert_eq!(e.keepalive_interval(), Some(Duration::from_secs(10)));
        assert!(e.open_sent_ns > 0);
        assert_eq!(server.join().unwrap().unwrap(), (Asn(65001), 30));
    }

    #[test]
    fn a_notification_is_an_error() {
        let mut b = BytesMut::new();
        encode_message(
            &Message::Notification(Notification::new(6, 2, Vec::new())),
            &CodecParams::default(),
            &mut b,
        )
        .unwrap();
        assert!(matches!(
            decode(&b, &CodecParams::default()),
            Err(PeerError::Notification(_))
        ));
    }

    #[test]
    fn connect_gives_up_after_its_timeout() {
        // A port nobody listens on: bind and drop.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let start = Instant::now();
        assert!(connect(addr, Duration::from_millis(100)).is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
