//! A peer that negotiates hold time 0 and then dies without closing its connection.
//!
//! RFC 4271 §4.2 allows hold time 0: no KEEPALIVEs, no hold timer. Nothing in BGP then
//! notices a dead peer, so the speaker has TCP do it (keepalive probes and the user
//! timeout, bounded by its own configured hold time). Here a raw peer on loopback
//! negotiates hold time 0, reaches Established, and then has its kernel drop every
//! segment the speaker sends (a minimum TTL of 255 on its socket, which the speaker's
//! packets never carry): no ACK, no probe answer, no RST, as from a peer whose power
//! went. The speaker's session must leave Established within its configured hold time
//! plus a few probe intervals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use bgp::config::{PeerConfig, SpeakerConfig};
use bgp::speaker::Speaker;
use bgp::status::SessionState;
use bgp::wire::capability::Capability;
use bgp::wire::open::Open;
use bgp::wire::{self, CodecParams, Message};
use bgp::{Asn, Family, RouterId};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The speaker's configured hold time: the bound on a silent hold-0 peer.
const HOLD: u16 = 3;
const PEER_AS: u32 = 65001;

async fn send(s: &mut TcpStream, msg: &Message) {
    let mut buf = BytesMut::new();
    wire::encode_message(msg, &CodecParams::default(), &mut buf).expect("encode");
    s.write_all(&buf).await.expect("write to the speaker");
}

/// Reads one whole message's bytes; returns its type.
async fn read_one(s: &mut TcpStream) -> u8 {
    let mut head = [0u8; 19];
    s.read_exact(&mut head).await.expect("a message header");
    let len = usize::from(u16::from_be_bytes([head[16], head[17]]));
    let mut body = vec![0u8; len.saturating_sub(19)];
    s.read_exact(&mut body).await.expect("a message body");
    head[18]
}

async fn state(speaker: &Speaker, peer: IpAddr) -> (SessionState, Option<u16>, Option<String>) {
    let peers = speaker.peers().await.expect("speaker status");
    let p = peers
        .into_iter()
        .find(|p| p.address == peer)
        .expect("the peer is configured");
    (p.state, p.hold_time, p.last_error)
}

#[tokio::test]
async fn a_silent_peer_with_hold_time_zero_is_dropped_within_the_hold_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local address").port();
    let peer_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let mut cfg = SpeakerConfig::new(Asn(64512), RouterId(Ipv4Addr::new(192, 0, 2, 1)));
    cfg.listen = Vec::<SocketAddr>::new();
    let mut peer = PeerConfig::new(peer_ip, Asn(PEER_AS));
    peer.port = port;
    peer.hold_time = Some(HOLD);
    peer.connect_retry = Some(1);
    peer.graceful_restart = false;
    cfg.peers = vec![peer];
    let speaker = Speaker::start(cfg).await.expect("speaker");

    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the speaker connects within 10 s")
        .expect("accept");
    assert_eq!(read_one(&mut conn).await, 1, "the speaker's OPEN");
    let open = Open::new(
        Asn(PEER_AS),
        0,
        RouterId(Ipv4Addr::new(192, 0, 2, 2)),
        vec![
            Capability::Multiprotocol(Family::Ipv4Unicast.afi_safi()),
            Capability::FourOctetAsn(Asn(PEER_AS)),
        ],
    );
    send(&mut conn, &Message::Open(open)).await;
    send(&mut conn, &Message::Keepalive).await;
    assert_eq!(read_one(&mut conn).await, 4, "the speaker's KEEPALIVE");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, hold, _) = state(&speaker, peer_ip).await;
        if s.is_established() {
            assert_eq!(hold, Some(0), "the session should run without hold timer");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Established within 10 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Whatever the speaker sends once up (End-of-RIB) is read and acknowledged first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sink = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(50), conn.read(&mut sink)).await
    {
        if n == 0 {
            panic!("the speaker closed the session before the peer went silent");
        }
    }

    // The peer goes silent: its kernel drops every segment of the speaker from now on.
    let min_ttl: libc::c_int = 255;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MINTTL,
            &min_ttl as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_MINTTL: {}", std::io::Error::last_os_error());
    let silent_at = Instant::now();

    let bound = Duration::from_secs(u64::from(HOLD) + 5);
    loop {
        let (s, _, last_error) = state(&speaker, peer_ip).await;
        if !s.is_established() {
            eprintln!(
                "silent hold-0 peer dropped after {:.1?} (hold time {HOLD} s): {s}, {last_error:?}",
                silent_at.elapsed()
            );
            let why = last_error.unwrap_or_default();
            assert!(
                why.contains("hold time 0"),
                "the peer's last error should say why it went: {why:?}"
            );
            break;
        }
        assert!(
            silent_at.elapsed() < bound,
            "the session with a silent hold-0 peer is still Established after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    speaker.shutdown(false).await.expect("shutdown");
    drop(conn);
}
